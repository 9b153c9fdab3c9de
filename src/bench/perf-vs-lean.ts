/**
 * `homi perf` against the lean raw client, side by side in one run:
 * `node dist/src/bench/perf-vs-lean.js [--runs 5] [--time 3] [--qd 128] [--json out.json]`
 *
 * Alternates, --runs times, (1) the README's main job, `homi perf 'emu://?size=256MiB&null=1' --rw randread
 * --bs 4096 --qd 128 --time 3` (the benchmark engine over the driver's queue pair, the embedded controller in
 * null mode in a worker thread of the same process), and (2) `homid-bench.js --only rawx1` (homid in one process
 * with the same kind of controller, one client process attaching a raw queue pair and driving it with a bare
 * loop), each as its own process, and prints both medians and their ratio. Goal of issue 10: perf >= 80% of the
 * lean client.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const main = path.join(here, '..', 'cli', 'main.js');
const homidBench = path.join(here, 'homid-bench.js');

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function lastJson(out: string): Record<string, unknown> {
  const lines = out.trim().split('\n');
  for (let i = lines.length - 1; i >= 0; i--) if (lines[i]!.startsWith('{')) return JSON.parse(lines[i]!) as Record<string, unknown>;
  throw new Error(`no JSON line in:\n${out}`);
}

function run(args: string[]): Record<string, unknown> {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${args.join(' ')} exited with ${r.status}: ${r.stderr}`);
  return lastJson(r.stdout);
}

const args = process.argv.slice(2);
const opt = (name: string, d: string): string => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : d;
};
const runs = Number(opt('--runs', '5'));
const time = opt('--time', '3');
const qd = opt('--qd', '128');
const jsonOut = opt('--json', '');

const perf: number[] = [];
const lean: number[] = [];
const perfRows: Array<{ iops: number; cpuNsPerIo: number; p50: number; p99: number }> = [];
for (let r = 0; r < runs; r++) {
  const p = run([main, 'perf', 'emu://?size=256MiB&null=1', '--rw', 'randread', '--bs', '4096', '--qd', qd, '--time', time, '--json']);
  const lat = p['latencyUs'] as { p50: number; p99: number };
  perf.push(p['iops'] as number);
  perfRows.push({ iops: Math.round(p['iops'] as number), cpuNsPerIo: Math.round(p['cpuNsPerIo'] as number), p50: lat.p50, p99: lat.p99 });
  const l = run([homidBench, '--time', time, '--runs', '1', '--qd', qd, '--only', 'rawx1']);
  lean.push((l['rows'] as Array<{ iops: number }>)[0]!.iops);
  process.stderr.write(`run ${r + 1}/${runs}: perf ${Math.round(perf[r]!)} IOPS, lean raw client ${lean[r]} IOPS, load ${os.loadavg()[0]!.toFixed(2)}\n`);
}
const mp = median(perf);
const ml = median(lean);
const out = {
  host: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? '', node: process.version, loadavg: os.loadavg() },
  workload: { rw: 'randread', bs: 4096, qd: Number(qd), seconds: Number(time), runs },
  perf: { median: Math.round(mp), samples: perfRows },
  lean: { median: Math.round(ml), samples: lean },
  ratio: ml > 0 ? Math.round((mp / ml) * 1000) / 1000 : null,
};
console.log(`homi perf (engine + driver, emu null): median ${Math.round(mp).toLocaleString('en-US')} IOPS  [${perf.map(Math.round).join(', ')}]`);
console.log(`lean raw client through homid:         median ${Math.round(ml).toLocaleString('en-US')} IOPS  [${lean.join(', ')}]`);
console.log(`perf / lean: ${out.ratio === null ? 'n/a' : (out.ratio * 100).toFixed(1) + '%'}`);
console.log(JSON.stringify(out));
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(out, null, 2) + '\n');
