/**
 * Raw leases: the client drives an I/O queue pair itself.
 *
 * Exported (every transport that can export queue memory: a memfd-mode embedded controller, PCIe through vfio
 * or uio): the queues live in memory another process maps (driver/attach.ts provisionQueuePair); the client
 * gets a RawQueueGrant (src/ipc/raw-grant.ts) and its descriptors, and homid is off the data path.
 * Local (an embedded controller over SharedArrayBuffers: in-process callers only): homid's own QueuePair, which
 * the caller uses directly.
 */
import type { QueuePair } from '../../driver/queue-pair.js';
import type { RawQueueGrant } from '../../ipc/raw-grant.js';
import { exportedOps, provisionExported } from './exported.js';
import { leaseBase, type LeaseBase, type LeaseContext, type LeaseOps } from './lease.js';

interface RawLeaseCommon extends LeaseBase, LeaseOps {
  readonly kind: 'raw';
}

/** Queue memory exported to the client's process. */
export interface ExportedRawLease extends RawLeaseCommon {
  readonly exported: true;
  readonly grant: RawQueueGrant;
  /** The grant's descriptors (homid's: kept open until the lease is reclaimed). */
  readonly fds: readonly number[];
  readonly qp: null;
}

/** homid's own QueuePair, for a caller in homid's process. */
export interface LocalRawLease extends RawLeaseCommon {
  readonly exported: false;
  readonly grant: null;
  readonly fds: readonly number[];
  readonly qp: QueuePair;
}

export type RawLease = ExportedRawLease | LocalRawLease;

/** Make a raw lease (the queue is created under ctx.serial). Failures to get memory become typed refusals. */
export async function createRawLease(ctx: LeaseContext): Promise<RawLease> {
  const c = ctx.dev.controller;
  const x = ctx.dev.transport.queueExporter?.() ?? null;
  return ctx.serial(async (): Promise<RawLease> => {
    if (x === null) {
      const qp = await c.createQueuePair({ entries: ctx.depth, timeoutMs: 0 });
      return {
        ...leaseBase(ctx, qp.qid),
        kind: 'raw',
        exported: false,
        grant: null,
        fds: [],
        qp,
        lostWithController: false,
        start: () => undefined,
        revoke: () => undefined,
        deleteQueues: () => c.deleteQueuePair(qp),
        release: () => undefined,
        io: () => ({ submitted: qp.stats.submitted, completed: qp.stats.completed }),
        wire: () => null,
      };
    }
    const p = await provisionExported(ctx, x, 'homid');
    const { grant, fds } = p;
    return { ...leaseBase(ctx, grant.qid), kind: 'raw', exported: true, grant, fds, qp: null, ...exportedOps(p, { grant: { mode: 'raw', grant }, fds }) };
  });
}
