/**
 * `homi list [--json] [--socket S]`: every NVMe device this machine has, as `nvme list` users expect, from three
 * places: the PCI NVMe functions (class 0x010802) with their driver and IOMMU group (src/pci/discover.ts), the
 * kernel's NVMe controllers and namespaces (/sys/class/nvme, /sys/block: src/pci/kernel-nvme.ts), and the
 * devices of homid when one answers on its socket ($HOMID_SOCKET or the default path; skipped with a note when
 * none runs). A machine with no NVMe device says so.
 */
import { join } from 'node:path';
import { HomidClient } from '../client/index.js';
import { IpcError, IpcErrorCode } from '../ipc/errors.js';
import type { DeviceInfo } from '../ipc/messages.js';
import { homidSocket } from './status.js';
import { listNvmeFunctions, PCI_CLASS_NVME, type PciFunction } from '../pci/discover.js';
import { listKernelNvme, type KernelController } from '../pci/kernel-nvme.js';
import { exists, sysPaths, type SysPathOptions } from '../pci/sysfs.js';
import { formatSize } from '../util/size.js';
import { renderTable } from '../util/table.js';

/** How long `list` waits for homid to answer before noting that it does not. */
export const HOMID_ANSWER_TIMEOUT_MS = 3000;

export interface HomidSection {
  socket: string;
  /** True when homid answered. */
  running: boolean;
  /** Its devices (empty when it does not run). */
  devices: DeviceInfo[];
  /** Why there are none: homid not running, or what went wrong asking it. */
  note: string | null;
}

export interface ListReport {
  /** NVMe PCI functions, with the homid device that drives each one (null when none does). */
  pci: Array<PciFunction & { homidDevice: string | null }>;
  controllers: KernelController[];
  homid: HomidSection;
  /** Plain statements of what is absent (no NVMe device, no kernel controller, ...). */
  notes: string[];
}

export interface ListOptions {
  socket?: string;
  /** sysfs / devfs roots (tests pass a fake tree). */
  sys?: SysPathOptions;
  homidTimeoutMs?: number;
}

/** Why asking homid failed, in words (the connect errno as `homi status` words it). */
function homidAbsence(socket: string, e: unknown, timeoutMs: number): string {
  if (e instanceof IpcError && e.code === IpcErrorCode.Timeout) return `homid did not answer on ${socket} within ${timeoutMs} ms`;
  const msg = e instanceof Error ? e.message : String(e);
  const errno = e instanceof IpcError && e.code === IpcErrorCode.ConnectFailed ? /failed: (E[A-Z]+)$/.exec(msg)?.[1] : undefined;
  if (errno === 'ENOENT' || errno === 'ECONNREFUSED') return `homid is not running at ${socket} (connect: ${errno})`;
  return `homid did not answer on ${socket}: ${msg}`;
}

/** homid's devices, or a note saying why there are none. Never throws; every request is bounded by `timeoutMs`. */
export async function homidSection(socket: string, timeoutMs = HOMID_ANSWER_TIMEOUT_MS): Promise<HomidSection> {
  try {
    const c = await HomidClient.connect(socket, { client: 'homi list', timeoutMs });
    try {
      return { socket, running: true, devices: await c.listDevices(), note: null };
    } finally {
      c.close();
    }
  } catch (e) {
    return { socket, running: false, devices: [], note: homidAbsence(socket, e, timeoutMs) };
  }
}

/** The PCI address a homid device URI names (pci:0000:01:00.0?mode=vfio), or null. */
function pciAddressOfUri(uri: string): string | null {
  return /^pci:([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])/i.exec(uri)?.[1]?.toLowerCase() ?? null;
}

