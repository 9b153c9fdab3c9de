/**
 * Safe driver switching for a PCI function: driver_override + unbind + drivers_probe, verified, with a guard
 * (DriverBinding) that puts the original driver back on restore(), on process exit or a fatal signal, and on
 * errors of the code that took it. A function whose kernel NVMe namespaces are in use (mounted, held by
 * device-mapper / md, used as swap) is refused before anything is touched.
 */
import { join } from 'node:path';
import { PciError, normalizePciAddress } from './address.js';
import { pciFunction } from './discover.js';
import { deviceDir, driverDir, exists, linkName, listDir, readText, sysPaths, type SysPathOptions, type SysPaths } from './sysfs.js';

export class DeviceBusyError extends PciError {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceBusyError';
  }
}

/**
 * Block devices (names in /sys/block) that belong to the kernel NVMe controllers of a PCI function:
 * namespace disks nvme<S>n<N>, their per-path disks nvme<S>c<C>n<N> (native multipath) and the multipath
 * head nvme<S>n<N> a path disk belongs to.
 */
export function blockDevicesOf(p: SysPaths, addr: string): string[] {
  const out = new Set<string>();
  const dir = deviceDir(p, addr);
  for (const ctrl of listDir(join(dir, 'nvme')).filter((n) => /^nvme\d+$/.test(n))) {
    for (const e of listDir(join(dir, 'nvme', ctrl))) {
      const m = /^nvme(\d+)(?:c\d+)?n(\d+)$/.exec(e);
      if (!m) continue;
      out.add(e);
      const head = `nvme${m[1]}n${m[2]}`;
      if (exists(join(p.sys, 'block', head))) out.add(head);
    }
  }
  return [...out].sort();
}

/** Reasons why the kernel's block devices of this function are in use (empty when it is free to unbind). */
export function busyReasons(p: SysPaths, addr: string): string[] {
  const reasons: string[] = [];
  const disks = blockDevicesOf(p, addr);
  const names = new Set<string>();
  for (const d of disks) {
    names.add(d);
    const holders = listDir(join(p.sys, 'block', d, 'holders'));
    if (holders.length > 0) reasons.push(`${d} is held by ${holders.join(', ')}`);
    for (const part of listDir(join(p.sys, 'block', d)).filter((n) => n.startsWith(d) && /p\d+$/.test(n))) {
      names.add(part);
      const ph = listDir(join(p.sys, 'block', d, part, 'holders'));
      if (ph.length > 0) reasons.push(`${part} is held by ${ph.join(', ')}`);
    }
  }
  if (names.size === 0) return reasons;
  const mounts = readText(join(p.proc, 'mounts')) ?? '';
  for (const line of mounts.split('\n')) {
    const [src, target] = line.split(' ');
    if (!src || !target) continue;
    const dev = /^\/dev\/(nvme\S+)$/.exec(src)?.[1];
    if (dev && names.has(dev)) reasons.push(`/dev/${dev} is mounted on ${target.replace(/\\040/g, ' ')}`);
  }
  const swaps = readText(join(p.proc, 'swaps')) ?? '';
  for (const line of swaps.split('\n').slice(1)) {
    const dev = /^\/dev\/(nvme\S+)/.exec(line)?.[1];
    if (dev && names.has(dev)) reasons.push(`/dev/${dev} is in use as swap`);
  }
  return reasons;
}

/** Throw DeviceBusyError when the function's kernel block devices are in use. */
export function assertNotBusy(p: SysPaths, addr: string): void {
  const r = busyReasons(p, addr);
  if (r.length > 0) {
    const drv = linkName(join(deviceDir(p, addr), 'driver')) ?? 'its driver';
    throw new DeviceBusyError(`PCI function ${addr} is in use (${r.join('; ')}); it stays bound to ${drv}. Unmount / release it first.`);
  }
}

/** Bind `addr` to `driver` now (driver_override, unbind, drivers_probe), and verify. Low level: no guard. */
function switchDriver(p: SysPaths, addr: string, driver: string | null, override: string | null): void {
  const dir = deviceDir(p, addr);
  const current = linkName(join(dir, 'driver'));
  // driver_override: a driver name pins the next probe to it; "\n" clears it.
  p.write(join(dir, 'driver_override'), (override ?? driver ?? '') + '\n');
  if (current !== null && current !== driver) p.write(join(dir, 'driver', 'unbind'), addr);
  if (driver !== null && linkName(join(dir, 'driver')) !== driver) {
    try {
      p.write(join(p.sys, 'bus', 'pci', 'drivers_probe'), addr);
    } catch (e) {
      // drivers_probe fails (e.g. ENODEV / EINVAL) when the probe does not bind; checked just below.
      const now = linkName(join(dir, 'driver'));
      if (now !== driver) throw new PciError(`binding ${addr} to ${driver} failed: ${(e as Error).message}`);
    }
  }
  const now = linkName(join(dir, 'driver'));
  if (now !== driver) throw new PciError(`binding ${addr} to ${driver ?? 'no driver'} failed: it is bound to ${now ?? 'no driver'}`);
}

