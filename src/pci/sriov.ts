/**
 * SR-IOV of a physical function through sysfs: how many VFs it supports and has enabled, whether the kernel
 * probes drivers for new VFs (sriov_drivers_autoprobe), the VFs' addresses (virtfnN links) and what they are
 * bound to; enabling VFs without driver autoprobe (so no driver grabs a VF before homid hands it out) and
 * disabling them. Every path through SysPaths, so tests run on a fake tree.
 */
import { join } from 'node:path';
import { PciError, normalizePciAddress } from './address.js';
import { deviceDir, exists, linkName, listDir, parseDec, readText, sysPaths, type SysPathOptions, type SysPaths } from './sysfs.js';

export interface VirtualFunction {
  /** 0-based index (virtfnN); the NVMe VF number (VFN) is index + 1. */
  index: number;
  address: string;
  driver: string | null;
  driverOverride: string | null;
  iommuGroup: number | null;
}

export interface SriovState {
  pf: string;
  totalVfs: number;
  numVfs: number;
  driversAutoprobe: boolean;
  vfs: VirtualFunction[];
}

export class SriovUnsupportedError extends PciError {
  constructor(message: string) {
    super(message);
    this.name = 'SriovUnsupportedError';
  }
}

function pfDir(p: SysPaths, pf: string): string {
  const dir = deviceDir(p, pf);
  if (!exists(dir)) throw new PciError(`no PCI function ${pf} (${dir} does not exist)`);
  if (readText(join(dir, 'sriov_totalvfs')) === null) throw new SriovUnsupportedError(`PCI function ${pf} is not SR-IOV capable (no sriov_totalvfs)`);
  return dir;
}

/** The SR-IOV state of a physical function. Throws SriovUnsupportedError when it has no SR-IOV capability. */
export function sriovState(addr: string, opts: SysPathOptions = {}): SriovState {
  const p = sysPaths(opts);
  const pf = normalizePciAddress(addr);
  const dir = pfDir(p, pf);
  const vfs: VirtualFunction[] = [];
  for (const e of listDir(dir)) {
    const m = /^virtfn(\d+)$/.exec(e);
    if (!m) continue;
    const address = linkName(join(dir, e));
    if (address === null) continue;
    const vdir = deviceDir(p, address);
    const override = readText(join(vdir, 'driver_override'));
    const group = linkName(join(vdir, 'iommu_group'));
    vfs.push({
      index: Number(m[1]),
      address,
      driver: linkName(join(vdir, 'driver')),
      driverOverride: override === null || override === '(null)' || override === '' ? null : override,
      iommuGroup: group === null ? null : parseDec(group),
    });
  }
  vfs.sort((a, b) => a.index - b.index);
  return {
    pf,
    totalVfs: parseDec(readText(join(dir, 'sriov_totalvfs'))) ?? 0,
    numVfs: parseDec(readText(join(dir, 'sriov_numvfs'))) ?? 0,
    driversAutoprobe: readText(join(dir, 'sriov_drivers_autoprobe')) !== '0',
    vfs,
  };
}

/**
 * Enable `count` VFs with driver autoprobe off (a VF then binds only to a driver named in its driver_override).
 * The kernel accepts a new count only from 0, so a different non-zero count is refused unless `force` (which
 * disables first: every VF goes away). Returns the new state.
 */
export function enableVfs(addr: string, count: number, opts: SysPathOptions & { force?: boolean } = {}): SriovState {
  const p = sysPaths(opts);
  const pf = normalizePciAddress(addr);
  const dir = pfDir(p, pf);
  const before = sriovState(pf, p);
  if (!Number.isInteger(count) || count < 0 || count > before.totalVfs) throw new PciError(`${pf}: cannot enable ${count} VFs: it supports 0..${before.totalVfs}`);
  p.write(join(dir, 'sriov_drivers_autoprobe'), '0\n');
  if (before.numVfs === count) return sriovState(pf, p);
  if (before.numVfs !== 0) {
    if (!opts.force) throw new PciError(`${pf}: ${before.numVfs} VFs are enabled; disable them first (the kernel changes the count only from 0)`);
    p.write(join(dir, 'sriov_numvfs'), '0\n');
  }
  if (count > 0) p.write(join(dir, 'sriov_numvfs'), `${count}\n`);
  const after = sriovState(pf, p);
  if (after.numVfs !== count) throw new PciError(`${pf}: writing sriov_numvfs=${count} left ${after.numVfs} VFs enabled`);
  return after;
}

/** Disable every VF (sriov_numvfs = 0). Refuses while a VF is bound to a driver unless `force`. */
export function disableVfs(addr: string, opts: SysPathOptions & { force?: boolean } = {}): SriovState {
  const p = sysPaths(opts);
  const pf = normalizePciAddress(addr);
  const dir = pfDir(p, pf);
  const bound = sriovState(pf, p).vfs.filter((v) => v.driver !== null);
  if (bound.length > 0 && !opts.force) throw new PciError(`${pf}: VFs are in use: ${bound.map((v) => `${v.address} bound to ${v.driver}`).join(', ')}`);
  p.write(join(dir, 'sriov_numvfs'), '0\n');
  return sriovState(pf, p);
}

/** The address of VF `index` (0-based, virtfnN) of a PF. */
export function vfAddress(addr: string, index: number, opts: SysPathOptions = {}): string {
  const v = sriovState(addr, opts).vfs.find((f) => f.index === index);
  if (!v) throw new PciError(`${normalizePciAddress(addr)} has no VF ${index} enabled`);
  return v.address;
}

/** Function-level reset of a function (its sysfs `reset`), when the kernel offers one. Returns false if not. */
export function resetFunction(addr: string, opts: SysPathOptions = {}): boolean {
  const p = sysPaths(opts);
  const f = join(deviceDir(p, normalizePciAddress(addr)), 'reset');
  if (!exists(f)) return false;
  p.write(f, '1\n');
  return true;
}
