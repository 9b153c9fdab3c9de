/** `homi perf <uri> ...`: the synthetic benchmark through the driver core. */
import { runPerf, type PerfOptions, type PerfReport } from '../bench/perf.js';
import { RW_MODES, type RwMode } from '../bench/workload.js';
import type { EngineProgress } from '../bench/engine.js';
import { parsePositiveInt, parseSize, formatSize } from '../util/size.js';
import { renderTable } from '../util/table.js';
import { UsageError } from './errors.js';

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
}

const MAX_QD = 65535;
const DEFAULT_TIME_SEC = 5;

function usage<T>(name: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw new UsageError(`${name}: ${(e as Error).message.replace(/^[^:]*: /, '')}`);
  }
}

function parseSeconds(name: string, text: string, allowZero: boolean): number {
  const v = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || !Number.isFinite(v) || (!allowZero && v <= 0)) {
    throw new UsageError(`${name}: '${text}' is not a ${allowZero ? 'non-negative' : 'positive'} number of seconds`);
  }
  return v;
}

export function perfOptionsFrom(uri: string, o: PerfCliOptions): PerfOptions {
  if (!(RW_MODES as readonly string[]).includes(o.rw)) throw new UsageError(`--rw: '${o.rw}' is not one of ${RW_MODES.join(', ')}`);
  const bs = usage('--bs', () => parseSize(o.bs));
  if (bs < 512 || bs % 512 !== 0) throw new UsageError(`--bs: ${bs} must be a positive multiple of 512 bytes`);
  if (o.time !== undefined && o.ios !== undefined) throw new UsageError('--time and --ios cannot be combined; choose one bound');
  const ios = o.ios !== undefined ? usage('--ios', () => parsePositiveInt('--ios', o.ios!)) : null;
  const timeSec = o.time !== undefined ? parseSeconds('--time', o.time, false) : ios === null ? DEFAULT_TIME_SEC : null;
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
  };
}

function fmtNum(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return v.toFixed(0);
}

export function formatPerf(r: PerfReport): string {
  const title = `${r.rw} ${formatSize(r.bs)} qd ${r.qd} x ${r.nqueues} queue${r.nqueues > 1 ? 's' : ''}, 1 driver thread, ${r.device} (${r.model}, ${r.blockSize}-byte blocks)`;
  const table = renderTable(
    ['path', 'IOPS', 'MiB/s', 'p50 us', 'p99 us', 'p99.9 us', 'max us', 'driver ns/IO', 'process ns/IO', 'errors'],
    [
      [
        `driver core -> ${r.transport}`,
        fmtNum(r.iops),
        r.bandwidthMiBps.toFixed(1),
        r.latencyUs.p50.toFixed(1),
        r.latencyUs.p99.toFixed(1),
        r.latencyUs.p999.toFixed(1),
        r.latencyUs.max.toFixed(1),
        r.cpuNsPerIo.toFixed(0),
        r.processCpuNsPerIo.toFixed(0),
        String(r.errors),
      ],
    ],
  );
  const lines = [title, '', table, '', `${r.ios} I/Os (${r.reads} reads, ${r.writes} writes) in ${r.elapsedSec.toFixed(2)} s`];
  if (r.prefilledBlocks > 0 || r.verified > 0) lines.push(`verify: ${r.verified} blocks checked, ${r.verifyErrors} mismatches (${r.prefilledBlocks} blocks prefilled)`);
  if (r.firstMismatch) lines.push(`first mismatch: ${JSON.stringify(r.firstMismatch)}`);
  for (const [k, v] of Object.entries(r.errorsByStatus)) lines.push(`errors: ${v} x ${k}`);
  lines.push('driver ns/IO = CPU time of the driver thread per I/O; process ns/IO adds the embedded controller thread.');
  return lines.join('\n');
}

export function progressPrinter(enabled: boolean): ((p: EngineProgress) => void) | undefined {
  if (!enabled) return undefined;
  return (p) => {
    const total = p.totalSec !== null ? `/${p.totalSec.toFixed(0)} s` : p.totalIos !== null ? ` (${p.ios}/${p.totalIos} I/Os)` : '';
    process.stderr.write(`\r[${p.phase}] ${p.elapsedSec.toFixed(1)} s${total}  ${fmtNum(p.iops)} IOPS  errors ${p.errors}   `);
  };
}

export async function perfCommand(uri: string, o: PerfCliOptions): Promise<number> {
  const opts = perfOptionsFrom(uri, o);
  const tty = process.stderr.isTTY === true;
  const onProgress = progressPrinter(tty);
  if (onProgress) opts.onProgress = onProgress;
  const r = await runPerf(opts);
  if (tty) process.stderr.write('\r\x1b[K');
  process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${formatPerf(r)}\n`);
  return r.errors > 0 || r.verifyErrors > 0 ? 1 : 0;
}
