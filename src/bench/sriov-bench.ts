#!/usr/bin/env node
/**
 * HOMI's driver on an SR-IOV virtual function (VFIO) against the kernel's io_uring on the physical function, the
 * same shared namespace, 4 KiB random reads at queue depth 1 and 32, in one guest run (run it INSIDE the VM
 * harness's guest, as root; timings are emulated: compare the rows of one run only).
 *
 *   node dist/src/vm/cli.js run --iommu --modules nvme,vfio-pci,vfio_iommu_type1 \
 *     --nvme serial=HOMI-SRIOV,qpairs=6,msix=4,vfs=2,vq=4,vi=2,ns=256M:4096,shared=1 \
 *     -- node dist/src/bench/sriov-bench.js [--time S] [--reps N]
 *
 * The PF stays with the kernel's nvme driver. The bench provisions one VF (2 VQ: one I/O queue pair, 1 VI,
 * namespace 1 attached) through the kernel's admin passthrough, runs `homi perf` on it (pci:<VF>?mode=vfio,
 * the driver backend) and on the PF's block device (io_uring, O_DIRECT), `reps` times each in alternating
 * order, prints the medians as a table and one JSON line, then reclaims the VF and disables the VFs.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readlinkSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SriovPf } from '../daemon/sriov.js';
import { KernelNvmeAdmin, kernelAdminChannel } from '../io/kernel-admin.js';
import { renderTable } from '../util/table.js';

interface Row {
  path: string;
  qd: number;
  iops: number[];
  p50: number[];
  p99: number[];
}

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] ?? NaN;

function perf(target: string, extra: string[], qd: number, time: number): { iops: number; p50: number; p99: number } {
  const main = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'cli', 'main.js');
  const args = [main, 'perf', target, '--rw', 'randread', '--bs', '4096', '--qd', String(qd), '--time', String(time), '--warmup', '1', '--json', ...extra];
  const r = spawnSync('taskset', ['-c', '0', process.execPath, ...args], { encoding: 'utf8', timeout: (time + 60) * 1000 });
  const start = r.stdout.indexOf('{');
  if (r.status !== 0 || start < 0) throw new Error(`homi perf ${target} failed (status ${r.status}): ${r.stderr.slice(-500)}${r.stdout.slice(-300)}`);
  const j = JSON.parse(r.stdout.slice(start)) as { iops: number; errors: number; latencyUs: { p50: number; p99: number } };
  if (j.errors > 0) throw new Error(`homi perf ${target}: ${j.errors} I/O errors`);
  return { iops: j.iops, p50: j.latencyUs.p50, p99: j.latencyUs.p99 };
}

async function main(): Promise<void> {
  if (process.env.HOMI_GUEST !== '1') throw new Error('sriov-bench runs inside the VM harness guest (it enables VFs and rebinds them)');
  const time = arg('--time', 5);
  const reps = arg('--reps', 3);
  const ctrl = readdirSync('/sys/class/nvme').find((n) => readFileSync(`/sys/class/nvme/${n}/serial`, 'utf8').trim() === 'HOMI-SRIOV');
  if (!ctrl) throw new Error('no controller with serial HOMI-SRIOV');
  const pf = basename(readlinkSync(`/sys/class/nvme/${ctrl}/device`));
  const disk = readdirSync(`/sys/class/nvme/${ctrl}`)
    .filter((e) => /^nvme\d+(c\d+)?n1$/.test(e))
    .map((e) => e.replace(/c\d+n/, 'n'))[0];
  if (!disk) throw new Error(`${ctrl} has no namespace 1`);
  const admin = KernelNvmeAdmin.open(`/dev/${ctrl}`);
  const pool = new SriovPf(pf, kernelAdminChannel(admin));
  const vf = await pool.provision({ vq: 2, vi: 1, nsids: [1] });
  const rows: Row[] = [];
  try {
    for (const qd of [1, 32]) {
      const paths = [
        { path: `HOMI driver, VF ${vf.address} (vfio)`, target: `pci:${vf.address}?mode=vfio`, extra: ['--backend', 'driver'] },
        { path: `kernel io_uring O_DIRECT, PF /dev/${disk}`, target: `/dev/${disk}`, extra: ['--backend', 'io_uring', '--direct'] },
      ];
      const out = paths.map((p) => ({ path: p.path, qd, iops: [] as number[], p50: [] as number[], p99: [] as number[] }));
      for (let rep = 0; rep < reps; rep++) {
        const order = rep % 2 === 0 ? [0, 1] : [1, 0];
        for (const i of order) {
          const r = perf(paths[i]!.target, paths[i]!.extra, qd, time);
          out[i]!.iops.push(r.iops);
          out[i]!.p50.push(r.p50);
          out[i]!.p99.push(r.p99);
          console.log(`# qd ${qd} rep ${rep + 1} ${paths[i]!.path}: ${Math.round(r.iops)} IOPS, p50 ${r.p50.toFixed(0)} us, p99 ${r.p99.toFixed(0)} us`);
        }
      }
      rows.push(...out);
    }
  } finally {
    const errs = await pool.reclaim(vf.scid);
    await pool.setVfCount(0);
    admin.close();
    if (errs.length > 0) console.error(`reclaiming the VF: ${errs.join('; ')}`);
  }
  console.log(
    renderTable(
      ['path', 'qd', 'IOPS (median)', 'p50 us', 'p99 us', 'IOPS per rep'],
      rows.map((r) => [r.path, String(r.qd), String(Math.round(median(r.iops))), median(r.p50).toFixed(0), median(r.p99).toFixed(0), r.iops.map((x) => Math.round(x)).join(' ')]),
    ),
  );
  console.log(`SRIOV-BENCH-RESULT ${JSON.stringify({ time, reps, vf: vf.address, pf, rows })}`);
}

main().catch((e: unknown) => {
  console.error(`sriov-bench: ${(e as Error).message}`);
  process.exit(1);
});
