/**
 * `homi load <files|dirs|globs...>`: files into host or GPU memory through one or more read paths, with a
 * progress bar on a terminal (a line per interval otherwise, on stderr), a summary table (or one JSON line per
 * path with --json), and per-file errors. The path that really ran is always printed with its own description.
 * Exit status: 0 when every file loaded (and verified, when asked), 1 when any failed, 2 for a usage error.
 */
import { SingleBar } from 'cli-progress';
import { discover } from '../load/discover.js';
import { LOAD_PATHS, LOAD_TARGETS, loadPlanned, type LoadPath, type LoadProgress, type LoadReport, type LoadTarget } from '../load/index.js';
import { DEFAULT_CHUNK_BYTES, DEFAULT_DEPTH } from '../load/defaults.js';
import { parsePositiveInt, parseSize } from '../util/size.js';
import { renderTable } from '../util/table.js';
import { UsageError } from './errors.js';

export interface LoadCliOptions {
  path: string;
  to: string;
  qd?: string;
  chunk?: string;
  direct?: boolean;
  socket?: string;
  device?: string;
  mode?: string;
  queues?: string;
  verify: boolean;
  cold?: boolean;
  json: boolean;
  interval: string;
  progress?: boolean;
}

const MiB = 1048576;

function parsePaths(text: string): LoadPath[] {
  const out: LoadPath[] = [];
  for (const p of text.split(',')) {
    if (!(LOAD_PATHS as readonly string[]).includes(p)) throw new UsageError(`--path ${p}: not a read path (${LOAD_PATHS.join('|')}, or several comma-separated)`);
    if (out.includes(p as LoadPath)) throw new UsageError(`--path ${p} is given twice`);
    out.push(p as LoadPath);
  }
  return out;
}

function fmtSeconds(s: number): string {
  return s < 10 ? s.toFixed(3) : s.toFixed(1);
}

/** The summary: one row per path, then what read, where it went, the cache, and every error. */
export function formatLoadReports(reports: readonly LoadReport[]): string {
  const rows = reports.map((r) => [
    r.path,
    r.target,
    String(r.files),
    (r.bytes / MiB).toFixed(1),
    fmtSeconds(r.seconds),
    r.filesPerSec.toFixed(0),
    r.mibPerSec.toFixed(1),
    r.latency.p50.toFixed(2),
    r.latency.p99.toFixed(2),
    r.latency.max.toFixed(2),
    String(r.errors.length),
  ]);
  const out = [renderTable(['path', 'to', 'files', 'MiB', 'seconds', 'files/s', 'MiB/s', 'p50 ms', 'p99 ms', 'max ms', 'errors'], rows)];
  for (const r of reports) {
    out.push(`${r.path}: read by ${r.describe}`);
    out.push(`${' '.repeat(r.path.length)}  into ${r.sink}`);
    if (r.setupSeconds >= 0.001) out.push(`${' '.repeat(r.path.length)}  set-up before the clock: ${fmtSeconds(r.setupSeconds)} s`);
    if (r.cache) out.push(`${' '.repeat(r.path.length)}  cache: ${r.cache}`);
    if (r.verified) out.push(`${' '.repeat(r.path.length)}  verified: all ${r.files} loaded file(s) equal a normal read`);
    if (r.errors.length) {
      out.push(`${' '.repeat(r.path.length)}  ${r.errors.length} error(s):`);
      for (const e of r.errors.slice(0, 20)) out.push(`    ${e.path}: ${e.reason}`);
      if (r.errors.length > 20) out.push(`    ... and ${r.errors.length - 20} more (--json lists all)`);
    }
  }
  return out.join('\n');
}

