/**
 * The figures a run reports, from what the engine recorded (an HDR histogram and the exact moments of a set of
 * latencies, ./latency.ts): latency summaries with the requested percentiles, and per-direction sections that
 * carry HOMI's field names and, beside them, fio's (`iops`, `bw` in KiB/s, `clat_ns` with its `percentile` map),
 * so that fio's consumers can read them.
 *
 * Percentiles come from the histogram: a bucket stands for every value in it, and HDR reports the top of the
 * bucket, which may lie above the largest value really seen. Every percentile is therefore clamped to the exact
 * [min, max] of the run. min, max, mean and stddev are exact (from the per-I/O moments, not from buckets).
 */
import type * as hdr from 'hdr-histogram-js';
import { momentsMean, momentsStddev, type LatencyMoments } from './latency.js';

/** The percentiles reported when none are asked for (the table's columns, and latencyUs.percentiles). */
export const DEFAULT_PERCENTILES: readonly number[] = [50, 99, 99.9];
/** At most this many percentiles in one list (fio's limit too). */
export const MAX_PERCENTILES = 20;

const NS_PER_US = 1000;
const KIB = 1024;
const MIB = 1024 * 1024;
const MS_PER_SEC = 1000;

export interface LatencySummary {
  min: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
  /** Sample standard deviation (n - 1), from the exact per-I/O sums. */
  stddev: number;
  /** The requested percentiles, keyed "p" and the percentile ("p99.9"), in order; never below min nor above max. */
  percentiles: Record<string, number>;
}

/** fio's latency object (`clat_ns`, `lat_ns`): nanoseconds, percentiles keyed "%f" ("99.900000"). */
export interface FioLatencyNs {
  min: number;
  max: number;
  mean: number;
  stddev: number;
  N: number;
  percentile: Record<string, number>;
}

/** One direction of a run (reads or writes): HOMI's fields, then fio's names for the same figures. */
export interface DirectionFigures {
  ios: number;
  iops: number;
  bandwidthMiBps: number;
  latencyUs: LatencySummary;
  io_bytes: number;
  io_kbytes: number;
  bw_bytes: number;
  /** KiB/s, as fio's `bw`. */
  bw: number;
  /** ms */
  runtime: number;
  total_ios: number;
  /**
   * Time from queueing a command to reaping its completion. HOMI stamps a command once, when it is queued, so
   * this is fio's `lat` (submission + completion); `clat_ns` carries the same figures under fio's usual name.
   */
  lat_ns: FioLatencyNs;
  clat_ns: FioLatencyNs;
}

/** A percentile of the histogram (ns), clamped to the exact [min, max]. */
function percentileNs(hist: hdr.Histogram, m: LatencyMoments, p: number): number {
  if (m.count === 0) return 0;
  return Math.min(m.max, Math.max(m.min, hist.getValueAtPercentile(p)));
}

/** Latency figures in ns (fio's shape), from a histogram and the exact moments of the same values. */
export function latencyNs(hist: hdr.Histogram, m: LatencyMoments, percentiles: readonly number[]): FioLatencyNs {
  const percentile: Record<string, number> = {};
  for (const p of percentiles) percentile[p.toFixed(6)] = percentileNs(hist, m, p);
  return { min: m.count > 0 ? m.min : 0, max: m.max, mean: momentsMean(m), stddev: momentsStddev(m), N: m.count, percentile };
}

/** p50, p99, p99.9, the requested percentiles, min, max, mean and stddev, in microseconds (ns resolution). */
export function latencySummary(hist: hdr.Histogram, m: LatencyMoments, percentiles: readonly number[] = DEFAULT_PERCENTILES): LatencySummary {
  const us = (v: number): number => Math.round(v) / NS_PER_US;
  const at = (p: number): number => us(percentileNs(hist, m, p));
  const out: Record<string, number> = {};
  for (const p of percentiles) out[`p${p}`] = at(p);
  return { min: us(m.count > 0 ? m.min : 0), p50: at(50), p99: at(99), p999: at(99.9), max: us(m.max), mean: us(momentsMean(m)), stddev: us(momentsStddev(m)), percentiles: out };
}

/** One direction's figures: `ios` of `bs` bytes over `elapsedSec`, latencies from `hist` and `m`. */
export function directionFigures(ios: number, bs: number, elapsedSec: number, hist: hdr.Histogram, m: LatencyMoments, percentiles: readonly number[]): DirectionFigures {
  const bytes = ios * bs;
  const perSec = elapsedSec > 0 ? 1 / elapsedSec : 0;
  const ns = latencyNs(hist, m, percentiles);
  return {
    ios,
    iops: ios * perSec,
    bandwidthMiBps: (bytes * perSec) / MIB,
    latencyUs: latencySummary(hist, m, percentiles),
    io_bytes: bytes,
    io_kbytes: Math.floor(bytes / KIB),
    bw_bytes: Math.round(bytes * perSec),
    bw: Math.round((bytes * perSec) / KIB),
    runtime: Math.round(elapsedSec * MS_PER_SEC),
    total_ios: ios,
    lat_ns: ns,
    clat_ns: ns,
  };
}

/** Parse a percentile list: numbers in (0, 100] separated by commas or colons (fio's --percentile_list). */
export function parsePercentiles(text: string): number[] {
  const parts = text.split(/[,:]/).map((s) => s.trim());
  if (parts.length === 0 || parts.some((s) => s === '')) throw new RangeError(`'${text}' is not a list of percentiles (e.g. 50,90,99,99.9,99.99)`);
  if (parts.length > MAX_PERCENTILES) throw new RangeError(`'${text}' has ${parts.length} percentiles; at most ${MAX_PERCENTILES}`);
  const out: number[] = [];
  for (const s of parts) {
    const v = Number(s);
    if (!/^\d+(\.\d+)?$/.test(s) || !(v > 0 && v <= 100)) throw new RangeError(`'${s}' is not a percentile in (0, 100]`);
    if (!out.includes(v)) out.push(v);
  }
  return out.sort((a, b) => a - b);
}
