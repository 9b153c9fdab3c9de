/**
 * Geometry checks the on-disk decoders share: block numbers turned into byte values only when the result is
 * exact, and a sorted list of the fixed-metadata block ranges searched per extent.
 */
import { BadExtentError } from './types.js';

/** Where a refusal happened, for BadExtentError. */
export interface ExtentSite {
  structure: string;
  /** Byte offset of the record in the image (-1 when unknown). */
  at: number;
  /** Inode the extent belongs to (-1 when none). */
  ino: number;
  /** What is being checked, e.g. 'extent 3 (logical block 0, physical block 9, 1 block)'. */
  what: string;
}

/** A non-negative safe integer? */
export function isExact(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** `blocks * blockSize`, refused with BadExtentError unless both and the product are exact non-negative integers. */
export function blockBytes(blocks: number, blockSize: number, site: ExtentSite): number {
  const bytes = blocks * blockSize;
  if (!isExact(blocks) || !isExact(blockSize) || !isExact(bytes)) {
    throw new BadExtentError(site.structure, site.at, site.ino, site.what, 'not an exact integer', `${blocks} blocks of ${blockSize} bytes is not an exact byte value`);
  }
  return bytes;
}

/** `n` blocks, or "1 block". */
export function plural(n: number, unit = 'block'): string {
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}

export interface LabelledRange {
  /** First block. */
  start: number;
  /** Number of blocks (> 0). */
  count: number;
  /** What lives there, e.g. 'inode table of group 3'. */
  label: string;
}

/**
 * Disjoint block ranges sorted by start, built once per opened image; `overlap` is a binary search, so checking
 * an extent costs O(log n) whatever its length.
 */
export class RangeSet {
  private readonly starts: Float64Array;
  private readonly ends: Float64Array;
  private readonly labels: string[];

  constructor(ranges: readonly LabelledRange[]) {
    const sorted = ranges.filter((r) => r.count > 0).sort((a, b) => a.start - b.start || b.count - a.count);
    const starts: number[] = [];
    const ends: number[] = [];
    const labels: string[] = [];
    for (const r of sorted) {
      const n = starts.length;
      const end = r.start + r.count;
      if (n > 0 && r.start < ends[n - 1]!) {
        // overlapping ranges (only in damaged images) merge so the list stays disjoint for the search
        if (end > ends[n - 1]!) ends[n - 1] = end;
        if (!labels[n - 1]!.endsWith(' and more')) labels[n - 1] += ' and more';
        continue;
      }
      starts.push(r.start);
      ends.push(end);
      labels.push(r.label);
    }
    this.starts = Float64Array.from(starts);
    this.ends = Float64Array.from(ends);
    this.labels = labels;
  }

  get size(): number {
    return this.starts.length;
  }

  /** The first range sharing a block with [start, start + count), or undefined. */
  overlap(start: number, count: number): LabelledRange | undefined {
    const end = start + count;
    // first range whose end lies past `start` (ends are increasing because the ranges are disjoint and sorted)
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid]! > start) hi = mid;
      else lo = mid + 1;
    }
    if (lo < this.starts.length && this.starts[lo]! < end) {
      return { start: this.starts[lo]!, count: this.ends[lo]! - this.starts[lo]!, label: this.labels[lo]! };
    }
    return undefined;
  }

  /** Every range, in order (for tests and tools). */
  list(): LabelledRange[] {
    return this.labels.map((label, i) => ({ start: this.starts[i]!, count: this.ends[i]! - this.starts[i]!, label }));
  }
}

/** "blocks 5..9" or "block 5". */
export function blockSpan(start: number, count: number): string {
  return count === 1 ? `block ${start}` : `blocks ${start}..${start + count - 1}`;
}
