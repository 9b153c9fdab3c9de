#!/usr/bin/env node
/**
 * The kernel paths against the user-space driver on one real Linux guest (the VM harness: QEMU/TCG, QEMU's NVMe
 * controller): 4 KiB random reads at queue depth 32 on one core, the same namespace and duration for every path.
 *
 *   node dist/src/bench/vm-bench.js [--time S] [--reps N] [--size-mib M] [--lbs 512|4096] [--cpus N] [--no-qd1]
 *                                   [--out FILE] [--json]
 *
 * The host boots one guest (one controller, one namespace, hugepages for uio) and runs this same file inside it
 * with --guest; the guest side runs every path `reps` times in a rotating (interleaved) order, each pinned to
 * CPU 0 with taskset, and prints its measurements as one JSON line. The host takes medians per path and prints
 * one table: IOPS, MiB/s, p50/p99 latency, and the ratios against fio's io_uring and HOMI's io_uring.
 *
 * Paths: HOMI's `homi perf` with the driver (pci:, uio), io_uring_cmd (/dev/ngXnY), io_uring O_DIRECT (plain and
 * registered buffers) and posix O_DIRECT (pread: one I/O at a time whatever --qd); fio with io_uring (plain and
 * fixedbufs+registerfiles), io_uring_cmd (cmd_type=nvme) and psync (queue depth 1 by nature). Also, once each,
 * queue depth 1 runs of the driver and of both io_urings (per-I/O latency without queueing).
 *
 * Timings are emulated (TCG): compare paths within one run, never with a host.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderTable } from '../util/table.js';

const SERIAL = 'HOMI-BENCH';
const RESULT_MARK = 'VMBENCH-RESULT ';
const IO_TIMEOUT_S = 4;

/** One measured path: how to run it in the guest. */
export interface PathSpec {
  id: string;
  label: string;
  tool: 'homi' | 'fio';
  /** Queue depth this path runs at (what it can really keep in flight is in `note`). */
  qd: number;
  /** The command's arguments after the tool, with {BLK} {NG} {BDF} {TIME} {QD} placeholders. */
  args: string[];
  note?: string;
  /** Run once (not repeated, not in the main table's ratios). */
  probe?: boolean;
}

export interface RunRecord {
  path: string;
  rep: number;
  ok: boolean;
  error?: string;
  iops: number;
  mibps: number;
  p50us: number;
  p99us: number;
  /** Guest CPU busy fraction (1 - idle - iowait) over the run, all vCPUs. */
  guestBusy: number;
  /** The tool's own CPU figure: HOMI cpuNsPerIo, fio (usr+sys)% of one CPU. */
  toolCpu: string;
  /** Kernel nvme I/O timeouts logged during the run (commands the device never completed: aborts, resets). */
  ioTimeouts: number;
  wallSec: number;
}

export function homiPerf(target: string, extra: string[]): string[] {
  return ['dist/src/cli/main.js', 'perf', target, '--rw', 'randread', '--bs', '4096', '--qd', '{QD}', '--time', '{TIME}', '--warmup', '1', '--json', ...extra];
}

export function fio(engine: string, file: string, extra: string[]): string[] {
  return [
    // io_uring_cmd on /dev/ngXnY bypasses the page cache by nature; fio 3.33 refuses direct=1 there.
    '--name=vmbench',
    `--filename=${file}`,
    `--ioengine=${engine}`,
    '--rw=randread',
    '--bs=4k',
    '--iodepth={QD}',
    ...(engine === 'io_uring_cmd' ? [] : ['--direct=1']),
    '--time_based',
    '--runtime={TIME}',
    '--ramp_time=1',
    '--norandommap',
    '--randrepeat=0',
    '--lat_percentiles=1',
    '--numjobs=1',
    '--thread',
    '--output-format=json',
    ...extra,
  ];
}

