/**
 * Discovery of PCI functions through sysfs: NVMe controllers (class 0x010802), their ids, bound driver,
 * IOMMU group, NUMA node, SR-IOV counts and BAR0 size. All paths come from a SysPaths root (tests use a fake).
 */
import { join } from 'node:path';
import { PciError, normalizePciAddress } from './address.js';
import { deviceDir, exists, fileSize, linkName, listDir, parseDec, parseHex, readText, sysPaths, type SysPathOptions, type SysPaths } from './sysfs.js';

/** PCI class code of an NVM Express controller: mass storage (01), non-volatile memory (08), NVMe (02). */
export const PCI_CLASS_NVME = 0x010802;

export interface PciFunction {
  address: string;
  /** 24-bit class code (e.g. 0x010802). */
  classCode: number;
  vendorId: number;
  deviceId: number;
  subsystemVendorId: number | null;
  subsystemDeviceId: number | null;
  /** Bound driver name, or null when unbound. */
  driver: string | null;
  /** driver_override, or null when none is set. */
  driverOverride: string | null;
  /** IOMMU group number, or null without an IOMMU. */
  iommuGroup: number | null;
  /** NUMA node, or null when unknown (-1). */
  numaNode: number | null;
  /** SR-IOV: VFs the function supports (null when it is not SR-IOV capable). */
  sriovTotalVfs: number | null;
  /** SR-IOV: VFs currently enabled (null when it is not SR-IOV capable). */
  sriovNumVfs: number | null;
  /** For a VF: the PF's address (physfn link), else null. */
  physfn: string | null;
  /** BAR0 size in bytes, or null when BAR0 is not implemented. */
  bar0Size: number | null;
  /** Kernel NVMe controller names (nvme0 ...) while bound to nvme. */
  nvmeControllers: string[];
}

/** BAR0 size from the `resource` file (line 0: start end flags) or, failing that, resource0's size. */
export function bar0Size(p: SysPaths, addr: string): number | null {
  const dir = deviceDir(p, addr);
  const res = readText(join(dir, 'resource'));
  if (res !== null) {
    const line = res.split('\n')[0]!.trim().split(/\s+/);
    if (line.length >= 2) {
      const start = BigInt(line[0]!);
      const end = BigInt(line[1]!);
      if (end > start) return Number(end - start + 1n);
    }
  }
  const sz = fileSize(join(dir, 'resource0'));
  return sz !== null && sz > 0 ? sz : null;
}

/** Everything sysfs says about one PCI function. Throws PciError when it does not exist. */
export function pciFunction(addr: string, opts: SysPathOptions = {}): PciFunction {
  const p = sysPaths(opts);
  const address = normalizePciAddress(addr);
  const dir = deviceDir(p, address);
  if (!exists(dir)) throw new PciError(`no PCI function ${address} (${dir} does not exist)`);
  const classCode = parseHex(readText(join(dir, 'class')));
  if (classCode === null) throw new PciError(`PCI function ${address}: cannot read its class (${join(dir, 'class')})`);
  const override = readText(join(dir, 'driver_override'));
  const numa = parseDec(readText(join(dir, 'numa_node')));
  const group = linkName(join(dir, 'iommu_group'));
  return {
    address,
    classCode,
    vendorId: parseHex(readText(join(dir, 'vendor'))) ?? 0,
    deviceId: parseHex(readText(join(dir, 'device'))) ?? 0,
    subsystemVendorId: parseHex(readText(join(dir, 'subsystem_vendor'))),
    subsystemDeviceId: parseHex(readText(join(dir, 'subsystem_device'))),
    driver: linkName(join(dir, 'driver')),
    driverOverride: override === null || override === '(null)' || override === '' ? null : override,
    iommuGroup: group === null ? null : parseDec(group),
    numaNode: numa === null || numa < 0 ? null : numa,
    sriovTotalVfs: parseDec(readText(join(dir, 'sriov_totalvfs'))),
    sriovNumVfs: parseDec(readText(join(dir, 'sriov_numvfs'))),
    physfn: linkName(join(dir, 'physfn')),
    bar0Size: bar0Size(p, address),
    nvmeControllers: listDir(join(dir, 'nvme')).filter((n) => /^nvme\d+$/.test(n)),
  };
}

/** All PCI functions whose class is `classCode` (default: NVMe), sorted by address. */
export function listPciFunctions(opts: SysPathOptions & { classCode?: number } = {}): PciFunction[] {
  const p = sysPaths(opts);
  const want = opts.classCode ?? PCI_CLASS_NVME;
  const out: PciFunction[] = [];
  for (const addr of listDir(join(p.sys, 'bus', 'pci', 'devices'))) {
    const cls = parseHex(readText(join(deviceDir(p, addr), 'class')));
    if (cls !== want) continue;
    out.push(pciFunction(addr, p));
  }
  return out;
}

/** NVMe controllers on the PCI bus. */
export function listNvmeFunctions(opts: SysPathOptions = {}): PciFunction[] {
  return listPciFunctions({ ...opts, classCode: PCI_CLASS_NVME });
}

/** Addresses of every function in an IOMMU group. */
export function iommuGroupDevices(p: SysPaths, group: number): string[] {
  return listDir(join(p.sys, 'kernel', 'iommu_groups', String(group), 'devices'));
}
