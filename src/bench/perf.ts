/**
 * `homi perf`: open a target through the unified I/O interface (src/io) with the chosen backend, create queue
 * sets with preallocated buffers, run the engine, tear everything down. With threads > 1, each worker thread
 * opens the target itself and drives its own queue sets; the results are merged (IOPS summed, latency
 * histograms merged).
 *
 * File and block-device targets are dropped from the page cache before the run (fio's invalidate=1) unless
 * `invalidate` is false, and told the access pattern (fio's fadvise_hint: POSIX_FADV_RANDOM for random workloads,
 * which turns readahead off) unless `fadviseHint` is false; a run without O_DIRECT says it is buffered.
 */
import { Worker } from 'node:worker_threads';
import * as hdr from 'hdr-histogram-js';
import { openIo } from '../io/open.js';
import { parseTarget } from '../io/target.js';
import { resolveBackend } from '../io/open.js';
import type { BackendName, BufferPlacement, IoBuffer, IoDevice, IoQueue } from '../io/types.js';
import { DriverDevice } from '../io/driver.js';
import { parseDeviceUri } from '../device/uri.js';
import { openController } from '../device/controller.js';
import { provisionQueuePair, type ProvisionedQueuePair } from '../driver/attach.js';
import type { RawQueueGrant as QueuePairGrant } from '../ipc/raw-grant.js';
import { prpListPagesNeeded } from '../nvme/prp.js';
import { newLatencyHistogram, runEngine, threadConfig, type EngineBuffer, type EngineProgress, type EngineResult, type LatencyExport } from './engine.js';
import { DEFAULT_PERCENTILES, directionFigures, latencySummary } from './figures.js';
import { emptyMoments, mergeMoments, type LatencyMoments } from './latency.js';
import { homiVersion } from '../util/version.js';
import { isRandom, type RwMode } from './workload.js';

export interface PerfOptions {
  uri: string;
  rw: RwMode;
  bs: number;
  qd: number;
  nqueues: number;
  timeSec: number | null;
  ios: number | null;
  warmupSec: number;
  rwmixread: number;
  nsid: number;
  verify: boolean;
  verifySpan: number;
  seed: number;
  /** Backend (default by target: driver for emu:/pci:, io_uring for paths, io_uring_cmd for /dev/ng*). */
  backend?: BackendName;
  direct?: boolean;
  fixedBuffers?: boolean;
  hipri?: boolean;
  /** Where the data buffers live (default host memory); device memory needs the driver backend on pci:. */
  buffers?: BufferPlacement;
  /** Worker threads, each with its own queue sets (default 1: the calling thread). */
  threads?: number;
  /** Latency percentiles to report (default 50, 99, 99.9). */
  percentiles?: number[];
  /** Drop the target's page cache before the run (file and block-device targets; default true, as fio). */
  invalidate?: boolean;
  /** posix_fadvise the access pattern on file and block-device targets (default true, as fio's fadvise_hint). */
  fadviseHint?: boolean;
  /** First byte of the region the run uses (default 0), and its length (default: to the end of the target). */
  offset?: number;
  size?: number;
  onProgress?: (p: EngineProgress) => void;
  /** Internal (worker threads): the LBA region of this thread, a run barrier, histogram export. */
  region?: { base: number; blocks: number | null; index: number; count: number };
  beforeRun?: () => void | Promise<void>;
  exportHistogram?: boolean;
}

export interface PerfReport extends EngineResult {
  device: string;
  transport: string;
  backend: string;
  threads: number;
  rw: RwMode;
  bs: number;
  qd: number;
  nqueues: number;
  nsid: number;
  blockSize: number;
  model: string;
  /** Per-thread results when threads > 1. */
  perThread?: Array<{ iops: number; ios: number; cpuNsPerIo: number; errors: number }>;
  /** HOMI's version (package.json), when the run ended (unix seconds and ms, as fio; ISO 8601). */
  version: string;
  timestamp: number;
  timestamp_ms: number;
  time: string;
  /** Every option of the run, defaults filled in. */
  options: PerfRunOptions;
  /** Bytes [offset, offset + size) of the target that the run used. */
  region: { offset: number; size: number };
  /** The page cache is in the path (a file or block device without O_DIRECT). */
  buffered: boolean;
  /** The target's page cache was dropped before the run (and after the --verify prefill). */
  invalidated: boolean;
  /** What a reader of the figures should know ("buffered: page cache in the path", ...). */
  notes: string[];
  /** Where the data buffers were (host memory, or which device memory at which device address). */
  buffers: string;
}

