/**
 * GPU leases (issue 11): a raw queue pair handed to a GPU. CUDA kernels build the SQEs, store the doorbells and
 * reap the CQ themselves; homid provisions and reclaims the queue pair and is off the data path. The client's
 * GPU layer maps the granted windows and registers them with its GPU context; homid does neither.
 *
 * The queue pair is an exported raw one (exported.ts: the same RawQueueGrant and descriptors as a raw lease),
 * so it needs a transport that exports memory another process can map: PCIe (vfio or uio) or the embedded
 * controller in memfd mode. Any other transport is refused with 'gpu-unsupported'.
 *
 * A software controller that sleeps when idle (the embedded controller) is woken by a futex wake after a
 * doorbell store; a GPU thread only stores, it cannot wake a CPU thread. The lease therefore holds the
 * controller awake (Transport.holdAwake: it busy-polls its doorbells) from its creation to its revoke or release,
 * whichever comes first; the hold is let go exactly once, also when creation fails midway. Hardware never
 * sleeps and needs no hold. The grant says which: `busyPoll` (held awake) and `device` ('emu' or 'pcie').
 *
 * Reclaim (the client closed the lease or went away) is a raw lease's: the hold is let go, Delete I/O SQ (the
 * controller aborts what is outstanding), Delete I/O CQ, and homid releases its mapping and descriptors of the
 * memory. A GPU's kernels still in flight may keep storing to their (then stale) doorbell and queue mappings:
 * the controller no longer reads them. The memory stays mapped in the client's process (and registered with its
 * GPU context) until that context is gone, so nothing else reuses it: a memfd's pages live while any mapping
 * does, and the controller hands out fresh segments to the next lease.
 */
import type { RawQueueGrant } from '../../ipc/raw-grant.js';
import type { GpuDeviceKind } from '../../ipc/messages.js';
import type { Transport } from '../../transport/transport.js';
import { HomidError } from '../errors.js';
import { exportedOps, provisionExported } from './exported.js';
import { leaseBase, type LeaseBase, type LeaseContext, type LeaseOps } from './lease.js';

/** Names the exported memory of a GPU lease (memfd names, for diagnostics). */
const GPU_MEMORY_LABEL = 'homid-gpu';
/** Transport kinds (Transport.kind) by the controller kind a GPU lease names. */
const EMU_TRANSPORT = 'emu';
const PCIE_TRANSPORT_PREFIX = 'pcie';

export interface GpuLease extends LeaseBase, LeaseOps {
  readonly kind: 'gpu';
  readonly grant: RawQueueGrant;
  /** The grant's descriptors (homid's: kept open until the lease is reclaimed). */
  readonly fds: readonly number[];
  /** Whether the lease took an awake hold on its controller (a software controller that sleeps when idle). */
  readonly busyPoll: boolean;
  /** The kind of controller behind the queue pair. */
  readonly deviceKind: GpuDeviceKind;
  /** Whether the lease holds its controller awake now (from creation until its revoke or release). */
  holdsAwake(): boolean;
}

/** The controller kind of `t`, or null for a transport a GPU lease does not know. */
function deviceKindOf(t: Transport): GpuDeviceKind | null {
  if (t.kind === EMU_TRANSPORT) return 'emu';
  if (t.kind.startsWith(PCIE_TRANSPORT_PREFIX)) return 'pcie';
  return null;
}

/**
 * Take `t`'s awake hold (where it has one) and return its release, callable any number of times: the hold is
 * let go once.
 */
function awakeHold(t: Transport): { held: boolean; letGo: () => void; holding: () => boolean } {
  let release = t.holdAwake?.() ?? null;
  const held = release !== null;
  return {
    held,
    letGo: () => {
      const r = release;
      release = null;
      r?.();
    },
    holding: () => release !== null,
  };
}

/**
 * Make a GPU lease (the queue pair is created under ctx.serial, the controller held awake first). Refuses a
 * transport that cannot export queue memory ('gpu-unsupported'); failures to get memory become typed refusals,
 * with the hold let go.
 */
export async function createGpuLease(ctx: LeaseContext): Promise<GpuLease> {
  const t = ctx.dev.transport;
  const name = ctx.dev.config.name;
  const x = t.queueExporter?.() ?? null;
  const deviceKind = deviceKindOf(t);
  if (x === null || deviceKind === null) {
    throw new HomidError(
      'gpu-unsupported',
      `device '${name}' cannot give a GPU a queue pair: its transport (${t.kind}) exports no queue memory another process can map; ` +
        `GPU leases need a PCIe controller (mode=vfio or uio) or the embedded controller with memfd shared memory`,
    );
  }
  return ctx.serial(async (): Promise<GpuLease> => {
    const hold = awakeHold(t);
    try {
      const p = await provisionExported(ctx, x, GPU_MEMORY_LABEL);
      const { grant, fds } = p;
      const ops = exportedOps(p, { grant: { mode: 'gpu', grant, busyPoll: hold.held, device: deviceKind }, fds });
      return {
        ...leaseBase(ctx, grant.qid),
        ...ops,
        kind: 'gpu',
        grant,
        fds,
        busyPoll: hold.held,
        deviceKind,
        holdsAwake: hold.holding,
        // the GPU's stores go unanswered from here on; its queues are deleted next
        revoke: () => {
          hold.letGo();
          ops.revoke();
        },
        release: () => {
          hold.letGo();
          ops.release();
        },
      };
    } catch (e) {
      hold.letGo();
      throw e;
    }
  });
}
