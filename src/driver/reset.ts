/**
 * Controller reset (NVMe Base 2.0 section 3.7.2, controller level reset initiated by the host), in two parts:
 * taking every queue down (synchronous, so nothing can slip in between), then re-enabling the controller and
 * recreating every local I/O queue pair with its old qid and size so that callers keep their QueuePair objects.
 * Remote queue pairs (driven by another process) are lost, not recreated: their driver must ask again.
 */
import { ControllerResetError, type CommandContext } from './errors.js';
import type { QueuePair } from './queue-pair.js';
import type { LocalRow, QueueRow, QueueTable, RemoteRow } from './queue-table.js';
import { STATUS_ABORTED_BY_RESET } from './status.js';

/** What the reset needs from the controller. */
export interface ResetHost {
  /** The admin queue (null once the controller closed or failed to open). */
  readonly adminQueue: QueuePair | null;
  /** The controller's queue table (rows are removed for queues that are lost or cannot be recreated). */
  readonly table: QueueTable;
  /** The I/O queue count asked for at open. */
  readonly requestedIoQueues: number;
  log(msg: string): void;
  /** Disable, program the admin queue, enable, identify, negotiate `wanted` queues; returns the count granted. */
  enableAndIdentify(wanted: number): Promise<number>;
  /** Create a row's queues on the controller (its memory is already initialized). */
  createIoQueues(row: QueueRow): Promise<void>;
  /** A remote row is gone with the controller's state: mark it lost, take it out of the table, tell its owner. */
  lose(row: RemoteRow, reason: string): void;
}

/**
 * Take every queue down: remote rows are lost; every outstanding command of the admin and the local queues
 * completes with `status` through its queue's next poll(), and exec()/admin() callers reject with
 * `makeError(ctx)`. Returns the count of commands failed.
 */
export function takeQueuesDown(host: ResetHost, status: number, makeError: (ctx: CommandContext) => Error, reason: string): number {
  for (const row of host.table.remoteRows()) host.lose(row, reason);
  let lost = host.adminQueue?._suspend(status, makeError) ?? 0;
  for (const row of host.table.localRows()) lost += row.queue._suspend(status, makeError);
  return lost;
}

/** takeQueuesDown for a reset: STATUS_ABORTED_BY_RESET, ControllerResetError. */
export function failOutstandingForReset(host: ResetHost, reason: string): number {
  return takeQueuesDown(host, STATUS_ABORTED_BY_RESET, (ctx) => new ControllerResetError(ctx, reason), `controller reset (${reason})`);
}

/** Bring the controller back and recreate the local I/O queue pairs (same qid, same entries, same objects). */
export async function reinitializeAfterReset(host: ResetHost, reason: string): Promise<void> {
  const makeErr = (ctx: CommandContext): Error => new ControllerResetError(ctx, reason);
  const rows: LocalRow[] = host.table.localRows();
  const wanted = Math.max(host.requestedIoQueues, ...rows.map((r) => r.qid));
  const granted = await host.enableAndIdentify(wanted);
  for (const row of rows) {
    const qp = row.queue;
    if (row.qid > granted) {
      host.table.remove(row);
      qp._delete(STATUS_ABORTED_BY_RESET, makeErr);
      host.log(`after the reset the controller grants only ${granted} queue pairs: queue ${qp.qid} dropped`);
      continue;
    }
    qp._reinit();
    await host.createIoQueues(row);
    qp._activate();
  }
}
