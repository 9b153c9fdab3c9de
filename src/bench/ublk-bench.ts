#!/usr/bin/env node
/**
 * The guest kernel's own NVMe path against other block devices on one real Linux guest (the VM harness: QEMU/TCG,
 * QEMU's NVMe controller): 4 KiB random reads at queue depth 1 and 32, through fio (io_uring, O_DIRECT) and through
 * `homi perf --backend io_uring --direct`, on the native /dev/nvmeXn1 and on every extra block device named. Built
 * for issue 13: with --homid-ublk the bench itself switches the controller between the kernel's nvme driver (native
 * rows) and homid (uio), which serves namespace 1 as /dev/ublkb0 (ublk rows; added and removed with `homi ublk`).
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
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderTable } from '../util/table.js';
import { cpuTicks, fio, fioVersion, homiPerf, kernelNames, median, nvmeTimeouts, parseRun, type PathSpec } from './vm-bench.js';

const SERIAL = 'HOMI-BENCH';
const RESULT_MARK = 'UBLKBENCH-RESULT ';
const IO_TIMEOUT_S = 4;
const UBLK_LABEL = 'ublk';
const UBLK_ID = 0;
const UBLK_DEV = `/dev/ublkb${UBLK_ID}`;
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

/** Which driver owns the controller while a row runs: the kernel's nvme driver, or homid (uio) serving ublk. */
export type Phase = 'native' | 'ublk';

export interface PhaseStep {
  phase: Phase;
  rep: number;
  rows: Row[];
}

/**
 * The run order with the controller switched between drivers (--homid-ublk): every repetition has a native phase
 * (controller on nvme: the native rows and every other device) and a ublk phase (homid owns the controller and
 * serves the ublk device: its rows), in ABBA order (native first on even reps, ublk first on odd ones) so that a
 * drift of the host's speed over the run weighs on both alike; rows inside a phase rotate by one per rep.
 * `block`: one homid session for all ublk reps (a driver switch costs minutes under TCG): native rep 1, the ublk
 * reps, the other native reps.
 */
export function phasePlan(rows: Row[], reps: number, ublkDevice: string, mode: 'rep' | 'block' = 'rep'): PhaseStep[] {
  const byPhase = (ph: Phase): Row[] => rows.filter((r) => (r.device === ublkDevice) === (ph === 'ublk'));
  const rot = (rs: Row[], k: number): Row[] => rs.map((_, i) => rs[(i + k) % rs.length]!);
  const steps: PhaseStep[] = [];
  if (mode === 'block') {
    // native rep 1, then every ublk rep (one homid session), then the other native reps: native brackets ublk
    const push = (phase: Phase, rep: number): void => {
      const rs = byPhase(phase);
      if (rs.length > 0) steps.push({ phase, rep, rows: rot(rs, rep) });
    };
    push('native', 0);
    for (let rep = 0; rep < reps; rep++) push('ublk', rep);
    for (let rep = 1; rep < reps; rep++) push('native', rep);
    return steps;
  }
  for (let rep = 0; rep < reps; rep++) {
    const phases: Phase[] = rep % 2 === 0 ? ['native', 'ublk'] : ['ublk', 'native'];
    for (const phase of phases) {
      const rs = byPhase(phase);
      if (rs.length > 0) steps.push({ phase, rep, rows: rot(rs, rep) });
    }
  }
  return steps;
}

/** homid's TOML for the ublk phase: the controller (uio, no IOMMU in this guest), no [[ublk]] (added by the CLI). */
export function homidToml(socket: string, bdf: string): string {
  if (!/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(bdf)) throw new Error(`not a PCI address: ${bdf}`);
  return [`socket = "${socket}"`, 'log_level = "info"', '[[device]]', 'name = "nvme"', `uri = "pci:${bdf}?mode=uio"`, 'io_queues = 4', ''].join('\n');
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
  /** Serve /dev/ublkb0 from homid over the same controller, switching drivers per repetition. */
  homidUblk: boolean;
  ublkDepth: number;
  ublkMaxIoKib: number;
  ublkSwitch: 'rep' | 'block';
}