/** The options of a run as reported: PerfOptions without callbacks and internals, every default filled in. */
export type PerfRunOptions = Omit<Required<PerfOptions>, 'onProgress' | 'region' | 'beforeRun' | 'exportHistogram' | 'offset' | 'size'> & {
  offset: number;
  size: number | null;
};

export const BUFFERED_NOTE = 'buffered: page cache in the path';

/**
 * The region of the target a run uses, in blocks: [offset, offset + size) of PerfOptions (bytes, each a multiple
 * of the block size), by default the whole target. RangeError when it does not fit.
 */
export function perfRegion(o: Pick<PerfOptions, 'uri' | 'offset' | 'size'>, g: { blockSize: number; blocks: number }): { base: number; blocks: number } {
  const capacity = g.blocks * g.blockSize;
  const offset = o.offset ?? 0;
  for (const [name, v] of [
    ['--offset', offset],
    ['--size', o.size ?? 0],
  ] as const) {
    if (v % g.blockSize !== 0) throw new RangeError(`${name} ${v} is not a multiple of the ${g.blockSize}-byte block size of ${o.uri}`);
  }
  if (offset >= capacity) throw new RangeError(`--offset ${offset} is not inside ${o.uri} (${capacity} bytes)`);
  const size = o.size ?? capacity - offset;
  if (size <= 0 || offset + size > capacity) throw new RangeError(`--offset ${offset} + --size ${size} run past the end of ${o.uri} (${capacity} bytes)`);
  return { base: offset / g.blockSize, blocks: size / g.blockSize };
}

/** Backends that perform each I/O at submission (one at a time per queue): a depth above 1 would change nothing. */
const SYNCHRONOUS_BACKENDS: ReadonlySet<BackendName> = new Set(['posix']);

/** Whether a backend performs each I/O at submission, so that --qd and --nqueues above 1 would be ignored. */
export function isSynchronousBackend(b: BackendName): boolean {
  return SYNCHRONOUS_BACKENDS.has(b);
}

/** Why --verify cannot work on a target (a null namespace keeps no data), or null. */
export function verifyImpossible(uri: string): string | null {
  const t = parseTarget(uri);
  if (t.kind !== 'device' || t.scheme !== 'emu') return null;
  const u = parseDeviceUri(uri);
  if (u.kind !== 'emu' || !u.nullMode) return null;
  return `'${uri}' is a null namespace (null=1): it keeps no data, so no read can return what was written; drop null=1 (a memory namespace) or --verify`;
}

/** Check the backend and its options against the target, without opening anything (for failing before a run). */
export function checkPerfOptions(o: PerfOptions): BackendName {
  const backend = resolveBackend(parseTarget(o.uri), { ...optsFor(o), ...(o.backend ? { backend: o.backend } : {}) });
  const threads = o.threads ?? 1;
  if (threads > 1 && o.buffers !== undefined && o.buffers.kind !== 'host') {
    throw new RangeError(`--threads ${threads}: device-memory buffers (--buffers ${o.buffers.kind}) are driven from one thread; use --nqueues for more queue pairs`);
  }
  if (threads > 1 && (backend === 'driver' || backend === 'emu') && !o.uri.startsWith('emu://')) {
    throw new RangeError(
      `--threads ${threads}: the ${backend} backend on a pci: URI drives the controller from one thread (PCIe queue memory cannot be handed to worker threads yet); use --nqueues for more queue pairs`,
    );
  }
  if (threads > 1 && (backend === 'driver' || backend === 'emu')) {
    const u = parseDeviceUri(o.uri);
    if (u.kind === 'emu' && u.maxQueuePairs < threads * o.nqueues) {
      throw new RangeError(`--threads ${threads} --nqueues ${o.nqueues}: needs ${threads * o.nqueues} I/O queue pairs; the controller grants only ${u.maxQueuePairs} (queues=N in the URI raises it)`);
    }
  }
  if (isSynchronousBackend(backend) && o.qd > 1) {
    throw new RangeError(`--qd ${o.qd}: the ${backend} backend is synchronous (one pread/pwrite at a time), so a depth above 1 would be ignored; use --qd 1, and --threads N for parallel I/O`);
  }
  if (isSynchronousBackend(backend) && o.nqueues > 1) {
    throw new RangeError(`--nqueues ${o.nqueues}: the ${backend} backend is synchronous, so queues of one thread run one I/O at a time; use --threads ${o.nqueues} instead`);
  }
  if (o.verify) {
    const why = verifyImpossible(o.uri);
    if (why !== null) throw new RangeError(`--verify: ${why}`);
  }
  return backend;
}

