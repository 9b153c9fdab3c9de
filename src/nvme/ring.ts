/**
 * NVMe queue rings: the one implementation of the ring mechanics every initiator and target in HOMI uses (the
 * driver's queue pair, the mediated client, homid's direct forwarding and mediated relay, the embedded
 * controller). Protocol only: no I/O, no notification; the owner decides where a published index goes (a
 * transport's QueueNotifier: a doorbell register and a wake; or a cell of a shared header, publishTo) and whether
 * anyone must be woken afterwards.
 *
 * An SQ has 64-byte entries (16 dwords), a CQ 16-byte entries (4 dwords); both are `entries` slots in
 * preallocated memory, seen through a Uint32Array. The four operations, and who does them:
 *
 *   write a slot      SqWriter.claim() / claimBatch(n) hand out SQ slots; anyone holding a view of the ring
 *                     fills them (writeIoSqe / writeCmdSqe in sqe.ts, or a GPU thread, a worker).
 *   publish a tail    SqWriter.publish(): the tail to hand to the doorbell once per batch (-1: nothing new), or
 *                     publishTo(cells, index): one Atomics.store of it into a shared cell.
 *   reap by phase     CqReader.take(): the next CQE whose phase tag shows it was posted in the current lap
 *                     (DW3 read with Atomics.load), consumed locally.
 *   publish a head    CqReader.publish() / publishTo(cells, index): the head, once per batch.
 *   post a CQE        CqWriter.post(...): DW0-DW2 written plainly, then DW3 (CID, phase tag, status) with
 *                     Atomics.store; the phase tag is the publication, so a reader that sees it sees the entry.
 *   (consume SQEs)    SqReader.take() / publishTo(): the target side of an SQ (homid reading a mediated ring).
 *
 * Slot fill is kept apart from tail publish, and reaping apart from head publish: a batch (or a GPU thread
 * block, as in uPCIe's CUDA queue) claims slots, fills them in any order or in parallel, and one publisher makes
 * them visible with a single store; a reaper consumes any number of completions and returns the slots with a
 * single store. The indices (tail, head, phase) belong to the object's owner, one thread; fillers on other
 * threads must have their slot writes ordered before the publisher's store (e.g. an Atomics handshake).
 *
 * Nothing here allocates after construction: indices are small integers on the object, entries are read and
 * written through the typed-array view, and `take()`/`claim()` return dword offsets (or -1), never objects.
 */
import { CQE_DWORDS, CQE_DW_RESULT, CQE_DW_RESULT_HI, CQE_DW_SQ, CQE_DW_STATUS, CQE_PHASE_BIT, CQE_SQID_SHIFT, CQE_STATUS_SHIFT } from './cqe.js';
import { SQE_DWORDS } from './sqe.js';

/** log2 of SQE_DWORDS: slot index -> dword offset. */
const SQE_DW_LOG2 = 4;
/** log2 of CQE_DWORDS. */
const CQE_DW_LOG2 = 2;
/** Bits 14:0 of a status: what a CQE's status field holds. */
const CQE_STATUS_FIELD_MASK = 0x7fff;
const CQE_SQHD_FIELD_MASK = 0xffff;
const CQE_SQID_FIELD_MASK = 0xffff;
const CQE_CID_FIELD_MASK = 0xffff;

function checkRing(what: string, dw: Uint32Array, entries: number, perEntry: number): void {
  if (!Number.isInteger(entries) || entries < 2 || entries > 0x10000) throw new RangeError(`${what}: entries must be an integer in 2..65536, got ${entries}`);
  if (dw.length < entries * perEntry) throw new RangeError(`${what}: a view of ${dw.length} dwords is too small for ${entries} entries`);
}

/**
 * The producer side of a submission queue (the host). `head` is how far the consumer got, as the owner last
 * learned it (the SQ Head Pointer of a CQE, a shared cell, or a bound the owner derives); claim() never
 * overtakes it, so a full ring is `entries - 1` slots in use.
 */
export class SqWriter {
  /** The SQ memory, 16 dwords per slot. */
  readonly ring: Uint32Array;
  readonly entries: number;
  /** Next slot to claim. */
  tail = 0;
  /** The consumer's head as last learned by the owner. */
  head = 0;
  /** The tail as last published. */
  published = 0;

  constructor(ring: Uint32Array, entries: number) {
    checkRing('SQ', ring, entries, SQE_DWORDS);
    this.ring = ring;
    this.entries = entries;
  }

  /** Slots in use (claimed and not yet consumed, as far as `head` says). */
  get used(): number {
    const n = this.tail - this.head;
    return n < 0 ? n + this.entries : n;
  }

  /** Slots that can be claimed now. */
  get space(): number {
    return this.entries - 1 - this.used;
  }

