/**
 * One NVMe submission/completion queue pair: the driver's data path.
 *
 * Fast path (submitIo / ring / poll): plain code over typed arrays. It allocates nothing, creates no Promise or
 * closure, makes no FFI call, and reads the clock on one poll() call in CLOCK_EVERY_POLLS (never per I/O). The
 * ring mechanics are src/nvme/ring.ts: submitIo claims and fills an SQ slot (SqWriter, writeIoSqe), ring()
 * publishes the tail once per batch, poll() reaps by phase tag (CqReader: DW3 read with Atomics.load before the
 * rest of the CQE) and publishes the CQ head once per call; both go through the transport's notifier for this
 * queue (QueueNotifier: a doorbell store, plus a wake for the embedded controller).
 *
 * Command identifiers: a preallocated stack of free CIDs; per CID the user's tag (Int32Array), opcode, state and
 * submit stamp (the queue's epoch, refreshed once per poll call). A command that times out is completed to the
 * caller with STATUS_TIMEOUT and its CID is quarantined: it is not reused until the controller completes it or
 * the queue is reset, so a late completion can never be mistaken for a newer command.
 *
 * The queue pair does not create itself on the controller; the Controller (controller.ts) does that and drives
 * the `_`-prefixed lifecycle methods (suspend on reset, reinit, activate, delete).
 */
import type { DmaAllocator, DmaBuffer } from '../mem/dma.js';
import { CQE_CID_MASK, CQE_DW_RESULT, CQE_DW_RESULT_HI, CQE_DW_SQ, CQE_DW_STATUS, CQE_DWORDS, CQE_SQHD_MASK, CQE_SQID_SHIFT, CQE_STATUS_SHIFT } from '../nvme/cqe.js';
import { CQE_SIZE, SQE_SIZE } from '../nvme/registers.js';
import { CqReader, SqWriter } from '../nvme/ring.js';
import { SQE_CID_SHIFT, SQE_DW_CDW0, SQE_DWORDS, encodeSqe, writeIoSqe, type Sqe } from '../nvme/sqe.js';
import { STATUS_TIMEOUT, isSuccess } from '../nvme/status.js';
import type { QueueNotifier, Transport } from '../transport/transport.js';
import { InvalidArgumentError, NvmeError, NvmeStatusError, NvmeTimeoutError, QueueFullError, type CommandContext } from './errors.js';
import type { CompletionHandler, QueueContract } from '../queue/contract.js';

/**
 * The queue contract's completion handler (src/queue/contract.ts): the caller's tag, the completion status
 * (src/nvme/status.ts: 0 = success, the CQE's 15-bit status field, or a host outcome such as STATUS_TIMEOUT), CQE DW0.
 */
export type { CompletionHandler } from '../queue/contract.js';

/** What exec() resolves with. */
export interface Completion {
  /** 15-bit status field (0 for success; exec() rejects on anything else). */
  status: number;
  /** CQE DW0. */
  result: number;
  /** CQE DW1. */
  resultHi: number;
  qid: number;
  cid: number;
  opcode: number;
}

/** A completion entry that failed validation (unknown or idle CID, wrong SQ id, SQ head out of range). */
export interface MalformedCompletion {
  qid: number;
  /** Raw CQE dwords 0..3. */
  dw: [number, number, number, number];
  /** CQ slot it was found in. */
  slot: number;
  reason: string;
}

export interface QueuePairStats {
  submitted: number;
  completed: number;
  /** Commands completed locally with STATUS_TIMEOUT. */
  timeouts: number;
  /** Completions for quarantined (timed-out) CIDs that arrived later. */
  lateCompletions: number;
  /** CQEs that failed validation and were skipped. */
  malformed: number;
  /** Times the queue pair was suspended by a controller reset. */
  resets: number;
}

/**
 * What a queue pair needs from its transport: DMA memory and the notifier of its qid. A Transport is one; a
 * client process that drives a queue pair granted by a daemon supplies its own (src/driver/attach.ts).
 */
export interface QueueHost {
  readonly dma: DmaAllocator;
  /** The notifier of queue `qid`; throws RangeError when there is no doorbell for it. */
  notifier(qid: number): QueueNotifier;
}