/** Progress: a bar on a terminal, a line every `intervalMs` otherwise (both on stderr). */
function progressReporter(label: string, tty: boolean): { update: (p: LoadProgress) => void; stop: () => void } {
  if (tty) {
    const bar = new SingleBar(
      { format: `${label} [{bar}] {percentage}% | {files} files | {mib} MiB | {rate} MiB/s | {duration_formatted}`, hideCursor: true, clearOnComplete: false, stream: process.stderr },
      undefined,
    );
    let started = false;
    return {
      update: (p) => {
        const payload = { files: `${p.filesDone}/${p.filesTotal}`, mib: (p.bytesDone / MiB).toFixed(0), rate: p.seconds > 0 ? (p.bytesDone / MiB / p.seconds).toFixed(0) : '0' };
        if (!started) {
          bar.start(Math.max(1, p.bytesTotal), p.bytesDone, payload);
          started = true;
        } else bar.update(p.bytesDone, payload);
      },
      stop: () => {
        if (started) bar.stop();
      },
    };
  }
  return {
    update: (p) =>
      process.stderr.write(
        `${label} ${p.seconds.toFixed(1)} s: ${p.filesDone}/${p.filesTotal} files, ${(p.bytesDone / MiB).toFixed(1)}/${(p.bytesTotal / MiB).toFixed(1)} MiB, ${p.seconds > 0 ? (p.bytesDone / MiB / p.seconds).toFixed(1) : '0'} MiB/s\n`,
      ),
    stop: () => undefined,
  };
}

export async function loadCommand(inputs: string[], o: LoadCliOptions): Promise<number> {
  const paths = parsePaths(o.path);
  if (!(LOAD_TARGETS as readonly string[]).includes(o.to)) throw new UsageError(`--to ${o.to}: host or gpu`);
  const to = o.to as LoadTarget;
  if (paths.includes('gpu') && o.device === undefined) throw new UsageError('--path gpu reads through homid: name its device (--device)');
  if (o.mode !== undefined && o.mode !== 'raw' && o.mode !== 'mediated') throw new UsageError(`--mode ${o.mode}: raw or mediated`);
  const depth = o.qd !== undefined ? parsePositiveInt('--qd', o.qd, 4096) : DEFAULT_DEPTH;
  const chunkBytes = o.chunk !== undefined ? parseSize(o.chunk) : DEFAULT_CHUNK_BYTES;
  if (chunkBytes < 4096 || chunkBytes % 4096 !== 0 || chunkBytes > 64 * MiB) throw new UsageError(`--chunk ${o.chunk}: a multiple of 4 KiB, at most 64 MiB`);
  const intervalMs = Math.round(Number(o.interval) * 1000);
  if (!Number.isFinite(intervalMs) || intervalMs < 50) throw new UsageError(`--interval ${o.interval}: seconds, at least 0.05`);
  if (inputs.length === 0) throw new UsageError('name the files to load (files, directories or globs)');
  const { files, errors } = discover(inputs);
  if (files.length === 0) {
    for (const e of errors) process.stderr.write(`homi load: ${e.path}: ${e.reason}\n`);
    throw new UsageError('nothing to load: no argument names a readable regular file');
  }
  const tty = o.progress !== false && process.stderr.isTTY === true;
  const reports: LoadReport[] = [];
  for (const path of paths) {
    const prog = o.progress === false ? null : progressReporter(`homi load ${path}`, tty);
    let loaded;
    try {
      loaded = await loadPlanned(files, errors, {
        path,
        to,
        depth,
        chunkBytes,
        verify: o.verify,
        ...(o.direct !== undefined ? { direct: o.direct } : {}),
        ...(o.cold !== undefined ? { cold: o.cold } : {}),
        ...(o.socket !== undefined ? { socket: o.socket } : {}),
        ...(o.device !== undefined ? { device: o.device } : {}),
        ...(o.mode !== undefined ? { mode: o.mode as 'raw' | 'mediated' } : {}),
        ...(o.queues !== undefined ? { queues: parsePositiveInt('--queues', o.queues, 1024) } : {}),
        ...(prog ? { onProgress: prog.update, progressMs: tty ? 200 : intervalMs } : {}),
      });
    } finally {
      prog?.stop();
    }
    loaded.close();
    reports.push(loaded.report);
    if (o.json) process.stdout.write(`${JSON.stringify(loaded.report)}\n`);
  }
  if (!o.json) process.stdout.write(`${formatLoadReports(reports)}\n`);
  return reports.some((r) => r.errors.length > 0) ? 1 : 0;
}
