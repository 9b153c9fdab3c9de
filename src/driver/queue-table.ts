/**
 * The controller's one table of I/O queue pairs, by qid: the local ones this process drives (QueuePair) and the
 * remote ones it created over memory another party drives (RemoteQueuePair, src/driver/attach.ts). Both kinds
 * share a qid space, one creation path, one deletion path and one reset policy in controller.ts; they differ in
 * a few lines, each a `switch` on the row's kind:
 *
 *            creation done   deletion             controller reset          device removed
 *   local    activate        stop, drain, delete  suspend, then recreate    suspend
 *   remote   (state 'live')  state 'deleted'      lost (state, callback)    lost
 *
 * A qid stays taken while its Delete I/O SQ / CQ are in flight, so a new queue never collides with the old
 * one's deletion.
 */
import type { DmaBuffer } from '../mem/dma.js';
import type { QueueRings } from '../transport/transport.js';
import type { QueuePair } from './queue-pair.js';

/**
 * An I/O queue pair created on the controller over memory the caller supplied, and driven by someone else
 * (a client process of a daemon): this controller issued its creation and will issue its deletion, but
 * never writes its doorbells nor reads its CQ.
 */
export interface RemoteQueuePair {
  readonly qid: number;
  readonly entries: number;
  readonly sq: DmaBuffer;
  readonly cq: DmaBuffer;
  /** Doorbell stride in bytes (CAP.DSTRD). */
  readonly doorbellStride: number;
  /** 'live'; 'deleted' by deleteQueuePair or close; 'lost' when a controller reset or removal destroyed it. */
  state: 'live' | 'deleted' | 'lost';
}

/** A row for a queue pair this process drives. */
export interface LocalRow {
  readonly kind: 'local';
  readonly qid: number;
  readonly queue: QueuePair;
}

/** A row for a queue pair another party drives. */
export interface RemoteRow {
  readonly kind: 'remote';
  readonly qid: number;
  readonly queue: RemoteQueuePair;
}

/** One row of the table. */
export type QueueRow = LocalRow | RemoteRow;

/** The rings of a row, as the transport creates them. */
export function ringsOf(row: QueueRow): QueueRings {
  if (row.kind === 'local') return { qid: row.qid, entries: row.queue.entries, sqIova: row.queue.sqIova, cqIova: row.queue.cqIova };
  return { qid: row.qid, entries: row.queue.entries, sqIova: row.queue.sq.iova, cqIova: row.queue.cq.iova };
}

export class QueueTable {
  private readonly rows = new Map<number, QueueRow>();
  /** Qids whose Delete I/O SQ / CQ are in flight: not free yet. */
  private readonly deleting = new Set<number>();

  /** Whether `qid` is taken: by a row, or by a deletion in flight. */
  has(qid: number): boolean {
    return this.rows.has(qid) || this.deleting.has(qid);
  }

  /** The row of `qid`, if it has one. */
  get(qid: number): QueueRow | undefined {
    return this.rows.get(qid);
  }

  /** The row holding `queue` (the very object), if any. */
  rowOf(queue: QueuePair | RemoteQueuePair): QueueRow | undefined {
    const row = this.rows.get(queue.qid);
    return row !== undefined && row.queue === queue ? row : undefined;
  }

  add(row: QueueRow): void {
    if (this.has(row.qid)) throw new Error(`queue table: qid ${row.qid} is taken`);
    this.rows.set(row.qid, row);
  }

  remove(row: QueueRow): void {
    if (this.rows.get(row.qid) === row) this.rows.delete(row.qid);
  }

  /** Take `row` out of the table while its deletion runs: its qid stays taken until endDelete. */
  beginDelete(row: QueueRow): void {
    this.remove(row);
    this.deleting.add(row.qid);
  }

  endDelete(qid: number): void {
    this.deleting.delete(qid);
  }

  /** The lowest qid in 1..max that is not taken, or 0 when all are. */
  freeQid(max: number): number {
    for (let q = 1; q <= max; q++) if (!this.has(q)) return q;
    return 0;
  }

  /** Every row, by qid. */
  all(): QueueRow[] {
    return [...this.rows.values()].sort((a, b) => a.qid - b.qid);
  }

  /** Rows of local queue pairs, by qid. */
  localRows(): LocalRow[] {
    return this.all().filter((r): r is LocalRow => r.kind === 'local');
  }

  /** Rows of remote queue pairs, by qid. */
  remoteRows(): RemoteRow[] {
    return this.all().filter((r): r is RemoteRow => r.kind === 'remote');
  }
}
