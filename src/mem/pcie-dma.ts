/**
 * A DmaAllocator over "chunks": spans of memory that are contiguous both for the CPU and for the device
 * (one run of physically contiguous hugepages for uio, one IOMMU mapping for VFIO). Buffers are carved out
 * of one chunk each and never cross a chunk boundary, so a buffer's IOVA range is always device-contiguous.
 * New chunks come from a ChunkSource on demand. First fit over sorted free lists, coalescing on free.
 */
import { DmaAllocationError, type DmaAllocator, type DmaBuffer } from './dma.js';
import { insertFree, takeFirstFit, type FreeRange } from './free-list.js';

export interface DmaChunk {
  /** Device address of the first byte. */
  readonly iova: number;
  /** CPU view of exactly the chunk. */
  readonly bytes: Uint8Array;
}

export interface ChunkSource {
  /** Largest chunk this source can ever supply (a bigger allocation fails at once). */
  readonly maxChunkBytes: number;
  /** Provide one or more new chunks, at least one of them >= minBytes. Throws DmaAllocationError. */
  grow(minBytes: number): DmaChunk[];
  /** Release everything (unmap, unpin). Idempotent. */
  release(): void;
}

interface Chunk {
  c: DmaChunk;
  size: number;
  free: FreeRange[];
}

class ChunkBuffer implements DmaBuffer {
  constructor(
    readonly iova: number,
    readonly size: number,
    readonly bytes: Uint8Array,
    readonly chunk: Chunk,
    readonly start: number,
    readonly end: number,
  ) {}
}

const GRANULE = 64;

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function roundUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

export class ChunkedDmaAllocator implements DmaAllocator {
  readonly pageSize: number;
  private readonly chunks: Chunk[] = [];
  private readonly live = new Map<number, ChunkBuffer>();
  private allocated = 0;
  private closed = false;

  constructor(
    private readonly source: ChunkSource,
    pageSize = 4096,
    private readonly what = 'DMA memory',
  ) {
    this.pageSize = pageSize;
  }

  get allocatedBytes(): number {
    return this.allocated;
  }

  /** Bytes of chunk memory obtained so far. */
  get reservedBytes(): number {
    return this.chunks.reduce((s, c) => s + c.size, 0);
  }

  alloc(size: number, align?: number): DmaBuffer {
    if (this.closed) throw new DmaAllocationError(`${this.what} is closed`);
    if (!Number.isInteger(size) || size <= 0) throw new DmaAllocationError(`invalid DMA allocation size ${size}`);
    const req = align ?? this.pageSize;
    if (!isPow2(req)) throw new DmaAllocationError(`invalid DMA alignment ${align}`);
    const a = Math.max(req, GRANULE);
    const need = roundUp(size, GRANULE);
    if (need > this.source.maxChunkBytes) {
      throw new DmaAllocationError(`cannot allocate ${size} contiguous DMA bytes from ${this.what}: the largest device-contiguous block is ${this.source.maxChunkBytes} bytes`);
    }
    for (const ch of this.chunks) {
      const b = this.tryAlloc(ch, size, need, a);
      if (b) return b;
    }
    const added = this.source.grow(need + (a > this.pageSize ? a : 0));
    for (const c of added) this.chunks.push({ c, size: c.bytes.byteLength, free: [{ start: 0, end: c.bytes.byteLength }] });
    for (let i = this.chunks.length - added.length; i < this.chunks.length; i++) {
      const b = this.tryAlloc(this.chunks[i]!, size, need, a);
      if (b) return b;
    }
    throw new DmaAllocationError(
      `cannot allocate ${size} bytes (alignment ${a}) from ${this.what}: no device-contiguous block that large (hugepages that are not physically adjacent are separate blocks)`,
    );
  }

  free(buf: DmaBuffer): void {
    const b = this.live.get(buf.iova);
    if (b === undefined || b !== buf) throw new Error(`free of a DMA buffer not allocated here (iova 0x${buf.iova.toString(16)})`);
    this.live.delete(buf.iova);
    this.allocated -= b.end - b.start;
    insertFree(b.chunk.free, b.start, b.end);
  }

  /** Release every chunk (the source unmaps / unpins). Buffers still held become inert. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.live.clear();
    this.chunks.length = 0;
    this.allocated = 0;
    this.source.release();
  }

  private tryAlloc(ch: Chunk, size: number, need: number, align: number): ChunkBuffer | null {
    const fl = ch.free;
    const base = ch.c.iova;
    // Align the device address (chunks are at least page aligned, but align may exceed that).
    const start = takeFirstFit(fl, need, align, base);
    if (start >= 0) {
      const end = start + need;
      const bytes = ch.c.bytes.subarray(start, start + size);
      bytes.fill(0);
      const b = new ChunkBuffer(base + start, size, bytes, ch, start, end);
      this.live.set(b.iova, b);
      this.allocated += need;
      return b;
    }
    return null;
  }
}
