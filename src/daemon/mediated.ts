/**
 * Mediated queues (homid side). A client not trusted with raw queues gets a software SQ/CQ in shared memory
 * (mediated-ring.ts) and a data buffer the device can reach. homid's poller copies every new SQE out of the
 * shared ring (so the client cannot change it after the check), checks it against the client's grant
 * (opcode, namespace, LBA range inside the files the client passed descriptors for, write only if granted,
 * data range inside the data buffer), builds a fresh command from the checked fields and submits it to a
 * hardware queue pair homid owns, then relays the completion with the client's CID. A command outside the
 * grant completes with SCT 2 / SC 86h (Access Denied) and is reported through onDenied; nothing reaches the
 * device.
 *
 * The ring mechanics are src/nvme/ring.ts (an SqReader over the client's SQ, a CqWriter posting to its CQ) and
 * the PRPs come from src/nvme/prp.ts (writePrps, the driver's writer too). A completion status from the hardware
 * queue is relayed as the client's CQE status field (bits 14:0); a host outcome on homid's side (timeout, reset,
 * removal: SCT 3 path-related statuses, src/nvme/status.ts) keeps its cause in the CQE's DW1 (RING_CQE_DW_HOST).
 */
import type { DmaAllocator, DmaBuffer } from '../mem/dma.js';
import { makeStatus } from '../nvme/cqe.js';
import { NvmOpcode } from '../nvme/opcodes.js';
import { writePrps } from '../nvme/prp.js';
import { CqWriter, SqReader } from '../nvme/ring.js';
import { SQE_CID_SHIFT, SQE_DW_CDW0, SQE_DW_CDW10, SQE_DW_CDW11, SQE_DW_CDW12, SQE_DW_DPTR0, SQE_DW_DPTR1, SQE_DW_NSID, SQE_FUSE_SHIFT, TWO_POW_32, sqeCdw0 } from '../nvme/sqe.js';
import { GenericStatus, HOST_CAUSE_SHIFT, STATUS_FIELD_MASK, Sct } from '../nvme/status.js';
import type { QueuePair } from '../driver/queue-pair.js';
import type { DirectHwQueue } from './direct-hw.js';
import { H_CQ_HEAD, H_HWCQ_HEAD, H_SQ_HEAD, H_SQ_TAIL, H_STATE, RING_STATE_REVOKED, initRing, type RingViews } from '../ipc/mediated-ring.js';
import type { SharedRegion } from './shared-region.js';

/** SCT 2 (Media and Data Integrity Errors) / SC 86h: Access Denied. */
export const STATUS_ACCESS_DENIED = makeStatus(Sct.MediaDataIntegrity, 0x86);
export const STATUS_INVALID_FIELD = makeStatus(Sct.Generic, GenericStatus.InvalidField);
export const STATUS_INTERNAL = makeStatus(Sct.Generic, GenericStatus.InternalError);
/** SCT 0 / SC 03h: Command ID Conflict (a command reused the identifier of one still in flight). */
export const STATUS_CID_CONFLICT = makeStatus(Sct.Generic, GenericStatus.CommandIdConflict);
/** Command identifiers are 16 bits wide. */
const CID_SPACE = 0x1_0000;
/** CDW12 bits 15:0: number of logical blocks, 0's based. */
const NLB_MASK = 0xffff;
/** CDW0 bits 15:8: FUSE (9:8) and PSDT (15:14); mediated queues take neither fused commands nor SGLs. */
const CDW0_FUSE_PSDT_MASK = 0xff << SQE_FUSE_SHIFT;

