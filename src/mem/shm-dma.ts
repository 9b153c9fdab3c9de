/**
 * DMA memory for the embedded controller in memfd mode: the same IOVA segments as SharedDmaMemory
 * (segment k at k * 2^32), but each segment is a memfd mapped MAP_SHARED, so another process can map it from
 * its file descriptor (SCM_RIGHTS or inheritance) and see the same bytes the controller reads and writes.
 *
 * - The pool (`alloc`/`free`) serves the owner's own queues, PRP lists and buffers.
 * - `createDedicated(bytes)` makes a segment of its own, outside the pool, for memory handed to one client
 *   (its SQ, CQ and data region): the client maps that one fd and sees nothing else.
 * - `registerFd(fd, bytes)` makes memory someone else created DMA-visible at runtime (e.g. a data region a
 *   client made and passed over): it is mapped here and announced to the controller like any other segment,
 *   provided it is a memfd sealed against shrinking and growing (a truncation could not fault this process).
 * - `location(buf)` names, for any DmaBuffer, the segment fd and offset another process needs to map it.
 *
 * `RegionAllocator` is a DmaAllocator over one window of a segment: a dedicated segment's sub-allocator here,
 * and the client side's data-buffer allocator in src/driver/attach.ts.
 */
import { createShm, mapShmFd, type ShmRegion } from '../sys/shm.js';
import { DmaAllocationError, type DmaAllocator, type DmaBuffer } from './dma.js';
import { DmaBufImportError, describeDmaBuf, mapDmaBufForImport, type DmaBufHandle, type ImportedDmaBuf } from './dmabuf.js';
import { insertFree, takeFirstFit, type FreeRange } from './free-list.js';
import { SEGMENT_SPAN, SegmentedDmaMemory, type SegmentedDmaOptions } from './shared-dma.js';

const GRANULE = 64;

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}
function roundUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

class RegionBuffer implements DmaBuffer {
  constructor(
    readonly iova: number,
    readonly size: number,
    readonly bytes: Uint8Array,
    readonly start: number,
    readonly end: number,
  ) {}
}

/**
 * A first-fit DmaAllocator over `bytes` bytes of `mem` starting at `byteOffset`, whose first byte the
 * controller sees at IOVA `iovaBase`. Buffers come back zeroed; alignment applies to the IOVA.
 */
export class RegionAllocator implements DmaAllocator {
  readonly pageSize: number;
  private readonly free_: FreeRange[];
  private readonly live = new Map<number, RegionBuffer>();
  private allocated = 0;

  constructor(
    private readonly mem: ArrayBufferLike,
    private readonly byteOffset: number,
    readonly bytes: number,
    readonly iovaBase: number,
    pageSize = 4096,
  ) {
    if (!isPow2(pageSize) || pageSize < 4096) throw new RangeError('pageSize must be a power of two >= 4096');
    if (byteOffset < 0 || bytes <= 0 || byteOffset + bytes > mem.byteLength) {
      throw new RangeError(`region [${byteOffset}, ${byteOffset + bytes}) is outside the ${mem.byteLength}-byte memory`);
    }
    this.pageSize = pageSize;
    this.free_ = [{ start: 0, end: bytes }];
  }

  get allocatedBytes(): number {
    return this.allocated;
  }

  alloc(size: number, align?: number): DmaBuffer {
    if (!Number.isInteger(size) || size <= 0) throw new DmaAllocationError(`invalid DMA allocation size ${size}`);
    const req = align ?? this.pageSize;
    if (!isPow2(req)) throw new DmaAllocationError(`invalid DMA alignment ${align}`);
    const need = roundUp(size, GRANULE);
    const start = takeFirstFit(this.free_, need, Math.max(req, GRANULE), this.iovaBase);
    if (start < 0) throw new DmaAllocationError(`cannot allocate ${size} bytes from a ${this.bytes}-byte region (${this.allocated} in use)`);
    const bytes = new Uint8Array(this.mem, this.byteOffset + start, size);
    bytes.fill(0);
    const b = new RegionBuffer(this.iovaBase + start, size, bytes, start, start + need);
    this.live.set(b.iova, b);
    this.allocated += need;
    return b;
  }

  free(buf: DmaBuffer): void {
    const b = this.live.get(buf.iova);
    if (b === undefined || b !== buf) throw new Error(`free of a DMA buffer not allocated here (iova 0x${buf.iova.toString(16)})`);
    this.live.delete(buf.iova);
    this.allocated -= b.end - b.start;
    insertFree(this.free_, b.start, b.end);
  }

