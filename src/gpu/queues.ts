/**
 * GPU queue pairs: raw queue grants (from homid, or provisioned in this process) made drivable by GPU threads.
 *
 * For each grant: map its windows (driver/attach.ts, the same validation as any client), register the doorbell
 * mapping and the queue memory with the GPU (host memory, page-locked and mapped: the device pointer equals the
 * host address on this platform), lay the data region out as one buffer per SQ slot (plus a PRP list page per
 * slot where a transfer spans more than two pages), and allocate the queue's GPU-memory state (tickets, locks,
 * per-slot turn / filled / done / status words, the per-slot PRP2 table). The result is a HomiGpuQueue array in
 * GPU memory, what the kernels of initiator.cu take.
 *
 * Placement of payloads: 'host' (the data region in host memory, GPU threads read it in place) or 'device' (GPU
 * memory: the controller must write there itself; the embedded controller does it by emulated P2P, a device
 * window, see placement in src/gpu/perf.ts).
 *
 * This module holds no CUDA calls of its own beyond GpuDevice's; the layout logic (planQueue) is plain and runs
 * without a GPU, which is how CI checks it against the embedded controller.
 */
import { attachQueuePair, type AttachedQueuePair } from '../driver/attach.js';
import type { RawQueueGrant } from '../ipc/raw-grant.js';
import { CQE_SIZE, SQE_SIZE } from '../nvme/registers.js';
import { HomiGpuQueue, HomiQueueState, QF_GPU_SCOPE, encode, type Values } from './layout.js';
import type { DeviceBuffer, GpuDevice } from './device.js';

/** Bytes of a PRP list page (one per slot when a slot's transfer needs a list). */
const PRP_ENTRY_BYTES = 8;

/** Where one queue's pieces are, in the grant's data region (offsets from the data region's start). */
export interface QueuePlan {
  readonly entries: number;
  readonly slotBytes: number;
  readonly pageBytes: number;
  /** Offset of slot i's buffer: i * slotBytes. */
  readonly slotsBytes: number;
  /** Offset of the PRP list pages (one per slot), or null when a slot fits PRP1 + PRP2. */
  readonly prpListOffset: number | null;
  /** Bytes of the data region used. */
  readonly usedBytes: number;
}

/** Why a grant cannot carry GPU I/O of `slotBytes` per command, or the plan. */
export function planQueue(grant: Pick<RawQueueGrant, 'entries' | 'pageSize' | 'data' | 'blockSize' | 'maxTransferBytes'>, slotBytes: number): QueuePlan {
  const E = grant.entries;
  if ((E & (E - 1)) !== 0) throw new RangeError(`GPU queues need a power-of-two number of entries (the kernels' unwrapped counters), got ${E}`);
  if (slotBytes < grant.blockSize || slotBytes % grant.blockSize !== 0) throw new RangeError(`I/O size ${slotBytes} is not a multiple of the ${grant.blockSize}-byte LBA size`);
  if (grant.maxTransferBytes !== 0 && slotBytes > grant.maxTransferBytes) throw new RangeError(`I/O size ${slotBytes} exceeds the controller's largest transfer (${grant.maxTransferBytes} bytes)`);
  const page = grant.pageSize;
  const slotSpan = Math.ceil(slotBytes / page) * page;
  const pages = slotSpan / page;
  if (pages - 1 > page / PRP_ENTRY_BYTES) throw new RangeError(`I/O size ${slotBytes} needs more than one PRP list page`);
  const slotsBytes = E * slotSpan;
  const prpListOffset = pages > 2 ? slotsBytes : null;
  const usedBytes = slotsBytes + (prpListOffset !== null ? E * page : 0);
  if (usedBytes > grant.data.bytes) throw new RangeError(`${E} slots of ${slotBytes} bytes need ${usedBytes} bytes of data region; the grant has ${grant.data.bytes}`);
  return { entries: E, slotBytes: slotSpan, pageBytes: page, slotsBytes, prpListOffset, usedBytes };
}

/** Bytes of data region a GPU queue of `entries` slots of `slotBytes` needs (what to ask homid for). */
export function dataBytesFor(entries: number, slotBytes: number, pageBytes = 4096): number {
  const span = Math.ceil(slotBytes / pageBytes) * pageBytes;
  return entries * span + (span / pageBytes > 2 ? entries * pageBytes : 0);
}

/**
 * Write slot i's PRP list (pages 1.. of its buffer at controller address `busBase + i * slotBytes`) into
 * `lists` (the PRP list pages, one per slot), and return the PRP2 value per slot: the controller address of
 * that list (`listBus + i * page`). Slots that fit two pages need no list (the kernels compute PRP2 then).
 */
