#!/usr/bin/env node
/**
 * The guest kernel's own NVMe path against other block devices on one real Linux guest (the VM harness: QEMU/TCG,
 * QEMU's NVMe controller): 4 KiB random reads at queue depth 1 and 32, through fio (io_uring, O_DIRECT) and through
 * `homi perf --backend io_uring --direct`, on the native /dev/nvmeXn1 and on every extra block device named. Built
 * for issue 13: the extra device is the ublk device homid serves from its own queue pairs on the same controller
 * (/dev/ublkb0 once homid's ublk server exists); until then a loop device proves the multi-device plumbing.
 *
 *   node dist/src/bench/ublk-bench.js [--time S] [--reps N] [--size-mib M] [--cpus N] [--dev LABEL=PATH]...
 *                                     [--loop MIB] [--modules LIST] [--setup CMD] [--out FILE] [--json]
 *   node dist/src/bench/ublk-bench.js --in-guest [--time S] [--reps N] [--dev LABEL=PATH]... [--loop MIB] [--out FILE]
 *
 * The first form boots one guest (one controller, one namespace) and runs the second inside it, after --setup (a
 * shell command run in the guest first, e.g. starting homid with a ublk device). The second form runs in a guest
 * that is already up. Every (device, tool, queue depth) row runs `reps` times in a rotating (interleaved) order,
 * each pinned to CPU 0 with taskset; rows are reported as medians with the ratio against the native row of the
 * same tool and queue depth, and the kernel's NVMe/ublk I/O timeout lines logged during the row's runs (a row with
 * timeouts is not a valid measurement).
 *
 * Timings are emulated (TCG): compare rows within one run, never with a host.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderTable } from '../util/table.js';
import { cpuTicks, fio, fioVersion, homiPerf, kernelNames, median, parseRun, type PathSpec } from './vm-bench.js';

const SERIAL = 'HOMI-BENCH';
const RESULT_MARK = 'UBLKBENCH-RESULT ';
const IO_TIMEOUT_S = 4;
const QDS = [1, 32] as const;
const TOOLS = ['fio', 'homi'] as const;
type Tool = (typeof TOOLS)[number];

/** A block device measured: `native` is the controller's own namespace on the kernel nvme driver. */
export interface BenchDevice {
  id: string;
  label: string;
  path: string;
}

export interface Row {
  id: string;
  device: string;
  tool: Tool;
  qd: number;
  spec: PathSpec;
}

export interface RowRecord {
  row: string;
  rep: number;
  ok: boolean;
  error?: string;
  iops: number;
  mibps: number;
  p50us: number;
  p99us: number;
  guestBusy: number;
  toolCpu: string;
  /** Kernel NVMe/ublk I/O timeout lines logged during the run. */
  ioTimeouts: number;
  wallSec: number;
}

export interface RowSummary {
  row: string;
  device: string;
  label: string;
  tool: Tool;
  qd: number;
  runs: number;
  failed: number;
  iops: number;
  p50us: number;
  p99us: number;
  guestBusy: number;
  iopsAll: number[];
  /** IOPS over the native row of the same tool and queue depth. */
  vsNative: number;
  ioTimeouts: number;
  errors?: string[];
}

/** `LABEL=PATH` of --dev: a label of letters, digits, '-', '_', '.', and an absolute /dev path. */
export function parseDev(arg: string): BenchDevice {
  const m = /^([A-Za-z0-9][A-Za-z0-9_.-]{0,31})=(\/dev\/[A-Za-z0-9_./-]+)$/.exec(arg);
  if (!m || m[2]!.includes('..')) throw new Error(`--dev needs LABEL=/dev/PATH (label: letters, digits, - _ .), got ${JSON.stringify(arg)}`);
  if (m[1] === 'native') throw new Error('--dev: the label "native" is the controller\'s own namespace, pick another');
  return { id: m[1]!, label: m[1]!, path: m[2]! };
}

