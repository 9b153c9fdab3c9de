/**
 * `homi perf --initiator gpu`: GPU threads build the commands, ring the doorbells and reap the completions
 * (device-initiated I/O), against
 *  - an embedded NVMe controller (emu:// URI, started in this process in memfd mode and held awake: it busy-polls
 *    the queues, since a GPU cannot wake a sleeping thread), on queue pairs provisioned exactly as homid
 *    provisions raw leases (driver/attach.ts), or on a GPU lease homid grants (HomidClient.openGpuQueue);
 *  - the GPU-resident controller (gpuctl:// URI, see resident.ts).
 *
 * One launch does the whole run (the kernels count their own I/Os); a --time bound is met by a short
 * calibration launch first. Every wait in the kernels has a deadline: a stalled controller gives timeouts.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { openController, type OpenedController } from '../device/controller.js';
import { provisionQueuePair, type ProvisionedQueuePair } from '../driver/attach.js';
import type { EmuTransport } from '../transport/emu.js';
import { GpuDevice, gpuEvents, type GpuInfo } from './device.js';
import { HomiGpuJob, HomiGpuResult, HomiQueueState, JOB_RANDOM, JOB_VERIFY, LAT_BUCKETS, LAT_SUB_BITS, encode } from './layout.js';
import { GpuQueueSet, dataBytesFor, stateLayout } from './queues.js';
import type { DeviceBuffer } from './device.js';
import { type GpuMode, type GpuPerfOptions, type GpuRw, type GpuTarget } from './options.js';
import { checkGpuTarget, gpuTargetFacts, type GpuTargetFacts } from './checks.js';

export { GPU_MODES, GPU_RW, type GpuMode, type GpuPerfOptions, type GpuRw, type GpuTarget } from './options.js';
export { gpuTargetFacts, type GpuTargetFacts } from './checks.js';

export interface GpuLatency {
  /** Microseconds (from clock64 cycles at the GPU's nominal clock). */
  meanUs: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

export interface GpuPerfReport {
  initiator: 'gpu';
  target: 'emu' | 'gpu-resident';
  device: string;
  gpu: Pick<GpuInfo, 'name' | 'computeCapability' | 'multiprocessors' | 'pciBusId' | 'clockKhz'>;
  mode: GpuMode;
  rw: GpuRw;
  bs: number;
  qd: number;
  nqueues: number;
  entries: number;
  grid: number;
  block: number;
  threads: number;
  /** 'host' or 'device (emulated P2P)' / 'device' (GPU-resident: the controller is on the GPU). */
  placement: string;
  ios: number;
  seconds: number;
  iops: number;
  mibPerSec: number;
  errors: number;
  timeouts: number;
  mismatches: number | null;
  firstError: number | null;
  latency: GpuLatency;
  /** What the controller saw (emu: its counters; resident: its kernel's counters). */
  controller: Record<string, number>;
  notes: string[];
}

/** A bucket of HomiGpuResult.hist -> cycles (the middle of its range). */
export function latBucketCycles(b: number): number {
  if (b < 1 << LAT_SUB_BITS) return b;
  const msb = (b >> LAT_SUB_BITS) + LAT_SUB_BITS - 1;
  const sub = b & ((1 << LAT_SUB_BITS) - 1);
  const width = 2 ** (msb - LAT_SUB_BITS);
  return (2 ** LAT_SUB_BITS + sub) * width + width / 2;
}

/** Decode a HomiGpuResult read back from the GPU. */
export function decodeResult(
  b: Uint8Array,
  clockKhz: number,
): { ios: number; errors: number; timeouts: number; mismatches: number; bytes: number; firstStatus: number; firstMismatchLba: number; latency: GpuLatency } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const f = HomiGpuResult.fields;
  const u64 = (o: number): number => Number(dv.getBigUint64(o, true));
  const ios = u64(f.ios.offset);
  const cyclesToUs = (c: number): number => (c / clockKhz) * 1000;
  const hist: number[] = [];
  for (let i = 0; i < LAT_BUCKETS; i++) hist.push(dv.getUint32(f.hist.offset + 4 * i, true));
  const total = hist.reduce((a, c) => a + c, 0);
  const maxCycles = u64(f.lat_max.offset);
  const pct = (p: number): number => {
    if (total === 0) return 0;
    const want = Math.ceil(total * p);
    let seen = 0;
    for (let i = 0; i < LAT_BUCKETS; i++) {
      seen += hist[i]!;
      // A bucket's midpoint can lie above the exact maximum the kernels kept: never report past it.
      if (seen >= want) return cyclesToUs(Math.min(latBucketCycles(i), maxCycles));
    }
    return 0;
  };
  return {
    ios,
    errors: u64(f.errors.offset),
    timeouts: u64(f.timeouts.offset),
    mismatches: u64(f.mismatches.offset),
    bytes: u64(f.bytes.offset),
    firstStatus: dv.getUint32(f.first_status.offset, true),
    firstMismatchLba: dv.getUint32(f.first_mismatch_lba.offset, true),
    latency: { meanUs: ios > 0 ? cyclesToUs(u64(f.lat_sum.offset) / ios) : 0, p50Us: pct(0.5), p99Us: pct(0.99), maxUs: cyclesToUs(maxCycles) },
  };
}