/**
 * Check a run's sizes against the opened device before any queue exists: the queue pairs it grants, the
 * maximum transfer, the block size, the queue depth, the region (--offset, --size), and the units --verify needs.
 */
export function checkGeometry(o: Pick<PerfOptions, 'uri' | 'bs' | 'qd' | 'nqueues' | 'verify' | 'verifySpan' | 'threads' | 'offset' | 'size'>, dev: IoDevice): void {
  const driver = dev instanceof DriverDevice;
  if (driver && (o.threads ?? 1) === 1 && dev.maxQueuePairs < o.nqueues) {
    throw new RangeError(`--nqueues ${o.nqueues}: the controller grants only ${dev.maxQueuePairs} I/O queue pairs`);
  }
  const g = dev.geometry;
  if (o.bs > g.maxTransferBytes) {
    throw new RangeError(`--bs ${o.bs} exceeds the ${driver ? "controller's" : "device's"} maximum transfer size of ${g.maxTransferBytes} bytes`);
  }
  if (o.bs % g.blockSize !== 0) throw new RangeError(`--bs ${o.bs} is not a multiple of the ${g.blockSize}-byte block size of ${o.uri}`);
  if (o.qd > g.maxQueueDepth) {
    throw new RangeError(`--qd ${o.qd} needs ${o.qd + 1} queue entries; the ${driver ? 'controller' : 'backend'} allows ${g.maxQueueDepth + 1}`);
  }
  // The region the run uses (--offset, --size); with threads, --verify gives each thread its own part of it.
  const region = perfRegion(o, g);
  if (o.bs > region.blocks * g.blockSize) throw new RangeError(`--bs ${o.bs}: the region the run uses holds only ${region.blocks * g.blockSize} bytes`);
  if (o.verify) {
    const blocks = Math.floor(region.blocks / (o.threads ?? 1));
    const units = Math.floor(Math.min(blocks, Math.floor(o.verifySpan / g.blockSize)) / (o.bs / g.blockSize));
    const slots = o.nqueues * o.qd;
    if (units < 2 * slots) throw new RangeError(`--verify needs at least ${2 * slots} distinct ${o.bs}-byte units in its span; have ${units} (raise --verify-span)`);
  }
}

function optsFor(o: PerfOptions): { direct: boolean; fixedBuffers: boolean; hipri: boolean; nsid: number; maxQueues: number; buffers?: BufferPlacement } {
  return { direct: o.direct ?? false, fixedBuffers: o.fixedBuffers ?? false, hipri: o.hipri ?? false, nsid: o.nsid, maxQueues: o.nqueues, ...(o.buffers ? { buffers: o.buffers } : {}) };
}

export async function runPerf(o: PerfOptions): Promise<PerfReport> {
  const backend = checkPerfOptions(o);
  const r = (o.threads ?? 1) > 1 ? await (backend === 'driver' || backend === 'emu' ? runAttachedThreads(o, backend) : runThreads(o, backend)) : await runSingle(o, backend);
  const now = Date.now();
  return {
    ...r,
    buffers: r.buffers ?? 'host memory',
    version: homiVersion(),
    timestamp: Math.floor(now / 1000),
    timestamp_ms: now,
    time: new Date(now).toISOString(),
    options: runOptions(o, backend),
  };
}

