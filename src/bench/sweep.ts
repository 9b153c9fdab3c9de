/**
 * `homi perf sweep`: run a grid of (backend x block size x queue depth) perf points against one target and keep
 * every result; report-html.ts turns them into a self-contained HTML page.
 */
import * as os from 'node:os';
import { checkGeometry, checkPerfOptions, isSynchronousBackend, runPerf, type PerfOptions, type PerfReport } from './perf.js';
import { openIo } from '../io/open.js';
import type { BackendName } from '../io/types.js';
import { formatSize } from '../util/size.js';

export interface SweepOptions {
  base: Omit<PerfOptions, 'qd' | 'bs' | 'backend' | 'onProgress'>;
  qds: number[];
  bss: number[];
  backends: BackendName[];
  /** Queue depths of a backend where they differ from `qds` (a synchronous backend runs at depth 1 only). */
  qdsByBackend?: Partial<Record<BackendName, number[]>>;
  onPoint?: (i: number, total: number, p: SweepPoint) => void;
  onStart?: (i: number, total: number, backend: string, bs: number, qd: number) => void;
}

export interface SweepPoint {
  backend: string;
  bs: number;
  qd: number;
  iops: number;
  bandwidthMiBps: number;
  latencyUs: PerfReport['latencyUs'] | null;
  cpuNsPerIo: number;
  processCpuNsPerIo: number;
  errors: number;
  errorsByStatus: Record<string, number>;
  verifyErrors: number;
  transport: string;
  /** Set when this point could not run. */
  failure?: string;
}

export interface SweepResult {
  kind: 'homi-perf-sweep';
  version: 1;
  createdAt: string;
  uri: string;
  rw: string;
  timeSec: number | null;
  ios: number | null;
  nqueues: number;
  threads: number;
  options: { direct: boolean; fixedBuffers: boolean; hipri: boolean; verify: boolean };
  grid: { backends: string[]; bs: number[]; qd: number[] };
  machine: { hostname: string; cpus: number; cpuModel: string; kernel: string; node: string };
  model: string;
  points: SweepPoint[];
}

/** The queue depths a backend runs at. */
function qdsOf(o: Pick<SweepOptions, 'qds' | 'qdsByBackend'>, backend: BackendName): number[] {
  return o.qdsByBackend?.[backend] ?? o.qds;
}

/** Every point's options against the target, without opening anything (throws on the first refusal, naming the point). */
export function checkSweepOptions(o: SweepOptions): void {
  for (const backend of o.backends) {
    for (const bs of o.bss) {
      for (const qd of qdsOf(o, backend)) {
        if (isSynchronousBackend(backend) && qd > 1) {
          throw new RangeError(
            `sweep point ${sweepPointName({ backend, bs, qd })}: the ${backend} backend is synchronous (one I/O at a time), so a depth above 1 would be ignored; leave --qd out to sweep it at depth 1 beside the others`,
          );
        }
        try {
          checkPerfOptions({ ...o.base, qd, bs, backend });
        } catch (e) {
          // A refusal of the backend itself (IoOpenError: not of this point) reads as is.
          if ((e as Error).name === 'IoOpenError') throw e;
          throw new RangeError(`sweep point ${sweepPointName({ backend, bs, qd })}: ${(e as Error).message}`);
        }
      }
    }
  }
}

/**
 * Check the whole grid before anything runs: every point's options (checkSweepOptions), then every (bs, qd)
 * against the device as each backend sees it (opened once per backend, nothing submitted, closed): the maximum
 * transfer, the block size, the queue size, the queue pairs. Throws on the first point the device cannot run.
 */
export async function checkSweep(o: SweepOptions): Promise<void> {
  checkSweepOptions(o);
  for (const backend of o.backends) {
    const { direct, fixedBuffers, hipri, nsid, nqueues } = o.base;
    const dev = await openIo(o.base.uri, {
      backend,
      direct: direct ?? false,
      fixedBuffers: fixedBuffers ?? false,
      hipri: hipri ?? false,
      nsid,
      maxQueues: nqueues,
      ...(o.base.buffers !== undefined ? { buffers: o.base.buffers } : {}),
    });
    try {
      for (const bs of o.bss) {
        for (const qd of qdsOf(o, backend)) {
          try {
            checkGeometry({ ...o.base, bs, qd }, dev);
          } catch (e) {
            throw new RangeError(`sweep point ${sweepPointName({ backend, bs, qd })}: ${(e as Error).message}`);
          }
        }
      }
    } finally {
      await dev.close();
    }
  }
}

