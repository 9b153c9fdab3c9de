/**
 * A sorted free list of byte ranges inside one block of DMA memory: first-fit carving with alignment of the
 * device address, and coalescing on free. Shared by the embedded controller's shared memory segments and the
 * PCIe allocators' device-contiguous chunks.
 */

export interface FreeRange {
  start: number;
  end: number;
}

function roundUp(v: number, align: number): number {
  return Math.ceil(v / align) * align;
}

/**
 * Carve `need` bytes from the first range that fits, with (base + start) a multiple of `align`. Returns the
 * start offset within the block, or -1 when no range fits. The alignment padding stays free.
 */
export function takeFirstFit(fl: FreeRange[], need: number, align: number, base = 0): number {
  for (let i = 0; i < fl.length; i++) {
    const r = fl[i]!;
    const start = roundUp(base + r.start, align) - base;
    const end = start + need;
    if (end > r.end) continue;
    // Split r into [r.start, start) and [end, r.end).
    const tail: FreeRange | null = end < r.end ? { start: end, end: r.end } : null;
    if (start > r.start) {
      r.end = start;
      if (tail) fl.splice(i + 1, 0, tail);
    } else if (tail) {
      fl[i] = tail;
    } else {
      fl.splice(i, 1);
    }
    return start;
  }
  return -1;
}

/** Insert [start, end) into a sorted free list, coalescing with neighbours. */
export function insertFree(fl: FreeRange[], start: number, end: number): void {
  let lo = 0;
  let hi = fl.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (fl[mid]!.start < start) lo = mid + 1;
    else hi = mid;
  }
  const prev = lo > 0 ? fl[lo - 1]! : null;
  const next = lo < fl.length ? fl[lo]! : null;
  if (prev && prev.end === start) {
    prev.end = end;
    if (next && next.start === end) {
      prev.end = next.end;
      fl.splice(lo, 1);
    }
  } else if (next && next.start === end) {
    next.start = start;
  } else {
    fl.splice(lo, 0, { start, end });
  }
}
