/**
 * One ublk block device served from NVMe queue pairs: the kernel side of its life (ADD_DEV, SET_PARAMS,
 * START_DEV; STOP_DEV, DEL_DEV; after a crash of its previous server, START_USER_RECOVERY / END_USER_RECOVERY)
 * and its I/O thread (worker.ts). The queue pairs come from the caller (homid provisions one per ublk queue and
 * takes them back with `release`); this module never touches the controller's admin queue.
 *
 * Devices are created with UBLK_F_USER_RECOVERY: when the server dies (homid killed), the kernel quiesces the
 * device instead of removing it: I/O waits, the mounted file system stays mounted. A new server that finds the
 * device QUIESCED under the configured id recovers it; one that finds it DEAD (added, never started) deletes and
 * re-adds it; one that finds it LIVE refuses (another server owns it).
 */
import { Worker } from 'node:worker_threads';
import * as fs from 'node:fs';
import type { RawQueueGrant } from '../ipc/raw-grant.js';
import {
  eventFd,
  UBLK_ATTR_VOLATILE_CACHE,
  UBLK_DEV_ID_ANY,
  UBLK_F_CMD_IOCTL_ENCODE,
  UBLK_F_USER_RECOVERY,
  UBLK_F_USER_RECOVERY_REISSUE,
  UBLK_MAX_IO_BUF_BYTES,
  UBLK_MAX_NR_QUEUES,
  UBLK_MAX_QUEUE_DEPTH,
  UblkState,
  ublkBlockPath,
  ublkStateName,
  type UblkDevInfo,
  type UblkParams,
} from '../sys/ublk.js';
import { closeFd } from '../sys/uring.js';
import { UblkError, type UblkControl } from './control.js';
import { validateTarget, type UblkTarget } from './dispatch.js';
import { CONTROL_WORDS, CTRL_STOP, STATS_FIELDS, StatsField, type WorkerMessage } from './worker-protocol.js';
import type { UblkWorkerData } from './worker.js';

/** The queue pairs serving one device, one per ublk queue, and how to give them back. */
export interface ProvisionedQueues {
  queues: { qid: number; grant: RawQueueGrant; fds: number[] }[];
  release(): Promise<void>;
}

export interface UblkDeviceSpec {
  /** ublk device id (UBLK_DEV_ID_ANY: the kernel picks; then no recovery across restarts). */
  devId: number;
  target: UblkTarget;
  queues: number;
  depth: number;
  /** Bytes of each tag's buffer: the largest request (max_sectors). */
  bufBytes: number;
  /** Advertise discard (the controller supports Dataset Management). */
  discard: boolean;
  /** NVMe command timeout (ms). */
  timeoutMs?: number;
}

export type UblkDeviceState = 'starting' | 'recovering' | 'live' | 'stopping' | 'stopped' | 'failed';

export interface UblkDeviceStatus {
  devId: number;
  blockDevice: string;
  state: UblkDeviceState;
  /** The kernel's view (GET_DEV_INFO state) when last asked. */
  recovered: boolean;
  nsid: number;
  blockSize: number;
  rangeStart: number;
  rangeBlocks: number;
  depth: number;
  bufBytes: number;
  qids: number[];
  io: { reads: number; writes: number; flushes: number; discards: number; errors: number; refused: number; bytesRead: number; bytesWritten: number };
  error: string | null;
}

export interface UblkLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** Checks a spec; throws UblkError('bad-request') naming the field. */
export function validateSpec(s: UblkDeviceSpec): void {
  const bad = (m: string): never => {
    throw new UblkError('bad-request', m);
  };
  try {
    validateTarget(s.target);
  } catch (e) {
    bad((e as Error).message);
  }
  if (!(s.devId === UBLK_DEV_ID_ANY || (Number.isInteger(s.devId) && s.devId >= 0 && s.devId < 1 << 20))) bad(`ublk device id must be 0..${(1 << 20) - 1}, got ${s.devId}`);
  if (!Number.isInteger(s.queues) || s.queues < 1 || s.queues > UBLK_MAX_NR_QUEUES) bad(`queues must be 1..${UBLK_MAX_NR_QUEUES}, got ${s.queues}`);
  if (!Number.isInteger(s.depth) || s.depth < 1 || s.depth > UBLK_MAX_QUEUE_DEPTH) bad(`depth must be 1..${UBLK_MAX_QUEUE_DEPTH}, got ${s.depth}`);
  if (!Number.isInteger(s.bufBytes) || s.bufBytes < 4096 || s.bufBytes % 4096 !== 0 || s.bufBytes > UBLK_MAX_IO_BUF_BYTES) {
    bad(`the I/O buffer must be a multiple of 4096 bytes up to ${UBLK_MAX_IO_BUF_BYTES}, got ${s.bufBytes}`);
  }
  if (s.bufBytes < s.target.blockSize) bad(`the I/O buffer (${s.bufBytes}) is smaller than one block (${s.target.blockSize})`);
  if ((s.target.rangeBlocks * s.target.blockSize) / 512 > Number.MAX_SAFE_INTEGER) bad('the range is too large');
}