const USAGE = `usage: node dist/src/bench/ublk-bench.js [--in-guest] [--time S] [--reps N] [--size-mib M] [--cpus N]
                                          [--dev LABEL=PATH]... [--loop MIB] [--modules LIST] [--setup CMD] [--out FILE] [--json]
                                          [--homid-ublk] [--ublk-switch rep|block] [--ublk-depth N] [--ublk-max-io-kib N]
  --in-guest       run here, in a guest that is up (HOMI_GUEST=1); default: boot one with the VM harness
  --time S         seconds per run (default 5; plus 1 s warm-up)
  --reps N         interleaved repetitions of every row, medians reported (default 3)
  --dev L=PATH     an extra block device to measure, labelled L (repeatable), e.g. ublk=/dev/ublkb0
  --loop MIB       also a loop device over a MIB file in the guest's /tmp (memory): a plumbing check, not an NVMe path
  --size-mib M     namespace size (default 1024; host side)
  --cpus N         guest vCPUs (default 1; every run is pinned to CPU 0 anyway; host side)
  --modules LIST   extra guest kernel modules, comma-separated (host side; nvme and loop are always loaded)
  --setup CMD      shell command run in the guest before the bench, e.g. starting homid (host side)
  --homid-ublk     also the ublk rows: per repetition the controller goes from nvme to homid (uio), which serves
                   namespace 1 as /dev/ublkb0 (added and removed with homi ublk add/del), and back
  --ublk-switch rep|block  rep (default): nvme <-> homid every repetition; block: one homid session for all
                   ublk reps, bracketed by native rep 1 before and the other native reps after
  --ublk-depth N   tags of the ublk queue (default 64; qd 32 needs 32)
  --ublk-max-io-kib N  largest ublk request in KiB (default 16)
  --out FILE       result JSON (default ./ublk-bench.json; in the guest: only when given)
  --json           print the result JSON on stdout instead of the table`;