function runOptions(o: PerfOptions, backend: BackendName): PerfRunOptions {
  return {
    uri: o.uri,
    rw: o.rw,
    bs: o.bs,
    qd: o.qd,
    nqueues: o.nqueues,
    threads: o.threads ?? 1,
    timeSec: o.timeSec,
    ios: o.ios,
    warmupSec: o.warmupSec,
    rwmixread: o.rwmixread,
    nsid: o.nsid,
    verify: o.verify,
    verifySpan: o.verifySpan,
    seed: o.seed,
    backend,
    direct: o.direct ?? false,
    fixedBuffers: o.fixedBuffers ?? false,
    hipri: o.hipri ?? false,
    buffers: o.buffers ?? { kind: 'host' },
    percentiles: o.percentiles ?? [...DEFAULT_PERCENTILES],
    invalidate: o.invalidate ?? true,
    fadviseHint: o.fadviseHint ?? true,
    offset: o.offset ?? 0,
    size: o.size ?? null,
  };
}

/** What runSingle reports before runPerf adds the version, the time and the options. */
type RunReport = Omit<PerfReport, 'version' | 'timestamp' | 'timestamp_ms' | 'time' | 'options' | 'buffers'> & { buffers?: string };

/** Drop the page cache of blocks [base, base + blocks) of a kernel-path device; the notes it gives. */
function invalidate(dev: IoDevice, base: number, blocks: number): string[] {
  const bs = dev.geometry.blockSize;
  const note = dev.invalidateCache?.(base * bs, blocks * bs) ?? null;
  return note === null ? [] : [note];
}

async function runSingle(o: PerfOptions, backend: BackendName): Promise<RunReport> {
  const dev: IoDevice = await openIo(o.uri, { backend, ...optsFor(o) });
  const buffers: IoBuffer[] = [];
  const queues: IoQueue[] = [];
  try {
    checkGeometry({ ...o, threads: 1 }, dev);
    const g = dev.geometry;
    const engineBuffers: EngineBuffer[][] = [];
    for (let q = 0; q < o.nqueues; q++) {
      const buf = dev.allocBuffer(o.qd * o.bs);
      buffers.push(buf);
      const slots: EngineBuffer[] = [];
      for (let s = 0; s < o.qd; s++) {
        const sl = buf.slice(s * o.bs, o.bs);
        slots.push({ words: new Uint32Array(sl.bytes.buffer, sl.bytes.byteOffset, o.bs >>> 2), prp1: sl.h1, prp2: sl.h2 });
      }
      engineBuffers.push(slots);
    }
    // Queues after buffers: io_uring registers the buffers that exist when a ring is set up.
    for (let q = 0; q < o.nqueues; q++) queues.push(await dev.createQueue(o.qd));
    // The user's region (--offset, --size), and this thread's part of it (o.region, relative to it).
    const user = perfRegion(o, g);
    const base = user.base + (o.region?.base ?? 0);
    const blocks = o.region?.blocks ?? user.blocks - (o.region?.base ?? 0);
    const io: IoDevice = dev;
    const buffered = io.buffered === true;
    const canInvalidate = (o.invalidate ?? true) && io.invalidateCache !== undefined;
    const notes = buffered ? [BUFFERED_NOTE] : [];
    if (canInvalidate) notes.push(...invalidate(dev, base, blocks));
    if ((o.fadviseHint ?? true) && io.adviseAccess !== undefined) {
      const pattern = isRandom(o.rw) ? 'random' : 'sequential';
      io.adviseAccess(pattern);
      if (buffered) notes.push(`access pattern told to the kernel: POSIX_FADV_${pattern.toUpperCase()}${pattern === 'random' ? ', no readahead' : ''} (--fadvise_hint 0: the kernel's default)`);
    }
    await o.beforeRun?.();
    const result = await runEngine(
      queues.map((q) => q.engineQueue),
      engineBuffers,
      {
        ...threadConfig(o, g, base, blocks, o.region?.index ?? 0),
        statusName: (s) => dev.statusName(s),
        exportHistogram: o.exportHistogram ?? false,
        ...(o.onProgress ? { onProgress: o.onProgress } : {}),
        ...(canInvalidate ? { afterPrefill: () => void invalidate(dev, base, blocks) } : {}),
      },
    );
    if (canInvalidate) notes.push('page cache of the target dropped before the run (--invalidate 0 keeps it)');
    else if (buffered) notes.push('page cache kept (--invalidate 0): reads may come from memory, not from the device');
    return {
      device: o.uri,
      transport: dev.transport,
      backend: dev.backend,
      threads: 1,
      rw: o.rw,
      bs: o.bs,
      qd: o.qd,
      nqueues: o.nqueues,
      nsid: g.nsid,
      blockSize: g.blockSize,
      model: dev.model,
      ...result,
      region: { offset: user.base * g.blockSize, size: user.blocks * g.blockSize },
      buffered,
      invalidated: canInvalidate,
      notes,
      buffers: dev.bufferPlacement ?? 'host memory',
    };
  } finally {
    try {
      for (const q of queues) await q.close();
    } finally {
      await dev.close();
    }
  }
}

