/**
 * Host side of the embedded NVMe controller: starts the controller worker and exposes it as a Transport.
 * BAR0 is a SharedArrayBuffer the worker polls; DMA memory is SharedDmaMemory whose segments are posted to
 * the worker's mailbox as they are created.
 *
 * Device windows (emulated P2P, addDeviceWindow): IOVA ranges that stand for device (GPU) memory. The controller
 * moves data into a host shadow as usual and copies it to the device with the copy engine before it completes
 * the command (src/emu/device-window.ts).
 */
import { MessageChannel, Worker, receiveMessageOnPort } from 'node:worker_threads';
import type { DmaBufHandle, ImportedDmaBuf } from '../mem/dmabuf.js';
import {
  CONTROL_BLOCK_BYTES,
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
  WORKER_CRASHED,
  WORKER_STOPPED,
  barSize,
  doorbellCells,
  resolveConfig,
  shmBarLayout,
  type ControlMessage,
  type DeviceWindowTarget,
  type EmuBacking,
  type EmuConfig,
  type EmuNamespaceConfig,
  type WindowAnswer,
  type WorkerInit,
  type WorkerMessage,
} from '../emu/config.js';
import type { FaultRule } from '../emu/faults.js';
import type { DmaBuffer } from '../mem/dma.js';
import { SharedDmaMemory } from '../mem/shared-dma.js';
import type { ShmDmaMemory, ShmLocation } from '../mem/shm-dma.js';
import type { ShmRegion } from '../sys/shm.js';
import { REG_ACQ, REG_AQA, REG_ASQ, REG_CC, REG_DOORBELL_BASE, REG_INTMC, REG_INTMS, REG_NSSR } from '../nvme/registers.js';
import { AtomicsWaker, FutexWaker, doorbellNotifier, type Waker } from './doorbell.js';
import { createIoQueuePair, deleteIoQueuePair, programAdminQueue } from './pcie-queues.js';
import type { AdminChannel, ExportedMemory, QueueExporter, QueueNotifier, QueueRings, Transport } from './transport.js';

export type { DeviceWindowTarget, EmuBacking, EmuNamespaceConfig } from '../emu/config.js';
export type { FaultRule, FaultAction } from '../emu/faults.js';

export interface EmuOptions {
  namespaces: EmuNamespaceConfig[];
  /** Default 'memory'. */
  backing?: EmuBacking;
  maxQueuePairs?: number;
  /** CAP.MQES, 0's based (default 1023). */
  mqes?: number;
  serial?: string;
  model?: string;
  firmware?: string;
  vendorId?: number;
  subsystemVendorId?: number;
  cntlid?: number;
  /** MDTS (log2 of 4 KiB pages; default 5 = 128 KiB; 0 = unlimited). */
  mdts?: number;
  readyDelayMs?: number;
  /** Idle spin before the controller sleeps, microseconds (default 50). */
  spinUs?: number;
  /** Upper bound of the adaptive idle spin, microseconds (default 2000). */
  spinMaxUs?: number;
  /** Longest idle sleep, milliseconds (default 5). */
  sleepMs?: number;
  /** DMA segment size in bytes (default 64 MiB). */
  dmaSegmentSize?: number;
  /** Cap on DMA memory (default unlimited). */
  dmaMaxBytes?: number;
  /** Description reported by the transport (default "emu"). */
  description?: string;
  /**
   * Where BAR0 and the DMA segments live: 'sab' (default) SharedArrayBuffers, usable by this process only;
   * 'memfd' memfd shared memory, which other processes can map from file descriptors (see barShm(),
   * shmLocation(), and dma.createDedicated()): the mode a daemon uses to hand queue pairs to clients.
   */
  sharedMemory?: 'sab' | 'memfd';
  /** Where the controller's messages go (a failed emulated P2P copy, ...); default console.warn. */
  log?: (message: string) => void;
}

/**
 * A device window (emulated P2P): PRPs (or SGL data blocks) into [iova, iova + bytes) name device memory. Reads
 * into it complete once the copy engine has put the data in device memory; writes from it take the data from
 * device memory.
 */
