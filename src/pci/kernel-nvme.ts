/**
 * The kernel's NVMe controllers and namespaces as sysfs shows them (/sys/class/nvme, /sys/block), and which
 * kernel NVMe device a /dev node is (through /sys/dev/{char,block}/MAJ:MIN). Every path comes from a SysPaths
 * root, so tests run on a fake tree.
 *
 * Names the kernel gives (drivers/nvme/host): a controller nvme<C> (char device /dev/nvme<C>); a namespace's
 * block device nvme<C>n<H> without native multipath, or, with it, nvme<S>n<H> (the subsystem's head disk) with a
 * hidden per-path disk nvme<S>c<C>n<H> in the controller's folder; its generic char device ng<C>n<H> in the
 * controller's folder, or with multipath the head's ng<S>n<H> in the subsystem's (nvme-subsys<S>). H is the
 * namespace head's instance, not the NSID (read `nsid`). Seen on Linux 6.12 (the VM guest): QEMU's SR-IOV capable
 * controller reports multi-controller capability, so the kernel drives its namespace through multipath.
 */
import { statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { exists, linkName, listDir, parseDec, readText, sysPaths, type SysPathOptions, type SysPaths } from './sysfs.js';

/** sysfs sizes count 512-byte sectors whatever the logical block size. */
export const SYSFS_SECTOR_BYTES = 512;

export interface KernelNamespace {
  nsid: number | null;
  /** Block device name (nvme0n1), or null when there is none. */
  disk: string | null;
  /** /dev path of the block device, or null. */
  blockDevice: string | null;
  /** /dev path of the generic char device (ng0n1), or null. */
  genericDevice: string | null;
  /** Capacity in bytes, or null when sysfs does not say. */
  sizeBytes: number | null;
  /** Logical block size in bytes, or null. */
  lbaSize: number | null;
}

export interface KernelController {
  /** nvme0 */
  name: string;
  /** /dev/nvme0 */
  device: string;
  /** pcie, tcp, rdma, fc, loop */
  transport: string | null;
  /** PCI address for pcie controllers (the `address` attribute), else null. */
  pciAddress: string | null;
  model: string | null;
  serial: string | null;
  firmware: string | null;
  /** live, resetting, connecting, deleting, dead, ... */
  state: string | null;
  cntlid: number | null;
  subsysnqn: string | null;
  namespaces: KernelNamespace[];
}

const CTRL_NAME = /^nvme\d+$/;
/** A namespace disk in a controller folder: nvme<C>n<H>, or the hidden path nvme<S>c<C>n<H>. */
const NS_DISK = /^nvme(\d+)(c\d+)?n(\d+)$/;
const NS_GENERIC = /^ng\d+n(\d+)$/;

/** The kernel's NVMe controllers (sorted by number), with their namespaces; empty without /sys/class/nvme. */
export function listKernelNvme(opts: SysPathOptions = {}): KernelController[] {
  const p = sysPaths(opts);
  const cls = join(p.sys, 'class', 'nvme');
  const names = listDir(cls).filter((n) => CTRL_NAME.test(n));
  names.sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
  return names.map((name) => kernelController(p, name));
}

/** With native multipath the generic char device belongs to the namespace head: nvme-subsys<S>/ng<S>n<H>. */
function headGeneric(p: SysPaths, subsys: string, head: string): string | undefined {
  const name = `ng${subsys}n${head}`;
  return exists(join(p.sys, 'class', 'nvme-subsystem', `nvme-subsys${subsys}`, name)) ? name : undefined;
}

function kernelController(p: SysPaths, name: string): KernelController {
  const dir = join(p.sys, 'class', 'nvme', name);
  const attr = (a: string): string | null => {
    const v = readText(join(dir, a));
    return v === null || v === '' ? null : v;
  };
  const transport = attr('transport');
  const entries = listDir(dir);
  const generic = new Map<string, string>();
  for (const e of entries) {
    const m = NS_GENERIC.exec(e);
    if (m) generic.set(m[1]!, e);
  }
  const namespaces: KernelNamespace[] = [];
  const seenHeads = new Set<string>();
  for (const e of entries) {
    const m = NS_DISK.exec(e);
    if (!m) continue;
    const head = m[3]!;
    const multipath = m[2] !== undefined;
    seenHeads.add(head);
    // The block device: the entry itself, or for a hidden path the subsystem's head disk nvme<S>n<H>.
    const disk = `nvme${m[1]}n${head}`;
    const diskDir = exists(join(p.sys, 'block', disk)) ? join(p.sys, 'block', disk) : null;
    const nsid = parseDec(readText(join(dir, e, 'nsid'))) ?? (diskDir ? parseDec(readText(join(diskDir, 'nsid'))) : null);
    const sectors = diskDir ? parseDec(readText(join(diskDir, 'size'))) : parseDec(readText(join(dir, e, 'size')));
    const lbaSize = parseDec(readText(join(diskDir ?? join(dir, e), 'queue', 'logical_block_size')));
    // The generic char device: the controller's ng<C>n<H>, or with multipath the head's ng<S>n<H> (under the subsystem).
    const ng = multipath ? headGeneric(p, m[1]!, head) : generic.get(head);
    namespaces.push({
      nsid,
      disk: diskDir ? disk : null,
      blockDevice: diskDir ? join(p.dev, disk) : null,
      genericDevice: ng ? join(p.dev, ng) : null,
      sizeBytes: sectors === null ? null : sectors * SYSFS_SECTOR_BYTES,
      lbaSize,
    });
  }
  // A generic char device without a block device (a namespace the block layer does not support, e.g. ZNS
  // without zoned support, or an unsupported format): list it too.
  for (const [head, ng] of generic) {
    if (seenHeads.has(head)) continue;
    namespaces.push({ nsid: null, disk: null, blockDevice: null, genericDevice: join(p.dev, ng), sizeBytes: null, lbaSize: null });
  }
  namespaces.sort((a, b) => (a.nsid ?? Infinity) - (b.nsid ?? Infinity));
  return {
    name,
    device: join(p.dev, name),
    transport,
    pciAddress: transport === 'pcie' ? attr('address') : null,
    model: attr('model'),
    serial: attr('serial'),
    firmware: attr('firmware_rev'),
    state: attr('state'),
    cntlid: parseDec(attr('cntlid')),
    subsysnqn: attr('subsysnqn'),
    namespaces,
  };
}

/** What kind of kernel NVMe device node a path is. */
export type NvmeNodeKind = 'controller' | 'namespace' | 'generic';

export interface NvmeNode {
  kind: NvmeNodeKind;
  /** The sysfs name of the device: nvme0, nvme0n1, ng0n1. */
  name: string;
}

const DEV_MAJOR_SHIFT = 0x100;
const DEV_MAJOR_MASK = 0xfff;
const DEV_MINOR_LO_MASK = 0xff;
const DEV_MINOR_HI_SHIFT = 0x1000;
const DEV_MINOR_HI_MASK = 0xfff00;

/** Where sysfs lists the device behind a device number. */
function devNumberDir(p: SysPaths, type: 'char' | 'block', major: number, minor: number): string {
  return join(p.sys, 'dev', type, `${major}:${minor}`);
}

/**
 * The kernel NVMe device `path` is (a controller's char device, a namespace's block device or its generic char
 * device), or a one-line reason why it is none: missing, not a device node, another driver's device, a partition.
 */
export function nvmeNodeOf(path: string, opts: SysPathOptions = {}): NvmeNode | { refused: string } {
  const p = sysPaths(opts);
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    return { refused: `${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}` };
  }
  const char = st.isCharacterDevice();
  if (!char && !st.isBlockDevice()) return { refused: `${path} is not a device node` };
  // glibc's dev_t: major in bits 19:8, minor in bits 7:0 and 31:20 (larger majors are not NVMe's).
  const rdev = st.rdev;
  const major = Math.floor(rdev / DEV_MAJOR_SHIFT) & DEV_MAJOR_MASK;
  const minor = (rdev & DEV_MINOR_LO_MASK) | (Math.floor(rdev / DEV_MINOR_HI_SHIFT) & DEV_MINOR_HI_MASK);
  const dir = devNumberDir(p, char ? 'char' : 'block', major, minor);
  const subsystem = linkName(join(dir, 'subsystem'));
  const name = basename(linkName(dir) ?? '');
  if (char && subsystem === 'nvme' && CTRL_NAME.test(name)) return { kind: 'controller', name };
  if (char && subsystem === 'nvme-generic' && NS_GENERIC.test(name)) return { kind: 'generic', name };
  if (!char && subsystem === 'block' && /^nvme\d+n\d+$/.test(name)) return { kind: 'namespace', name };
  if (!char && subsystem === 'block' && /^nvme\d+n\d+p\d+$/.test(name)) return { refused: `${path} is a partition (${name}), not an NVMe namespace or controller` };
  return { refused: `${path} is not an NVMe device (${char ? 'char' : 'block'} device ${major}:${minor}${subsystem ? `, ${subsystem}` : ''}${name ? ` ${name}` : ''})` };
}
