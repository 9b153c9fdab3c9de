/**
 * The NVMe controller as the driver core sees it: bring-up, identify, the admin queue, I/O queue pair
 * creation/deletion, timeouts -> Abort -> reset escalation, controller reset, health checks and shutdown.
 * Transport agnostic: everything goes through the Transport interface (registers, doorbells, DMA memory).
 */
import type { DmaBuffer } from '../mem/dma.js';
import { makeStatus } from '../nvme/cqe.js';
import {
  decodeActiveNamespaceList,
  decodeIdentifyController,
  decodeIdentifyNamespace,
  IDENTIFY_DATA_SIZE,
  NSID_LIST_MAX_ENTRIES,
  type IdentifyController,
  type IdentifyNamespace,
} from '../nvme/identify.js';
import { opcodeName } from '../nvme/opcodes.js';
import { CSTS_CFS, REG_CAP, REG_CSTS, REG_VS, decodeCap, decodeCsts, decodeVersion, type Capabilities, type ControllerStatus, type Version } from '../nvme/registers.js';
import type { Sqe } from '../nvme/sqe.js';
import { GenericStatus, Sct } from '../nvme/status.js';
import type { AdminChannel, Transport } from '../transport/transport.js';
import {
  ABORT_RESULT_NOT_ABORTED,
  abortSqe,
  activeNamespaceListSqe,
  decodeNumberOfQueues,
  getFeaturesSqe,
  getLogPageSqe,
  identifyControllerSqe,
  identifyNamespaceSqe,
  setFeaturesSqe,
  setNumberOfQueuesSqe,
} from './admin-commands.js';
import { disableController, enableController, shutdownController } from './bringup.js';
import { dataPointer, type DataPointer } from './dptr.js';
import { ControllerResetError, ControllerStateError, DeviceRemovedError, InvalidArgumentError, NvmeError, NvmeStatusError, NvmeTimeoutError, type CommandContext } from './errors.js';
import { toIdentity, toNamespaceInfo, type ControllerIdentity, type NamespaceInfo } from './identity.js';
import { DEFAULT_IO_TIMEOUT_MS, QueuePair, type Completion, type MalformedCompletion, type QueuePairHooks } from './queue-pair.js';
import { QueueTable, ringsOf, type QueueRow, type RemoteQueuePair, type RemoteRow } from './queue-table.js';
import { ALL_ONES, readReg, readReg64 } from './registers.js';
import { failOutstandingForReset, reinitializeAfterReset, takeQueuesDown, type ResetHost } from './reset.js';
import { STATUS_ABORTED_BY_RESET, STATUS_DEVICE_REMOVED } from './status.js';

export type { RemoteQueuePair } from './queue-table.js';

export interface ControllerOptions {
  /** I/O queue pairs to request with Set Features Number of Queues (default 16). */
  ioQueues?: number;
  /** Admin queue entries (default 32, at most 4096 and CAP.MQES + 1). */
  adminEntries?: number;
  /** Bound for CSTS.RDY transitions in ms (default CAP.TO * 500). */
  readyTimeoutMs?: number;
  /** Timeout of admin commands in ms (default 10000). */
  adminTimeoutMs?: number;
  /** Default timeout of I/O commands in ms for new queue pairs (default 5000; 0 disables). */
  ioTimeoutMs?: number;
  /** Minimum interval between CSTS health reads made while polling, in ms (default 10). */
  healthIntervalMs?: number;
  log?: (msg: string) => void;
  /** A queue pair created with createQueuePairOn was destroyed by a controller reset or removal. */
  onRemoteQueueLost?: (rq: RemoteQueuePair, reason: string) => void;
}

export interface CreateQueuePairOptions {
  /** SQ and CQ entries (default min(1024, CAP.MQES + 1)). */
  entries?: number;
  /** Per-command timeout in ms (default the controller's ioTimeoutMs; 0 disables). */
  timeoutMs?: number;
}

/** Options of createQueuePairOn (a queue pair another process drives). */
export interface CreateQueuePairOnOptions {
  /** SQ and CQ entries (2..CAP.MQES + 1). */
  entries: number;
  /** The qid to use (default the lowest free one). */
  qid?: number;
}

