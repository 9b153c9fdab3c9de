/**
 * Physically (IOVA-) contiguous pieces of a data buffer, and the validation shared by the PRP and SGL builders.
 */
import { checkSafe } from './bytes.js';

export interface DmaChunk {
  /** Bus / IO virtual address of the first byte. */
  iova: number;
  /** Length in bytes (> 0). */
  length: number;
}

/** Normalize `chunks` (a single chunk or a list) into a non-empty list, validating addresses and lengths. */
export function toChunkList(chunks: DmaChunk | readonly DmaChunk[]): readonly DmaChunk[] {
  const list: readonly DmaChunk[] = Array.isArray(chunks) ? chunks : [chunks as DmaChunk];
  if (list.length === 0) throw new RangeError('chunks must contain at least one chunk');
  let total = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    if (c === null || typeof c !== 'object') throw new TypeError(`chunks[${i}] must be an object {iova, length}`);
    checkSafe(`chunks[${i}].iova`, c.iova);
    checkSafe(`chunks[${i}].length`, c.length);
    if (c.length === 0) throw new RangeError(`chunks[${i}].length must be greater than 0`);
    if (c.iova + c.length > Number.MAX_SAFE_INTEGER) throw new RangeError(`chunks[${i}] ends beyond 2^53 - 1`);
    total += c.length;
  }
  checkSafe('total transfer length', total);
  return list;
}

export function totalLength(chunks: readonly DmaChunk[]): number {
  let total = 0;
  for (const c of chunks) total += c.length;
  return total;
}