/** The parameters the kernel gets for a spec: the namespace's block size, the range's size, the buffer's limit. */
export function paramsFor(s: UblkDeviceSpec): UblkParams {
  const shift = Math.log2(s.target.blockSize);
  const sectorsPerBlock = s.target.blockSize / 512;
  return {
    attrs: UBLK_ATTR_VOLATILE_CACHE,
    logicalBsShift: shift,
    physicalBsShift: shift,
    ioOptShift: 0,
    ioMinShift: shift,
    maxSectors: s.bufBytes / 512,
    chunkSectors: 0,
    devSectors: s.target.rangeBlocks * sectorsPerBlock,
    virtBoundaryMask: 0,
    discard: s.discard
      ? {
          alignment: 0,
          granularity: s.target.blockSize,
          maxDiscardSectors: Math.min(s.target.rangeBlocks, 0xffff) * sectorsPerBlock,
          maxWriteZeroesSectors: 0,
          maxDiscardSegments: 1,
        }
      : null,
  };
}

const STOP_WAIT_MS = 30_000;
const RECOVERY_BUSY_RETRY_MS = 10_000;

export class UblkDevice {
  state: UblkDeviceState;
  error: string | null = null;
  devId: number;
  private worker: Worker | null = null;
  private exited: Promise<void> = Promise.resolve();
  private readonly stats: SharedArrayBuffer;
  private readonly control = new SharedArrayBuffer(CONTROL_WORDS * 4);
  private wakeFd = -1;
  private provisioned: ProvisionedQueues | null = null;
  private recovered = false;

  private constructor(
    private readonly ctrl: UblkControl,
    readonly spec: UblkDeviceSpec,
    private readonly log: UblkLogger,
  ) {
    this.devId = spec.devId;
    this.state = 'starting';
    this.stats = new SharedArrayBuffer(spec.queues * STATS_FIELDS * 8);
  }

  get blockDevice(): string {
    return ublkBlockPath(this.devId);
  }

  /**
   * Bring the device up: recover it when the kernel still holds it quiesced under spec.devId, else add it.
   * `provide(n)` provisions n NVMe queue pairs (n: the queue count the kernel granted). On failure everything
   * made so far is undone and the error is rethrown.
   */
  static async create(ctrl: UblkControl, spec: UblkDeviceSpec, provide: (n: number) => Promise<ProvisionedQueues>, log: UblkLogger): Promise<UblkDevice> {
    validateSpec(spec);
    const dev = new UblkDevice(ctrl, spec, log);
    const existing = spec.devId === UBLK_DEV_ID_ANY ? null : await ctrl.getDevInfo(spec.devId);
    if (existing !== null && existing.state === UblkState.Quiesced && (existing.flags & UBLK_F_USER_RECOVERY) !== 0n) {
      await dev.recover(existing, provide);
      return dev;
    }
    if (existing !== null) {
      if (existing.state === UblkState.Dead) {
        log.warn({ devId: spec.devId }, 'a ublk device with this id was added but never started (a previous homid stopped half-way); deleting it');
        await ctrl.delDev(spec.devId);
      } else {
        throw new UblkError(
          'busy',
          `ublk device ${spec.devId} exists already (state ${ublkStateName(existing.state)}, server pid ${existing.ublksrvPid}${(existing.flags & UBLK_F_USER_RECOVERY) === 0n ? ', not recoverable' : ''}): another server owns it; pick another id or delete it`,
        );
      }
    }
    await dev.add(provide);
    return dev;
  }

