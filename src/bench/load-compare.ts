/**
 * `homi load` against what a PyTorch user writes, on the same files in the same run: for each round, every
 * contender once (the order rotates each round so that no contender always goes first), medians over the
 * rounds, one side-by-side table, and a JSON report.
 *
 *   node dist/src/bench/load-compare.js --dataset <dir> [--paths io_uring,posix,...] [--to gpu|host]
 *     [--python python3|none] [--baselines torch:safetensors,...] [--cold] [--verify] [--rounds 3]
 *     [--out file.json] [--json] [--homi-cmd "node dist/src/cli/main.js"] [--homi-args "--no-progress --qd 64"]
 *     [--script bench/load/torch_baselines.py]
 *     [--timeout 600]
 *
 * The dataset is a directory written by `homi load gen` (its manifest.json lists the files; both sides load
 * exactly those). A homi contender is `<homi-cmd> load <files...> --path X --to T --json --cold|--no-cold
 * [--verify] <homi-args>` (homi-args default: --no-progress); a result line with per-file `errors` or
 * `verified: false` counts as failed. The PyTorch
 * contenders are one run of bench/load/torch_baselines.py per round (every baseline in turn). Both print JSON lines
 * of one shape (LoadResultSchema); anything else on stdout is ignored, so any command that prints such lines can
 * stand in for `homi` (tests use a fake one).
 *
 * Ratios are of median MiB/s: `x torch` against the PyTorch baseline with the best median MiB/s, `x io_uring`
 * against `homi load --path io_uring`. --cold drops the files from the page cache before each homi run here
 * (posix_fadvise DONTNEED, then mincore says what stayed) and the Python side does the same before each baseline.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, fstatSync, openSync, statfsSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { readManifest, type DatasetManifest } from '../load/dataset.js';
import { LOAD_PATHS, LOAD_TARGETS, type LoadTarget } from '../load/types.js';
import { POSIX_FADV_DONTNEED, fadviseRange } from '../sys/fileio.js';
import { residentPages } from '../sys/mman.js';
import { renderTable } from '../util/table.js';

/** One line of `homi load --json` (and of torch_baselines.py): one path's (or baseline's) run over all files. */
export const LoadResultSchema = z.looseObject({
  path: z.string(),
  target: z.string(),
  files: z.number().nonnegative(),
  bytes: z.number().nonnegative(),
  seconds: z.number().nonnegative(),
  filesPerSec: z.number().nonnegative(),
  mibPerSec: z.number().nonnegative(),
  latency: z.object({ p50: z.number(), p99: z.number(), max: z.number() }),
  describe: z.string(),
  skipped: z.string().optional(),
  error: z.string().optional(),
  cold: z.string().optional(),
  /** homi load: the page cache's state for this path; torch_baselines.py says it in `cold`. */
  cache: z.string().optional(),
  /** homi load: true / false / null (not asked); torch_baselines.py: the number of files verified. */
  verified: z.union([z.number(), z.boolean()]).nullable().optional(),
  /** homi load: the files that failed ({path, reason}); the run's numbers count only the others. */
  errors: z.array(z.unknown()).optional(),
});
export type LoadResult = z.infer<typeof LoadResultSchema>;

/** The result lines of a command's stdout: lines that are JSON objects of LoadResultSchema's shape. */
export function parseResultLines(stdout: string): LoadResult[] {
  const out: LoadResult[] = [];
  for (const line of stdout.split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    let j: unknown;
    try {
      j = JSON.parse(t);
    } catch {
      continue;
    }
    const r = LoadResultSchema.safeParse(j);
    if (r.success) out.push(r.data);
  }
  return out;
}

export const TORCH_BASELINES = ['torch:safetensors', 'torch:load-mmap', 'numpy:fromfile', 'python:read', 'torch:gds'] as const;

export const DEFAULT_SCRIPT = fileURLToPath(new URL('../../../bench/load/torch_baselines.py', import.meta.url));
export const DEFAULT_HOMI = [process.execPath, fileURLToPath(new URL('../cli/main.js', import.meta.url))];

export interface CompareOptions {
  /** Dataset directory (with manifest.json). */
  dataset: string;
  /** homi load paths to run (any names: passed as --path). */
  paths: string[];
  to: LoadTarget;
  /** Command that runs Python (split on spaces), or null for no PyTorch baselines. */
  python: string[] | null;
  script: string;
  /** Subset of TORCH_BASELINES (default all). */
  baselines: string[];
  /** Command that runs `homi` (argv prefix before `load`). */
  homiCmd: string[];
  /** More arguments for every `homi load` (e.g. --qd 128, --no-progress). */
  homiArgs: string[];
  cold: boolean;
  verify: boolean;
  rounds: number;
  timeoutSec: number;
  log: (s: string) => void;
}