export async function listReport(o: ListOptions = {}): Promise<ListReport> {
  const p = sysPaths(o.sys);
  const socket = homidSocket(o.socket);
  const homid = await homidSection(socket, o.homidTimeoutMs);
  const functions = listNvmeFunctions(p);
  const controllers = listKernelNvme(p);
  const byAddress = new Map<string, string>();
  for (const d of homid.devices) {
    const a = pciAddressOfUri(d.uri);
    if (a !== null) byAddress.set(a, d.device);
  }
  const notes: string[] = [];
  const pciDir = join(p.sys, 'bus', 'pci', 'devices');
  const classDir = join(p.sys, 'class', 'nvme');
  const noPci = `no PCI function of class 0x${PCI_CLASS_NVME.toString(16).padStart(6, '0')} (NVM Express) in ${pciDir}`;
  const noKernel = exists(classDir) ? `no kernel NVMe controller (${classDir} is empty)` : `no kernel NVMe controller (${classDir} does not exist: the nvme driver is not loaded)`;
  if (functions.length === 0 && controllers.length === 0) notes.push(`no NVMe device on this machine: ${noPci}, and ${noKernel}`);
  else if (functions.length === 0) notes.push(noPci);
  else if (controllers.length === 0) notes.push(noKernel);
  if (homid.note !== null) notes.push(homid.note);
  return { pci: functions.map((f) => ({ ...f, homidDevice: byAddress.get(f.address) ?? null })), controllers, homid, notes };
}

const dash = (v: string | number | null | undefined): string => (v === null || v === undefined || v === '' ? '-' : String(v));
const hex4 = (v: number): string => v.toString(16).padStart(4, '0');

export function formatList(r: ListReport): string {
  const out: string[] = [];
  if (r.pci.length > 0) {
    out.push(
      'PCI NVMe functions:',
      renderTable(
        ['address', 'vendor:device', 'driver', 'iommu group', 'numa', 'kernel controller', 'homid'],
        r.pci.map((f) => [f.address, `${hex4(f.vendorId)}:${hex4(f.deviceId)}`, dash(f.driver), dash(f.iommuGroup), dash(f.numaNode), dash(f.nvmeControllers.join(',')), dash(f.homidDevice)]),
      ),
      '',
    );
  }
  if (r.controllers.length > 0) {
    const rows: string[][] = [];
    for (const c of r.controllers) {
      const ctrl = [c.name, dash(c.serial), dash(c.model), dash(c.firmware)];
      const tail = [dash(c.state), dash(c.pciAddress ?? c.transport)];
      if (c.namespaces.length === 0) rows.push(['-', '-', ...ctrl, '-', '-', '-', ...tail]);
      for (const n of c.namespaces) {
        rows.push([dash(n.blockDevice), dash(n.genericDevice), ...ctrl, dash(n.nsid), n.sizeBytes === null ? '-' : formatSize(n.sizeBytes), dash(n.lbaSize), ...tail]);
      }
    }
    out.push('Kernel NVMe controllers and namespaces:', renderTable(['node', 'generic', 'controller', 'sn', 'model', 'fw', 'nsid', 'size', 'lba size', 'state', 'pci'], rows), '');
  }
  // What is absent, in words (the first line of all on a machine without NVMe).
  const absent = r.notes.filter((n) => n !== r.homid.note);
  if (absent.length > 0) out.push(...absent.map((n) => n.charAt(0).toUpperCase() + n.slice(1) + '.'), '');
  if (!r.homid.running) {
    out.push(`${r.homid.note ?? 'homid did not answer'}.`);
  } else {
    out.push(
      `homid (${r.homid.socket}):`,
      r.homid.devices.length === 0
        ? 'no devices'
        : renderTable(
            ['device', 'state', 'model', 'sn', 'namespaces', 'queue pairs', 'uri'],
            r.homid.devices.map((d) => [
              d.device,
              d.state + (d.error ? ` (${d.error})` : ''),
              dash(d.model),
              dash(d.serial),
              d.namespaces.map((n) => `${n.nsid}: ${formatSize(n.size)}`).join(', ') || '-',
              `${d.queuePairsInUse}/${d.maxQueuePairs}`,
              d.uri,
            ]),
          ),
    );
  }
  return out.join('\n');
}

export async function listCommand(o: { json?: boolean; socket?: string }): Promise<number> {
  const r = await listReport(o.socket === undefined ? {} : { socket: o.socket });
  process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${formatList(r)}\n`);
  return 0;
}