type WorkerMsg<R> = { type: 'ready' } | { type: 'progress'; p: EngineProgress } | { type: 'result'; r: R } | { type: 'error'; name: string; message: string };

/**
 * Start n worker threads running `script` (workerDataOf(i) each, plus the shared gate), release them together
 * once all have posted 'ready', forward merged progress, and collect one result per thread.
 */
async function runWorkers<R>(n: number, script: URL, workerDataOf: (i: number) => object, onProgress?: (p: EngineProgress) => void): Promise<R[]> {
  const gate = new Int32Array(new SharedArrayBuffer(4));
  const workers: Worker[] = [];
  const progress: EngineProgress[] = [];
  let ready = 0;
  return new Promise<R[]>((resolve, reject) => {
    const out: R[] = new Array(n);
    let done = 0;
    let failed = false;
    const fail = (e: Error): void => {
      if (failed) return;
      failed = true;
      // Wait for every worker to be gone before rejecting: the caller may free what they use.
      void Promise.allSettled(workers.map((w) => w.terminate())).then(() => reject(e));
    };
    for (let i = 0; i < n; i++) {
      const w = new Worker(script, { workerData: { ...workerDataOf(i), gate } });
      workers.push(w);
      w.on('message', (m: WorkerMsg<R>) => {
        if (m.type === 'ready') {
          if (++ready === n) {
            Atomics.store(gate, 0, 1);
            Atomics.notify(gate, 0);
          }
        } else if (m.type === 'progress') {
          progress[i] = m.p;
          if (onProgress && i === 0) {
            const all = progress.filter(Boolean);
            onProgress({ ...m.p, ios: all.reduce((a, p) => a + p.ios, 0), iops: all.reduce((a, p) => a + p.iops, 0), errors: all.reduce((a, p) => a + p.errors, 0) });
          }
        } else if (m.type === 'result') {
          out[i] = m.r;
          if (++done === n) resolve(out);
        } else {
          const e = m.name === 'RangeError' ? new RangeError(m.message) : new Error(m.message);
          e.name = m.name;
          fail(e);
        }
      });
      w.on('error', (e) => fail(e));
      w.on('exit', (code) => {
        if (code !== 0 && !failed && done < n) fail(new Error(`perf worker ${i} exited with code ${code}`));
      });
    }
  });
}

/** Worker threads: each opens the target and runs one single-thread perf; a shared word starts them together. */
async function runThreads(o: PerfOptions, backend: BackendName): Promise<RunReport> {
  const n = o.threads!;
  const { onProgress, beforeRun: _b, ...plain } = o;
  // --verify: each thread verifies its own disjoint region (perf-worker.ts); otherwise every thread spans the whole target.
  const regionOf = (i: number): PerfOptions['region'] => ({ base: 0, blocks: null, index: i, count: n });
  const results = await runWorkers<RunReport>(
    n,
    new URL('./perf-worker.js', import.meta.url),
    (i) => ({ opts: { ...plain, backend, threads: 1, region: regionOf(i), exportHistogram: true }, verifySplit: o.verify }),
    onProgress,
  );
  return mergeReports(results, o);
}