/** Medians of the measured rounds. */
export interface Medians {
  files: number;
  bytes: number;
  seconds: number;
  filesPerSec: number;
  mibPerSec: number;
  p50: number;
  p99: number;
  max: number;
}

export interface ContenderReport {
  /** e.g. "homi:io_uring", "torch:safetensors". */
  name: string;
  side: 'homi' | 'torch';
  describe: string;
  /** Each round's result, as printed (measured, skipped or failed). */
  rounds: LoadResult[];
  /** Medians over the rounds that measured (no skip, no error); null when none did. */
  median: Medians | null;
  /** Why it did not run (the first reason given). */
  skipped: string | null;
  /** The first error of any round (such rounds are left out of the medians). */
  error: string | null;
  /** The page cache before each round: what --cold did here, what homi load said of it (one line per round). */
  cold: string[];
  /** Median MiB/s over the best PyTorch baseline's median MiB/s. */
  vsTorch: number | null;
  /** Median MiB/s over homi io_uring's median MiB/s. */
  vsIoUring: number | null;
}

export interface CompareReport {
  dataset: string;
  name: string;
  files: number;
  bytes: number;
  to: LoadTarget;
  cold: boolean;
  verify: boolean;
  rounds: number;
  started: string;
  contenders: ContenderReport[];
  /** The PyTorch baseline the `x torch` ratios divide by. */
  bestTorch: string | null;
  notes: string[];
  table: string;
}

export function median(v: readonly number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function medians(rs: readonly LoadResult[]): Medians {
  return {
    files: median(rs.map((r) => r.files)),
    bytes: median(rs.map((r) => r.bytes)),
    seconds: median(rs.map((r) => r.seconds)),
    filesPerSec: median(rs.map((r) => r.filesPerSec)),
    mibPerSec: median(rs.map((r) => r.mibPerSec)),
    p50: median(rs.map((r) => r.latency.p50)),
    p99: median(rs.map((r) => r.latency.p99)),
    max: median(rs.map((r) => r.latency.max)),
  };
}

interface RunOut {
  code: number | null;
  stdout: string;
  stderr: string;
  spawnError: string | null;
}

function runCommand(argv: string[], timeoutSec: number): Promise<RunOut> {
  return new Promise((done) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let spawnError: string | null = null;
    const timer = setTimeout(() => {
      spawnError = `killed after ${timeoutSec} s`;
      child.kill('SIGKILL');
    }, timeoutSec * 1000);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      spawnError = e.message;
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), spawnError });
    });
  });
}

/** The last non-empty line of a command's stderr (its reason, by convention), or a fallback. */
function lastLine(s: string, fallback: string): string {
  const lines = s
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return lines[lines.length - 1] ?? fallback;
}

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

/** Drop the files' pages from the page cache (no fsync: `homi load gen` already synced them); what stayed. */
export function dropFiles(files: readonly string[]): string {
  if (files.length === 0) return 'no files';
  const t = statfsSync(files[0]!).type;
  if (t === TMPFS_MAGIC || t === RAMFS_MAGIC) return `not dropped: ${dirname(files[0]!)} is on ${t === TMPFS_MAGIC ? 'tmpfs' : 'ramfs'}: its pages live in memory and cannot be dropped`;
  let resident = 0;
  let pages = 0;
  for (const f of files) {
    const fd = openSync(f, 'r');
    try {
      const r = fadviseRange(fd, 0, 0, POSIX_FADV_DONTNEED);
      if (r < 0) return `not dropped: posix_fadvise(${f}): errno ${-r}`;
    } finally {
      closeSync(fd);
    }
  }
  for (const f of files) {
    const fd = openSync(f, 'r');
    try {
      const r = residentOf(fd);
      resident += r.resident;
      pages += r.pages;
    } finally {
      closeSync(fd);
    }
  }
  const hint = resident > 0 ? ' (dirty pages stay: run sync after writing the files)' : '';
  return `page cache dropped (posix_fadvise DONTNEED): ${pages === 0 ? '0.0' : ((100 * resident) / pages).toFixed(1)}% of ${pages} pages resident after${hint}`;
}

function residentOf(fd: number): { resident: number; pages: number } {
  const { size } = fstatSync(fd);
  return size === 0 ? { resident: 0, pages: 0 } : residentPages(fd, size);
}