export type ControllerState = 'initializing' | 'live' | 'resetting' | 'failed' | 'removed' | 'closing' | 'closed';

export interface ControllerCounters {
  resets: number;
  timeouts: number;
  aborts: number;
  malformed: number;
}

/** Health as read from CSTS by checkHealth(). */
export interface ControllerHealth extends ControllerStatus {
  csts: number;
}

/** 15-bit status used for commands failed locally when their queue is deleted. */
export const STATUS_ABORTED_SQ_DELETION = makeStatus(Sct.Generic, GenericStatus.AbortedSqDeletion);

const DEFAULT_IO_QUEUES = 16;
const DEFAULT_ADMIN_ENTRIES = 32;
const MAX_ADMIN_ENTRIES = 4096;
const DEFAULT_ADMIN_TIMEOUT_MS = 10_000;
const DEFAULT_HEALTH_INTERVAL_MS = 10;
const DEFAULT_IO_QUEUE_ENTRIES = 1024;
/** Largest number of I/O queue pairs the Number of Queues feature can express. */
const MAX_IO_QUEUES = 0xffff;

export class Controller {
  readonly transport: Transport;
  cap!: Capabilities;
  version!: Version;
  identity!: ControllerIdentity;
  namespaces: NamespaceInfo[] = [];
  /** I/O queue pairs the controller granted (min(NSQA, NCQA) + 1). */
  maxIoQueuePairs = 0;
  readonly counters: ControllerCounters = { resets: 0, timeouts: 0, aborts: 0, malformed: 0 };

  private readonly opts: Required<Omit<ControllerOptions, 'log' | 'readyTimeoutMs' | 'onRemoteQueueLost'>> & { readyTimeoutMs?: number };
  private readonly onRemoteQueueLost: ((rq: RemoteQueuePair, reason: string) => void) | undefined;
  private readonly log: (msg: string) => void;
  private _state: ControllerState = 'initializing';
  private adminQueue: QueuePair | null = null;
  /** Every I/O queue pair given out, local and remote, by qid (queue-table.ts). */
  private readonly table = new QueueTable();
  /** How the transport runs the admin commands that create and delete queues. */
  private readonly adminChannel: AdminChannel;
  private resetPromise: Promise<void> | null = null;
  private closePromise: Promise<void> | null = null;
  private lastHealth = 0;
  private readonly hooks: QueuePairHooks;

  private constructor(transport: Transport, opts: ControllerOptions) {
    this.transport = transport;
    this.log = opts.log ?? (() => undefined);
    this.onRemoteQueueLost = opts.onRemoteQueueLost;
    const ioQueues = opts.ioQueues ?? DEFAULT_IO_QUEUES;
    if (!Number.isInteger(ioQueues) || ioQueues < 1 || ioQueues > MAX_IO_QUEUES) {
      throw new InvalidArgumentError(`ioQueues must be an integer in 1..${MAX_IO_QUEUES}, got ${ioQueues}`);
    }
    const adminEntries = opts.adminEntries ?? DEFAULT_ADMIN_ENTRIES;
    if (!Number.isInteger(adminEntries) || adminEntries < 2 || adminEntries > MAX_ADMIN_ENTRIES) {
      throw new InvalidArgumentError(`adminEntries must be an integer in 2..${MAX_ADMIN_ENTRIES}, got ${adminEntries}`);
    }
    this.opts = {
      ioQueues,
      adminEntries,
      readyTimeoutMs: opts.readyTimeoutMs,
      adminTimeoutMs: opts.adminTimeoutMs ?? DEFAULT_ADMIN_TIMEOUT_MS,
      ioTimeoutMs: opts.ioTimeoutMs ?? DEFAULT_IO_TIMEOUT_MS,
      healthIntervalMs: opts.healthIntervalMs ?? DEFAULT_HEALTH_INTERVAL_MS,
    };
    this.hooks = {
      onTimeout: (qp, cid, opcode) => this.onCommandTimeout(qp, cid, opcode),
      onMalformed: (qp, info) => this.onMalformed(qp, info),
      onTick: (_qp, now) => this.onTick(now),
    };
    this.adminChannel = { run: (sqe) => this.adminRaw(sqe), log: this.log };
  }

