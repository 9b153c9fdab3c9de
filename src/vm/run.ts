// runInGuest: boot a real Linux kernel under QEMU (TCG) with QEMU's NVMe controller(s), run one command
// in the guest (chrooted into the host's root file system, read-only over 9p) and report what happened.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { progress } from './paths.js';
import { provision, type Provisioned } from './provision.js';
import { buildQemuPlan } from './qemu.js';
import type { GuestRunOptions, GuestRunResult } from './spec.js';

/** Single-quotes a string for a POSIX shell. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MODULE_NAME = /^[A-Za-z0-9_-]+$/;

/** The per-run script the initramfs runs chrooted into the host root (under the host's /bin/sh). */
export function guestScript(o: GuestRunOptions, p: Provisioned, cwd: string): string {
  const modules = o.modules ?? ['nvme'];
  for (const m of modules) if (!MODULE_NAME.test(m)) throw new Error(`bad module name ${JSON.stringify(m)}`);
  const env = { ...(o.env ?? {}) };
  for (const k of Object.keys(env)) if (!ENV_NAME.test(k)) throw new Error(`bad environment variable name ${JSON.stringify(k)}`);
  const hugepages = Math.ceil((o.hugepagesMiB ?? 0) / 2);
  const k = p.kernel;
  const lines = [
    'J=/run/homi-job',
    'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    'export HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 TERM=dumb HOMI_GUEST=1',
    `export HOMI_GUEST_KERNEL_ROOT=${shQuote(k.root)} HOMI_GUEST_KERNEL_RELEASE=${shQuote(k.release)}`,
    // What the host configured, for tests in the guest to check against.
    `export HOMI_GUEST_NVME=${shQuote(JSON.stringify(o.nvme ?? []))} HOMI_GUEST_IOMMU=${o.iommu ? 1 : 0}`,
    `export HOMI_GUEST_HUGEPAGES_MIB=${hugepages * 2} HOMI_GUEST_MODULES=${shQuote(modules.join(' '))}`,
    ...Object.entries(env).map(([n, v]) => `export ${n}=${shQuote(v)}`),
    "up() { cut -d' ' -f1 /proc/uptime; }",
    'setup_fail() { echo "HOMI: SETUP FAILED: $*"; echo "$*" >> $J/setup-error; }',
    'echo "HOMI: userland up at $(up)s"',
    // The kernel's own module requests (request_module) go through the cached modules too.
    `printf '#!/bin/sh\\nexec /sbin/modprobe -d %s -S %s "$@"\\n' ${shQuote(shQuote(k.root))} ${shQuote(k.release)} > /run/homi-modprobe`,
    'chmod 755 /run/homi-modprobe && echo /run/homi-modprobe > /proc/sys/kernel/modprobe',
    `for m in ${modules.join(' ')}; do`,
    `  /sbin/modprobe -d ${shQuote(k.root)} -S ${shQuote(k.release)} "$m" || setup_fail "modprobe $m failed"`,
    'done',
    `echo "HOMI: modules loaded (${modules.join(' ')}) at $(up)s"`,
  ];
  const nCtrl = (o.nvme ?? []).length;
  if (nCtrl > 0 && modules.includes('nvme')) {
    // Like udev settle: the configured controllers are live before the command starts (probing is async).
    lines.push(
      'live() { n=0; for c in /sys/class/nvme/nvme*; do [ "$(cat $c/state 2>/dev/null)" = live ] && n=$((n+1)); done; echo $n; }',
      `i=0; while [ "$(live)" -lt ${nCtrl} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done`,
      `[ "$(live)" -ge ${nCtrl} ] || echo "HOMI: warning: only $(live) of ${nCtrl} NVMe controllers live after 20 s"`,
    );
  }
  if (o.net) {
    lines.push(
      `/sbin/modprobe -d ${shQuote(k.root)} -S ${shQuote(k.release)} virtio_net || setup_fail "modprobe virtio_net failed"`,
      'for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done',
      '/bin/busybox ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up || setup_fail "cannot configure eth0"',
      '/bin/busybox route add default gw 10.0.2.2 2>/dev/null',
    );
  }
  if (hugepages > 0) {
    lines.push(
      `echo ${hugepages} > /proc/sys/vm/nr_hugepages`,
      'got=$(cat /proc/sys/vm/nr_hugepages)',
      `[ "$got" -ge ${hugepages} ] || setup_fail "asked for ${hugepages} hugepages, got $got"`,
      'mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages || setup_fail "cannot mount hugetlbfs"',
      'echo "HOMI: $got hugepages of 2 MiB on /dev/hugepages"',
    );
  }
  lines.push(
    `cd ${shQuote(cwd)} || setup_fail "cannot cd to ${cwd.replace(/["$`\\]/g, '')}"`,
    'if [ -f $J/setup-error ]; then',
    '  dmesg > $J/dmesg.log 2>/dev/null; sync; exit 1',
    'fi',
    'echo "HOMI: command started at $(up)s"',
    // The output goes straight to the job share (the host follows the file); the serial console is slow.
    '/bin/bash $J/command.sh < /dev/null > $J/output.log 2>&1; echo $? > $J/exitcode',
    'echo "HOMI: command finished with status $(cat $J/exitcode 2>/dev/null) at $(up)s"',
    'dmesg > $J/dmesg.log 2>/dev/null',
    'sync',
  );
  return lines.join('\n') + '\n';
}

