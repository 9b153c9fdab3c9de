/**
 * What the fake contenders of test/load/compare.test.ts share: really read files and report the run in the
 * shape of one `homi load --json` line (src/bench/load-compare.ts's LoadResultSchema), and log what was printed.
 */
import { appendFileSync, readFileSync } from 'node:fs';

export interface FakeLine {
  path: string;
  target: string;
  files: number;
  bytes: number;
  seconds: number;
  filesPerSec: number;
  mibPerSec: number;
  latency: { p50: number; p99: number; max: number };
  describe: string;
  skipped?: string;
  errors?: unknown[];
  verified?: boolean | null;
  cache?: string;
}

/** Read every file `passes` times (readFileSync), timing each file; a result line named `path`. */
export function measureReads(path: string, target: string, files: readonly string[], passes: number, describe: string): FakeLine {
  const lat: number[] = [];
  let bytes = 0;
  const t0 = performance.now();
  for (const f of files) {
    const s = performance.now();
    let n = 0;
    for (let p = 0; p < passes; p++) n = readFileSync(f).length;
    lat.push(performance.now() - s);
    bytes += n;
  }
  const seconds = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const pick = (q: number): number => lat[Math.min(lat.length - 1, Math.max(0, Math.ceil(q * lat.length) - 1))] ?? 0;
  return {
    path,
    target,
    files: files.length,
    bytes,
    seconds,
    filesPerSec: files.length / seconds,
    mibPerSec: bytes / 2 ** 20 / seconds,
    latency: { p50: pick(0.5), p99: pick(0.99), max: lat[lat.length - 1] ?? 0 },
    describe,
  };
}

/** Print a result line and append it to the log file named by env `logVar` (if set). */
export function emit(line: FakeLine, logVar: string): void {
  const text = JSON.stringify(line);
  process.stdout.write(text + '\n');
  const log = process.env[logVar];
  if (log !== undefined && log !== '') appendFileSync(log, text + '\n');
}

/** The value after `--name` in argv, if any. */
export function flag(argv: readonly string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}