/** What the calling thread hands each attach worker (src/bench/perf-attach-worker.ts). */
export interface AttachWorkerData {
  opts: Omit<PerfOptions, 'onProgress' | 'beforeRun'>;
  /** One grant per queue pair of this thread, with its fds (process-wide, owned by the calling thread). */
  grants: QueuePairGrant[];
  fds: number[][];
  region: { base: number; blocks: number; index: number; count: number };
}

/**
 * The driver backend with threads > 1 (emu:// only): this thread brings up a memfd-mode embedded controller,
 * provisions --nqueues queue pairs per worker thread (src/driver/attach.ts), and each worker attaches its
 * queue pairs and runs the engine over them; then every queue pair is reclaimed and the controller closed.
 */
async function runAttachedThreads(o: PerfOptions, backend: BackendName): Promise<RunReport> {
  const n = o.threads!;
  const u = parseDeviceUri(o.uri);
  if (u.kind !== 'emu') throw new RangeError(`--threads ${n}: the ${backend} backend needs an emu:// URI for worker threads`);
  const opened = await openController(u, { ioQueues: n * o.nqueues, sharedMemory: 'memfd' });
  const ctrl = opened.controller;
  const transport = opened.transport;
  const provisioned: ProvisionedQueuePair[] = [];
  try {
    const ns = ctrl.namespace(o.nsid);
    if (ctrl.maxIoQueuePairs < n * o.nqueues) {
      throw new RangeError(`--threads ${n} --nqueues ${o.nqueues}: needs ${n * o.nqueues} I/O queue pairs; the controller grants only ${ctrl.maxIoQueuePairs}`);
    }
    const mdts = Number.isFinite(ctrl.identity.mdts) ? ctrl.identity.mdts : 65536 * ns.blockSize;
    const maxTransfer = Math.min(mdts, 65536 * ns.blockSize);
    if (o.bs > maxTransfer) throw new RangeError(`--bs ${o.bs} exceeds the controller's maximum transfer size of ${maxTransfer} bytes`);
    if (o.bs % ns.blockSize !== 0) throw new RangeError(`--bs ${o.bs} is not a multiple of the ${ns.blockSize}-byte block size of ${o.uri}`);
    if (o.qd + 1 > ctrl.cap.maxQueueEntries) throw new RangeError(`--qd ${o.qd} needs ${o.qd + 1} queue entries; the controller allows ${ctrl.cap.maxQueueEntries}`);
    // Data region per queue pair: qd slots of bs bytes (one page-aligned buffer) plus each slot's PRP list pages.
    const page = transport.dma.pageSize;
    let listPages = 0;
    for (let s = 0; s < o.qd; s++) listPages += prpListPagesNeeded((s * o.bs) % page, o.bs, page);
    const dataBytes = Math.ceil((o.qd * o.bs) / page) * page + listPages * page;
    const grants: QueuePairGrant[][] = [];
    const fds: number[][][] = [];
    for (let i = 0; i < n; i++) {
      grants.push([]);
      fds.push([]);
      for (let q = 0; q < o.nqueues; q++) {
        const p = await provisionQueuePair(ctrl, transport, { entries: o.qd + 1, dataBytes, nsid: o.nsid });
        provisioned.push(p);
        grants[i]!.push(p.grant);
        fds[i]!.push(p.fds);
      }
    }
    // --verify: thread i owns blocks [i * span, (i + 1) * span) of the region; otherwise every thread spans it.
    const user = perfRegion(o, ns);
    const span = o.verify ? Math.floor(user.blocks / n) : user.blocks;
    const { onProgress, beforeRun: _b, ...plain } = o;
    const results = await runWorkers<EngineResult>(
      n,
      new URL('./perf-attach-worker.js', import.meta.url),
      (i): AttachWorkerData => ({
        opts: { ...plain, backend, threads: 1 },
        grants: grants[i]!,
        fds: fds[i]!,
        region: { base: user.base + (o.verify ? i * span : 0), blocks: span, index: i, count: n },
      }),
      onProgress,
    );
    const head = {
      device: o.uri,
      transport: transport.kind,
      backend,
      threads: 1,
      rw: o.rw,
      bs: o.bs,
      qd: o.qd,
      nqueues: o.nqueues,
      nsid: o.nsid,
      blockSize: ns.blockSize,
      model: ctrl.identity.model,
      region: { offset: user.base * ns.blockSize, size: user.blocks * ns.blockSize },
      buffered: false,
      invalidated: false,
      notes: [],
    };
    return mergeReports(
      results.map((r) => ({ ...head, ...r })),
      o,
    );
  } finally {
    try {
      for (const p of provisioned) await p.reclaim();
    } finally {
      await opened.close();
    }
  }
}