function createImage(path: string, bytes: number): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, bytes);
  } finally {
    closeSync(fd);
  }
}

/** An ivshmem backing file: created zeroed when missing; an existing one must have exactly the BAR's size. */
function prepareIvshmemFile(path: string, bytes: number): void {
  if (existsSync(path)) {
    const size = statSync(path).size;
    if (size !== bytes) throw new Error(`ivshmem file ${path} has ${size} bytes, the BAR needs exactly ${bytes}`);
    return;
  }
  createImage(path, bytes);
}

/** Removes temp folders of earlier runs whose process is gone (killed before it could clean up). */
function removeStaleTempDirs(): void {
  let names: string[];
  try {
    names = readdirSync(tmpdir()).filter((n) => n.startsWith('homi-vm-'));
  } catch {
    return;
  }
  for (const n of names) {
    const dir = join(tmpdir(), n);
    try {
      const pid = Number(readFileSync(join(dir, 'owner.pid'), 'utf8'));
      if (pid > 0) {
        try {
          process.kill(pid, 0);
          continue; // still running
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EPERM') continue;
        }
      } else continue;
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // No pid file: being created, or not ours; leave old ones alone unless clearly abandoned.
      try {
        if (Date.now() - statSync(dir).mtimeMs > 24 * 3600_000) rmSync(dir, { recursive: true, force: true });
      } catch {
        /* gone */
      }
    }
  }
}

/** Every QEMU still running, killed if this process exits. */
const live = new Set<import('node:child_process').ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
  });
}

/**
 * Boots the guest, runs `o.command` in `o.cwd` (default: the current folder) and powers off.
 * Provisions (installs QEMU, fetches the kernel, builds the initramfs) first when needed: that may throw a
 * ProvisionError. Everything about the guest run itself is reported in the result, never thrown.
 */
export async function runInGuest(o: GuestRunOptions, provisioned?: Provisioned): Promise<GuestRunResult> {
  const p = provisioned ?? (await provision(o.kernel ?? 'default'));
  if ((p.kernel.flavor ?? 'default') !== (o.kernel ?? 'default')) {
    throw new Error(`the run asks for the '${o.kernel ?? 'default'}' guest kernel, but was given the '${p.kernel.flavor ?? 'default'}' one (${p.kernel.release})`);
  }
  const retries = o.bootRetries ?? DEFAULT_BOOT_RETRIES;
  const panics: string[] = [];
  for (let attempt = 0; ; attempt++) {
    const r = await runOnce(o, p);
    if (!r.bootPanic || attempt >= retries) return panics.length > 0 ? { ...r, bootPanics: panics } : r;
    // The guest kernel died before the command started (nothing of the command ran). Seen under multi-threaded
    // TCG on a loaded host: an "Oops: int3" while a secondary vCPU came up. Boot again, and keep the console.
    panics.push(r.consoleLog.split('\n').slice(-60).join('\n'));
    progress(`the guest kernel panicked during boot (${r.error ?? 'no command started'}); booting again (${attempt + 1} of ${retries})`);
  }
}

