/**
 * Handing an I/O queue pair to another process (issue 6, dynamic queue provisioning), both halves:
 *
 * - Owner side (homid): `provisionQueuePair(ctrl, exporter, opts)` takes fresh memory for the SQ, CQ and data
 *   region from the transport's QueueExporter (a memfd segment of the embedded controller; for PCIe a memfd
 *   mapped into the VFIO container, or a 2 MiB hugetlb memfd at its physical address for uio), creates the
 *   queues on the controller (Create I/O CQ/SQ via Controller.createQueuePairOn) and returns a serializable
 *   RawQueueGrant (its layout and checks: src/ipc/raw-grant.ts) plus the fds to pass (SCM_RIGHTS or inheritance), and `reclaim()` (Abort known cids, Delete SQ,
 *   Delete CQ, release the memory: IOMMU unmap, forget the segment, unmap). After that the owner is off the
 *   client's data path.
 * - Client side: `attachQueuePair(grant, fds)` validates every field of the grant, maps exactly the windows it
 *   names and returns an AttachedQueuePair: a QueuePair (the very same fast path: submitIo / ring / poll / free /
 *   outstanding / capacity, exec) plus `dma`, an allocator over the granted data region whose buffers carry IOVAs
 *   the controller resolves, so dataPointer(attached.dma, buf) builds PRPs (lists included) as usual.
 *
 * The client never maps BAR0's register page: the grant names the doorbell page(s) (BAR0 offset 0x1000 onward)
 * as a window of the BAR fd (the embedded controller's BAR memfd, the VFIO device fd, sysfs resource0), and, for
 * the embedded controller, the separate page of its wake word. fds in a grant are referred to by index into the
 * fd array passed alongside it, so the grant is plain JSON.
 */
import type { DmaBuffer } from '../mem/dma.js';
import { RegionAllocator } from '../mem/shm-dma.js';
import { CQE_SIZE, REG_DOORBELL_BASE, SQE_SIZE, cqHeadDoorbellOffset, sqTailDoorbellOffset } from '../nvme/registers.js';
import { futexWake, mapShmFd, closeFd, type ShmRegion } from '../sys/shm.js';
import { FutexWaker, doorbellNotifier } from '../transport/doorbell.js';
import type { ExportedMemory, QueueExporter, Transport } from '../transport/transport.js';
import type { Controller, RemoteQueuePair } from './controller.js';
import { GRANT_FD_DOORBELLS, GRANT_FD_MEMORY, GRANT_MAP_PAGE, GRANT_VERSION, validateRawGrant, type GrantWindow, type RawQueueGrant } from '../ipc/raw-grant.js';
import { WireFormatError } from '../ipc/validate.js';
import { ExportLimitError, InvalidArgumentError } from './errors.js';
import { STATUS_ABORTED_BY_RESET } from './status.js';
import { DEFAULT_IO_TIMEOUT_MS, QueuePair, type QueueHost, type QueuePairHooks } from './queue-pair.js';

export interface ProvisionOptions {
  /** SQ/CQ entries (default 256). */
  entries?: number;
  /** Bytes of data region for the client's buffers and PRP lists (default 4 MiB). */
  dataBytes?: number;
  /** Namespace the client will use (default 1). */
  nsid?: number;
  /** qid (default the lowest free). */
  qid?: number;
  /** Name of the exported memory (memfd name), for diagnostics. */
  name?: string;
}

/** A queue pair handed out: what to send, and how to take it back. */
export interface ProvisionedQueuePair {
  grant: RawQueueGrant;
  /** The fds, in grant order (index 0: the BAR fd, index 1: the queue pair's memory). Owned by the owner: keep them open until reclaim. */
  fds: number[];
  remote: RemoteQueuePair;
  memory: ExportedMemory;
  /**
   * Take the queue pair back: Abort for `abortCids` (if the owner knows them), Delete I/O SQ (the controller
   * completes anything outstanding with "Command Aborted due to SQ Deletion"), Delete I/O CQ, then release the
   * memory (the device no longer reaches it; unmapped here). Safe while the client is still running or already
   * dead; the client's mappings keep the memory alive but the controller no longer touches it. Idempotent.
   */
  reclaim(opts?: { abortCids?: readonly number[] }): Promise<void>;
}

function pageRound(n: number, page: number): number {
  return Math.ceil(n / page) * page;
}

function exporterOf(t: QueueExporter | Transport): QueueExporter {
  if ('exportMemory' in t) return t;
  const x = t.queueExporter?.() ?? null;
  if (x === null) throw new InvalidArgumentError(`transport ${t.kind} cannot hand queue pairs to another process (the embedded controller needs sharedMemory: 'memfd')`);
  return x;
}

