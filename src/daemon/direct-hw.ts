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
 */
import type { RemoteQueuePair } from '../driver/controller.js';
import { CQE_CID_MASK, CQE_DWORDS, CQE_DW_STATUS, CQE_PHASE_BIT } from '../nvme/cqe.js';
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
  private readonly sq: Uint32Array;
  private readonly cq: Uint32Array;
  private readonly notify: QueueNotifier;
  private sqTail = 0;
  private cqHead = 0;
  private phase = CQE_PHASE_BIT;
  private pending = 0;
  /** Commands submitted whose completion the client has not acknowledged. */
  outstanding = 0;

  constructor(host: DirectHost, readonly remote: RemoteQueuePair) {
    this.qid = remote.qid;
    this.entries = remote.entries;
    this.capacity = remote.entries - 1;
    this.sq = new Uint32Array(remote.sq.bytes.buffer, remote.sq.bytes.byteOffset, remote.entries * SQE_DWORDS);
    this.cq = new Uint32Array(remote.cq.bytes.buffer, remote.cq.bytes.byteOffset, remote.entries * CQE_DWORDS);
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
    const dw = this.sq;
    const at = this.sqTail * SQE_DWORDS;
    writeIoSqe(dw, at, cdw0, nsid, slba, nlb, prp1, prp2);
    if (++this.sqTail === this.entries) this.sqTail = 0;
    this.outstanding++;
    this.pending++;
    this.stats.submitted++;
  }

  /** Publish the SQEs written since the last ring. */
  ring(): void {
    if (this.pending === 0) return;
    this.pending = 0;
    this.notify.sqTail(this.sqTail);
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
    if (head === this.cqHead) return 0;
    if (!Number.isInteger(head) || head < 0 || head >= this.entries) {
      this.stats.badHeads++;
      return 0;
    }
    const n = head > this.cqHead ? head - this.cqHead : head + this.entries - this.cqHead;
    if (n > this.outstanding) {
      this.stats.badHeads++;
      return 0;
    }
    // the last claimed entry must be posted with the phase of its lap (earlier ones were posted before it)
    const last = head === 0 ? this.entries - 1 : head - 1;
    const lastPhase = last >= this.cqHead ? this.phase : this.phase ^ CQE_PHASE_BIT;
    if ((Atomics.load(this.cq, last * CQE_DWORDS + CQE_DW_STATUS) & CQE_PHASE_BIT) !== lastPhase) {
      this.stats.badHeads++;
      return 0;
    }
    if (cidBusy !== null) {
      const cq = this.cq;
      for (let i = this.cqHead, k = 0; k < n; k++) {
        const cid = cq[i * CQE_DWORDS + CQE_DW_STATUS]! & CQE_CID_MASK;
        if (cid < cidBusy.length) cidBusy[cid] = 0;
        if (++i === this.entries) i = 0;
      }
    }
    if (head <= this.cqHead) this.phase ^= CQE_PHASE_BIT;
    this.cqHead = head;
    this.outstanding -= n;
    this.stats.acknowledged += n;
    this.notify.cqHead(head);
    return n;
  }
}