  private async add(provide: (n: number) => Promise<ProvisionedQueues>): Promise<void> {
    const s = this.spec;
    const t0 = Date.now();
    const info = await this.ctrl.addDev({
      devId: s.devId,
      nrHwQueues: s.queues,
      queueDepth: s.depth,
      maxIoBufBytes: s.bufBytes,
      flags: UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE | UBLK_F_CMD_IOCTL_ENCODE,
    });
    this.devId = info.devId;
    try {
      this.checkInfo(info);
      await this.ctrl.setParams(this.devId, paramsFor(s));
      await this.serve(info.nrHwQueues, provide);
      const tServe = Date.now();
      await this.ctrl.startDev(this.devId, process.pid);
      this.state = 'live';
      this.log.info(
        {
          msToServe: tServe - t0,
          msStartDev: Date.now() - tServe,
          devId: this.devId,
          blockDevice: this.blockDevice,
          queues: info.nrHwQueues,
          depth: info.queueDepth,
          nsid: s.target.nsid,
          rangeStart: s.target.rangeStart,
          rangeBlocks: s.target.rangeBlocks,
        },
        'ublk device started',
      );
    } catch (e) {
      await this.teardown(true).catch(() => undefined);
      this.state = 'failed';
      throw e;
    }
  }

  private async recover(info: UblkDevInfo, provide: (n: number) => Promise<ProvisionedQueues>): Promise<void> {
    this.state = 'recovering';
    this.checkInfo(info);
    const deadline = Date.now() + RECOVERY_BUSY_RETRY_MS;
    for (;;) {
      try {
        await this.ctrl.startUserRecovery(this.devId);
        break;
      } catch (e) {
        // the dead server's descriptors are released a moment after it exits
        if (!(e instanceof UblkError) || e.code !== 'busy' || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    try {
      await this.serve(info.nrHwQueues, provide);
      await this.ctrl.endUserRecovery(this.devId, process.pid);
    } catch (e) {
      await this.stopWorker().catch(() => undefined);
      await this.provisioned?.release().catch(() => undefined);
      this.provisioned = null;
      this.state = 'failed';
      throw e;
    }
    this.recovered = true;
    this.state = 'live';
    this.log.info({ devId: this.devId, blockDevice: this.blockDevice, queues: info.nrHwQueues, previousPid: info.ublksrvPid }, 'ublk device recovered from a previous server');
  }

  private checkInfo(info: UblkDevInfo): void {
    const s = this.spec;
    if (info.queueDepth !== s.depth) throw new UblkError('refused', `ublk device ${info.devId}: the kernel has queue depth ${info.queueDepth}, the configuration ${s.depth}`);
    if (info.nrHwQueues < 1 || info.nrHwQueues > s.queues) throw new UblkError('refused', `ublk device ${info.devId}: the kernel reports ${info.nrHwQueues} queues, the configuration ${s.queues}`);
    if (info.maxIoBufBytes < s.bufBytes) throw new UblkError('refused', `ublk device ${info.devId}: the kernel allows ${info.maxIoBufBytes}-byte buffers, the configuration needs ${s.bufBytes}`);
  }

  /** Provision the queue pairs and start the I/O thread; resolves once every tag is fetched. */
  private async serve(nq: number, provide: (n: number) => Promise<ProvisionedQueues>): Promise<void> {
    this.provisioned = await provide(nq);
    this.wakeFd = eventFd();
    new Float64Array(this.stats).fill(0);
    Atomics.store(new Int32Array(this.control), CTRL_STOP, 0);
    const data: UblkWorkerData = {
      devId: this.devId,
      target: this.spec.target,
      depth: this.spec.depth,
      bufBytes: this.spec.bufBytes,
      queues: this.provisioned.queues.map((q) => ({ grant: q.grant, fds: q.fds })),
      stats: this.stats,
      control: this.control,
      wakeFd: this.wakeFd,
      timeoutMs: this.spec.timeoutMs ?? 30_000,
    };
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: data });
    this.worker = worker;
    let readyResolve!: () => void;
    let readyReject!: (e: Error) => void;
    const ready = new Promise<void>((res, rej) => {
      readyResolve = res;
      readyReject = rej;
    });
    this.exited = new Promise<void>((res) => {
      worker.on('message', (m: WorkerMessage) => {
        if (m.type === 'ready') readyResolve();
        else if (m.type === 'warn') this.log.warn({ devId: this.devId }, m.message);
        else if (m.type === 'error') {
          this.error = m.message.split('\n')[0] ?? m.message;
          this.log.error({ devId: this.devId, err: m.message }, 'the ublk I/O thread failed');
          readyReject(new UblkError('refused', `ublk device ${this.devId}: the I/O thread failed: ${this.error}`));
        } else if (m.type === 'exit') this.log.info({ devId: this.devId, retired: m.retired, stopped: m.stopped }, 'the ublk I/O thread left');
      });
      worker.on('error', (e) => {
        this.error = e.message;
        readyReject(e);
      });
      worker.on('exit', () => {
        this.worker = null;
        if (this.wakeFd >= 0) closeFd(this.wakeFd);
        this.wakeFd = -1;
        readyReject(new UblkError('refused', `ublk device ${this.devId}: the I/O thread exited before serving${this.error ? `: ${this.error}` : ''}`));
        if (this.state === 'live' || this.state === 'recovering') {
          this.state = 'failed';
          this.log.error({ devId: this.devId }, 'the ublk I/O thread exited while the device was live: the kernel holds its I/O (quiesced) until homid restarts');
        }
        res();
      });
    });
    await ready;
  }

  /** Ask the I/O thread to leave (stop flag + eventfd) and wait for it. */
  private async stopWorker(): Promise<void> {
    if (this.worker === null) return;
    Atomics.store(new Int32Array(this.control), CTRL_STOP, 1);
    if (this.wakeFd >= 0) {
      const one = Buffer.alloc(8);
      one.writeBigUInt64LE(1n);
      try {
        fs.writeSync(this.wakeFd, one);
      } catch {
        // the thread is gone
      }
    }
    await this.exited;
  }

  /** STOP_DEV, the I/O thread leaves (every fetch aborted), DEL_DEV, the queue pairs go back. */
  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    await this.teardown(false);
    this.state = 'stopped';
    this.log.info({ devId: this.devId }, 'ublk device removed');
  }