/** Sorted, merged half-open LBA intervals [start, end). */
export class LbaSet {
  private starts: Float64Array = new Float64Array(0);
  private ends: Float64Array = new Float64Array(0);
  static of(ranges: Iterable<{ lba: number; count: number }>): LbaSet {
    const s = new LbaSet();
    s.set(ranges);
    return s;
  }
  set(ranges: Iterable<{ lba: number; count: number }>): void {
    const list = [...ranges].filter((r) => r.count > 0).sort((a, b) => a.lba - b.lba);
    const st: number[] = [];
    const en: number[] = [];
    for (const r of list) {
      const e = r.lba + r.count;
      if (st.length > 0 && r.lba <= en[en.length - 1]!) en[en.length - 1] = Math.max(en[en.length - 1]!, e);
      else {
        st.push(r.lba);
        en.push(e);
      }
    }
    this.starts = Float64Array.from(st);
    this.ends = Float64Array.from(en);
  }
  get size(): number {
    return this.starts.length;
  }
  /** True when [lba, lba + count) lies inside one interval. */
  contains(lba: number, count: number): boolean {
    const s = this.starts;
    let lo = 0;
    let hi = s.length - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (s[mid]! <= lba) {
        at = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return at >= 0 && lba + count <= this.ends[at]!;
  }
}

export interface MediatedGrant {
  nsid: number;
  lbaSize: number;
  /** Largest transfer in bytes (MDTS). */
  maxTransfer: number;
  write: boolean;
  /** LBAs of every file the client passed a descriptor for. */
  readable: LbaSet;
  /** LBAs of the files passed with a writable descriptor (used only when write is granted). */
  writable: LbaSet;
}

export interface DeniedCommand {
  queue: number;
  cid: number;
  opcode: number;
  nsid: number;
  slba: number;
  nlb: number;
  reason: string;
}

export interface MediatedStats {
  submitted: number;
  forwarded: number;
  denied: number;
  completed: number;
}

export interface MediatedQueueOptions {
  /** Queue id as the client knows it (written into CQE SQID). */
  id: number;
  entries: number;
  ring: SharedRegion;
  data: DmaBuffer;
  /**
   * Relay mode: a hardware queue pair homid drives; completions come back through homid to the ring's CQ.
   * Direct mode: a hardware SQ homid writes and a CQ the client reaps itself (direct-hw.ts).
   */
  hw: QueuePair | DirectHwQueue;
  dma: DmaAllocator;
  grant: MediatedGrant;
  onDenied: (d: DeniedCommand) => void;
}

export class MediatedQueue {
  readonly id: number;
  readonly entries: number;
  readonly ring: SharedRegion;
  readonly data: DmaBuffer;
  /** Relay mode's hardware queue pair (null in direct mode). */
  readonly hw: QueuePair | null;
  /** Direct mode's hardware queue (null in relay mode). */
  readonly direct: DirectHwQueue | null;
  readonly grant: MediatedGrant;
  readonly stats: MediatedStats = { submitted: 0, forwarded: 0, denied: 0, completed: 0 };
  private readonly v: RingViews;
  private readonly dma: DmaAllocator;
  private readonly onDenied: (d: DeniedCommand) => void;
  /** The client's SQ, consumed here. */
  private readonly sq: SqReader;
  /**
   * The client's CQ, posted here. Its `head` is the client's CQ head as last read: the client writes H_CQ_HEAD
   * on every poll, so reading it per completion would pull that cache line across cores each time; it is
   * re-read only when the cached value says full.
   */
  private readonly cq: CqWriter;
  private readonly slotCid: Int32Array;
  private readonly freeSlots: Int32Array;
  private freeTop: number;
  private readonly prpPages: DmaBuffer;
  /** 32-bit view of the PRP list pages (one page per hardware slot). */
  private readonly prpWords: Uint32Array;
  private readonly pageSize: number;
  private readonly pendCid: number[] = [];
  private readonly pendStatus: number[] = [];
  private readonly pendResult: number[] = [];
  private readonly onHw: (tag: number, status: number, result: number) => void;
  private revoked = false;
  /**
   * 1 while a forwarded command with that client CID is in flight: a second command with the same CID is
   * refused with Command ID Conflict before it reaches the device. Relay mode: any 16-bit CID; direct mode:
   * CIDs below `entries` (checked first), cleared as the client acknowledges their completions.
   */
  private readonly cidBusy: Uint8Array;

