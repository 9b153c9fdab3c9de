/**
 * Handing an I/O queue pair to another process (issue 6, dynamic queue provisioning), both halves:
 *
 * - Owner side (homid): `provisionQueuePair(ctrl, exporter, opts)` takes fresh memory for the SQ, CQ and data
 *   region from the transport's QueueExporter (a memfd segment of the embedded controller; for PCIe a memfd
 *   mapped into the VFIO container, or a 2 MiB hugetlb memfd at its physical address for uio), creates the
 *   queues on the controller (Create I/O CQ/SQ via Controller.createQueuePairOn) and returns a serializable
 *   QueuePairGrant plus the fds to pass (SCM_RIGHTS or inheritance), and `reclaim()` (Abort known cids, Delete SQ,
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
import { InvalidArgumentError } from './errors.js';
import { STATUS_ABORTED_BY_RESET } from './status.js';
import { DEFAULT_IO_TIMEOUT_MS, QueuePair, type QueueHost, type QueuePairHooks } from './queue-pair.js';

/** The grant format this file writes and reads. */
export const GRANT_VERSION = 2;
/** mmap granularity: every window's offset and length are multiples of it. */
export const GRANT_MAP_PAGE = 4096;
/** Upper bound of one window (sanity check on what a grant asks the client to map). */
const MAX_WINDOW_BYTES = 1 << 30;
const MAX_QID = 0xffff;
const MAX_ENTRIES = 0x10000;

/** A window of one of the granted fds: mmap(bytes, fd, offset). */
export interface GrantWindow {
  /** Index into the grant's fd array. */
  fd: number;
  /** File offset, a multiple of 4096. */
  offset: number;
  /** Bytes, a multiple of 4096. */
  bytes: number;
}

/** A byte range inside the memory window. */
export interface GrantRange {
  offset: number;
  bytes: number;
}

/** Everything a client needs to drive a queue pair itself; plain JSON (fds travel separately, by index). */
export interface QueuePairGrant {
  version: 2;
  qid: number;
  entries: number;
  /** Memory page size for PRPs (CC.MPS). */
  pageSize: number;
  /** Per fd index: 'bar' (BAR0 or a file holding its doorbells: only windows at or after 0x1000 are mapped) or 'memory'. */
  fds: Array<{ role: 'bar' | 'memory' }>;
  doorbell: {
    /** The doorbell page(s): BAR0 [barOffset, barOffset + map.bytes) as a window of a 'bar' fd. */
    map: GrantWindow;
    /** BAR0 offset of the window's first byte: always REG_DOORBELL_BASE (0x1000) in this version. */
    barOffset: number;
    /** BAR0 byte offsets of this queue's SQ tail and CQ head doorbells. */
    sqTailOffset: number;
    cqHeadOffset: number;
    /** Doorbell stride (CAP.DSTRD) in bytes. */
    stride: number;
  };
  /** The controller's wake word (futex) for software controllers that sleep: a page of its own; null for hardware. */
  wake: { map: GrantWindow; offset: number } | null;
  /** The queue pair's memory (SQ, CQ, data region): one window of a 'memory' fd. */
  memory: GrantWindow;
  sq: GrantRange;
  cq: GrantRange;
  /** The client's data region: buffers and PRP lists; `iova` is the controller's address of its first byte. */
  data: GrantRange & { iova: number };
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
  /** Name of the exported memory (memfd name), for diagnostics. */
  name?: string;
}

