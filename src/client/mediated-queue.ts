/**
 * Client side of a mediated queue pair: the same fast-path API as the driver core's QueuePair
 * (submitIo / ring / poll / free / outstanding), over the software rings homid polls. Data pointers are byte
 * offsets into `data` (the grant's data buffer): pass the offset as prp1; prp2 is ignored.
 *
 * In direct-completion mode (the ring's RING_FLAG_DIRECT_CQ, see mediated-ring.ts) the controller's
 * completions arrive on `hwCq`, the hardware CQ mapped from the grant, and poll() reaps both CQs. Every CQE
 * is checked (phase, queue id, a CID this client has in flight) before it counts.
 *
 * The ring mechanics are src/nvme/ring.ts: an SqWriter over the ring's SQ (its head refreshed from H_SQ_HEAD
 * only when the ring looks full), a CqReader per CQ (the ring's and, in direct mode, the hardware one).
 */
import { CQE_CID_MASK, CQE_DWORDS, CQE_DW_RESULT, CQE_DW_SQ, CQE_DW_STATUS, CQE_SQID_SHIFT, CQE_STATUS_SHIFT } from '../nvme/cqe.js';
import { CqReader, SqWriter } from '../nvme/ring.js';
import { writeIoSqe, sqeCdw0 } from '../nvme/sqe.js';
import { HOST_CAUSE_SHIFT, STATUS_DISCONNECTED, STATUS_FIELD_MASK } from '../nvme/status.js';
import type { CompletionHandler, QueueContract } from '../queue/contract.js';
import { H_CQ_HEAD, H_FLAGS, H_HWCQ_HEAD, H_HW_QID, H_SQ_HEAD, H_SQ_TAIL, H_STATE, RING_CQE_DW_HOST, RING_FLAG_DIRECT_CQ, RING_STATE_REVOKED, openRing, type RingViews } from '../ipc/mediated-ring.js';

/**
 * The status every command still in flight completes with once homid is gone (the connection closed: homid
 * stopped, crashed or was killed): SCT 3 / SC 71h, Command Aborted By Host, with Do Not Retry set (the queue
 * no longer exists), host cause Disconnected (src/nvme/status.ts).
 */
export const STATUS_HOMID_GONE = STATUS_DISCONNECTED;

export class MediatedQueuePair implements QueueContract {
  readonly entries: number;
  readonly capacity: number;
  readonly stats = { submitted: 0, completed: 0, direct: 0, malformed: 0 };
  /** Direct mode: the hardware CQ's reader (null in relay mode). */
  private readonly hwCq: CqReader | null;
  private readonly hwQid: number;
  /** 1 while a CID is in flight: a completion for any other CID is ignored. */
  private readonly busy: Uint8Array;
  private readonly v: RingViews;
  private readonly sq: SqWriter;
  private readonly cq: CqReader;
  private readonly freeCids: Uint16Array;
  private freeTop: number;
  private readonly tags: Int32Array;
  private outstandingCount = 0;
  /** Why the queue was abandoned (homid went away), or null. */
  private abandonedReason: string | null = null;

  constructor(
    ring: Uint8Array,
    /** The data buffer commands transfer to and from. */
    readonly data: Uint8Array,
    readonly id = 0,
    /** Direct mode: the hardware CQ's bytes (the grant's `hwCq` region). */
    hwCq: Uint8Array | null = null,
  ) {
    this.v = openRing(ring);
    this.entries = this.v.entries;
    this.capacity = this.entries - 1;
    this.busy = new Uint8Array(this.capacity);
    if ((this.v.header[H_FLAGS]! & RING_FLAG_DIRECT_CQ) !== 0) {
      if (hwCq === null) throw new Error('this mediated ring delivers completions on a hardware CQ: pass its mapping (hwCq)');
      if (hwCq.byteLength < this.entries * CQE_DWORDS * 4) throw new Error(`hardware CQ mapping of ${hwCq.byteLength} bytes is too small for ${this.entries} entries`);
      this.hwCq = new CqReader(new Uint32Array(hwCq.buffer, hwCq.byteOffset, this.entries * CQE_DWORDS), this.entries);
      this.hwQid = this.v.header[H_HW_QID]!;
    } else {
      this.hwCq = null;
      this.hwQid = -1;
    }
    this.sq = new SqWriter(this.v.sq, this.entries);
    this.cq = new CqReader(this.v.cq, this.entries);
    this.freeCids = new Uint16Array(this.capacity);
    for (let i = 0; i < this.capacity; i++) this.freeCids[i] = this.capacity - 1 - i;
    this.freeTop = this.capacity;
    this.tags = new Int32Array(this.capacity);
  }

  get outstanding(): number {
    return this.outstandingCount;
  }
  get free(): number {
    if (this.revoked) return 0;
    this.sq.head = this.sqHeadNow();
    return Math.min(this.freeTop, this.sq.space);
  }
  /** homid ended the lease (closeQueuePair, homid stopping), or homid is gone (abandon()). */
  get revoked(): boolean {
    return this.abandonedReason !== null || Atomics.load(this.v.header, H_STATE) === RING_STATE_REVOKED;
  }

