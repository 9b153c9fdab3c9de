/**
 * DMA-visible memory for the embedded controller: SharedArrayBuffer segments shared with the controller worker.
 *
 * IOVA scheme: segment k (k >= 1) covers [k * 2^32, k * 2^32 + segmentSize). IOVA 0 and everything below 2^32
 * is never valid, so a null (or truncated 32-bit) pointer is a DMA fault for the controller.
 *
 * Host side: `SharedDmaMemory` (a DmaAllocator). Each new segment is handed to `onSegment` synchronously,
 * before the alloc that needed it returns; the emulator transport posts it to the worker's mailbox, and the
 * worker drains that mailbox whenever it meets an IOVA in a segment it does not know yet. Since the host can
 * only hand the controller an IOVA after alloc returned (and after the doorbell write that follows), the
 * segment message is always in the mailbox when the controller first needs it: no race.
 *
 * Controller side: `DmaSegmentTable` resolves (iova, len) to (segment, offset), bounds-checked, without
 * allocating on the fast path (`locate` returns the segment index and leaves the offset in `offset`).
 */
import { DmaAllocationError, type DmaAllocator, type DmaBuffer } from './dma.js';
import { insertFree, takeFirstFit, type FreeRange } from './free-list.js';

/** Address span reserved for each segment: segment k starts at k * 2^32. */
export const SEGMENT_SPAN = 0x1_0000_0000;
/** Default segment size: 64 MiB. */
export const DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024;
/** Largest segment (the span of one IOVA window). */
export const MAX_SEGMENT_SIZE = SEGMENT_SPAN;
/** Smallest allocation granule and minimum alignment. */
const GRANULE = 64;
/** Largest segment index: keeps every IOVA below 2^53. */
const MAX_SEGMENT_INDEX = 0x1f_ffff - 1;

interface Segment {
  index: number;
  /** CPU view of the whole segment (a SharedArrayBuffer, or an ArrayBuffer over shared memory). */
  mem: ArrayBufferLike;
  size: number;
  /** Free ranges sorted by start, non-adjacent (coalesced). */
  free: FreeRange[];
}

class SharedDmaBuffer implements DmaBuffer {
  constructor(
    readonly iova: number,
    readonly size: number,
    readonly bytes: Uint8Array,
    /** Segment-relative range actually reserved (may be bigger than size: granule rounding). */
    readonly segIndex: number,
    readonly start: number,
    readonly end: number,
  ) {}
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function roundUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

export interface SegmentedDmaOptions {
  /** Memory page size the driver must use (CC.MPS), default 4096. */
  pageSize?: number;
  /** Size of each new segment in bytes (default 64 MiB; a single bigger alloc gets a segment of its own size). */
  segmentSize?: number;
  /** Upper bound on total segment bytes (default: unlimited). */
  maxTotalBytes?: number;
}

/**
 * The allocator over IOVA segments, whatever backs them: subclasses supply the memory of each new segment
 * (`createBacking`) and make it known to the controller before returning it.
 */
export abstract class SegmentedDmaMemory implements DmaAllocator {
  readonly pageSize: number;
  readonly segmentSize: number;
  private readonly maxTotal: number;
  private readonly segs: Segment[] = [];
  private readonly live = new Map<number, SharedDmaBuffer>();
  private allocated = 0;
  private totalSegBytes = 0;
  private nextIndex = 1;

  constructor(opts: SegmentedDmaOptions = {}) {
    this.pageSize = opts.pageSize ?? 4096;
    if (!isPow2(this.pageSize) || this.pageSize < 4096) throw new RangeError(`pageSize must be a power of two >= 4096`);
    this.segmentSize = roundUp(opts.segmentSize ?? DEFAULT_SEGMENT_SIZE, this.pageSize);
    if (this.segmentSize > MAX_SEGMENT_SIZE) throw new RangeError(`segmentSize must be at most 4 GiB`);
    this.maxTotal = opts.maxTotalBytes ?? Number.POSITIVE_INFINITY;
  }