function fail(name: string, side: 'homi' | 'torch', to: LoadTarget, key: 'skipped' | 'error', why: string): LoadResult {
  return {
    path: name,
    target: to,
    files: 0,
    bytes: 0,
    seconds: 0,
    filesPerSec: 0,
    mibPerSec: 0,
    latency: { p50: 0, p99: 0, max: 0 },
    describe: side === 'homi' ? `homi load --path ${name.slice(5)}` : '',
    [key]: why,
  };
}

/** Run the comparison; the report's table is what the CLI prints. */
export async function loadCompare(o: CompareOptions): Promise<CompareReport> {
  const dataset = resolve(o.dataset);
  const manifest: DatasetManifest = readManifest(dataset);
  const files = manifest.files.map((f) => join(dataset, f.path));
  for (const f of files) if (!existsSync(f)) throw new Error(`${f}: listed in ${join(dataset, 'manifest.json')} but missing`);
  const notes: string[] = [];
  const started = new Date().toISOString();
  const contenders = new Map<string, ContenderReport>();
  const add = (name: string, side: 'homi' | 'torch'): ContenderReport => {
    let c = contenders.get(name);
    if (c === undefined) {
      c = { name, side, describe: '', rounds: [], median: null, skipped: null, error: null, cold: [], vsTorch: null, vsIoUring: null };
      contenders.set(name, c);
    }
    return c;
  };
  for (const p of o.paths) add(`homi:${p}`, 'homi');
  const baselines = o.baselines.length > 0 ? o.baselines : [...TORCH_BASELINES];
  if (o.python !== null) for (const b of baselines) add(b, 'torch');
  else notes.push('PyTorch baselines not run (--python none)');

  const record = (c: ContenderReport, r: LoadResult, round: number): void => {
    c.rounds.push(r);
    if (r.describe !== '' && c.describe === '') c.describe = r.describe;
    const cold = [r.cold, r.cache !== undefined ? `homi load says: ${r.cache}` : undefined].filter((x) => x !== undefined);
    if (cold.length > 0) c.cold.push(cold.join('; '));
    if (r.skipped !== undefined) c.skipped ??= r.skipped;
    if (r.error !== undefined) c.error ??= `round ${round}: ${r.error}`;
  };

  // The contenders of one round: each homi path, then the Python run (all its baselines); rotated per round.
  type Job = { label: string; run: (round: number) => Promise<void> };
  const jobs: Job[] = o.paths.map((p) => ({
    label: `homi:${p}`,
    run: async (round: number) => {
      const c = add(`homi:${p}`, 'homi');
      const cold = o.cold ? dropFiles(files) : undefined;
      const argv = [...o.homiCmd, 'load', ...files, '--path', p, '--to', o.to, '--json', o.cold ? '--cold' : '--no-cold', ...(o.verify ? ['--verify'] : []), ...o.homiArgs];
      const r = await runCommand(argv, o.timeoutSec);
      const lines = parseResultLines(r.stdout);
      const mine = lines.find((l) => l.path === p) ?? (lines.length === 1 ? lines[0] : undefined);
      let res: LoadResult;
      if (r.spawnError !== null) res = fail(c.name, 'homi', o.to, 'error', `${o.homiCmd.join(' ')}: ${r.spawnError}`);
      else if (mine === undefined) res = fail(c.name, 'homi', o.to, 'error', `exit ${r.code}, no result line: ${lastLine(r.stderr, '(no stderr)')}`);
      else if (mine.errors !== undefined && mine.errors.length > 0) res = { ...mine, error: `${mine.errors.length} file(s) failed, the first: ${JSON.stringify(mine.errors[0])}` };
      else if (mine.verified === false) res = { ...mine, error: '--verify: the loaded bytes differ from the files' };
      else if (r.code !== 0 && mine.error === undefined) res = { ...mine, error: `exit ${r.code}: ${lastLine(r.stderr, '(no stderr)')}` };
      else res = mine;
      if (cold !== undefined) res = { ...res, cold };
      record(c, res, round);
      o.log(`round ${round}: ${c.name}: ${summary(res)}`);
    },
  }));
  let pythonGone: string | null = null;
  if (o.python !== null) {
    const py = o.python;
    jobs.push({
      label: 'torch',
      run: async (round: number) => {
        if (pythonGone !== null) {
          for (const b of baselines) record(add(b, 'torch'), fail(b, 'torch', o.to, 'skipped', pythonGone), round);
          return;
        }
        const argv = [...py, o.script, '--device', o.to === 'gpu' ? 'cuda' : 'cpu', '--baselines', baselines.join(','), ...(o.cold ? ['--cold'] : []), ...(o.verify ? ['--verify'] : []), dataset];
        const r = await runCommand(argv, o.timeoutSec);
        const lines = parseResultLines(r.stdout);
        const why = r.spawnError !== null ? `${py.join(' ')}: ${r.spawnError}` : `exit ${r.code}: ${lastLine(r.stderr, '(no stderr)')}`;
        for (const b of baselines) {
          const mine = lines.find((l) => l.path === b);
          const res = mine ?? fail(b, 'torch', o.to, r.spawnError !== null ? 'skipped' : 'error', why);
          record(add(b, 'torch'), res, round);
          o.log(`round ${round}: ${b}: ${summary(res)}`);
        }
        // Python or torch missing: the same answer every round.
        if (r.spawnError !== null || (lines.length > 0 && lines.every((l) => l.skipped !== undefined))) {
          pythonGone = r.spawnError !== null ? why : (lines[0]!.skipped ?? why);
          if (r.code !== 0) notes.push(`PyTorch baselines: ${lastLine(r.stderr, why)}`);
        }
      },
    });
  }
  for (let round = 1; round <= o.rounds; round++) {
    for (let k = 0; k < jobs.length; k++) await jobs[(k + round - 1) % jobs.length]!.run(round);
  }

  for (const c of contenders.values()) {
    const ok = c.rounds.filter((r) => r.skipped === undefined && r.error === undefined);
    c.median = ok.length > 0 ? medians(ok) : null;
    if (c.median !== null) c.skipped = null;
  }
  const all = [...contenders.values()];
  let best: ContenderReport | null = null;
  for (const c of all) if (c.side === 'torch' && c.median !== null && (best === null || c.median.mibPerSec > best.median!.mibPerSec)) best = c;
  const io = contenders.get('homi:io_uring');
  const ioRate = io?.median?.mibPerSec ?? null;
  for (const c of all) {
    if (c.median === null) continue;
    c.vsTorch = best !== null && best.median!.mibPerSec > 0 ? c.median.mibPerSec / best.median!.mibPerSec : null;
    c.vsIoUring = ioRate !== null && ioRate > 0 ? c.median.mibPerSec / ioRate : null;
  }
  if (best === null && o.python !== null) notes.push('no PyTorch baseline measured: no "x torch" ratios');
  if (ioRate === null) notes.push('homi io_uring not measured: no "x io_uring" ratios');
  const report: CompareReport = {
    dataset,
    name: manifest.name,
    files: manifest.files.length,
    bytes: manifest.totalBytes,
    to: o.to,
    cold: o.cold,
    verify: o.verify,
    rounds: o.rounds,
    started,
    contenders: all,
    bestTorch: best?.name ?? null,
    notes,
    table: '',
  };
  report.table = renderCompare(report);
  return report;
}