export function parseOptions(argv: string[]): Options {
  const o: Options = {
    timeSec: 5,
    reps: 3,
    sizeMiB: 1024,
    cpus: 1,
    devs: [],
    loopMiB: 0,
    modules: [],
    setup: '',
    out: '',
    json: false,
    inGuest: false,
    homidUblk: false,
    ublkDepth: 64,
    ublkMaxIoKib: 16,
    ublkSwitch: 'rep',
  };
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
      case '--homid-ublk':
        o.homidUblk = true;
        break;
      case '--ublk-depth':
        o.ublkDepth = Math.round(num());
        break;
      case '--ublk-switch': {
        const v = val();
        if (v !== 'rep' && v !== 'block') throw new Error(`--ublk-switch needs rep or block, got ${v}`);
        o.ublkSwitch = v;
        break;
      }
      case '--ublk-max-io-kib':
        o.ublkMaxIoKib = Math.round(num());
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
  if (o.homidUblk && o.devs.some((d) => d.id === UBLK_LABEL)) throw new Error(`--dev: the label ${UBLK_LABEL} is homid's ublk device with --homid-ublk, pick another`);
  if (o.homidUblk && o.ublkDepth < Math.max(...QDS)) throw new Error(`--ublk-depth ${o.ublkDepth}: the qd ${Math.max(...QDS)} rows need at least ${Math.max(...QDS)} tags`);
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

interface HomidUblk {
  child: ChildProcess;
  exited: Promise<number | null>;
  dir: string;
  socket: string;
  log: string;
}

/** `homi <args>` (the CLI, pinned to homid's CPU); its stdout, or an error with everything it said. */
function homiCli(root: string, args: string[]): string {
  const r = spawnSync('taskset', ['-c', '1', process.execPath, join(root, 'dist', 'src', 'cli', 'main.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 180_000 });
  if (r.error || r.status !== 0) throw new Error(`homi ${args.join(' ')}: ${r.error?.message ?? `exit ${r.status ?? r.signal}`}\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

interface UblkListed {
  devId: number;
  blockDevice: string;
  state: string;
  io: { reads: number; writes: number; errors: number };
}

function ublkList(root: string, socket: string): UblkListed[] {
  return (JSON.parse(homiCli(root, ['ublk', 'list', '--json', '--socket', socket])) as { devices: UblkListed[] }).devices;
}

/**
 * homid as a child process pinned to CPU 1, owning the controller (it takes it from nvme to uio_pci_generic
 * itself), then `homi ublk add` serving namespace 1 as /dev/ublkb0, checked with `homi ublk list`. Any error
 * stops homid and throws, with homid's log.
 */
async function startHomidUblk(root: string, bdf: string, o: Options): Promise<HomidUblk> {
  const dir = mkdtempSync('/tmp/ublk-bench-homid-');
  const socket = join(dir, 'homid.sock');
  const log = join(dir, 'homid.log');
  writeFileSync(join(dir, 'homid.toml'), homidToml(socket, bdf));
  const fd = openSync(log, 'w');
  const child = spawn('taskset', ['-c', '1', process.execPath, join(root, 'dist', 'src', 'cli', 'homid.js'), '--config', join(dir, 'homid.toml')], { cwd: root, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const h: HomidUblk = { child, exited, dir, socket, log };
  try {
    const t0 = Date.now();
    let up = false;
    while (!up) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`homid exited (${child.exitCode ?? child.signalCode}) before it served`);
      if (Date.now() - t0 > 240_000) throw new Error('homid did not answer on its socket in 240 s');
      if (existsSync(socket)) {
        try {
          if (ublkList(root, socket).length !== 0) throw new Error('homid serves ublk devices before homi ublk add');
          up = true;
        } catch (e) {
          if ((e as Error).message.includes('before homi ublk add')) throw e;
        }
      }
      if (!up) await new Promise((r) => setTimeout(r, 500));
    }
    const added = JSON.parse(
      homiCli(root, [
        'ublk',
        'add',
        '--device',
        'nvme',
        '--id',
        String(UBLK_ID),
        '--nsid',
        '1',
        '--queues',
        '1',
        '--depth',
        String(o.ublkDepth),
        '--max-io-kib',
        String(o.ublkMaxIoKib),
        '--json',
        '--socket',
        socket,
      ]),
    ) as { blockDevice: string; state: string };
    if (added.blockDevice !== UBLK_DEV) throw new Error(`homi ublk add served ${added.blockDevice}, not ${UBLK_DEV}`);
    const listed = ublkList(root, socket);
    if (listed.length !== 1 || listed[0]!.blockDevice !== UBLK_DEV || listed[0]!.state !== 'live') throw new Error(`homi ublk list after add: ${JSON.stringify(listed)}`);
    const t1 = Date.now();
    while (!existsSync(UBLK_DEV)) {
      if (Date.now() - t1 > 30_000) throw new Error(`${UBLK_DEV} did not appear`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return h;
  } catch (e) {
    await stopHomidUblk(h, root, true).catch(() => undefined);
    throw new Error(`${(e as Error).message}\nhomid log:\n${readFileSync(log, 'utf8').split('\n').slice(-30).join('\n')}`);
  }
}

/** `homi ublk del`, `homi ublk list` empty, then SIGTERM: homid exits 0 and gives the controller back. The counters. */
async function stopHomidUblk(h: HomidUblk, root: string, quiet = false): Promise<UblkListed> {
  let last: UblkListed | undefined;
  let failure: Error | undefined;
  try {
    if (h.child.exitCode === null) {
      const l = ublkList(root, h.socket);
      last = l.find((d) => d.devId === UBLK_ID);
      if (last) homiCli(root, ['ublk', 'del', '--id', String(UBLK_ID), '--socket', h.socket]);
      const after = ublkList(root, h.socket);
      if (after.length !== 0) throw new Error(`homi ublk list after del: ${JSON.stringify(after)}`);
      if (existsSync(UBLK_DEV)) throw new Error(`${UBLK_DEV} is still there after homi ublk del`);
    }
  } catch (e) {
    failure = e as Error;
  }
  if (h.child.exitCode === null && h.child.signalCode === null) h.child.kill('SIGTERM');
  const kill = setTimeout(() => h.child.kill('SIGKILL'), 120_000);
  const code = await h.exited;
  clearTimeout(kill);
  if (failure) throw failure;
  if (code !== 0 && !quiet) throw new Error(`homid exited ${code ?? h.child.signalCode} on SIGTERM\n${readFileSync(h.log, 'utf8').split('\n').slice(-30).join('\n')}`);
  if (!quiet) rmSync(h.dir, { recursive: true, force: true });
  if (!last) throw new Error(`homi ublk list did not show ${UBLK_DEV} before del`);
  if (last.io.errors !== 0) throw new Error(`homid counted ${last.io.errors} ublk I/O errors`);
  return last;
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
  // /dev/ublkb0 exists only in the ublk phases
  if (o.homidUblk) devices.push({ id: UBLK_LABEL, label: `ublk ${UBLK_DEV} (homid, uio)`, path: UBLK_DEV });
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
  const phases: Array<{ phase: Phase; rep: number; setupSec: number; teardownSec: number; ublk?: unknown }> = [];
  const runRow = (row: Row, rep: number): void => {
    const subst = (a: string): string => a.replace(/\{TIME\}/g, String(o.timeSec)).replace(/\{QD\}/g, String(row.qd));
    const argv = row.tool === 'homi' ? [process.execPath, ...row.spec.args.map(subst)] : ['fio', ...row.spec.args.map(subst)];
    const to0 = nvmeTimeouts();
    const [b0, t0] = cpuTicks();
    const w0 = Date.now();
    const r = spawnSync('taskset', ['-c', '0', ...argv], { cwd: root, encoding: 'utf8', timeout: (o.timeSec + 90) * 1000, maxBuffer: 64 << 20 });
    const wallSec = (Date.now() - w0) / 1000;
    const [b1, t1] = cpuTicks();
    const guestBusy = t1 > t0 ? (b1 - b0) / (t1 - t0) : NaN;
    const ioTimeouts = nvmeTimeouts() - to0;
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
  };
  let served: HomidUblk | undefined;
  try {
    if (!o.homidUblk) {
      for (const { row, rep } of runOrder(rows, o.reps)) runRow(row, rep);
    } else {
      const plan = phasePlan(rows, o.reps, UBLK_LABEL, o.ublkSwitch);
      for (let k = 0; k < plan.length; k++) {
        const step = plan[k]!;
        if (step.phase === 'ublk') {
          let setupSec = 0;
          if (!served) {
            const w0 = Date.now();
            served = await startHomidUblk(root, names.bdf, o);
            setupSec = (Date.now() - w0) / 1000;
            console.log(`# rep ${step.rep + 1} ublk phase: homid up and ${UBLK_DEV} served in ${setupSec.toFixed(1)} s`);
          }
          for (const row of step.rows) runRow(row, step.rep);
          let teardownSec = 0;
          let ublk: unknown;
          if (plan[k + 1]?.phase !== 'ublk') {
            const w1 = Date.now();
            ublk = await stopHomidUblk(served, root);
            served = undefined;
            // the controller back on nvme, with the same block device the native rows name
            const again = await kernelNames(SERIAL, 120_000);
            if (again.blk !== names.blk) throw new Error(`after homid stopped the namespace came back as ${again.blk}, not ${names.blk}`);
            teardownSec = (Date.now() - w1) / 1000;
            console.log(`# rep ${step.rep + 1} ublk phase done: homi ublk del, homid stopped, ${names.bdf} back on nvme (${again.blk}) in ${teardownSec.toFixed(1)} s`);
          }
          phases.push({ phase: 'ublk', rep: step.rep, setupSec, teardownSec, ...(ublk ? { ublk } : {}) });
        } else {
          const again = await kernelNames(SERIAL, 120_000);
          if (again.blk !== names.blk) throw new Error(`the namespace is ${again.blk} now, not ${names.blk}`);
          for (const row of step.rows) runRow(row, step.rep);
          phases.push({ phase: 'native', rep: step.rep, setupSec: 0, teardownSec: 0 });
        }
      }
    }
  } finally {
    if (served) await stopHomidUblk(served, root, true).catch((e: unknown) => console.error(`# cleanup: ${(e as Error).message}`));
    if (loop) {
      spawnSync('losetup', ['-d', loop.dev]);
      rmSync(loop.file, { force: true });
    }
  }
  const summary = summarizeRows(rows, devices, records);
  const homid = o.homidUblk
    ? {
        pinnedCpu: 1,
        switching: o.ublkSwitch,
        ublk: { id: UBLK_ID, queues: 1, depth: o.ublkDepth, maxIoKib: o.ublkMaxIoKib, range: 'namespace 1, all of it', mode: 'uio (no IOMMU)' },
        copies:
          'one kernel memcpy per I/O between the bio pages and the tag buffer homid gave the kernel, which the NVMe command DMAs to/from; no zero copy on 6.12 (ADD_DEV masks UBLK_F_SUPPORT_ZERO_COPY off)',
        phases,
      }
    : undefined;
  const result = { workload: { rw: 'randread', bs: 4096, qds: [...QDS], timeSec: o.timeSec, warmupSec: 1, reps: o.reps, pinnedCpu: 0 }, info, ...(homid ? { homid } : {}), summary, records };
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
  if (o.homidUblk && o.cpus < 2) {
    console.error('ublk-bench: --homid-ublk needs --cpus 2 (homid runs pinned to CPU 1, the runs to CPU 0)');
    return 2;
  }
  const inner = ['node', 'dist/src/bench/ublk-bench.js', '--in-guest', '--time', String(o.timeSec), '--reps', String(o.reps)];
  for (const d of o.devs) inner.push('--dev', `${d.id}=${d.path}`);
  if (o.loopMiB > 0) inner.push('--loop', String(o.loopMiB));
  if (o.homidUblk) inner.push('--homid-ublk', '--ublk-switch', o.ublkSwitch, '--ublk-depth', String(o.ublkDepth), '--ublk-max-io-kib', String(o.ublkMaxIoKib));
  const command = (o.setup ? `${o.setup} && ` : '') + inner.map(shQuote).join(' ');
  const nRuns = (1 + o.devs.length + (o.loopMiB > 0 ? 1 : 0) + (o.homidUblk ? 1 : 0)) * QDS.length * TOOLS.length * o.reps;
  const kernelArgs = [`nvme_core.io_timeout=${IO_TIMEOUT_S}`];
  const r = await runInGuest({
    command,
    cwd: repoRoot(),
    cpus: o.cpus,
    memoryMiB: 2048,
    hugepagesMiB: 64,
    modules: ['nvme', 'loop', ...(o.homidUblk ? ['uio_pci_generic', 'ublk_drv'] : []), ...o.modules],
    nvme: [{ serial: SERIAL, maxIoQueuePairs: 8, namespaces: [{ sizeMiB: o.sizeMiB, logicalBlockSize: 4096 }] }],
    // A path that loses commands stalls for 2 x io_timeout before the reset: keep that short.
    kernelArgs,
    timeoutMs: 180_000 + nRuns * (o.timeSec + 1 + 40) * 1000 + (o.homidUblk ? (o.ublkSwitch === 'rep' ? o.reps : 1) * 420_000 : 0),
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
