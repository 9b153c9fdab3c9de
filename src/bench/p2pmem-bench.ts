#!/usr/bin/env node
/**
 * p2pmem vs host memory as the data buffers of the kernel's io_uring path (O_DIRECT), in one guest run: random
 * reads of 4 KiB and 128 KiB at queue depth 32 from one NVMe controller's namespace, into host memory or into the
 * p2pmem (CMB) of a second controller behind the same PCIe switch. Run it INSIDE the VM harness's guest, as root,
 * on the 'p2p' kernel (timings are emulated: compare the rows of one run only):
 *
 *   node dist/src/vm/cli.js run --kernel p2p --timeout 900 \
 *     --nvme serial=HOMI-CMB,ns=16M:4096,cmb=64,switch=s0 --nvme serial=HOMI-SRC,ns=64M:4096,switch=s0 \
 *     -- node dist/src/bench/p2pmem-bench.js [--time S] [--reps N]
 *
 * Each repetition runs every (block size, placement) point once, the placements alternating in order, each
 * `homi perf` pinned to CPU 0; the table and the JSON line give the medians over the repetitions and the ratio
 * p2pmem / host.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readlinkSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderTable } from '../util/table.js';

interface Sample {
  iops: number;
  mibps: number;
  p50: number;
  p99: number;
  nsPerIo: number;
}

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

const median = (a: number[]): number => {
  const s = [...a].sort((x, y) => x - y);
  const n = s.length;
  return n === 0 ? NaN : n % 2 === 1 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
};

function controller(serial: string): { name: string; bdf: string } {
  const name = readdirSync('/sys/class/nvme').find((n) => readFileSync(`/sys/class/nvme/${n}/serial`, 'utf8').trim() === serial);
  if (!name) throw new Error(`no NVMe controller with serial ${serial}`);
  return { name, bdf: basename(readlinkSync(`/sys/class/nvme/${name}/device`)) };
}

function perf(dev: string, bs: number, buffers: string, time: number, size: string): Sample {
  const main = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'cli', 'main.js');
  const args = [
    main,
    'perf',
    dev,
    '--backend',
    'io_uring',
    '--direct',
    '--buffers',
    buffers,
    '--rw',
    'randread',
    '--bs',
    String(bs),
    '--qd',
    '32',
    '--size',
    size,
    '--time',
    String(time),
    '--warmup',
    '1',
    '--json',
  ];
  const r = spawnSync('taskset', ['-c', '0', process.execPath, ...args], { encoding: 'utf8', timeout: (time + 120) * 1000 });
  const start = r.stdout.indexOf('{');
  if (r.status !== 0 || start < 0) throw new Error(`homi perf ${dev} --buffers ${buffers} failed (status ${r.status}): ${r.stderr.slice(-800)}${r.stdout.slice(-300)}`);
  const j = JSON.parse(r.stdout.slice(start)) as { iops: number; bandwidthMiBps: number; errors: number; processCpuNsPerIo: number; latencyUs: { percentiles: Record<string, number> } };
  if (j.errors > 0) throw new Error(`homi perf ${dev} --buffers ${buffers}: ${j.errors} I/O errors`);
  return { iops: j.iops, mibps: j.bandwidthMiBps, p50: j.latencyUs.percentiles['p50'] ?? NaN, p99: j.latencyUs.percentiles['p99'] ?? NaN, nsPerIo: j.processCpuNsPerIo };
}

function main(): void {
  if (process.env.HOMI_GUEST !== '1') throw new Error('p2pmem-bench runs inside the VM harness guest (it writes the namespace it reads)');
  const time = arg('--time', 4);
  const reps = arg('--reps', 5);
  const cmb = controller(process.env.HOMI_P2PMEM_CMB_SERIAL ?? 'HOMI-CMB');
  const src = controller(process.env.HOMI_P2PMEM_SRC_SERIAL ?? 'HOMI-SRC');
  const disk = readdirSync(`/sys/class/nvme/${src.name}`)
    .filter((e) => /^nvme\d+(c\d+)?n1$/.test(e))
    .map((e) => e.replace(/c\d+n/, 'n'))[0];
  if (!disk) throw new Error(`${src.name} has no namespace 1`);
  const dev = `/dev/${disk}`;
  const size = '32MiB';
  // Data everywhere the reads go (a never-written block still costs the controller a read of the image).
  const dd = spawnSync('dd', ['if=/dev/urandom', `of=${dev}`, 'bs=1M', 'count=32', 'iflag=fullblock', 'oflag=direct', 'status=none']);
  if (dd.status !== 0) throw new Error(`dd to ${dev} failed: ${String(dd.stderr)}`);
  const placements = ['host', `p2pmem:${cmb.bdf}`];
  const sizes = [4096, 131072];
  const samples = new Map<string, Sample[]>();
  for (let rep = 0; rep < reps; rep++) {
    for (const bs of sizes) {
      const order = rep % 2 === 0 ? placements : [...placements].reverse();
      for (const b of order) {
        const s = perf(dev, bs, b, time, size);
        const key = `${bs}|${b}`;
        samples.set(key, [...(samples.get(key) ?? []), s]);
        process.stderr.write(`rep ${rep + 1}/${reps} bs ${bs} ${b}: ${s.iops.toFixed(0)} IOPS, p50 ${s.p50.toFixed(1)} us\n`);
      }
    }
  }
  const med = (key: string, f: (s: Sample) => number): number => median((samples.get(key) ?? []).map(f));
  const rows: string[][] = [];
  const json: Record<string, unknown>[] = [];
  for (const bs of sizes) {
    const h = `${bs}|host`;
    const p = `${bs}|${placements[1]}`;
    for (const [label, key] of [
      ['host', h],
      [placements[1]!, p],
    ] as const) {
      rows.push([
        `${bs / 1024} KiB`,
        label,
        med(key, (s) => s.iops).toFixed(0),
        med(key, (s) => s.mibps).toFixed(1),
        med(key, (s) => s.p50).toFixed(1),
        med(key, (s) => s.p99).toFixed(1),
        med(key, (s) => s.nsPerIo).toFixed(0),
      ]);
    }
    const ratio = med(p, (s) => s.iops) / med(h, (s) => s.iops);
    rows.push(['', 'p2pmem / host', ratio.toFixed(2), '', (med(p, (s) => s.p50) / med(h, (s) => s.p50)).toFixed(2), '', '']);
    json.push({ bs, host: samples.get(h), p2pmem: samples.get(p), medianIops: { host: med(h, (s) => s.iops), p2pmem: med(p, (s) => s.iops) }, ratioIops: ratio });
  }
  process.stdout.write(
    `io_uring O_DIRECT randread qd 32 on ${dev} (${src.bdf}), buffers in host memory or in the p2pmem of ${cmb.bdf}, behind one PCIe switch; median of ${reps} interleaved runs of ${time} s each\n\n`,
  );
  process.stdout.write(renderTable(['bs', 'buffers', 'IOPS', 'MiB/s', 'p50 us', 'p99 us', 'process ns/IO'], rows) + '\n');
  process.stdout.write(JSON.stringify({ kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(), dev, src: src.bdf, p2pmem: cmb.bdf, reps, time, points: json }) + '\n');
}

main();