export interface DeviceWindow {
  /** IOVA of the window's first byte (device byte 0). */
  readonly iova: number;
  readonly bytes: number;
  /**
   * Settle the window's copies (the commands waiting on them complete), then forget it: later PRPs into its range
   * fail with Data Transfer Error. Idempotent.
   */
  release(): void;
}

/** What another process needs to map BAR0 of a memfd-mode controller (doorbells and wake word). */
export interface EmuBarShm {
  fd: number;
  /** Bytes to map from the fd. */
  bytes: number;
  /** Bytes of BAR0 proper (registers + doorbells) at the start of the mapping. */
  barBytes: number;
  /** Byte offset of the 32-bit wake word (futex; see src/emu/wake.ts for the protocol). */
  wakeOffset: number;
  /** Doorbell stride in bytes (CAP.DSTRD). */
  doorbellStride: number;
}

/** The shared memory module and allocator class, loaded only in memfd mode. */
interface ShmModules {
  shm: typeof import('../sys/shm.js');
  dma: typeof import('../mem/shm-dma.js');
  /** For NoCudaDriverError only (loading the module loads no driver; it loads libcuda at its first call). */
  cuda: typeof import('../sys/cuda.js');
}

export interface EmuStats {
  /** Commands fetched and processed, admin and I/O. */
  commands: number;
  adminCommands: number;
  ioCommands: number;
  reads: number;
  writes: number;
  /** Error log entries recorded. */
  errors: number;
  /** Times the controller went to sleep on the wake word. */
  sleeps: number;
  invalidDoorbells: number;
  /** Emulated P2P (device windows): bytes the copy engine moved from shadows to device memory (read payloads). */
  emulatedP2pBytesToDevice: number;
  emulatedP2pCopiesToDevice: number;
  /** Emulated P2P: bytes moved from device memory into shadows (write payloads). */
  emulatedP2pBytesFromDevice: number;
  emulatedP2pCopiesFromDevice: number;
  /** Emulated P2P: copy fences recorded (one per polling round and window with copies to the device). */
  emulatedP2pFences: number;
  /** Emulated P2P: failed copies or fences (each completed its commands with Data Transfer Error). */
  emulatedP2pErrors: number;
}

/** Registers the host may write; everything else below the doorbells is read-only. */
const WRITABLE = new Set([REG_CC, REG_AQA, REG_ASQ, REG_ASQ + 4, REG_ACQ, REG_ACQ + 4, REG_INTMS, REG_INTMC, REG_NSSR]);
/** Doorbell stride in bytes: the embedded controller reports CAP.DSTRD = 0. */
const EMU_DOORBELL_STRIDE = 4;
/** How long synchronous control calls wait for the worker before declaring it dead. */
const CONTROL_TIMEOUT_MS = 5000;
const DEAD = 0xffffffff;
/** How long addDeviceWindow waits for the controller's answer (a CUDA window initializes the driver). */
const WINDOW_TIMEOUT_MS = 60_000;

/** The error a window answer carries, as an Error here (NoCudaDriverError where it was one). */
function windowError(info: { name: string; message: string; code?: string }, cuda: typeof import('../sys/cuda.js')): Error {
  if (info.code === 'no-cuda-driver') {
    const e = new cuda.NoCudaDriverError();
    e.message = info.message;
    return e;
  }
  const message = info.message.startsWith('emulated P2P') ? info.message : `emulated P2P: ${info.message}`;
  const e = info.name === 'RangeError' ? new RangeError(message) : new Error(message);
  if (e.name !== info.name) e.name = info.name;
  if (info.code !== undefined) (e as Error & { code?: string }).code = info.code;
  return e;
}