  /** Why the queue was abandoned, or null while homid serves it. */
  get abandoned(): string | null {
    return this.abandonedReason;
  }

  /**
   * homid is gone (the client library calls this the moment the connection closes): nothing more is submitted,
   * and the next poll() completes every command still in flight with STATUS_HOMID_GONE instead of leaving the
   * caller to wait for a timeout. The shared memory stays mapped until the lease's regions are closed.
   */
  abandon(reason: string): void {
    if (this.abandonedReason === null) this.abandonedReason = reason;
  }

  /** Queue a read/write/flush; prp1 = byte offset into `data`. Returns the CID or -1 when full. */
  submitIo(opcode: number, nsid: number, slba: number, nlb: number, prp1: number, _prp2: number, tag: number): number {
    if (this.freeTop === 0 || this.revoked) return -1;
    const sq = this.sq;
    let at = sq.claim();
    if (at < 0) {
      // full as far as the cached head says: learn how far homid got
      sq.head = this.sqHeadNow();
      at = sq.claim();
      if (at < 0) return -1;
    }
    const cid = this.freeCids[--this.freeTop]!;
    writeIoSqe(sq.ring, at, sqeCdw0(opcode, cid), nsid >>> 0, slba, nlb, prp1, 0);
    this.tags[cid] = tag;
    this.busy[cid] = 1;
    this.outstandingCount++;
    this.stats.submitted++;
    return cid;
  }

  /** Publish the SQ tail to homid. */
  ring(): void {
    this.sq.publishTo(this.v.header, H_SQ_TAIL);
  }

  /** Reap completions: onComplete(tag, completion status, DW0). */
  poll(onComplete: CompletionHandler, max: number = this.entries): number {
    if (this.abandonedReason !== null) return this.failAll(onComplete, max);
    const cq = this.cq;
    const dw = cq.ring;
    let n = 0;
    let consumed = 0;
    while (n < max && consumed < this.entries) {
      const at = cq.take();
      if (at < 0) break;
      consumed++;
      const d3 = dw[at + CQE_DW_STATUS]!;
      const cid = d3 & CQE_CID_MASK;
      if (cid >= this.capacity || this.busy[cid] === 0) {
        this.stats.malformed++;
        continue;
      }
      n++;
      // homid keeps the host part of a status (a timeout or reset on its hardware queue) in DW1
      const status = (d3 >>> CQE_STATUS_SHIFT) | ((dw[at + RING_CQE_DW_HOST]! & STATUS_FIELD_MASK) << HOST_CAUSE_SHIFT);
      this.finish(cid, status, dw[at + CQE_DW_RESULT]!, onComplete);
    }
    if (consumed > 0) cq.publishTo(this.v.header, H_CQ_HEAD);
    if (this.hwCq !== null && n < max && this.outstandingCount > 0) n += this.pollDirect(onComplete, max - n);
    return n;
  }

  /** homid's SQ head, read from the ring header (an out-of-range value reads as "nothing consumed"). */
  private sqHeadNow(): number {
    const h = Atomics.load(this.v.header, H_SQ_HEAD);
    return h >= 0 && h < this.entries ? h : this.sq.head;
  }

  /** homid is gone: complete (up to `max`) in-flight commands with STATUS_HOMID_GONE. */
  private failAll(onComplete: CompletionHandler, max: number): number {
    let n = 0;
    for (let cid = 0; cid < this.capacity && n < max; cid++) {
      if (this.busy[cid] === 0) continue;
      n++;
      this.finish(cid, STATUS_HOMID_GONE, 0, onComplete);
    }
    return n;
  }

  /** A checked completion for an in-flight `cid`: free the CID, hand (tag, status, DW0) to the handler. */
  private finish(cid: number, status: number, result: number, onComplete: CompletionHandler): void {
    this.busy[cid] = 0;
    this.freeCids[this.freeTop++] = cid;
    this.outstandingCount--;
    this.stats.completed++;
    onComplete(this.tags[cid]!, status, result);
  }

  private pollDirect(onComplete: CompletionHandler, max: number): number {
    const cq = this.hwCq!;
    const dw = cq.ring;
    const header = this.v.header;
    let n = 0;
    let consumed = 0;
    while (n < max && consumed < this.entries) {
      const at = cq.take();
      if (at < 0) break;
      consumed++;
      const d3 = dw[at + CQE_DW_STATUS]!;
      const cid = d3 & CQE_CID_MASK;
      if (dw[at + CQE_DW_SQ]! >>> CQE_SQID_SHIFT !== this.hwQid || cid >= this.capacity || this.busy[cid] === 0) {
        this.stats.malformed++;
        continue;
      }
      n++;
      this.stats.direct++;
      // publish the head before the CID is freed: the handler may reuse it at once, and homid refuses a CID it
      // still counts in flight (Command ID Conflict) unless this head is visible by the time the new SQE is
      cq.publishTo(header, H_HWCQ_HEAD);
      this.finish(cid, d3 >>> CQE_STATUS_SHIFT, dw[at + CQE_DW_RESULT]!, onComplete);
    }
    if (consumed > 0) cq.publishTo(header, H_HWCQ_HEAD);
    return n;
  }
}