  /** A DmaBuffer view of [offset, offset + size) of the region that is not tracked by the allocator. */
  view(offset: number, size: number): DmaBuffer {
    if (offset < 0 || size <= 0 || offset + size > this.bytes) throw new RangeError(`view [${offset}, ${offset + size}) outside the region`);
    return { iova: this.iovaBase + offset, size, bytes: new Uint8Array(this.mem, this.byteOffset + offset, size) };
  }
}

/** Where a DmaBuffer lives, for another process. */
export interface ShmLocation {
  /** Segment index (IOVA >>> 32). */
  segment: number;
  /** The segment's memfd. */
  fd: number;
  /** Bytes in the segment (map this many from the fd). */
  segmentBytes: number;
  /** Offset of the buffer within the segment. */
  offset: number;
}

/** What the controller must be told about a segment. */
export interface ShmSegmentInfo {
  index: number;
  fd: number;
  size: number;
  /** A dma-buf (not a memfd): the controller maps it without the memfd seal check, after checking it is a dma-buf. */
  dmabuf?: boolean;
}

export interface ShmDmaOptions extends SegmentedDmaOptions {
  /** Called synchronously for each new segment (pool, dedicated or registered) before any IOVA in it is used. */
  onSegment?: (seg: ShmSegmentInfo) => void;
  /** Called when a dedicated or registered segment is released (the controller must forget it). */
  onSegmentRemoved?: (index: number) => void;
  /** memfd name prefix (default "homi-dma"). */
  name?: string;
}

/** A segment outside the pool: one client's memory. */
export class DedicatedSegment {
  private released = false;
  constructor(
    readonly index: number,
    readonly region: ShmRegion,
    /** Sub-allocator over the whole segment. */
    readonly allocator: RegionAllocator,
    private readonly onRelease: (s: DedicatedSegment) => void,
  ) {}
  get fd(): number {
    return this.region.fd;
  }
  get size(): number {
    return this.region.size;
  }
  /** IOVA of byte 0. */
  get iovaBase(): number {
    return this.index * SEGMENT_SPAN;
  }
  get isReleased(): boolean {
    return this.released;
  }
  /** Forget the segment on the controller, unmap it here and close its fd (if owned). Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.onRelease(this);
  }
}

export class ShmDmaMemory extends SegmentedDmaMemory {
  private readonly onSegment: ((seg: ShmSegmentInfo) => void) | undefined;
  private readonly onSegmentRemoved: ((index: number) => void) | undefined;
  private readonly name: string;
  private readonly regions = new Map<number, ShmRegion>();
  private readonly dedicated = new Map<number, DedicatedSegment>();
  /** Indices of imported dma-buf segments (not memfds). */
  private readonly dmabufs = new Set<number>();
  private closed = false;

  constructor(opts: ShmDmaOptions = {}) {
    super(opts);
    this.onSegment = opts.onSegment;
    this.onSegmentRemoved = opts.onSegmentRemoved;
    this.name = opts.name ?? 'homi-dma';
  }

  /** Every live segment (pool, dedicated, registered): what a controller must map. */
  segmentInfos(): ShmSegmentInfo[] {
    return [...this.regions.entries()].map(([index, r]) => (this.dmabufs.has(index) ? { index, fd: r.fd, size: r.size, dmabuf: true } : { index, fd: r.fd, size: r.size }));
  }

  protected createBacking(index: number, size: number): ArrayBufferLike {
    if (this.closed) throw new DmaAllocationError('DMA memory is closed');
    let r: ShmRegion;
    try {
      r = createShm(`${this.name}-${index}`, size);
    } catch (e) {
      throw new DmaAllocationError(`cannot create a ${size}-byte memfd segment: ${(e as Error).message}`);
    }
    this.regions.set(index, r);
    this.onSegment?.({ index, fd: r.fd, size });
    return r.buffer;
  }

  /** A new memfd segment of `bytes` (rounded up to the page size) outside the pool, known to the controller. */
  createDedicated(bytes: number, name = `${this.name}-client`): DedicatedSegment {
    if (this.closed) throw new DmaAllocationError('DMA memory is closed');
    const size = roundUp(bytes, this.pageSize);
    if (size > SEGMENT_SPAN) throw new DmaAllocationError('a segment is at most 4 GiB');
    const index = this.reserveIndex();
    let r: ShmRegion;
    try {
      r = createShm(`${name}-${index}`, size);
    } catch (e) {
      throw new DmaAllocationError(`cannot create a ${size}-byte memfd segment: ${(e as Error).message}`);
    }
    return this.adopt(index, r);
  }

