/**
 * `homi perf sweep --initiator gpu`: GPU-initiated runs over queue depth x queue count x I/O size, laid out as
 * the paper's device-initiated tables are (IOPS by queue depth, one line per queue count; bandwidth by I/O
 * size), written as results.json and a self-contained report.html.
 */
import * as os from 'node:os';
import { checkGpuPerfOptions, gpuTargetFacts, runGpuPerf, type GpuPerfOptions, type GpuPerfReport } from '../gpu/perf.js';
import { formatSize } from '../util/size.js';
import { escapeXml, formatCompact, PALETTE, renderLineChart, type Series } from './report-svg.js';
import { REPORT_CSS } from './report-html.js';

export interface GpuSweepOptions {
  base: Omit<GpuPerfOptions, 'qd' | 'nqueues' | 'bs'>;
  qds: number[];
  nqueues: number[];
  bss: number[];
  onPoint?: (i: number, total: number, p: GpuSweepPoint) => void;
  onStart?: (i: number, total: number, p: Pick<GpuSweepPoint, 'qd' | 'nqueues' | 'bs'>) => void;
  /** Test seam: the run of one point (default runGpuPerf). */
  run?: (o: GpuPerfOptions) => Promise<GpuPerfReport>;
}

export interface GpuSweepPoint {
  qd: number;
  nqueues: number;
  bs: number;
  threads: number;
  iops: number;
  mibPerSec: number;
  latency: GpuPerfReport['latency'] | null;
  errors: number;
  timeouts: number;
  failure?: string;
}

export interface GpuSweepResult {
  kind: 'homi-gpu-sweep';
  version: 1;
  createdAt: string;
  uri: string;
  mode: string;
  rw: string;
  placement: string;
  gpu: GpuPerfReport['gpu'] | null;
  machine: { hostname: string; cpus: number; cpuModel: string };
  points: GpuSweepPoint[];
}

/** Check every point of the grid against its target before the GPU is touched (throws on the first, naming it). */
export async function checkGpuSweep(o: Pick<GpuSweepOptions, 'base' | 'qds' | 'nqueues' | 'bss'>): Promise<void> {
  const facts = await gpuTargetFacts(o.base.uri);
  for (const bs of o.bss) {
    for (const nq of o.nqueues) {
      for (const qd of o.qds) {
        try {
          checkGpuPerfOptions({ ...o.base, qd, nqueues: nq, bs }, facts);
        } catch (e) {
          throw new RangeError(`sweep point ${gpuSweepPointName({ qd, nqueues: nq, bs })}: ${(e as Error).message}`);
        }
      }
    }
  }
}