  /** Claimed slots not yet published. */
  get unpublished(): number {
    const n = this.tail - this.published;
    return n < 0 ? n + this.entries : n;
  }

  /**
   * Claim the next slot: returns its dword offset in `ring`, or -1 when the ring is full. The consumer sees the
   * slot only after a later publish().
   */
  claim(): number {
    const t = this.tail;
    const next = t + 1 === this.entries ? 0 : t + 1;
    if (next === this.head) return -1;
    this.tail = next;
    return t << SQE_DW_LOG2;
  }

  /** Give back the slot the last claim() returned (it was not filled). */
  unclaim(): void {
    this.tail = this.tail === 0 ? this.entries - 1 : this.tail - 1;
  }

  /**
   * Claim `n` consecutive slots at once: returns the first slot's index, or -1 when fewer than `n` are free.
   * Slot `first + i` (i < n) is at dword offset slotOffset(first + i); the slots may be filled in parallel and
   * in any order before the one publish() that covers them all.
   */
  claimBatch(n: number): number {
    if (!(n >= 1) || n > this.space) return -1;
    const first = this.tail;
    const t = first + n;
    this.tail = t >= this.entries ? t - this.entries : t;
    return first;
  }

  /** Dword offset of slot `slot` (any integer index, taken modulo the ring size). */
  slotOffset(slot: number): number {
    const s = slot % this.entries;
    return (s < 0 ? s + this.entries : s) << SQE_DW_LOG2;
  }

  /**
   * Publish the tail: when slots were claimed since the last publish, returns the tail for the owner to hand to
   * the consumer (a doorbell write through the transport's notifier) and counts it as published; else -1.
   */
  publish(): number {
    const t = this.tail;
    if (t === this.published) return -1;
    this.published = t;
    return t;
  }

  /** Publish the tail into `cells[index]` (a shared header cell) with Atomics.store; true when it stored. */
  publishTo(cells: Int32Array, index: number): boolean {
    const t = this.publish();
    if (t < 0) return false;
    Atomics.store(cells, index, t);
    return true;
  }

  /** Back to an empty ring at slot 0 (the queue was recreated). */
  reset(): void {
    this.tail = 0;
    this.head = 0;
    this.published = 0;
  }
}

/**
 * The consumer side of a submission queue (the target). `tail` is what the producer published, as the owner
 * last read it; take() hands out slots up to it.
 */
export class SqReader {
  readonly ring: Uint32Array;
  readonly entries: number;
  /** Next slot to consume. */
  head = 0;
  /** The producer's tail as last read. */
  tail = 0;
  /** The head as last published. */
  published = 0;

  constructor(ring: Uint32Array, entries: number) {
    checkRing('SQ', ring, entries, SQE_DWORDS);
    this.ring = ring;
    this.entries = entries;
  }

  /** Entries published by the producer and not yet consumed. */
  get pending(): number {
    const n = this.tail - this.head;
    return n < 0 ? n + this.entries : n;
  }

  /** Dword offset of the next entry, consumed, or -1 when none is pending. */
  take(): number {
    const h = this.head;
    if (h === this.tail) return -1;
    this.head = h + 1 === this.entries ? 0 : h + 1;
    return h << SQE_DW_LOG2;
  }

  /** The head to hand to the producer when it moved since the last publish (counted as published), else -1. */
  publish(): number {
    const h = this.head;
    if (h === this.published) return -1;
    this.published = h;
    return h;
  }

  /** Publish the head into `cells[index]` (a shared header cell) with Atomics.store; true when it stored. */
  publishTo(cells: Int32Array, index: number): boolean {
    const h = this.publish();
    if (h < 0) return false;
    Atomics.store(cells, index, h);
    return true;
  }

  reset(): void {
    this.head = 0;
    this.tail = 0;
    this.published = 0;
  }
}

/**
 * The consumer side of a completion queue (the host): reaping by phase tag. The phase the controller writes
 * flips on every lap, starting at 1; an entry is new when its tag equals the phase expected at the head.
 */
export class CqReader {
  /** The CQ memory, 4 dwords per slot. */
  readonly ring: Uint32Array;
  readonly entries: number;
  /** Next slot to reap. */
  head = 0;
  /** CQE_PHASE_BIT while the phase expected at `head` is 1, else 0 (compare with DW3 & CQE_PHASE_BIT). */
  phase = CQE_PHASE_BIT;
  /** Entries consumed since the last publish. */
  unpublished = 0;

  constructor(ring: Uint32Array, entries: number) {
    checkRing('CQ', ring, entries, CQE_DWORDS);
    this.ring = ring;
    this.entries = entries;
  }

