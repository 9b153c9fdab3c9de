/**
 * Handing an I/O queue pair to another process (issue 6, dynamic queue provisioning), both halves:
 *
 * - Owner side (homid): `provisionQueuePair(ctrl, emu, opts)` carves one dedicated memfd segment (SQ, CQ,
 *   data region) out of a memfd-mode embedded controller's DMA memory, creates the queues on the controller
 *   (Create I/O CQ/SQ via Controller.createQueuePairOn) and returns a serializable QueuePairGrant plus the fds
 *   to pass (SCM_RIGHTS or inheritance), and `reclaim()` (Abort known cids, Delete SQ, Delete CQ, forget and
 *   unmap the segment). After that the owner is off the client's data path.
 * - Client side: `attachQueuePair(grant, fds)` maps the memory and returns an AttachedQueuePair: a QueuePair
 *   (the very same fast path: submitIo / ring / poll / free / outstanding / capacity, exec) plus `dma`, an
 *   allocator over the granted data region whose buffers carry IOVAs the controller resolves, so
 *   dataPointer(attached.dma, buf) builds PRPs (lists included) as usual.
 *
 * fds in a grant are referred to by index into the fd array passed alongside it, so the grant is plain JSON.
 */
import type { DmaBuffer } from '../mem/dma.js';
import { RegionAllocator, type DedicatedSegment } from '../mem/shm-dma.js';
import { CQE_SIZE, REG_DOORBELL_BASE, SQE_SIZE, cqHeadDoorbellOffset, sqTailDoorbellOffset } from '../nvme/registers.js';
import { futexWake, mapShmFd, type ShmRegion } from '../sys/shm.js';
import type { EmuTransport } from '../transport/emu.js';
import { WAKE_AWAKE, WAKE_SLEEPING } from '../transport/transport.js';
import type { Controller, RemoteQueuePair } from './controller.js';
import { InvalidArgumentError } from './errors.js';
import { STATUS_ABORTED_BY_RESET } from './status.js';
import { DEFAULT_IO_TIMEOUT_MS, QueuePair, type QueueHost, type QueuePairHooks } from './queue-pair.js';

/** A byte range of one of the granted fds. */
export interface GrantRegion {
  /** Index into the grant's fd array. */
  fd: number;
  offset: number;
  bytes: number;
}

/** Everything a client needs to drive a queue pair itself; plain JSON (fds travel separately, by index). */
export interface QueuePairGrant {
  version: 1;
  qid: number;
  entries: number;
  /** Memory page size for PRPs (CC.MPS). */
  pageSize: number;
  /** Per fd index: what it is and how many bytes to map from offset 0. */
  fds: Array<{ role: 'bar' | 'memory'; bytes: number }>;
  sq: GrantRegion;
  cq: GrantRegion;
  doorbell: {
    /** Index of the BAR0 fd. */
    fd: number;
    /** BAR0 byte offsets of this queue's SQ tail and CQ head doorbells. */
    sqTailOffset: number;
    cqHeadOffset: number;
    /** Doorbell stride (CAP.DSTRD) in bytes. */
    stride: number;
    /** Byte offset of the controller's wake word in the BAR fd (futex), or null if it never sleeps. */
    wakeOffset: number | null;
  };
  /** The client's data region: buffers and PRP lists; `iova` is the controller's address of its first byte. */
  data: GrantRegion & { iova: number };
  nsid: number;
  blockSize: number;
  /** Namespace size in blocks. */
  blocks: number;
  /** Largest transfer in bytes (Infinity is sent as 0: no limit). */
  maxTransferBytes: number;
}

export interface ProvisionOptions {
  /** SQ/CQ entries (default 256). */
  entries?: number;
  /** Bytes of data region for the client's buffers and PRP lists (default 4 MiB). */
  dataBytes?: number;
  /** Namespace the client will use (default 1). */
  nsid?: number;
  /** qid (default the lowest free). */
  qid?: number;
}

/** A queue pair handed out: what to send, and how to take it back. */
export interface ProvisionedQueuePair {
  grant: QueuePairGrant;
  /** The fds, in grant order (index 0: BAR0, index 1: the client's segment). Owned by the owner: keep them open until reclaim. */
  fds: number[];
  remote: RemoteQueuePair;
  segment: DedicatedSegment;
  /**
   * Take the queue pair back: Abort for `abortCids` (if the owner knows them), Delete I/O SQ (the controller
   * completes anything outstanding with "Command Aborted due to SQ Deletion"), Delete I/O CQ, then forget the
   * segment on the controller and unmap it here. Safe while the client is still running or already dead;
   * the client's mappings keep the memory alive but the controller no longer touches it. Idempotent.
   */
  reclaim(opts?: { abortCids?: readonly number[] }): Promise<void>;
}

