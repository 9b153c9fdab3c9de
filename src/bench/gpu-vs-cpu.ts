/**
 * GPU-initiated vs CPU-initiated I/O on the same (null) embedded controller, side by side in one run:
 * alternating rounds of `homi perf` (the driver core on a CPU thread) and `homi perf --initiator gpu` (CUDA
 * kernels), each on a fresh controller of the same configuration; medians and the ratio. Also qd-1 latency of
 * both. The machines are noisy: compare within a run, not across runs.
 *
 *   node dist/src/bench/gpu-vs-cpu.js [--uri emu://?size=1GiB&null=1] [--rounds 3] [--time 3] [--qd 128] [--nqueues 4]
 *     [--mode block|ticket] [--cpu-threads N] [--json]
 */
import { parseArgs } from 'node:util';
import { runPerf } from './perf.js';
import { runGpuPerf, type GpuMode } from '../gpu/perf.js';
import { renderTable } from '../util/table.js';

export interface SideBySide {
  label: string;
  cpu: { iops: number[]; p50Us: number[] };
  gpu: { iops: number[]; p50Us: number[] };
  ratio: number;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export async function gpuVsCpu(o: { uri: string; rounds: number; timeSec: number; qd: number; nqueues: number; mode: GpuMode; cpuThreads: number; log: (s: string) => void }): Promise<SideBySide[]> {
  const out: SideBySide[] = [];
  for (const [label, qd, nq] of [
    [`4 KiB randread qd ${o.qd} x ${o.nqueues} queues${o.cpuThreads > 1 ? ` (CPU: ${o.cpuThreads} threads)` : ''}`, o.qd, o.nqueues],
    ['4 KiB randread qd 1 x 1 queue (latency)', 1, 1],
  ] as Array<[string, number, number]>) {
    const row: SideBySide = { label, cpu: { iops: [], p50Us: [] }, gpu: { iops: [], p50Us: [] }, ratio: 0 };
    for (let r = 0; r < o.rounds; r++) {
      const c = await runPerf({
        uri: o.uri,
        rw: 'randread',
        bs: 4096,
        qd,
        nqueues: nq,
        timeSec: o.timeSec,
        ios: null,
        warmupSec: 0.5,
        rwmixread: 100,
        nsid: 1,
        verify: false,
        verifySpan: 0,
        seed: r + 1,
      });
      row.cpu.iops.push(c.iops);
      row.cpu.p50Us.push(c.latencyUs.p50);
      const mode: GpuMode = qd < 32 ? 'block' : o.mode;
      const g = await runGpuPerf({ uri: o.uri, mode, rw: 'randread', bs: 4096, qd, nqueues: nq, timeSec: o.timeSec, seed: r + 1 });
      row.gpu.iops.push(g.iops);
      row.gpu.p50Us.push(g.latency.p50Us);
      o.log(`${label} round ${r + 1}: CPU ${Math.round(c.iops)} IOPS (p50 ${c.latencyUs.p50.toFixed(1)} us), GPU ${Math.round(g.iops)} IOPS (p50 ${g.latency.p50Us.toFixed(1)} us)`);
    }
    row.ratio = median(row.gpu.iops) / median(row.cpu.iops);
    out.push(row);
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      uri: { type: 'string', default: 'emu://?size=1GiB&null=1' },
      rounds: { type: 'string', default: '3' },
      time: { type: 'string', default: '3' },
      qd: { type: 'string', default: '128' },
      nqueues: { type: 'string', default: '4' },
      mode: { type: 'string', default: 'ticket' },
      'cpu-threads': { type: 'string', default: '1' },
      json: { type: 'boolean', default: false },
    },
  });
  const rows = await gpuVsCpu({
    uri: values.uri,
    rounds: Number(values.rounds),
    timeSec: Number(values.time),
    qd: Number(values.qd),
    nqueues: Number(values.nqueues),
    mode: values.mode as GpuMode,
    cpuThreads: Number(values['cpu-threads']),
    log: (s) => process.stderr.write(`${s}\n`),
  });
  if (values.json) process.stdout.write(`${JSON.stringify(rows)}\n`);
  else {
    process.stdout.write(
      `${renderTable(
        ['workload', 'CPU-initiated IOPS (median)', 'GPU-initiated IOPS (median)', 'GPU / CPU', 'CPU p50 us', 'GPU p50 us'],
        rows.map((r) => [
          r.label,
          Math.round(median(r.cpu.iops)).toString(),
          Math.round(median(r.gpu.iops)).toString(),
          `${(100 * r.ratio).toFixed(1)}%`,
          median(r.cpu.p50Us).toFixed(1),
          median(r.gpu.p50Us).toFixed(1),
        ]),
      )}\n`,
    );
  }
}