/** A structured-clonable copy of a window target, checked. */
function checkTarget(bytes: number, target: DeviceWindowTarget): DeviceWindowTarget {
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes > 2 ** 32) throw new RangeError(`device window bytes must be in [1, 4 GiB], not ${bytes}`);
  if (target.kind === 'cuda') {
    if (!Number.isSafeInteger(target.ordinal) || target.ordinal < 0) throw new RangeError(`cuda window: ordinal must be a device ordinal, not ${target.ordinal}`);
    if (!Number.isSafeInteger(target.dptr) || target.dptr <= 0) throw new RangeError(`cuda window: dptr must be a device pointer, not ${target.dptr}`);
    return { kind: 'cuda', ordinal: target.ordinal, dptr: target.dptr };
  }
  if (target.kind === 'memory') {
    if (!(target.memory instanceof SharedArrayBuffer)) throw new TypeError('memory window: memory must be a SharedArrayBuffer');
    if (target.memory.byteLength < bytes) throw new RangeError(`memory window: ${bytes} bytes do not fit the ${target.memory.byteLength}-byte memory`);
    const delay = target.copyDelayMs ?? 0;
    if (!Number.isFinite(delay) || delay < 0) throw new RangeError(`memory window: copyDelayMs must be >= 0, not ${delay}`);
    return { kind: 'memory', memory: target.memory, copyDelayMs: delay, failCopies: target.failCopies === true };
  }
  throw new TypeError(`unknown device window kind ${(target as { kind: unknown }).kind}`);
}

export class EmuTransport implements Transport {
  readonly kind = 'emu';
  readonly description: string;
  /** The doorbell registers as 32-bit cells from REG_DOORBELL_BASE on (what the notifiers store into). */
  readonly doorbells: Int32Array;
  /** The controller's wake word (src/emu/wake.ts): the control block's, or the BAR memfd's in memfd mode. */
  readonly wake: Int32Array;
  readonly dma: SharedDmaMemory | ShmDmaMemory;
  readonly config: EmuConfig;
  /** 'sab' or 'memfd' (EmuOptions.sharedMemory). */
  readonly sharedMemory: 'sab' | 'memfd';
  /** Wakes the controller thread: Atomics.notify on the SharedArrayBuffer word, or a futex wake in memfd mode. */
  private readonly waker: Waker;
  private readonly barRegion: ShmRegion | null = null;
  private readonly shmMods: ShmModules | null;
  private readonly regs: Int32Array;
  private readonly ctl: Int32Array;
  private readonly statCells: Float64Array;
  private readonly worker: Worker;
  private readonly port: import('node:worker_threads').MessagePort;
  private dead: Error | null = null;
  private closing: Promise<void> | null = null;
  private readonly exited: Promise<void>;
  private readonly log: (message: string) => void;

