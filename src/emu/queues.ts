/**
 * Submission and completion queues of the embedded controller. Each queue keeps a preallocated dword view of
 * its ring in DMA memory, so fetching an SQE and posting a CQE touch no objects. Posting a CQE is the protocol
 * layer's CqWriter (src/nvme/ring.ts), the same code homid's mediated relay posts with.
 */
import { CQE_DWORDS } from '../nvme/cqe.js';
import { CqWriter, SqReader } from '../nvme/ring.js';
import { SQE_DWORDS } from '../nvme/sqe.js';

/**
 * A completion queue: CqWriter's `tail` (next slot the controller writes), `phase` (the tag of the current lap)
 * and `head` (as last accepted from the host's doorbell), and post(result, sqHead, sqid, cid, status), which
 * writes DW0-2 plainly, then DW3 with the phase tag by Atomics.store: once the host sees the new phase, the
 * whole entry is there. The caller checks free() (or holds a reservation) before posting.
 */
export class CompletionQueue extends CqWriter {
  /** Number of entries (the queue size). */
  readonly size: number;
  /** Last raw value seen in the head doorbell (to notice changes, valid or not). */
  rawHead = 0;
  /** Slots promised to commands that will complete later (delayed, dropped, AER). */
  reserved = 0;
  /** Number of SQs that post here. */
  sqRefs = 0;

  constructor(
    readonly qid: number,
    size: number,
    readonly iova: number,
    segment: ArrayBufferLike,
    byteOffset: number,
    /** Index of this CQ's head doorbell in the doorbell cells. */
    readonly dbIndex: number,
  ) {
    super(new Uint32Array(segment, byteOffset, size * CQE_DWORDS), size);
    this.size = size;
  }

  /** Free slots not promised to anyone. */
  free(): number {
    return this.entries - 1 - this.used - this.reserved;
  }

  /** Entries posted but not yet released by the host. */
  outstanding(): number {
    return this.used;
  }
}

/**
 * A submission queue as the controller sees it: the ring's consuming side (SqReader: `head` is the next entry the
 * controller fetches, `tail` the tail as last accepted from the host's doorbell, take() fetches one).
 */
export class SubmissionQueue extends SqReader {
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
    super(new Uint32Array(segment, byteOffset, size * SQE_DWORDS), size);
  }
}