export interface BindOptions extends SysPathOptions {
  /** Skip the in-use check (never for a device the kernel may be using). */
  force?: boolean;
  /** Called (synchronously) before the original driver is put back, e.g. to stop DMA. Errors are ignored. */
  beforeRestore?: () => void;
}

const live = new Set<DriverBinding>();
let hooksInstalled = false;

function restoreAllSync(): void {
  for (const b of [...live]) {
    try {
      b.restore();
    } catch {
      // best effort at exit
    }
  }
}

function onSignal(sig: NodeJS.Signals): void {
  restoreAllSync();
  uninstallHooks();
  process.kill(process.pid, sig);
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', restoreAllSync);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
}

function uninstallHooks(): void {
  if (!hooksInstalled) return;
  hooksInstalled = false;
  process.off('exit', restoreAllSync);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  process.off('SIGHUP', onSignal);
}

/**
 * A driver binding taken over by this process. `restore()` puts back the original driver and driver_override
 * (idempotent); it also runs on process exit and on SIGINT / SIGTERM / SIGHUP.
 */
export class DriverBinding {
  readonly address: string;
  /** The driver bound before (null: none). */
  readonly originalDriver: string | null;
  /** driver_override before (null: none). */
  readonly originalOverride: string | null;
  /** The driver bound now. */
  readonly driver: string;
  /** True when nothing had to change (the function was already bound to `driver`). */
  readonly unchanged: boolean;
  beforeRestore: (() => void) | undefined;
  private restored = false;
  private readonly paths: SysPaths;

  constructor(paths: SysPaths, address: string, originalDriver: string | null, originalOverride: string | null, driver: string, unchanged: boolean, beforeRestore?: () => void) {
    this.paths = paths;
    this.address = address;
    this.originalDriver = originalDriver;
    this.originalOverride = originalOverride;
    this.driver = driver;
    this.unchanged = unchanged;
    this.beforeRestore = beforeRestore;
    if (!unchanged) {
      live.add(this);
      installHooks();
    }
  }

  get isRestored(): boolean {
    return this.restored || this.unchanged;
  }

  /** Put the original driver back (synchronous, idempotent). Throws PciError if the kernel refused. */
  restore(): void {
    if (this.restored || this.unchanged) return;
    this.restored = true;
    live.delete(this);
    if (live.size === 0) uninstallHooks();
    try {
      this.beforeRestore?.();
    } catch {
      // the device may be gone: restoring the binding matters more
    }
    const dir = deviceDir(this.paths, this.address);
    if (!exists(dir)) return; // removed meanwhile
    if (this.originalDriver === null) {
      const cur = linkName(join(dir, 'driver'));
      this.paths.write(join(dir, 'driver_override'), (this.originalOverride ?? '') + '\n');
      if (cur !== null) this.paths.write(join(dir, 'driver', 'unbind'), this.address);
      return;
    }
    try {
      switchDriver(this.paths, this.address, this.originalDriver, this.originalDriver);
    } finally {
      this.paths.write(join(dir, 'driver_override'), (this.originalOverride ?? '') + '\n');
    }
  }
}

/**
 * Bind a PCI function to `driver` (e.g. 'uio_pci_generic', 'vfio-pci'), verifying the result. Refuses with
 * DeviceBusyError (leaving it bound) when its kernel NVMe block devices are in use, and with PciError when
 * the driver is not loaded. Returns the guard that restores the original binding.
 */
export function bindTo(addr: string, driver: string, opts: BindOptions = {}): DriverBinding {
  const p = sysPaths(opts);
  const address = normalizePciAddress(addr);
  const f = pciFunction(address, p);
  if (f.driver === driver) return new DriverBinding(p, address, f.driver, f.driverOverride, driver, true);
  if (!exists(driverDir(p, driver))) {
    throw new PciError(`cannot bind ${address} to ${driver}: the driver is not loaded (modprobe ${driver}); ${address} stays bound to ${f.driver ?? 'no driver'}`);
  }
  if (!opts.force) assertNotBusy(p, address);
  const guard = new DriverBinding(p, address, f.driver, f.driverOverride, driver, false, opts.beforeRestore);
  try {
    switchDriver(p, address, driver, driver);
  } catch (e) {
    try {
      guard.restore();
    } catch (e2) {
      throw new PciError(`${(e as Error).message}; restoring ${f.driver ?? 'no driver'} failed too: ${(e2 as Error).message}`);
    }
    throw e;
  }
  return guard;
}

/** Drivers bound now to the other functions of an IOMMU group ('' for none). */
export function groupPeers(p: SysPaths, group: number, except: string): Array<{ address: string; driver: string | null }> {
  return listDir(join(p.sys, 'kernel', 'iommu_groups', String(group), 'devices'))
    .filter((a) => a !== except)
    .map((a) => ({ address: a, driver: linkName(join(deviceDir(p, a), 'driver')) }));
}
