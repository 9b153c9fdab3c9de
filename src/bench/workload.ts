/** Workload descriptions shared by the benchmark engine and the CLI. */

export const RW_MODES = ['randread', 'randwrite', 'read', 'write', 'randrw', 'rw'] as const;
export type RwMode = (typeof RW_MODES)[number];

export function isRandom(rw: RwMode): boolean {
  return rw === 'randread' || rw === 'randwrite' || rw === 'randrw';
}

/** Fraction of reads (0..100) for a mode; mixed modes use rwmixread. */
export function readPercent(rw: RwMode, rwmixread: number): number {
  if (rw === 'randread' || rw === 'read') return 100;
  if (rw === 'randwrite' || rw === 'write') return 0;
  return rwmixread;
}

/** xorshift32 PRNG: deterministic for a seed, no allocation. */
export class Rng {
  // The state lives in a typed array: a uint32 above 2^30 in an object field is a heap number, and V8 allocated
  // a new one on every step (measured: one allocation per I/O in the benchmark engine).
  private readonly s = new Uint32Array(1);
  constructor(seed: number) {
    this.s[0] = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.s[0]!;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s[0] = x;
    return this.s[0]!;
  }
  /** Uniform integer in [0, n) for n <= 2^32 (multiply-shift, no modulo bias worth speaking of). */
  below(n: number): number {
    return Math.floor((this.next() / 4294967296) * n);
  }
}