/** Run the grid (call checkSweep first: here each point that cannot run is recorded as a failure). */
export async function runSweep(o: SweepOptions): Promise<SweepResult> {
  checkSweepOptions(o);
  const points: SweepPoint[] = [];
  const total = o.backends.reduce((a, b) => a + o.bss.length * qdsOf(o, b).length, 0);
  let model = '';
  let i = 0;
  for (const backend of o.backends) {
    for (const bs of o.bss) {
      for (const qd of qdsOf(o, backend)) {
        o.onStart?.(i, total, backend, bs, qd);
        let p: SweepPoint;
        try {
          const r = await runPerf({ ...o.base, qd, bs, backend });
          model ||= r.model;
          p = {
            backend,
            bs,
            qd,
            iops: r.iops,
            bandwidthMiBps: r.bandwidthMiBps,
            latencyUs: r.latencyUs,
            cpuNsPerIo: r.cpuNsPerIo,
            processCpuNsPerIo: r.processCpuNsPerIo,
            errors: r.errors,
            errorsByStatus: r.errorsByStatus,
            verifyErrors: r.verifyErrors,
            transport: r.transport,
          };
        } catch (e) {
          p = {
            backend,
            bs,
            qd,
            iops: NaN,
            bandwidthMiBps: NaN,
            latencyUs: null,
            cpuNsPerIo: NaN,
            processCpuNsPerIo: NaN,
            errors: 0,
            errorsByStatus: {},
            verifyErrors: 0,
            transport: '',
            failure: (e as Error).message,
          };
        }
        points.push(p);
        o.onPoint?.(i, total, p);
        i++;
      }
    }
  }
  const cpus = os.cpus();
  return {
    kind: 'homi-perf-sweep',
    version: 1,
    createdAt: new Date().toISOString(),
    uri: o.base.uri,
    rw: o.base.rw,
    timeSec: o.base.timeSec,
    ios: o.base.ios,
    nqueues: o.base.nqueues,
    threads: o.base.threads ?? 1,
    options: { direct: o.base.direct ?? false, fixedBuffers: o.base.fixedBuffers ?? false, hipri: o.base.hipri ?? false, verify: o.base.verify },
    grid: { backends: [...o.backends], bs: [...o.bss], qd: [...o.qds] },
    machine: { hostname: os.hostname(), cpus: cpus.length, cpuModel: cpus[0]?.model ?? 'unknown', kernel: `${os.type()} ${os.release()}`, node: process.version },
    model,
    points,
  };
}

/** A point's name in progress lines and summaries, e.g. `io_uring bs 4 KiB qd 16`. */
export function sweepPointName(p: Pick<SweepPoint, 'backend' | 'bs' | 'qd'>): string {
  return `${p.backend} bs ${formatSize(p.bs)} qd ${p.qd}`;
}

/**
 * The end of a sweep in lines: how many points ran and how many of them failed or saw I/O errors, the grid, then
 * one line per failed point (its reason) and per point with errors.
 */
export function sweepSummary(r: SweepResult): string[] {
  const failed = r.points.filter((p) => p.failure !== undefined);
  const withErrors = r.points.filter((p) => p.failure === undefined && (p.errors > 0 || p.verifyErrors > 0));
  const ok = r.points.length - failed.length - withErrors.length;
  const counts = failed.length + withErrors.length === 0 ? 'all ok' : [`${ok} ok`, `${failed.length} failed`, ...(withErrors.length > 0 ? [`${withErrors.length} with errors`] : [])].join(', ');
  const grid = `${r.grid.backends.join(', ')} x bs ${r.grid.bs.map((b) => formatSize(b)).join(',')} x qd ${r.grid.qd.join(',')}`;
  return [
    `${r.points.length} point${r.points.length === 1 ? '' : 's'} (${counts}): ${grid}`,
    ...failed.map((p) => `failed: ${sweepPointName(p)}: ${p.failure}`),
    ...withErrors.map((p) => `errors: ${sweepPointName(p)}: ${p.errors} I/O errors, ${p.verifyErrors} verify mismatches`),
  ];
}
