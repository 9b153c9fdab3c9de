/**
 * Latency recording for the benchmark engine: a flat count array with exactly the bucket boundaries of the HDR
 * histogram the reports use (1 ns unit, 3 significant digits), filled on the hot path with a few integer
 * operations and no call into the histogram library; the counts are moved into an HDR histogram once, at the
 * end of a run. The result is the histogram that recording every value into hdr-histogram-js gives, bucket for
 * bucket, at a small fraction of the cost (measured with src/bench/engine-cost.ts; see docs/BENCHMARKS.md).
 *
 * Layout (HDR with lowestDiscernibleValue 1 and 3 significant digits: 2048 sub-buckets, half of them per
 * octave above the first): values 0..2047 ns have one bucket each; above, the octave [2^e, 2^(e+1)) for
 * e = 11..30 has 1024 buckets of width 2^(e-10). Values of 2^31 ns (2.1 s) and more go to the HDR histogram
 * directly (rare: only a command that takes seconds).
 *
 * Beside the buckets the recorder keeps each lane's exact moments (count, min, max, shifted sums and sums of
 * squares, LatencyMoments): the reports' min, max, mean and stddev come from them, not from bucket values, and
 * the percentiles are clamped to the exact [min, max] (src/bench/figures.ts). Lanes keep reads and writes apart.
 */
import * as hdr from 'hdr-histogram-js';

const LINEAR = 2048;
const SUB = 1024;
const TOP_EXP = 30;
/** Buckets of the flat array. */
export const LATENCY_BUCKETS = LINEAR + (TOP_EXP - 10) * SUB;
const MAX_FLAT = 2 ** 31;

/** A latency histogram in nanoseconds, as the engine reports it and mergeReports (perf.ts) merges them. */
export function newLatencyHistogram(): hdr.Histogram {
  return hdr.build({ bitBucketSize: 64, autoResize: true, lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });
}

/** Index of the bucket of a latency of v ns (an integer, 0 <= v < 2^31). */
export function latencyBucket(v: number): number {
  if (v < LINEAR) return v;
  const e = 31 - Math.clz32(v);
  return LINEAR + (e - 11) * SUB + ((v >>> (e - 10)) - SUB);
}

/** The smallest value of a bucket (what the flat counts are recorded into the HDR histogram as). */
export function latencyBucketValue(i: number): number {
  if (i < LINEAR) return i;
  const b = i - LINEAR;
  const e = 11 + Math.floor(b / SUB);
  return (SUB + (b % SUB)) * 2 ** (e - 10);
}

/**
 * Exact figures of a set of latencies (ns), kept per I/O beside the buckets: count, min, max, and the sums of
 * (v - shift) and (v - shift)^2 where shift is the first value recorded. The shift keeps the squares small, so
 * the variance (sumSq - sum^2 / count) does not cancel away in doubles when the spread is small against the mean.
 */
export interface LatencyMoments {
  count: number;
  min: number;
  max: number;
  shift: number;
  sum: number;
  sumSq: number;
}

export function emptyMoments(): LatencyMoments {
  return { count: 0, min: 0, max: 0, shift: 0, sum: 0, sumSq: 0 };
}

/** a + b, exactly as recording both sets into one recorder gives (b's sums re-expressed around a's shift). */
export function mergeMoments(a: LatencyMoments, b: LatencyMoments): LatencyMoments {
  if (a.count === 0) return { ...b };
  if (b.count === 0) return { ...a };
  const d = b.shift - a.shift;
  return {
    count: a.count + b.count,
    min: Math.min(a.min, b.min),
    max: Math.max(a.max, b.max),
    shift: a.shift,
    sum: a.sum + b.sum + b.count * d,
    sumSq: a.sumSq + b.sumSq + 2 * d * b.sum + b.count * d * d,
  };
}

/** The exact mean (ns). */
export function momentsMean(m: LatencyMoments): number {
  return m.count > 0 ? m.shift + m.sum / m.count : 0;
}

/** The sample standard deviation (ns; n - 1 in the denominator, as fio reports it; 0 for fewer than 2 values). */
export function momentsStddev(m: LatencyMoments): number {
  if (m.count < 2) return 0;
  const ss = m.sumSq - (m.sum * m.sum) / m.count;
  return Math.sqrt(Math.max(0, ss) / (m.count - 1));
}

// Indices of one lane's exact figures in LatencyRecorder's stats array.
const S_COUNT = 0;
const S_MIN = 1;
const S_MAX = 2;
const S_SHIFT = 3;
const S_SUM = 4;
const S_SUMSQ = 5;
const S_FIELDS = 6;

/**
 * Records latencies into `lanes` independent sets (the engine: lane 0 reads, lane 1 writes): per lane the flat
 * bucket counts and the exact moments.
 */
export class LatencyRecorder {
  /** Counts per bucket, lane after lane (doubles: a bucket may see more than 2^32 I/Os in a long run). */
  readonly counts: Float64Array;
  /** Each lane's exact figures (S_* fields): typed, so that updating them boxes nothing. */
  private readonly stats: Float64Array;
  /** Values of 2^31 ns and more, per lane (in the moments too). */
  private readonly bigValues: number[][];

  constructor(readonly lanes = 1) {
    this.counts = new Float64Array(lanes * LATENCY_BUCKETS);
    this.stats = new Float64Array(lanes * S_FIELDS);
    this.bigValues = Array.from({ length: lanes }, () => []);
  }

  /** Record one latency in nanoseconds (rounded to an integer, at least 1, as the HDR histogram was fed). */
  record(ns: number, lane = 0): void {
    const v = ns < 1 ? 1 : ns < MAX_FLAT ? (ns + 0.5) | 0 : Math.round(ns);
    if (v < MAX_FLAT) this.counts[lane * LATENCY_BUCKETS + (v < LINEAR ? v : latencyBucket(v))]++;
    else this.bigValues[lane]!.push(v);
    this.note(lane * S_FIELDS, v);
  }