  constructor(o: MediatedQueueOptions) {
    this.id = o.id;
    this.entries = o.entries;
    this.ring = o.ring;
    this.data = o.data;
    const direct = 'acknowledge' in o.hw ? o.hw : null;
    this.direct = direct;
    this.hw = direct ? null : (o.hw as QueuePair);
    this.dma = o.dma;
    this.grant = o.grant;
    this.onDenied = o.onDenied;
    this.v = initRing(o.ring.bytes, o.entries, direct ? { hwQid: direct.qid } : null);
    this.sq = new SqReader(this.v.sq, o.entries);
    this.cq = new CqWriter(this.v.cq, o.entries);
    // relay: one slot (and PRP list page) per hardware command; direct: one PRP list page per client CID
    const slots = direct ? o.entries : Math.min(o.entries, o.hw.capacity);
    // the slot stack tracks relayed commands only (direct mode uses the client's CIDs and direct.outstanding)
    const relaySlots = direct ? 0 : slots;
    this.slotCid = new Int32Array(relaySlots);
    this.freeSlots = new Int32Array(relaySlots);
    for (let i = 0; i < relaySlots; i++) this.freeSlots[i] = relaySlots - 1 - i;
    this.freeTop = relaySlots;
    this.pageSize = o.dma.pageSize;
    this.prpPages = o.dma.alloc(slots * this.pageSize, this.pageSize);
    this.prpWords = new Uint32Array(this.prpPages.bytes.buffer, this.prpPages.bytes.byteOffset, (slots * this.pageSize) >>> 2);
    this.cidBusy = new Uint8Array(direct ? o.entries : CID_SPACE);
    this.onHw = (tag, status, result) => {
      this.freeSlots[this.freeTop++] = tag;
      this.stats.completed++;
      const cid = this.slotCid[tag]!;
      this.cidBusy[cid] = 0;
      this.post(cid, status, result);
    };
  }

  /** Commands forwarded to the device and not yet completed. */
  get inFlight(): number {
    return this.direct ? this.direct.outstanding : this.slotCid.length - this.freeTop;
  }

  /** One polling pass: relay device completions, check and forward new commands. Returns work done. */
  pump(): number {
    if (this.revoked) return 0;
    const direct = this.direct;
    let n = 0;
    if (direct) {
      if (!direct.live) {
        // a controller reset or removal destroyed the hardware queue: the lease is over
        this.revoke();
        return 0;
      }
      if (direct.outstanding !== 0) {
        n = direct.acknowledge(Atomics.load(this.v.header, H_HWCQ_HEAD), this.cidBusy);
        this.stats.completed += n;
      }
    } else if (this.freeTop !== this.slotCid.length) n = this.hw!.poll(this.onHw);
    if (this.pendCid.length > 0) this.flushPending();
    const h = this.v.header;
    const tail = Atomics.load(h, H_SQ_TAIL);
    if (tail < 0 || tail >= this.entries) return n; // a corrupt tail: ignore until the client fixes it
    const sq = this.sq;
    sq.tail = tail;
    const dw = sq.ring;
    let consumed = 0;
    while ((direct ? !direct.full : this.freeTop > 0) && this.pendCid.length < this.entries) {
      const at = sq.take();
      if (at < 0) break;
      // Copy the fields out once; everything below uses the copies.
      const d0 = dw[at + SQE_DW_CDW0]!;
      const nsid = dw[at + SQE_DW_NSID]!;
      const off = dw[at + SQE_DW_DPTR0]! + dw[at + SQE_DW_DPTR1]! * TWO_POW_32;
      const slba = dw[at + SQE_DW_CDW10]! + dw[at + SQE_DW_CDW11]! * TWO_POW_32;
      const nlb = (dw[at + SQE_DW_CDW12]! & NLB_MASK) + 1;
      consumed++;
      this.stats.submitted++;
      this.check(d0, nsid, off, slba, nlb);
    }
    if (consumed > 0) {
      sq.publishTo(h, H_SQ_HEAD);
      if (direct) direct.ring();
      else this.hw!.ring();
      n += consumed;
    }
    return n;
  }