  /**
   * Make `bytes` of shared memory behind `fd` (created elsewhere) DMA-visible: map it here and announce it to
   * the controller. The fd stays the caller's unless `ownFd`. Refused (ShmSealError) unless `fd` is a memfd sealed
   * against shrinking and growing (createShm makes them so): whoever else holds it could otherwise truncate it
   * and fault this process and the controller on their next access.
   */
  registerFd(fd: number, bytes: number, opts: { ownFd?: boolean } = {}): DedicatedSegment {
    if (this.closed) throw new DmaAllocationError('DMA memory is closed');
    if (bytes % this.pageSize !== 0) throw new RangeError(`registered memory must be a multiple of ${this.pageSize} bytes`);
    const index = this.reserveIndex();
    const r = mapShmFd(fd, bytes, { ownFd: opts.ownFd ?? false, requireSizeSeals: true });
    return this.adopt(index, r);
  }

  /**
   * Import a dma-buf (src/mem/dmabuf.ts) as a segment of its own: mapped here MAP_SHARED and announced to the
   * controller, which maps the same fd, so PRPs into [iovaBase, iovaBase + size) land in the dma-buf's pages. The
   * fd stays the handle's. Throws DmaBufImportError when the exporter cannot be mapped (GPU memory: the
   * copy-engine path).
   */
  importDmaBuf(buf: DmaBufHandle, name: string): ImportedDmaBuf {
    if (this.closed) throw new DmaAllocationError('DMA memory is closed');
    if (buf.size % this.pageSize !== 0) {
      throw new DmaBufImportError(
        'emu-memfd',
        buf.exporter,
        `a size that is a multiple of ${this.pageSize}`,
        `emu-memfd cannot import ${describeDmaBuf(buf)} (${name}): its size is not a multiple of ${this.pageSize}`,
      );
    }
    if (buf.size > SEGMENT_SPAN) throw new DmaBufImportError('emu-memfd', buf.exporter, 'at most 4 GiB', `emu-memfd cannot import ${describeDmaBuf(buf)} (${name}): a segment is at most 4 GiB`);
    const r = mapDmaBufForImport('emu-memfd', buf);
    let seg: DedicatedSegment;
    try {
      seg = this.adopt(this.reserveIndex(), r, !buf.standIn);
    } catch (e) {
      r.close();
      throw e;
    }
    return { transport: 'emu-memfd', iova: seg.iovaBase, size: buf.size, view: new Uint8Array(r.buffer, 0, buf.size), exporter: buf.exporter, release: () => seg.release() };
  }

  private adopt(index: number, r: ShmRegion, dmabuf = false): DedicatedSegment {
    this.regions.set(index, r);
    if (dmabuf) this.dmabufs.add(index);
    const seg = new DedicatedSegment(index, r, new RegionAllocator(r.buffer, 0, r.size, index * SEGMENT_SPAN, this.pageSize), (s) => this.dropDedicated(s));
    this.dedicated.set(index, seg);
    try {
      this.onSegment?.(dmabuf ? { index, fd: r.fd, size: r.size, dmabuf } : { index, fd: r.fd, size: r.size });
    } catch (e) {
      this.dedicated.delete(index);
      this.regions.delete(index);
      this.dmabufs.delete(index);
      r.close();
      throw e;
    }
    return seg;
  }

  private dropDedicated(s: DedicatedSegment): void {
    this.dedicated.delete(s.index);
    this.regions.delete(s.index);
    this.dmabufs.delete(s.index);
    try {
      if (!this.closed) this.onSegmentRemoved?.(s.index);
    } finally {
      s.region.close();
    }
  }

  /** Segment fd and offset of a buffer (pool or dedicated), for handing it to another process. */
  location(buf: DmaBuffer | number): ShmLocation {
    const iova = typeof buf === 'number' ? buf : buf.iova;
    const segment = Math.floor(iova / SEGMENT_SPAN);
    const r = this.regions.get(segment);
    const offset = iova - segment * SEGMENT_SPAN;
    if (r === undefined || offset >= r.size) throw new RangeError(`IOVA 0x${iova.toString(16)} is not in a memfd segment`);
    return { segment, fd: r.fd, segmentBytes: r.size, offset };
  }

  /** Unmap every segment and close the fds this allocator created. Late accesses read zeros. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of [...this.dedicated.values()]) s.release();
    for (const r of this.regions.values()) r.close();
    this.regions.clear();
  }
}
