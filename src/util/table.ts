/** A plain-text table for terminal output: columns right-aligned except the first. */
export function renderTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const sep = widths.map((w) => '-'.repeat(w)).join('  ');
  return [fmt(header), sep, ...rows.map(fmt)].join('\n');
}

/** `name : value` lines with the names padded to one width (nvme-cli's layout for one record). */
export function renderFields(rows: ReadonlyArray<readonly [string, string]>): string {
  const w = Math.max(0, ...rows.map(([n]) => n.length));
  return rows.map(([n, v]) => `${n.padEnd(w)} : ${v}`).join('\n');
}
