/**
 * Data pointers for commands: PRP1/PRP2 precomputed for a range of a DmaBuffer, with the PRP list pages
 * (when the range spans more than two memory pages) allocated from the transport's DMA allocator.
 * Build one per buffer slot up front and reuse it for every I/O on that slot; release() when done.
 */
import type { DmaAllocator, DmaBuffer } from '../mem/dma.js';
import { prpListPagesNeeded, writePrps } from '../nvme/prp.js';
import { InvalidArgumentError } from './errors.js';

export interface DataPointer {
  /** SQE DPTR PRP1. */
  readonly prp1: number;
  /** SQE DPTR PRP2 (0, the second page, or a PRP list pointer). */
  readonly prp2: number;
  /** Bytes covered. */
  readonly length: number;
  /** PRP list memory, if any (null when PRP1/PRP2 suffice). */
  readonly list: DmaBuffer | null;
  /** Free the PRP list memory (idempotent). The data buffer itself is not touched. */
  release(): void;
}

/** No list memory: writePrps never touches it when the transfer spans at most two pages. */
const NO_WORDS = new Uint32Array(0);

const NO_LIST: DataPointer = Object.freeze({ prp1: 0, prp2: 0, length: 0, list: null, release: () => undefined });

/** A DataPointer for "no data" (PRP1 = PRP2 = 0). */
export function noData(): DataPointer {
  return NO_LIST;
}

/**
 * PRP1/PRP2 for `length` bytes of `buf` starting at `offset` (offset must keep the address dword aligned).
 * Allocates the PRP list pages from `dma` when the range spans more than two memory pages.
 */
export function dataPointer(dma: DmaAllocator, buf: DmaBuffer, offset = 0, length = buf.size - offset): DataPointer {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidArgumentError(`data pointer offset must be a non-negative integer, got ${offset}`);
  if (!Number.isSafeInteger(length) || length <= 0) throw new InvalidArgumentError(`data pointer length must be a positive integer, got ${length}`);
  if (offset + length > buf.size) {
    throw new InvalidArgumentError(`data pointer range [${offset}, ${offset + length}) exceeds the ${buf.size}-byte buffer`);
  }
  const iova = buf.iova + offset;
  if ((iova & 3) !== 0) throw new InvalidArgumentError(`data pointer address 0x${iova.toString(16)} is not dword aligned (PRP1 requires it)`);
  const pageSize = dma.pageSize;
  const firstOffset = (iova >>> 0) & (pageSize - 1);
  const pages = prpListPagesNeeded(firstOffset, length, pageSize);
  let list: DmaBuffer | null = null;
  let prp2: number;
  if (pages === 0) prp2 = writePrps(iova, length, pageSize, NO_WORDS, 0, 0);
  else {
    list = dma.alloc(pages * pageSize, pageSize);
    const bytes = list.bytes;
    if (list.iova % pageSize !== 0 || bytes.byteOffset % 4 !== 0) {
      dma.free(list);
      throw new InvalidArgumentError(`PRP list memory at 0x${list.iova.toString(16)} is not page aligned`);
    }
    prp2 = writePrps(iova, length, pageSize, new Uint32Array(bytes.buffer, bytes.byteOffset, (pages * pageSize) >>> 2), 0, list.iova);
  }
  let released = false;
  const held = list;
  return {
    prp1: iova,
    prp2,
    length,
    list: held,
    release(): void {
      if (released) return;
      released = true;
      if (held) dma.free(held);
    },
  };
}
