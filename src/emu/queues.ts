/**
 * Submission and completion queues of the embedded controller. Each queue keeps a preallocated dword view of
 * its ring in DMA memory, so fetching an SQE and posting a CQE touch no objects.
 */
import { CQE_DWORDS, CQE_PHASE_BIT, CQE_SQID_SHIFT, CQE_STATUS_SHIFT, CQE_DW_RESULT, CQE_DW_RESULT_HI, CQE_DW_SQ, CQE_DW_STATUS } from '../nvme/cqe.js';

export class CompletionQueue {
  /** Ring as dwords (4 per entry). */
  readonly ring: Uint32Array;
  /** Next slot the controller writes. */
  tail = 0;
  /** Phase tag the controller writes in the current lap. */
  phase = CQE_PHASE_BIT;
  /** Head as last accepted from the host's doorbell. */
  head = 0;
  /** Last raw value seen in the head doorbell (to notice changes, valid or not). */
  rawHead = 0;
  /** Slots promised to commands that will complete later (delayed, dropped, AER). */
  reserved = 0;
  /** Number of SQs that post here. */
  sqRefs = 0;

  constructor(
    readonly qid: number,
    readonly size: number,
    readonly iova: number,
    segment: ArrayBufferLike,
    byteOffset: number,
    /** Index of this CQ's head doorbell in the doorbell cells. */
    readonly dbIndex: number,
  ) {
    this.ring = new Uint32Array(segment, byteOffset, size * CQE_DWORDS);
  }

  /** Free slots not promised to anyone. */
  free(): number {
    let used = this.tail - this.head;
    if (used < 0) used += this.size;
    return this.size - 1 - used - this.reserved;
  }

  /** Entries posted but not yet released by the host. */
  outstanding(): number {
    const used = this.tail - this.head;
    return used < 0 ? used + this.size : used;
  }

  /**
   * Post one completion. The caller has checked free() (or holds a reservation). Dwords 0-2 are written plainly,
   * then DW3 with the phase tag by Atomics.store: once the host sees the new phase, the whole entry is there.
   */
  post(result: number, sqHead: number, sqid: number, cid: number, status: number): void {
    const r = this.ring;
    const at = this.tail << 2;
    r[at + CQE_DW_RESULT] = result;
    r[at + CQE_DW_RESULT_HI] = 0;
    r[at + CQE_DW_SQ] = sqHead | (sqid << CQE_SQID_SHIFT);
    Atomics.store(r, at + CQE_DW_STATUS, (cid | this.phase | (status << CQE_STATUS_SHIFT)) >>> 0);
    if (++this.tail === this.size) {
      this.tail = 0;
      this.phase ^= CQE_PHASE_BIT;
    }
  }
}

export class SubmissionQueue {
  /** Ring as dwords (16 per entry). */
  readonly ring: Uint32Array;
  /** Next entry the controller fetches. */
  head = 0;
  /** Tail as last accepted from the host's doorbell. */
  tail = 0;
  /** Last raw value seen in the tail doorbell. */
  rawTail = 0;

  constructor(
    readonly qid: number,
    readonly size: number,
    readonly iova: number,
    segment: ArrayBufferLike,
    byteOffset: number,
    readonly cq: CompletionQueue,
    /** Index of this SQ's tail doorbell in the doorbell cells. */
    readonly dbIndex: number,
    readonly priority: number,
  ) {
    this.ring = new Uint32Array(segment, byteOffset, size * 16);
  }

  /** Entries submitted and not yet fetched. */
  pending(): number {
    const n = this.tail - this.head;
    return n < 0 ? n + this.size : n;
  }
}
