/**
 * The data pattern GPU kernels write and check (homi_pattern_word in src/gpu/kernels/nvme_queue.cuh), for the
 * host to check what GPU writes left on the controller, or to prepare what GPU reads must find.
 */
const M64 = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;

function mix64(x: bigint): bigint {
  x ^= x >> 33n;
  x = (x * 0xff51afd7ed558ccdn) & M64;
  x ^= x >> 33n;
  x = (x * 0xc4ceb9fe1a85ec53n) & M64;
  x ^= x >> 33n;
  return x;
}

/** The 64-bit word at byte `offset` (a multiple of 8) of LBA `lba`. */
export function patternWord(seed: number, lba: number, offset: number): bigint {
  return mix64((BigInt(seed) ^ ((BigInt(lba) * GOLDEN) & M64) ^ BigInt(offset)) & M64);
}

/** Fill `out` with the pattern of `blocks` LBAs from `slba` (block size `blockSize`). */
export function fillPattern(out: Uint8Array, seed: number, slba: number, blockSize: number): void {
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let o = 0; o + 8 <= out.byteLength; o += 8) dv.setBigUint64(o, patternWord(seed, slba + Math.floor(o / blockSize), o % blockSize), true);
}

/** The first LBA in `data` (from `slba`) that differs from the pattern, or -1. */
export function checkPattern(data: Uint8Array, seed: number, slba: number, blockSize: number): number {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  for (let o = 0; o + 8 <= data.byteLength; o += 8) {
    if (dv.getBigUint64(o, true) !== patternWord(seed, slba + Math.floor(o / blockSize), o % blockSize)) return slba + Math.floor(o / blockSize);
  }
  return -1;
}