export function writePrpLists(plan: QueuePlan, busBase: number, lists: Uint8Array | null, listBus: number): number[] {
  const prp2: number[] = new Array<number>(plan.entries).fill(0);
  if (plan.prpListOffset === null || lists === null) return prp2;
  const dv = new DataView(lists.buffer, lists.byteOffset, lists.byteLength);
  const pages = plan.slotBytes / plan.pageBytes;
  for (let i = 0; i < plan.entries; i++) {
    const at = i * plan.pageBytes;
    for (let p = 1; p < pages; p++) dv.setBigUint64(at + (p - 1) * PRP_ENTRY_BYTES, BigInt(busBase + i * plan.slotBytes + p * plan.pageBytes), true);
    prp2[i] = listBus + at;
  }
  return prp2;
}

/** The GPU-memory state block of one queue: HomiQueueState, then turn, filled, done, status (u32 x E), then prp2 (u64 x E). */
export function stateLayout(entries: number): { bytes: number; turn: number; filled: number; done: number; status: number; prp2: number } {
  const words = 4 * entries;
  const turn = HomiQueueState.bytes;
  const filled = turn + words;
  const done = filled + words;
  const status = done + words;
  const prp2 = Math.ceil((status + words) / 8) * 8;
  return { bytes: prp2 + 8 * entries, turn, filled, done, status, prp2 };
}

/**
 * Fill a queue's GPU-memory state block (zeroed by alloc) with its per-slot PRP2 table, and return the
 * HomiGpuQueue fields that point into the block: prp2 (0 when no slot needs a list), state, turn, filled,
 * done, status.
 */
export function initQueueState(gpu: Pick<GpuMemoryOps, 'copyToDevice'>, state: DeviceBuffer, plan: QueuePlan, prp2: readonly number[]): Values<typeof HomiGpuQueue> {
  const sl = stateLayout(plan.entries);
  const table = new Uint8Array(8 * plan.entries);
  const dv = new DataView(table.buffer);
  prp2.forEach((v, i) => dv.setBigUint64(8 * i, BigInt(v), true));
  gpu.copyToDevice(state.dptr + sl.prp2, table);
  return {
    prp2: plan.prpListOffset !== null ? state.dptr + sl.prp2 : 0,
    state: state.dptr,
    turn: state.dptr + sl.turn,
    filled: state.dptr + sl.filled,
    done: state.dptr + sl.done,
    status: state.dptr + sl.status,
  };
}

/** One queue pair ready for GPU threads. */
export interface GpuQueue {
  readonly qid: number;
  readonly grant: RawQueueGrant;
  readonly plan: QueuePlan;
  /** The HomiGpuQueue fields (device pointers). */
  readonly values: Values<typeof HomiGpuQueue>;
  /** CPU view of the data region (host placement), for checks. */
  readonly hostData: Uint8Array;
  /** The GPU-memory state block. */
  readonly state: DeviceBuffer;
  /** Device buffer holding the payloads (device placement), or null. */
  readonly deviceData: DeviceBuffer | null;
  /** The host mappings registered with the GPU (device pointer == host address where the platform maps 1:1). */
  readonly host: ReadonlyArray<{ role: 'doorbells' | 'memory'; address: number; dptr: number; buffer: ArrayBuffer }>;
}

/** What GpuQueueSet needs of a GPU (GpuDevice; a CPU stand-in in the CI tests of the host-side setup). */
export type GpuMemoryOps = Pick<GpuDevice, 'registerHost' | 'alloc' | 'copyToDevice' | 'copyFromDevice'>;

export interface DeviceWindowLike {
  /** The controller's address of the window's first byte. */
  readonly iova: number;
  release(): void;
}

export interface GpuQueueOptions {
  /** Payload bytes per command (per SQ slot). */
  slotBytes: number;
  /** 'host' (default) or 'device'. */
  placement?: 'host' | 'device';
  /** Device placement: make a controller-visible window of `bytes` onto GPU memory `dptr` (emulated P2P, or a real peer BAR). */
  deviceWindow?: (dptr: number, bytes: number) => DeviceWindowLike;
  /** The doorbell fd maps PCI BAR space (hardware): register it as I/O memory. Default false (a software controller's memfd). */
  doorbellsAreIoMemory?: boolean;
  /** Close the grant's fds on close() (default true: they were received for this use). */
  closeFds?: boolean;
}

/** A set of GPU queue pairs and the HomiGpuQueue array describing them, in GPU memory. */
export class GpuQueueSet {
  readonly queues: GpuQueue[] = [];
  /** Device pointer of HomiGpuQueue[queues.length]. */
  table = 0;
  private readonly undo: Array<() => void> = [];
  private closed = false;

  constructor(
    readonly gpu: GpuMemoryOps,
    readonly opts: GpuQueueOptions,
  ) {}

