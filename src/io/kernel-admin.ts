/**
 * Admin commands through the kernel's NVMe driver: NVME_IOCTL_ADMIN_CMD on a controller's char device
 * (/dev/nvmeX; a namespace's /dev/nvmeXnY or /dev/ngXnY reaches the same admin queue). What `homi identify`,
 * `smart-log` and `error-log` use on a controller the kernel drives, where the user-space driver cannot take
 * over the device. The kernel builds the PRPs and picks the command id; it needs CAP_SYS_ADMIN for every admin
 * command but Identify.
 */
import * as fs from 'node:fs';
import { Cns } from '../nvme/opcodes.js';
import * as cmd from '../nvme/commands.js';
import { decodeIdentifyController, decodeIdentifyNamespace, IDENTIFY_DATA_SIZE, type IdentifyController, type IdentifyNamespace } from '../nvme/identify.js';
import { decodeActiveNamespaceList, NSID_BROADCAST, NSID_LIST_MAX_ENTRIES } from '../nvme/namespace-list.js';
import { opcodeName } from '../nvme/opcodes.js';
import { statusFieldName } from '../nvme/status.js';
import type { Sqe } from '../nvme/sqe.js';
import { nvmeAdminCommand } from '../sys/nvme-ioctl.js';
import { OsError } from '../sys/libc.js';
import { listKernelNvme, nvmeNodeOf, type NvmeNode } from '../pci/kernel-nvme.js';
import type { SysPathOptions } from '../pci/sysfs.js';
import type { AdminCommandChannel } from '../driver/sriov.js';

/** A path that is no NVMe device the kernel drives (missing, a file, another driver's device, a partition). */
export class NotNvmeDeviceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotNvmeDeviceError';
  }
}

/** An admin command the controller completed with an error status. */
export class KernelAdminStatusError extends Error {
  constructor(
    readonly path: string,
    readonly command: string,
    readonly status: number,
  ) {
    super(`${path}: ${command} failed: ${statusFieldName(status)} (status field 0x${status.toString(16).padStart(4, '0')})`);
    this.name = 'KernelAdminStatusError';
  }
}

/** Admin command timeout passed to the kernel (ms). */
export const KERNEL_ADMIN_TIMEOUT_MS = 10_000;

export class KernelNvmeAdmin {
  private closed = false;

  private constructor(
    readonly path: string,
    readonly node: NvmeNode,
    private readonly fd: number,
  ) {}

  /** Open `path` for admin passthrough; NotNvmeDeviceError unless it is a kernel NVMe device node. */
  static open(path: string, sys: SysPathOptions = {}): KernelNvmeAdmin {
    const node = nvmeNodeOf(path, sys);
    if ('refused' in node) {
      const have = listKernelNvme(sys).map((c) => c.device);
      const present = have.length === 0 ? 'this machine has no NVMe controller the kernel drives' : `present: ${have.join(', ')}`;
      throw new NotNvmeDeviceError(`${node.refused}: give a controller /dev/nvmeX (or a namespace /dev/nvmeXnY, /dev/ngXnY); ${present}`);
    }
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDONLY);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'error';
      throw new Error(`${path}: cannot open the ${node.kind === 'controller' ? 'controller' : 'namespace'} device (${code})${code === 'EACCES' ? ': run as root' : ''}`);
    }
    return new KernelNvmeAdmin(path, node, fd);
  }

  /**
   * Run one admin command reading `bytes` bytes (or writing `writeData` to the controller); an error status
   * throws KernelAdminStatusError.
   */
  exec(sqe: Sqe, bytes: number, writeData?: Uint8Array): { result: number; data: Uint8Array } {
    if (this.closed) throw new Error(`${this.path}: closed`);
    const what = opcodeName(sqe.opcode, true);
    let r;
    try {
      r = nvmeAdminCommand(
        this.fd,
        { opcode: sqe.opcode, nsid: sqe.nsid ?? 0, cdw10: sqe.cdw10, cdw11: sqe.cdw11, cdw12: sqe.cdw12, cdw13: sqe.cdw13, cdw14: sqe.cdw14, cdw15: sqe.cdw15, timeoutMs: KERNEL_ADMIN_TIMEOUT_MS },
        bytes,
        writeData,
      );
    } catch (e) {
      if (e instanceof OsError && e.code === 'ENOTTY') throw new NotNvmeDeviceError(`${this.path}: the kernel refused NVME_IOCTL_ADMIN_CMD (ENOTTY): not an NVMe device`);
      if (e instanceof OsError && (e.code === 'EACCES' || e.code === 'EPERM')) throw new Error(`${this.path}: ${what} through the kernel needs CAP_SYS_ADMIN (${e.code}): run as root`);
      if (e instanceof OsError) throw new Error(`${this.path}: ${what} through NVME_IOCTL_ADMIN_CMD failed: ${e.code} (errno ${e.errno})`);
      throw e;
    }
    if (r.status !== 0) throw new KernelAdminStatusError(this.path, what, r.status);
    return r;
  }

  identifyController(): IdentifyController {
    return decodeIdentifyController(this.exec(cmd.identify(Cns.Controller, 0, 0), IDENTIFY_DATA_SIZE).data);
  }

  identifyNamespace(nsid: number): IdentifyNamespace {
    return decodeIdentifyNamespace(this.exec(cmd.identify(Cns.Namespace, nsid, 0), IDENTIFY_DATA_SIZE).data);
  }

  /** All active NSIDs (Identify CNS 02h, following the list past 1024 entries). */
  activeNamespaceIds(): number[] {
    const all: number[] = [];
    let after = 0;
    for (;;) {
      const ids = decodeActiveNamespaceList(this.exec(cmd.identify(Cns.ActiveNamespaceList, after, 0), IDENTIFY_DATA_SIZE).data);
      all.push(...ids);
      if (ids.length < NSID_LIST_MAX_ENTRIES) return all;
      after = ids[ids.length - 1]!;
    }
  }

  /** `bytes` (a multiple of 4) of log page `lid`. */
  getLogPage(lid: number, bytes: number, nsid = NSID_BROADCAST): Uint8Array {
    return this.exec(cmd.getLogPage(lid, bytes, nsid, 0), bytes).data;
  }

  /** Get Features (current value): completion DW0. */
  getFeatures(fid: number, cdw11 = 0, nsid = 0): number {
    return this.exec(cmd.getFeatures(fid, { nsid, cdw11 }), 0).result;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

/** The kernel's admin passthrough of a controller it drives, as the driver core's AdminCommandChannel (SR-IOV management). */
export function kernelAdminChannel(k: KernelNvmeAdmin): AdminCommandChannel {
  return {
    description: `${k.path} (kernel admin passthrough)`,
    // The executor runs exec synchronously; a throw becomes the rejection.
    adminCommand: (sqe, data = {}) => new Promise((resolve) => resolve(k.exec(sqe, data.read ?? 0, data.write))),
  };
}