function pageRound(n: number, page: number): number {
  return Math.ceil(n / page) * page;
}

/** Owner side: create a queue pair on `ctrl` over fresh shared memory for another process to drive. */
export async function provisionQueuePair(ctrl: Controller, emu: EmuTransport, opts: ProvisionOptions = {}): Promise<ProvisionedQueuePair> {
  const dma = emu.shmDma;
  const bar = emu.barShm();
  const page = dma.pageSize;
  const entries = opts.entries ?? 256;
  const dataBytes = pageRound(opts.dataBytes ?? 4 << 20, page);
  const nsid = opts.nsid ?? 1;
  const ns = ctrl.namespace(nsid);
  const sqBytes = pageRound(entries * SQE_SIZE, page);
  const cqBytes = pageRound(entries * CQE_SIZE, page);
  const segment = dma.createDedicated(sqBytes + cqBytes + dataBytes);
  let remote: RemoteQueuePair;
  try {
    const sq = segment.allocator.alloc(sqBytes, page);
    const cq = segment.allocator.alloc(cqBytes, page);
    remote = await ctrl.createQueuePairOn({ sq, cq }, { entries, qid: opts.qid });
  } catch (e) {
    segment.release();
    throw e;
  }
  const base = segment.iovaBase;
  const dataOffset = sqBytes + cqBytes;
  const mdts = ctrl.identity.mdts;
  const grant: QueuePairGrant = {
    version: 1,
    qid: remote.qid,
    entries,
    pageSize: page,
    fds: [
      { role: 'bar', bytes: bar.bytes },
      { role: 'memory', bytes: segment.size },
    ],
    sq: { fd: 1, offset: remote.sq.iova - base, bytes: sqBytes },
    cq: { fd: 1, offset: remote.cq.iova - base, bytes: cqBytes },
    doorbell: {
      fd: 0,
      sqTailOffset: sqTailDoorbellOffset(remote.qid, remote.doorbellStride),
      cqHeadOffset: cqHeadDoorbellOffset(remote.qid, remote.doorbellStride),
      stride: remote.doorbellStride,
      wakeOffset: bar.wakeOffset,
    },
    data: { fd: 1, offset: dataOffset, bytes: dataBytes, iova: base + dataOffset },
    nsid,
    blockSize: ns.blockSize,
    blocks: ns.blocks,
    maxTransferBytes: Number.isFinite(mdts) ? mdts : 0,
  };
  let reclaimed: Promise<void> | null = null;
  return {
    grant,
    fds: [bar.fd, segment.fd],
    remote,
    segment,
    reclaim(ro = {}) {
      reclaimed ??= (async () => {
        try {
          if (remote.state === 'live') await ctrl.deleteQueuePair(remote, { abortCids: ro.abortCids ?? [] });
        } finally {
          segment.release();
        }
      })();
      return reclaimed;
    },
  };
}

export interface AttachOptions {
  /** Per-command timeout in ms (default 5000; 0 disables). */
  timeoutMs?: number;
  /** Close the fds on detach() (default true: the client owns what it received). */
  closeFds?: boolean;
  hooks?: QueuePairHooks;
}

/** A granted queue pair driven by this process: a QueuePair plus its data-region allocator. */
export class AttachedQueuePair extends QueuePair {
  /** Allocator over the granted data region (DMA buffers and PRP lists). */
  readonly dma: RegionAllocator;
  readonly grant: QueuePairGrant;
  private readonly regions: ShmRegion[];
  private detached = false;

  /** Use attachQueuePair(). */
  constructor(host: QueueHost, grant: QueuePairGrant, memory: { sq: DmaBuffer; cq: DmaBuffer }, regions: ShmRegion[], opts: AttachOptions) {
    super(host, { qid: grant.qid, entries: grant.entries, timeoutMs: opts.timeoutMs ?? DEFAULT_IO_TIMEOUT_MS, doorbellStride: grant.doorbell.stride, memory }, opts.hooks ?? {});
    this.dma = host.dma as RegionAllocator;
    this.grant = grant;
    this.regions = regions;
    this._activate();
  }

  get isDetached(): boolean {
    return this.detached;
  }

  /**
   * Stop using the queue pair and unmap the shared memory (old views read zeros afterwards). Does not delete
   * the queues: the owner does that (reclaim). Commands still outstanding are simply forgotten. Idempotent.
   */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    this._suspend(STATUS_ABORTED_BY_RESET, () => new Error(`queue pair ${this.qid} was detached`));
    for (const r of this.regions) r.close();
  }
}