export function benchPaths(qd1: boolean): PathSpec[] {
  const p: PathSpec[] = [
    { id: 'homi-driver', label: 'HOMI driver (pci: uio)', tool: 'homi', qd: 32, args: homiPerf('pci:{BDF}?mode=uio', ['--backend', 'driver']) },
    { id: 'homi-io_uring_cmd', label: 'HOMI io_uring_cmd (ng)', tool: 'homi', qd: 32, args: homiPerf('{NG}', ['--backend', 'io_uring_cmd']) },
    { id: 'homi-io_uring', label: 'HOMI io_uring O_DIRECT', tool: 'homi', qd: 32, args: homiPerf('{BLK}', ['--backend', 'io_uring', '--direct']) },
    { id: 'homi-io_uring-fixed', label: 'HOMI io_uring O_DIRECT fixed-bufs', tool: 'homi', qd: 32, args: homiPerf('{BLK}', ['--backend', 'io_uring', '--direct', '--fixed-buffers']) },
    { id: 'homi-posix', label: 'HOMI posix O_DIRECT', tool: 'homi', qd: 1, args: homiPerf('{BLK}', ['--backend', 'posix', '--direct']), note: 'synchronous: qd 1 by nature' },
    { id: 'fio-io_uring', label: 'fio io_uring direct', tool: 'fio', qd: 32, args: fio('io_uring', '{BLK}', []) },
    { id: 'fio-io_uring-fixed', label: 'fio io_uring fixedbufs+regfiles', tool: 'fio', qd: 32, args: fio('io_uring', '{BLK}', ['--fixedbufs=1', '--registerfiles=1']) },
    { id: 'fio-libaio', label: 'fio libaio direct', tool: 'fio', qd: 32, args: fio('libaio', '{BLK}', []) },
    { id: 'fio-io_uring_cmd', label: 'fio io_uring_cmd (ng)', tool: 'fio', qd: 32, args: fio('io_uring_cmd', '{NG}', ['--cmd_type=nvme']) },
    { id: 'fio-psync', label: 'fio psync direct', tool: 'fio', qd: 1, args: fio('psync', '{BLK}', []), note: 'synchronous: qd 1 by nature' },
  ];
  if (qd1) {
    p.push(
      { id: 'qd1-homi-driver', label: 'qd1: HOMI driver', tool: 'homi', qd: 1, args: homiPerf('pci:{BDF}?mode=uio', ['--backend', 'driver']), probe: true },
      { id: 'qd1-homi-io_uring', label: 'qd1: HOMI io_uring', tool: 'homi', qd: 1, args: homiPerf('{BLK}', ['--backend', 'io_uring', '--direct']), probe: true },
      { id: 'qd1-fio-io_uring', label: 'qd1: fio io_uring', tool: 'fio', qd: 1, args: fio('io_uring', '{BLK}', []), probe: true },
    );
  }
  return p;
}

export interface GuestPlan {
  serial: string;
  timeSec: number;
  reps: number;
  paths: PathSpec[];
}

// ---------------------------------------------------------------- guest side

function sysRead(p: string): string {
  return readFileSync(p, 'utf8').trim();
}

