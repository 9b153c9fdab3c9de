/**
 * The embedded NVMe controller: register state machine (CC/CSTS), queue polling, command fetch and completion,
 * error injection, error log and health counters. Admin and NVM command sets live in admin.ts and io.ts: they
 * see this controller through AdminTarget / IoTarget (command.ts), return their status, and leave the rest of
 * their outcome (result dword, failing LBA, data moved) in a CommandOutcome the controller applies.
 *
 * Runs inside the worker thread (worker.ts calls run()). The host side sees only the BAR SharedArrayBuffer,
 * the control block and DMA memory, exactly like a driver sees a PCIe device.
 *
 * Device windows (emulated P2P, device-window.ts): DMA segments that stand for device memory. A command whose data
 * lands in one has its completion held (a Pending with fences) until the copies to the device are done; the
 * copies of one polling round share one fence per window. Commands that touch no window pay a few compares.
 */
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { DmaSegmentTable } from '../mem/shared-dma.js';
import { makeStatus } from '../nvme/cqe.js';
import {
  AQA_ACQS_SHIFT,
  AQA_ASQS_MASK,
  CAP_CSS_NVM,
  CC_CSS_NVM,
  CC_CSS_SHIFT,
  CC_EN,
  CC_MPS_SHIFT,
  CC_SHN_MASK,
  CC_SHN_SHIFT,
  CSTS_CFS,
  CSTS_RDY,
  CSTS_SHST_COMPLETE,
  CSTS_SHST_MASK,
  CSTS_SHST_OCCURRING,
  CSTS_SHST_SHIFT,
  REG_ACQ,
  REG_AQA,
  REG_ASQ,
  REG_CAP,
  REG_CC,
  REG_CSTS,
  REG_DOORBELL_BASE,
  REG_VS,
  SQE_SIZE,
  CQE_SIZE,
  encodeCap,
} from '../nvme/registers.js';
import { SQE_CID_SHIFT, SQE_DW_CDW10, SQE_DW_CDW11, SQE_DW_NSID, TWO_POW_32 } from '../nvme/sqe.js';
import { WAKE_AWAKE, WAKE_SLEEPING } from './wake.js';
import { adminCommand } from './admin.js';
import { CommandOutcome, TRANSFER_NONE, TRANSFER_READ, type AdminTarget } from './command.js';
import {
  AER_LIMIT,
  AER_INFO_INVALID_DOORBELL_VALUE,
  AER_INFO_SHIFT,
  AER_LOG_PAGE_SHIFT,
  AER_TYPE_ERROR,
  DEFERRED,
  ERROR_LOG_ENTRIES,
  MPSMIN,
  MPSMAX,
  NVME_VERSION,
  ST_ABORTED_SQ_DELETION,
  ST_ABORT_REQUESTED,
  ST_INTERNAL,
  ST_INVALID_DOORBELL_LOG,
} from './constants.js';
import {
  CTL_ACK,
  CTL_AWAKE_HOLDS,
  CTL_SEQ,
  CTL_STATE,
  CTL_STATS_BYTE_OFFSET,
  CTL_STOP,
  CTL_WAKE,
  CTL_WINDOW_ANSWERS,
  STAT_ADMIN_COMMANDS,
  STAT_CELLS,
  STAT_COMMANDS,
  STAT_EP2P_BYTES_FROM_DEVICE,
  STAT_EP2P_BYTES_TO_DEVICE,
  STAT_EP2P_COPIES_FROM_DEVICE,
  STAT_EP2P_COPIES_TO_DEVICE,
  STAT_EP2P_ERRORS,
  STAT_EP2P_FENCES,
  STAT_ERRORS,
  STAT_INVALID_DOORBELLS,
  STAT_IO_COMMANDS,
  STAT_READS,
  STAT_SLEEPS,
  STAT_WRITES,
  WORKER_RUNNING,
  WORKER_STOPPED,
  barSize,
  doorbellCells,
  type SegmentSource,
  type ControlMessage,
  type DeviceWindowTarget,
  type EmuConfig,
  type WindowAnswer,
  type WorkerInit,
  type WorkerMessage,
} from './config.js';
import { DataPath, ST_DATA_TRANSFER } from './datapath.js';
import { COPIES_FAILED, COPIES_PENDING, DeviceWindow, DeviceWindows, Fence, fencesState, type DeviceCopier } from './device-window.js';
import { MemoryCopier } from './memory-copier.js';
import { faultMatches, type FaultRule } from './faults.js';
import { ioCommand } from './io.js';
import type { ErrorEntry, SmartCounters } from './logs.js';
import { createNamespaces, type Namespace, type SharedFile } from './namespace.js';
import { CompletionQueue, SubmissionQueue } from './queues.js';

/** A shared memory mapping as the controller uses it (src/sys/shm.ts ShmRegion). */
export interface EmuShmRegion {
  readonly buffer: ArrayBuffer;
  readonly address: number;
  close(): void;
}
/**
 * Shared memory operations for memfd mode, passed in by the worker (which imports src/sys/shm.ts only in that
 * mode, so the in-process mode never loads the FFI).
 */
export interface EmuShmOps {
  mapShmFd(fd: number, size: number): EmuShmRegion;
  /** Map `size` bytes of a dma-buf fd (checked to be one, at least that big) MAP_SHARED. */
  mapDmaBuf(fd: number, size: number): EmuShmRegion;
  futexWait(address: number, expected: number, timeoutMs: number): 'ok' | 'not-equal' | 'timed-out';
}

/** No sooner than this many idle polls is the clock read. */
const IDLE_CLOCK_EVERY = 64;
/** SMART power-on hours: milliseconds per hour. */
const MS_PER_HOUR = 3_600_000;
/** Queued asynchronous events kept while no request is outstanding. */
const AER_EVENTS_KEPT = 16;
/** takeAsyncEvent(): no event queued. */
const NO_EVENT = -1;

/**
 * A fetched command whose completion is held back (delay / drop fault, copies to a device window). Holds a
 * reserved CQ slot.
 */