/** Run the grid; without a `run` seam every point is checked first (checkGpuSweep). */
export async function runGpuSweep(o: GpuSweepOptions): Promise<GpuSweepResult> {
  if (o.run === undefined) await checkGpuSweep(o);
  const run = o.run ?? runGpuPerf;
  const points: GpuSweepPoint[] = [];
  let gpu: GpuPerfReport['gpu'] | null = null;
  let placement = '';
  const total = o.qds.length * o.nqueues.length * o.bss.length;
  let i = 0;
  for (const bs of o.bss) {
    for (const nq of o.nqueues) {
      for (const qd of o.qds) {
        o.onStart?.(i, total, { qd, nqueues: nq, bs });
        let p: GpuSweepPoint;
        try {
          const r = await run({ ...o.base, qd, nqueues: nq, bs });
          gpu = r.gpu;
          placement = r.placement;
          p = { qd, nqueues: nq, bs, threads: r.threads, iops: r.iops, mibPerSec: r.mibPerSec, latency: r.latency, errors: r.errors, timeouts: r.timeouts };
        } catch (e) {
          if ((e as Error).name === 'NoCudaDriverError') throw e;
          p = { qd, nqueues: nq, bs, threads: qd * nq, iops: 0, mibPerSec: 0, latency: null, errors: 0, timeouts: 0, failure: (e as Error).message };
        }
        points.push(p);
        o.onPoint?.(i++, total, p);
      }
    }
  }
  return {
    kind: 'homi-gpu-sweep',
    version: 1,
    createdAt: new Date().toISOString(),
    uri: o.base.uri,
    mode: o.base.mode,
    rw: o.base.rw,
    placement,
    gpu,
    machine: { hostname: os.hostname(), cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown' },
    points,
  };
}

/** A point's name in progress lines and summaries, e.g. `4 KiB 4 q x qd 64`. */
export function gpuSweepPointName(p: Pick<GpuSweepPoint, 'qd' | 'nqueues' | 'bs'>): string {
  return `${formatSize(p.bs)} ${p.nqueues} q x qd ${p.qd}`;
}

/** The end of a GPU sweep in lines: how many points ran, how many failed or saw errors, then one line for each of those. */
export function gpuSweepSummary(r: GpuSweepResult): string[] {
  const failed = r.points.filter((p) => p.failure !== undefined);
  const withErrors = r.points.filter((p) => p.failure === undefined && (p.errors > 0 || p.timeouts > 0));
  const ok = r.points.length - failed.length - withErrors.length;
  const counts = failed.length + withErrors.length === 0 ? 'all ok' : [`${ok} ok`, `${failed.length} failed`, ...(withErrors.length > 0 ? [`${withErrors.length} with errors`] : [])].join(', ');
  return [
    `${r.points.length} point${r.points.length === 1 ? '' : 's'} (${counts})`,
    ...failed.map((p) => `failed: ${gpuSweepPointName(p)}: ${p.failure}`),
    ...withErrors.map((p) => `errors: ${gpuSweepPointName(p)}: ${p.errors} errors, ${p.timeouts} timeouts`),
  ];
}

export function gpuSweepCharts(r: GpuSweepResult): Array<{ title: string; svg: string }> {
  const ok = r.points.filter((p) => p.failure === undefined);
  const charts: Array<{ title: string; svg: string }> = [];
  for (const bs of [...new Set(ok.map((p) => p.bs))]) {
    const series: Series[] = [...new Set(ok.map((p) => p.nqueues))].map((nq) => ({
      name: `${nq} queue${nq > 1 ? 's' : ''}`,
      points: ok.filter((p) => p.bs === bs && p.nqueues === nq).map((p): [number, number] => [p.qd, p.iops]),
    }));
    const title = `IOPS by queue depth, ${formatSize(bs)} ${r.rw}`;
    charts.push({ title, svg: renderLineChart({ title, xLabel: 'queue depth (threads per queue)', yLabel: 'IOPS', series }) });
    // p50 (solid) and p99 (dashed) by queue depth, one colour per queue count.
    const latency: Series[] = [...new Set(ok.map((p) => p.nqueues))].flatMap((nq, i) => {
      const pts = ok.filter((p) => p.bs === bs && p.nqueues === nq && p.latency !== null);
      const color = PALETTE[i % PALETTE.length]!;
      const name = `${nq} queue${nq > 1 ? 's' : ''}`;
      return [
        { name: `${name} p50`, color, points: pts.map((p): [number, number] => [p.qd, p.latency!.p50Us]) },
        { name: `${name} p99`, color, dashed: true, points: pts.map((p): [number, number] => [p.qd, p.latency!.p99Us]) },
      ];
    });
    const latTitle = `Latency by queue depth, ${formatSize(bs)} ${r.rw}`;
    charts.push({ title: latTitle, svg: renderLineChart({ title: latTitle, xLabel: 'queue depth (threads per queue)', yLabel: 'latency (us), p50 solid, p99 dashed', series: latency }) });
  }
  if (new Set(ok.map((p) => p.bs)).size > 1) {
    const series: Series[] = [];
    for (const nq of new Set(ok.map((p) => p.nqueues))) {
      for (const qd of new Set(ok.map((p) => p.qd))) {
        const pts = ok.filter((p) => p.nqueues === nq && p.qd === qd).map((p): [number, number] => [p.bs, p.mibPerSec / 1024]);
        if (pts.length > 1) series.push({ name: `${nq} q x qd ${qd}`, points: pts });
      }
    }
    const title = `Bandwidth by I/O size (GiB/s)`;
    charts.push({ title, svg: renderLineChart({ title, xLabel: 'I/O size', yLabel: 'GiB/s', series, formatX: (x) => formatSize(x) }) });
  }
  return charts;
}

export function renderGpuSweepHtml(r: GpuSweepResult): string {
  const e = escapeXml;
  const rows = r.points
    .map((p) => {
      const cells = p.failure
        ? [formatSize(p.bs), String(p.nqueues), String(p.qd), String(p.threads), `<td colspan="6" class="fail">${e(p.failure)}</td>`]
        : [
            formatSize(p.bs),
            String(p.nqueues),
            String(p.qd),
            String(p.threads),
            formatCompact(p.iops),
            (p.mibPerSec / 1024).toFixed(2),
            p.latency ? p.latency.p50Us.toFixed(1) : '',
            p.latency ? p.latency.p99Us.toFixed(1) : '',
            String(p.errors),
            String(p.timeouts),
          ];
      return `<tr>${cells.map((c) => (c.startsWith('<td') ? c : `<td>${e(c)}</td>`)).join('')}</tr>`;
    })
    .join('\n');
  const charts = gpuSweepCharts(r)
    .map((c) => `<figure>${c.svg}</figure>`)
    .join('\n');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>homi GPU-initiated sweep: ${e(r.uri)}</title>
<style>
${REPORT_CSS}</style>
</head>
<body>
<h1>homi GPU-initiated sweep</h1>
<p>target ${e(r.uri)}; ${e(r.mode)} mode, ${e(r.rw)}; payloads: ${e(r.placement)}; GPU ${e(r.gpu ? `${r.gpu.name} (${r.gpu.pciBusId})` : 'n/a')}; host ${e(r.machine.hostname)} (${r.machine.cpus} CPUs, ${e(r.machine.cpuModel)}); ${e(r.createdAt)}</p>
<div class="charts">
${charts}
</div>
<table class="points">
<tr><th>I/O size</th><th>queues</th><th>qd</th><th>threads</th><th>IOPS</th><th>GiB/s</th><th>p50 us</th><th>p99 us</th><th>errors</th><th>timeouts</th></tr>
${rows}
</table>
</body>
</html>
`;
}