  private check(d0: number, nsid: number, off: number, slba: number, nlb: number): void {
    const opcode = d0 & 0xff;
    const cid = d0 >>> SQE_CID_SHIFT;
    const g = this.grant;
    let reason: string | null = null;
    let status = STATUS_ACCESS_DENIED;
    if (this.direct !== null && cid >= this.entries) {
      status = STATUS_INVALID_FIELD;
      reason = `command identifier ${cid} is out of range (below ${this.entries} on this queue)`;
    } else if (this.cidBusy[cid] !== 0 && !this.reacknowledged(cid)) {
      status = STATUS_CID_CONFLICT;
      reason = `command identifier ${cid} is already in flight on this queue`;
    } else if (opcode === NvmOpcode.Flush) {
      if (nsid !== g.nsid) reason = `namespace ${nsid} is not granted (granted: ${g.nsid})`;
      else return this.forward(cid, opcode, nsid, 0, 1, -1);
    } else if (opcode !== NvmOpcode.Read && opcode !== NvmOpcode.Write) {
      reason = `opcode 0x${opcode.toString(16).padStart(2, '0')} is not granted (read, write, flush only)`;
    } else if ((d0 & CDW0_FUSE_PSDT_MASK) !== 0) {
      status = STATUS_INVALID_FIELD;
      reason = 'fused operations and SGLs are not supported on mediated queues';
    } else if (nsid !== g.nsid) {
      reason = `namespace ${nsid} is not granted (granted: ${g.nsid})`;
    } else if (opcode === NvmOpcode.Write && !g.write) {
      reason = 'write is not granted';
    } else if (!(opcode === NvmOpcode.Write ? g.writable : g.readable).contains(slba, nlb)) {
      reason = `LBAs ${slba}..${slba + nlb - 1} are outside the ${opcode === NvmOpcode.Write ? 'writable ' : ''}files granted`;
    } else {
      const len = nlb * g.lbaSize;
      if (len > g.maxTransfer) {
        status = STATUS_INVALID_FIELD;
        reason = `transfer of ${len} bytes exceeds the ${g.maxTransfer}-byte limit`;
      } else if (off + len > this.data.size || (off & 3) !== 0) {
        status = STATUS_INVALID_FIELD;
        reason = `data range [${off}, ${off + len}) is outside the ${this.data.size}-byte data buffer`;
      } else return this.forward(cid, opcode, nsid, slba, nlb, off);
    }
    this.stats.denied++;
    this.post(cid, status, 0);
    this.onDenied({ queue: this.id, cid, opcode, nsid, slba, nlb, reason });
  }

  /**
   * Direct mode: the client may have reaped the command that held `cid` and published its CQ head after this
   * pass read it (the client publishes the head before it reuses a CID, so the head is visible now that the new
   * SQE is). Acknowledge again and say whether `cid` is free.
   */
  private reacknowledged(cid: number): boolean {
    const direct = this.direct;
    if (direct === null || direct.outstanding === 0) return false;
    this.stats.completed += direct.acknowledge(Atomics.load(this.v.header, H_HWCQ_HEAD), this.cidBusy);
    return this.cidBusy[cid] === 0;
  }

  private forward(cid: number, opcode: number, nsid: number, slba: number, nlb: number, off: number): void {
    const direct = this.direct;
    // direct: the client's CID (checked < entries) is the hardware CID and names the PRP list page
    const slot = direct ? cid : this.freeSlots[--this.freeTop]!;
    if (!direct) this.slotCid[slot] = cid;
    this.cidBusy[cid] = 1;
    let prp1 = 0;
    let prp2 = 0;
    if (off >= 0) {
      // PRPs without allocation: the data buffer is one IOVA range; a transfer is at most one list page long
      // (maxTransfer <= pageSize * pageSize / 8, checked above), and every hardware slot owns one list page.
      const ps = this.pageSize;
      prp1 = this.data.iova + off;
      prp2 = writePrps(prp1, nlb * this.grant.lbaSize, ps, this.prpWords, (slot * ps) >>> 2, this.prpPages.iova + slot * ps);
    }
    if (direct) {
      direct.submit(sqeCdw0(opcode, cid), nsid, slba, nlb, prp1, prp2);
      this.stats.forwarded++;
      return;
    }
    const hwCid = this.hw!.submitIo(opcode, nsid, slba, nlb, prp1, prp2, slot);
    if (hwCid < 0) {
      this.freeSlots[this.freeTop++] = slot;
      this.cidBusy[cid] = 0;
      this.post(cid, STATUS_INTERNAL, 0);
      return;
    }
    this.stats.forwarded++;
  }

  /** Complete the client's command `cid` with a completion status (src/nvme/status.ts) and DW0. */
  private post(cid: number, status: number, result: number): void {
    if (this.pendCid.length > 0 || !this.cqHasRoom()) {
      this.pendCid.push(cid);
      this.pendStatus.push(status);
      this.pendResult.push(result);
      return;
    }
    this.write(cid, status, result);
  }

