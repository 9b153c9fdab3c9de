/** `homi perf <uri> ...`: the synthetic benchmark through the driver core. */
import { checkPerfOptions, isSynchronousBackend, runPerf, type PerfOptions, type PerfReport } from '../bench/perf.js';
import { parsePercentiles, type LatencySummary } from '../bench/figures.js';
import { BACKENDS, type BackendName, type BufferPlacement } from '../io/types.js';
import { parsePeerSpec } from '../pci/peer-bar.js';
import { RW_MODES, type RwMode } from '../bench/workload.js';
import type { EngineProgress } from '../bench/engine.js';
import { parsePositiveInt, parseSize, formatSize } from '../util/size.js';
import { renderTable } from '../util/table.js';
import { UsageError } from './errors.js';
import { parseBufferPlacement } from '../io/p2pmem.js';
import { refuseIgnoredOptions, type CliRunOptions } from './refuse.js';
import { sweepDir, writeSweep } from './sweep-output.js';

export interface PerfCliOptions {
  rw: string;
  bs: string;
  qd: string;
  nqueues: string;
  time?: string;
  ios?: string;
  warmup: string;
  rwmixread: string;
  nsid: string;
  verify: boolean;
  verifySpan: string;
  seed: string;
  json: boolean;
  backend?: string;
  direct?: boolean;
  fixedBuffers?: boolean;
  hipri?: boolean;
  buffers?: string;
  threads?: string;
  percentiles?: string;
  invalidate?: string;
  fadvise_hint?: string;
  size?: string;
  offset?: string;
}

const MAX_QD = 65535;
const DEFAULT_TIME_SEC = 5;

function usage<T>(name: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    // Drop the option's own name where the parser put it first ("--qd: ..."); keep messages that start otherwise.
    throw new UsageError(`${name}: ${(e as Error).message.replace(/^--[\w-]+: /, '')}`);
  }
}

/** Seconds per unit of a duration (fio's: seconds by default, ms, s, m, h). */
const TIME_UNITS: Record<string, number> = { '': 1, ms: 1e-3, s: 1, m: 60, h: 3600 };

function parseSeconds(name: string, text: string, allowZero: boolean): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  const v = m ? Number(m[1]) * TIME_UNITS[m[2] ?? '']! : NaN;
  if (!Number.isFinite(v) || (!allowZero && v <= 0)) {
    throw new UsageError(`${name}: '${text}' is not a ${allowZero ? 'non-negative' : 'positive'} number of seconds (units: ms, s, m, h)`);
  }
  return v;
}

/** --size: bytes of the target the run uses (fio's size), more than 0. */
function parseRegionSize(text: string): number {
  const v = usage('--size', () => parseSize(text));
  if (v === 0) throw new UsageError(`--size: '${text}' must be more than 0 bytes`);
  return v;
}

/**
 * --buffers: host (default), peer:<bdf>[:bar] (a memory BAR of another PCI function, for the driver backend) or
 * p2pmem:<bdf> (the p2pmem a PCI function publishes through the kernel, for io_uring with O_DIRECT).
 */
export function parseBuffers(text: string): BufferPlacement {
  if (text === 'host') return { kind: 'host' };
  if (text.startsWith('peer:')) {
    const peer = usage('--buffers', () => parsePeerSpec(text.slice('peer:'.length)));
    return { kind: 'peer', ...peer };
  }
  if (text.startsWith('p2pmem:')) return usage('--buffers', () => parseBufferPlacement(text));
  throw new UsageError(`--buffers: '${text}' is not host, peer:<bdf>[:bar] (e.g. peer:0000:00:04.0:2) or p2pmem:<bdf>`);
}

/** fio's 0|1 switches (--invalidate, --fadvise_hint), on by default. */
function parseSwitch(name: string, text: string | undefined): boolean {
  if (text === undefined || text === '1') return true;
  if (text === '0') return false;
  throw new UsageError(`${name}: '${text}' must be 0 or 1`);
}

