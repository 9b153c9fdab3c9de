/**
 * Deep-queue reads of files through a lease: a file's extents become read commands (physically adjacent
 * extents coalesced, each command at most the controller's largest transfer and one slot of the reader's data
 * memory), up to `depth` of them in flight on the lease's queue pair, across as many files as are being read.
 *
 * One ExtentReader per lease: it carves the lease's data memory into `depth` slots (raw: one buffer from the
 * attached queue pair's DMA allocator, plus a PRP list page range per slot, so a command's PRPs are written in
 * place with no allocation; mediated: the grant's data buffer, slot i at byte offset i * slot size, which is
 * what prp1 carries) and runs one pump: submit into free slots from the queued files in order, ring once per
 * batch, poll, hand each finished command's bytes to its file's `dest` (trimmed to the file size), repeat.
 * Holes, unwritten extents and the tail past the last extent are delivered as zeros, so `dest` sees every byte
 * of [0, size) exactly once.
 *
 * Failures are per file: a bad completion fails its file with one HomidClientError naming the LBAs and the
 * status; a command that does not complete in `timeoutMs` fails its file (its slot is not reused: the device
 * may still write there); the extent map's generation moving during the read fails the file ('file changed
 * during read'). homid going away (the raw queue pair detached, the mediated queue abandoned or revoked) fails
 * every file of the reader.
 */
import type { AttachedQueuePair } from '../driver/attach.js';
import type { DmaBuffer } from '../mem/dma.js';
import type { ExtentSnapshot } from '../ipc/extent-table.js';
import { NvmOpcode } from '../nvme/opcodes.js';
import { prpListPagesNeeded, writePrps } from '../nvme/prp.js';
import { STATUS_TIMEOUT, statusName } from '../nvme/status.js';
import { ClientErrorCode, HomidClientError } from './errors.js';
import type { MediatedQueuePair } from './mediated-queue.js';
import type { Lease } from './lease.js';

/** Receives bytes [fileOffset, fileOffset + bytes.length) of a file; must copy them before it returns. */
export type ReadDest = (fileOffset: number, bytes: Uint8Array) => void;

export interface ReadOptions {
  /** Commands in flight at most (default 64; capped by the queue's capacity and the data memory). */
  depth?: number;
  /** Largest command in bytes (default the controller's largest transfer, else 128 KiB). */
  maxBytes?: number;
  /** A command not completed after this long fails its file (default 10 s). */
  timeoutMs?: number;
}

/** What a reader did (cumulative over every file it read). */
export interface ReadStats {
  /** Files finished (read or failed). */
  files: number;
  /** Files that failed. */
  failedFiles: number;
  /** Extents read from the device (holes, unwritten extents and zero-length extents not counted). */
  extents: number;
  /** Read commands submitted. */
  commands: number;
  /** File bytes delivered from the device. */
  bytes: number;
  /** File bytes delivered as zeros (holes, unwritten extents). */
  zeroBytes: number;
  /** Most commands in flight at once. */
  maxInFlight: number;
}

export const DEFAULT_READ_DEPTH = 64;
/** The largest command when neither the grant nor the caller says (the emulator's and most devices' MDTS). */
export const DEFAULT_MAX_COMMAND_BYTES = 128 * 1024;
export const DEFAULT_READ_TIMEOUT_MS = 10_000;
/** Zeros delivered for holes come from this buffer, in pieces of at most its size. */
const ZEROS = new Uint8Array(256 * 1024);
/** The pump keeps spinning (setImmediate) this long after the last progress, then waits 1 ms at a time. */
const SPIN_MS = 2;
/** The pump returns to the event loop at least once per this many rounds. */
const ROUNDS_PER_TURN = 64;
/** Clock reads (timeouts) once per this many pump rounds. */
const CLOCK_EVERY = 8;

const SLOT_FREE = 0;
const SLOT_BUSY = 1;
/** Timed out: the device may still write into it, so it is never used again. */
const SLOT_LOST = 2;

/** One read command: `nlb` blocks from `lba` into a slot; segments (slot offset, file offset, bytes) say where its bytes go. */
export interface ReadCommand {
  readonly lba: number;
  readonly nlb: number;
  /** Triples: slot byte offset, file byte offset, byte count. */
  readonly segs: readonly number[];
}