  /**
   * Bring the controller up (NVMe Base 2.0 section 3.5.1): read CAP/VS, disable if enabled, set up the admin
   * queue, enable, identify the controller and its active namespaces, negotiate the number of I/O queues.
   */
  static async open(transport: Transport, opts: ControllerOptions = {}): Promise<Controller> {
    const c = new Controller(transport, opts);
    try {
      await c.initialize();
    } catch (e) {
      c._state = 'failed';
      await c.releaseAfterFailedOpen();
      throw e;
    }
    return c;
  }

  get state(): ControllerState {
    return this._state;
  }
  /** The admin queue pair (qid 0). */
  get adminQueuePair(): QueuePair {
    if (!this.adminQueue) throw new ControllerStateError('controller has no admin queue');
    return this.adminQueue;
  }
  /** The CAP.TO bound (or the readyTimeoutMs option). */
  get readyTimeoutMs(): number {
    return this.opts.readyTimeoutMs ?? Math.max(this.cap.timeoutMs, 500);
  }

  /** Namespace info by NSID (throws InvalidArgumentError for an inactive NSID). */
  namespace(nsid: number): NamespaceInfo {
    const ns = this.namespaces.find((n) => n.nsid === nsid);
    if (!ns) throw new InvalidArgumentError(`namespace ${nsid} is not active on this controller (active: ${this.namespaces.map((n) => n.nsid).join(', ') || 'none'})`);
    return ns;
  }

  // ---------------------------------------------------------------- bring-up

  private async initialize(): Promise<void> {
    const t = this.transport;
    const [capLo, capHi] = readReg64(t, REG_CAP, 'CAP');
    this.cap = decodeCap(capLo, capHi);
    this.version = decodeVersion(readReg(t, REG_VS, 'VS'));
    this.log(
      `CAP: MQES ${this.cap.maxQueueEntries}, TO ${this.cap.timeoutMs} ms, DSTRD ${this.cap.doorbellStride} B, ` +
        `MPS ${this.cap.minPageSize}..${this.cap.maxPageSize}; VS ${this.version.major}.${this.version.minor}.${this.version.tertiary}`,
    );
    const adminEntries = Math.min(this.opts.adminEntries, this.cap.maxQueueEntries);
    this.adminQueue = new QueuePair(t, { qid: 0, entries: adminEntries, timeoutMs: this.opts.adminTimeoutMs }, this.hooks);
    await this.enableAndIdentify(this.opts.ioQueues);
    this._state = 'live';
  }

  /** Disable (if needed), program the admin queue, enable, identify, negotiate queues. Used by open and reset. */
  private async enableAndIdentify(ioQueuesWanted: number): Promise<void> {
    const t = this.transport;
    const admin = this.adminQueuePair;
    await disableController(t, this.readyTimeoutMs, this.log);
    admin._reinit();
    await enableController(t, this.cap, admin, t.dma.pageSize, this.readyTimeoutMs);
    admin._activate();
    const id = await this.identifyController();
    this.identity = toIdentity(id, this.cap.minPageSize);
    this.log(`identify: ${this.identity.model} sn ${this.identity.serial} fw ${this.identity.firmware}, ${id.nn} namespace(s)`);
    this.namespaces = await this.identifyNamespaces(id.nn);
    const r = await this.adminRaw(setNumberOfQueuesSqe(ioQueuesWanted));
    const { nsqa, ncqa } = decodeNumberOfQueues(r.result);
    this.maxIoQueuePairs = Math.min(nsqa, ncqa);
    this.log(`number of queues: requested ${ioQueuesWanted}, granted ${nsqa} SQ / ${ncqa} CQ`);
  }