export function perfOptionsFrom(uri: string, o: PerfCliOptions): PerfOptions {
  if (!(RW_MODES as readonly string[]).includes(o.rw)) throw new UsageError(`--rw: '${o.rw}' is not one of ${RW_MODES.join(', ')}`);
  const bs = usage('--bs', () => parseSize(o.bs));
  if (bs < 512 || bs % 512 !== 0) throw new UsageError(`--bs: ${bs} must be a positive multiple of 512 bytes`);
  if (o.time !== undefined && o.ios !== undefined) throw new UsageError('--time and --ios cannot be combined; choose one bound');
  const ios = o.ios !== undefined ? usage('--ios', () => parsePositiveInt('--ios', o.ios!)) : null;
  const timeSec = o.time !== undefined ? parseSeconds('--time', o.time, false) : ios === null ? DEFAULT_TIME_SEC : null;
  if (o.backend !== undefined && !(BACKENDS as readonly string[]).includes(o.backend)) {
    throw new UsageError(`--backend: '${o.backend}' is not one of ${BACKENDS.filter((b) => b !== 'emu').join(', ')} (or emu)`);
  }
  const threads = o.threads !== undefined ? usage('--threads', () => parsePositiveInt('--threads', o.threads!, 256)) : 1;
  const rwmixread = Number(o.rwmixread);
  if (!/^\d+$/.test(o.rwmixread) || rwmixread > 100) throw new UsageError(`--rwmixread: '${o.rwmixread}' must be an integer percentage 0..100`);
  return {
    uri,
    rw: o.rw as RwMode,
    bs,
    qd: usage('--qd', () => parsePositiveInt('--qd', o.qd, MAX_QD)),
    nqueues: usage('--nqueues', () => parsePositiveInt('--nqueues', o.nqueues, 0xffff)),
    timeSec,
    ios,
    warmupSec: parseSeconds('--warmup', o.warmup, true),
    rwmixread,
    nsid: usage('--nsid', () => parsePositiveInt('--nsid', o.nsid, 0xfffffffe)),
    verify: o.verify,
    verifySpan: usage('--verify-span', () => parseSize(o.verifySpan)),
    seed: usage('--seed', () => parsePositiveInt('--seed', o.seed, 0xffffffff)),
    ...(o.backend !== undefined ? { backend: o.backend as BackendName } : {}),
    direct: o.direct === true,
    fixedBuffers: o.fixedBuffers === true,
    hipri: o.hipri === true,
    threads,
    ...(o.percentiles !== undefined ? { percentiles: usage('--percentiles', () => parsePercentiles(o.percentiles!)) } : {}),
    invalidate: parseSwitch('--invalidate', o.invalidate),
    fadviseHint: parseSwitch('--fadvise_hint', o.fadvise_hint),
    ...(o.offset !== undefined ? { offset: usage('--offset', () => parseSize(o.offset!)) } : {}),
    ...(o.size !== undefined ? { size: parseRegionSize(o.size) } : {}),
    ...(o.buffers !== undefined ? { buffers: parseBuffers(o.buffers) } : {}),
  };
}