/** Boots that panic before the command starts are retried this many times (the command never ran in them). */
export const DEFAULT_BOOT_RETRIES = 1;

async function runOnce(o: GuestRunOptions, p: Provisioned): Promise<GuestRunResult> {
  const cwd = resolve(o.cwd ?? process.cwd());
  const timeoutMs = o.timeoutMs ?? 300_000;
  removeStaleTempDirs();
  const temp = mkdtempSync(join(tmpdir(), 'homi-vm-'));
  writeFileSync(join(temp, 'owner.pid'), String(process.pid));
  const share = join(temp, 'share');
  const imageDir = join(temp, 'images');
  mkdirSync(share);
  mkdirSync(imageDir);
  const consoleLines: string[] = [];
  let result: GuestRunResult | undefined;
  let ivshmemFiles: GuestRunResult['ivshmem'] = [];
  try {
    const ivshmemDir = (o.ivshmem ?? []).some((d) => d.file === undefined) ? mkdtempSync(join(tmpdir(), 'homi-ivshmem-')) : undefined;
    const plan = buildQemuPlan(o, { qemu: p.qemu, vmlinuz: p.kernel.vmlinuz, initramfs: p.initramfs, jobShare: share, imageDir, ivshmemDir });
    for (const img of plan.images) createImage(img.path, img.bytes);
    for (const f of plan.ivshmem) prepareIvshmemFile(f.file, f.bytes);
    ivshmemFiles = plan.ivshmem;
    writeFileSync(join(share, 'guest.sh'), guestScript(o, p, cwd));
    writeFileSync(join(share, 'command.sh'), o.command.endsWith('\n') ? o.command : `${o.command}\n`);
    const [bin, ...args] = plan.args;
    progress(`booting ${p.kernel.release} (${o.nvme?.length ?? 0} NVMe controller(s)${o.iommu ? ', IOMMU' : ''}), timeout ${Math.round(timeoutMs / 1000)} s`);
    const t0 = Date.now();
    let bootMs: number | null = null;
    let tStart = 0;
    let commandMs: number | null = null;
    const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    installExitHook();
    live.add(child);
    let timedOut = false;
    let aborted = false;
    const timer = setTimeout(() => {
      timedOut = true;
      progress(`timeout after ${Math.round(timeoutMs / 1000)} s: killing QEMU`);
      child.kill('SIGKILL');
    }, timeoutMs);
    const onAbort = (): void => {
      aborted = true;
      progress('aborted: killing QEMU');
      child.kill('SIGKILL');
    };
    if (o.signal?.aborted) onAbort();
    else o.signal?.addEventListener('abort', onAbort, { once: true });
    const onLine = (line: string): void => {
      consoleLines.push(line);
      if (line.startsWith('HOMI')) {
        const s = ((Date.now() - t0) / 1000).toFixed(1);
        if (line.includes('command started')) {
          bootMs = Date.now() - t0;
          tStart = Date.now();
        } else if (line.includes('command finished') && tStart > 0) {
          commandMs = Date.now() - tStart;
        }
        progress(`+${s}s ${line.replace(/^HOMI(-INIT)?: /, '')}`);
      }
      if (o.onConsole) {
        try {
          o.onConsole(line);
        } catch {
          /* a callback's failure is not the run's */
        }
      }
    };
    let buf = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      buf += d.replace(/\r/g, '');
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    // Follow the command's output file on the job share (a host folder) as the guest writes it.
    const outPath = join(share, 'output.log');
    let outPos = 0;
    let outBuf = '';
    const pollOutput = (final: boolean): void => {
      if (!o.onOutput) return;
      let fd: number;
      try {
        fd = openSync(outPath, 'r');
      } catch {
        return;
      }
      try {
        const chunk = Buffer.alloc(1 << 20);
        for (;;) {
          const n = readSync(fd, chunk, 0, chunk.length, outPos);
          if (n <= 0) break;
          outPos += n;
          outBuf += chunk.subarray(0, n).toString('utf8');
        }
      } finally {
        closeSync(fd);
      }
      let i: number;
      while ((i = outBuf.indexOf('\n')) >= 0) {
        emitOutput(outBuf.slice(0, i));
        outBuf = outBuf.slice(i + 1);
      }
      if (final && outBuf.length > 0) {
        emitOutput(outBuf);
        outBuf = '';
      }
    };
    const emitOutput = (line: string): void => {
      try {
        o.onOutput?.(line);
      } catch {
        /* a callback's failure is not the run's */
      }
    };
    const poller = o.onOutput ? setInterval(() => pollOutput(false), 100) : undefined;
    let qemuErr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      qemuErr += d;
    });
    const exit = await new Promise<{ code: number | null; signal: string | null; spawnError?: string }>((res) => {
      child.on('error', (e) => res({ code: null, signal: null, spawnError: e.message }));
      child.on('close', (code, signal) => res({ code, signal }));
    });
    clearTimeout(timer);
    o.signal?.removeEventListener('abort', onAbort);
    if (poller) clearInterval(poller);
    pollOutput(true);
    live.delete(child);
    if (buf.length > 0) onLine(buf);
    const totalMs = Date.now() - t0;
    for (const l of qemuErr.split('\n')) if (l.trim().length > 0) consoleLines.push(`qemu: ${l}`);
    const read = (f: string): string | null => {
      try {
        return readFileSync(join(share, f), 'utf8');
      } catch {
        return null;
      }
    };
    const rc = read('exitcode');
    const exitCode = rc !== null && /^\d+\s*$/.test(rc) ? Number(rc.trim()) : null;
    const setupError = read('setup-error');
    let error: string | undefined;
    let bootPanic = false;
    if (exitCode === null) {
      if (timedOut) error = `timed out after ${timeoutMs} ms (QEMU killed)`;
      else if (aborted) error = 'aborted (QEMU killed)';
      else if (exit.spawnError) error = `cannot start QEMU: ${exit.spawnError}`;
      else if (setupError) error = `guest setup failed: ${setupError.trim().replace(/\n/g, '; ')}`;
      else if (bootMs === null) {
        const fatal = consoleLines.find((l) => l.includes('FATAL') || l.includes('Kernel panic'));
        bootPanic = consoleLines.some((l) => l.includes('Kernel panic'));
        error = `the guest never started the command (QEMU exit ${exit.code ?? exit.signal})${fatal ? `: ${fatal}` : ''}${qemuErr ? `; qemu: ${qemuErr.trim().slice(-500)}` : ''}`;
      } else error = `the command did not finish (QEMU exit ${exit.code ?? exit.signal})`;
    }
    result = {
      exitCode,
      output: read('output.log') ?? '',
      consoleLog: consoleLines.join('\n'),
      dmesg: read('dmesg.log') ?? '',
      bootMs,
      commandMs,
      totalMs,
      timedOut,
      bootPanic,
      ...(error ? { error } : {}),
      qemuExit: { code: exit.code, signal: exit.signal },
      qemuCommand: plan.args,
      ivshmem: ivshmemFiles,
      tempDir: temp,
    };
    progress(`guest done in ${(totalMs / 1000).toFixed(1)} s: ${exitCode !== null ? `exit ${exitCode}` : error}`);
    return result;
  } finally {
    if (!o.keepTemp && existsSync(temp)) rmSync(temp, { recursive: true, force: true });
  }
}