  /** Attach a granted queue pair, register it with the GPU and prepare its GPU-side state. */
  add(grant: RawQueueGrant, fds: readonly number[]): GpuQueue {
    const placement = this.opts.placement ?? 'host';
    const plan = planQueue(grant, this.opts.slotBytes);
    const qp: AttachedQueuePair = attachQueuePair(grant, fds, { timeoutMs: 0, closeFds: this.opts.closeFds ?? true });
    this.undo.push(() => qp.detach());
    const db = qp.mappings.find((m) => m.role === 'doorbells')!;
    const mem = qp.mappings.find((m) => m.role === 'memory')!;
    const dbReg = this.gpu.registerHost(db.address, db.bytes, this.opts.doorbellsAreIoMemory === true);
    this.undo.push(dbReg.unregister);
    const memReg = this.gpu.registerHost(mem.address, mem.bytes);
    this.undo.push(memReg.unregister);
    // The whole used part of the data region, from the grant's own allocator: slots first, PRP lists after.
    const region = qp.dma.alloc(plan.usedBytes, plan.pageBytes);
    const hostData = region.bytes;
    const hostDataDptr = memReg.dptr + grant.data.offset + (region.iova - grant.data.iova);
    const sl = stateLayout(grant.entries);
    const state = this.gpu.alloc(sl.bytes);
    this.undo.push(state.free);
    let deviceData: DeviceBuffer | null = null;
    let data = hostDataDptr;
    let dataBus = region.iova;
    if (placement === 'device') {
      if (this.opts.deviceWindow === undefined) throw new Error('device placement needs a device window (emulated P2P on the embedded controller)');
      deviceData = this.gpu.alloc(plan.slotsBytes);
      this.undo.push(deviceData.free);
      const w = this.opts.deviceWindow(deviceData.dptr, plan.slotsBytes);
      this.undo.push(() => w.release());
      data = deviceData.dptr;
      dataBus = w.iova;
    }
    const lists = plan.prpListOffset !== null ? hostData.subarray(plan.prpListOffset, plan.prpListOffset + plan.entries * plan.pageBytes) : null;
    const prp2 = writePrpLists(plan, dataBus, lists, region.iova + (plan.prpListOffset ?? 0));
    const values: Values<typeof HomiGpuQueue> = {
      ...initQueueState(this.gpu, state, plan, prp2),
      sq: memReg.dptr + grant.sq.offset,
      cq: memReg.dptr + grant.cq.offset,
      sq_db: dbReg.dptr + grant.doorbell.sqTailOffset - grant.doorbell.barOffset,
      cq_db: dbReg.dptr + grant.doorbell.cqHeadOffset - grant.doorbell.barOffset,
      data,
      data_bus: dataBus,
      entries: grant.entries,
      nsid: grant.nsid,
      lba_shift: Math.log2(grant.blockSize),
      slot_bytes: plan.slotBytes,
      page_bytes: plan.pageBytes,
      flags: 0,
    };
    const host = [
      { role: 'doorbells' as const, address: db.address, dptr: dbReg.dptr, buffer: db.buffer },
      { role: 'memory' as const, address: mem.address, dptr: memReg.dptr, buffer: mem.buffer },
    ];
    const q: GpuQueue = { qid: grant.qid, grant, plan, values, hostData, state, deviceData, host };
    this.queues.push(q);
    return q;
  }

  /** Write the HomiGpuQueue array to GPU memory (after the last add). */
  publish(): number {
    const bytes = new Uint8Array(HomiGpuQueue.bytes * this.queues.length);
    this.queues.forEach((q, i) => encode(HomiGpuQueue, q.values, bytes, i * HomiGpuQueue.bytes));
    const t = this.gpu.alloc(bytes.byteLength);
    this.undo.push(t.free);
    this.gpu.copyToDevice(t.dptr, bytes);
    this.table = t.dptr;
    return t.dptr;
  }

  /** The HomiQueueState of queue i, read back (for checks and diagnostics). */
  readState(i: number): { tail: number; cqHead: number; completed: number; broken: boolean } {
    const b = this.gpu.copyFromDevice(this.queues[i]!.state.dptr, HomiQueueState.bytes);
    const dv = new DataView(b.buffer);
    const f = HomiQueueState.fields;
    return {
      tail: dv.getUint32(f.tail_ticket.offset, true),
      cqHead: dv.getUint32(f.cq_head.offset, true),
      completed: dv.getUint32(f.completed.offset, true),
      broken: dv.getUint32(f.broken.offset, true) !== 0,
    };
  }

  /** Unregister and free everything, detach the grants (after the kernels are done). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.undo.reverse()) {
      try {
        f();
      } catch {
        // keep releasing the rest
      }
    }
  }
}

export { QF_GPU_SCOPE, SQE_SIZE, CQE_SIZE };
