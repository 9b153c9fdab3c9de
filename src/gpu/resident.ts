/**
 * The GPU-resident controller as a perf target (gpuctl:// URI): homi_gpu_controller (gpu_controller.cu), a
 * persistent kernel on its own stream serving queue pairs whose SQs, CQs, doorbells and payload buffers all
 * live in GPU memory, so the initiator kernels run at the GPU's own speed. Null namespace (no data moved) or a
 * memory namespace in GPU memory.
 *
 *   gpuctl://?size=1GiB&null=1&lbads=9&warps=16
 *     size   namespace bytes (default 1 GiB)    null  1: no data kept (default 1)
 *     lbads  log2 of the LBA size, 9 or 12 (default 9)
 *     warps  controller warps (default 16: 4 blocks of 128 threads)
 */
import * as cu from '../sys/cuda.js';
import { queryKeyProblem } from '../util/query.js';
import { parseSize } from '../util/size.js';
import type { DeviceBuffer, GpuDevice } from './device.js';
import { gpuEvents } from './device.js';
import { HomiCtrlJob, HomiCtrlQueue, HomiGpuQueue, QF_GPU_SCOPE, encode } from './layout.js';
import type { GpuPerfOptions, GpuTarget } from './options.js';
import { initQueueState, planQueue, stateLayout, writePrpLists } from './queues.js';

const PAGE = 4096;
const CTRL_THREADS_PER_BLOCK = 128;
const WARP = 32;
const RESIDENT_PARAMS = ['size', 'null', 'lbads', 'warps'] as const;

export interface ResidentOptions {
  sizeBytes: number;
  nullMode: boolean;
  lbads: 9 | 12;
  warps: number;
}

/** Parse a gpuctl:// URI. */
export function parseResidentUri(uri: string): ResidentOptions {
  const u = new URL(uri);
  if (u.protocol !== 'gpuctl:') throw new RangeError(`not a gpuctl:// URI: ${uri}`);
  const problem = queryKeyProblem(u.searchParams, RESIDENT_PARAMS);
  if (problem !== null) throw new RangeError(`gpuctl://: ${problem}`);
  const size = parseSize(u.searchParams.get('size') ?? '1GiB');
  const lbads = Number(u.searchParams.get('lbads') ?? '9');
  if (lbads !== 9 && lbads !== 12) throw new RangeError('gpuctl://: lbads must be 9 or 12');
  const warps = Number(u.searchParams.get('warps') ?? '16');
  if (!Number.isInteger(warps) || warps < 1 || warps > 4096) throw new RangeError('gpuctl://: warps must be an integer in 1..4096');
  const n = u.searchParams.get('null') ?? '1';
  if (n !== '0' && n !== '1') throw new RangeError('gpuctl://: null must be 0 or 1');
  if (size % (1 << lbads) !== 0) throw new RangeError(`gpuctl://: size must be a multiple of ${1 << lbads}`);
  return { sizeBytes: size, nullMode: n === '1', lbads, warps };
}

