/** `homi perf --initiator gpu`: option checks, the run, and its table. */
import { GPU_RW, runGpuPerf, type GpuPerfOptions, type GpuPerfReport, type GpuRw } from '../gpu/perf.js';
import { statusName } from '../nvme/status.js';
import { formatSize, parsePositiveInt, parseSize } from '../util/size.js';
import { renderTable } from '../util/table.js';
import { UsageError } from './errors.js';
import { sweepDir, writeSweep } from './sweep-output.js';

export interface GpuCliOptions {
  rw: string;
  bs: string;
  qd: string;
  nqueues: string;
  time?: string;
  ios?: string;
  rwmixread: string;
  nsid: string;
  verify: boolean;
  verifySpan: string;
  seed: string;
  json: boolean;
  mode: string;
  placement: string;
  gpu: string;
  entries?: string;
  blockThreads?: string;
  gpuTimeoutMs: string;
  threads?: string;
  backend?: string;
}

function int(name: string, text: string, max: number): number {
  try {
    return parsePositiveInt(name, text, max);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function gpuOptionsFrom(uri: string, o: GpuCliOptions): GpuPerfOptions {
  if (!(GPU_RW as readonly string[]).includes(o.rw)) throw new UsageError(`--rw: '${o.rw}' is not one of ${GPU_RW.join(', ')} for --initiator gpu`);
  if (o.backend !== undefined && o.backend !== 'driver') throw new UsageError(`--backend ${o.backend}: GPU initiators drive NVMe queues themselves (no backend to choose)`);
  if (o.threads !== undefined && o.threads !== '1') throw new UsageError('--threads: GPU runs size themselves with --qd, --nqueues and --mode');
  if (!uri.startsWith('emu:') && !uri.startsWith('gpuctl:') && !uri.startsWith('homid:')) {
    throw new UsageError(`--initiator gpu: '${uri}' is not an emu:// (embedded controller), gpuctl:// (GPU-resident controller) or homid:<device> (GPU leases from homid) URI`);
  }
  if (o.time !== undefined && o.ios !== undefined) throw new UsageError('--time and --ios cannot be combined; choose one bound');
  let bs: number;
  try {
    bs = parseSize(o.bs);
  } catch (e) {
    throw new UsageError(`--bs: ${(e as Error).message}`);
  }
  if (bs < 512 || bs % 512 !== 0) throw new UsageError(`--bs: ${bs} must be a positive multiple of 512 bytes`);
  const rwmix = Number(o.rwmixread);
  if (!/^\d+$/.test(o.rwmixread) || rwmix > 100) throw new UsageError(`--rwmixread: '${o.rwmixread}' must be an integer percentage 0..100`);
  const time = o.time !== undefined ? Number(o.time) : null;
  if (time !== null && !(time > 0)) throw new UsageError(`--time: '${o.time}' is not a positive number of seconds`);
  return {
    uri,
    mode: o.mode as GpuPerfOptions['mode'],
    rw: o.rw as GpuRw,
    bs,
    qd: int('--qd', o.qd, 1023),
    nqueues: int('--nqueues', o.nqueues, 4096),
    ...(o.entries !== undefined ? { entries: int('--entries', o.entries, 65536) } : {}),
    ...(o.blockThreads !== undefined ? { blockThreads: int('--block-threads', o.blockThreads, 1024) } : {}),
    ios: o.ios !== undefined ? int('--ios', o.ios, Number.MAX_SAFE_INTEGER) : null,
    timeSec: time ?? (o.ios === undefined ? 5 : null),
    rwmixread: rwmix,
    verify: o.verify,
    placement: o.placement as 'host' | 'device',
    nsid: int('--nsid', o.nsid, 0xfffffffe),
    seed: int('--seed', o.seed, 0xffffffff),
    timeoutMs: int('--gpu-timeout-ms', o.gpuTimeoutMs, 3_600_000),
    gpu: Number(o.gpu),
    ...(o.verify ? { spanBytes: parseSize(o.verifySpan) } : {}),
  };
}

function fmt(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return v.toFixed(0);
}

export function formatGpuPerf(r: GpuPerfReport): string {
  const title = `${r.rw} ${formatSize(r.bs)} qd ${r.qd} x ${r.nqueues} queue${r.nqueues > 1 ? 's' : ''} (${r.entries} entries), GPU-initiated, ${r.mode} mode, grid ${r.grid} x ${r.block} on ${r.gpu.name} (${r.gpu.pciBusId})`;
  const table = renderTable(
    ['path', 'IOPS', 'MiB/s', 'mean us', 'p50 us', 'p99 us', 'max us', 'errors', 'timeouts'],
    [
      [
        `GPU threads -> ${r.target === 'emu' ? 'embedded controller' : 'GPU-resident controller'}`,
        fmt(r.iops),
        r.mibPerSec.toFixed(1),
        r.latency.meanUs.toFixed(1),
        r.latency.p50Us.toFixed(1),
        r.latency.p99Us.toFixed(1),
        r.latency.maxUs.toFixed(1),
        String(r.errors),
        String(r.timeouts),
      ],
    ],
  );
  const lines = [title, `device: ${r.device}`, `payloads: ${r.placement}`, '', table, '', `${r.ios} I/Os in ${r.seconds.toFixed(3)} s (GPU events around the launch)`];
  if (r.mismatches !== null) lines.push(`verify: ${r.mismatches} mismatching I/Os`);
  if (r.firstError !== null) lines.push(`first error: ${statusName(r.firstError)} (0x${r.firstError.toString(16)})`);
  for (const n of r.notes) lines.push(n);
  lines.push('latency: from the command claim to its completion seen by the GPU thread, clock64 cycles at the nominal SM clock.');
  return lines.join('\n');
}

export async function gpuPerfCommand(uri: string, o: GpuCliOptions): Promise<number> {
  const opts = gpuOptionsFrom(uri, o);
  if (process.stderr.isTTY === true) opts.log = (l) => process.stderr.write(`${l}\n`);
  const r = await runGpuPerf(opts);
  process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${formatGpuPerf(r)}\n`);
  return r.errors > 0 || r.timeouts > 0 || (r.mismatches ?? 0) > 0 ? 1 : 0;
}

export interface GpuSweepCliOptions extends GpuCliOptions {
  out?: string;
}

function list(name: string, text: string, f: (s: string) => number): number[] {
  const parts = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (parts.length === 0) throw new UsageError(`${name}: give a comma-separated list`);
  return [...new Set(parts.map(f))].sort((a, b) => a - b);
}

/** `homi perf sweep --initiator gpu`: queue depth x queue count x I/O size; results.json and report.html. */
export async function gpuSweepCommand(uri: string, o: GpuSweepCliOptions, print: (s: string) => void = (s) => process.stdout.write(`${s}\n`)): Promise<number> {
  const { checkGpuSweep, runGpuSweep, renderGpuSweepHtml, gpuSweepPointName, gpuSweepSummary } = await import('../bench/gpu-sweep.js');
  const qds = list('--qd', o.qd, (s) => int('--qd', s, 1023));
  const nqs = list('--nqueues', o.nqueues, (s) => int('--nqueues', s, 4096));
  const bss = list('--bs', o.bs, (s) => {
    const v = parseSize(s);
    if (v < 512 || v % 512 !== 0) throw new UsageError(`--bs: ${v} must be a positive multiple of 512 bytes`);
    return v;
  });
  const base = gpuOptionsFrom(uri, { ...o, qd: String(qds[0]), nqueues: String(nqs[0]), bs: String(bss[0]), time: o.time ?? (o.ios === undefined ? '1' : undefined) });
  const { qd: _q, nqueues: _n, bs: _b, ...rest } = base;
  await checkGpuSweep({ base: rest, qds, nqueues: nqs, bss });
  const dir = sweepDir(o.out, 'homi-gpu-sweep');
  // As the CPU sweep: a live line while a point runs on a terminal, one finished line per point in any case.
  const tty = process.stderr.isTTY === true;
  const r = await runGpuSweep({
    base: rest,
    qds,
    nqueues: nqs,
    bss,
    onStart: (i, total, p) => {
      if (tty) process.stderr.write(`\r\x1b[K[${i + 1}/${total}] ${gpuSweepPointName(p)} ...`);
    },
    onPoint: (i, total, p) => {
      const line =
        p.failure !== undefined
          ? `[${i + 1}/${total}] ${gpuSweepPointName(p)}: failed: ${p.failure}`
          : `[${i + 1}/${total}] ${gpuSweepPointName(p)}: ${fmt(p.iops)} IOPS, ${(p.mibPerSec / 1024).toFixed(2)} GiB/s${p.latency ? `, p50 ${p.latency.p50Us.toFixed(1)} us, p99 ${p.latency.p99Us.toFixed(1)} us` : ''}${p.errors + p.timeouts > 0 ? `, ${p.errors} errors, ${p.timeouts} timeouts` : ''}`;
      process.stderr.write(tty ? `\r\x1b[K${line}\n` : `${line}\n`);
    },
  });
  const failed = r.points.filter((p) => p.failure !== undefined).map(gpuSweepPointName);
  writeSweep(dir, { result: r, html: renderGpuSweepHtml(r), failed, summary: gpuSweepSummary(r) }, o.json, print);
  return r.points.some((p) => p.failure !== undefined || p.errors > 0 || p.timeouts > 0) ? 1 : 0;
}