/** The controller's kernel names once it is on nvme and live: PCI address, block and char device. */
export async function kernelNames(serial: string, timeoutMs = 30_000): Promise<{ bdf: string; blk: string; ng: string }> {
  const t0 = Date.now();
  for (;;) {
    try {
      for (const c of readdirSync('/sys/class/nvme')) {
        if (sysRead(`/sys/class/nvme/${c}/serial`) !== serial || sysRead(`/sys/class/nvme/${c}/state`) !== 'live') continue;
        const bdf = basename(readlinkSync(`/sys/class/nvme/${c}/device`));
        const ns = readdirSync(`/sys/class/nvme/${c}`).find((e) => /^nvme\d+n1$/.test(e) || /^nvme\d+c\d+n1$/.test(e));
        if (!ns) continue;
        const blk = ns.replace(/c\d+n/, 'n');
        const ng = blk.replace(/^nvme/, 'ng');
        if (existsSync(`/dev/${blk}`) && existsSync(`/dev/${ng}`)) return { bdf, blk: `/dev/${blk}`, ng: `/dev/${ng}` };
      }
    } catch {
      /* re-probing */
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`controller ${serial} is not live on nvme with its namespace after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Kernel log lines of NVMe or ublk I/O timeouts (not the command line's nvme_core.io_timeout=). */
export function countIoTimeouts(dmesg: string): number {
  return dmesg.split('\n').filter((l) => /\b(nvme|ublk)\S*.*\b(timeout|timed out)\b/i.test(l) && !l.includes('io_timeout=')).length;
}

/** Kernel log lines about NVMe (or ublk) I/O timeouts so far. */
export function nvmeTimeouts(): number {
  return countIoTimeouts(spawnSync('dmesg', [], { encoding: 'utf8', maxBuffer: 64 << 20 }).stdout ?? '');
}

/** [busy, total] jiffies of all CPUs (idle and iowait count as not busy). */
export function cpuTicks(): [number, number] {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return [total - idle, total];
}

function pick(o: Record<string, number> | undefined, k: string): number {
  if (!o) return NaN;
  for (const key of Object.keys(o)) if (Number(key) === Number(k)) return o[key]!;
  return NaN;
}

export function parseRun(spec: PathSpec, stdout: string): Omit<RunRecord, 'path' | 'rep' | 'guestBusy' | 'wallSec' | 'ioTimeouts'> {
  const start = stdout.indexOf('{');
  if (start < 0) throw new Error(`no JSON in the output: ${stdout.slice(-300)}`);
  const j = JSON.parse(stdout.slice(start)) as Record<string, unknown>;
  if (spec.tool === 'homi') {
    const r = j as { iops: number; bandwidthMiBps: number; errors: number; latencyUs: { p50: number; p99: number }; cpuNsPerIo: number };
    if (r.errors > 0) throw new Error(`${r.errors} I/O errors`);
    return { ok: true, iops: r.iops, mibps: r.bandwidthMiBps, p50us: r.latencyUs.p50, p99us: r.latencyUs.p99, toolCpu: `${Math.round(r.cpuNsPerIo)} ns/IO` };
  }
  const job = (j as { jobs: Array<Record<string, unknown>> }).jobs[0]!;
  if (Number(job.error) !== 0) throw new Error(`fio job error ${String(job.error)}`);
  const rd = job.read as { iops: number; bw_bytes: number; lat_ns?: { percentile?: Record<string, number> }; clat_ns?: { percentile?: Record<string, number> } };
  const pct = rd.lat_ns?.percentile ?? rd.clat_ns?.percentile;
  return {
    ok: true,
    iops: rd.iops,
    mibps: rd.bw_bytes / 1048576,
    p50us: pick(pct, '50') / 1000,
    p99us: pick(pct, '99') / 1000,
    toolCpu: `${(Number(job.usr_cpu) + Number(job.sys_cpu)).toFixed(0)}% CPU`,
  };
}

/** `fio --version` (the guest runs the host's fio, over 9p); a clear error where there is none. */
export function fioVersion(): string {
  const r = spawnSync('fio', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`fio --version failed (${r.error?.message ?? `exit ${r.status}`}): install fio on the host (apt-get install fio; npm run bench:vm does it as root)`);
  return r.stdout.trim();
}

async function guestMain(): Promise<void> {
  const plan = JSON.parse(process.env.HOMI_VMBENCH_PLAN ?? 'null') as GuestPlan | null;
  if (!plan || process.env.HOMI_GUEST !== '1') throw new Error('--guest runs inside the VM harness guest only (the host side starts it)');
  const root = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..');
  const main = plan.paths.filter((p) => !p.probe);
  const order: Array<{ p: PathSpec; rep: number }> = [];
  for (let rep = 0; rep < plan.reps; rep++) for (let i = 0; i < main.length; i++) order.push({ p: main[(i + rep) % main.length]!, rep });
  for (const p of plan.paths.filter((x) => x.probe)) order.push({ p, rep: 0 });
  const records: RunRecord[] = [];
  const info = {
    kernel: sysRead('/proc/sys/kernel/osrelease'),
    cpus: readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('processor')).length,
    fio: fioVersion(),
    node: process.version,
    names: await kernelNames(plan.serial),
  };
  console.log(`# guest: ${info.kernel}, ${info.cpus} vCPU(s), ${info.fio}, node ${info.node}, ${info.names.blk} ${info.names.ng} at ${info.names.bdf}`);
  for (const { p, rep } of order) {
    const names = await kernelNames(plan.serial);
    const subst = (a: string): string =>
      a
        .replace(/\{BLK\}/g, names.blk)
        .replace(/\{NG\}/g, names.ng)
        .replace(/\{BDF\}/g, names.bdf)
        .replace(/\{TIME\}/g, String(plan.timeSec))
        .replace(/\{QD\}/g, String(p.qd));
    const argv = p.tool === 'homi' ? [process.execPath, ...p.args.map(subst)] : ['fio', ...p.args.map(subst)];
    const to0 = nvmeTimeouts();
    const [b0, t0] = cpuTicks();
    const w0 = Date.now();
    const r = spawnSync('taskset', ['-c', '0', ...argv], { cwd: root, encoding: 'utf8', timeout: (plan.timeSec + 90) * 1000, maxBuffer: 64 << 20 });
    const wallSec = (Date.now() - w0) / 1000;
    const [b1, t1] = cpuTicks();
    const guestBusy = t1 > t0 ? (b1 - b0) / (t1 - t0) : NaN;
    const ioTimeouts = nvmeTimeouts() - to0;
    let rec: RunRecord;
    try {
      if (r.error) throw r.error;
      if (r.status !== 0) throw new Error(`exit ${r.status ?? r.signal}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
      rec = { path: p.id, rep, guestBusy, wallSec, ioTimeouts, ...parseRun(p, r.stdout) };
    } catch (e) {
      rec = { path: p.id, rep, ok: false, error: (e as Error).message, iops: NaN, mibps: NaN, p50us: NaN, p99us: NaN, guestBusy, toolCpu: '', wallSec, ioTimeouts };
    }
    records.push(rec);
    console.log(
      rec.ok
        ? `# rep ${rep + 1} ${p.id}: ${Math.round(rec.iops)} IOPS, p50 ${rec.p50us.toFixed(0)} us, p99 ${rec.p99us.toFixed(0)} us, guest CPU ${(guestBusy * 100).toFixed(0)}%, ${rec.toolCpu}, ${wallSec.toFixed(1)} s wall${ioTimeouts > 0 ? `, ${ioTimeouts} NVMe I/O TIMEOUT lines in dmesg` : ''}`
        : `# rep ${rep + 1} ${p.id}: FAILED: ${rec.error}`,
    );
  }
  console.log(RESULT_MARK + JSON.stringify({ info, records }));
}

// ---------------------------------------------------------------- host side

interface HostOptions {
  timeSec: number;
  reps: number;
  sizeMiB: number;
  lbs: 512 | 4096;
  cpus: number;
  qd1: boolean;
  out: string;
  json: boolean;
}

const USAGE = `usage: node dist/src/bench/vm-bench.js [--time S] [--reps N] [--size-mib M] [--lbs 512|4096] [--cpus N] [--no-qd1] [--out FILE] [--json]
  --time S      seconds per run (default 5; plus 1 s warm-up)
  --reps N      interleaved repetitions of every path, medians reported (default 3)
  --size-mib M  namespace size (default 1024)
  --lbs B       logical block size (default 4096)
  --cpus N      guest vCPUs (default 1; every run is pinned to CPU 0 anyway)
  --no-qd1      skip the queue-depth-1 probes
  --out FILE    result JSON (default ./vm-bench.json)
  --json        print the result JSON on stdout instead of the table`;

function parseArgs(argv: string[]): HostOptions {
  const o: HostOptions = { timeSec: 5, reps: 3, sizeMiB: 1024, lbs: 4096, cpus: 1, qd1: true, out: 'vm-bench.json', json: false };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const num = (): number => {
      const v = argv[++i];
      if (v === undefined || !/^\d+(\.\d+)?$/.test(v) || Number(v) <= 0) throw new Error(`${f} needs a positive number, got ${v ?? 'nothing'}`);
      return Number(v);
    };
    switch (f) {
      case '--time':
        o.timeSec = num();
        break;
      case '--reps':
        o.reps = Math.round(num());
        break;
      case '--size-mib':
        o.sizeMiB = Math.round(num());
        break;
      case '--lbs': {
        const v = num();
        if (v !== 512 && v !== 4096) throw new Error('--lbs must be 512 or 4096');
        o.lbs = v;
        break;
      }
      case '--cpus':
        o.cpus = Math.round(num());
        break;
      case '--no-qd1':
        o.qd1 = false;
        break;
      case '--out': {
        const v = argv[++i];
        if (!v) throw new Error('--out needs a file');
        o.out = v;
        break;
      }
      case '--json':
        o.json = true;
        break;
      case '-h':
      case '--help':
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${f}\n${USAGE}`);
    }
  }
  return o;
}

export function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

export interface PathSummary {
  path: string;
  label: string;
  qd: number;
  runs: number;
  failed: number;
  iops: number;
  mibps: number;
  p50us: number;
  p99us: number;
  guestBusy: number;
  /** NVMe I/O timeout lines in the kernel log over all runs of the path (the run stalled on lost commands). */
  ioTimeouts: number;
  iopsAll: number[];
  vsFioIoUring: number;
  vsHomiIoUring: number;
  note?: string;
  errors?: string[];
}

export function summarize(paths: PathSpec[], records: RunRecord[]): PathSummary[] {
  const base: PathSummary[] = paths.map((p) => {
    const rs = records.filter((r) => r.path === p.id);
    const ok = rs.filter((r) => r.ok);
    return {
      path: p.id,
      label: p.label,
      qd: p.qd,
      runs: rs.length,
      failed: rs.length - ok.length,
      iops: median(ok.map((r) => r.iops)),
      mibps: median(ok.map((r) => r.mibps)),
      p50us: median(ok.map((r) => r.p50us)),
      p99us: median(ok.map((r) => r.p99us)),
      guestBusy: median(ok.map((r) => r.guestBusy)),
      ioTimeouts: rs.reduce((a, r) => a + (r.ioTimeouts || 0), 0),
      iopsAll: ok.map((r) => Math.round(r.iops)),
      vsFioIoUring: NaN,
      vsHomiIoUring: NaN,
      ...(p.note ? { note: p.note } : {}),
      ...(rs.some((r) => !r.ok) ? { errors: rs.filter((r) => !r.ok).map((r) => r.error ?? '?') } : {}),
    };
  });
  const fioU = base.find((s) => s.path === 'fio-io_uring')?.iops ?? NaN;
  const homiU = base.find((s) => s.path === 'homi-io_uring')?.iops ?? NaN;
  const fioU1 = base.find((s) => s.path === 'qd1-fio-io_uring')?.iops ?? NaN;
  const homiU1 = base.find((s) => s.path === 'qd1-homi-io_uring')?.iops ?? NaN;
  for (const s of base) {
    const probe = s.path.startsWith('qd1-');
    s.vsFioIoUring = s.iops / (probe ? fioU1 : fioU);
    s.vsHomiIoUring = s.iops / (probe ? homiU1 : homiU);
  }
  return base;
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

export function formatTable(sum: PathSummary[]): string {
  const rows = sum.map((s) => [
    s.label,
    String(s.qd),
    fmt(s.iops),
    fmt(s.mibps, 1),
    fmt(s.p50us),
    fmt(s.p99us),
    Number.isFinite(s.vsFioIoUring) ? `${s.vsFioIoUring.toFixed(2)}x` : '-',
    Number.isFinite(s.vsHomiIoUring) ? `${s.vsHomiIoUring.toFixed(2)}x` : '-',
    `${fmt(s.guestBusy * 100)}%`,
    `${s.runs - s.failed}/${s.runs}`,
    String(s.ioTimeouts),
  ]);
  return renderTable(['path', 'qd', 'IOPS', 'MiB/s', 'p50 us', 'p99 us', 'vs fio io_uring', 'vs HOMI io_uring', 'guest CPU', 'runs ok', 'I/O timeouts'], rows);
}

async function hostMain(argv: string[]): Promise<number> {
  let o: HostOptions;
  try {
    o = parseArgs(argv);
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  const { runInGuest } = await import('../vm/run.js');
  const { repoRoot } = await import('../vm/paths.js');
  const { ensureHostTools, ProvisionError } = await import('../vm/host-tools.js');
  try {
    // QEMU and the rest of the harness, and fio, taskset and dmesg, which the guest runs from the host's root.
    await ensureHostTools(['vm', 'bench']);
  } catch (e) {
    if (!(e instanceof ProvisionError)) throw e;
    console.error(`vm-bench: ${e.message}`);
    return 1;
  }
  const paths = benchPaths(o.qd1);
  const plan: GuestPlan = { serial: SERIAL, timeSec: o.timeSec, reps: o.reps, paths };
  const nRuns = paths.filter((p) => !p.probe).length * o.reps + paths.filter((p) => p.probe).length;
  // A homi perf run starts node in the guest: 10 s on a quiet host, up to a minute on a loaded one.
  const budgetMs = 120_000 + nRuns * (o.timeSec + 1 + 60) * 1000;
  const r = await runInGuest({
    command: 'node dist/src/bench/vm-bench.js --guest',
    cwd: repoRoot(),
    cpus: o.cpus,
    memoryMiB: 2048,
    hugepagesMiB: 64,
    modules: ['nvme', 'uio_pci_generic'],
    nvme: [{ serial: SERIAL, maxIoQueuePairs: 8, namespaces: [{ sizeMiB: o.sizeMiB, logicalBlockSize: o.lbs }] }],
    env: { HOMI_VMBENCH_PLAN: JSON.stringify(plan) },
    // A path that loses commands (see ioTimeouts) stalls for 2 x io_timeout before the reset: keep that short.
    kernelArgs: [`nvme_core.io_timeout=${IO_TIMEOUT_S}`],
    timeoutMs: budgetMs,
    onOutput: (line) => {
      if (!line.startsWith(RESULT_MARK)) process.stderr.write(`${line}\n`);
    },
  });
  const line = r.output.split('\n').find((l) => l.startsWith(RESULT_MARK));
  if (r.exitCode !== 0 || !line) {
    console.error(`the guest run failed: exit ${r.exitCode}${r.error ? ` (${r.error})` : ''}\n${r.output.slice(-2000)}\n${r.consoleLog.split('\n').slice(-30).join('\n')}`);
    return 1;
  }
  const g = JSON.parse(line.slice(RESULT_MARK.length)) as { info: Record<string, unknown>; records: RunRecord[] };
  const summary = summarize(paths, g.records);
  const at = (flag: string): string | undefined => r.qemuCommand[r.qemuCommand.indexOf(flag) + 1];
  const result = {
    workload: { rw: 'randread', bs: 4096, qd: 32, timeSec: o.timeSec, warmupSec: 1, reps: o.reps, pinnedCpu: 0 },
    machine: {
      kernelArgs: [`nvme_core.io_timeout=${IO_TIMEOUT_S}`],
      cpus: o.cpus,
      accel: at('-accel'),
      smp: at('-smp'),
      namespaceMiB: o.sizeMiB,
      lbs: o.lbs,
      emulation: 'QEMU TCG',
      bootMs: r.bootMs,
      commandMs: r.commandMs,
      ...g.info,
    },
    summary,
    records: g.records,
  };
  writeFileSync(o.out, `${JSON.stringify(result, null, 2)}\n`);
  if (o.json) console.log(JSON.stringify(result));
  else {
    console.log(`4 KiB random read, ${o.timeSec} s per run, medians of ${o.reps} interleaved runs, pinned to guest CPU 0 (${o.cpus} vCPU), QEMU NVMe ${o.sizeMiB} MiB / ${o.lbs}-byte blocks, TCG`);
    console.log(formatTable(summary));
    for (const s of summary) if (s.note) console.log(`  ${s.label}: ${s.note}`);
    for (const s of summary)
      if (s.ioTimeouts > 0)
        console.log(
          `  ${s.label}: ${s.ioTimeouts} NVMe I/O timeout lines in dmesg over its runs (commands lost; kernel io_timeout ${IO_TIMEOUT_S} s, then abort/reset): its figures are not a valid measurement`,
        );
    for (const s of summary) if (s.errors) console.log(`  ${s.label}: FAILED runs: ${s.errors.join('; ')}`);
    console.log(`result: ${o.out}`);
  }
  return summary.some((s) => s.failed > 0) ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const run = argv[0] === '--guest' ? guestMain().then(() => 0) : hostMain(argv);
  run.then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
      process.exit(1);
    },
  );
}