  private cqHasRoom(): boolean {
    const cq = this.cq;
    if (cq.hasRoom()) return true;
    const head = Atomics.load(this.v.header, H_CQ_HEAD);
    // a corrupt head (out of range) reads as full: completions wait in the pending list, nothing is overwritten
    if (head >= 0 && head < this.entries) cq.head = head;
    return cq.hasRoom();
  }

  /** The status field goes to DW3, the host part of the status (cause, errno) to DW1. */
  private write(cid: number, status: number, result: number): void {
    this.cq.post(result, this.sq.head, this.id, cid, status & STATUS_FIELD_MASK, status >>> HOST_CAUSE_SHIFT);
  }

  private flushPending(): void {
    let i = 0;
    while (i < this.pendCid.length && this.cqHasRoom()) {
      this.write(this.pendCid[i]!, this.pendStatus[i]!, this.pendResult[i]!);
      i++;
    }
    if (i > 0) {
      this.pendCid.splice(0, i);
      this.pendStatus.splice(0, i);
      this.pendResult.splice(0, i);
    }
  }

  /** Stop serving the ring (the lease ends); the hardware queue is deleted by the owner. */
  revoke(): void {
    this.revoked = true;
    Atomics.store(this.v.header, H_STATE, RING_STATE_REVOKED);
  }

  /** Free homid-side memory (after the hardware queue was deleted). */
  free(): void {
    this.dma.free(this.prpPages);
  }
}

/**
 * The poller: pumps every mediated queue. It spins (setImmediate) while there is work or commands in flight
 * and backs off to 1 ms timers when everything is idle.
 */
/** The poller reads the clock on one pass in CLOCK_PASS_MASK + 1. */
const CLOCK_PASS_MASK = 7;

export class MediatedPoller {
  readonly queues = new Set<MediatedQueue>();
  private list: MediatedQueue[] = [];
  private running = false;
  private idleSince = 0;
  // Kept apart: clearImmediate on a Timeout (or clearTimeout on an Immediate) corrupts Node's timer lists.
  private immediate: NodeJS.Immediate | null = null;
  private timeout: NodeJS.Timeout | null = null;
  /** Keep spinning this long after the last work before backing off to 1 ms timers. */
  spinMs = 2;
  /**
   * Longest stretch the poller spins in one event-loop turn while queues are active. Returning to the event
   * loop after every pass costs microseconds per batch; never returning would starve homid's IPC. Bounded here.
   */
  turnMs = 0.25;
  readonly stats = { turns: 0, passes: 0 };

  add(q: MediatedQueue): void {
    this.queues.add(q);
    this.list = [...this.queues];
    this.kick();
  }
  remove(q: MediatedQueue): void {
    this.queues.delete(q);
    this.list = [...this.queues];
  }
  kick(): void {
    this.idleSince = performance.now();
    if (this.running) return;
    this.running = true;
    this.immediate = setImmediate(this.loop);
  }
  private readonly loop = (): void => {
    this.immediate = null;
    this.timeout = null;
    const list = this.list;
    if (list.length === 0) {
      this.running = false;
      return;
    }
    this.stats.turns++;
    const start = performance.now();
    let now = start;
    let active = false;
    for (let pass = 1; ; pass++) {
      for (let i = 0; i < list.length; i++) {
        const q = list[i]!;
        if (q.pump() > 0 || q.inFlight > 0) active = true;
      }
      // a clock read costs tens of nanoseconds, as much as a forwarded command: one every few passes
      if ((pass & CLOCK_PASS_MASK) === 0) {
        this.stats.passes += CLOCK_PASS_MASK + 1;
        now = performance.now();
        if (active) this.idleSince = now;
        active = false;
        if (now - start >= this.turnMs || now - this.idleSince >= this.spinMs) break;
      }
    }
    if (now - this.idleSince < this.spinMs) this.immediate = setImmediate(this.loop);
    else this.timeout = setTimeout(this.loop, 1);
  };
  stop(): void {
    if (this.immediate) clearImmediate(this.immediate);
    if (this.timeout) clearTimeout(this.timeout);
    this.immediate = null;
    this.timeout = null;
    this.running = false;
  }
}