  /** Use openEmu(). */
  constructor(
    config: EmuConfig,
    description: string,
    dmaSegmentSize: number | undefined,
    dmaMaxBytes: number | undefined,
    shmMods: ShmModules | null = null,
    log: (message: string) => void = (m) => console.warn(`homi emu: ${m}`),
  ) {
    this.config = config;
    this.log = log;
    this.description = description;
    this.shmMods = shmMods;
    this.sharedMemory = shmMods === null ? 'sab' : 'memfd';
    const control = new SharedArrayBuffer(CONTROL_BLOCK_BYTES);
    this.ctl = new Int32Array(control, 0, CTL_STATS_BYTE_OFFSET / 4);
    this.statCells = new Float64Array(control, CTL_STATS_BYTE_OFFSET, STAT_CELLS);
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.port.unref();
    let init: WorkerInit;
    if (shmMods === null) {
      const bar = new SharedArrayBuffer(barSize(config.maxQueuePairs));
      this.regs = new Int32Array(bar);
      this.doorbells = new Int32Array(bar, REG_DOORBELL_BASE, doorbellCells(config.maxQueuePairs));
      this.wake = new Int32Array(control, CTL_WAKE * 4, 1);
      this.waker = new AtomicsWaker(this.wake);
      this.dma = new SharedDmaMemory({
        segmentSize: dmaSegmentSize,
        maxTotalBytes: dmaMaxBytes,
        onSegment: (index, sab) => this.post({ type: 'segment', index, sab }, false),
      });
      init = { config, bar, control, mailbox: port2, segments: [] };
    } else {
      const layout = shmBarLayout(config.maxQueuePairs);
      const region = shmMods.shm.createShm('homi-bar', layout.totalBytes);
      this.barRegion = region;
      this.regs = new Int32Array(region.buffer, 0, layout.barBytes >>> 2);
      this.doorbells = new Int32Array(region.buffer, REG_DOORBELL_BASE, doorbellCells(config.maxQueuePairs));
      this.wake = new Int32Array(region.buffer, layout.wakeOffset, 1);
      this.waker = new FutexWaker(this.wake, region.address + layout.wakeOffset, shmMods.shm.futexWake);
      // Segments are announced synchronously: the worker maps the fd before the call returns, so the fd can
      // never be closed (and its number reused) before the worker mapped it.
      this.dma = new shmMods.dma.ShmDmaMemory({
        segmentSize: dmaSegmentSize,
        maxTotalBytes: dmaMaxBytes,
        onSegment: (seg) => this.post({ type: 'segment', index: seg.index, fd: seg.fd, size: seg.size, ...(seg.dmabuf === true ? { dmabuf: true } : {}) }, true),
        onSegmentRemoved: (index) => {
          if (this.closing === null && this.failure === null) this.post({ type: 'dropSegment', index }, true);
        },
      });
      init = {
        config,
        bar: null,
        control,
        mailbox: port2,
        segments: [],
        shm: { barFd: region.fd, barBytes: layout.totalBytes, wakeOffset: layout.wakeOffset },
      };
    }
    this.worker = new Worker(new URL('../emu/worker.js', import.meta.url), { workerData: init, transferList: [port2] });
    this.exited = new Promise<void>((resolve) => {
      this.worker.once('exit', (code) => {
        if (this.closing === null && this.dead === null) this.dead = new Error(`emulated NVMe controller exited unexpectedly (code ${code})`);
        resolve();
      });
    });
    this.worker.on('error', (e) => {
      this.dead ??= new Error(`emulated NVMe controller crashed: ${e.message}`);
    });
    this.worker.on('message', (m: WorkerMessage | { type: 'ready' | 'error' }) => {
      if (m.type === 'log') this.log(m.message);
    });
  }