  private async identifyNamespaces(nn: number): Promise<NamespaceInfo[]> {
    let nsids: number[];
    try {
      nsids = await this.activeNamespaceIds();
    } catch (e) {
      if (!(e instanceof NvmeStatusError)) throw e;
      // Controllers before NVMe 1.1 lack CNS 02h: probe 1..NN instead.
      this.log(`active namespace list unsupported (${e.statusName}); probing NSIDs 1..${nn}`);
      nsids = Array.from({ length: Math.min(nn, NSID_LIST_MAX_ENTRIES) }, (_, i) => i + 1);
    }
    const out: NamespaceInfo[] = [];
    for (const nsid of nsids) {
      const ns = await this.identifyNamespace(nsid);
      if (ns.nsze === 0) continue; // inactive
      out.push(toNamespaceInfo(nsid, ns));
    }
    return out;
  }

  private async releaseAfterFailedOpen(): Promise<void> {
    const admin = this.adminQueue;
    this.adminQueue = null;
    if (admin) {
      admin._delete(STATUS_ABORTED_BY_RESET, (ctx) => new ControllerResetError(ctx, 'controller bring-up failed'));
    }
    try {
      if (this.cap) await disableController(this.transport, this.readyTimeoutMs, this.log);
    } catch {
      // best effort: the device may be gone
    }
  }

  // ---------------------------------------------------------------- admin commands

  /**
   * Run an admin command. `data` (a DmaBuffer or a prebuilt DataPointer) supplies PRP1/PRP2 unless the SQE
   * sets them. Waits for a reset in progress first. Rejects with NvmeStatusError / NvmeTimeoutError
   * (an admin timeout also starts a controller reset).
   */
  async admin(sqe: Sqe, data?: DmaBuffer | DataPointer | null, opts: { timeoutMs?: number } = {}): Promise<Completion> {
    await this.whenUsable();
    return this.adminRaw(sqe, data, opts);
  }

  private async adminRaw(sqe: Sqe, data?: DmaBuffer | DataPointer | null, opts: { timeoutMs?: number } = {}): Promise<Completion> {
    let dp: DataPointer | null = null;
    let s = sqe;
    if (data) {
      if ('prp1' in data) s = { ...sqe, prp1: data.prp1, prp2: data.prp2 };
      else {
        dp = dataPointer(this.transport.dma, data);
        s = { ...sqe, prp1: dp.prp1, prp2: dp.prp2 };
      }
    }
    try {
      return await this.adminQueuePair.exec(s, { timeoutMs: opts.timeoutMs ?? this.opts.adminTimeoutMs });
    } catch (e) {
      if (e instanceof NvmeTimeoutError && this._state === 'live') {
        this.startReset(`admin command ${e.opcodeName} timed out after ${e.ms} ms`);
      }
      throw e;
    } finally {
      dp?.release();
    }
  }

  /** Run an admin command that transfers `bytes` bytes into a temporary DMA buffer; returns a copy of the data. */
  private async adminRead(sqe: Sqe, bytes: number, raw = true): Promise<{ data: Uint8Array; completion: Completion }> {
    const dma = this.transport.dma;
    const buf = dma.alloc(bytes);
    try {
      const completion = raw ? await this.adminRaw(sqe, buf) : await this.admin(sqe, buf);
      return { data: buf.bytes.slice(0, bytes), completion };
    } finally {
      dma.free(buf);
    }
  }

  async identifyController(): Promise<IdentifyController> {
    const { data } = await this.adminRead(identifyControllerSqe(0), IDENTIFY_DATA_SIZE);
    return decodeIdentifyController(data);
  }

  async identifyNamespace(nsid: number): Promise<IdentifyNamespace> {
    const { data } = await this.adminRead(identifyNamespaceSqe(nsid, 0), IDENTIFY_DATA_SIZE);
    return decodeIdentifyNamespace(data);
  }

  /** All active NSIDs (Identify CNS 02h, following the list past 1024 entries). */
  async activeNamespaceIds(): Promise<number[]> {
    const all: number[] = [];
    let after = 0;
    for (;;) {
      const { data } = await this.adminRead(activeNamespaceListSqe(after, 0), IDENTIFY_DATA_SIZE);
      const ids = decodeActiveNamespaceList(data);
      all.push(...ids);
      if (ids.length < NSID_LIST_MAX_ENTRIES) return all;
      after = ids[ids.length - 1]!;
    }
  }

