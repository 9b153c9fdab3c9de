/**
 * GPU queue pairs from homid: GPU leases (HomidClient.openGpuQueue) registered with this process's GPU, as a
 * target for the initiator kernels. homid holds a software controller awake for each lease (busyPoll) and
 * reclaims the queues when this client goes away, whether or not its kernels were still running.
 */
import type { GpuQueueLease, HomidClient } from '../client/index.js';
import type { GpuDevice } from './device.js';
import type { GpuTarget } from './options.js';
import { GpuQueueSet, dataBytesFor } from './queues.js';

export interface HomidGpuOptions {
  device: string;
  nsid?: number;
  nqueues: number;
  entries: number;
  bs: number;
  write?: boolean;
}

/** Open `nqueues` GPU leases on homid's `device` and make them a GpuTarget (payloads in host memory). */
export async function openHomidTarget(gpu: GpuDevice, client: HomidClient, o: HomidGpuOptions): Promise<GpuTarget & { leases: GpuQueueLease[] }> {
  const leases: GpuQueueLease[] = [];
  let set: GpuQueueSet | null = null;
  // Give the queues back only once this process's kernels are done with them (the context synchronized): homid
  // deletes them at once. A process that dies instead loses its context first, and homid reclaims after.
  const close = async (): Promise<void> => {
    try {
      gpu.synchronize();
    } catch {
      // a context in error has no running kernels either
    }
    set?.close();
    for (const l of leases) await l.close().catch(() => undefined);
  };
  try {
    for (let i = 0; i < o.nqueues; i++) {
      leases.push(await client.openGpuQueue({ device: o.device, nsid: o.nsid ?? 1, depth: o.entries, dataBytes: dataBytesFor(o.entries, o.bs), write: o.write ?? true }));
    }
    const io = leases[0]!.device === 'pcie';
    set = new GpuQueueSet(gpu, { slotBytes: o.bs, placement: 'host', closeFds: false, doorbellsAreIoMemory: io });
    for (const l of leases) set.add(l.grant, l.fds);
    const table = set.publish();
    const g = leases[0]!.grant;
    const s = set;
    return {
      kind: 'emu',
      description: `homid device '${o.device}' (${leases.length} GPU lease${leases.length > 1 ? 's' : ''}${leases[0]!.busyPoll ? ', controller held awake' : ''})`,
      table,
      nqueues: leases.length,
      entries: o.entries,
      blockSize: g.blockSize,
      blocks: g.blocks,
      placement: 'host (pinned, read by GPU threads in place)',
      counters: () => ({}),
      broken: () => s.queues.some((_, i) => s.readState(i).broken),
      close,
      leases,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
