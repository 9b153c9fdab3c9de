/**
 * Self-describing block patterns for --verify: every logical block carries its LBA, a generation number
 * and the namespace id in a 16-byte header, and the rest of the block is a fill derived from all three,
 * so a misplaced, stale or torn block is detected and reported with what it actually holds.
 */

export const PATTERN_MAGIC = 0x484f4d49; // "HOMI"
const HEADER_WORDS = 4;
const MULT = 2654435761;

export interface PatternMismatch {
  lba: number;
  expectedGeneration: number;
  foundLba: number;
  foundGeneration: number;
  wordIndex: number;
}

/** Fill `blocks` blocks of `blockSize` bytes in `words` (starting at word `at`) for LBAs lba.. with generation gen. */
export function fillPattern(words: Uint32Array, at: number, lba: number, blocks: number, blockSize: number, gen: number, nsid: number): void {
  const wpb = blockSize >>> 2;
  for (let b = 0; b < blocks; b++) {
    const base = at + b * wpb;
    const l = lba + b;
    const seed = (Math.imul(l >>> 0, MULT) ^ Math.imul(gen, 0x9e3779b1) ^ nsid) >>> 0;
    words[base] = l >>> 0;
    words[base + 1] = Math.floor(l / 4294967296) >>> 0;
    words[base + 2] = gen >>> 0;
    words[base + 3] = (PATTERN_MAGIC ^ nsid) >>> 0;
    for (let i = HEADER_WORDS; i < wpb; i++) words[base + i] = (seed + Math.imul(i, 0x01000193)) >>> 0;
  }
}

/**
 * Check blocks; returns -1 when all match, else the index of the first bad block (details via describeMismatch).
 */
export function checkPattern(words: Uint32Array, at: number, lba: number, blocks: number, blockSize: number, gen: number, nsid: number): number {
  const wpb = blockSize >>> 2;
  for (let b = 0; b < blocks; b++) {
    const base = at + b * wpb;
    const l = lba + b;
    if (words[base] !== l >>> 0 || words[base + 1] !== Math.floor(l / 4294967296) >>> 0 || words[base + 2] !== gen >>> 0 || words[base + 3] !== (PATTERN_MAGIC ^ nsid) >>> 0) return b;
    const seed = (Math.imul(l >>> 0, MULT) ^ Math.imul(gen, 0x9e3779b1) ^ nsid) >>> 0;
    for (let i = HEADER_WORDS; i < wpb; i++) if (words[base + i] !== (seed + Math.imul(i, 0x01000193)) >>> 0) return b;
  }
  return -1;
}

export function describeMismatch(words: Uint32Array, at: number, lba: number, badBlock: number, blockSize: number, gen: number): PatternMismatch {
  const wpb = blockSize >>> 2;
  const base = at + badBlock * wpb;
  let wordIndex = 0;
  const seedLba = lba + badBlock;
  const foundLba = words[base + 1]! * 4294967296 + words[base]!;
  if (foundLba === seedLba && words[base + 2] === gen) {
    wordIndex = HEADER_WORDS;
  }
  return { lba: seedLba, expectedGeneration: gen, foundLba, foundGeneration: words[base + 2]!, wordIndex };
}