/** The rows of one run: every device x {fio, homi perf} x {qd 1, qd 32}, devices alternating fastest. */
export function benchRows(devices: BenchDevice[]): Row[] {
  const rows: Row[] = [];
  for (const qd of QDS)
    for (const tool of TOOLS)
      for (const d of devices) {
        const id = `${d.id}/${tool}/qd${qd}`;
        const args = tool === 'fio' ? fio('io_uring', d.path, []) : homiPerf(d.path, ['--backend', 'io_uring', '--direct']);
        rows.push({ id, device: d.id, tool, qd, spec: { id, label: `${d.label}: ${tool === 'fio' ? 'fio io_uring direct' : 'homi perf io_uring --direct'}`, tool, qd, args } });
      }
  return rows;
}

/** Run order: `reps` rounds over the rows, each round rotated by one (interleaved repetitions). */
export function runOrder(rows: Row[], reps: number): Array<{ row: Row; rep: number }> {
  const order: Array<{ row: Row; rep: number }> = [];
  for (let rep = 0; rep < reps; rep++) for (let i = 0; i < rows.length; i++) order.push({ row: rows[(i + rep) % rows.length]!, rep });
  return order;
}

/** Kernel log lines of NVMe or ublk I/O timeouts (not the command line's nvme_core.io_timeout=). */
export function countIoTimeouts(dmesg: string): number {
  return dmesg.split('\n').filter((l) => /\b(nvme|ublk)\S*.*\b(timeout|timed out)\b/i.test(l) && !l.includes('io_timeout=')).length;
}

function dmesgText(): string {
  return spawnSync('dmesg', [], { encoding: 'utf8', maxBuffer: 64 << 20 }).stdout ?? '';
}