  private note(o: number, v: number): void {
    const st = this.stats;
    if (st[o + S_COUNT] === 0) {
      st[o + S_SHIFT] = v;
      st[o + S_MIN] = v;
    } else if (v < st[o + S_MIN]!) st[o + S_MIN] = v;
    if (v > st[o + S_MAX]!) st[o + S_MAX] = v;
    const d = v - st[o + S_SHIFT]!;
    st[o + S_COUNT]++;
    st[o + S_SUM] += d;
    st[o + S_SUMSQ] += d * d;
  }

  /**
   * Record the latencies of n commands that completed at `clock[at]` (ms, performance.now()): command i started
   * at `starts[tags[i]]` (ms), into lane `laneOf[tags[i]]` (0 or 1; lane 0 without laneOf). One call per batch;
   * the clock comes in an array so that no double is boxed. The moments of the batch are summed in locals (two
   * lanes at most here) and added to the lanes' stats once.
   */
  recordBatch(clock: Float64Array, at: number, starts: Float64Array, tags: Int32Array, n: number, laneOf?: Uint8Array): void {
    if (n === 0) return;
    const now = clock[at]!;
    const counts = this.counts;
    const st = this.stats;
    const two = this.lanes > 1;
    const L1 = S_FIELDS;
    // A lane without values yet takes the batch's first latency as its shift (any value near the mean does).
    const first = Math.max(1, Math.round((now - starts[tags[0]!]!) * 1e6));
    if (st[S_COUNT] === 0) st[S_SHIFT] = first;
    if (two && st[L1 + S_COUNT] === 0) st[L1 + S_SHIFT] = first;
    const k0 = st[S_SHIFT]!;
    const k1 = two ? st[L1 + S_SHIFT]! : 0;
    let c0 = 0;
    let s0 = 0;
    let q0 = 0;
    let lo0 = st[S_COUNT] === 0 ? Infinity : st[S_MIN]!;
    let hi0 = st[S_MAX]!;
    let c1 = 0;
    let s1 = 0;
    let q1 = 0;
    let lo1 = !two || st[L1 + S_COUNT] === 0 ? Infinity : st[L1 + S_MIN]!;
    let hi1 = two ? st[L1 + S_MAX]! : 0;
    let big = 0;
    for (let i = 0; i < n; i++) {
      const tag = tags[i]!;
      const ns = (now - starts[tag]!) * 1e6;
      // Values of 2^31 ns and more: a second pass below (keeps v an integer here).
      if (ns >= MAX_FLAT) {
        big++;
        continue;
      }
      const lane = laneOf === undefined ? 0 : laneOf[tag]!;
      const v = ns < 1 ? 1 : (ns + 0.5) | 0;
      counts[lane * LATENCY_BUCKETS + (v < LINEAR ? v : latencyBucket(v))]++;
      if (lane === 0) {
        const d = v - k0;
        c0++;
        s0 += d;
        q0 += d * d;
        if (v < lo0) lo0 = v;
        if (v > hi0) hi0 = v;
      } else {
        const d = v - k1;
        c1++;
        s1 += d;
        q1 += d * d;
        if (v < lo1) lo1 = v;
        if (v > hi1) hi1 = v;
      }
    }
    if (c0 > 0) {
      st[S_COUNT] += c0;
      st[S_SUM] += s0;
      st[S_SUMSQ] += q0;
      st[S_MIN] = lo0;
      st[S_MAX] = hi0;
    }
    if (c1 > 0) {
      st[L1 + S_COUNT] += c1;
      st[L1 + S_SUM] += s1;
      st[L1 + S_SUMSQ] += q1;
      st[L1 + S_MIN] = lo1;
      st[L1 + S_MAX] = hi1;
    }
    if (big > 0) {
      for (let i = 0; i < n; i++) {
        const tag = tags[i]!;
        const ns = (now - starts[tag]!) * 1e6;
        if (ns >= MAX_FLAT) this.record(ns, laneOf === undefined ? 0 : laneOf[tag]!);
      }
    }
  }

  reset(): void {
    this.counts.fill(0);
    this.stats.fill(0);
    for (const b of this.bigValues) b.length = 0;
  }

  /** The exact figures of one lane. */
  moments(lane = 0): LatencyMoments {
    const st = this.stats;
    const o = lane * S_FIELDS;
    return { count: st[o + S_COUNT]!, min: st[o + S_MIN]!, max: st[o + S_MAX]!, shift: st[o + S_SHIFT]!, sum: st[o + S_SUM]!, sumSq: st[o + S_SUMSQ]! };
  }

  /**
   * Add what one lane recorded into an HDR histogram: the same buckets, and the exact minimum and maximum (the
   * other values of the minimum's bucket go in as the minimum, the rest as their bucket's lowest value).
   */
  addTo(h: hdr.Histogram, lane = 0): void {
    const c = this.counts;
    const { count, min, max } = this.moments(lane);
    const minAt = count > 0 && min < MAX_FLAT ? latencyBucket(min) : -1;
    const maxAt = count > 0 && max < MAX_FLAT ? latencyBucket(max) : -1;
    const base = lane * LATENCY_BUCKETS;
    for (let i = 0; i < LATENCY_BUCKETS; i++) {
      let n = c[base + i]!;
      if (n === 0) continue;
      if (i === maxAt) {
        h.recordValue(max);
        n--;
      }
      if (n > 0) h.recordValueWithCount(i === minAt ? min : latencyBucketValue(i), n);
    }
    for (const v of this.bigValues[lane]!) h.recordValue(v);
  }
}