  /**
   * Reap the entry at the head if it was posted: returns its dword offset in `ring` (DW3 has been read with
   * Atomics.load, so DW0-DW3 may now be read plainly; the producer does not reuse the slot before the head is
   * published), or -1 when nothing new is there. The entry counts as consumed.
   */
  take(): number {
    const h = this.head;
    const at = h << CQE_DW_LOG2;
    if ((Atomics.load(this.ring, at + CQE_DW_STATUS) & CQE_PHASE_BIT) !== this.phase) return -1;
    if (h + 1 === this.entries) {
      this.head = 0;
      this.phase ^= CQE_PHASE_BIT;
    } else this.head = h + 1;
    this.unpublished++;
    return at;
  }

  /**
   * Publish the head: when entries were consumed since the last publish, returns the head for the owner to hand
   * to the producer (the CQ head doorbell, through the transport's notifier) and counts it as published; else -1.
   */
  publish(): number {
    if (this.unpublished === 0) return -1;
    this.unpublished = 0;
    return this.head;
  }

  /** Publish the head into `cells[index]` (a shared header cell) with Atomics.store; true when it stored. */
  publishTo(cells: Int32Array, index: number): boolean {
    const h = this.publish();
    if (h < 0) return false;
    Atomics.store(cells, index, h);
    return true;
  }

  /** Slots from the head up to `slot` (exclusive), going forward: 0..entries-1. */
  distanceTo(slot: number): number {
    const n = slot - this.head;
    return n < 0 ? n + this.entries : n;
  }

  /**
   * Whether the entry at `slot` carries the phase tag of a completion posted in the lap that starts at the head
   * (slots at or after the head: this lap's phase; slots before it: the next lap's).
   */
  isPosted(slot: number): boolean {
    const expect = slot >= this.head ? this.phase : this.phase ^ CQE_PHASE_BIT;
    return (Atomics.load(this.ring, (slot << CQE_DW_LOG2) + CQE_DW_STATUS) & CQE_PHASE_BIT) === expect;
  }

  /** Consume every entry up to `slot` (exclusive) at once, flipping the phase when that wraps. */
  advanceTo(slot: number): void {
    const n = this.distanceTo(slot);
    if (n === 0) return;
    if (slot <= this.head) this.phase ^= CQE_PHASE_BIT;
    this.head = slot;
    this.unpublished += n;
  }

  reset(): void {
    this.head = 0;
    this.phase = CQE_PHASE_BIT;
    this.unpublished = 0;
  }
}

/**
 * The producer side of a completion queue (the controller, or homid relaying completions). `head` is the
 * consumer's head as the owner last learned it (a doorbell, a shared cell); hasRoom() keeps one slot free.
 */
export class CqWriter {
  readonly ring: Uint32Array;
  readonly entries: number;
  /** Next slot to post. */
  tail = 0;
  /** Phase tag of the current lap, as the DW3 bit (CQE_PHASE_BIT or 0). */
  phase = CQE_PHASE_BIT;
  /** The consumer's head as last learned. */
  head = 0;

  constructor(ring: Uint32Array, entries: number) {
    checkRing('CQ', ring, entries, CQE_DWORDS);
    this.ring = ring;
    this.entries = entries;
  }

  /** Entries posted and not yet released by the consumer (as far as `head` says). */
  get used(): number {
    const n = this.tail - this.head;
    return n < 0 ? n + this.entries : n;
  }

  /** Whether one more entry fits before the consumer's head. */
  hasRoom(): boolean {
    const next = this.tail + 1 === this.entries ? 0 : this.tail + 1;
    return next !== this.head;
  }

  /**
   * Post one completion at the tail (the caller has checked for room). DW0 = result, DW1 = resultHi, DW2 = SQ
   * head and SQ id, then DW3 = CID, phase tag and `status` (bits 14:0 are written: the NVMe status field) with
   * Atomics.store, which publishes the entry.
   */
  post(result: number, sqHead: number, sqid: number, cid: number, status: number, resultHi = 0): void {
    const r = this.ring;
    const at = this.tail << CQE_DW_LOG2;
    r[at + CQE_DW_RESULT] = result;
    r[at + CQE_DW_RESULT_HI] = resultHi;
    r[at + CQE_DW_SQ] = (sqHead & CQE_SQHD_FIELD_MASK) | ((sqid & CQE_SQID_FIELD_MASK) << CQE_SQID_SHIFT);
    Atomics.store(r, at + CQE_DW_STATUS, ((cid & CQE_CID_FIELD_MASK) | this.phase | ((status & CQE_STATUS_FIELD_MASK) << CQE_STATUS_SHIFT)) >>> 0);
    if (++this.tail === this.entries) {
      this.tail = 0;
      this.phase ^= CQE_PHASE_BIT;
    }
  }

  reset(): void {
    this.tail = 0;
    this.phase = CQE_PHASE_BIT;
    this.head = 0;
  }
}