export interface QueuePairOptions {
  qid: number;
  /** Number of SQ and CQ entries (>= 2). capacity = entries - 1. */
  entries: number;
  /** Per-command timeout in ms for fast-path commands (0 disables). Default 5000. */
  timeoutMs?: number;
  /**
   * SQ and CQ memory allocated elsewhere (e.g. shared memory a daemon granted): at least entries * 64 and
   * entries * 16 bytes. The queue pair uses it but never frees it. Default: allocated from host.dma and freed
   * on deletion.
   */
  memory?: { sq: DmaBuffer; cq: DmaBuffer };
}

/** Hooks the owning controller installs. All are called synchronously from within poll(). */
export interface QueuePairHooks {
  /** A command timed out (already completed to the caller with STATUS_TIMEOUT; its CID is quarantined). */
  onTimeout?: (qp: QueuePair, cid: number, opcode: number) => void;
  /** A malformed completion was skipped. */
  onMalformed?: (qp: QueuePair, info: MalformedCompletion) => void;
  /** Called about once per millisecond of polling (health checks). */
  onTick?: (qp: QueuePair, now: number) => void;
}

export interface ExecOptions {
  /** Overrides the queue's timeout for this command (0 = wait forever). */
  timeoutMs?: number;
}

/** Default per-command timeout for I/O queues. */
export const DEFAULT_IO_TIMEOUT_MS = 5000;
/** Interval of the timeout scan and health tick, measured in polling time. */
export const TICK_MS = 1;
/** poll() reads the clock (refreshes `epoch`, runs the tick) on one call in this many. */
export const CLOCK_EVERY_POLLS = 16;
const CLOCK_POLL_MASK = CLOCK_EVERY_POLLS - 1;
/** Largest valid command identifier + 1 (CID FFFFh is avoided: it means "not applicable" in log pages). */
const MAX_CIDS = 0xffff;

// Per-CID state.
const CID_FREE = 0;
/** Outstanding, stamped with the epoch at submission, not yet seen by a timeout scan. */
const CID_FRESH = 1;
/** Outstanding and seen by a timeout scan (stamp final). */
const CID_AGED = 2;
/** Timed out and reported; waiting for a late completion or a queue reset. */
const CID_QUARANTINED = 3;

// Per-CID kind.
const KIND_FAST = 0;
const KIND_EXEC = 1;