  /** Resolves when the worker has built its namespaces; rejects with its error otherwise. */
  started(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onMsg = (m: { type: string; message?: string }): void => {
        if (m.type === 'ready') {
          cleanup();
          resolve();
        } else if (m.type === 'error') {
          cleanup();
          reject(new Error(`emulated NVMe controller failed to start: ${m.message}`));
        }
      };
      const onExit = (code: number): void => {
        cleanup();
        reject(new Error(`emulated NVMe controller exited during start (code ${code})`));
      };
      const onError = (e: Error): void => {
        cleanup();
        reject(e);
      };
      const cleanup = (): void => {
        this.worker.off('message', onMsg);
        this.worker.off('exit', onExit);
        this.worker.off('error', onError);
      };
      this.worker.on('message', onMsg);
      this.worker.once('exit', onExit);
      this.worker.once('error', onError);
    });
  }

  /** Why the device is gone, or null while it is alive. */
  get failure(): Error | null {
    if (this.dead === null && Atomics.load(this.ctl, CTL_STATE) === WORKER_CRASHED) {
      this.dead = new Error('emulated NVMe controller crashed');
    }
    return this.dead;
  }

  read32(offset: number): number {
    if (this.failure !== null || this.closing !== null) return DEAD; // surprise-removed device: all ones
    return Atomics.load(this.regs, offset >> 2) >>> 0;
  }

  write32(offset: number, value: number): void {
    if (this.dead !== null || this.closing !== null) return;
    if (offset >= REG_DOORBELL_BASE) {
      Atomics.store(this.regs, offset >> 2, value | 0);
      this.kick();
      return;
    }
    if (!WRITABLE.has(offset)) return; // read-only register (CAP, VS, CSTS, ...)
    Atomics.store(this.regs, offset >> 2, value | 0);
    this.kick();
  }

  /** Wake the controller if it sleeps (after register writes). */
  private kick(): void {
    this.waker.wake();
  }

  setupAdminQueue(rings: QueueRings): Promise<void> {
    programAdminQueue((off, v) => this.write32(off, v), rings);
    return Promise.resolve();
  }

  createIoQueues(admin: AdminChannel, rings: QueueRings): Promise<void> {
    return createIoQueuePair(admin, rings);
  }

  deleteIoQueues(admin: AdminChannel, qid: number, afterSq?: () => void): Promise<void> {
    return deleteIoQueuePair(admin, qid, afterSq);
  }

  /** The doorbell store, then a wake when the controller thread sleeps (the wake stays out of the core's way). */
  notifier(qid: number): QueueNotifier {
    return doorbellNotifier(this.doorbells, qid, EMU_DOORBELL_STRIDE, this.waker);
  }

  /** memfd mode: the BAR0 memfd another process maps to ring doorbells and wake the controller. */
  barShm(): EmuBarShm {
    const r = this.barRegion;
    if (r === null) throw new Error('the embedded controller is not in memfd mode (openEmu({ sharedMemory: "memfd" }))');
    const layout = shmBarLayout(this.config.maxQueuePairs);
    return { fd: r.fd, bytes: r.size, barBytes: layout.barBytes, wakeOffset: layout.wakeOffset, doorbellStride: EMU_DOORBELL_STRIDE };
  }

  /**
   * memfd mode: queue memory as dedicated memfd segments, the doorbell pages and the wake-word page of the BAR
   * memfd as separate windows (a client never maps the register page). Null in SharedArrayBuffer mode.
   */
  queueExporter(): QueueExporter | null {
    if (this.shmMods === null || this.barRegion === null) return null;
    const bar = this.barShm();
    const dma = this.shmDma;
    const pageRound = (n: number): number => Math.ceil(n / 4096) * 4096;
    return {
      kind: 'emu-memfd',
      maxExportBytes: 2 ** 32,
      writableExportSafe: true,
      exportMemory: (bytes: number, name: string): ExportedMemory => {
        const seg = dma.createDedicated(bytes, name);
        return { fd: seg.fd, bytes: seg.size, iova: seg.iovaBase, view: new Uint8Array(seg.region.buffer, 0, seg.size), release: () => seg.release() };
      },
      doorbellWindow: (bytes: number) => {
        if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % 4096 !== 0 || REG_DOORBELL_BASE + bytes > bar.wakeOffset) {
          throw new RangeError(`doorbell window of ${bytes} bytes does not fit the ${pageRound(bar.barBytes) - REG_DOORBELL_BASE} bytes of doorbell pages`);
        }
        return { fd: bar.fd, offset: REG_DOORBELL_BASE, bytes };
      },
      wakeWindow: () => ({ fd: bar.fd, offset: bar.wakeOffset, bytes: 4096, word: 0 }),
      importDmaBuf: (buf: DmaBufHandle, name: string): ImportedDmaBuf => dma.importDmaBuf(buf, name),
    };
  }

  /** memfd mode: the segment fd and offset of a DMA buffer, for handing it to another process. */
  shmLocation(buf: DmaBuffer | number): ShmLocation {
    if (this.shmMods === null) throw new Error('the embedded controller is not in memfd mode (openEmu({ sharedMemory: "memfd" }))');
    return (this.dma as ShmDmaMemory).location(buf);
  }

  /** memfd mode: the DMA allocator (with createDedicated / registerFd / location). */
  get shmDma(): ShmDmaMemory {
    if (this.shmMods === null) throw new Error('the embedded controller is not in memfd mode (openEmu({ sharedMemory: "memfd" }))');
    return this.dma as ShmDmaMemory;
  }

  /**
   * Post a control message. With `sync`, wait until the worker has processed it (throws if the worker is gone
   * or does not answer within 5 s).
   */
  private post(msg: ControlMessage, sync: boolean): void {
    if (this.closing !== null) throw new Error('emulated NVMe controller is closed');
    if (this.failure !== null) throw this.failure;
    this.port.postMessage(msg);
    const seq = Atomics.add(this.ctl, CTL_SEQ, 1) + 1;
    this.kick();
    if (!sync) return;
    const deadline = Date.now() + CONTROL_TIMEOUT_MS;
    for (;;) {
      const ack = Atomics.load(this.ctl, CTL_ACK);
      if (ack - seq >= 0) return;
      if (this.failure !== null) throw this.failure;
      if (Date.now() > deadline) throw new Error('emulated NVMe controller does not respond');
      Atomics.wait(this.ctl, CTL_ACK, ack, 10);
    }
  }

  /** Add a fault rule; active when this returns. */
  inject(rule: FaultRule): void {
    this.post({ type: 'inject', rule }, true);
  }

  /** Remove all fault rules; done when this returns. */
  clearFaults(): void {
    this.post({ type: 'clearFaults' }, true);
  }

  /** Put the controller in the fatal state (CSTS.CFS); done when this returns. */
  setFatal(): void {
    this.post({ type: 'setFatal' }, true);
  }

  /**
   * Keep the controller polling, never sleeping on its wake word, until the returned release is called (once;
   * later calls do nothing). For initiators that cannot wake a thread: a GPU kernel stores doorbells and nothing
   * else. Holds nest; the controller goes back to its adaptive spin and sleep when the last is released.
   */
  holdAwake(): () => void {
    Atomics.add(this.ctl, CTL_AWAKE_HOLDS, 1);
    this.waker.wake();
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      Atomics.sub(this.ctl, CTL_AWAKE_HOLDS, 1);
    };
  }

  /** Holders of holdAwake() now. */
  awakeHolds(): number {
    return Atomics.load(this.ctl, CTL_AWAKE_HOLDS);
  }

  /**
   * Emulated P2P: a device window of `bytes` for `target` (memfd mode). The window is a shadow segment of host
   * memory at its own IOVA: the controller moves data into and out of the shadow as usual and copies it to or
   * from the device with the copy engine, completing a read only once its copy to the device is done.
   * A cuda target (`dptr`: cuMemAlloc memory in this process, in the primary context of device `ordinal`) makes
   * the controller load the CUDA driver; without one this throws NoCudaDriverError and the controller runs on.
   * A memory target is the test double: `memory` plays device memory. Synchronous like the other control calls:
   * it blocks this thread until the controller has set the window up (a CUDA driver's initialization included;
   * at most 60 s).
   */
  addDeviceWindow(bytes: number, target: DeviceWindowTarget): DeviceWindow {
    const clean = checkTarget(bytes, target);
    const mods = this.shmMods;
    if (mods === null) throw new Error(`a device window (emulated P2P) needs the controller in memfd mode (openEmu({ sharedMemory: 'memfd' }))`);
    const seg = this.shmDma.createDedicated(bytes, 'homi-ep2p-shadow');
    const index = seg.index;
    try {
      const seen = Atomics.load(this.ctl, CTL_WINDOW_ANSWERS);
      this.post({ type: 'addWindow', index, bytes, target: clean }, true);
      const answer = this.windowAnswer(index, seen);
      if (answer.error !== null) throw windowError(answer.error, mods.cuda);
    } catch (e) {
      seg.release(); // the controller forgets a window with its shadow (whatever of it was set up)
      throw e;
    }
    let released = false;
    return {
      iova: seg.iovaBase,
      bytes,
      release: () => {
        if (released) return;
        released = true;
        try {
          if (this.closing === null && this.failure === null) this.post({ type: 'dropWindow', index }, true);
        } finally {
          seg.release();
        }
      },
    };
  }

  /**
   * Wait (blocking this thread, like every synchronous control call) for the controller's answer to the
   * 'addWindow' of segment `index`, posted back on the mailbox; `seen` is CTL_WINDOW_ANSWERS before the post.
   * An answer for another index is a late one for an add that gave up: dropped.
   */
  private windowAnswer(index: number, seen: number): WindowAnswer {
    const deadline = Date.now() + WINDOW_TIMEOUT_MS;
    for (;;) {
      const m = receiveMessageOnPort(this.port);
      if (m !== undefined) {
        const a = m.message as WindowAnswer;
        if (a.index === index) return a;
        continue;
      }
      if (this.failure !== null) throw this.failure;
      const now = Date.now();
      if (now > deadline) throw new Error(`emulated P2P: the controller did not answer within ${WINDOW_TIMEOUT_MS / 1000} s`);
      const v = Atomics.load(this.ctl, CTL_WINDOW_ANSWERS);
      if (v === seen) Atomics.wait(this.ctl, CTL_WINDOW_ANSWERS, v, Math.min(100, deadline - now));
      seen = v;
    }
  }

  stats(): EmuStats {
    const s = this.statCells;
    return {
      commands: s[STAT_COMMANDS]!,
      adminCommands: s[STAT_ADMIN_COMMANDS]!,
      ioCommands: s[STAT_IO_COMMANDS]!,
      reads: s[STAT_READS]!,
      writes: s[STAT_WRITES]!,
      errors: s[STAT_ERRORS]!,
      sleeps: s[STAT_SLEEPS]!,
      invalidDoorbells: s[STAT_INVALID_DOORBELLS]!,
      emulatedP2pBytesToDevice: s[STAT_EP2P_BYTES_TO_DEVICE]!,
      emulatedP2pCopiesToDevice: s[STAT_EP2P_COPIES_TO_DEVICE]!,
      emulatedP2pBytesFromDevice: s[STAT_EP2P_BYTES_FROM_DEVICE]!,
      emulatedP2pCopiesFromDevice: s[STAT_EP2P_COPIES_FROM_DEVICE]!,
      emulatedP2pFences: s[STAT_EP2P_FENCES]!,
      emulatedP2pErrors: s[STAT_EP2P_ERRORS]!,
    };
  }

  /** Stop the controller (flushing file-backed data) and terminate the worker. Idempotent. */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    this.closing = (async () => {
      Atomics.store(this.ctl, CTL_STOP, 1);
      this.kick();
      const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 3000).unref());
      const how = await Promise.race([this.exited.then(() => 'exited' as const), timer]);
      if (how === 'timeout') await this.worker.terminate();
      this.port.close();
      if (Atomics.load(this.ctl, CTL_STATE) !== WORKER_STOPPED && this.dead === null && how === 'timeout') {
        this.dead = new Error('emulated NVMe controller did not stop in time');
      }
      if (this.shmMods !== null) {
        (this.dma as ShmDmaMemory).close();
        this.barRegion?.close();
      }
    })();
    return this.closing;
  }
}