/** Owner side: create a queue pair on `ctrl` over fresh exported memory for another process to drive. */
export async function provisionQueuePair(ctrl: Controller, transport: QueueExporter | Transport, opts: ProvisionOptions = {}): Promise<ProvisionedQueuePair> {
  const x = exporterOf(transport);
  const page = ctrl.transport.dma.pageSize;
  const entries = opts.entries ?? 256;
  const dataBytes = pageRound(opts.dataBytes ?? 4 << 20, page);
  const nsid = opts.nsid ?? 1;
  const ns = ctrl.namespace(nsid);
  const sqBytes = pageRound(entries * SQE_SIZE, page);
  const cqBytes = pageRound(entries * CQE_SIZE, page);
  const total = sqBytes + cqBytes + dataBytes;
  if (total > x.maxExportBytes) {
    throw new ExportLimitError(x.kind, total, x.maxExportBytes);
  }
  const stride = ctrl.cap.doorbellStride;
  const memory = x.exportMemory(total, opts.name ?? 'homi-qp');
  let remote: RemoteQueuePair;
  let doorbells: { fd: number; offset: number; bytes: number };
  let wake: ReturnType<QueueExporter['wakeWindow']>;
  try {
    const view = (off: number, bytes: number): DmaBuffer => ({ iova: memory.iova + off, size: bytes, bytes: memory.view.subarray(off, off + bytes) });
    remote = await ctrl.createQueuePairOn({ sq: view(0, sqBytes), cq: view(sqBytes, cqBytes) }, { entries, qid: opts.qid });
    try {
      doorbells = x.doorbellWindow(pageRound(cqHeadDoorbellOffset(remote.qid, stride) + 4, GRANT_MAP_PAGE) - REG_DOORBELL_BASE);
      wake = x.wakeWindow();
    } catch (e) {
      await ctrl.deleteQueuePair(remote).catch(() => undefined);
      throw e;
    }
  } catch (e) {
    memory.release();
    throw e;
  }
  const fds = [doorbells.fd, memory.fd];
  if (wake !== null && wake.fd !== doorbells.fd) fds.push(wake.fd);
  const dataOffset = sqBytes + cqBytes;
  const mdts = ctrl.identity.mdts;
  const grant: RawQueueGrant = {
    version: GRANT_VERSION,
    qid: remote.qid,
    entries,
    pageSize: page,
    fds: fds.map((_, i) => ({ role: i === GRANT_FD_MEMORY ? 'memory' : 'bar' })),
    doorbell: {
      map: { fd: GRANT_FD_DOORBELLS, offset: doorbells.offset, bytes: doorbells.bytes },
      barOffset: REG_DOORBELL_BASE,
      sqTailOffset: sqTailDoorbellOffset(remote.qid, stride),
      cqHeadOffset: cqHeadDoorbellOffset(remote.qid, stride),
      stride,
    },
    wake: wake === null ? null : { map: { fd: fds.indexOf(wake.fd), offset: wake.offset, bytes: wake.bytes }, offset: wake.word },
    memory: { fd: GRANT_FD_MEMORY, offset: 0, bytes: memory.bytes },
    sq: { offset: remote.sq.iova - memory.iova, bytes: sqBytes },
    cq: { offset: remote.cq.iova - memory.iova, bytes: cqBytes },
    data: { offset: dataOffset, bytes: dataBytes, iova: memory.iova + dataOffset },
    nsid,
    blockSize: ns.blockSize,
    blocks: ns.blocks,
    maxTransferBytes: Number.isFinite(mdts) ? mdts : 0,
  };
  let reclaimed: Promise<void> | null = null;
  return {
    grant,
    fds,
    remote,
    memory,
    reclaim(ro = {}) {
      reclaimed ??= (async () => {
        try {
          if (remote.state === 'live') await ctrl.deleteQueuePair(remote, { abortCids: ro.abortCids ?? [] });
        } finally {
          memory.release();
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
  readonly grant: RawQueueGrant;
  /** What this process mapped (fd index, file offset, bytes, virtual address, the CPU view), for inspection and for registering it with a GPU. */
  readonly mappings: ReadonlyArray<{ role: 'doorbells' | 'wake' | 'memory'; fd: number; offset: number; bytes: number; address: number; buffer: ArrayBuffer }>;
  private readonly regions: ShmRegion[];
  private readonly ownedFds: number[];
  private detached = false;

  /** Use attachQueuePair(). */
  constructor(
    host: QueueHost,
    grant: RawQueueGrant,
    memory: { sq: DmaBuffer; cq: DmaBuffer },
    regions: Array<{ role: 'doorbells' | 'wake' | 'memory'; fd: number; region: ShmRegion; offset: number }>,
    ownedFds: number[],
    opts: AttachOptions,
  ) {
    super(host, { qid: grant.qid, entries: grant.entries, timeoutMs: opts.timeoutMs ?? DEFAULT_IO_TIMEOUT_MS, memory }, opts.hooks ?? {});
    this.dma = host.dma as RegionAllocator;
    this.grant = grant;
    this.regions = regions.map((r) => r.region);
    this.mappings = regions.map((r) => ({ role: r.role, fd: r.fd, offset: r.offset, bytes: r.region.size, address: r.region.address, buffer: r.region.buffer }));
    this.ownedFds = ownedFds;
    this._activate();
  }

  get isDetached(): boolean {
    return this.detached;
  }

  /**
   * Stop using the queue pair and unmap the shared memory and doorbells (old views read zeros afterwards). Does
   * not delete the queues: the owner does that (reclaim). Commands still outstanding are simply forgotten.
   * Idempotent.
   */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    this._suspend(STATUS_ABORTED_BY_RESET, () => new Error(`queue pair ${this.qid} was detached`));
    for (const r of this.regions) r.close();
    for (const fd of this.ownedFds) {
      try {
        closeFd(fd);
      } catch {
        // already closed by its owner
      }
    }
  }
}

/**
 * Check every field of a grant (it comes from another process): src/ipc/raw-grant.ts validateRawGrant, as the
 * driver's InvalidArgumentError naming the first bad field.
 */
export function validateGrant(input: unknown, fdCount: number): RawQueueGrant {
  try {
    return validateRawGrant(input, fdCount);
  } catch (e) {
    if (e instanceof WireFormatError) throw new InvalidArgumentError(e.message);
    throw e;
  }
}

/**
 * Client side: validate the grant, map exactly the windows it names (doorbell page(s), wake page, queue memory)
 * and start driving the queue pair. `fds[i]` is the fd for grant index i.
 */
export function attachQueuePair(input: RawQueueGrant, fds: readonly number[], opts: AttachOptions = {}): AttachedQueuePair {
  const grant = validateGrant(input, fds.length);
  for (let i = 0; i < grant.fds.length; i++) if (!Number.isInteger(fds[i]) || fds[i]! < 0) throw new InvalidArgumentError(`fd ${i} (${String(fds[i])}) is not a descriptor`);
  const closeFds = opts.closeFds ?? true;
  const regions: Array<{ role: 'doorbells' | 'wake' | 'memory'; fd: number; region: ShmRegion; offset: number }> = [];
  const map = (role: 'doorbells' | 'wake' | 'memory', w: GrantWindow): ShmRegion => {
    const region = mapShmFd(fds[w.fd]!, w.bytes, { offset: w.offset });
    regions.push({ role, fd: w.fd, region, offset: w.offset });
    return region;
  };
  try {
    const db = grant.doorbell;
    const dbMap = map('doorbells', db.map);
    // Cell 0 is BAR0 offset 0x1000 (db.barOffset), as QueuePair expects.
    const doorbells = new Int32Array(dbMap.buffer, 0, dbMap.size >>> 2);
    let waker: FutexWaker | null = null;
    if (grant.wake !== null) {
      const wm = map('wake', grant.wake.map);
      waker = new FutexWaker(new Int32Array(wm.buffer, grant.wake.offset, 1), wm.address + grant.wake.offset, futexWake);
    }
    const mem = map('memory', grant.memory);
    // SQ/CQ IOVAs are the controller's business; the client only needs CPU views.
    const sq: DmaBuffer = { iova: 0, size: grant.sq.bytes, bytes: new Uint8Array(mem.buffer, grant.sq.offset, grant.sq.bytes) };
    const cq: DmaBuffer = { iova: 0, size: grant.cq.bytes, bytes: new Uint8Array(mem.buffer, grant.cq.offset, grant.cq.bytes) };
    const dma = new RegionAllocator(mem.buffer, grant.data.offset, grant.data.bytes, grant.data.iova, grant.pageSize);
    // The granted doorbells, and the controller's futex wake where it sleeps: the same notifiers as the owner's.
    const stride = db.stride;
    const host: QueueHost = { dma, notifier: (qid) => doorbellNotifier(doorbells, qid, stride, waker) };
    const owned = closeFds ? [...new Set(fds.slice(0, grant.fds.length))] : [];
    return new AttachedQueuePair(host, grant, { sq, cq }, regions, owned, opts);
  } catch (e) {
    for (const r of regions) r.region.close();
    throw e;
  }
}