interface Waiter {
  done: boolean;
  status: number;
  result: number;
  resultHi: number;
  error: Error | null;
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class QueuePair implements QueueContract {
  readonly qid: number;
  readonly entries: number;
  /** Usable SQ slots (entries - 1). */
  readonly capacity: number;
  /** Command identifiers available (capacity plus room for quarantined CIDs). */
  readonly cidCount: number;
  /** Per-command timeout for fast-path commands (ms, 0 disables). May be changed at any time. */
  timeoutMs: number;
  readonly stats: QueuePairStats = { submitted: 0, completed: 0, timeouts: 0, lateCompletions: 0, malformed: 0, resets: 0 };
  /** The last malformed completion seen, for diagnostics. */
  lastMalformed: MalformedCompletion | null = null;
  /** Queue-level clock: performance.now() as of the latest poll call that read the clock. Submissions are stamped with it. */
  epoch: number;

  private readonly transport: QueueHost;
  private readonly hooks: QueuePairHooks;
  /** Publishes SQ tails and CQ heads to the controller (the transport's, bound to this qid). */
  private readonly notify: QueueNotifier;
  /** The SQ/CQ memory came from options.memory (not ours to free). */
  private readonly borrowedMemory: boolean;
  private readonly sqBuf: DmaBuffer;
  private readonly cqBuf: DmaBuffer;
  private readonly sq: Uint32Array;
  private readonly cq: Uint32Array;
  /** The SQ's producer side: its `head` is the SQ head the controller last reported (CQE SQHD). */
  private readonly sqw: SqWriter;
  /** The CQ's consumer side. */
  private readonly cqr: CqReader;

  private readonly freeCids: Uint16Array;
  private freeTop = 0;
  private readonly tags: Int32Array;
  private readonly opcodes: Uint8Array;
  private readonly cidState: Uint8Array;
  private readonly cidKind: Uint8Array;
  private readonly stamps: Float64Array;
  private readonly waiters: Array<Waiter | undefined>;
  private outstandingCount = 0;
  private quarantinedCount = 0;
  private lastTick = 0;
  private pollCalls = 0;

  /** True while the queue exists on an enabled controller: the CQ may be read and doorbells written. */
  private live = false;
  /** Submissions are accepted (false while suspended, being deleted or deleted). */
  private accepting = false;
  private deleted = false;
  /** True once the controller created it (the controller recreates such queues after a reset). */
  created = false;

  // Completions to deliver on the next poll(): from a reset, a deletion, or reaped by exec() on behalf of others.
  private readonly backlogTag: number[] = [];
  private readonly backlogStatus: number[] = [];
  private readonly backlogResult: number[] = [];
  private readonly deferToBacklog: CompletionHandler;

  constructor(transport: QueueHost | Transport, options: QueuePairOptions, hooks: QueuePairHooks = {}) {
    const { qid, entries } = options;
    if (!Number.isInteger(qid) || qid < 0 || qid > 0xffff) throw new InvalidArgumentError(`queue id must be 0..65535, got ${qid}`);
    if (!Number.isInteger(entries) || entries < 2 || entries > 0x10000) {
      throw new InvalidArgumentError(`queue ${qid}: entries must be an integer in 2..65536, got ${entries}`);
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_IO_TIMEOUT_MS;
    if (!(timeoutMs >= 0)) throw new InvalidArgumentError(`queue ${qid}: timeoutMs must be >= 0, got ${timeoutMs}`);
    this.transport = transport;
    this.hooks = hooks;
    this.qid = qid;
    this.entries = entries;
    this.capacity = entries - 1;
    this.timeoutMs = timeoutMs;
    this.cidCount = Math.min(MAX_CIDS, this.capacity + Math.max(8, this.capacity >>> 2));
    const page = transport.dma.pageSize;
    if (options.memory !== undefined) {
      const { sq, cq } = options.memory;
      if (sq.size < entries * SQE_SIZE || cq.size < entries * CQE_SIZE) {
        throw new InvalidArgumentError(`queue ${qid}: the given SQ/CQ memory (${sq.size}/${cq.size} bytes) is too small for ${entries} entries`);
      }
      if (sq.iova % page !== 0 || cq.iova % page !== 0) throw new InvalidArgumentError(`queue ${qid}: the given SQ/CQ memory is not page aligned`);
      this.sqBuf = sq;
      this.cqBuf = cq;
      this.borrowedMemory = true;
    } else {
      this.sqBuf = transport.dma.alloc(entries * SQE_SIZE, page);
      try {
        this.cqBuf = transport.dma.alloc(entries * CQE_SIZE, page);
      } catch (e) {
        transport.dma.free(this.sqBuf);
        throw e;
      }
      this.borrowedMemory = false;
    }
    this.sq = new Uint32Array(this.sqBuf.bytes.buffer, this.sqBuf.bytes.byteOffset, entries * SQE_DWORDS);
    this.cq = new Uint32Array(this.cqBuf.bytes.buffer, this.cqBuf.bytes.byteOffset, entries * CQE_DWORDS);
    this.sqw = new SqWriter(this.sq, entries);
    this.cqr = new CqReader(this.cq, entries);
    try {
      this.notify = transport.notifier(qid);
    } catch (e) {
      this.free_();
      throw new InvalidArgumentError(`queue ${qid}: ${(e as Error).message}`);
    }
    const n = this.cidCount;
    this.freeCids = new Uint16Array(n);
    this.tags = new Int32Array(n);
    this.opcodes = new Uint8Array(n);
    this.cidState = new Uint8Array(n);
    this.cidKind = new Uint8Array(n);
    this.stamps = new Float64Array(n);
    this.waiters = new Array<Waiter | undefined>(n).fill(undefined);
    this.resetCids();
    this.epoch = performance.now();
    this.lastTick = this.epoch;
    this.deferToBacklog = (tag, status, result) => this.pushBacklog(tag, status, result);
  }

  /** IOVA of the submission queue memory. */
  get sqIova(): number {
    return this.sqBuf.iova;
  }
  /** IOVA of the completion queue memory. */
  get cqIova(): number {
    return this.cqBuf.iova;
  }
  /** Commands submitted and not yet completed to the caller (quarantined CIDs excluded). */
  get outstanding(): number {
    return this.outstandingCount;
  }
  /** Timed-out commands whose CIDs wait for a late completion or a reset. */
  get quarantined(): number {
    return this.quarantinedCount;
  }
  /** How many more commands can be submitted right now. */
  get free(): number {
    if (!this.accepting) return 0;
    return Math.min(this.freeTop, this.sqw.space);
  }
  /** 'live' | 'suspended' (controller resetting or deleting the queue) | 'deleted'. */
  get state(): 'live' | 'suspended' | 'deleted' {
    return this.deleted ? 'deleted' : this.live && this.accepting ? 'live' : 'suspended';
  }
  /** Completions waiting to be delivered by the next poll(). */
  get pendingDeliveries(): number {
    return this.backlogTag.length;
  }

  // ---------------------------------------------------------------- fast path

  /**
   * Queue one NVM read/write-style command (CDW10/11 = SLBA, CDW12[15:0] = nlb - 1). Returns the CID, or -1
   * when the queue is full (or suspended). Does not ring the doorbell: call ring() after a batch.
   */
  submitIo(opcode: number, nsid: number, slba: number, nlb: number, prp1: number, prp2: number, tag: number): number {
    if (this.freeTop === 0 || !this.accepting) return -1;
    const sqw = this.sqw;
    const at = sqw.claim();
    if (at < 0) return -1;
    if (nlb < 1 || nlb > 0x10000) {
      sqw.unclaim();
      throw new InvalidArgumentError(`queue ${this.qid}: nlb must be 1..65536 blocks, got ${nlb}`);
    }
    const cid = this.freeCids[--this.freeTop]!;
    writeIoSqe(sqw.ring, at, (opcode & 0xff) | (cid << SQE_CID_SHIFT), nsid, slba, nlb, prp1, prp2);
    this.tags[cid] = tag;
    this.opcodes[cid] = opcode;
    this.cidKind[cid] = KIND_FAST;
    this.cidState[cid] = CID_FRESH;
    this.stamps[cid] = this.epoch;
    this.outstandingCount++;
    this.stats.submitted++;
    return cid;
  }

  /**
   * Queue any command given as an Sqe (its cid field is ignored: the queue pair assigns the CID). Returns the
   * CID or -1 when full. Does not ring. Allocation is allowed here; use submitIo on the hot path.
   */
  submitRaw(sqe: Sqe, tag: number): number {
    return this.submitGeneral(sqe, tag, KIND_FAST);
  }

  /**
   * Queue a command by filling its 16 dwords in place: `fill(dw, at)` writes dw[at .. at+15] (dword 0 may be
   * left with any CID: the queue pair stores the CID afterwards). Returns the CID or -1 when full. Does not ring.
   */
  submitSqe(fill: (dw: Uint32Array, at: number) => void, tag: number): number {
    if (this.freeTop === 0 || !this.accepting) return -1;
    const at = this.sqw.claim();
    if (at < 0) return -1;
    try {
      fill(this.sq, at);
    } catch (e) {
      this.sqw.unclaim();
      throw e;
    }
    const cid = this.freeCids[--this.freeTop]!;
    const d0 = this.sq[at + SQE_DW_CDW0]!;
    this.sq[at + SQE_DW_CDW0] = ((d0 & 0xffff) | (cid << SQE_CID_SHIFT)) >>> 0;
    this.track(cid, d0 & 0xff, tag, KIND_FAST);
    return cid;
  }

  /** Publish the SQ tail once if anything was queued since the last ring (the transport's notifier). */
  ring(): void {
    if (!this.live) return;
    const tail = this.sqw.publish();
    if (tail >= 0) this.notify.sqTail(tail);
  }

  /**
   * Reap up to `max` completions in phase order and deliver each to `onComplete(tag, status, result)`; also
   * delivers completions made locally (timeouts, reset aborts, deletion). Publishes the CQ head once.
   * Returns the number of completions delivered.
   */
  poll(onComplete: CompletionHandler, max: number = this.entries): number {
    // The clock costs tens of ns and boxes a double, so it is read on one poll call in CLOCK_EVERY_POLLS.
    let prev = 0;
    let now = 0;
    const clock = (++this.pollCalls & CLOCK_POLL_MASK) === 0;
    if (clock) {
      prev = this.epoch;
      now = performance.now();
      this.epoch = now;
    }
    let n = 0;
    if (this.live) n = this.reap(onComplete, max);
    if (clock && now - this.lastTick >= TICK_MS) n += this.tick(now, prev, onComplete);
    if (this.backlogTag.length !== 0) n += this.deliverBacklog(onComplete);
    return n;
  }

  // ---------------------------------------------------------------- general path

  /**
   * Submit one command, ring, and poll until it completes (spinning briefly, then yielding to the event loop).
   * Resolves with the completion; rejects with NvmeStatusError (non-success status), NvmeTimeoutError, or the
   * error of a reset/removal that took the command. Completions of other commands reaped meanwhile are kept
   * and delivered by the next poll().
   */
  async exec(sqe: Sqe, opts: ExecOptions = {}): Promise<Completion> {
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const start = performance.now();
    let cid = this.submitGeneral(sqe, 0, KIND_EXEC);
    while (cid < 0) {
      if (this.deleted) throw new NvmeError(`queue ${this.qid} was deleted; cannot submit ${this.describeOpcode(sqe.opcode)}`);
      if (timeoutMs > 0 && performance.now() - start > timeoutMs) {
        throw new QueueFullError(this.qid, `no free slot for ${this.describeOpcode(sqe.opcode)} within ${timeoutMs} ms`);
      }
      this.step(this.deferToBacklog);
      await sleep(1);
      cid = this.submitGeneral(sqe, 0, KIND_EXEC);
    }
    const w: Waiter = { done: false, status: 0, result: 0, resultHi: 0, error: null };
    this.waiters[cid] = w;
    const ctx: CommandContext = { opcode: sqe.opcode & 0xff, qid: this.qid, cid };
    this.ring();
    let spins = 0;
    for (;;) {
      this.step(this.deferToBacklog);
      if (w.done) break;
      const elapsed = performance.now() - start;
      if (timeoutMs > 0 && elapsed > timeoutMs) {
        this.expire(cid, this.deferToBacklog);
        break;
      }
      if (++spins < 64) continue;
      if (elapsed < 5) await yieldToEventLoop();
      else await sleep(1);
    }
    if (w.error) throw w.error;
    if (w.status === STATUS_TIMEOUT) throw new NvmeTimeoutError(ctx, timeoutMs);
    if (!isSuccess(w.status)) throw new NvmeStatusError(w.status, ctx, w.result);
    return { status: w.status, result: w.result, resultHi: w.resultHi, qid: this.qid, cid, opcode: ctx.opcode };
  }

  /** Opcode of an outstanding CID (for messages), or -1. */
  opcodeOf(cid: number): number {
    return cid >= 0 && cid < this.cidCount && this.cidState[cid] !== CID_FREE ? this.opcodes[cid]! : -1;
  }

  /** Whether `cid` is quarantined (timed out, not yet completed by the controller). */
  isQuarantined(cid: number): boolean {
    return cid >= 0 && cid < this.cidCount && this.cidState[cid] === CID_QUARANTINED;
  }

  // ---------------------------------------------------------------- internals

  private submitGeneral(sqe: Sqe, tag: number, kind: number): number {
    if (this.freeTop === 0 || !this.accepting) return -1;
    const at = this.sqw.claim();
    if (at < 0) return -1;
    const cid = this.freeCids[this.freeTop - 1]!;
    try {
      encodeSqe({ ...sqe, cid }, this.sq, at);
    } catch (e) {
      this.sqw.unclaim();
      throw e;
    }
    this.freeTop--;
    this.track(cid, sqe.opcode & 0xff, tag, kind);
    return cid;
  }

  private track(cid: number, opcode: number, tag: number, kind: number): void {
    this.tags[cid] = tag;
    this.opcodes[cid] = opcode;
    this.cidKind[cid] = kind;
    this.cidState[cid] = CID_FRESH;
    this.stamps[cid] = this.epoch;
    this.outstandingCount++;
    this.stats.submitted++;
  }

  /** One polling step for exec(): reap, tick, but never deliver the backlog (it belongs to the user's poll). */
  private step(handler: CompletionHandler): void {
    const prev = this.epoch;
    const now = performance.now();
    this.epoch = now;
    if (this.live) this.reap(handler, this.entries);
    if (now - this.lastTick >= TICK_MS) this.tick(now, prev, handler);
  }

  private reap(handler: CompletionHandler, max: number): number {
    const cqr = this.cqr;
    const cq = this.cq;
    const state = this.cidState;
    const entries = this.entries;
    let consumed = 0;
    let delivered = 0;
    while (consumed < max) {
      const at = cqr.take();
      if (at < 0) break;
      consumed++;
      const d3 = cq[at + CQE_DW_STATUS]!;
      const d0 = cq[at + CQE_DW_RESULT]!;
      const d2 = cq[at + CQE_DW_SQ]!;
      const cid = d3 & CQE_CID_MASK;
      const sqhd = d2 & CQE_SQHD_MASK;
      if (d2 >>> CQE_SQID_SHIFT !== this.qid || cid >= this.cidCount || sqhd >= entries || state[cid] === CID_FREE) {
        this.malformed(at >>> 2, d0, d2, d3);
        continue;
      }
      this.sqw.head = sqhd;
      const st = state[cid];
      state[cid] = CID_FREE;
      this.freeCids[this.freeTop++] = cid;
      if (st === CID_QUARANTINED) {
        this.quarantinedCount--;
        this.stats.lateCompletions++;
        continue;
      }
      this.outstandingCount--;
      this.stats.completed++;
      if (this.cidKind[cid] !== KIND_FAST) {
        this.finishExec(cid, d3 >>> CQE_STATUS_SHIFT, d0, cq[at + CQE_DW_RESULT_HI]!);
        continue;
      }
      delivered++;
      handler(this.tags[cid]!, d3 >>> CQE_STATUS_SHIFT, d0);
      if (!this.live) break;
    }
    if (consumed !== 0 && this.live) this.notify.cqHead(cqr.publish());
    return delivered;
  }

  private malformed(slot: number, d0: number, d2: number, d3: number): void {
    const cid = d3 & CQE_CID_MASK;
    const sqid = d2 >>> CQE_SQID_SHIFT;
    const sqhd = d2 & CQE_SQHD_MASK;
    let reason: string;
    if (sqid !== this.qid) reason = `SQ id ${sqid} does not match queue ${this.qid}`;
    else if (cid >= this.cidCount) reason = `CID ${cid} is out of range (0..${this.cidCount - 1})`;
    else if (sqhd >= this.entries) reason = `SQ head ${sqhd} is out of range (0..${this.entries - 1})`;
    else reason = `CID ${cid} is not outstanding`;
    const info: MalformedCompletion = { qid: this.qid, dw: [d0, this.cq[(slot << 2) + CQE_DW_RESULT_HI]!, d2, d3], slot, reason };
    this.stats.malformed++;
    this.lastMalformed = info;
    this.hooks.onMalformed?.(this, info);
  }

  /** Periodic work (about every TICK_MS of polling): health hook, then the timeout scan. */
  private tick(now: number, prev: number, handler: CompletionHandler): number {
    this.lastTick = now;
    this.hooks.onTick?.(this, now);
    if (!this.live || this.timeoutMs <= 0 || this.outstandingCount === 0) return 0;
    // Commands submitted since the previous clock read carry that read's epoch; after a long gap between reads
    // that stamp may be much older than the submission, so restamp them now (timeouts fire late, never early).
    const restamp = now - prev > TICK_MS;
    const limit = this.timeoutMs;
    const state = this.cidState;
    const stamps = this.stamps;
    let n = 0;
    for (let cid = 0; cid < this.cidCount; cid++) {
      const st = state[cid];
      if (st === CID_FRESH) {
        if (restamp && stamps[cid] === prev) stamps[cid] = now;
        state[cid] = CID_AGED;
      } else if (st !== CID_AGED) continue;
      if (this.cidKind[cid] === KIND_FAST && now - stamps[cid]! > limit) {
        this.expire(cid, handler);
        n++;
        if (!this.live) break;
      }
    }
    return n;
  }

  /** Complete an outstanding command locally with STATUS_TIMEOUT and quarantine its CID. */
  private expire(cid: number, handler: CompletionHandler): void {
    const st = this.cidState[cid];
    if (st !== CID_FRESH && st !== CID_AGED) return;
    this.cidState[cid] = CID_QUARANTINED;
    this.outstandingCount--;
    this.quarantinedCount++;
    this.stats.timeouts++;
    if (this.cidKind[cid] !== KIND_FAST) this.finishExec(cid, STATUS_TIMEOUT, 0, 0);
    else handler(this.tags[cid]!, STATUS_TIMEOUT, 0);
    this.hooks.onTimeout?.(this, cid, this.opcodes[cid]!);
  }

  private finishExec(cid: number, status: number, result: number, resultHi: number): void {
    const w = this.waiters[cid];
    this.waiters[cid] = undefined;
    if (!w) return;
    w.status = status;
    w.result = result;
    w.resultHi = resultHi;
    w.done = true;
  }

  private failExec(cid: number, error: Error): void {
    const w = this.waiters[cid];
    this.waiters[cid] = undefined;
    if (!w) return;
    w.error = error;
    w.done = true;
  }

  private pushBacklog(tag: number, status: number, result: number): void {
    this.backlogTag.push(tag);
    this.backlogStatus.push(status);
    this.backlogResult.push(result);
  }

  private deliverBacklog(handler: CompletionHandler): number {
    const tags = this.backlogTag.splice(0);
    const statuses = this.backlogStatus.splice(0);
    const results = this.backlogResult.splice(0);
    for (let i = 0; i < tags.length; i++) handler(tags[i]!, statuses[i]!, results[i]!);
    return tags.length;
  }

  private resetCids(): void {
    const n = this.cidCount;
    for (let i = 0; i < n; i++) this.freeCids[i] = n - 1 - i;
    this.freeTop = n;
    this.cidState.fill(CID_FREE);
    this.cidKind.fill(KIND_FAST);
    this.waiters.fill(undefined);
    this.outstandingCount = 0;
    this.quarantinedCount = 0;
  }

  private describeOpcode(opcode: number): string {
    return `opcode 0x${(opcode & 0xff).toString(16).padStart(2, '0')}`;
  }

  private free_(): void {
    if (this.borrowedMemory) return;
    this.transport.dma.free(this.sqBuf);
    this.transport.dma.free(this.cqBuf);
  }

  /**
   * Diagnostics and tests only: the CQ memory as dwords, the slot the driver reads next and the phase it
   * expects there. Not part of the data path.
   */
  _debugCompletionQueue(): { dw: Uint32Array; head: number; phase: number } {
    return { dw: this.cq, head: this.cqr.head, phase: this.cqr.phase === 0 ? 0 : 1 };
  }

  // ---------------------------------------------------------------- lifecycle (driven by the Controller)

  /** @internal The controller created the queue: start accepting commands. */
  _activate(): void {
    if (this.deleted) throw new NvmeError(`queue ${this.qid} was deleted`);
    this.live = true;
    this.accepting = true;
    this.created = true;
    this.epoch = performance.now();
    this.lastTick = this.epoch;
  }

  /**
   * @internal Stop using the queue (controller reset or removal): every outstanding command is completed
   * with `status` through the next poll(), exec() waiters reject with `makeError(ctx)`, quarantined CIDs are
   * released. The CQ is no longer read and no doorbell is written until _reinit + _activate.
   */
  _suspend(status: number, makeError: (ctx: CommandContext) => Error): number {
    this.live = false;
    this.accepting = false;
    let n = 0;
    for (let cid = 0; cid < this.cidCount; cid++) {
      const st = this.cidState[cid];
      if (st === CID_FREE || st === CID_QUARANTINED) continue;
      n++;
      if (this.cidKind[cid] !== KIND_FAST) this.failExec(cid, makeError({ opcode: this.opcodes[cid]!, qid: this.qid, cid }));
      else this.pushBacklog(this.tags[cid]!, status, 0);
    }
    this.resetCids();
    this.stats.resets++;
    return n;
  }

  /** @internal Zero the queue memory and indices so the controller can create the queue afresh. */
  _reinit(): void {
    this.sqBuf.bytes.fill(0);
    this.cqBuf.bytes.fill(0);
    this.sqw.reset();
    this.cqr.reset();
  }

  /** @internal Stop accepting submissions (deletion in progress); completions are still reaped. */
  _stopAccepting(): void {
    this.accepting = false;
  }

  /** @internal Reap whatever the controller posted (e.g. "aborted due to SQ deletion") into the backlog. */
  _drain(): void {
    if (this.live) this.reap(this.deferToBacklog, this.entries);
  }

  /**
   * @internal The queue is gone from the controller: fail what is left with `status` (through the next poll()),
   * and free the queue memory. poll() keeps delivering the backlog; submissions return -1.
   */
  _delete(status: number, makeError: (ctx: CommandContext) => Error): void {
    if (this.deleted) return;
    this._suspend(status, makeError);
    this.stats.resets--; // a deletion is not a reset
    this.deleted = true;
    this.created = false;
    this.free_();
  }
}
