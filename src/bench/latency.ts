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

export class LatencyRecorder {
  /** Counts per bucket (doubles: a bucket may see more than 2^32 I/Os in a long run). */
  readonly counts = new Float64Array(LATENCY_BUCKETS);
  /** The largest value recorded in the flat array, exactly (the HDR histogram reports the exact maximum). */
  private max = 0;
  /** Values of 2^31 ns and more. */
  private readonly bigValues: number[] = [];

  /** Record one latency in nanoseconds (rounded to an integer, at least 1, as the HDR histogram was fed). */
  record(ns: number): void {
    if (ns < MAX_FLAT) {
      const v = ns < 1 ? 1 : (ns + 0.5) | 0;
      if (v > this.max) this.max = v;
      this.counts[v < LINEAR ? v : latencyBucket(v)]++;
    } else this.bigValues.push(Math.round(ns));
  }

  /**
   * Record the latencies of n commands that completed at `clock[at]` (ms, performance.now()): command i started
   * at `starts[tags[i]]` (ms). One call per batch; the clock comes in an array so that no double is boxed.
   */
  recordBatch(clock: Float64Array, at: number, starts: Float64Array, tags: Int32Array, n: number): void {
    const now = clock[at]!;
    const counts = this.counts;
    let max = this.max;
    for (let i = 0; i < n; i++) {
      const ns = (now - starts[tags[i]!]!) * 1e6;
      if (ns < MAX_FLAT) {
        const v = ns < 1 ? 1 : (ns + 0.5) | 0;
        if (v > max) max = v;
        counts[v < LINEAR ? v : latencyBucket(v)]++;
      } else this.bigValues.push(Math.round(ns));
    }
    this.max = max;
  }

  reset(): void {
    this.counts.fill(0);
    this.bigValues.length = 0;
    this.max = 0;
  }

  /** Add everything recorded so far into an HDR histogram: the same buckets, the same maximum. */
  addTo(h: hdr.Histogram): void {
    const c = this.counts;
    const maxAt = this.max > 0 ? latencyBucket(this.max) : -1;
    for (let i = 0; i < c.length; i++) {
      const n = c[i]!;
      if (n === 0) continue;
      if (i === maxAt) {
        if (n > 1) h.recordValueWithCount(latencyBucketValue(i), n - 1);
        h.recordValue(this.max);
      } else h.recordValueWithCount(latencyBucketValue(i), n);
    }
    for (const v of this.bigValues) h.recordValue(v);
  }
}