  /** Read `bytes` (a multiple of 4) of log page `lid`. */
  async getLogPage(lid: number, bytes: number, nsid = 0xffffffff, offset = 0): Promise<Uint8Array> {
    if (!Number.isInteger(bytes) || bytes <= 0 || bytes % 4 !== 0) throw new InvalidArgumentError(`log page length must be a positive multiple of 4 bytes, got ${bytes}`);
    const { data } = await this.adminRead(getLogPageSqe(lid, bytes, nsid, offset), bytes, false);
    return data;
  }

  /** Get Features: returns CQE DW0. */
  async getFeatures(fid: number, cdw11 = 0, nsid = 0): Promise<number> {
    return (await this.admin(getFeaturesSqe(fid, cdw11, nsid))).result;
  }

  /** Set Features: returns CQE DW0. */
  async setFeatures(fid: number, cdw11: number, nsid = 0, save = false): Promise<number> {
    return (await this.admin(setFeaturesSqe(fid, cdw11, nsid, save))).result;
  }

  /** Send Abort for (qid, cid). Resolves true if the controller aborted the command, false if it did not. */
  async abort(qid: number, cid: number): Promise<boolean> {
    this.counters.aborts++;
    const c = await this.admin(abortSqe(qid, cid));
    return (c.result & ABORT_RESULT_NOT_ABORTED) === 0;
  }

  // ---------------------------------------------------------------- I/O queue pairs

  /** Create an I/O queue pair on the lowest free qid, driven by this process (the transport creates its queues). */
  async createQueuePair(opts: CreateQueuePairOptions = {}): Promise<QueuePair> {
    await this.whenUsable();
    const entries = this.checkEntries(opts.entries ?? Math.min(DEFAULT_IO_QUEUE_ENTRIES, this.cap.maxQueueEntries));
    const qid = this.freeQid();
    const qp = new QueuePair(this.transport, { qid, entries, timeoutMs: opts.timeoutMs ?? this.opts.ioTimeoutMs }, this.hooks);
    await this.createRow({ kind: 'local', qid, queue: qp });
    this.log(`created I/O queue pair ${qid} (${entries} entries)`);
    return qp;
  }

  /**
   * Create an I/O queue pair over `memory` (page-aligned SQ of entries * 64 bytes, CQ of entries * 16 bytes,
   * both zeroed, typically in shared memory a client maps) for another party to drive. This controller never
   * touches the queues afterwards; reclaim with deleteQueuePair. A controller reset destroys such queues (state
   * 'lost', onRemoteQueueLost): they are not recreated.
   */
  async createQueuePairOn(memory: { sq: DmaBuffer; cq: DmaBuffer }, opts: CreateQueuePairOnOptions): Promise<RemoteQueuePair> {
    await this.whenUsable();
    const entries = this.checkEntries(opts.entries);
    const page = this.transport.dma.pageSize;
    const { sq, cq } = memory;
    if (sq.size < entries * 64 || cq.size < entries * 16) {
      throw new InvalidArgumentError(`SQ/CQ memory (${sq.size}/${cq.size} bytes) is too small for ${entries} entries`);
    }
    if (sq.iova % page !== 0 || cq.iova % page !== 0) throw new InvalidArgumentError('SQ/CQ memory must be page aligned');
    let qid: number;
    if (opts.qid !== undefined) {
      qid = opts.qid;
      if (!Number.isInteger(qid) || qid < 1 || qid > this.maxIoQueuePairs) {
        throw new InvalidArgumentError(`qid must be in 1..${this.maxIoQueuePairs}, got ${qid}`);
      }
      if (this.table.has(qid)) throw new InvalidArgumentError(`qid ${qid} is in use`);
    } else {
      qid = this.freeQid();
    }
    const rq: RemoteQueuePair = { qid, entries, sq, cq, doorbellStride: this.cap.doorbellStride, state: 'live' };
    await this.createRow({ kind: 'remote', qid, queue: rq });
    this.log(`created I/O queue pair ${qid} (${entries} entries) for another driver`);
    return rq;
  }

  /** Live I/O queue pairs this process drives, by qid. */
  get queuePairs(): QueuePair[] {
    return this.table.localRows().map((r) => r.queue);
  }

