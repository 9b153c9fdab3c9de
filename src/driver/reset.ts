/**
 * Controller reset (NVMe Base 2.0 section 3.7.2, controller level reset initiated by the host), in two parts:
 * failing everything outstanding (synchronous, so nothing can slip in between), then re-enabling the controller
 * and recreating every I/O queue pair with its old qid and size so that callers keep their QueuePair objects.
 */
import { ControllerResetError, type CommandContext } from './errors.js';
import type { QueuePair } from './queue-pair.js';
import { STATUS_ABORTED_BY_RESET } from './status.js';

/** What the reset needs from the controller. */
export interface ResetHost {
  readonly adminQueue: QueuePair;
  /** Live I/O queue pairs by qid (entries are removed for queues that cannot be recreated). */
  readonly ioQueues: Map<number, QueuePair>;
  /** The I/O queue count asked for at open. */
  readonly requestedIoQueues: number;
  log(msg: string): void;
  /** Disable, program the admin queue, enable, identify, negotiate `wanted` queues; returns the count granted. */
  enableAndIdentify(wanted: number): Promise<number>;
  /** Create I/O CQ + SQ for a queue pair whose memory is already initialized. */
  createOnController(qp: QueuePair): Promise<void>;
}

/**
 * Fail every outstanding command on every queue: fast-path commands complete with STATUS_ABORTED_BY_RESET
 * through each queue's next poll(); exec()/admin() callers reject with ControllerResetError. Returns the count.
 */
export function failOutstandingForReset(host: ResetHost, reason: string): number {
  const makeErr = (ctx: CommandContext): Error => new ControllerResetError(ctx, reason);
  let lost = host.adminQueue._suspend(STATUS_ABORTED_BY_RESET, makeErr);
  for (const qp of host.ioQueues.values()) lost += qp._suspend(STATUS_ABORTED_BY_RESET, makeErr);
  return lost;
}

/** Bring the controller back and recreate the I/O queue pairs (same qid, same entries, same objects). */
export async function reinitializeAfterReset(host: ResetHost, reason: string): Promise<void> {
  const makeErr = (ctx: CommandContext): Error => new ControllerResetError(ctx, reason);
  const qps = [...host.ioQueues.values()].sort((a, b) => a.qid - b.qid);
  const wanted = Math.max(host.requestedIoQueues, ...qps.map((q) => q.qid));
  const granted = await host.enableAndIdentify(wanted);
  for (const qp of qps) {
    if (qp.qid > granted) {
      host.ioQueues.delete(qp.qid);
      qp._delete(STATUS_ABORTED_BY_RESET, makeErr);
      host.log(`after the reset the controller grants only ${granted} queue pairs: queue ${qp.qid} dropped`);
      continue;
    }
    qp._reinit();
    await host.createOnController(qp);
    qp._activate();
  }
}