function summary(r: LoadResult): string {
  if (r.skipped !== undefined) return `skipped: ${r.skipped}`;
  const base = `${r.files} files, ${fmtFixed(r.seconds, 3)} s, ${fmtRate(r.mibPerSec)} MiB/s, ${fmtRate(r.filesPerSec)} files/s`;
  return r.error !== undefined ? `${base}; error: ${r.error}` : base;
}

/** Rates: no decimals from 100 up, one below. */
export function fmtRate(v: number): string {
  return v >= 100 ? Math.round(v).toString() : v.toFixed(1);
}
export function fmtFixed(v: number, digits: number): string {
  return v.toFixed(digits);
}
/** Ratios as "1.23x". */
export function fmtRatio(v: number | null): string {
  return v === null ? '-' : `${v.toFixed(2)}x`;
}
/** Milliseconds: three significant figures at most, at least two decimals below 1 ms. */
export function fmtMs(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(3);
}

/** The side-by-side table and its notes. */
export function renderCompare(r: CompareReport): string {
  const header = ['contender', 'files', 'GiB', 'seconds', 'files/s', 'MiB/s', 'p50 ms', 'p99 ms', 'x torch', 'x io_uring'];
  const rows = r.contenders.map((c) => {
    const m = c.median;
    if (m === null) return [c.name, c.skipped !== null ? 'skipped' : 'failed', '', '', '', '', '', '', '', ''];
    return [
      c.name,
      String(Math.round(m.files)),
      (m.bytes / 2 ** 30).toFixed(3),
      fmtFixed(m.seconds, 3),
      fmtRate(m.filesPerSec),
      fmtRate(m.mibPerSec),
      fmtMs(m.p50),
      fmtMs(m.p99),
      fmtRatio(c.vsTorch),
      fmtRatio(c.vsIoUring),
    ];
  });
  const lines = [
    `dataset ${r.name}: ${r.files} files, ${(r.bytes / 2 ** 30).toFixed(3)} GiB (${r.dataset}); to ${r.to}; ${r.cold ? 'cold (page cache dropped before each run)' : 'warm (page cache as left)'}${r.verify ? '; verified' : ''}; median of ${r.rounds} round${r.rounds === 1 ? '' : 's'}`,
    renderTable(header, rows),
    `ratios: median MiB/s over ${r.bestTorch !== null ? `the best PyTorch baseline (${r.bestTorch})` : 'the best PyTorch baseline (none measured)'} and over homi io_uring`,
  ];
  for (const c of r.contenders) {
    const parts = c.describe !== '' ? [c.describe] : [];
    if (c.skipped !== null && c.median === null) parts.push(`skipped: ${c.skipped}`);
    if (c.error !== null) parts.push(`error: ${c.error}`);
    if (c.cold.length > 0) parts.push(`cache: ${c.cold[c.cold.length - 1]}`);
    lines.push(`  ${c.name}: ${parts.join('; ')}`);
  }
  for (const n of r.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}

function splitCmd(s: string): string[] {
  return s.split(/\s+/).filter((x) => x !== '');
}

const OPTIONS = {
  dataset: { type: 'string' },
  paths: { type: 'string', default: 'io_uring,posix' },
  to: { type: 'string', default: 'host' },
  python: { type: 'string', default: 'python3' },
  baselines: { type: 'string', default: TORCH_BASELINES.join(',') },
  script: { type: 'string', default: DEFAULT_SCRIPT },
  'homi-cmd': { type: 'string' },
  'homi-args': { type: 'string', default: '--no-progress' },
  cold: { type: 'boolean', default: false },
  verify: { type: 'boolean', default: false },
  rounds: { type: 'string', default: '3' },
  timeout: { type: 'string', default: '600' },
  out: { type: 'string' },
  json: { type: 'boolean', default: false },
  quiet: { type: 'boolean', default: false },
} as const;

async function main(): Promise<number> {
  const usage = (why: string): number => {
    process.stderr.write(`load-compare: ${why}\n`);
    return 2;
  };
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>;
  try {
    parsed = parseArgs({ options: OPTIONS });
  } catch (e) {
    const m = (e as Error).message.split('\n')[0]!;
    return usage(/ambiguous/.test(m) ? `${m} (attach a value that begins with --: --homi-args=--qd=128)` : m);
  }
  const { values } = parsed;
  if (values.dataset === undefined) return usage('--dataset <dir> is required (a directory written by homi load gen)');
  if (!(LOAD_TARGETS as readonly string[]).includes(values.to)) return usage(`--to ${values.to}: one of ${LOAD_TARGETS.join(', ')}`);
  const paths = values.paths
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const unknown = paths.filter((p) => !(LOAD_PATHS as readonly string[]).includes(p));
  if (values['homi-cmd'] === undefined && unknown.length > 0) return usage(`--paths: unknown ${unknown.join(', ')} (one of ${LOAD_PATHS.join(', ')})`);
  const baselines = values.baselines
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const badB = baselines.filter((b) => !(TORCH_BASELINES as readonly string[]).includes(b));
  if (badB.length > 0) return usage(`--baselines: unknown ${badB.join(', ')} (one of ${TORCH_BASELINES.join(', ')})`);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) return usage(`--rounds ${values.rounds}: a positive integer`);
  const timeoutSec = Number(values.timeout);
  if (!(timeoutSec > 0)) return usage(`--timeout ${values.timeout}: seconds, positive`);
  const python = values.python === 'none' || values.python === '' ? null : splitCmd(values.python);
  let report: CompareReport;
  try {
    report = await loadCompare({
      dataset: values.dataset,
      paths,
      to: values.to as LoadTarget,
      python,
      script: values.script,
      baselines,
      homiCmd: values['homi-cmd'] !== undefined ? splitCmd(values['homi-cmd']) : DEFAULT_HOMI,
      homiArgs: splitCmd(values['homi-args']),
      cold: values.cold,
      verify: values.verify,
      rounds,
      timeoutSec,
      log: values.quiet ? () => {} : (s) => process.stderr.write(`load-compare: ${s}\n`),
    });
  } catch (e) {
    process.stderr.write(`load-compare: ${(e as Error).message}\n`);
    return 1;
  }
  if (values.out !== undefined) writeFileSync(values.out, JSON.stringify(report, null, 1) + '\n');
  process.stdout.write(values.json ? JSON.stringify(report) + '\n' : report.table + '\n');
  return 0;
}

if (import.meta.url === `file://${process.argv[1]}`) process.exitCode = await main();