/** Validate backend and options against the target before anything runs: a UsageError (exit 2) otherwise. */
export function checkBeforeRun(opts: PerfOptions): void {
  try {
    checkPerfOptions(opts);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function fmtNum(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return v.toFixed(0);
}

const us = (v: number): string => v.toFixed(1);

export function formatPerf(r: PerfReport): string {
  const title = `${r.rw} ${formatSize(r.bs)} qd ${r.qd} x ${r.nqueues} queue${r.nqueues > 1 ? 's' : ''}, ${r.threads} thread${r.threads > 1 ? 's' : ''}, ${r.device} (${r.model}, ${r.blockSize}-byte blocks)`;
  const path = r.backend === 'driver' || r.backend === 'emu' ? `driver core -> ${r.transport}` : `${r.backend}: ${r.transport}`;
  const pcts = Object.keys(r.latencyUs.percentiles);
  const latency = (l: LatencySummary): string[] => [us(l.min), ...pcts.map((k) => us(l.percentiles[k]!)), us(l.max), us(l.mean), us(l.stddev)];
  const cpu = [r.cpuNsPerIo.toFixed(0), r.processCpuNsPerIo.toFixed(0), String(r.errors)];
  // A mixed run has a row per direction (as fio's read and write sections) and one for all I/O.
  const mixed = r.reads > 0 && r.writes > 0;
  const rows = mixed
    ? [
        [path, 'read', fmtNum(r.read.iops), r.read.bandwidthMiBps.toFixed(1), ...latency(r.read.latencyUs), '', '', ''],
        ['', 'write', fmtNum(r.write.iops), r.write.bandwidthMiBps.toFixed(1), ...latency(r.write.latencyUs), '', '', ''],
        ['', 'all', fmtNum(r.iops), r.bandwidthMiBps.toFixed(1), ...latency(r.latencyUs), ...cpu],
      ]
    : [[path, r.writes > 0 ? 'write' : 'read', fmtNum(r.iops), r.bandwidthMiBps.toFixed(1), ...latency(r.latencyUs), ...cpu]];
  const table = renderTable(['path', 'I/O', 'IOPS', 'MiB/s', 'min us', ...pcts.map((k) => `${k} us`), 'max us', 'mean us', 'stddev us', 'thread ns/IO', 'process ns/IO', 'errors'], rows);
  const lines = [title, '', table, '', `${r.ios} I/Os (${r.reads} reads, ${r.writes} writes) in ${r.elapsedSec.toFixed(2)} s`];
  if (r.prefilledBlocks > 0 || r.verified > 0) lines.push(`verify: ${r.verified} blocks checked, ${r.verifyErrors} mismatches (${r.prefilledBlocks} blocks prefilled)`);
  if (r.firstMismatch) lines.push(`first mismatch: ${JSON.stringify(r.firstMismatch)}`);
  for (const [k, v] of Object.entries(r.errorsByStatus)) lines.push(`errors: ${v} x ${k}`);
  if (r.perThread) r.perThread.forEach((t, i) => lines.push(`thread ${i}: ${fmtNum(t.iops)} IOPS, ${t.cpuNsPerIo.toFixed(0)} ns/IO, ${t.errors} errors`));
  if (r.backend === 'driver' || r.buffers !== 'host memory') lines.push(`data buffers: ${r.buffers}`);
  if (r.options.offset > 0 || r.options.size !== null) lines.push(`region: bytes ${r.region.offset}..${r.region.offset + r.region.size - 1} of the target (${formatSize(r.region.size)})`);
  for (const n of r.notes) lines.push(n);
  lines.push('thread ns/IO = CPU time (user + kernel) of the submitting thread(s) per I/O; process ns/IO adds every other thread (the embedded controller, kernel workers do not count).');
  return lines.join('\n');
}

export function progressPrinter(enabled: boolean): ((p: EngineProgress) => void) | undefined {
  if (!enabled) return undefined;
  return (p) => {
    const total = p.totalSec !== null ? `/${p.totalSec.toFixed(0)} s` : p.totalIos !== null ? ` (${p.ios}/${p.totalIos} I/Os)` : '';
    process.stderr.write(`\r[${p.phase}] ${p.elapsedSec.toFixed(1)} s${total}  ${fmtNum(p.iops)} IOPS  errors ${p.errors}   `);
  };
}

export async function perfCommand(uri: string, o: PerfCliOptions & CliRunOptions): Promise<number> {
  if (o.initiator === 'gpu') {
    refuseIgnoredOptions(uri, o);
    const { gpuPerfCommand } = await import('./gpu-perf.js');
    return gpuPerfCommand(uri, o as unknown as import('./gpu-perf.js').GpuCliOptions);
  }
  const opts = perfOptionsFrom(uri, o);
  // A bad value is named as such (above) before an option is refused as ignored.
  refuseIgnoredOptions(uri, o);
  // A synchronous backend runs one I/O at a time: unless --qd was given (and is refused above 1), its depth is 1.
  if (opts.backend !== undefined && isSynchronousBackend(opts.backend) && o.explicit !== undefined && !o.explicit.has('qd')) opts.qd = 1;
  checkBeforeRun(opts);
  const tty = process.stderr.isTTY === true;
  const onProgress = progressPrinter(tty);
  if (onProgress) opts.onProgress = onProgress;
  let r: PerfReport;
  try {
    r = await runPerf(opts);
  } catch (e) {
    if (tty) process.stderr.write('\r\x1b[K');
    // Refusals at open (a backend that cannot honour an option, a missing device) are usage errors.
    if ((e as Error).name === 'IoOpenError') throw new UsageError((e as Error).message);
    throw e;
  }
  if (tty) process.stderr.write('\r\x1b[K');
  process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${formatPerf(r)}\n`);
  return r.errors > 0 || r.verifyErrors > 0 ? 1 : 0;
}

export interface SweepCliOptions extends Omit<PerfCliOptions, 'qd' | 'bs' | 'backend'> {
  qd: string;
  bs: string;
  backends?: string;
  out?: string;
}

function parseList<T>(name: string, text: string, f: (s: string) => T): T[] {
  const parts = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (parts.length === 0) throw new UsageError(`${name}: give a comma-separated list`);
  const out = parts.map(f);
  return [...new Set(out)];
}

export async function sweepCommand(uri: string, o: SweepCliOptions & CliRunOptions, print: (s: string) => void = (s) => process.stdout.write(`${s}\n`)): Promise<number> {
  if (o.initiator === 'gpu') {
    refuseIgnoredOptions(uri, o);
    const { gpuSweepCommand } = await import('./gpu-perf.js');
    return gpuSweepCommand(uri, o as unknown as import('./gpu-perf.js').GpuSweepCliOptions, print);
  }
  const { runSweep, checkSweep, sweepPointName, sweepSummary } = await import('../bench/sweep.js');
  const { renderSweepHtml } = await import('../bench/report-html.js');
  const { defaultBackend, parseTarget } = await import('../io/target.js');
  const qds = parseList('--qd', o.qd, (s) => usage('--qd', () => parsePositiveInt('--qd', s, MAX_QD))).sort((a, b) => a - b);
  const bss = parseList('--bs', o.bs, (s) => {
    const v = usage('--bs', () => parseSize(s));
    if (v < 512 || v % 512 !== 0) throw new UsageError(`--bs: ${v} must be a positive multiple of 512 bytes`);
    return v;
  }).sort((a, b) => a - b);
  let backends: BackendName[];
  try {
    backends = o.backends !== undefined ? parseList('--backends', o.backends, (s) => s as BackendName) : [defaultBackend(parseTarget(uri))];
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  for (const b of backends) if (!(BACKENDS as readonly string[]).includes(b)) throw new UsageError(`--backends: '${b}' is not one of ${BACKENDS.join(', ')}`);
  const base = perfOptionsFrom(uri, { ...o, qd: String(qds[0]), bs: String(bss[0]), time: o.time ?? (o.ios === undefined ? '2' : undefined) } as PerfCliOptions);
  const { qd: _q, bs: _b, backend: _k, ...rest } = base;
  refuseIgnoredOptions(uri, o);
  // A synchronous backend runs at depth 1 only, unless --qd was given (then a depth above 1 is refused).
  const syncQds = o.explicit !== undefined && !o.explicit.has('qd') ? Object.fromEntries(backends.filter(isSynchronousBackend).map((b) => [b, [1]])) : {};
  const sweep = { base: rest, qds, bss, backends, qdsByBackend: syncQds };
  try {
    await checkSweep(sweep);
  } catch (e) {
    // A point the device cannot run, or a target that cannot be opened, is a usage error; a failing device is not.
    if (e instanceof RangeError || (e as Error).name === 'IoOpenError') throw new UsageError((e as Error).message);
    throw e;
  }
  const tty = process.stderr.isTTY === true;
  const dir = sweepDir(o.out, 'homi-sweep');
  // A live line while each point runs on a terminal; one finished line per point on a terminal or not (a log).
  const result = await runSweep({
    ...sweep,
    onStart: (i, total, backend, bs, qd) => {
      if (tty) process.stderr.write(`\r\x1b[K[${i + 1}/${total}] ${sweepPointName({ backend, bs, qd })} ...`);
    },
    onPoint: (i, total, p) => {
      const line = p.failure
        ? `[${i + 1}/${total}] ${sweepPointName(p)}: failed: ${p.failure}`
        : `[${i + 1}/${total}] ${sweepPointName(p)}: ${fmtNum(p.iops)} IOPS, ${p.bandwidthMiBps.toFixed(1)} MiB/s${p.latencyUs ? `, p50 ${p.latencyUs.p50.toFixed(1)} us, p99 ${p.latencyUs.p99.toFixed(1)} us` : ''}, ${p.cpuNsPerIo.toFixed(0)} ns/IO${p.errors ? `, ${p.errors} errors` : ''}`;
      process.stderr.write(tty ? `\r\x1b[K${line}\n` : `${line}\n`);
    },
  });
  const failed = result.points.filter((p) => p.failure !== undefined).map(sweepPointName);
  writeSweep(dir, { result, html: renderSweepHtml(result), failed, summary: sweepSummary(result) }, o.json, print);
  return result.points.some((p) => p.failure !== undefined || p.errors > 0 || p.verifyErrors > 0) ? 1 : 0;
}
