/**
 * The sweep report: one self-contained HTML file (inline SVG charts, inline CSS, no scripts, no external
 * resources): IOPS and bandwidth against the swept variable with one line per backend, and a table of all points.
 */
import { formatSize } from '../util/size.js';
import { escapeXml, formatCompact, PALETTE, renderLineChart, type Series } from './report-svg.js';
import type { SweepPoint, SweepResult } from './sweep.js';

function seriesBy(points: SweepPoint[], backends: string[], x: (p: SweepPoint) => number, y: (p: SweepPoint) => number): Series[] {
  return backends.map((b) => ({ name: b, points: points.filter((p) => p.backend === b && !p.failure).map((p) => [x(p), y(p)] as [number, number]) }));
}

/** p50 (solid) and p99 (dashed) latency against queue depth, one colour per backend. */
function latencySeries(points: SweepPoint[], backends: string[]): Series[] {
  return backends.flatMap((b, i) => {
    const pts = points.filter((p) => p.backend === b && !p.failure && p.latencyUs !== null);
    const color = PALETTE[i % PALETTE.length]!;
    return [
      { name: `${b} p50`, color, points: pts.map((p) => [p.qd, p.latencyUs!.p50] as [number, number]) },
      { name: `${b} p99`, color, dashed: true, points: pts.map((p) => [p.qd, p.latencyUs!.p99] as [number, number]) },
    ];
  });
}

/**
 * The charts of a sweep: against queue depth (IOPS, bandwidth and p50/p99 latency per block size), against block
 * size (IOPS and bandwidth per depth).
 */
export function sweepCharts(r: SweepResult): Array<{ title: string; svg: string }> {
  const out: Array<{ title: string; svg: string }> = [];
  const b = r.grid.backends;
  const byQd = r.grid.qd.length > 1;
  const byBs = r.grid.bs.length > 1 || !byQd;
  if (byQd) {
    for (const bs of r.grid.bs) {
      const pts = r.points.filter((p) => p.bs === bs);
      const sfx = `${r.rw}, ${formatSize(bs)}`;
      out.push({
        title: `IOPS vs queue depth (${sfx})`,
        svg: renderLineChart({
          title: `IOPS vs queue depth (${sfx})`,
          xLabel: 'queue depth',
          yLabel: 'IOPS',
          series: seriesBy(
            pts,
            b,
            (p) => p.qd,
            (p) => p.iops,
          ),
        }),
      });
      out.push({
        title: `Bandwidth vs queue depth (${sfx})`,
        svg: renderLineChart({
          title: `Bandwidth vs queue depth (${sfx})`,
          xLabel: 'queue depth',
          yLabel: 'MiB/s',
          series: seriesBy(
            pts,
            b,
            (p) => p.qd,
            (p) => p.bandwidthMiBps,
          ),
        }),
      });
      out.push({
        title: `Latency vs queue depth (${sfx})`,
        svg: renderLineChart({ title: `Latency vs queue depth (${sfx})`, xLabel: 'queue depth', yLabel: 'latency (us), p50 solid, p99 dashed', series: latencySeries(pts, b) }),
      });
    }
  }
  if (byBs) {
    for (const qd of r.grid.qd) {
      const pts = r.points.filter((p) => p.qd === qd);
      const sfx = `${r.rw}, qd ${qd}`;
      const fmt = (x: number): string => formatSize(x).replace(' ', '');
      out.push({
        title: `IOPS vs block size (${sfx})`,
        svg: renderLineChart({
          title: `IOPS vs block size (${sfx})`,
          xLabel: 'block size',
          yLabel: 'IOPS',
          series: seriesBy(
            pts,
            b,
            (p) => p.bs,
            (p) => p.iops,
          ),
          formatX: fmt,
        }),
      });
      out.push({
        title: `Bandwidth vs block size (${sfx})`,
        svg: renderLineChart({
          title: `Bandwidth vs block size (${sfx})`,
          xLabel: 'block size',
          yLabel: 'MiB/s',
          series: seriesBy(
            pts,
            b,
            (p) => p.bs,
            (p) => p.bandwidthMiBps,
          ),
          formatX: fmt,
        }),
      });
    }
  }
  return out;
}

/** The style sheet of the sweep reports (this one and the GPU sweep's, src/bench/gpu-sweep.ts). */
export const REPORT_CSS = `body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; }
.meta td { padding: 2px 12px 2px 0; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.charts figure { margin: 0; border: 1px solid #ddd; }
table.points { border-collapse: collapse; margin-top: 16px; }
table.points th, table.points td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
table.points th { background: #f3f3f3; }
td.fail { color: #b00; text-align: left; }
`;

export function renderSweepHtml(r: SweepResult): string {
  const e = escapeXml;
  const charts = sweepCharts(r);
  const rows = r.points
    .map((p) => {
      const cells = p.failure
        ? [p.backend, formatSize(p.bs), String(p.qd), `<td colspan="8" class="fail">${e(p.failure)}</td>`]
        : [
            p.backend,
            formatSize(p.bs),
            String(p.qd),
            formatCompact(p.iops),
            p.bandwidthMiBps.toFixed(1),
            p.latencyUs ? p.latencyUs.p50.toFixed(1) : '',
            p.latencyUs ? p.latencyUs.p99.toFixed(1) : '',
            p.latencyUs ? p.latencyUs.p999.toFixed(1) : '',
            p.cpuNsPerIo.toFixed(0),
            p.processCpuNsPerIo.toFixed(0),
            String(p.errors + p.verifyErrors),
          ];
      return `<tr>${cells.map((c) => (c.startsWith('<td') ? c : `<td>${e(c)}</td>`)).join('')}</tr>`;
    })
    .join('\n');
  const opts = Object.entries(r.options)
    .filter(([, v]) => v)
    .map(([k]) => k)
    .join(', ');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>homi perf sweep: ${e(r.uri)}</title>
<style>
${REPORT_CSS}</style>
</head>
<body>
<h1>homi perf sweep</h1>
<table class="meta">
<tr><td>target</td><td>${e(r.uri)}${r.model ? ` (${e(r.model)})` : ''}</td></tr>
<tr><td>workload</td><td>${e(r.rw)}, ${r.timeSec !== null ? `${r.timeSec} s` : `${r.ios} I/Os`} per point, ${r.nqueues} queue(s) x ${r.threads} thread(s)${opts ? `, ${e(opts)}` : ''}</td></tr>
<tr><td>grid</td><td>backends ${e(r.grid.backends.join(', '))}; block sizes ${e(r.grid.bs.map((b) => formatSize(b)).join(', '))}; queue depths ${e(r.grid.qd.join(', '))}</td></tr>
<tr><td>machine</td><td>${e(r.machine.hostname)}: ${r.machine.cpus} x ${e(r.machine.cpuModel)}, ${e(r.machine.kernel)}, Node ${e(r.machine.node)}</td></tr>
<tr><td>created</td><td>${e(r.createdAt)}</td></tr>
</table>
<div class="charts">
${charts.map((c) => `<figure>${c.svg}</figure>`).join('\n')}
</div>
<table class="points">
<thead><tr><th>backend</th><th>bs</th><th>qd</th><th>IOPS</th><th>MiB/s</th><th>p50 us</th><th>p99 us</th><th>p99.9 us</th><th>thread ns/IO</th><th>process ns/IO</th><th>errors</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
</body>
</html>
`;
}
