/** What every `homi perf sweep` writes: a time-stamped output folder, results.json, report.html and the summary. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The sweep's output folder (`--out`, or `<prefix>-<timestamp>` here), created. */
export function sweepDir(out: string | undefined, prefix: string): string {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace('T', '_').slice(0, 19);
  const dir = resolve(out ?? `${prefix}-${stamp}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * Write `result` as results.json and `html` as report.html into `dir`, then print either one JSON line (the
 * paths, the point count and the names of the failed points) or the summary lines and the paths.
 */
export function writeSweep(dir: string, out: { result: { points: readonly unknown[] }; html: string; failed: string[]; summary: string[] }, json: boolean, print: (s: string) => void): void {
  const jsonPath = join(dir, 'results.json');
  const htmlPath = join(dir, 'report.html');
  writeFileSync(jsonPath, `${JSON.stringify(out.result, null, 2)}\n`);
  writeFileSync(htmlPath, out.html);
  if (json) print(JSON.stringify({ results: jsonPath, report: htmlPath, points: out.result.points.length, failed: out.failed }));
  else for (const line of [...out.summary, `results: ${jsonPath}`, `report:  ${htmlPath}`]) print(line);
}