/** Merge one direction's histograms and moments from every thread (each thread exported them). */
function mergeDirection(parts: Array<LatencyExport | undefined>): { hist: hdr.Histogram; moments: LatencyMoments } {
  const hist = newLatencyHistogram();
  let moments = emptyMoments();
  for (const p of parts) {
    if (!p) continue;
    const h = hdr.decodeFromCompressedBase64(p.histogram, 64, false);
    hist.add(h);
    h.destroy();
    moments = mergeMoments(moments, p.moments);
  }
  return { hist, moments };
}

export function mergeReports<R extends RunReport>(rs: R[], o: PerfOptions): R {
  const first = rs[0]!;
  const sum = (f: (r: R) => number): number => rs.reduce((a, r) => a + f(r), 0);
  const ios = sum((r) => r.ios);
  const reads = sum((r) => r.reads);
  const writes = sum((r) => r.writes);
  const elapsedSec = Math.max(...rs.map((r) => r.elapsedSec));
  const errorsByStatus: Record<string, number> = {};
  for (const r of rs) for (const [k, v] of Object.entries(r.errorsByStatus)) errorsByStatus[k] = (errorsByStatus[k] ?? 0) + v;
  const rd = mergeDirection(rs.map((r) => r.latencyExport?.read));
  const wr = mergeDirection(rs.map((r) => r.latencyExport?.write));
  const all = newLatencyHistogram();
  all.add(rd.hist);
  all.add(wr.hist);
  const percentiles = o.percentiles ?? DEFAULT_PERCENTILES;
  // Rates per direction: each thread's own rate, summed (as the totals: threads ran side by side).
  const rate = (dir: 'read' | 'write', figures: ReturnType<typeof directionFigures>): ReturnType<typeof directionFigures> => ({
    ...figures,
    iops: sum((r) => r[dir].iops),
    bandwidthMiBps: sum((r) => r[dir].bandwidthMiBps),
    bw_bytes: sum((r) => r[dir].bw_bytes),
    bw: sum((r) => r[dir].bw),
  });
  const merged: R = {
    ...first,
    threads: rs.length,
    ios,
    reads,
    writes,
    errors: sum((r) => r.errors),
    errorsByStatus,
    elapsedSec,
    iops: sum((r) => r.iops),
    bandwidthMiBps: sum((r) => r.bandwidthMiBps),
    latencyUs: latencySummary(all, mergeMoments(rd.moments, wr.moments), percentiles),
    read: rate('read', directionFigures(reads, first.bs, elapsedSec, rd.hist, rd.moments, percentiles)),
    write: rate('write', directionFigures(writes, first.bs, elapsedSec, wr.hist, wr.moments, percentiles)),
    verified: sum((r) => r.verified),
    verifyErrors: sum((r) => r.verifyErrors),
    firstMismatch: rs.find((r) => r.firstMismatch !== null)?.firstMismatch ?? null,
    cpuNsPerIo: ios > 0 ? sum((r) => r.cpuNsPerIo * r.ios) / ios : 0,
    // Each thread measured the whole process over its own run window; the windows overlap, so take the largest.
    processCpuNsPerIo: ios > 0 ? Math.max(...rs.map((r) => r.processCpuNsPerIo * r.ios)) / ios : 0,
    prefilledBlocks: sum((r) => r.prefilledBlocks),
    perThread: rs.map((r) => ({ iops: r.iops, ios: r.ios, cpuNsPerIo: r.cpuNsPerIo, errors: r.errors })),
  };
  delete merged.latencyExport;
  for (const h of [rd.hist, wr.hist, all]) h.destroy();
  return merged;
}
