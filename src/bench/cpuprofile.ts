/**
 * Summarize a V8 .cpuprofile (from `node --cpu-prof`) by self time per function, to show where the
 * per-I/O cost of the driver goes. Usage: node dist/src/bench/cpuprofile.js <file.cpuprofile> [ios] [thread-filter]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface SelfTime {
  name: string;
  selfUs: number;
  share: number;
}

export function summarize(p: Profile): SelfTime[] {
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const self = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!);
    if (!n) continue;
    const file = n.callFrame.url.replace(/^.*\/(dist|node_modules)\//, '');
    const name = `${n.callFrame.functionName || '(anonymous)'} ${file ? `[${file}:${n.callFrame.lineNumber + 1}]` : ''}`.trim();
    self.set(name, (self.get(name) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0) || 1;
  return [...self.entries()].map(([name, us]) => ({ name, selfUs: us, share: us / total })).sort((a, b) => b.selfUs - a.selfUs);
}

/** Coarse categories for the driver thread: where a benchmark's per-I/O time goes. */
export function categorize(rows: SelfTime[]): Array<{ category: string; selfUs: number; share: number }> {
  const rules: Array<[string, RegExp]> = [
    ['driver core (src/driver)', /src\/driver\//],
    ['benchmark engine (src/bench)', /src\/bench\//],
    ['latency histogram (hdr-histogram-js)', /hdr-histogram-js|JsHistogram|Histogram/],
    ['clock reads', /^now\b|perf_hooks|internal\/util:|validators/],
    ['doorbell wake (transport)', /src\/transport\//],
    ['idle / yield (Atomics.wait)', /^\(idle\)|^wait\b/],
    ['garbage collector', /garbage collector/],
  ];
  const total = rows.reduce((a, r) => a + r.selfUs, 0) || 1;
  const acc = new Map<string, number>();
  for (const r of rows) {
    const cat = rules.find(([, re]) => re.test(r.name))?.[0] ?? 'other (runtime, program)';
    acc.set(cat, (acc.get(cat) ?? 0) + r.selfUs);
  }
  return [...acc.entries()].map(([category, selfUs]) => ({ category, selfUs, share: selfUs / total })).sort((a, b) => b.selfUs - a.selfUs);
}

const isMain = process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\/dist\//, 'dist/'));
if (isMain || process.argv[1]?.endsWith('cpuprofile.js')) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node dist/src/bench/cpuprofile.js <file.cpuprofile> [ios]\n');
    process.exit(2);
  }
  const ios = Number(process.argv[3] ?? 0);
  const rows = summarize(JSON.parse(readFileSync(file, 'utf8')) as Profile);
  const perIo = (us: number): string => (ios > 0 ? `${((us * 1000) / ios).toFixed(1).padStart(8)} ns/IO` : '');
  const lines: string[] = ['by category:'];
  for (const c of categorize(rows)) lines.push(`${(c.share * 100).toFixed(1).padStart(5)}%  ${perIo(c.selfUs)}  ${c.category}`);
  lines.push('', 'by function (top 25):');
  for (const r of rows.slice(0, 25)) lines.push(`${(r.share * 100).toFixed(1).padStart(5)}%  ${perIo(r.selfUs)}  ${r.name}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}