  /**
   * Memory for segment `index` of `size` bytes, zeroed, already made known to the controller (called before
   * any IOVA in it is handed out). Throw DmaAllocationError when it cannot be provided.
   */
  protected abstract createBacking(index: number, size: number): ArrayBufferLike;

  /** Take a segment index for memory outside the pool (dedicated or registered segments). */
  protected reserveIndex(): number {
    const index = this.nextIndex;
    if (index > MAX_SEGMENT_INDEX) throw new DmaAllocationError('out of DMA segments');
    this.nextIndex++;
    return index;
  }

  get allocatedBytes(): number {
    return this.allocated;
  }

  /** Pool segments created so far, as (index, memory) pairs. */
  protected poolSegments(): Array<{ index: number; mem: ArrayBufferLike; size: number }> {
    return this.segs.map((s) => ({ index: s.index, mem: s.mem, size: s.size }));
  }

  alloc(size: number, align?: number): DmaBuffer {
    if (!Number.isInteger(size) || size <= 0) throw new DmaAllocationError(`invalid DMA allocation size ${size}`);
    const req = align ?? this.pageSize;
    if (!isPow2(req) || req > this.segmentSize) throw new DmaAllocationError(`invalid DMA alignment ${align}`);
    const a = Math.max(req, GRANULE);
    const need = roundUp(size, GRANULE);
    for (const seg of this.segs) {
      const b = this.tryAlloc(seg, size, need, a);
      if (b) return b;
    }
    const seg = this.addSegment(Math.max(this.segmentSize, roundUp(need, this.pageSize)));
    const b = this.tryAlloc(seg, size, need, a);
    if (!b) throw new DmaAllocationError(`cannot allocate ${size} bytes`);
    return b;
  }

  free(buf: DmaBuffer): void {
    const b = this.live.get(buf.iova);
    if (b === undefined || b !== buf) throw new Error(`free of a DMA buffer not allocated here (iova 0x${buf.iova.toString(16)})`);
    this.live.delete(buf.iova);
    this.allocated -= b.end - b.start;
    const seg = this.segs.find((s) => s.index === b.segIndex)!;
    insertFree(seg.free, b.start, b.end);
  }

  private tryAlloc(seg: Segment, size: number, need: number, align: number): SharedDmaBuffer | null {
    const fl = seg.free;
    const start = takeFirstFit(fl, need, align);
    if (start >= 0) {
      const end = start + need;
      const bytes = new Uint8Array(seg.mem, start, size);
      bytes.fill(0); // memory may be recycled: hand it out zeroed
      const iova = seg.index * SEGMENT_SPAN + start;
      const b = new SharedDmaBuffer(iova, size, bytes, seg.index, start, end);
      this.live.set(iova, b);
      this.allocated += need;
      return b;
    }
    return null;
  }

  private addSegment(size: number): Segment {
    if (this.totalSegBytes + size > this.maxTotal) {
      throw new DmaAllocationError(`DMA memory limit of ${this.maxTotal} bytes reached`);
    }
    const index = this.reserveIndex();
    // Known to the controller before any IOVA in it can be handed out (createBacking's contract).
    const mem = this.createBacking(index, size);
    const seg: Segment = { index, mem, size, free: [{ start: 0, end: size }] };
    this.segs.push(seg);
    this.totalSegBytes += size;
    return seg;
  }
}

export interface SharedDmaOptions extends SegmentedDmaOptions {
  /** Called synchronously for each new segment, before the alloc that created it returns. */
  onSegment?: (index: number, sab: SharedArrayBuffer) => void;
}

/** DMA memory in SharedArrayBuffer segments (in-process embedded controller). */
export class SharedDmaMemory extends SegmentedDmaMemory {
  private readonly onSegment: ((index: number, sab: SharedArrayBuffer) => void) | undefined;