export function summarizeRows(rows: Row[], devices: BenchDevice[], records: RowRecord[]): RowSummary[] {
  const out: RowSummary[] = rows.map((r) => {
    const rs = records.filter((x) => x.row === r.id);
    const ok = rs.filter((x) => x.ok);
    return {
      row: r.id,
      device: r.device,
      label: devices.find((d) => d.id === r.device)?.label ?? r.device,
      tool: r.tool,
      qd: r.qd,
      runs: rs.length,
      failed: rs.length - ok.length,
      iops: median(ok.map((x) => x.iops)),
      p50us: median(ok.map((x) => x.p50us)),
      p99us: median(ok.map((x) => x.p99us)),
      guestBusy: median(ok.map((x) => x.guestBusy)),
      iopsAll: ok.map((x) => Math.round(x.iops)),
      vsNative: NaN,
      ioTimeouts: rs.reduce((a, x) => a + (x.ioTimeouts || 0), 0),
      ...(rs.some((x) => !x.ok) ? { errors: rs.filter((x) => !x.ok).map((x) => x.error ?? '?') } : {}),
    };
  });
  for (const s of out) {
    const base = out.find((n) => n.device === 'native' && n.tool === s.tool && n.qd === s.qd);
    s.vsNative = base ? s.iops / base.iops : NaN;
  }
  return out;
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

export function formatRows(sum: RowSummary[]): string {
  const rows = sum.map((s) => [
    s.label,
    s.tool === 'fio' ? 'fio io_uring' : 'homi perf io_uring',
    String(s.qd),
    fmt(s.iops),
    fmt(s.p50us),
    fmt(s.p99us),
    Number.isFinite(s.vsNative) ? `${s.vsNative.toFixed(2)}x` : '-',
    `${fmt(s.guestBusy * 100)}%`,
    `${s.runs - s.failed}/${s.runs}`,
    String(s.ioTimeouts),
    s.iopsAll.join(' '),
  ]);
  return renderTable(['device', 'tool', 'qd', 'IOPS', 'p50 us', 'p99 us', 'vs native', 'guest CPU', 'runs ok', 'I/O timeouts', 'IOPS per rep'], rows);
}

// ---------------------------------------------------------------- options (both sides)

interface Options {
  timeSec: number;
  reps: number;
  sizeMiB: number;
  cpus: number;
  devs: BenchDevice[];
  loopMiB: number;
  modules: string[];
  setup: string;
  out: string;
  json: boolean;
  inGuest: boolean;
}

const USAGE = `usage: node dist/src/bench/ublk-bench.js [--in-guest] [--time S] [--reps N] [--size-mib M] [--cpus N]
                                          [--dev LABEL=PATH]... [--loop MIB] [--modules LIST] [--setup CMD] [--out FILE] [--json]
  --in-guest       run here, in a guest that is up (HOMI_GUEST=1); default: boot one with the VM harness
  --time S         seconds per run (default 5; plus 1 s warm-up)
  --reps N         interleaved repetitions of every row, medians reported (default 3)
  --dev L=PATH     an extra block device to measure, labelled L (repeatable), e.g. ublk=/dev/ublkb0
  --loop MIB       also a loop device over a MIB file in the guest's /tmp (memory): a plumbing check, not an NVMe path
  --size-mib M     namespace size (default 1024; host side)
  --cpus N         guest vCPUs (default 1; every run is pinned to CPU 0 anyway; host side)
  --modules LIST   extra guest kernel modules, comma-separated (host side; nvme and loop are always loaded)
  --setup CMD      shell command run in the guest before the bench, e.g. starting homid (host side)
  --out FILE       result JSON (default ./ublk-bench.json; in the guest: only when given)
  --json           print the result JSON on stdout instead of the table`;

export function parseOptions(argv: string[]): Options {
  const o: Options = { timeSec: 5, reps: 3, sizeMiB: 1024, cpus: 1, devs: [], loopMiB: 0, modules: [], setup: '', out: '', json: false, inGuest: false };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${f} needs a value`);
      return v;
    };
    const num = (): number => {
      const v = val();
      if (!/^\d+(\.\d+)?$/.test(v) || Number(v) <= 0) throw new Error(`${f} needs a positive number, got ${v}`);
      return Number(v);
    };
    switch (f) {
      case '--in-guest':
        o.inGuest = true;
        break;
      case '--time':
        o.timeSec = num();
        break;
      case '--reps':
        o.reps = Math.round(num());
        break;
      case '--size-mib':
        o.sizeMiB = Math.round(num());
        break;
      case '--cpus':
        o.cpus = Math.round(num());
        break;
      case '--dev': {
        const d = parseDev(val());
        if (o.devs.some((x) => x.id === d.id)) throw new Error(`--dev: label ${d.id} is used twice`);
        o.devs.push(d);
        break;
      }
      case '--loop':
        o.loopMiB = Math.round(num());
        break;
      case '--modules':
        o.modules.push(
          ...val()
            .split(',')
            .filter((m) => m !== ''),
        );
        break;
      case '--setup':
        o.setup = val();
        break;
      case '--out':
        o.out = val();
        break;
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

// ---------------------------------------------------------------- guest side

/** A loop device over a file of `mib` MiB in /tmp (guest memory), allocated so that reads touch real pages. */
function makeLoop(mib: number): { dev: string; file: string } {
  const file = `/tmp/ublk-bench-loop-${process.pid}.img`;
  const fa = spawnSync('fallocate', ['-l', `${mib}M`, file], { encoding: 'utf8' });
  if (fa.status !== 0) throw new Error(`fallocate ${file}: ${fa.stderr || fa.error?.message}`);
  const lo = spawnSync('losetup', ['--find', '--show', file], { encoding: 'utf8' });
  if (lo.status !== 0) throw new Error(`losetup --find --show ${file}: ${(lo.stderr || lo.error?.message || '').trim()}`);
  return { dev: lo.stdout.trim(), file };
}

async function guestMain(o: Options): Promise<number> {
  if (process.env.HOMI_GUEST !== '1') throw new Error('--in-guest runs inside a VM harness guest only (HOMI_GUEST=1)');
  const root = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..');
  const names = await kernelNames(SERIAL);
  const devices: BenchDevice[] = [{ id: 'native', label: `native ${names.blk}`, path: names.blk }, ...o.devs];
  let loop: { dev: string; file: string } | undefined;
  if (o.loopMiB > 0) {
    loop = makeLoop(o.loopMiB);
    devices.push({ id: 'loop', label: `${loop.dev} (loop, ${o.loopMiB} MiB file in guest RAM)`, path: loop.dev });
  }
  for (const d of devices) if (!existsSync(d.path)) throw new Error(`${d.label}: ${d.path} does not exist in the guest`);
  const info = {
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    cpusOnline: readFileSync('/sys/devices/system/cpu/online', 'utf8').trim(),
    fio: fioVersion(),
    node: process.version,
    native: names,
    devices,
  };
  console.log(`# guest: ${info.kernel}, CPUs ${info.cpusOnline}, ${info.fio}, node ${info.node}; devices: ${devices.map((d) => `${d.id}=${d.path}`).join(' ')}`);
  const rows = benchRows(devices);
  const records: RowRecord[] = [];
  try {
    for (const { row, rep } of runOrder(rows, o.reps)) {
      const subst = (a: string): string => a.replace(/\{TIME\}/g, String(o.timeSec)).replace(/\{QD\}/g, String(row.qd));
      const argv = row.tool === 'homi' ? [process.execPath, ...row.spec.args.map(subst)] : ['fio', ...row.spec.args.map(subst)];
      const to0 = countIoTimeouts(dmesgText());
      const [b0, t0] = cpuTicks();
      const w0 = Date.now();
      const r = spawnSync('taskset', ['-c', '0', ...argv], { cwd: root, encoding: 'utf8', timeout: (o.timeSec + 90) * 1000, maxBuffer: 64 << 20 });
      const wallSec = (Date.now() - w0) / 1000;
      const [b1, t1] = cpuTicks();
      const guestBusy = t1 > t0 ? (b1 - b0) / (t1 - t0) : NaN;
      const ioTimeouts = countIoTimeouts(dmesgText()) - to0;
      let rec: RowRecord;
      try {
        if (r.error) throw r.error;
        if (r.status !== 0) throw new Error(`exit ${r.status ?? r.signal}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
        const m = parseRun(row.spec, r.stdout);
        rec = { row: row.id, rep, ok: true, iops: m.iops, mibps: m.mibps, p50us: m.p50us, p99us: m.p99us, toolCpu: m.toolCpu, guestBusy, ioTimeouts, wallSec };
      } catch (e) {
        rec = { row: row.id, rep, ok: false, error: (e as Error).message, iops: NaN, mibps: NaN, p50us: NaN, p99us: NaN, toolCpu: '', guestBusy, ioTimeouts, wallSec };
      }
      records.push(rec);
      console.log(
        rec.ok
          ? `# rep ${rep + 1} ${row.id}: ${Math.round(rec.iops)} IOPS, p50 ${rec.p50us.toFixed(0)} us, p99 ${rec.p99us.toFixed(0)} us, guest CPU ${(guestBusy * 100).toFixed(0)}%, ${wallSec.toFixed(1)} s wall${ioTimeouts > 0 ? `, ${ioTimeouts} I/O TIMEOUT lines in dmesg` : ''}`
          : `# rep ${rep + 1} ${row.id}: FAILED: ${rec.error}`,
      );
    }
  } finally {
    if (loop) {
      spawnSync('losetup', ['-d', loop.dev]);
      rmSync(loop.file, { force: true });
    }
  }
  const summary = summarizeRows(rows, devices, records);
  const result = { workload: { rw: 'randread', bs: 4096, qds: [...QDS], timeSec: o.timeSec, warmupSec: 1, reps: o.reps, pinnedCpu: 0 }, info, summary, records };
  if (o.out) writeFileSync(o.out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(formatRows(summary));
  console.log(RESULT_MARK + JSON.stringify(result));
  return summary.some((s) => s.failed > 0) ? 1 : 0;
}

// ---------------------------------------------------------------- host side

async function hostMain(o: Options): Promise<number> {
  const { runInGuest, shQuote } = await import('../vm/run.js');
  const { repoRoot } = await import('../vm/paths.js');
  const { ensureHostTools, ProvisionError } = await import('../vm/host-tools.js');
  try {
    await ensureHostTools(['vm', 'bench']);
  } catch (e) {
    if (!(e instanceof ProvisionError)) throw e;
    console.error(`ublk-bench: ${e.message}`);
    return 1;
  }
  const inner = ['node', 'dist/src/bench/ublk-bench.js', '--in-guest', '--time', String(o.timeSec), '--reps', String(o.reps)];
  for (const d of o.devs) inner.push('--dev', `${d.id}=${d.path}`);
  if (o.loopMiB > 0) inner.push('--loop', String(o.loopMiB));
  const command = (o.setup ? `${o.setup} && ` : '') + inner.map(shQuote).join(' ');
  const nRuns = (1 + o.devs.length + (o.loopMiB > 0 ? 1 : 0)) * QDS.length * TOOLS.length * o.reps;
  const kernelArgs = [`nvme_core.io_timeout=${IO_TIMEOUT_S}`];
  const r = await runInGuest({
    command,
    cwd: repoRoot(),
    cpus: o.cpus,
    memoryMiB: 2048,
    hugepagesMiB: 64,
    modules: ['nvme', 'loop', ...o.modules],
    nvme: [{ serial: SERIAL, maxIoQueuePairs: 8, namespaces: [{ sizeMiB: o.sizeMiB, logicalBlockSize: 4096 }] }],
    // A path that loses commands stalls for 2 x io_timeout before the reset: keep that short.
    kernelArgs,
    timeoutMs: 180_000 + nRuns * (o.timeSec + 1 + 20) * 1000,
    onOutput: (line) => {
      if (!line.startsWith(RESULT_MARK)) process.stderr.write(`${line}\n`);
    },
  });
  const line = r.output.split('\n').find((l) => l.startsWith(RESULT_MARK));
  if (!line) {
    console.error(`the guest run failed: exit ${r.exitCode}${r.error ? ` (${r.error})` : ''}\n${r.output.slice(-2000)}\n${r.consoleLog.split('\n').slice(-30).join('\n')}`);
    return 1;
  }
  const g = JSON.parse(line.slice(RESULT_MARK.length)) as { summary: RowSummary[] } & Record<string, unknown>;
  const qemu = r.qemuCommand;
  const at = (flag: string): string | undefined => qemu[qemu.indexOf(flag) + 1];
  const result = {
    ...g,
    machine: { kernelArgs, cpus: o.cpus, accel: at('-accel'), smp: at('-smp'), namespaceMiB: o.sizeMiB, lbs: 4096, emulation: 'QEMU TCG', bootMs: r.bootMs, commandMs: r.commandMs },
  };
  const out = o.out || 'ublk-bench.json';
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  if (o.json) console.log(JSON.stringify(result));
  else {
    console.log(
      `4 KiB random read, ${o.timeSec} s per run, medians of ${o.reps} interleaved runs, pinned to guest CPU 0 (${o.cpus} vCPU, -smp ${result.machine.smp}), QEMU NVMe ${o.sizeMiB} MiB / 4096-byte blocks, TCG`,
    );
    console.log(formatRows(g.summary));
    for (const s of g.summary) if (s.ioTimeouts > 0) console.log(`  ${s.label} ${s.tool} qd ${s.qd}: ${s.ioTimeouts} I/O timeout lines in dmesg over its runs: not a valid measurement`);
    for (const s of g.summary) if (s.errors) console.log(`  ${s.label} ${s.tool} qd ${s.qd}: FAILED runs: ${s.errors.join('; ')}`);
    console.log(`result: ${out}`);
  }
  return r.exitCode === 0 ? 0 : 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  let o: Options;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (e) {
    console.error((e as Error).message);
    process.exit(2);
  }
  (o.inGuest ? guestMain(o) : hostMain(o)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
      process.exit(1);
    },
  );
}