/** The launch shape of a run. */
export function launchShape(o: Pick<GpuPerfOptions, 'mode' | 'qd' | 'nqueues' | 'blockThreads'>): { grid: number; block: number; threads: number } {
  if (o.mode === 'block') {
    if (o.qd > 1024) throw new RangeError(`block mode: --qd ${o.qd} exceeds 1024 threads per block (one thread per slot)`);
    return { grid: o.nqueues, block: o.qd, threads: o.nqueues * o.qd };
  }
  const threads = o.nqueues * o.qd;
  if (o.qd < 32) {
    // one partial warp per block: block b drives queue b % nqueues
    return { grid: o.nqueues, block: o.qd, threads };
  }
  if (o.qd % 32 !== 0) throw new RangeError(`ticket mode: --qd ${o.qd} must be below 32 or a multiple of 32 (whole warps share a queue)`);
  const block = Math.min(o.blockThreads ?? 256, o.qd, 1024);
  if (threads % block !== 0 || block % 32 !== 0) throw new RangeError(`ticket mode: ${threads} threads do not split into blocks of ${block}`);
  return { grid: threads / block, block, threads };
}

export function defaultEntries(qd: number): number {
  let e = 64;
  while (e <= qd) e *= 2;
  return e;
}

const RW_READ_PERCENT: Record<GpuRw, number | null> = { read: 100, randread: 100, write: 0, randwrite: 0, randrw: null };

/** One launch of an initiator kernel over `target`; resolves when the kernel is done (or throws after the host deadline). */
export async function launchJob(
  gpu: GpuDevice,
  target: GpuTarget,
  j: {
    mode: GpuMode;
    grid: number;
    block: number;
    iosPerThread: number;
    bs: number;
    lbaBase: number;
    lbaSpan: number;
    seed: number;
    readPercent: number;
    random: boolean;
    verify: boolean;
    timeoutMs: number;
  },
): Promise<{ result: ReturnType<typeof decodeResult>; seconds: number }> {
  // one result buffer per device, reused: freeing device memory may wait for a persistent kernel (gpuctl://)
  const res: DeviceBuffer = gpu.scratch('result', HomiGpuResult.bytes);
  {
    const nlb = j.bs / target.blockSize;
    const job = encode(HomiGpuJob, {
      queues: target.table,
      result: res.dptr,
      lba_base: j.lbaBase,
      lba_span: j.lbaSpan,
      seed: j.seed,
      timeout_cycles: Math.round(j.timeoutMs * gpu.info.clockKhz),
      nqueues: target.nqueues,
      ios_per_thread: j.iosPerThread,
      blocks_per_io: nlb,
      read_percent: j.readPercent,
      flags: (j.random ? JOB_RANDOM : 0) | (j.verify ? JOB_VERIFY : 0),
    });
    const stream = gpu.launchStream();
    const start = gpu.event();
    const end = gpu.event();
    gpuEvents.record(start, stream);
    gpu.launch(j.mode === 'block' ? 'blockIo' : 'ticketIo', j.grid, j.block, stream, [job]);
    gpuEvents.record(end, stream);
    // The kernels' own deadlines bound each wait; this bounds the whole launch in case the GPU is wedged.
    const hostDeadline = performance.now() + Math.max(60_000, j.timeoutMs * 4 * (j.iosPerThread + 1));
    while (!gpuEvents.query(end)) {
      if (performance.now() > hostDeadline) throw new Error(`the GPU kernel did not finish within ${Math.round((hostDeadline - performance.now()) / 1000)} s: the GPU may need a reset`);
      await sleep(1);
    }
    const seconds = gpuEvents.elapsedMs(start, end) / 1000;
    return { result: decodeResult(gpu.copyFromDevice(res.dptr, HomiGpuResult.bytes), gpu.info.clockKhz), seconds };
  }
}

