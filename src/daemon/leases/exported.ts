/**
 * Exported queue pairs, the part raw and gpu leases share: the queue pair is provisioned over the transport's
 * QueueExporter (driver/attach.ts provisionQueuePair: fresh memory another process maps, Create I/O CQ / SQ),
 * failures to get memory become typed refusals, and reclaim is the provisioned pair's own (Delete I/O SQ: the
 * controller aborts what is outstanding; Delete I/O CQ; release the memory). The client drives the queue in its
 * own process, so homid counts nothing and a controller reset loses the queue for good.
 */
import { provisionQueuePair, type ProvisionedQueuePair } from '../../driver/attach.js';
import type { QueueExporter } from '../../transport/transport.js';
import { refusalOf, type LeaseContext, type LeaseOps, type LeaseWire } from './lease.js';

/**
 * Provision the queue pair of lease `ctx` over `exporter` (the caller runs it under ctx.serial); its memory is
 * named `${label}-${client}-${lease}` for diagnostics. Failures to get memory become typed refusals.
 */
export async function provisionExported(ctx: LeaseContext, exporter: QueueExporter, label: string): Promise<ProvisionedQueuePair> {
  try {
    return await provisionQueuePair(ctx.dev.controller, exporter, { entries: ctx.depth, nsid: ctx.nsid, dataBytes: ctx.dataBytes, name: `${label}-${ctx.client}-${ctx.id}` });
  } catch (e) {
    throw refusalOf(e, ctx.dev.config.name);
  }
}

/** The LeaseOps of an exported queue pair `p` that the client receives as `wire`. */
export function exportedOps(p: ProvisionedQueuePair, wire: LeaseWire): LeaseOps {
  return {
    lostWithController: true,
    start: () => undefined,
    // the client may still be running: the controller stops using its queue, the client's mappings just go stale
    revoke: () => undefined,
    // Delete I/O SQ (the controller aborts what is outstanding), Delete I/O CQ, then the memory is released
    deleteQueues: () => p.reclaim(),
    release: () => undefined,
    io: () => null,
    wire: () => wire,
  };
}
