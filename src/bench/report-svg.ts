/**
 * Self-contained SVG line charts (no dependencies): one line per series, axes with ticks and labels, a legend.
 * The x axis is logarithmic (base 2) when the values span a factor of 8 or more, as queue depths and block
 * sizes do.
 */

export interface Series {
  name: string;
  points: Array<[number, number]>;
  /** Stroke colour (default: the palette's colour for the series' index). */
  color?: string;
  /** A dashed line (e.g. p99 beside a solid p50 of the same colour). */
  dashed?: boolean;
}

/** The dash pattern of a dashed series. */
const DASH = '6 4';

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Format an x tick (default: plain number). */
  formatX?: (x: number) => string;
  width?: number;
  height?: number;
}

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** Round numbers for axis ticks: 1, 2, 5 x 10^k. */
export function niceTicks(max: number, count = 5): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1]! < max) ticks.push(Number((ticks[ticks.length - 1]! + step).toPrecision(12)));
  return ticks;
}

export function formatCompact(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toFixed(2)}`;
}

export function renderLineChart(c: LineChart): string {
  const W = c.width ?? 640;
  const H = c.height ?? 360;
  const m = { left: 72, right: 150, top: 36, bottom: 52 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const xs = [...new Set(c.series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const ys = c.series.flatMap((s) => s.points.map((p) => p[1])).filter((y) => Number.isFinite(y));
  const xmin = xs[0] ?? 0;
  const xmax = xs[xs.length - 1] ?? 1;
  const logX = xmin > 0 && xmax / xmin >= 8;
  const yTicks = niceTicks(Math.max(0, ...ys));
  const ymax = yTicks[yTicks.length - 1]!;
  const fx = (x: number): number => {
    if (xmax === xmin) return m.left + pw / 2;
    const t = logX ? (Math.log2(x) - Math.log2(xmin)) / (Math.log2(xmax) - Math.log2(xmin)) : (x - xmin) / (xmax - xmin);
    return m.left + t * pw;
  };
  const fy = (y: number): number => m.top + ph - (ymax > 0 ? (y / ymax) * ph : 0);
  const fmtX = c.formatX ?? ((x: number) => String(x));
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12" role="img" aria-label="${escapeXml(c.title)}">`);
  out.push(`<title>${escapeXml(c.title)}</title>`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#fff"/>`);
  out.push(`<text class="chart-title" x="${m.left + pw / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(c.title)}</text>`);
  // Grid and y ticks.
  out.push('<g class="y-axis">');
  for (const t of yTicks) {
    const y = fy(t).toFixed(1);
    out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeXml(formatCompact(t))}</text>`);
  }
  out.push('</g>');
  out.push('<g class="x-axis">');
  for (const x of xs) {
    const px = fx(x).toFixed(1);
    out.push(`<line x1="${px}" x2="${px}" y1="${m.top + ph}" y2="${m.top + ph + 5}" stroke="#333"/>`);
    out.push(`<text x="${px}" y="${m.top + ph + 18}" text-anchor="middle">${escapeXml(fmtX(x))}</text>`);
  }
  out.push('</g>');
  out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${m.top + ph}" y2="${m.top + ph}" stroke="#333"/>`);
  out.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${m.top + ph}" stroke="#333"/>`);
  out.push(`<text class="x-label" x="${m.left + pw / 2}" y="${H - 10}" text-anchor="middle">${escapeXml(c.xLabel)}${logX ? ' (log scale)' : ''}</text>`);
  out.push(`<text class="y-label" transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(c.yLabel)}</text>`);
  // Lines.
  const colorOf = (s: Series, i: number): string => s.color ?? PALETTE[i % PALETTE.length]!;
  const dashOf = (s: Series): string => (s.dashed ? ` stroke-dasharray="${DASH}"` : '');
  c.series.forEach((s, i) => {
    const color = colorOf(s, i);
    const pts = s.points.filter((p) => Number.isFinite(p[1])).sort((a, b) => a[0] - b[0]);
    if (pts.length > 0) {
      out.push(`<g class="series" data-name="${escapeXml(s.name)}">`);
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dashOf(s)} points="${pts.map((p) => `${fx(p[0]).toFixed(1)},${fy(p[1]).toFixed(1)}`).join(' ')}"/>`);
      for (const p of pts)
        out.push(`<circle cx="${fx(p[0]).toFixed(1)}" cy="${fy(p[1]).toFixed(1)}" r="3" fill="${color}"><title>${escapeXml(`${s.name}: ${fmtX(p[0])} -> ${formatCompact(p[1])}`)}</title></circle>`);
      out.push('</g>');
    }
  });
  // Legend.
  out.push('<g class="legend">');
  c.series.forEach((s, i) => {
    const y = m.top + 10 + i * 20;
    const x = m.left + pw + 16;
    out.push(`<line x1="${x}" x2="${x + 20}" y1="${y}" y2="${y}" stroke="${colorOf(s, i)}" stroke-width="3"${dashOf(s)}/>`);
    out.push(`<text x="${x + 26}" y="${y}" dominant-baseline="middle">${escapeXml(s.name)}</text>`);
  });
  out.push('</g>');
  out.push('</svg>');
  return out.join('\n');
}