  /** Queue pairs created with createQueuePairOn and not yet deleted, by qid. */
  get remoteQueuePairs(): RemoteQueuePair[] {
    return this.table.remoteRows().map((r) => r.queue);
  }

  /**
   * Delete an I/O queue pair (the transport deletes its queues: Delete I/O SQ, then Delete I/O CQ).
   *
   * Local: commands still outstanding complete (through the queue pair's next poll()) with the controller's
   * "Command Aborted due to SQ Deletion", or with that status locally if the controller posted nothing. The
   * QueuePair object is unusable afterwards except for poll().
   *
   * Remote: first an Abort for each of `abortCids` (best effort, results ignored); the controller completes
   * whatever is still outstanding into the CQ, which nobody reads any more. The memory stays the caller's.
   */
  async deleteQueuePair(queue: QueuePair | RemoteQueuePair, opts: { abortCids?: readonly number[] } = {}): Promise<void> {
    const row = this.table.rowOf(queue);
    if (row === undefined) {
      if (queue.state === 'deleted' || !(queue instanceof QueuePair)) return;
      throw new InvalidArgumentError(`queue pair ${queue.qid} does not belong to this controller`);
    }
    if (row.kind === 'remote' && row.queue.state !== 'live') return;
    await this.whenUsable();
    for (const cid of opts.abortCids ?? []) {
      try {
        await this.abort(row.qid, cid);
      } catch (e) {
        this.log(`abort of cid ${cid} on queue ${row.qid} failed: ${(e as Error).message}`);
      }
    }
    if (this.table.rowOf(queue) !== row) return; // a reset or removal took it meanwhile
    const failure = await this.deleteRow(row, (ctx) => new NvmeStatusError(STATUS_ABORTED_SQ_DELETION, ctx));
    if (failure !== null) {
      if (this._state === 'live') this.startReset(`deleting I/O queue pair ${row.qid} failed: ${failure.message}`);
      throw failure;
    }
    this.log(row.kind === 'local' ? `deleted I/O queue pair ${row.qid}` : `deleted remote I/O queue pair ${row.qid}`);
  }

  private checkEntries(entries: number): number {
    if (!Number.isInteger(entries) || entries < 2 || entries > this.cap.maxQueueEntries) {
      throw new InvalidArgumentError(`queue entries must be an integer in 2..${this.cap.maxQueueEntries} (CAP.MQES + 1), got ${entries}`);
    }
    return entries;
  }

  /**
   * The lowest qid the table does not hold (a qid is free only once its Delete I/O SQ and CQ have completed, so
   * a new queue can never collide with the old one's deletion); throws when all granted qids are used.
   */
  private freeQid(): number {
    const qid = this.table.freeQid(this.maxIoQueuePairs);
    if (qid !== 0) return qid;
    throw new NvmeError(`cannot create another I/O queue pair: all ${this.maxIoQueuePairs} queue pairs the controller granted (Number of Queues) are in use`);
  }

  /** Put `row` in the table and have the transport create its queues; on failure the row is gone again. */
  private async createRow(row: QueueRow): Promise<void> {
    this.table.add(row);
    try {
      await this.transport.createIoQueues(this.adminChannel, ringsOf(row));
    } catch (e) {
      this.dropRow(row, (ctx) => new ControllerResetError(ctx, 'queue creation failed'));
      throw e;
    }
    if (row.kind === 'local') row.queue._activate();
  }

  /**
   * Take `row` out of the table (its qid stays taken until the deletion is over) and have the transport delete
   * its queues; a local queue pair reaps what the controller completed while its SQ was deleted, and fails what
   * is left with STATUS_ABORTED_SQ_DELETION (exec() callers with `makeErr`). Returns the deletion's failure, or
   * null.
   */
  private async deleteRow(row: QueueRow, makeErr: (ctx: CommandContext) => Error): Promise<Error | null> {
    const local = row.kind === 'local' ? row.queue : null;
    local?._stopAccepting();
    this.table.beginDelete(row);
    if (row.kind === 'remote') row.queue.state = 'deleted';
    let failure: Error | null = null;
    try {
      await this.transport.deleteIoQueues(this.adminChannel, row.qid, local === null ? undefined : () => local._drain());
    } catch (e) {
      failure = e as Error;
    } finally {
      this.table.endDelete(row.qid);
    }
    this.dropRow(row, makeErr);
    return failure;
  }