  constructor(opts: SharedDmaOptions = {}) {
    super(opts);
    this.onSegment = opts.onSegment;
  }

  /** All segments created so far, as (index, SharedArrayBuffer) pairs (for handing to a controller). */
  segments(): Array<{ index: number; sab: SharedArrayBuffer }> {
    return this.poolSegments().map((s) => ({ index: s.index, sab: s.mem as SharedArrayBuffer }));
  }

  protected createBacking(index: number, size: number): ArrayBufferLike {
    let sab: SharedArrayBuffer;
    try {
      sab = new SharedArrayBuffer(size);
    } catch (e) {
      throw new DmaAllocationError(`cannot create a ${size}-byte shared segment: ${(e as Error).message}`);
    }
    this.onSegment?.(index, sab);
    return sab;
  }
}

/**
 * Controller-side view of the DMA segments. `locate` is the fast path: it returns the segment index (>= 1)
 * or -1 for a DMA fault, leaving the offset within the segment in `offset`.
 */
export class DmaSegmentTable {
  /** Indexed by segment index; slot 0 is never used. */
  readonly u8: Array<Uint8Array | undefined> = [undefined];
  readonly u32: Array<Uint32Array | undefined> = [undefined];
  readonly buf: Array<Buffer | undefined> = [undefined];
  /** Segment memory: a SharedArrayBuffer, or an ArrayBuffer over a shared memory mapping. */
  readonly sab: Array<ArrayBufferLike | undefined> = [undefined];
  readonly size: number[] = [0];
  /** Offset set by the last successful `locate`. */
  offset = 0;
  /** Called when an IOVA falls in an unknown segment; should add pending segments (e.g. drain a mailbox). */
  onUnknown: (() => void) | null = null;

  add(index: number, sab: ArrayBufferLike): void {
    while (this.u8.length <= index) {
      this.u8.push(undefined);
      this.u32.push(undefined);
      this.buf.push(undefined);
      this.sab.push(undefined);
      this.size.push(0);
    }
    this.u8[index] = new Uint8Array(sab);
    this.u32[index] = new Uint32Array(sab, 0, sab.byteLength >>> 2);
    this.buf[index] = Buffer.from(sab as ArrayBuffer);
    this.sab[index] = sab;
    this.size[index] = sab.byteLength;
  }

  /**
   * Shorten known segment `index` to its first `bytes` bytes: IOVAs past them become DMA faults (a device window
   * smaller than the page-rounded memory behind it). Never grows a segment.
   */
  limit(index: number, bytes: number): void {
    if (index <= 0 || index >= this.size.length) return;
    this.size[index] = Math.max(0, Math.min(this.size[index]!, bytes));
  }

  /** Forget segment `index`: IOVAs in it become DMA faults. */
  remove(index: number): void {
    if (index <= 0 || index >= this.size.length) return;
    this.u8[index] = undefined;
    this.u32[index] = undefined;
    this.buf[index] = undefined;
    this.sab[index] = undefined;
    this.size[index] = 0;
  }

  /** Segment index for [iova, iova+len), or -1 if the range is not entirely inside one known segment. */
  locate(iova: number, len: number): number {
    const idx = Math.floor(iova / SEGMENT_SPAN);
    const off = iova - idx * SEGMENT_SPAN;
    if (idx <= 0 || !(len >= 0)) return -1;
    if (idx >= this.size.length || this.size[idx] === 0) {
      if (this.onUnknown === null) return -1;
      this.onUnknown();
      if (idx >= this.size.length || this.size[idx] === 0) return -1;
    }
    if (off + len > this.size[idx]!) return -1;
    this.offset = off;
    return idx;
  }

  /** Convenience form of `locate`: the segment bytes and offset, or null for a DMA fault. */
  resolve(iova: number, len: number): { bytes: Uint8Array; offset: number } | null {
    const idx = this.locate(iova, len);
    if (idx < 0) return null;
    return { bytes: this.u8[idx]!, offset: this.offset };
  }
}