function checkRegion(grant: QueuePairGrant, r: GrantRegion, what: string, fdCount: number): void {
  if (!Number.isInteger(r.fd) || r.fd < 0 || r.fd >= fdCount || r.fd >= grant.fds.length) throw new InvalidArgumentError(`grant ${what}: fd index ${r.fd} out of range`);
  const size = grant.fds[r.fd]!.bytes;
  if (!Number.isSafeInteger(r.offset) || r.offset < 0 || !Number.isSafeInteger(r.bytes) || r.bytes <= 0 || r.offset + r.bytes > size) {
    throw new InvalidArgumentError(`grant ${what}: [${r.offset}, ${r.offset + r.bytes}) is outside fd ${r.fd} (${size} bytes)`);
  }
}

/** Client side: map the granted memory and start driving the queue pair. `fds[i]` is the fd for grant index i. */
export function attachQueuePair(grant: QueuePairGrant, fds: readonly number[], opts: AttachOptions = {}): AttachedQueuePair {
  if (grant.version !== 1) throw new InvalidArgumentError(`unsupported grant version ${String(grant.version)}`);
  if (fds.length < grant.fds.length) throw new InvalidArgumentError(`grant names ${grant.fds.length} fds, got ${fds.length}`);
  checkRegion(grant, grant.sq, 'sq', fds.length);
  checkRegion(grant, grant.cq, 'cq', fds.length);
  checkRegion(grant, grant.data, 'data', fds.length);
  if (grant.sq.bytes < grant.entries * SQE_SIZE || grant.cq.bytes < grant.entries * CQE_SIZE) throw new InvalidArgumentError('grant: queue memory too small for its entries');
  const db = grant.doorbell;
  if (db.sqTailOffset !== sqTailDoorbellOffset(grant.qid, db.stride) || db.cqHeadOffset !== cqHeadDoorbellOffset(grant.qid, db.stride)) {
    throw new InvalidArgumentError('grant: doorbell offsets do not match qid and stride');
  }
  const regions: ShmRegion[] = [];
  const maps = new Map<number, ShmRegion>();
  const closeFds = opts.closeFds ?? true;
  const mapIndex = (i: number): ShmRegion => {
    let r = maps.get(i);
    if (r === undefined) {
      r = mapShmFd(fds[i]!, grant.fds[i]!.bytes, { ownFd: closeFds });
      maps.set(i, r);
      regions.push(r);
    }
    return r;
  };
  try {
    const bar = mapIndex(db.fd);
    const barEnd = db.wakeOffset ?? bar.size;
    if (db.cqHeadOffset + 4 > barEnd) throw new InvalidArgumentError('grant: doorbells lie outside the BAR mapping');
    const doorbells = new Int32Array(bar.buffer, REG_DOORBELL_BASE, (barEnd - REG_DOORBELL_BASE) >>> 2);
    let wake: Int32Array | null = null;
    let wakeAddress = 0;
    if (db.wakeOffset !== null) {
      if (db.wakeOffset % 4 !== 0 || db.wakeOffset + 4 > bar.size) throw new InvalidArgumentError('grant: wake word outside the BAR mapping');
      wake = new Int32Array(bar.buffer, db.wakeOffset, 1);
      wakeAddress = bar.address + db.wakeOffset;
    }
    const sqMap = mapIndex(grant.sq.fd);
    const cqMap = mapIndex(grant.cq.fd);
    const dataMap = mapIndex(grant.data.fd);
    // SQ/CQ IOVAs are the controller's business; the client only needs CPU views.
    const sq: DmaBuffer = { iova: 0, size: grant.sq.bytes, bytes: new Uint8Array(sqMap.buffer, grant.sq.offset, grant.sq.bytes) };
    const cq: DmaBuffer = { iova: 0, size: grant.cq.bytes, bytes: new Uint8Array(cqMap.buffer, grant.cq.offset, grant.cq.bytes) };
    const dma = new RegionAllocator(dataMap.buffer, grant.data.offset, grant.data.bytes, grant.data.iova, grant.pageSize);
    const host: QueueHost = {
      doorbells,
      wake,
      dma,
      wakeFn: (w) => {
        if (w !== null && Atomics.load(w, 0) === WAKE_SLEEPING) {
          Atomics.store(w, 0, WAKE_AWAKE);
          futexWake(wakeAddress, 1);
        }
      },
    };
    return new AttachedQueuePair(host, grant, { sq, cq }, regions, opts);
  } catch (e) {
    for (const r of regions) r.close();
    throw e;
  }
}
