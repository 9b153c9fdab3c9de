/**
 * A file's extents (from homid) as device reads: logically and physically adjacent extents are merged, runs are
 * cut at the largest command, and each read keeps only the bytes inside the file. Holes and unwritten extents
 * read as zeros and need no command (every destination starts zeroed). Extents the device cannot serve (inline
 * data, delayed allocation, encoded) make the file unreadable through extents, said so.
 */
import type { TableExtent } from '../ipc/extent-table.js';

export interface PlannedRead {
  /** First LBA. */
  slba: number;
  /** Blocks read. */
  nlb: number;
  /** Offset in the file of the first byte read. */
  fileOffset: number;
  /** Bytes of the read that belong to the file (the last read of a file may be cut). */
  bytes: number;
}

const UNSERVABLE = ['inline', 'delalloc', 'encoded', 'unknown'] as const;

/** Reads for a file of `size` bytes; throws an Error naming the reason when the extents cannot be read. */
export function planReads(size: number, extents: readonly TableExtent[], blockSize: number, maxBytes: number): PlannedRead[] {
  if (maxBytes < blockSize || maxBytes % blockSize !== 0) throw new RangeError(`largest read ${maxBytes} is not a multiple of the ${blockSize}-byte block`);
  const runs: { logical: number; physical: number; length: number }[] = [];
  const sorted = [...extents].sort((a, b) => a.logical - b.logical);
  for (const e of sorted) {
    const bad = UNSERVABLE.find((f) => e.flags.includes(f));
    if (bad !== undefined) throw new Error(`extent at file offset ${e.logical} is ${bad}: its bytes are not at an address on the device`);
    if (e.flags.includes('unwritten') || e.length === 0 || e.logical >= size) continue;
    if (e.physical % blockSize !== 0 || e.logical % blockSize !== 0) throw new Error(`extent at file offset ${e.logical} is not aligned to the ${blockSize}-byte block`);
    const last = runs[runs.length - 1];
    if (last && last.logical + last.length === e.logical && last.physical + last.length === e.physical) last.length += e.length;
    else runs.push({ logical: e.logical, physical: e.physical, length: e.length });
  }
  const out: PlannedRead[] = [];
  for (const r of runs) {
    for (let o = 0; o < r.length && r.logical + o < size; o += maxBytes) {
      const bytes = Math.min(maxBytes, r.length - o, size - r.logical - o);
      out.push({ slba: (r.physical + o) / blockSize, nlb: Math.ceil(bytes / blockSize), fileOffset: r.logical + o, bytes });
    }
  }
  return out;
}