  /** `row` is gone: out of the table; a local queue pair fails what is left and frees its memory. */
  private dropRow(row: QueueRow, makeErr: (ctx: CommandContext) => Error): void {
    this.table.remove(row);
    if (row.kind === 'local') row.queue._delete(STATUS_ABORTED_SQ_DELETION, makeErr);
    else row.queue.state = 'deleted';
  }

  /** A remote row died with the controller's state (reset or removal): mark it lost and tell its owner. */
  private loseRemote(row: RemoteRow, reason: string): void {
    this.table.remove(row);
    row.queue.state = 'lost';
    this.log(`remote I/O queue pair ${row.qid} lost: ${reason}`);
    try {
      this.onRemoteQueueLost?.(row.queue, reason);
    } catch (e) {
      this.log(`onRemoteQueueLost threw: ${(e as Error).message}`);
    }
  }

  // ---------------------------------------------------------------- health, timeouts, reset

  /**
   * Read CSTS. All ones: the device is marked removed (every command fails) and DeviceRemovedError is thrown.
   * CSTS.CFS: a controller reset is started (not awaited). Returns the decoded status.
   */
  checkHealth(): ControllerHealth {
    const csts = this.transport.read32(REG_CSTS) >>> 0;
    if (csts === ALL_ONES) {
      this.markRemoved('CSTS');
      throw new DeviceRemovedError('CSTS');
    }
    if ((csts & CSTS_CFS) !== 0 && this._state === 'live') this.startReset('controller fatal status (CSTS.CFS=1)');
    return { csts, ...decodeCsts(csts) };
  }

  /** Health check while polling, rate-limited; never throws. Returns false when the controller is unusable. */
  private onTick(now: number): void {
    if (this._state !== 'live' || now - this.lastHealth < this.opts.healthIntervalMs) return;
    this.lastHealth = now;
    this.healthy();
  }

  private healthy(): boolean {
    try {
      const h = this.checkHealth();
      return !h.fatal;
    } catch {
      return false;
    }
  }

  private onMalformed(qp: QueuePair, info: MalformedCompletion): void {
    this.counters.malformed++;
    this.log(`queue ${qp.qid}: malformed completion in CQ slot ${info.slot} skipped: ${info.reason}`);
  }

  private onCommandTimeout(qp: QueuePair, cid: number, opcode: number): void {
    this.counters.timeouts++;
    const what = `${opcodeName(opcode, qp.qid === 0)} on queue ${qp.qid} (cid ${cid})`;
    if (qp.qid === 0 || this._state !== 'live') return; // admin timeouts are handled by adminRaw
    this.log(`${what} timed out after ${qp.timeoutMs} ms; sending Abort`);
    if (!this.healthy()) return;
    void this.abortTimedOut(qp, cid, what);
  }

  private async abortTimedOut(qp: QueuePair, cid: number, what: string): Promise<void> {
    try {
      const aborted = await this.abort(qp.qid, cid);
      if (!aborted) this.log(`Abort of ${what}: controller did not abort it; its cid stays quarantined`);
      const slack = qp.cidCount - qp.capacity;
      if (qp.quarantined >= slack && this._state === 'live') {
        this.startReset(`queue ${qp.qid} has ${qp.quarantined} commands that never completed`);
      }
    } catch (e) {
      if (this._state !== 'live') return; // a reset or close is already dealing with it
      this.startReset(`Abort of ${what} failed: ${(e as Error).message}`);
    }
  }

  private startReset(reason: string): void {
    this.reset(reason).catch((e: unknown) => this.log(`controller reset failed: ${(e as Error).message}`));
  }