  private async teardown(quiet: boolean): Promise<void> {
    const errs: string[] = [];
    try {
      await this.ctrl.stopDev(this.devId);
    } catch (e) {
      errs.push((e as Error).message);
    }
    // a device that never started may hold fetches STOP_DEV does not abort: make the thread leave at once
    if (quiet) await this.stopWorker();
    // STOP_DEV aborts every fetch: the thread retires its tags and leaves; if it does not, make it
    const timer = setTimeout(() => void this.stopWorker(), STOP_WAIT_MS);
    await this.exited;
    clearTimeout(timer);
    await this.stopWorker();
    try {
      await this.ctrl.delDev(this.devId);
    } catch (e) {
      if (!(e instanceof UblkError && e.code === 'no-device')) errs.push((e as Error).message);
    }
    try {
      await this.provisioned?.release();
    } catch (e) {
      errs.push((e as Error).message);
    }
    this.provisioned = null;
    if (errs.length > 0) {
      this.error = errs.join('; ');
      if (!quiet) this.log.error({ devId: this.devId, errors: errs }, 'removing the ublk device did not finish cleanly');
    }
  }

  /**
   * Forget the device without telling the kernel (homid is leaving without removing it, as after a crash): the
   * thread leaves, the kernel quiesces the device, a later homid recovers it. Used by tests of recovery.
   */
  async abandon(): Promise<void> {
    await this.stopWorker();
    this.state = 'failed';
  }

  status(): UblkDeviceStatus {
    const st = new Float64Array(this.stats);
    const sum = (f: number): number => {
      let n = 0;
      for (let q = 0; q < this.spec.queues; q++) n += st[q * STATS_FIELDS + f]!;
      return n;
    };
    const t = this.spec.target;
    return {
      devId: this.devId,
      blockDevice: this.blockDevice,
      state: this.state,
      recovered: this.recovered,
      nsid: t.nsid,
      blockSize: t.blockSize,
      rangeStart: t.rangeStart,
      rangeBlocks: t.rangeBlocks,
      depth: this.spec.depth,
      bufBytes: this.spec.bufBytes,
      qids: this.provisioned?.queues.map((q) => q.qid) ?? [],
      io: {
        reads: sum(StatsField.reads),
        writes: sum(StatsField.writes),
        flushes: sum(StatsField.flushes),
        discards: sum(StatsField.discards),
        errors: sum(StatsField.errors),
        refused: sum(StatsField.refused),
        bytesRead: sum(StatsField.bytesRead),
        bytesWritten: sum(StatsField.bytesWritten),
      },
      error: this.error,
    };
  }
}
