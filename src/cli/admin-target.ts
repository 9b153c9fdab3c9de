/**
 * What `homi identify`, `smart-log` and `error-log` run their admin commands on: a device URI (emu:, pci:),
 * brought up by the user-space driver core, or a kernel NVMe device node (/dev/nvmeX), through the kernel's
 * admin passthrough. Both answer the same questions.
 */
import { withController } from '../device/controller.js';
import type { Controller } from '../driver/controller.js';
import { KernelNvmeAdmin } from '../io/kernel-admin.js';
import type { IdentifyController, IdentifyNamespace } from '../nvme/identify.js';
import { decodeNumberOfQueues } from '../nvme/commands.js';
import { FeatureId } from '../nvme/opcodes.js';
import { NSID_BROADCAST } from '../nvme/namespace-list.js';
import type { Transport } from '../transport/transport.js';

/** Facts beyond the admin commands' data: the ones a path can see (null where it cannot). */
export interface TargetFacts {
  /** NVMe version from the VS register, or null where it is not visible (the kernel path: see Identify's VER). */
  version: string | null;
  /** I/O queue pairs the controller granted (Number of Queues). */
  maxQueuePairs: number | null;
  /** CAP.MQES + 1: not visible through the kernel. */
  maxQueueEntries: number | null;
  /** CAP.MPSMIN in bytes, the unit of MDTS: not visible through the kernel. */
  minPageSize: number | null;
}

export interface AdminTarget {
  /** The URI or device path, as given. */
  readonly name: string;
  /** How the commands reach the controller: the transport's kind, or `kernel` (NVME_IOCTL_ADMIN_CMD). */
  readonly transport: string;
  identifyController(): Promise<IdentifyController>;
  identifyNamespace(nsid: number): Promise<IdentifyNamespace>;
  activeNamespaceIds(): Promise<number[]>;
  /** `bytes` (a multiple of 4) of log page `lid` for `nsid` (default: the controller, FFFFFFFFh). */
  getLogPage(lid: number, bytes: number, nsid?: number): Promise<Uint8Array>;
  facts(): Promise<TargetFacts>;
}

/** Ask for every I/O queue the Number of Queues feature can express: the report shows what is granted. */
const ALL_IO_QUEUES = 0xffff;

/** True when `arg` names a device node (an absolute path) rather than a device URI. */
export function isDevicePath(arg: string): boolean {
  return arg.startsWith('/');
}

/** An AdminTarget over a live controller of the user-space driver core. */
export function controllerTarget(name: string, c: Controller, t: Transport): AdminTarget {
  return {
    name,
    transport: t.kind,
    identifyController: () => c.identifyController(),
    identifyNamespace: (nsid) => c.identifyNamespace(nsid),
    activeNamespaceIds: () => c.activeNamespaceIds(),
    getLogPage: (lid, bytes, nsid = NSID_BROADCAST) => c.getLogPage(lid, bytes, nsid),
    facts: () =>
      Promise.resolve({
        version: `${c.version.major}.${c.version.minor}.${c.version.tertiary}`,
        maxQueuePairs: c.maxIoQueuePairs,
        maxQueueEntries: c.cap.maxQueueEntries,
        minPageSize: c.cap.minPageSize,
      }),
  };
}

/** An AdminTarget over the kernel's admin passthrough. */
export function kernelTarget(k: KernelNvmeAdmin): AdminTarget {
  return {
    name: k.path,
    transport: 'kernel',
    identifyController: async () => k.identifyController(),
    identifyNamespace: async (nsid) => k.identifyNamespace(nsid),
    activeNamespaceIds: async () => k.activeNamespaceIds(),
    getLogPage: async (lid, bytes, nsid = NSID_BROADCAST) => k.getLogPage(lid, bytes, nsid),
    facts: async () => {
      // The queues the kernel's driver was granted (Get Features reads the current value; nothing is changed).
      const { sqCount, cqCount } = decodeNumberOfQueues(k.getFeatures(FeatureId.NumberOfQueues));
      return { version: null, maxQueuePairs: Math.min(sqCount, cqCount), maxQueueEntries: null, minPageSize: null };
    },
  };
}

/** Open `arg` (a device URI or a kernel NVMe device node), run `fn` on it, and close it whatever `fn` does. */
export async function withAdminTarget<T>(arg: string, fn: (t: AdminTarget) => Promise<T>): Promise<T> {
  if (isDevicePath(arg)) {
    const k = KernelNvmeAdmin.open(arg);
    try {
      return await fn(kernelTarget(k));
    } finally {
      k.close();
    }
  }
  return withController(arg, { ioQueues: ALL_IO_QUEUES }, ({ controller, transport }) => fn(controllerTarget(arg, controller, transport)));
}
