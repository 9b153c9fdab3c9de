/**
 * Logical block helpers: block size <-> LBADS, bytes <-> blocks, and LBA range checks.
 */
import { checkSafe, checkUint, isPowerOfTwo } from './bytes.js';
import { LBADS_MAX, LBADS_MIN } from './identify-namespace.js';

/** The NLB field is 16 bits, 0's based: one command moves 1..65536 blocks. */
export const MAX_BLOCKS_PER_COMMAND = 0x1_0000;

export function checkBlockSize(blockSize: number): number {
  checkSafe('blockSize', blockSize);
  if (!isPowerOfTwo(blockSize) || blockSize < 2 ** LBADS_MIN || blockSize > 2 ** LBADS_MAX) {
    throw new RangeError(`blockSize must be a power of two in [512, 2^30], got ${blockSize}`);
  }
  return blockSize;
}

export function lbadsToBlockSize(lbads: number): number {
  checkUint('LBADS', lbads, LBADS_MAX);
  if (lbads < LBADS_MIN) throw new RangeError(`LBADS must be in [${LBADS_MIN}, ${LBADS_MAX}], got ${lbads}`);
  return 2 ** lbads;
}

export function blockSizeToLbads(blockSize: number): number {
  return Math.log2(checkBlockSize(blockSize));
}

/** Exact number of blocks in `bytes`; throws if `bytes` is not a multiple of the block size. */
export function bytesToBlocks(bytes: number, blockSize: number): number {
  checkSafe('bytes', bytes);
  checkBlockSize(blockSize);
  if (bytes % blockSize !== 0) throw new RangeError(`bytes (${bytes}) must be a multiple of blockSize (${blockSize})`);
  return bytes / blockSize;
}

/** Blocks needed to hold `bytes` (rounded up). */
export function bytesToBlocksCeil(bytes: number, blockSize: number): number {
  checkSafe('bytes', bytes);
  checkBlockSize(blockSize);
  return Math.ceil(bytes / blockSize);
}

export function blocksToBytes(blocks: number, blockSize: number): number {
  checkSafe('blocks', blocks);
  checkBlockSize(blockSize);
  const bytes = blocks * blockSize;
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`blocks * blockSize exceeds 2^53 - 1`);
  return bytes;
}

/** True when blocks [slba, slba + count) lie within a namespace of `nsze` blocks (count may be 0). */
export function lbaRangeInBounds(slba: number, count: number, nsze: number): boolean {
  return slba >= 0 && count >= 0 && slba <= nsze && count <= nsze - slba;
}

/** Throw a RangeError naming the field unless [slba, slba + count) is inside the namespace. */
export function checkLbaRange(slba: number, count: number, nsze: number): void {
  checkSafe('slba', slba);
  checkSafe('count', count);
  checkSafe('nsze', nsze);
  if (!lbaRangeInBounds(slba, count, nsze)) {
    throw new RangeError(`LBA range [${slba}, ${slba + count}) exceeds namespace size ${nsze} (LBA Out of Range)`);
  }
}

/** 0's based NLB field for a count of 1..65536 blocks. */
export function encodeNlb(count: number): number {
  checkUint('block count', count, MAX_BLOCKS_PER_COMMAND);
  if (count === 0) throw new RangeError("block count must be at least 1 (NLB is 0's based)");
  return count - 1;
}

/** Block count from a 0's based NLB field (CDW12 bits 15:0). */
export function decodeNlb(cdw12: number): number {
  return (cdw12 & 0xffff) + 1;
}
