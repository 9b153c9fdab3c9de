/**
 * The hardware side of a mediated queue in direct-completion mode (mediated-ring.ts): homid writes checked
 * SQEs into a hardware SQ only it can reach and rings the SQ tail doorbell; the controller posts completions
 * to a CQ the client maps and reaps itself. homid never reads those completions on the fast path. It learns
 * how far the client consumed from the ring header, checks that claim against the CQ (the claimed entries
 * must carry the phase of a posted completion and be no more than the commands in flight) and passes the
 * head on to the CQ head doorbell.
 *
 * Flow control without reading CQEs: every command in flight holds at most one SQ slot until the controller
 * fetched it, and a completion exists only for a fetched command, so keeping `outstanding` below the queue
 * size keeps the SQ tail from overrunning the controller's head.
 *
 * The ring mechanics are src/nvme/ring.ts: an SqWriter for the hardware SQ (its head is the bound that count
 * gives) and a CqReader that is never used to reap here, only to check and follow the client's claims.
 */
import type { RemoteQueuePair } from '../driver/controller.js';
import { CQE_CID_MASK, CQE_DWORDS, CQE_DW_STATUS } from '../nvme/cqe.js';
import { CqReader, SqWriter } from '../nvme/ring.js';
import { SQE_DWORDS, writeIoSqe } from '../nvme/sqe.js';
import type { QueueNotifier } from '../transport/transport.js';

/** Where the hardware queue's doorbells are rung: the transport (its notifier for the queue's qid). */
export interface DirectHost {
  notifier(qid: number): QueueNotifier;
}

export class DirectHwQueue {
  readonly qid: number;
  readonly entries: number;
  /** Most commands in flight at once (entries - 1). */
  readonly capacity: number;
  readonly stats = { submitted: 0, acknowledged: 0, badHeads: 0 };
  private readonly sq: SqWriter;
  /** The CQ as far as the client's verified claims took it. */
  private readonly cq: CqReader;
  private readonly notify: QueueNotifier;
  /** Commands submitted whose completion the client has not acknowledged. */
  outstanding = 0;

  constructor(
    host: DirectHost,
    readonly remote: RemoteQueuePair,
  ) {
    this.qid = remote.qid;
    this.entries = remote.entries;
    this.capacity = remote.entries - 1;
    this.sq = new SqWriter(new Uint32Array(remote.sq.bytes.buffer, remote.sq.bytes.byteOffset, remote.entries * SQE_DWORDS), remote.entries);
    this.cq = new CqReader(new Uint32Array(remote.cq.bytes.buffer, remote.cq.bytes.byteOffset, remote.entries * CQE_DWORDS), remote.entries);
    this.notify = host.notifier(remote.qid);
  }

  get live(): boolean {
    return this.remote.state === 'live';
  }

  get full(): boolean {
    return this.outstanding >= this.capacity;
  }

  /** Write one checked read/write/flush SQE with the client's CID. The caller checked `full`. */
  submit(cdw0: number, nsid: number, slba: number, nlb: number, prp1: number, prp2: number): void {
    const sq = this.sq;
    // the controller has fetched every slot but the last `outstanding` ones (at most): that is the head to respect
    const head = sq.tail - this.outstanding;
    sq.head = head < 0 ? head + this.entries : head;
    const at = sq.claim();
    if (at < 0) throw new RangeError(`hardware queue ${this.qid} is full (${this.outstanding} in flight): check full before submit`);
    writeIoSqe(sq.ring, at, cdw0, nsid, slba, nlb, prp1, prp2);
    this.outstanding++;
    this.stats.submitted++;
  }

  /** Publish the SQEs written since the last ring. */
  ring(): void {
    const tail = this.sq.publish();
    if (tail >= 0) this.notify.sqTail(tail);
  }

  /**
   * The client says it consumed the CQ up to `head` (exclusive). Accept it only when every entry in between
   * carries the phase of a posted completion and there are no more of them than commands in flight; then
   * ring the CQ head doorbell. Returns the completions acknowledged (0 for a stale or bad claim).
   * `cidBusy` (indexed by CID) has the CIDs of the acknowledged completions cleared. The client can write its CQ,
   * so a lying client can at most reuse a CID of its own still in flight; every PRP homid writes stays inside
   * the client's own data buffer either way.
   */
  acknowledge(head: number, cidBusy: Uint8Array | null = null): number {
    const cq = this.cq;
    if (head === cq.head) return 0;
    if (!Number.isInteger(head) || head < 0 || head >= this.entries) {
      this.stats.badHeads++;
      return 0;
    }
    const n = cq.distanceTo(head);
    if (n > this.outstanding) {
      this.stats.badHeads++;
      return 0;
    }
    // the last claimed entry must be posted with the phase of its lap (earlier ones were posted before it)
    if (!cq.isPosted(head === 0 ? this.entries - 1 : head - 1)) {
      this.stats.badHeads++;
      return 0;
    }
    if (cidBusy !== null) {
      const dw = cq.ring;
      for (let i = cq.head, k = 0; k < n; k++) {
        const cid = dw[i * CQE_DWORDS + CQE_DW_STATUS]! & CQE_CID_MASK;
        if (cid < cidBusy.length) cidBusy[cid] = 0;
        if (++i === this.entries) i = 0;
      }
    }
    cq.advanceTo(head);
    this.outstanding -= n;
    this.stats.acknowledged += n;
    this.notify.cqHead(cq.publish());
    return n;
  }
}