export interface Pending {
  sq: SubmissionQueue;
  cid: number;
  status: number;
  result: number;
  /** performance.now() deadline; Infinity: never (dropped). */
  due: number;
  /** Emulated P2P: the copy fences the completion also waits for (null: none). */
  fences: Fence[] | null;
}

/** Error fields a window answer carries to the host. */
function errorInfo(e: unknown): { name: string; message: string; code?: string } {
  if (!(e instanceof Error)) return { name: 'Error', message: String(e) };
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' ? { name: e.name, message: e.message, code } : { name: e.name, message: e.message };
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class Controller implements AdminTarget {
  readonly cfg: EmuConfig;
  readonly regs: Int32Array;
  readonly db: Int32Array;
  readonly ctl: Int32Array;
  readonly stats: Float64Array;
  readonly dma = new DmaSegmentTable();
  readonly dp: DataPath;
  /** Namespaces by nsid (slot 0 unused). */
  readonly ns: Array<Namespace | undefined>;
  readonly nn: number;
  readonly file: SharedFile | null;
  readonly nullMode: boolean;
  /** Largest data transfer, bytes. */
  readonly mdtsBytes: number;
  private readonly mailbox: MessagePort;

  /** Queues by qid. */
  private readonly sqById: Array<SubmissionQueue | undefined>;
  private readonly cqById: Array<CompletionQueue | undefined>;
  /** Existing SQs in qid order (admin first), polled every round. */
  private sqList: SubmissionQueue[] = [];
  private cqList: CompletionQueue[] = [];

  // Register state
  private lastCc = 0;
  private csts = 0;
  private enabled = false;
  private ready = false;
  private fatal = false;
  private shutdownDone = false;
  private readyAt = 0;
  /** Host page size (CC.MPS). */
  private hostPageSize = 4096;
  private sqEntrySizeLog2 = 0;
  private cqEntrySizeLog2 = 0;

  // Features
  private allocatedSqs: number;
  private allocatedCqs: number;
  private writeCache = 1;
  private arbitrationValue = 0;

  // Held completions, aborts of unfetched commands, asynchronous events
  private pending: Pending[] = [];
  private abortOnFetch: Array<{ sqid: number; cid: number }> = [];
  /** Held completions that wait for copies to a device window (Pending.fences non-null). */
  private copyWaits = 0;
  private aerCids: number[] = [];
  private aerEvents: number[] = [];
  private readonly faults: FaultRule[] = [];

  /** The outcome of the command being executed (cleared before each; handlers fill it). */
  private readonly out = new CommandOutcome();

  // Error log and health counters
  private errorCount = 0;
  private readonly errors: ErrorEntry[] = [];
  private unitsRead = 0; // 512-byte units
  private unitsWritten = 0;
  private hostReads = 0;
  private hostWrites = 0;
  private readonly powerCycles = 1;
  private unsafeShutdowns = 0;
  private readonly startTime = performance.now();

  /** Current idle spin before sleeping, ms (adaptive between spinUs and spinMaxUs). */
  private spinMs: number;
  private commands = 0;
  private adminCommands = 0;
  private seenSeq = 0;

  // Emulated P2P: device windows, the windows that started copies this polling round, the fences of the
  // command just executed (set by startWindowCopies, taken by its caller), counters.
  private readonly windows = new DeviceWindows((w, e) => this.windowFailed(w, e));
  private readonly unfenced: DeviceWindow[] = [];
  private heldFences: Fence[] | null = null;
  private ep2pCopiesToDevice = 0;
  private ep2pBytesToDevice = 0;
  private ep2pFences = 0;
  private ep2pErrors = 0;
  /** Work that needs the event loop (loading the CUDA copier): run() returns 'async' so the worker runs it. */
  private asyncTasks: Array<() => Promise<void>> = [];
  /** Messages to the host (logs). */
  private readonly toHost: (m: WorkerMessage) => void;

  /** Shared-memory operations (memfd mode only). */
  private readonly shmOps: EmuShmOps | null;
  /** memfd mode: the BAR mapping, the wake word over it, and the mapped DMA segments by index. */
  private readonly barRegion: EmuShmRegion | null = null;
  private readonly wakeCell: Int32Array | null = null;
  private readonly wakeAddress: number = 0;
  private readonly segRegions = new Map<number, EmuShmRegion>();

  constructor(init: WorkerInit, shmOps: EmuShmOps | null = null, toHost: (m: WorkerMessage) => void = () => {}) {
    this.cfg = init.config;
    this.toHost = toHost;
    this.spinMs = this.cfg.spinUs / 1000;
    this.shmOps = shmOps;
    let bar: ArrayBufferLike;
    if (init.shm) {
      if (shmOps === null) throw new Error('memfd mode needs the shared memory operations');
      const r = shmOps.mapShmFd(init.shm.barFd, init.shm.wakeOffset + 4);
      this.barRegion = r;
      bar = r.buffer;
      this.wakeCell = new Int32Array(r.buffer, init.shm.wakeOffset, 1);
      this.wakeAddress = r.address + init.shm.wakeOffset;
    } else {
      if (init.bar === null) throw new Error('no BAR memory');
      bar = init.bar;
    }
    this.regs = new Int32Array(bar, 0, barSize(this.cfg.maxQueuePairs) >>> 2);
    this.db = new Int32Array(bar, REG_DOORBELL_BASE, doorbellCells(this.cfg.maxQueuePairs));
    this.ctl = new Int32Array(init.control, 0, CTL_STATS_BYTE_OFFSET / 4);
    this.stats = new Float64Array(init.control, CTL_STATS_BYTE_OFFSET, STAT_CELLS);
    this.mailbox = init.mailbox;
    for (const s of init.segments) this.addSegment(s);
    this.dma.onUnknown = () => this.drainMailbox();
    this.dp = new DataPath(this.dma);
    const { namespaces, file } = createNamespaces(this.cfg.namespaces, this.cfg.backing);
    this.ns = [undefined, ...namespaces];
    this.nn = namespaces.length;
    this.file = file;
    this.nullMode = this.cfg.backing === 'null';
    this.mdtsBytes = this.cfg.mdts === 0 ? Number.POSITIVE_INFINITY : 2 ** this.cfg.mdts * (4096 << MPSMIN);
    this.sqById = new Array<SubmissionQueue | undefined>(this.cfg.maxQueuePairs + 1).fill(undefined);
    this.cqById = new Array<CompletionQueue | undefined>(this.cfg.maxQueuePairs + 1).fill(undefined);
    this.allocatedSqs = this.cfg.maxQueuePairs - 1;
    this.allocatedCqs = this.cfg.maxQueuePairs - 1;
    const [capLo, capHi] = encodeCap({
      mqes: this.cfg.mqes,
      cqr: true,
      toUnits: this.cfg.timeoutUnits,
      dstrd: 0,
      css: CAP_CSS_NVM,
      mpsmin: MPSMIN,
      mpsmax: MPSMAX,
    });
    this.regs[REG_CAP >> 2] = capLo | 0;
    this.regs[(REG_CAP >> 2) + 1] = capHi | 0;
    this.regs[REG_VS >> 2] = NVME_VERSION | 0;
    this.setCsts(0);
  }

  // ---------------------------------------------------------------- main loop

  /**
   * Poll until the host sets CTL_STOP ('stopped'), or until work needs the event loop ('async': the worker awaits
   * runAsyncTasks() and calls run() again; nothing is lost in between).
   */
  run(): 'stopped' | 'async' {
    const ctl = this.ctl;
    const regs = this.regs;
    const ccIdx = REG_CC >> 2;
    let idlePolls = 0;
    let idleSince = 0;
    Atomics.store(ctl, CTL_STATE, WORKER_RUNNING);
    for (;;) {
      if (Atomics.load(ctl, CTL_SEQ) !== this.seenSeq) {
        this.handleControl();
        if (this.asyncTasks.length !== 0) return 'async';
      }
      if (Atomics.load(ctl, CTL_STOP) !== 0) break;
      const cc = Atomics.load(regs, ccIdx);
      if (cc !== this.lastCc) this.onCc(cc);
      if (this.readyAt !== 0 && performance.now() >= this.readyAt) this.becomeReady();
      let work = 0;
      if (this.ready && !this.fatal && !this.shutdownDone) work = this.poll();
      if (this.unfenced.length !== 0) this.fenceRound();
      if (this.pending.length !== 0) work += this.runTimers();
      if (work !== 0) {
        idlePolls = 0;
        this.publishStats();
        continue;
      }
      if (++idlePolls % IDLE_CLOCK_EVERY !== 0) continue;
      const now = performance.now();
      if (idlePolls === IDLE_CLOCK_EVERY) idleSince = now;
      else if (now - idleSince >= this.spinMs && Atomics.load(ctl, CTL_AWAKE_HOLDS) === 0) {
        this.sleep();
        idlePolls = 0;
      }
    }
    this.shutdownStores();
    Atomics.store(ctl, CTL_STATE, WORKER_STOPPED);
    return 'stopped';
  }

  /** Run the work run() returned 'async' for. Each task answers the host itself; none throws. */
  async runAsyncTasks(): Promise<void> {
    const tasks = this.asyncTasks;
    this.asyncTasks = [];
    for (const t of tasks) await t();
  }

  /** Sleep on the wake word until a doorbell/CC/control change, or sleepMs (sooner if a held completion is due). */
  private sleep(): void {
    if (this.wakeCell !== null) return this.sleepShared(this.wakeCell);
    const ctl = this.ctl;
    Atomics.store(ctl, CTL_WAKE, WAKE_SLEEPING);
    if (this.hasWork()) {
      Atomics.store(ctl, CTL_WAKE, WAKE_AWAKE);
      return;
    }
    let timeout = this.cfg.sleepMs;
    if (this.readyAt !== 0) timeout = Math.max(0, Math.min(timeout, this.readyAt - performance.now()));
    for (const p of this.pending) {
      if (p.due !== Number.POSITIVE_INFINITY && p.fences === null) timeout = Math.max(0, Math.min(timeout, p.due - performance.now()));
    }
    this.stats[STAT_SLEEPS]! += 1;
    const r = Atomics.wait(ctl, CTL_WAKE, WAKE_SLEEPING, timeout);
    Atomics.store(ctl, CTL_WAKE, WAKE_AWAKE);
    // Adaptive spinning: a doorbell that woke us means the host is active, and sleeping again right away
    // would put a futex wake (tens of microseconds here) on every batch; spin longer next time. A sleep that
    // ran out means the host is idle: go back to the short spin.
    if (r === 'ok') this.spinMs = Math.min(this.spinMs * 2, this.cfg.spinMaxUs / 1000);
    else if (r === 'timed-out') this.spinMs = this.cfg.spinUs / 1000;
  }

  /** memfd mode: the same protocol on the wake word in shared memory, with a process-shared futex. */
  private sleepShared(wake: Int32Array): void {
    Atomics.store(wake, 0, WAKE_SLEEPING);
    if (this.hasWork()) {
      Atomics.store(wake, 0, WAKE_AWAKE);
      return;
    }
    this.stats[STAT_SLEEPS]! += 1;
    const r = this.shmOps!.futexWait(this.wakeAddress, WAKE_SLEEPING, this.sleepTimeout());
    const woken = r !== 'timed-out' && Atomics.load(wake, 0) !== WAKE_SLEEPING;
    Atomics.store(wake, 0, WAKE_AWAKE);
    if (woken) this.spinMs = Math.min(this.spinMs * 2, this.cfg.spinMaxUs / 1000);
    else if (r === 'timed-out') this.spinMs = this.cfg.spinUs / 1000;
  }

  private sleepTimeout(): number {
    let timeout = this.cfg.sleepMs;
    if (this.readyAt !== 0) timeout = Math.max(0, Math.min(timeout, this.readyAt - performance.now()));
    for (const p of this.pending) {
      if (p.due !== Number.POSITIVE_INFINITY && p.fences === null) timeout = Math.max(0, Math.min(timeout, p.due - performance.now()));
    }
    return timeout;
  }

  /** Anything to do right now? (Checked after announcing sleep, so a racing doorbell is never missed.) */
  private hasWork(): boolean {
    const ctl = this.ctl;
    if (Atomics.load(ctl, CTL_SEQ) !== this.seenSeq || Atomics.load(ctl, CTL_STOP) !== 0) return true;
    if (Atomics.load(this.regs, REG_CC >> 2) !== this.lastCc) return true;
    if (!this.ready || this.fatal || this.shutdownDone) return false;
    if (this.copyWaits !== 0) return true; // copies to a device window run: the copy engine takes microseconds
    const db = this.db;
    for (const sq of this.sqList) {
      if (Atomics.load(db, sq.dbIndex) !== sq.rawTail) return true;
      if (sq.tail !== sq.head && sq.cq.free() > 0) return true;
    }
    for (const cq of this.cqList) if (Atomics.load(db, cq.dbIndex) !== cq.rawHead) return true;
    return false;
  }

  private publishStats(): void {
    const s = this.stats;
    s[STAT_COMMANDS] = this.commands;
    s[STAT_ADMIN_COMMANDS] = this.adminCommands;
    s[STAT_IO_COMMANDS] = this.commands - this.adminCommands;
    s[STAT_READS] = this.hostReads;
    s[STAT_WRITES] = this.hostWrites;
    s[STAT_ERRORS] = this.errorCount;
    s[STAT_EP2P_BYTES_TO_DEVICE] = this.ep2pBytesToDevice;
    s[STAT_EP2P_COPIES_TO_DEVICE] = this.ep2pCopiesToDevice;
    s[STAT_EP2P_BYTES_FROM_DEVICE] = this.windows.bytesFromDevice;
    s[STAT_EP2P_COPIES_FROM_DEVICE] = this.windows.copiesFromDevice;
    s[STAT_EP2P_FENCES] = this.ep2pFences;
    s[STAT_EP2P_ERRORS] = this.ep2pErrors;
  }

  // ---------------------------------------------------------------- control mailbox

  private handleControl(): void {
    const seq = Atomics.load(this.ctl, CTL_SEQ);
    this.drainMailbox();
    this.seenSeq = seq;
    this.publishStats();
    Atomics.store(this.ctl, CTL_ACK, seq);
    Atomics.notify(this.ctl, CTL_ACK);
  }

  drainMailbox(): void {
    for (;;) {
      const m = receiveMessageOnPort(this.mailbox);
      if (m === undefined) return;
      const msg = m.message as ControlMessage;
      switch (msg.type) {
        case 'segment':
          this.addSegment(msg);
          break;
        case 'dropSegment':
          this.dropSegment(msg.index);
          break;
        case 'inject':
          this.faults.push({ ...msg.rule, count: msg.rule.count ?? 1 });
          break;
        case 'clearFaults':
          this.faults.length = 0;
          break;
        case 'setFatal':
          this.enterFatal();
          break;
        case 'addWindow':
          this.addWindow(msg.index, msg.bytes, msg.target);
          break;
        case 'dropWindow':
          this.dropWindow(msg.index);
          break;
      }
    }
  }

  private addSegment(s: SegmentSource): void {
    if ('sab' in s) {
      this.dma.add(s.index, s.sab);
      return;
    }
    if (this.shmOps === null) throw new Error('memfd segment without shared memory operations');
    this.dropSegment(s.index);
    let r: EmuShmRegion;
    try {
      r = s.dmabuf === true ? this.shmOps.mapDmaBuf(s.fd, s.size) : this.shmOps.mapShmFd(s.fd, s.size);
    } catch {
      return; // the fd is gone: IOVAs in this segment stay DMA faults
    }
    this.segRegions.set(s.index, r);
    this.dma.add(s.index, r.buffer);
  }

  /** Forget a DMA segment (IOVAs in it become DMA faults) and unmap it here. */
  private dropSegment(index: number): void {
    if (this.windows.get(index) !== undefined) this.dropWindow(index);
    this.dma.remove(index);
    const r = this.segRegions.get(index);
    if (r !== undefined) {
      this.segRegions.delete(index);
      r.close();
    }
  }

  /** Release the shared memory mappings (memfd mode): called by the worker after run() returns. */
  dispose(): void {
    for (const w of [...this.windows.list]) this.dropWindow(w.index);
    for (const index of [...this.segRegions.keys()]) this.dropSegment(index);
    this.barRegion?.close();
  }

  // ---------------------------------------------------------------- device windows (emulated P2P)

  /**
   * Make the first `bytes` of segment `index` (the shadow, already known) a device window for `target`, and
   * answer the host. A cuda target loads the CUDA copier first: that needs the event loop (a dynamic import),
   * so it is queued for runAsyncTasks().
   */
  private addWindow(index: number, bytes: number, target: DeviceWindowTarget): void {
    const answer = (e: unknown): void => {
      const a: WindowAnswer = { type: 'window', index, error: e === null ? null : errorInfo(e) };
      this.mailbox.postMessage(a);
      Atomics.add(this.ctl, CTL_WINDOW_ANSWERS, 1);
      Atomics.notify(this.ctl, CTL_WINDOW_ANSWERS);
    };
    const shadow = this.dma.sab[index];
    if (shadow === undefined) return answer(new Error(`emulated P2P: the window's shadow segment ${index} is not known to the controller`));
    if (this.windows.get(index) !== undefined) return answer(new Error(`emulated P2P: segment ${index} is a device window already`));
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes > shadow.byteLength) {
      return answer(new RangeError(`emulated P2P: a window of ${bytes} bytes does not fit its ${shadow.byteLength}-byte shadow`));
    }
    if (target.kind === 'memory') {
      try {
        const device = new Uint8Array(target.memory, 0, bytes);
        this.installWindow(index, bytes, new MemoryCopier(new Uint8Array(shadow, 0, bytes), device, target.copyDelayMs ?? 0, target.failCopies ?? false));
      } catch (e) {
        return answer(e);
      }
      return answer(null);
    }
    this.asyncTasks.push(async () => {
      try {
        const { createCudaCopier } = await import('./cuda-copier.js');
        const region = this.segRegions.get(index);
        if (region === undefined || this.dma.sab[index] !== shadow) {
          throw new Error('emulated P2P: a cuda window needs its shadow in memfd memory, still mapped (was the window released while it was being added?)');
        }
        this.installWindow(index, bytes, createCudaCopier({ ordinal: target.ordinal, dptr: target.dptr, bytes, hostAddress: region.address, hostBytes: region.buffer.byteLength }));
      } catch (e) {
        return answer(e);
      }
      answer(null);
    });
  }

  private installWindow(index: number, bytes: number, copier: DeviceCopier): void {
    this.windows.add(new DeviceWindow(index, bytes, copier));
    // A PRP past the window's end (into the page rounding of its shadow) is a DMA fault, like one past any segment.
    this.dma.limit(index, bytes);
    this.dp.windows = this.windows;
  }

  /**
   * Forget window `index`: its copies are settled first (recorded, waited for; the commands waiting on them
   * complete in the next loop, or with Data Transfer Error if a copy failed), then its copier is closed. The
   * shadow segment stays until the host drops it.
   */
  private dropWindow(index: number): void {
    const w = this.windows.get(index);
    if (w === undefined) return;
    if (this.unfenced.length !== 0) this.fenceRound();
    if (w.error === null) {
      try {
        w.copier.drain();
        w.doneSeq = w.copier.completed();
      } catch (e) {
        this.windowFailed(w, e);
      }
    }
    this.windows.remove(index);
    if (this.windows.count === 0) this.dp.windows = null;
    try {
      w.copier.close();
    } catch (e) {
      this.log(`emulated P2P: closing the copier of the device window at IOVA 0x${w.iova.toString(16)} (${w.copier.label}) failed: ${messageOf(e)}`);
    }
  }

  /** A copy or fence of window `w` failed: the window fails (sticky), its waiting commands with it. Logged once. */
  private windowFailed(w: DeviceWindow, e: unknown): void {
    this.ep2pErrors++;
    if (w.error !== null) return;
    w.error = messageOf(e);
    this.log(
      `emulated P2P: a copy failed in the device window at IOVA 0x${w.iova.toString(16)} (${w.copier.label}): ${w.error}; ` +
        'its commands complete with Data Transfer Error until the window is released',
    );
  }

  private log(message: string): void {
    try {
      this.toHost({ type: 'log', message });
    } catch {
      // no host to tell
    }
  }

  /**
   * After a handler whose data touched device windows on its way to host memory: start the copies shadow ->
   * device (when it succeeded) and leave the fences its completion waits for in heldFences. Returns its status:
   * Data Transfer Error when a window has failed or a copy cannot be started.
   */
  private startWindowCopies(st: number): number {
    const ws = this.windows;
    const n = this.dp.windowHits;
    this.dp.windowHits = 0;
    let fences: Fence[] | null = null;
    if (st === 0) {
      for (let i = 0; i < n; i++) {
        const w = ws.hitWin[i]!;
        const len = ws.hitLen[i]!;
        if (w.error !== null) {
          st = ST_DATA_TRANSFER;
          break;
        }
        try {
          w.copier.toDevice(ws.hitOff[i]!, len);
        } catch (e) {
          this.windowFailed(w, e);
          st = ST_DATA_TRANSFER;
          break;
        }
        this.ep2pCopiesToDevice++;
        this.ep2pBytesToDevice += len;
        let f = w.roundFence;
        if (f === null) {
          f = w.roundFence = new Fence(w);
          this.unfenced.push(w);
        }
        if (fences === null) fences = [f];
        else if (!fences.includes(f)) fences.push(f);
      }
    }
    ws.clearHits();
    this.heldFences = st === 0 ? fences : null;
    return st;
  }

  /** End of a polling round: one fence per window for all the copies it started in the round. */
  private fenceRound(): void {
    const u = this.unfenced;
    for (let i = 0; i < u.length; i++) {
      const w = u[i]!;
      const f = w.roundFence!;
      w.roundFence = null;
      if (w.error !== null) {
        f.failed = true;
        continue;
      }
      try {
        f.seq = w.copier.fence();
        w.lastSeq = f.seq;
        this.ep2pFences++;
      } catch (e) {
        f.failed = true;
        this.windowFailed(w, e);
      }
    }
    u.length = 0;
  }

  /** Ask each window with fences outstanding how far its copies got. */
  private pollCopies(): void {
    const list = this.windows.list;
    for (let i = 0; i < list.length; i++) {
      const w = list[i]!;
      if (!w.outstanding) continue;
      try {
        w.doneSeq = w.copier.completed();
      } catch (e) {
        this.windowFailed(w, e);
      }
    }
  }

  /** Hold the completion of the command just executed until its copies (heldFences) are done. */
  private holdForCopies(sq: SubmissionQueue, cid: number, st: number): void {
    sq.cq.reserved++;
    this.pending.push({ sq, cid, status: st, result: this.out.result, due: 0, fences: this.heldFences });
    this.heldFences = null;
    this.copyWaits++;
  }

  // ---------------------------------------------------------------- registers

  private setCsts(v: number): void {
    this.csts = v;
    Atomics.store(this.regs, REG_CSTS >> 2, v);
  }

  enterFatal(): void {
    this.fatal = true;
    this.setCsts(this.csts | CSTS_CFS);
  }

  private onCc(cc: number): void {
    const prev = this.lastCc;
    this.lastCc = cc;
    const en = (cc & CC_EN) !== 0;
    const wasEn = (prev & CC_EN) !== 0;
    if (wasEn && !en) {
      this.reset();
      return;
    }
    if (!wasEn && en) this.enable(cc);
    const shn = (cc & CC_SHN_MASK) >>> CC_SHN_SHIFT;
    const prevShn = (prev & CC_SHN_MASK) >>> CC_SHN_SHIFT;
    if (shn !== 0 && prevShn === 0) this.shutdown();
  }

  private enable(cc: number): void {
    this.enabled = true;
    this.sqEntrySizeLog2 = (cc >>> 16) & 0xf;
    this.cqEntrySizeLog2 = (cc >>> 20) & 0xf;
    const mps = (cc >>> CC_MPS_SHIFT) & 0xf;
    const css = (cc >>> CC_CSS_SHIFT) & 0x7;
    const aqa = Atomics.load(this.regs, REG_AQA >> 2);
    const asqs = (aqa & AQA_ASQS_MASK) + 1;
    const acqs = ((aqa >>> AQA_ACQS_SHIFT) & AQA_ASQS_MASK) + 1;
    const asq = this.reg64(REG_ASQ);
    const acq = this.reg64(REG_ACQ);
    if (mps < MPSMIN || mps > MPSMAX || css !== CC_CSS_NVM || asqs < 2 || acqs < 2) return this.enterFatal();
    this.hostPageSize = 4096 << mps;
    this.dp.pageSize = this.hostPageSize;
    if (asq % this.hostPageSize !== 0 || acq % this.hostPageSize !== 0) return this.enterFatal();
    const cqSeg = this.dma.locate(acq, acqs * CQE_SIZE);
    if (cqSeg < 0) return this.enterFatal();
    const cq = new CompletionQueue(0, acqs, acq, this.dma.sab[cqSeg]!, this.dma.offset, 1);
    const sqSeg = this.dma.locate(asq, asqs * SQE_SIZE);
    if (sqSeg < 0) return this.enterFatal();
    const sq = new SubmissionQueue(0, asqs, asq, this.dma.sab[sqSeg]!, this.dma.offset, cq, 0, 0);
    this.addCq(cq);
    this.addSq(sq);
    if (this.cfg.readyDelayMs > 0) this.readyAt = performance.now() + this.cfg.readyDelayMs;
    else this.becomeReady();
  }

  private becomeReady(): void {
    this.readyAt = 0;
    if (!this.enabled || this.fatal) return;
    this.ready = true;
    this.setCsts(this.csts | CSTS_RDY);
  }

  private reg64(off: number): number {
    return (Atomics.load(this.regs, off >> 2) >>> 0) + (Atomics.load(this.regs, (off >> 2) + 1) >>> 0) * TWO_POW_32;
  }

  /** Controller reset (CC.EN 1 → 0): drop all queues and outstanding work, clear CSTS. */
  private reset(): void {
    if (!this.shutdownDone && this.ready) this.unsafeShutdowns++;
    for (const q of this.sqList) this.sqById[q.qid] = undefined;
    for (const q of this.cqList) this.cqById[q.qid] = undefined;
    this.sqList = [];
    this.cqList = [];
    this.pending = [];
    this.copyWaits = 0; // the copies run on; nobody waits for them
    this.abortOnFetch = [];
    this.aerCids = [];
    this.aerEvents = [];
    this.enabled = false;
    this.ready = false;
    this.fatal = false;
    this.shutdownDone = false;
    this.readyAt = 0;
    this.allocatedSqs = this.cfg.maxQueuePairs - 1;
    this.allocatedCqs = this.cfg.maxQueuePairs - 1;
    for (let i = 0; i < this.db.length; i++) Atomics.store(this.db, i, 0);
    this.setCsts(0);
  }

  private shutdown(): void {
    this.setCsts((this.csts & ~CSTS_SHST_MASK) | (CSTS_SHST_OCCURRING << CSTS_SHST_SHIFT));
    this.flushAll();
    this.shutdownDone = true;
    this.setCsts((this.csts & ~CSTS_SHST_MASK) | (CSTS_SHST_COMPLETE << CSTS_SHST_SHIFT));
  }

  flushAll(): void {
    if (this.file) this.file.flush();
    else for (let i = 1; i <= this.nn; i++) this.ns[i]!.store.flush();
  }

  private shutdownStores(): void {
    if (this.file) this.file.close();
    else for (let i = 1; i <= this.nn; i++) this.ns[i]!.store.close();
  }

  // ---------------------------------------------------------------- queues

  addSq(sq: SubmissionQueue): void {
    this.sqById[sq.qid] = sq;
    sq.cq.sqRefs++;
    // A new queue starts empty: whatever the host wrote to this doorbell cell before the queue existed is void.
    Atomics.store(this.db, sq.dbIndex, 0);
    sq.rawTail = 0;
    sq.tail = 0;
    this.sqList = this.sqById.filter((q): q is SubmissionQueue => q !== undefined);
  }

  addCq(cq: CompletionQueue): void {
    this.cqById[cq.qid] = cq;
    Atomics.store(this.db, cq.dbIndex, 0);
    cq.rawHead = 0;
    cq.head = 0;
    this.cqList = this.cqById.filter((q): q is CompletionQueue => q !== undefined);
  }

  /** Delete an SQ: its outstanding commands complete with "Command Aborted due to SQ Deletion". */
  deleteSq(sq: SubmissionQueue): void {
    const cq = sq.cq;
    const keep: Pending[] = [];
    for (const p of this.pending) {
      if (p.sq === sq) {
        if (p.fences !== null) this.copyWaits--;
        cq.reserved--;
        cq.post(0, sq.head, sq.qid, p.cid, ST_ABORTED_SQ_DELETION);
      } else keep.push(p);
    }
    this.pending = keep;
    // Submitted but not yet fetched commands are aborted too, as far as the CQ has room.
    while (sq.head !== sq.tail && cq.free() > 0) {
      const cid = sq.ring[sq.take()]! >>> SQE_CID_SHIFT;
      cq.post(0, sq.head, sq.qid, cid, ST_ABORTED_SQ_DELETION);
    }
    this.abortOnFetch = this.abortOnFetch.filter((a) => a.sqid !== sq.qid);
    cq.sqRefs--;
    this.sqById[sq.qid] = undefined;
    this.sqList = this.sqById.filter((q): q is SubmissionQueue => q !== undefined);
    Atomics.store(this.db, sq.dbIndex, 0);
  }

  deleteCq(cq: CompletionQueue): void {
    this.cqById[cq.qid] = undefined;
    this.cqList = this.cqById.filter((q): q is CompletionQueue => q !== undefined);
    Atomics.store(this.db, cq.dbIndex, 0);
  }

  /** One polling round over all doorbells. Returns the number of commands fetched (plus doorbell events). */
  private poll(): number {
    const db = this.db;
    let work = 0;
    const cqs = this.cqList;
    for (let i = 0; i < cqs.length; i++) {
      const cq = cqs[i]!;
      const raw = Atomics.load(db, cq.dbIndex);
      if (raw !== cq.rawHead) {
        this.cqHeadWrite(cq, raw);
        work++;
      }
    }
    const sqs = this.sqList;
    for (let i = 0; i < sqs.length; i++) {
      const sq = sqs[i]!;
      // An admin command earlier in this round may have deleted this SQ (its doorbell cell is now 0).
      if (this.sqById[sq.qid] !== sq) continue;
      const raw = Atomics.load(db, sq.dbIndex);
      if (raw !== sq.rawTail) this.sqTailWrite(sq, raw);
      if (sq.tail !== sq.head) work += this.drain(sq);
      if (!this.ready || this.fatal) break;
    }
    return work;
  }

  private cqHeadWrite(cq: CompletionQueue, raw: number): void {
    cq.rawHead = raw;
    const v = raw >>> 0;
    if (v >= cq.size) return this.invalidDoorbell(cq.qid);
    let adv = v - cq.head;
    if (adv < 0) adv += cq.size;
    if (adv > cq.outstanding()) return this.invalidDoorbell(cq.qid);
    cq.head = v;
  }

  private sqTailWrite(sq: SubmissionQueue, raw: number): void {
    sq.rawTail = raw;
    const v = raw >>> 0;
    if (v >= sq.size) return this.invalidDoorbell(sq.qid);
    sq.tail = v;
  }

  private invalidDoorbell(qid: number): void {
    this.stats[STAT_INVALID_DOORBELLS]! += 1;
    this.logError(qid, 0xffff, ST_INVALID_DOORBELL_LOG, 0, 0);
    this.asyncEvent(AER_TYPE_ERROR | (AER_INFO_INVALID_DOORBELL_VALUE << AER_INFO_SHIFT) | (0x01 << AER_LOG_PAGE_SHIFT));
  }

  /** Fetch and execute the new entries of `sq`, as many as its CQ has room for. */
  private drain(sq: SubmissionQueue): number {
    const cq = sq.cq;
    let free = cq.free();
    if (free <= 0) return 0;
    let n = sq.pending;
    if (n > free) n = free;
    const admin = sq.qid === 0;
    let done = 0;
    while (done < n) {
      const at = sq.take();
      done++;
      this.execute(sq, at, admin);
      if (this.fatal || !this.ready || this.sqById[sq.qid] !== sq) break;
    }
    this.commands += done;
    if (admin) this.adminCommands += done;
    return done;
  }

  /** Execute the SQE at dword `b` of `sq` and post its completion (unless held back). */
  private execute(sq: SubmissionQueue, b: number, admin: boolean): void {
    const q = sq.ring;
    const cid = q[b]! >>> SQE_CID_SHIFT;
    let st: number;
    this.out.clear();
    if (this.faults.length !== 0 || this.abortOnFetch.length !== 0) {
      st = this.hooks(sq, b, cid, admin);
      if (st !== DEFERRED - 1) {
        if (st !== DEFERRED) this.complete(sq, cid, st, q, b);
        return;
      }
    }
    st = this.runHandler(q, b, admin);
    if (st === DEFERRED) return;
    if (this.heldFences !== null) return this.holdForCopies(sq, cid, st);
    this.complete(sq, cid, st, q, b);
  }

  /**
   * Run the handler of the command at dword `b` of `q`: its status (or DEFERRED), the rest in this.out. A handler
   * that throws completes with Internal Error. The data it moved is counted for the SMART log here.
   */
  private runHandler(q: Uint32Array, b: number, admin: boolean): number {
    const out = this.out;
    let st: number;
    try {
      st = admin ? adminCommand(this, q, b, out) : ioCommand(this, q, b, out);
    } catch {
      st = ST_INTERNAL;
    }
    if (out.transfer !== TRANSFER_NONE) this.countTransfer(out);
    if (this.dp.windowHits !== 0) st = this.startWindowCopies(st);
    return st;
  }

  private countTransfer(out: CommandOutcome): void {
    if (out.transfer === TRANSFER_READ) {
      this.hostReads++;
      this.unitsRead += out.units512;
    } else {
      this.hostWrites++;
      this.unitsWritten += out.units512;
    }
  }

  private complete(sq: SubmissionQueue, cid: number, st: number, q: Uint32Array, b: number): void {
    if (st !== 0) this.logError(sq.qid, cid, st, q[b + SQE_DW_NSID]!, this.out.errorLba);
    sq.cq.post(this.out.result, sq.head, sq.qid, cid, st);
  }

  /**
   * Error injection and aborts of not-yet-fetched commands. Returns a status to complete with, DEFERRED when the
   * command's completion is held back or never comes, or DEFERRED - 1 to execute normally.
   */
  private hooks(sq: SubmissionQueue, b: number, cid: number, admin: boolean): number {
    const q = sq.ring;
    for (let i = 0; i < this.abortOnFetch.length; i++) {
      const a = this.abortOnFetch[i]!;
      if (a.sqid === sq.qid && a.cid === cid) {
        this.abortOnFetch.splice(i, 1);
        return ST_ABORT_REQUESTED;
      }
    }
    const opcode = q[b]! & 0xff;
    const nsid = q[b + SQE_DW_NSID]!;
    for (let i = 0; i < this.faults.length; i++) {
      const r = this.faults[i]!;
      if (!faultMatches(r, sq.qid, opcode, nsid)) continue;
      const left = (r.count ?? 1) - 1;
      if (left <= 0) this.faults.splice(i, 1);
      else r.count = left;
      const a = r.action;
      switch (a.kind) {
        case 'status':
          return makeStatus(a.sct, a.sc, a.dnr ?? false);
        case 'fatal':
          this.enterFatal();
          return DEFERRED;
        case 'delay':
        case 'drop': {
          let st = 0;
          if (a.kind === 'delay' || admin) {
            st = this.runHandler(q, b, admin);
            if (st === DEFERRED) return DEFERRED;
          }
          if (st !== 0) this.logError(sq.qid, cid, st, nsid, this.out.errorLba);
          // A delayed completion also waits for its copies to a device window; a dropped one waits for nothing.
          const fences = a.kind === 'delay' ? this.heldFences : null;
          this.heldFences = null;
          if (fences !== null) this.copyWaits++;
          sq.cq.reserved++;
          this.pending.push({
            sq,
            cid,
            status: st,
            result: this.out.result,
            due: a.kind === 'delay' ? performance.now() + a.ms : Number.POSITIVE_INFINITY,
            fences,
          });
          return DEFERRED;
        }
      }
    }
    return DEFERRED - 1;
  }

  /** Post held completions whose time has come (and whose copies to a device window are done). */
  private runTimers(): number {
    if (!this.ready || this.fatal) return 0;
    if (this.copyWaits !== 0) this.pollCopies();
    const now = performance.now();
    let n = 0;
    for (let i = 0; i < this.pending.length;) {
      const p = this.pending[i]!;
      if (p.due > now) {
        i++;
        continue;
      }
      let st = p.status;
      if (p.fences !== null) {
        const c = fencesState(p.fences);
        if (c === COPIES_PENDING) {
          i++;
          continue;
        }
        this.copyWaits--;
        if (c === COPIES_FAILED && st === 0) {
          st = ST_DATA_TRANSFER;
          this.logError(p.sq.qid, p.cid, st, 0, 0);
        }
      }
      this.pending.splice(i, 1);
      p.sq.cq.reserved--;
      p.sq.cq.post(p.result, p.sq.head, p.sq.qid, p.cid, st);
      n++;
    }
    return n;
  }

  /** Abort command support: complete a held or not-yet-fetched command. Returns true if it will be aborted. */
  abortCommand(sqid: number, cid: number): boolean {
    for (let i = 0; i < this.pending.length; i++) {
      const p = this.pending[i]!;
      if (p.sq.qid === sqid && p.cid === cid) {
        this.pending.splice(i, 1);
        if (p.fences !== null) this.copyWaits--;
        p.sq.cq.reserved--;
        this.logError(sqid, cid, ST_ABORT_REQUESTED, 0, 0);
        p.sq.cq.post(0, p.sq.head, sqid, cid, ST_ABORT_REQUESTED);
        return true;
      }
    }
    const sq = this.sqById[sqid];
    if (sq === undefined) return false;
    for (let h = sq.head; h !== sq.tail; h = h + 1 === sq.size ? 0 : h + 1) {
      if (sq.ring[h << 4]! >>> SQE_CID_SHIFT === cid) {
        this.abortOnFetch.push({ sqid, cid });
        return true;
      }
    }
    return false;
  }

  /** Complete an outstanding Asynchronous Event Request, or queue the event for the next one. */
  asyncEvent(result: number): void {
    const acq = this.cqById[0];
    const asq = this.sqById[0];
    if (this.aerCids.length !== 0 && acq !== undefined && asq !== undefined && acq.free() > 0) {
      const cid = this.aerCids.shift()!;
      acq.post(result, asq.head, 0, cid, 0);
      return;
    }
    if (this.aerEvents.length < AER_EVENTS_KEPT) this.aerEvents.push(result);
  }

  takeAsyncEvent(): number {
    return this.aerEvents.length !== 0 ? this.aerEvents.shift()! : NO_EVENT;
  }

  parkAsyncEventRequest(cid: number): boolean {
    if (this.aerCids.length >= AER_LIMIT) return false;
    this.aerCids.push(cid);
    return true;
  }

  // ---------------------------------------------------------------- what the command handlers see (AdminTarget)

  get sqs(): ReadonlyArray<SubmissionQueue | undefined> {
    return this.sqById;
  }
  get cqs(): ReadonlyArray<CompletionQueue | undefined> {
    return this.cqById;
  }
  get pageSize(): number {
    return this.hostPageSize;
  }
  get iosqes(): number {
    return this.sqEntrySizeLog2;
  }
  get iocqes(): number {
    return this.cqEntrySizeLog2;
  }
  get nsqa(): number {
    return this.allocatedSqs;
  }
  get ncqa(): number {
    return this.allocatedCqs;
  }
  get volatileWriteCache(): number {
    return this.writeCache;
  }
  get arbitration(): number {
    return this.arbitrationValue;
  }
  get errorLog(): readonly ErrorEntry[] {
    return this.errors;
  }

  setQueueCounts(nsqa: number, ncqa: number): void {
    this.allocatedSqs = nsqa;
    this.allocatedCqs = ncqa;
  }

  setVolatileWriteCache(enabled: number): void {
    this.writeCache = enabled;
    if (enabled === 0) this.flushAll();
  }

  setArbitration(value: number): void {
    this.arbitrationValue = value;
  }

  smart(): SmartCounters {
    return {
      unitsRead512: this.unitsRead,
      unitsWritten512: this.unitsWritten,
      hostReads: this.hostReads,
      hostWrites: this.hostWrites,
      powerCycles: this.powerCycles,
      powerOnHours: Math.floor((performance.now() - this.startTime) / MS_PER_HOUR),
      unsafeShutdowns: this.unsafeShutdowns,
      errorLogEntries: this.errorCount,
    };
  }

  // ---------------------------------------------------------------- error log

  logError(sqid: number, cid: number, status: number, nsid: number, lba: number): void {
    this.errorCount++;
    this.errors.unshift({ count: this.errorCount, sqid, cid, status, lba, nsid });
    if (this.errors.length > ERROR_LOG_ENTRIES) this.errors.length = ERROR_LOG_ENTRIES;
  }

  /** Read the LBA dwords of an I/O command (for the error log). */
  static slba(q: Uint32Array, b: number): number {
    return q[b + SQE_DW_CDW10]! + q[b + SQE_DW_CDW11]! * TWO_POW_32;
  }
}