export async function openResidentTarget(gpu: GpuDevice, o: GpuPerfOptions, entries: number): Promise<GpuTarget> {
  const r = parseResidentUri(o.uri);
  const blockSize = 1 << r.lbads;
  const blocks = r.sizeBytes / blockSize;
  const buffers: DeviceBuffer[] = [];
  const alloc = (bytes: number): DeviceBuffer => {
    const b = gpu.alloc(bytes);
    buffers.push(b);
    return b;
  };
  const stopHost = cu.cuMemAllocHost(PAGE);
  const stopView = new Uint32Array(cu.hostView(stopHost.handle, PAGE));
  const stopReg = gpu.hostPointer(stopHost.address);
  let ctrlStream: cu.CuHandle | null = null;
  let ctrlDone: cu.CuHandle | null = null;
  let stats: DeviceBuffer | null = null;
  const stop = async (): Promise<void> => {
    Atomics.store(stopView, 0, 1);
    if (ctrlDone !== null) {
      const deadline = performance.now() + 10_000;
      while (!gpuEvents.query(ctrlDone) && performance.now() < deadline) await new Promise((res) => setTimeout(res, 1));
    }
  };
  try {
    const nsid = 1;
    const plan = planQueue({ entries, pageSize: PAGE, blockSize, maxTransferBytes: 0, data: { offset: 0, bytes: Number.MAX_SAFE_INTEGER, iova: 0 } }, o.bs);
    const media = r.nullMode ? null : alloc(r.sizeBytes);
    const dbs = alloc(8 * o.nqueues);
    const gq = new Uint8Array(HomiGpuQueue.bytes * o.nqueues);
    const cq = new Uint8Array(HomiCtrlQueue.bytes * o.nqueues);
    const sl = stateLayout(entries);
    for (let i = 0; i < o.nqueues; i++) {
      const sq = alloc(entries * 64);
      const cqm = alloc(entries * 16);
      const state = alloc(sl.bytes);
      const data = alloc(plan.usedBytes);
      const lists = plan.prpListOffset !== null ? new Uint8Array(entries * PAGE) : null;
      const prp2 = writePrpLists(plan, data.dptr, lists, data.dptr + (plan.prpListOffset ?? 0));
      if (lists !== null) gpu.copyToDevice(data.dptr + plan.prpListOffset!, lists);
      const sqDb = dbs.dptr + 8 * i;
      const cqDb = sqDb + 4;
      encode(
        HomiGpuQueue,
        {
          sq: sq.dptr,
          cq: cqm.dptr,
          sq_db: sqDb,
          cq_db: cqDb,
          data: data.dptr,
          data_bus: data.dptr,
          ...initQueueState(gpu, state, plan, prp2),
          entries,
          nsid,
          lba_shift: r.lbads,
          slot_bytes: plan.slotBytes,
          page_bytes: PAGE,
          flags: QF_GPU_SCOPE,
        },
        gq,
        i * HomiGpuQueue.bytes,
      );
      encode(HomiCtrlQueue, { sq: sq.dptr, cq: cqm.dptr, sq_db: sqDb, cq_db: cqDb, entries, qid: i + 1, sq_head: 0, cq_tail: 0 }, cq, i * HomiCtrlQueue.bytes);
    }
    const table = alloc(gq.byteLength);
    gpu.copyToDevice(table.dptr, gq);
    const ctrlTable = alloc(cq.byteLength);
    gpu.copyToDevice(ctrlTable.dptr, cq);
    stats = alloc(32);
    const job = encode(HomiCtrlJob, {
      queues: ctrlTable.dptr,
      stop: stopReg,
      media: media?.dptr ?? 0,
      ns_blocks: blocks,
      stats: stats.dptr,
      nqueues: o.nqueues,
      lba_shift: r.lbads,
      page_bytes: PAGE,
      nsid,
    });
    const threads = r.warps * WARP;
    const block = Math.min(CTRL_THREADS_PER_BLOCK, threads);
    ctrlStream = gpu.stream();
    ctrlDone = gpu.event(false);
    gpu.launch('controller', Math.ceil(threads / block), block, ctrlStream, [job]);
    gpuEvents.record(ctrlDone, ctrlStream);
    const statsBuf = stats;
    const readStats = (): Record<string, number> => {
      // the controller adds its counters when it stops; while it runs they read 0
      const b = gpu.copyFromDevice(statsBuf.dptr, 32);
      const dv = new DataView(b.buffer);
      return { commands: Number(dv.getBigUint64(0, true)), reads: Number(dv.getBigUint64(8, true)), writes: Number(dv.getBigUint64(16, true)), errors: Number(dv.getBigUint64(24, true)) };
    };
    return {
      kind: 'gpu-resident',
      description: `${o.uri} (GPU-resident controller: ${r.warps} warps, ${r.nullMode ? 'null' : 'GPU-memory'} namespace of ${blocks} x ${blockSize} B)`,
      table: table.dptr,
      nqueues: o.nqueues,
      entries,
      blockSize,
      blocks,
      placement: 'device (GPU memory; the controller is on the GPU)',
      counters: () => ({}),
      broken: () => false,
      close: async () => {
        await stop();
        const s = readStats();
        if (s.errors > 0) o.log?.(`GPU-resident controller: ${s.errors} commands failed`);
        for (const b of buffers) b.free();
        cu.cuMemFreeHost(stopHost.handle);
      },
    };
  } catch (e) {
    await stop();
    for (const b of buffers) b.free();
    cu.cuMemFreeHost(stopHost.handle);
    throw e;
  }
}