/** Start an embedded NVMe controller. */
export async function openEmu(opts: EmuOptions): Promise<EmuTransport> {
  const config = resolveConfig({
    namespaces: opts.namespaces,
    backing: opts.backing ?? 'memory',
    maxQueuePairs: opts.maxQueuePairs,
    mqes: opts.mqes,
    serial: opts.serial,
    model: opts.model,
    firmware: opts.firmware,
    vendorId: opts.vendorId,
    subsystemVendorId: opts.subsystemVendorId,
    cntlid: opts.cntlid,
    mdts: opts.mdts,
    readyDelayMs: opts.readyDelayMs,
    spinUs: opts.spinUs,
    spinMaxUs: opts.spinMaxUs,
    sleepMs: opts.sleepMs,
  });
  const mode = opts.sharedMemory ?? 'sab';
  if (mode !== 'sab' && mode !== 'memfd') throw new RangeError("sharedMemory must be 'sab' or 'memfd'");
  const mods: ShmModules | null = mode === 'memfd' ? { shm: await import('../sys/shm.js'), dma: await import('../mem/shm-dma.js'), cuda: await import('../sys/cuda.js') } : null;
  const t = new EmuTransport(config, opts.description ?? 'emu', opts.dmaSegmentSize, opts.dmaMaxBytes, mods, opts.log);
  try {
    await t.started();
  } catch (e) {
    await t.close();
    throw e;
  }
  return t;
}