/** A queue pair handed out: what to send, and how to take it back. */
export interface ProvisionedQueuePair {
  grant: QueuePairGrant;
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
    throw new InvalidArgumentError(`${x.kind}: a queue pair's SQ, CQ and data (${total} bytes) exceed the ${x.maxExportBytes} bytes one export can hold`);
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
  const grant: QueuePairGrant = {
    version: GRANT_VERSION,
    qid: remote.qid,
    entries,
    pageSize: page,
    fds: fds.map((_, i) => ({ role: i === 1 ? 'memory' : 'bar' })),
    doorbell: {
      map: { fd: 0, offset: doorbells.offset, bytes: doorbells.bytes },
      barOffset: REG_DOORBELL_BASE,
      sqTailOffset: sqTailDoorbellOffset(remote.qid, stride),
      cqHeadOffset: cqHeadDoorbellOffset(remote.qid, stride),
      stride,
    },
    wake: wake === null ? null : { map: { fd: fds.indexOf(wake.fd), offset: wake.offset, bytes: wake.bytes }, offset: wake.word },
    memory: { fd: 1, offset: 0, bytes: memory.bytes },
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
  readonly grant: QueuePairGrant;
  /** What this process mapped (fd index, file offset, bytes, virtual address), for inspection. */
  readonly mappings: ReadonlyArray<{ role: 'doorbells' | 'wake' | 'memory'; fd: number; offset: number; bytes: number; address: number }>;
  private readonly regions: ShmRegion[];
  private readonly ownedFds: number[];
  private detached = false;

  /** Use attachQueuePair(). */
  constructor(
    host: QueueHost,
    grant: QueuePairGrant,
    memory: { sq: DmaBuffer; cq: DmaBuffer },
    regions: Array<{ role: 'doorbells' | 'wake' | 'memory'; fd: number; region: ShmRegion; offset: number }>,
    ownedFds: number[],
    opts: AttachOptions,
  ) {
    super(host, { qid: grant.qid, entries: grant.entries, timeoutMs: opts.timeoutMs ?? DEFAULT_IO_TIMEOUT_MS, memory }, opts.hooks ?? {});
    this.dma = host.dma as RegionAllocator;
    this.grant = grant;
    this.regions = regions.map((r) => r.region);
    this.mappings = regions.map((r) => ({ role: r.role, fd: r.fd, offset: r.offset, bytes: r.region.size, address: r.region.address }));
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

function bad(what: string): never {
  throw new InvalidArgumentError(`grant: ${what}`);
}

function isInt(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max;
}

function isPow2(v: number): boolean {
  return v > 0 && (v & (v - 1)) === 0;
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(`${what} is not an object`);
  return v as Record<string, unknown>;
}

function checkWindow(g: QueuePairGrant, v: unknown, what: string, role: 'bar' | 'memory', fdCount: number): GrantWindow {
  const w = obj(v, what);
  if (!isInt(w.fd, 0, g.fds.length - 1) || w.fd >= fdCount) bad(`${what}: fd index ${String(w.fd)} out of range (${Math.min(g.fds.length, fdCount)} fds)`);
  if (g.fds[w.fd]!.role !== role) bad(`${what}: fd ${w.fd} is a '${g.fds[w.fd]!.role}' fd, expected '${role}'`);
  if (!isInt(w.offset, 0, Number.MAX_SAFE_INTEGER) || w.offset % GRANT_MAP_PAGE !== 0) bad(`${what}: offset ${String(w.offset)} is not a page-aligned file offset`);
  if (!isInt(w.bytes, GRANT_MAP_PAGE, MAX_WINDOW_BYTES) || w.bytes % GRANT_MAP_PAGE !== 0) bad(`${what}: ${String(w.bytes)} bytes is not a whole number of pages up to ${MAX_WINDOW_BYTES}`);
  // A 'bar' fd is never mapped below the doorbells: the register page (CC, CSTS, AQA, ...) stays the owner's.
  if (role === 'bar' && w.offset < REG_DOORBELL_BASE) bad(`${what}: offset 0x${w.offset.toString(16)} would map BAR0's register page`);
  return { fd: w.fd, offset: w.offset, bytes: w.bytes };
}

function checkRange(v: unknown, what: string, windowBytes: number, align: number): GrantRange {
  const r = obj(v, what);
  if (!isInt(r.offset, 0, windowBytes) || r.offset % align !== 0) bad(`${what}: offset ${String(r.offset)} is not ${align}-byte aligned inside the memory window`);
  if (!isInt(r.bytes, 1, windowBytes) || r.offset + r.bytes > windowBytes) bad(`${what}: [${String(r.offset)}, +${String(r.bytes)}) is outside the ${windowBytes}-byte memory window`);
  return { offset: r.offset, bytes: r.bytes };
}

/**
 * Check every field of a grant (it comes from another process) and return a normalized copy. Throws
 * InvalidArgumentError naming the first bad field.
 */
export function validateGrant(input: unknown, fdCount: number): QueuePairGrant {
  const g = obj(input, 'the grant');
  if (g.version !== GRANT_VERSION) bad(`unsupported version ${String(g.version)} (this client reads ${GRANT_VERSION})`);
  if (!isInt(g.qid, 1, MAX_QID)) bad(`qid ${String(g.qid)} is not in 1..${MAX_QID}`);
  if (!isInt(g.entries, 2, MAX_ENTRIES)) bad(`entries ${String(g.entries)} is not in 2..${MAX_ENTRIES}`);
  if (!isInt(g.pageSize, GRANT_MAP_PAGE, 1 << 27) || !isPow2(g.pageSize)) bad(`pageSize ${String(g.pageSize)} is not a power of two >= 4096`);
  if (!Array.isArray(g.fds) || g.fds.length < 2 || g.fds.length > 8) bad('fds must list 2..8 descriptors');
  const fds = g.fds.map((f, i) => {
    const role = obj(f, `fds[${i}]`).role;
    if (role !== 'bar' && role !== 'memory') bad(`fds[${i}].role ${String(role)} is not 'bar' or 'memory'`);
    return { role: role as 'bar' | 'memory' };
  });
  if (fdCount < fds.length) bad(`names ${fds.length} fds, got ${fdCount}`);
  const out = { version: GRANT_VERSION, qid: g.qid, entries: g.entries, pageSize: g.pageSize, fds } as QueuePairGrant;
  const db = obj(g.doorbell, 'doorbell');
  const dbMap = checkWindow(out, db.map, 'doorbell.map', 'bar', fdCount);
  if (db.barOffset !== REG_DOORBELL_BASE) bad(`doorbell.barOffset ${String(db.barOffset)} must be 0x${REG_DOORBELL_BASE.toString(16)}`);
  if (!isInt(db.stride, 4, 4 << 15) || !isPow2(db.stride)) bad(`doorbell.stride ${String(db.stride)} is not a power of two in 4..${4 << 15}`);
  if (db.sqTailOffset !== sqTailDoorbellOffset(g.qid, db.stride) || db.cqHeadOffset !== cqHeadDoorbellOffset(g.qid, db.stride)) {
    bad('doorbell offsets do not match qid and stride');
  }
  if (db.cqHeadOffset + 4 > REG_DOORBELL_BASE + dbMap.bytes) bad(`the CQ head doorbell at 0x${db.cqHeadOffset.toString(16)} lies outside the doorbell window`);
  out.doorbell = { map: dbMap, barOffset: REG_DOORBELL_BASE, sqTailOffset: db.sqTailOffset, cqHeadOffset: db.cqHeadOffset, stride: db.stride };
  if (g.wake === null) out.wake = null;
  else {
    const w = obj(g.wake, 'wake');
    const map = checkWindow(out, w.map, 'wake.map', 'bar', fdCount);
    if (!isInt(w.offset, 0, map.bytes - 4) || w.offset % 4 !== 0) bad(`wake.offset ${String(w.offset)} is not an aligned word inside its window`);
    if (map.fd === dbMap.fd && map.offset < dbMap.offset + dbMap.bytes && dbMap.offset < map.offset + map.bytes) bad('the wake window overlaps the doorbell window');
    out.wake = { map, offset: w.offset };
  }
  out.memory = checkWindow(out, g.memory, 'memory', 'memory', fdCount);
  const mb = out.memory.bytes;
  out.sq = checkRange(g.sq, 'sq', mb, GRANT_MAP_PAGE);
  out.cq = checkRange(g.cq, 'cq', mb, GRANT_MAP_PAGE);
  const data = checkRange(g.data, 'data', mb, GRANT_MAP_PAGE);
  if (out.sq.bytes < g.entries * SQE_SIZE || out.cq.bytes < g.entries * CQE_SIZE) bad('queue memory too small for its entries');
  const d = obj(g.data, 'data');
  if (!isInt(d.iova, 0, Number.MAX_SAFE_INTEGER) || d.iova % g.pageSize !== 0) bad(`data.iova ${String(d.iova)} is not a page-aligned address`);
  out.data = { ...data, iova: d.iova };
  const ranges = [out.sq, out.cq, out.data].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < ranges.length; i++) if (ranges[i - 1]!.offset + ranges[i - 1]!.bytes > ranges[i]!.offset) bad('sq, cq and data overlap');
  if (!isInt(g.nsid, 1, 0xfffffffe)) bad(`nsid ${String(g.nsid)} is not in 1..0xfffffffe`);
  if (!isInt(g.blockSize, 512, 1 << 16) || !isPow2(g.blockSize)) bad(`blockSize ${String(g.blockSize)} is not a power of two in 512..65536`);
  if (!isInt(g.blocks, 1, Number.MAX_SAFE_INTEGER)) bad(`blocks ${String(g.blocks)} is not a positive integer`);
  if (!isInt(g.maxTransferBytes, 0, Number.MAX_SAFE_INTEGER)) bad(`maxTransferBytes ${String(g.maxTransferBytes)} is not a non-negative integer`);
  out.nsid = g.nsid;
  out.blockSize = g.blockSize;
  out.blocks = g.blocks;
  out.maxTransferBytes = g.maxTransferBytes;
  return out;
}

/**
 * Client side: validate the grant, map exactly the windows it names (doorbell page(s), wake page, queue memory)
 * and start driving the queue pair. `fds[i]` is the fd for grant index i.
 */
export function attachQueuePair(input: QueuePairGrant, fds: readonly number[], opts: AttachOptions = {}): AttachedQueuePair {
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
