/**
 * The load runner: drives one read path over the planned files into one sink, and measures. Per file: latency
 * from the path's fileStart to its fileDone; after a file is done, a stat check (same inode, size and mtime as
 * planned, else the file failed: it changed during the load). After every file: the sink drains, the clock stops,
 * and with verify each loaded file is read back from the sink and compared with a normal read of the file.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { changedSince, type DiscoveryError } from './discover.js';
import type { LoadEvents, LoadFile, LoadPath, LoadPathEngine, LoadSink, LoadTarget } from './types.js';

export interface LoadLatency {
  /** Milliseconds, per file (fileStart to fileDone). */
  p50: number;
  p99: number;
  max: number;
}

export interface LoadReport {
  path: LoadPath;
  target: LoadTarget;
  /** What really read the files (the path's own words: never a silent fallback). */
  describe: string;
  /** Where the bytes went. */
  sink: string;
  /** Files loaded (every byte, unchanged, verified when asked). */
  files: number;
  /** Bytes of the files loaded. */
  bytes: number;
  seconds: number;
  /** Set-up before the clock (the path's prepare(): leases, registrations, modules), seconds; 0 when none. */
  setupSeconds: number;
  filesPerSec: number;
  mibPerSec: number;
  latency: LoadLatency;
  /** Files (or arguments) that failed, each with its reason. */
  errors: DiscoveryError[];
  /** True when every loaded file was compared with a normal read; null when not asked. */
  verified: boolean | null;
  /** Page-cache state before the load ("cold: ...", or why it is not cold); null when not asked. */
  cache: string | null;
}

/** Progress as the runner sees it (the CLI draws it). */
export interface LoadProgress {
  filesDone: number;
  filesTotal: number;
  bytesDone: number;
  bytesTotal: number;
  seconds: number;
}

export interface RunOptions {
  verify?: boolean;
  /** Called at most every `progressMs` (default 500) while the load runs, and once at the end. */
  onProgress?: (p: LoadProgress) => void;
  progressMs?: number;
  /** Page-cache note for the report (from cache.ts), null when not asked. */
  cache?: string | null;
  /** Errors found before the load (discovery): carried into the report. */
  errors?: DiscoveryError[];
}

/** Exact percentile (nearest rank) of sorted values. */
export function percentile(sorted: Float64Array | number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Where two byte arrays first differ, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Compare a loaded file with a normal read of it; a reason when they differ, else null. */
export function verifyFile(f: LoadFile, loaded: Uint8Array): string | null {
  let normal: Buffer;
  try {
    normal = fs.readFileSync(f.path);
  } catch (e) {
    return `verify: the normal read failed (${(e as Error).message})`;
  }
  const got = loaded.subarray(0, f.size);
  if (normal.length !== f.size) return `verify: the file is now ${normal.length} bytes, ${f.size} were loaded`;
  if (sha256(got) === sha256(normal)) return null;
  return `verify: the loaded bytes differ from a normal read (first difference at byte ${firstDifference(got, normal)})`;
}

export async function runLoad(files: readonly LoadFile[], engine: LoadPathEngine, sink: LoadSink, opts: RunOptions = {}): Promise<LoadReport> {
  const n = files.length;
  const started = new Float64Array(n).fill(-1);
  const latencyMs = new Float64Array(n).fill(-1);
  const failed = new Map<number, string>();
  let filesDone = 0;
  let bytesDone = 0;
  const bytesTotal = files.reduce((s, f) => s + f.size, 0);
  const s0 = performance.now();
  await engine.prepare?.(files, sink);
  const setupSeconds = (performance.now() - s0) / 1000;
  const t0 = performance.now();
  const progress = (): LoadProgress => ({ filesDone, filesTotal: n, bytesDone, bytesTotal, seconds: (performance.now() - t0) / 1000 });
  const events: LoadEvents = {
    fileStart(i) {
      if (started[i]! < 0) started[i] = performance.now();
    },
    fileDone(i, error, measuredMs) {
      if (latencyMs[i]! >= 0 || failed.has(i)) return; // one outcome per file
      filesDone++;
      if (error) {
        failed.set(i, error.message);
        return;
      }
      const now = performance.now();
      latencyMs[i] = measuredMs ?? now - (started[i]! >= 0 ? started[i]! : t0);
    },
    bytes(k) {
      bytesDone += k;
    },
  };
  const timer = opts.onProgress ? setInterval(() => opts.onProgress!(progress()), opts.progressMs ?? 500) : null;
  try {
    await engine.run(files, sink, events);
    sink.drain();
  } finally {
    if (timer) clearInterval(timer);
  }
  const seconds = (performance.now() - t0) / 1000;
  opts.onProgress?.(progress());
  // A file the path never finished is a failure of the path, said so.
  for (const f of files) {
    if (latencyMs[f.index]! < 0 && !failed.has(f.index)) failed.set(f.index, `the ${engine.path} path never finished this file`);
  }
  for (const f of files) {
    if (failed.has(f.index)) continue;
    const changed = changedSince(f);
    if (changed) failed.set(f.index, changed);
  }
  if (opts.verify) {
    for (const f of files) {
      if (failed.has(f.index)) continue;
      const bad = verifyFile(f, sink.readBack(f.index));
      if (bad) failed.set(f.index, bad);
    }
  }
  const ok = files.filter((f) => !failed.has(f.index));
  const lat = Float64Array.from(ok.map((f) => latencyMs[f.index]!)).sort();
  const bytes = ok.reduce((s, f) => s + f.size, 0);
  const errors: DiscoveryError[] = [...(opts.errors ?? []), ...[...failed].sort((a, b) => a[0] - b[0]).map(([i, reason]) => ({ path: files[i]!.path, reason }))];
  return {
    path: engine.path,
    target: sink.target,
    describe: engine.describe,
    sink: sink.describe,
    files: ok.length,
    bytes,
    seconds,
    setupSeconds,
    filesPerSec: seconds > 0 ? ok.length / seconds : 0,
    mibPerSec: seconds > 0 ? bytes / 1048576 / seconds : 0,
    latency: { p50: percentile(lat, 50), p99: percentile(lat, 99), max: lat.length ? lat[lat.length - 1]! : 0 },
    errors,
    verified: opts.verify ? true : null,
    cache: opts.cache ?? null,
  };
}