/** GPU queue pairs on an embedded controller, provisioned as homid provisions raw leases (what openEmuTarget and the GPU suite share). */
export interface EmuQueueTarget extends GpuTarget {
  readonly set: GpuQueueSet;
  readonly provisioned: readonly ProvisionedQueuePair[];
}

/**
 * `nqueues` GPU queue pairs on the already open embedded controller `opened` (memfd mode): provisioned
 * (driver/attach.ts), attached and registered with `gpu`. close() gives the queues back and leaves the
 * controller open; the caller keeps it awake (a GPU cannot wake it) and closes it.
 */
export async function emuQueueTarget(
  gpu: GpuDevice,
  opened: OpenedController,
  o: Pick<GpuPerfOptions, 'nqueues' | 'bs' | 'nsid' | 'placement' | 'gpu'> & { description: string },
  entries: number,
): Promise<EmuQueueTarget> {
  const transport = opened.transport as EmuTransport;
  const provisioned: ProvisionedQueuePair[] = [];
  const set = new GpuQueueSet(gpu, {
    slotBytes: o.bs,
    placement: o.placement ?? 'host',
    closeFds: false,
    ...(o.placement === 'device' ? { deviceWindow: deviceWindowOf(transport, o.gpu ?? 0) } : {}),
  });
  const before = transport.stats();
  const close = async (): Promise<void> => {
    set.close();
    for (const p of provisioned) await p.reclaim().catch(() => undefined);
  };
  try {
    const nsid = o.nsid ?? 1;
    const ns = opened.controller.namespaces.find((n) => n.nsid === nsid);
    if (ns === undefined) throw new RangeError(`namespace ${nsid} does not exist on ${o.description}`);
    for (let i = 0; i < o.nqueues; i++) {
      const p = await provisionQueuePair(opened.controller, transport, { entries, nsid, dataBytes: dataBytesFor(entries, o.bs), name: `homi-gpu-q${i}` });
      provisioned.push(p);
      set.add(p.grant, p.fds);
    }
    const table = set.publish();
    return {
      kind: 'emu',
      description: o.description,
      table,
      nqueues: o.nqueues,
      entries,
      blockSize: ns.blockSize,
      blocks: ns.blocks,
      placement: o.placement === 'device' ? 'device (emulated P2P: the controller copies through the copy engine)' : 'host (pinned, read by GPU threads in place)',
      counters: () => {
        const s = transport.stats() as unknown as Record<string, number>;
        const b = before as unknown as Record<string, number>;
        const out: Record<string, number> = {};
        for (const [k, v] of Object.entries(s)) if (typeof v === 'number') out[k] = v - (b[k] ?? 0);
        return out;
      },
      broken: () => set.queues.some((_, i) => set.readState(i).broken),
      close,
      set,
      provisioned,
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Open an embedded controller (memfd mode, held awake) with `nqueues` GPU queue pairs; close() closes it all. */
export async function openEmuTarget(gpu: GpuDevice, o: GpuPerfOptions, entries: number): Promise<GpuTarget> {
  const opened: OpenedController = await openController(o.uri, { sharedMemory: 'memfd' });
  const release = opened.transport.holdAwake?.() ?? ((): void => undefined);
  const shutdown = async (): Promise<void> => {
    release();
    await opened.close();
  };
  let t: EmuQueueTarget;
  try {
    t = await emuQueueTarget(gpu, opened, { ...o, description: o.uri }, entries);
  } catch (e) {
    await shutdown();
    throw e;
  }
  return {
    ...t,
    close: async () => {
      try {
        await t.close();
      } finally {
        await shutdown();
      }
    },
  };
}

/**
 * `homid:<device>[?socket=PATH]`: GPU leases from a running homid ($HOMID_SOCKET or the default socket when
 * the URI names none); the connection closes with the target.
 */
async function openHomidUri(gpu: GpuDevice, o: GpuPerfOptions, entries: number): Promise<GpuTarget> {
  const u = new URL(o.uri);
  const device = decodeURIComponent(u.pathname);
  if (device === '') throw new RangeError("homid: URI: name homid's device, e.g. homid:nvme0");
  const { HomidClient } = await import('../client/index.js');
  const { openHomidTarget } = await import('./homid.js');
  const socket = u.searchParams.get('socket') ?? undefined;
  const client = await HomidClient.connect(socket);
  try {
    const t = await openHomidTarget(gpu, client, { device, nsid: o.nsid ?? 1, nqueues: o.nqueues, entries, bs: o.bs });
    return {
      ...t,
      close: async () => {
        try {
          await t.close();
        } finally {
          client.close();
        }
      },
    };
  } catch (e) {
    client.close();
    throw e;
  }
}

/** Device placement on the embedded controller: a device window (emulated P2P: the copy engine moves the data). */
function deviceWindowOf(transport: EmuTransport, ordinal: number): (dptr: number, bytes: number) => { iova: number; release(): void } {
  return (dptr, bytes) => transport.addDeviceWindow(bytes, { kind: 'cuda', ordinal, dptr });
}

/** The share of reads of a run (randrw: --rwmixread). */
function readPercentOf(o: Pick<GpuPerfOptions, 'rw' | 'rwmixread'>): number {
  return RW_READ_PERCENT[o.rw] ?? o.rwmixread ?? 50;
}

/**
 * Check a run (or one sweep point) before the GPU is touched: queue entries, the launch shape, --verify's
 * workload, and, given its facts, the target (src/gpu/checks.ts). Returns the SQ/CQ entries per queue.
 */
export function checkGpuPerfOptions(o: GpuPerfOptions, target: GpuTargetFacts | null | 'unchecked'): number {
  const entries = o.entries ?? defaultEntries(o.qd);
  if ((entries & (entries - 1)) !== 0 || entries < 2) throw new RangeError(`--entries ${entries} must be a power of two`);
  // block mode gives each thread its own slot; ticket mode lets more threads than slots wait for a free one (a full queue)
  if (o.mode === 'block' && entries <= o.qd) throw new RangeError(`--entries ${entries} must be above --qd ${o.qd} in block mode (a slot per thread, one entry kept free)`);
  launchShape(o);
  const readPercent = readPercentOf(o);
  if (o.verify === true && readPercent > 0 && readPercent < 100) throw new RangeError('--verify needs a pure read or pure write workload (a mixed run races writes against reads of the same LBAs)');
  if (target !== 'unchecked') checkGpuTarget(o, entries, target);
  return entries;
}

/** Run a GPU perf job end to end (a given openTarget stands for the target its URI would name: not checked against the URI). */
export async function runGpuPerf(o: GpuPerfOptions, openTarget?: (gpu: GpuDevice, entries: number) => Promise<GpuTarget>): Promise<GpuPerfReport> {
  const log = o.log ?? ((): void => undefined);
  const entries = checkGpuPerfOptions(o, openTarget === undefined ? await gpuTargetFacts(o.uri) : 'unchecked');
  const shape = launchShape(o);
  const gpu = GpuDevice.open(o.gpu ?? 0);
  let target: GpuTarget | null = null;
  try {
    gpu.preload();
    target =
      openTarget !== undefined
        ? await openTarget(gpu, entries)
        : o.uri.startsWith('gpuctl:')
          ? await (await import('./resident.js')).openResidentTarget(gpu, o, entries)
          : o.uri.startsWith('homid:')
            ? await openHomidUri(gpu, o, entries)
            : await openEmuTarget(gpu, o, entries);
    const bs = o.bs;
    if (bs % target.blockSize !== 0) throw new RangeError(`--bs ${bs} is not a multiple of the namespace's ${target.blockSize}-byte LBAs`);
    const nlb = bs / target.blockSize;
    const spanBlocks = Math.floor(Math.min(target.blocks, Math.floor((o.spanBytes ?? target.blocks * target.blockSize) / target.blockSize)) / nlb) * nlb;
    if (spanBlocks < nlb) throw new RangeError(`the namespace is smaller than one ${bs}-byte I/O`);
    const seed = o.seed ?? 1;
    const timeoutMs = o.timeoutMs ?? 2000;
    const random = o.rw.startsWith('rand');
    const readPercent = readPercentOf(o);
    const notes: string[] = [];
    const base = { mode: o.mode, grid: shape.grid, block: shape.block, bs, lbaBase: 0, lbaSpan: spanBlocks, seed, timeoutMs };
    if (o.verify === true && readPercent === 100) {
      // Reads are checked against the pattern: write it first, sequentially over the span, from the GPU too.
      const per = Math.ceil(spanBlocks / nlb / shape.threads);
      log(`verify: writing the pattern over ${spanBlocks} LBAs from the GPU (${per} I/Os per thread)`);
      const w = await launchJob(gpu, target, { ...base, iosPerThread: per, readPercent: 0, random: false, verify: true });
      if (w.result.errors + w.result.timeouts > 0)
        throw new Error(`verify: the pattern write pass failed: ${w.result.errors} errors, ${w.result.timeouts} timeouts (first status 0x${w.result.firstStatus.toString(16)})`);
      notes.push(`verify: pattern written by the GPU over ${spanBlocks} LBAs first (${w.result.ios} writes)`);
    }
    let iosPerThread: number;
    if (o.ios !== undefined && o.ios !== null) iosPerThread = Math.max(1, Math.ceil(o.ios / shape.threads));
    else {
      const probe = Math.max(1, Math.min(64, Math.ceil(20_000 / shape.threads)));
      const c = await launchJob(gpu, target, { ...base, iosPerThread: probe, readPercent, random, verify: o.verify === true });
      if (c.result.timeouts > 0) throw new Error(`calibration: ${c.result.timeouts} waits timed out: the controller is not serving the GPU's queues`);
      const rate = c.result.ios / Math.max(c.seconds, 1e-6);
      iosPerThread = Math.max(1, Math.min(1 << 24, Math.round((rate * (o.timeSec ?? 5)) / shape.threads)));
      log(`calibration: ${Math.round(rate)} IOPS over ${c.result.ios} I/Os; ${iosPerThread} I/Os per thread for ${o.timeSec ?? 5} s`);
    }
    const before = target.counters();
    const r = await launchJob(gpu, target, { ...base, iosPerThread, readPercent, random, verify: o.verify === true });
    const after = target.counters();
    const ctl: Record<string, number> = {};
    for (const [k, v] of Object.entries(after)) ctl[k] = v - (before[k] ?? 0);
    if (ctl['emulatedP2pCopiesToDevice'] !== undefined && (ctl['emulatedP2pCopiesToDevice'] > 0 || ctl['emulatedP2pCopiesFromDevice']! > 0)) {
      notes.push(
        `emulated P2P (not P2P): the controller moved ${(ctl['emulatedP2pBytesToDevice']! / 2 ** 20).toFixed(1)} MiB into GPU memory through the copy engine (${ctl['emulatedP2pCopiesToDevice']} ranges, adjacent ones coalesced into one copy; ${ctl['emulatedP2pFences']} fences) and ${(ctl['emulatedP2pBytesFromDevice']! / 2 ** 20).toFixed(1)} MiB out of it in ${ctl['emulatedP2pCopiesFromDevice']}`,
      );
    }
    if (target.kind === 'emu' && /[?&]null=1(&|$)/.test(o.uri) && (o.placement ?? 'host') === 'host') {
      notes.push('null namespace: the controller moves no payload bytes; MiB/s is commands x I/O size');
    }
    if (r.result.timeouts > 0) notes.push(`${r.result.timeouts} I/Os timed out (deadline ${timeoutMs} ms per wait): the queue was abandoned`);
    return {
      initiator: 'gpu',
      target: target.kind,
      device: target.description,
      gpu: { name: gpu.info.name, computeCapability: gpu.info.computeCapability, multiprocessors: gpu.info.multiprocessors, pciBusId: gpu.info.pciBusId, clockKhz: gpu.info.clockKhz },
      mode: o.mode,
      rw: o.rw,
      bs,
      qd: o.qd,
      nqueues: o.nqueues,
      entries,
      grid: shape.grid,
      block: shape.block,
      threads: shape.threads,
      placement: target.placement,
      ios: r.result.ios,
      seconds: r.seconds,
      iops: r.result.ios / r.seconds,
      mibPerSec: r.result.bytes / r.seconds / 2 ** 20,
      errors: r.result.errors,
      timeouts: r.result.timeouts,
      mismatches: o.verify === true ? r.result.mismatches : null,
      firstError: r.result.errors > 0 ? r.result.firstStatus : null,
      latency: r.result.latency,
      controller: ctl,
      notes,
    };
  } finally {
    if (target !== null) await target.close().catch(() => undefined);
    gpu.close();
  }
}

export { stateLayout, HomiQueueState };