/** A file's read plan: its commands, the byte ranges that read as zeros, the extents read. */
export interface ReadPlan {
  readonly size: number;
  readonly commands: ReadCommand[];
  /** Pairs: file byte offset, byte count. */
  readonly zeros: number[];
  readonly extents: number;
}

function isByteCount(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/**
 * The commands that read the extents of `snap` from a namespace of `blockSize`-byte blocks (`blocks` of them),
 * each at most `commandBytes` (a multiple of the block size): extents in file order; an extent that starts
 * where the previous one ended on the device continues the same command. Unwritten extents, holes and the tail
 * past the last extent read as zeros. Extents whose bytes are not on the device as the file's bytes (inline,
 * delayed allocation, encoded, unknown location) make the file unreadable here: refused rather than guessed.
 */
export function planRead(snap: ExtentSnapshot, blockSize: number, blocks: number, commandBytes: number): ReadPlan {
  const size = snap.size;
  if (!snap.valid) throw new HomidClientError(ClientErrorCode.Unreadable, 'homid could not map the file (its extent map is published as invalid)');
  if (!isByteCount(size)) throw new HomidClientError(ClientErrorCode.Unreadable, `the extent map gives a bad file size ${size}`);
  if (commandBytes < blockSize || commandBytes % blockSize !== 0) throw new RangeError(`command size ${commandBytes} is not a multiple of the ${blockSize}-byte block`);
  const commands: ReadCommand[] = [];
  const zeros: number[] = [];
  let extents = 0;
  let covered = 0; // file bytes [0, covered) are planned (read or zeros)
  // the command being built
  let segs: number[] = [];
  let startByte = -1; // device byte offset of its first block
  let physEnd = -1; // device byte offset just past its last segment
  const flush = (): void => {
    if (startByte < 0) return;
    const lba = startByte / blockSize;
    const nlb = Math.ceil((physEnd - startByte) / blockSize);
    if (lba + nlb > blocks) throw new HomidClientError(ClientErrorCode.Unreadable, `the extent map names LBAs ${lba}..${lba + nlb - 1}, past the end of the namespace (${blocks} blocks)`);
    commands.push({ lba, nlb, segs });
    segs = [];
    startByte = -1;
    physEnd = -1;
  };
  const zero = (from: number, to: number): void => {
    if (to > from) zeros.push(from, to - from);
  };
  for (const e of snap.extents) {
    if (!isByteCount(e.logical) || !isByteCount(e.physical) || !isByteCount(e.length) || !Number.isSafeInteger(e.physical + e.length)) {
      throw new HomidClientError(ClientErrorCode.Unreadable, `extent at file offset ${e.logical} (device byte ${e.physical}, ${e.length} bytes) is not made of exact non-negative integers`);
    }
    if (e.length === 0 || e.logical >= size) continue;
    if (e.logical < covered) throw new HomidClientError(ClientErrorCode.Unreadable, `extents overlap or are out of order at file offset ${e.logical}`);
    for (const f of ['inline', 'delalloc', 'encoded', 'unknown'] as const) {
      if (e.flags.includes(f)) {
        throw new HomidClientError(
          ClientErrorCode.Unreadable,
          `extent at file offset ${e.logical} is ${f}: its bytes are not on the device as the file's bytes, so they cannot be read through a queue pair`,
        );
      }
    }
    const n = Math.min(e.length, size - e.logical);
    zero(covered, e.logical);
    covered = e.logical + n;
    if (e.flags.includes('unwritten')) {
      zero(e.logical, covered);
      continue;
    }
    extents++;
    let off = 0;
    while (off < n) {
      const phys = e.physical + off;
      if (startByte >= 0 && (phys !== physEnd || physEnd >= startByte + commandBytes)) flush();
      if (startByte < 0) {
        startByte = Math.floor(phys / blockSize) * blockSize;
        physEnd = phys;
      }
      const take = Math.min(n - off, startByte + commandBytes - phys);
      segs.push(phys - startByte, e.logical + off, take);
      physEnd = phys + take;
      off += take;
    }
  }
  flush();
  zero(covered, size);
  return { size, commands, zeros, extents };
}

interface Job {
  readonly plan: ReadPlan;
  readonly dest: ReadDest;
  readonly handle: ExtentMapView | null;
  /** Next command to submit. */
  next: number;
  inFlight: number;
  error: Error | null;
  settled: boolean;
  resolve(): void;
  reject(e: Error): void;
}

/** What the reader needs of a published extent map (client/index.ts ExtentMapHandle is one). */
export interface ExtentMapView {
  /** The snapshot read last (at resolution, or by the last read()). */
  readonly last: ExtentSnapshot;
  /** True when homid rebuilt (or is rebuilding) the map since `last`. */
  readonly changed: boolean;
}

/** Readers open on a lease: readExtents joins the one that is open rather than carving the memory twice. */
const openReaders = new WeakMap<Lease, ExtentReader>();

function isHandle(src: ExtentSnapshot | ExtentMapView): src is ExtentMapView {
  return 'changed' in src && 'last' in src;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * The deep-queue reader of one lease. read() may be called for many files at once: their commands share the
 * queue (the pump submits the next file's commands as soon as the previous file's are all submitted), so small
 * files keep the queue full together. close() frees the reader's memory once every read is over.
 */
export class ExtentReader {
  /** Commands in flight at most. */
  readonly depth: number;
  /** Largest command in bytes (and the size of one slot). */
  readonly commandBytes: number;
  readonly timeoutMs: number;
  readonly stats: ReadStats = { files: 0, failedFiles: 0, extents: 0, commands: 0, bytes: 0, zeroBytes: 0, maxInFlight: 0 };
  /** The memory the device reads into (raw: DMA buffer of the queue pair; mediated: the grant's data buffer). */
  readonly staging: Uint8Array;
  /** Bytes of one slot of `staging` (slot i starts at byte i * slotBytes). */
  readonly slotBytes: number;

  private readonly lease: Lease;
  private readonly blockSize: number;
  private readonly nsid: number;
  private readonly blocks: number;
  private readonly submitCommand: (slot: number, lba: number, nlb: number) => boolean;
  private readonly release: () => void;

  private readonly slotJob: (Job | null)[];
  private readonly slotCmd: (ReadCommand | null)[];
  private readonly slotState: Uint8Array;
  private readonly slotStamp: Float64Array;
  private readonly freeSlots: Int32Array;
  private freeTop: number;
  private inFlight = 0;

  /** Jobs whose commands are not all submitted, in order; `head` is the one submitting now. */
  private readonly queued: Job[] = [];
  private head = 0;
  /** Jobs not settled. */
  private active = 0;
  private pumping = false;
  private closing = false;
  private closed = false;
  /** readExtents callers using this reader (a reader readExtents made closes when the last one is done), or -1 for a reader of its owner. */
  private users = -1;
  /** Why the reader cannot read any more (homid went away), or null. */
  private dead: HomidClientError | null = null;
  private readonly onComplete: (tag: number, status: number) => void;

  constructor(lease: Lease, opts: ReadOptions = {}) {
    if (openReaders.has(lease)) throw new HomidClientError(ClientErrorCode.Busy, `queue pair ${lease.qid} already has a reader: close it first`);
    this.lease = lease;
    const g = lease.grant;
    this.blockSize = g.blockSize;
    this.nsid = g.nsid;
    this.blocks = g.blocks;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
    const bs = g.blockSize;
    const wantDepth = Math.max(1, Math.floor(opts.depth ?? DEFAULT_READ_DEPTH));
    const mdts = g.maxTransferBytes > 0 ? g.maxTransferBytes : Infinity;
    // one command is at most 65536 blocks (CDW12 NLB) and a whole number of blocks
    let cmd = Math.min(opts.maxBytes ?? (mdts === Infinity ? DEFAULT_MAX_COMMAND_BYTES : mdts), mdts, 65536 * bs);
    cmd = Math.floor(cmd / bs) * bs;
    if (cmd < bs) throw new HomidClientError(ClientErrorCode.Unreadable, `commands of at most ${opts.maxBytes ?? mdts} bytes cannot read one ${bs}-byte block`);
    let depth = Math.min(wantDepth, lease.qp.capacity);
    if (lease.mode === 'raw') {
      const qp = lease.qp;
      const page = qp.dma.pageSize;
      const unit = Math.max(page, bs);
      // the data region, less what others hold; each slot needs its bytes (whole pages) plus its PRP list pages
      const region = lease.grant.data.bytes;
      const room = region - qp.dma.allocatedBytes;
      const need = (c: number): number => c + prpListPagesNeeded(0, c, page) * page;
      const fit = (d: number): number => {
        // the largest slot (a multiple of `unit`, at most cmd rounded up to pages) that `d` slots of fit in `room`
        let c = Math.min(Math.ceil(cmd / unit) * unit, Math.floor(room / d / unit) * unit);
        while (c >= unit && d * need(c) > room) c -= unit;
        return c;
      };
      let slot = fit(depth);
      while (slot < unit && depth > 1) {
        depth = Math.max(1, Math.floor(depth / 2));
        slot = fit(depth);
      }
      if (slot < unit)
        throw new HomidClientError(ClientErrorCode.NoMemory, `the queue pair's data region (${region} bytes, ${qp.dma.allocatedBytes} in use) has no room for one ${unit}-byte read buffer`);
      cmd = Math.min(cmd, Math.floor(slot / bs) * bs);
      const listPages = prpListPagesNeeded(0, slot, page);
      let data: DmaBuffer;
      let lists: DmaBuffer | null = null;
      try {
        data = qp.dma.alloc(depth * slot, page);
      } catch (e) {
        throw new HomidClientError(ClientErrorCode.NoMemory, `cannot take ${depth * slot} bytes of read buffers from the queue pair's data region: ${(e as Error).message}`);
      }
      try {
        if (listPages > 0) lists = qp.dma.alloc(depth * listPages * page, page);
      } catch (e) {
        qp.dma.free(data);
        throw new HomidClientError(ClientErrorCode.NoMemory, `cannot take PRP list pages from the queue pair's data region: ${(e as Error).message}`);
      }
      const dataIova = data.iova;
      const listIova = lists?.iova ?? 0;
      const listWords = lists ? new Uint32Array(lists.bytes.buffer, lists.bytes.byteOffset, lists.size >>> 2) : new Uint32Array(0);
      const listSlotBytes = listPages * page;
      const listSlotWords = listSlotBytes >>> 2;
      const nsid = this.nsid;
      this.staging = data.bytes;
      this.commandBytes = cmd;
      this.slotBytes = slot;
      this.submitCommand = (s, lba, nlb) => {
        const iova = dataIova + s * slot;
        const prp2 = writePrps(iova, nlb * bs, page, listWords, s * listSlotWords, listIova + s * listSlotBytes);
        return qp.submitIo(NvmOpcode.Read, nsid, lba, nlb, iova, prp2, s) >= 0;
      };
      this.release = () => {
        try {
          qp.dma.free(data);
          if (lists) qp.dma.free(lists);
        } catch {
          // the queue pair was detached: its memory is gone with it
        }
      };
    } else {
      const q: MediatedQueuePair = lease.qp;
      const bytes = q.data.byteLength;
      // slots start on 4 KiB boundaries (dword alignment is what homid checks; pages keep the PRPs short)
      const unit = Math.max(4096, bs);
      let slot = Math.min(Math.ceil(cmd / unit) * unit, Math.floor(bytes / depth / unit) * unit);
      if (slot < unit) {
        slot = unit;
        depth = Math.floor(bytes / unit);
      }
      if (depth < 1) throw new HomidClientError(ClientErrorCode.NoMemory, `the mediated data buffer (${bytes} bytes) cannot hold one ${unit}-byte read`);
      cmd = Math.min(cmd, Math.floor(slot / bs) * bs);
      const nsid = this.nsid;
      this.staging = q.data;
      this.commandBytes = cmd;
      this.slotBytes = slot;
      this.submitCommand = (s, lba, nlb) => q.submitIo(NvmOpcode.Read, nsid, lba, nlb, s * slot, 0, s) >= 0;
      this.release = () => undefined;
    }
    this.depth = depth;
    this.slotJob = new Array<Job | null>(depth).fill(null);
    this.slotCmd = new Array<ReadCommand | null>(depth).fill(null);
    this.slotState = new Uint8Array(depth);
    this.slotStamp = new Float64Array(depth);
    this.freeSlots = new Int32Array(depth);
    for (let i = 0; i < depth; i++) this.freeSlots[i] = depth - 1 - i;
    this.freeTop = depth;
    this.onComplete = (tag, status) => this.complete(tag, status);
    openReaders.set(lease, this);
  }

  /** readExtents: the lease's shared reader (made on first use, closed after the last use), or its owner's reader. */
  static async readShared(lease: Lease, src: ExtentSnapshot | ExtentMapView, dest: ReadDest, opts: ReadOptions): Promise<void> {
    let r = openReaders.get(lease);
    if (r !== undefined && r.users < 0) return r.read(src, dest);
    if (r === undefined) {
      r = new ExtentReader(lease, opts);
      r.users = 0;
    }
    r.users++;
    r.closing = false; // a shared reader closing after its last use is in use again
    try {
      await r.read(src, dest);
    } finally {
      if (--r.users === 0) r.close();
    }
  }

  /** The reader open on `lease`, if any. */
  static of(lease: Lease): ExtentReader | null {
    return openReaders.get(lease) ?? null;
  }

  /** Commands in flight now. */
  get outstanding(): number {
    return this.inFlight;
  }

  /**
   * Read the file that `src` maps into `dest` (every byte of [0, size), in no particular order). With an
   * ExtentMapView (an ExtentMapHandle), the file fails with 'file-changed' when its map moved since it was resolved (or last read)
   * or moves before the read is over. Resolves when every byte is delivered.
   */
  read(src: ExtentSnapshot | ExtentMapView, dest: ReadDest): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.closing) return Promise.reject(new HomidClientError(ClientErrorCode.Busy, 'the reader is closed'));
    let handle: ExtentMapView | null = null;
    let plan: ReadPlan;
    try {
      let snap: ExtentSnapshot;
      if (isHandle(src)) {
        handle = src;
        if (src.changed) throw changedError('after its extents were resolved');
        snap = src.last;
      } else snap = src;
      plan = planRead(snap, this.blockSize, this.blocks, this.commandBytes);
      // zeros first: they need no device
      const z = plan.zeros;
      for (let i = 0; i < z.length; i += 2) {
        const end = z[i]! + z[i + 1]!;
        for (let off = z[i]!; off < end; off += ZEROS.length) {
          const n = Math.min(ZEROS.length, end - off);
          dest(off, ZEROS.subarray(0, n));
          this.stats.zeroBytes += n;
        }
      }
    } catch (e) {
      this.stats.files++;
      this.stats.failedFiles++;
      return Promise.reject(e as Error);
    }
    this.stats.extents += plan.extents;
    return new Promise<void>((resolve, reject) => {
      const job: Job = { plan, dest, handle, next: 0, inFlight: 0, error: null, settled: false, resolve, reject };
      this.active++;
      if (plan.commands.length === 0) {
        this.settle(job);
        return;
      }
      this.queued.push(job);
      if (!this.pumping) void this.pump();
    });
  }

  /** Free the reader's memory once every read is over (reads already started go on; new ones are refused). */
  close(): void {
    this.closing = true;
    if (this.active === 0) this.finishClose();
  }

  private finishClose(): void {
    if (this.closed) return;
    this.closed = true;
    if (openReaders.get(this.lease) === this) openReaders.delete(this.lease);
    // slots lost to timeouts may still be written by the device: keep raw memory that held one
    for (let s = 0; s < this.depth; s++) if (this.slotState[s] === SLOT_LOST) return;
    this.release();
  }

  /** Why homid is no longer reachable through this lease, or null. */
  private goneReason(): string | null {
    const l = this.lease;
    if (l.mode === 'raw') {
      const qp = l.qp as AttachedQueuePair;
      if (qp.isDetached) return `queue pair ${l.qid} was detached (the connection to homid closed)`;
      if (qp.state === 'deleted') return `queue pair ${l.qid} was deleted`;
      return null;
    }
    const q = l.qp;
    if (q.abandoned !== null) return q.abandoned;
    if (q.revoked) return `homid revoked mediated queue pair ${l.qid}`;
    return null;
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    const qp = this.lease.qp;
    let lastProgress = performance.now();
    let rounds = 0;
    try {
      while (this.active > 0) {
        const gone = this.goneReason();
        if (gone !== null) {
          this.die(new HomidClientError(ClientErrorCode.HomidGone, `read through queue pair ${this.lease.qid} stopped: ${gone}`));
          break;
        }
        let submitted = 0;
        let stamp = -1;
        while (this.freeTop > 0 && this.head < this.queued.length) {
          const job = this.queued[this.head]!;
          if (job.error !== null || job.next >= job.plan.commands.length) {
            this.head++;
            continue;
          }
          const slot = this.freeSlots[this.freeTop - 1]!;
          const cmd = job.plan.commands[job.next]!;
          if (!this.submitCommand(slot, cmd.lba, cmd.nlb)) break;
          this.freeTop--;
          if (stamp < 0) stamp = performance.now();
          this.slotJob[slot] = job;
          this.slotCmd[slot] = cmd;
          this.slotState[slot] = SLOT_BUSY;
          this.slotStamp[slot] = stamp;
          job.next++;
          job.inFlight++;
          this.inFlight++;
          submitted++;
        }
        if (this.head > 256 && this.head * 2 > this.queued.length) {
          this.queued.splice(0, this.head);
          this.head = 0;
        }
        if (submitted > 0) {
          qp.ring();
          this.stats.commands += submitted;
          if (this.inFlight > this.stats.maxInFlight) this.stats.maxInFlight = this.inFlight;
        }
        const reaped = this.inFlight > 0 ? qp.poll(this.onComplete) : 0;
        const progress = submitted > 0 || reaped > 0;
        rounds++;
        const clock = (rounds & (CLOCK_EVERY - 1)) === 0;
        if (progress || clock) {
          const now = performance.now();
          if (progress) lastProgress = now;
          if (clock) {
            this.expire(now);
            // nothing in flight and nothing accepted for a whole timeout: the queue is stuck (or every slot was lost)
            if (this.inFlight === 0 && this.active > 0 && now - lastProgress > this.timeoutMs) {
              this.failQueued(
                new HomidClientError(ClientErrorCode.ReadTimeout, `queue pair ${this.lease.qid} accepted no read for ${this.timeoutMs} ms (${this.freeTop} of ${this.depth} read buffers usable)`),
              );
            }
          }
          if (!progress && now - lastProgress >= SPIN_MS) {
            await sleep(1);
            continue;
          }
        }
        if (!progress || rounds % ROUNDS_PER_TURN === 0) await turn();
      }
    } catch (e) {
      // a bug or a throwing queue: nothing can be trusted any more
      this.die(e instanceof HomidClientError ? e : new HomidClientError(ClientErrorCode.ReadFailed, `read through queue pair ${this.lease.qid} failed: ${(e as Error).message}`));
    } finally {
      this.pumping = false;
    }
    if (this.active === 0 && this.closing) this.finishClose();
  }

  /** A completion for slot `tag`. */
  private complete(tag: number, status: number): void {
    if (tag < 0 || tag >= this.depth || this.slotState[tag] !== SLOT_BUSY) return; // a slot given up on
    const job = this.slotJob[tag]!;
    const cmd = this.slotCmd[tag]!;
    this.slotJob[tag] = null;
    this.slotCmd[tag] = null;
    this.inFlight--;
    job.inFlight--;
    if (status === STATUS_TIMEOUT) {
      // the queue pair gave up on it: the device may still write the slot
      this.slotState[tag] = SLOT_LOST;
      this.fail(job, new HomidClientError(ClientErrorCode.ReadTimeout, `read of LBAs ${cmd.lba}..${cmd.lba + cmd.nlb - 1} timed out (${statusName(status)})`));
    } else {
      this.slotState[tag] = SLOT_FREE;
      this.freeSlots[this.freeTop++] = tag;
      if (status !== 0) {
        const gone = this.goneReason();
        if (gone !== null) this.fail(job, new HomidClientError(ClientErrorCode.HomidGone, `read of LBAs ${cmd.lba}..${cmd.lba + cmd.nlb - 1} through queue pair ${this.lease.qid} stopped: ${gone}`));
        else this.fail(job, new HomidClientError(ClientErrorCode.ReadFailed, `read of LBAs ${cmd.lba}..${cmd.lba + cmd.nlb - 1} failed: ${statusName(status)} (status 0x${status.toString(16)})`));
      } else if (job.error === null) {
        const segs = cmd.segs;
        const at = tag * this.slotBytes;
        try {
          for (let i = 0; i < segs.length; i += 3) {
            const from = at + segs[i]!;
            job.dest(segs[i + 1]!, this.staging.subarray(from, from + segs[i + 2]!));
            this.stats.bytes += segs[i + 2]!;
          }
        } catch (e) {
          this.fail(job, e as Error);
        }
      }
    }
    this.maybeSettle(job);
  }

  /** Commands in flight longer than the timeout fail their files; their slots are given up. */
  private expire(now: number): void {
    if (this.inFlight === 0) return;
    for (let s = 0; s < this.depth; s++) {
      if (this.slotState[s] !== SLOT_BUSY || now - this.slotStamp[s]! <= this.timeoutMs) continue;
      const job = this.slotJob[s]!;
      const cmd = this.slotCmd[s]!;
      this.slotState[s] = SLOT_LOST;
      this.slotJob[s] = null;
      this.slotCmd[s] = null;
      this.inFlight--;
      job.inFlight--;
      this.fail(
        job,
        new HomidClientError(ClientErrorCode.ReadTimeout, `read of LBAs ${cmd.lba}..${cmd.lba + cmd.nlb - 1} through queue pair ${this.lease.qid} did not complete in ${this.timeoutMs} ms`),
      );
      this.maybeSettle(job);
    }
  }

  private fail(job: Job, e: Error): void {
    if (job.error === null) job.error = e;
  }

  private maybeSettle(job: Job): void {
    if (job.settled || job.inFlight > 0) return;
    if (job.error === null && job.next < job.plan.commands.length) return;
    this.settle(job);
  }

  private settle(job: Job): void {
    job.settled = true;
    this.active--;
    this.stats.files++;
    if (job.error === null && job.handle !== null && job.handle.changed) job.error = changedError('during read');
    if (job.error !== null) {
      this.stats.failedFiles++;
      job.reject(job.error);
    } else job.resolve();
    if (this.active === 0 && this.closing && !this.pumping) this.finishClose();
  }

  /** Fail every job not yet settled that has nothing in flight (the queue accepts nothing). */
  private failQueued(e: HomidClientError): void {
    for (let i = this.head; i < this.queued.length; i++) {
      const job = this.queued[i]!;
      if (job.settled) continue;
      this.fail(job, e);
      this.maybeSettle(job);
    }
  }

  /** homid is gone: every file fails now, in flight or not, and later reads are refused. */
  private die(e: HomidClientError): void {
    this.dead = e;
    for (let s = 0; s < this.depth; s++) {
      if (this.slotState[s] !== SLOT_BUSY) continue;
      const job = this.slotJob[s]!;
      this.slotState[s] = SLOT_LOST;
      this.slotJob[s] = null;
      this.slotCmd[s] = null;
      this.inFlight--;
      job.inFlight--;
      this.fail(job, e);
      this.maybeSettle(job);
    }
    this.failQueued(e);
  }
}

function changedError(when: string): HomidClientError {
  return new HomidClientError(ClientErrorCode.FileChanged, `file changed ${when}: homid rebuilt its extent map; read it again`);
}

/**
 * Read the file that `src` maps through `lease` into `dest`, up to `depth` commands in flight. Calls on one
 * lease share one reader (its depth and command size are those of the call that made it), so concurrent calls
 * keep one queue full together; a reader opened on the lease by its owner (new ExtentReader) is used as it is.
 * See ExtentReader.read.
 */
export function readExtents(lease: Lease, src: ExtentSnapshot | ExtentMapView, dest: ReadDest, opts: ReadOptions = {}): Promise<void> {
  return ExtentReader.readShared(lease, src, dest, opts);
}