  /**
   * Controller reset: every outstanding command on every queue completes with STATUS_ABORTED_BY_RESET (through
   * the normal poll() delivery; exec()/admin() callers reject with ControllerResetError), then the controller is
   * disabled, re-enabled, re-identified, and every I/O queue pair is recreated with the same qid and entries.
   * The QueuePair objects stay valid. Concurrent calls share one reset.
   */
  reset(reason: string): Promise<void> {
    if (this.resetPromise) return this.resetPromise;
    if (this._state === 'closed' || this._state === 'closing') return Promise.reject(new ControllerStateError(`cannot reset: controller is ${this._state}`));
    if (this._state === 'removed') return Promise.reject(new DeviceRemovedError('CSTS'));
    const p = this.performReset(reason).finally(() => {
      if (this.resetPromise === p) this.resetPromise = null;
    });
    this.resetPromise = p;
    return p;
  }

  private async performReset(reason: string): Promise<void> {
    // Synchronous part: nothing may run between marking the reset and failing the outstanding commands.
    this._state = 'resetting';
    this.counters.resets++;
    const host = this.resetHost();
    const lost = failOutstandingForReset(host, reason);
    this.log(`controller reset (${reason}): ${lost} outstanding command(s) aborted`);
    try {
      await reinitializeAfterReset(host, reason);
      this._state = 'live';
      this.log('controller reset complete');
    } catch (e) {
      if (e instanceof DeviceRemovedError) this.markRemoved(e.register);
      else this._state = 'failed';
      throw e;
    }
  }

  private resetHost(): ResetHost {
    return {
      adminQueue: this.adminQueue,
      table: this.table,
      requestedIoQueues: this.opts.ioQueues,
      log: this.log,
      enableAndIdentify: async (wanted) => {
        await this.enableAndIdentify(wanted);
        return this.maxIoQueuePairs;
      },
      createIoQueues: (row) => this.transport.createIoQueues(this.adminChannel, ringsOf(row)),
      lose: (row, reason) => this.loseRemote(row, reason),
    };
  }

  private markRemoved(register: string): void {
    if (this._state === 'removed' || this._state === 'closed') return;
    this._state = 'removed';
    this.log(`device removed (${register} read all ones): failing every outstanding command`);
    takeQueuesDown(this.resetHost(), STATUS_DEVICE_REMOVED, () => new DeviceRemovedError(register), 'device removed');
  }

  /** Wait for a reset in progress; throw if the controller cannot take commands. */
  private async whenUsable(): Promise<void> {
    if (this.resetPromise) {
      try {
        await this.resetPromise;
      } catch {
        // state tells
      }
    }
    switch (this._state) {
      case 'live':
        return;
      case 'removed':
        throw new DeviceRemovedError('CSTS');
      default:
        throw new ControllerStateError(`controller is ${this._state}`);
    }
  }

  // ---------------------------------------------------------------- shutdown

  /**
   * Delete every I/O queue pair, perform a normal shutdown (CC.SHN = 01b, wait for CSTS.SHST complete within the
   * CAP.TO bound), disable, and free the queue memory. Idempotent; the transport itself stays open.
   */
  close(): Promise<void> {
    if (!this.closePromise) this.closePromise = this.performClose();
    return this.closePromise;
  }

  private async performClose(): Promise<void> {
    if (this.resetPromise) await this.resetPromise.catch(() => undefined);
    const wasLive = this._state === 'live';
    this._state = 'closing';
    const makeErr = (ctx: CommandContext): Error => new ControllerStateError(`${opcodeName(ctx.opcode, ctx.qid === 0)} on queue ${ctx.qid} (cid ${ctx.cid}) lost: controller closed`);
    for (const row of this.table.all()) {
      if (!wasLive) {
        this.dropRow(row, makeErr);
        continue;
      }
      const failure = await this.deleteRow(row, makeErr);
      if (failure !== null) this.log(`close: deleting ${row.kind === 'remote' ? 'remote queue' : 'queue'} ${row.qid} failed: ${failure.message}`);
    }
    try {
      if (this.adminQueue && this.cap && this.transport.read32(REG_CSTS) >>> 0 !== ALL_ONES) {
        await shutdownController(this.transport, this.readyTimeoutMs, this.log);
      }
    } catch (e) {
      this.log(`close: shutdown failed: ${(e as Error).message}`);
    } finally {
      this.adminQueue?._delete(STATUS_ABORTED_BY_RESET, makeErr);
      this.adminQueue = null;
      this._state = 'closed';
    }
  }
}
