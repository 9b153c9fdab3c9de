/**
 * Client side of a mediated queue pair: the same fast-path API as the driver core's QueuePair
 * (submitIo / ring / poll / free / outstanding), over the software rings homid polls. Data pointers are byte
 * offsets into `data` (the grant's data buffer): pass the offset as prp1; prp2 is ignored.
 *
 * In direct-completion mode (the ring's RING_FLAG_DIRECT_CQ, see mediated-ring.ts) the controller's
 * completions arrive on `hwCq`, the hardware CQ mapped from the grant, and poll() reaps both CQs. Every CQE
 * is checked (phase, queue id, a CID this client has in flight) before it counts.
 */
import { CQE_CID_MASK, CQE_DWORDS, CQE_PHASE_BIT, CQE_SQID_SHIFT, CQE_STATUS_SHIFT, makeStatus } from '../nvme/cqe.js';
import { PathStatus, Sct } from '../nvme/status.js';

/**
 * The status every command still in flight completes with once homid is gone (the connection closed: homid
 * stopped, crashed or was killed): SCT 3 / SC 71h, Command Aborted By Host, with Do Not Retry set (the queue
 * no longer exists).
 */
export const STATUS_HOMID_GONE = makeStatus(Sct.PathRelated, PathStatus.CommandAbortedByHost, true);
import type { CompletionHandler, QueueContract } from '../queue/contract.js';
import { H_CQ_HEAD, H_FLAGS, H_HWCQ_HEAD, H_HW_QID, H_SQ_HEAD, H_SQ_TAIL, H_STATE, RING_FLAG_DIRECT_CQ, RING_STATE_REVOKED, openRing, type RingViews } from '../ipc/mediated-ring.js';


export class MediatedQueuePair implements QueueContract {
  readonly entries: number;
  readonly capacity: number;
  readonly stats = { submitted: 0, completed: 0, direct: 0, malformed: 0 };
  /** Direct mode: the hardware CQ (null in relay mode). */
  private readonly hwCq: Uint32Array | null;
  private readonly hwQid: number;
  private hwHead = 0;
  private hwPhase = CQE_PHASE_BIT;
  /** 1 while a CID is in flight: a completion for any other CID is ignored. */
  private readonly busy: Uint8Array;
  private readonly v: RingViews;
  private sqTail = 0;
  private cqHead = 0;
  private phase = CQE_PHASE_BIT;
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
      this.hwCq = new Uint32Array(hwCq.buffer, hwCq.byteOffset, this.entries * CQE_DWORDS);
      this.hwQid = this.v.header[H_HW_QID]!;
    } else {
      this.hwCq = null;
      this.hwQid = -1;
    }
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
    const head = Atomics.load(this.v.header, H_SQ_HEAD);
    const used = this.sqTail >= head ? this.sqTail - head : this.sqTail + this.entries - head;
    return Math.min(this.freeTop, this.capacity - used);
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
    const next = this.sqTail + 1 === this.entries ? 0 : this.sqTail + 1;
    if (this.freeTop === 0 || next === Atomics.load(this.v.header, H_SQ_HEAD) || this.revoked) return -1;
    const cid = this.freeCids[--this.freeTop]!;
    const dw = this.v.sq;
    const at = this.sqTail << 4;
    dw.fill(0, at, at + 16);
    dw[at] = ((opcode & 0xff) | (cid << 16)) >>> 0;
    dw[at + 1] = nsid >>> 0;
    dw[at + 6] = prp1 >>> 0;
    dw[at + 7] = Math.floor(prp1 / 0x1_0000_0000) >>> 0;
    dw[at + 10] = slba >>> 0;
    dw[at + 11] = Math.floor(slba / 0x1_0000_0000) >>> 0;
    dw[at + 12] = (nlb - 1) & 0xffff;
    this.tags[cid] = tag;
    this.busy[cid] = 1;
    this.outstandingCount++;
    this.stats.submitted++;
    this.sqTail = next;
    return cid;
  }

  /** Publish the SQ tail to homid. */
  ring(): void {
    Atomics.store(this.v.header, H_SQ_TAIL, this.sqTail);
  }

  /** Reap completions: onComplete(tag, 15-bit status, DW0). */
  poll(onComplete: CompletionHandler, max: number = this.entries): number {
    if (this.abandonedReason !== null) return this.failAll(onComplete, max);
    const cq = this.v.cq;
    let n = 0;
    let consumed = 0;
    while (n < max && consumed < this.entries) {
      const at = this.cqHead << 2;
      const d3 = Atomics.load(cq, at + 3);
      if ((d3 & CQE_PHASE_BIT) !== this.phase) break;
      const cid = d3 & CQE_CID_MASK;
      const result = cq[at]!;
      if (++this.cqHead === this.entries) {
        this.cqHead = 0;
        this.phase ^= CQE_PHASE_BIT;
      }
      consumed++;
      if (cid >= this.capacity || this.busy[cid] === 0) {
        this.stats.malformed++;
        continue;
      }
      n++;
      this.finish(cid, d3, result, onComplete);
    }
    if (consumed > 0) Atomics.store(this.v.header, H_CQ_HEAD, this.cqHead);
    if (this.hwCq !== null && n < max && this.outstandingCount > 0) n += this.pollDirect(onComplete, max - n);
    return n;
  }

  /** homid is gone: complete (up to `max`) in-flight commands with STATUS_HOMID_GONE. */
  private failAll(onComplete: CompletionHandler, max: number): number {
    let n = 0;
    for (let cid = 0; cid < this.capacity && n < max; cid++) {
      if (this.busy[cid] === 0) continue;
      n++;
      this.finish(cid, STATUS_HOMID_GONE << CQE_STATUS_SHIFT, 0, onComplete);
    }
    return n;
  }

  /** A checked completion for an in-flight `cid`: free the CID, hand (tag, status, DW0) to the handler. */
  private finish(cid: number, d3: number, result: number, onComplete: CompletionHandler): void {
    this.busy[cid] = 0;
    this.freeCids[this.freeTop++] = cid;
    this.outstandingCount--;
    this.stats.completed++;
    onComplete(this.tags[cid]!, d3 >>> CQE_STATUS_SHIFT, result);
  }

  private pollDirect(onComplete: CompletionHandler, max: number): number {
    const cq = this.hwCq!;
    let n = 0;
    let consumed = 0;
    while (n < max && consumed < this.entries) {
      const at = this.hwHead * CQE_DWORDS;
      const d3 = Atomics.load(cq, at + 3);
      if ((d3 & CQE_PHASE_BIT) !== this.hwPhase) break;
      const cid = d3 & CQE_CID_MASK;
      const result = cq[at]!;
      const sqid = cq[at + 2]! >>> CQE_SQID_SHIFT;
      if (++this.hwHead === this.entries) {
        this.hwHead = 0;
        this.hwPhase ^= CQE_PHASE_BIT;
      }
      consumed++;
      if (sqid !== this.hwQid || cid >= this.capacity || this.busy[cid] === 0) {
        this.stats.malformed++;
        continue;
      }
      n++;
      this.stats.direct++;
      // publish the head before the CID is freed: the handler may reuse it at once, and homid refuses a CID it
      // still counts in flight (Command ID Conflict) unless this head is visible by the time the new SQE is
      Atomics.store(this.v.header, H_HWCQ_HEAD, this.hwHead);
      this.finish(cid, d3, result, onComplete);
    }
    if (consumed > 0) Atomics.store(this.v.header, H_HWCQ_HEAD, this.hwHead);
    return n;
  }
}
