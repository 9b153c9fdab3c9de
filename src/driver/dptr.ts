/**
 * Data pointers for commands: PRP1/PRP2 precomputed for a range of a DmaBuffer, with the PRP list pages
 * (when the range spans more than two memory pages) allocated from the transport's DMA allocator.
 * Build one per buffer slot up front and reuse it for every I/O on that slot; release() when done.
 */
import type { DmaAllocator, DmaBuffer } from '../mem/dma.js';
import { buildPrps, prpListPagesNeeded, type PrpListPage } from '../nvme/prp.js';
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
  if (pages > 0) list = dma.alloc(pages * pageSize, pageSize);
  let next = 0;
  const allocListPage = (): PrpListPage => {
    if (list === null || next >= pages) throw new InvalidArgumentError('PRP builder asked for more list pages than computed');
    const p = { iova: list.iova + next * pageSize, view: list.bytes.subarray(next * pageSize, (next + 1) * pageSize) };
    next++;
    return p;
  };
  let prp: { prp1: number; prp2: number };
  try {
    prp = buildPrps({ iova, length }, pageSize, allocListPage);
  } catch (e) {
    if (list) dma.free(list);
    throw e;
  }
  let released = false;
  const held = list;
  return {
    prp1: prp.prp1,
    prp2: prp.prp2,
    length,
    list: held,
    release(): void {
      if (released) return;
      released = true;
      if (held) dma.free(held);
    },
  };
}
