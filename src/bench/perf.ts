/**
 * `homi perf`: open a target through the unified I/O interface (src/io) with the chosen backend, create queue
 * sets with preallocated buffers, run the engine, tear everything down. With threads > 1, each worker thread
 * opens the target itself and drives its own queue sets; the results are merged (IOPS summed, latency
 * histograms merged).
 */
import { Worker } from 'node:worker_threads';
import * as hdr from 'hdr-histogram-js';
import { openIo } from '../io/open.js';
import { parseTarget } from '../io/target.js';
import { resolveBackend } from '../io/open.js';
import type { BackendName, IoBuffer, IoDevice, IoQueue } from '../io/types.js';
import { DriverDevice } from '../io/driver.js';
import { parseDeviceUri } from '../device/uri.js';
import { openController } from '../device/controller.js';
import { provisionQueuePair, type ProvisionedQueuePair } from '../driver/attach.js';
import type { RawQueueGrant as QueuePairGrant } from '../ipc/raw-grant.js';
import { prpListPagesNeeded } from '../nvme/prp.js';
import { latencySummary, newLatencyHistogram, runEngine, threadConfig, type EngineBuffer, type EngineProgress, type EngineResult } from './engine.js';
import type { RwMode } from './workload.js';

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
  /** Worker threads, each with its own queue sets (default 1: the calling thread). */
  threads?: number;
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
}

/** Check the backend and its options against the target, without opening anything (for failing before a run). */
export function checkPerfOptions(o: PerfOptions): BackendName {
  const backend = resolveBackend(parseTarget(o.uri), { ...optsFor(o), ...(o.backend ? { backend: o.backend } : {}) });
  const threads = o.threads ?? 1;
  if (threads > 1 && (backend === 'driver' || backend === 'emu') && !o.uri.startsWith('emu://')) {
    throw new RangeError(
      `--threads ${threads}: the ${backend} backend on a pci: URI drives the controller from one thread (PCIe queue memory cannot be handed to worker threads yet); use --nqueues for more queue pairs`,
    );
  }
  return backend;
}

function optsFor(o: PerfOptions): { direct: boolean; fixedBuffers: boolean; hipri: boolean; nsid: number; maxQueues: number } {
  return { direct: o.direct ?? false, fixedBuffers: o.fixedBuffers ?? false, hipri: o.hipri ?? false, nsid: o.nsid, maxQueues: o.nqueues };
}

export async function runPerf(o: PerfOptions): Promise<PerfReport> {
  const backend = checkPerfOptions(o);
  if ((o.threads ?? 1) > 1) return backend === 'driver' || backend === 'emu' ? runAttachedThreads(o, backend) : runThreads(o, backend);
  return runSingle(o, backend);
}

async function runSingle(o: PerfOptions, backend: BackendName): Promise<PerfReport> {
  const dev: IoDevice = await openIo(o.uri, { backend, ...optsFor(o) });
  const buffers: IoBuffer[] = [];
  const queues: IoQueue[] = [];
  try {
    if (dev instanceof DriverDevice && dev.maxQueuePairs < o.nqueues) {
      throw new RangeError(`--nqueues ${o.nqueues}: the controller grants only ${dev.maxQueuePairs} I/O queue pairs`);
    }
    const g = dev.geometry;
    if (o.bs > g.maxTransferBytes) {
      throw new RangeError(`--bs ${o.bs} exceeds the ${dev instanceof DriverDevice ? "controller's" : "device's"} maximum transfer size of ${g.maxTransferBytes} bytes`);
    }
    if (o.bs % g.blockSize !== 0) throw new RangeError(`--bs ${o.bs} is not a multiple of the ${g.blockSize}-byte block size of ${o.uri}`);
    if (o.qd > g.maxQueueDepth) {
      throw new RangeError(`--qd ${o.qd} needs ${o.qd + 1} queue entries; the ${dev instanceof DriverDevice ? 'controller' : 'backend'} allows ${g.maxQueueDepth + 1}`);
    }
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
    const base = o.region?.base ?? 0;
    const blocks = o.region?.blocks ?? g.blocks - base;
    await o.beforeRun?.();
    const result = await runEngine(
      queues.map((q) => q.engineQueue),
      engineBuffers,
      {
        ...threadConfig(o, g, base, blocks, o.region?.index ?? 0),
        statusName: (s) => dev.statusName(s),
        exportHistogram: o.exportHistogram ?? false,
        ...(o.onProgress ? { onProgress: o.onProgress } : {}),
      },
    );
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
async function runThreads(o: PerfOptions, backend: BackendName): Promise<PerfReport> {
  const n = o.threads!;
  const { onProgress, beforeRun: _b, ...plain } = o;
  // --verify: each thread verifies its own disjoint region (perf-worker.ts); otherwise every thread spans the whole target.
  const regionOf = (i: number): PerfOptions['region'] => ({ base: 0, blocks: null, index: i, count: n });
  const results = await runWorkers<PerfReport>(
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
async function runAttachedThreads(o: PerfOptions, backend: BackendName): Promise<PerfReport> {
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
    // --verify: thread i owns blocks [i * span, (i + 1) * span); otherwise every thread spans the namespace.
    const span = o.verify ? Math.floor(ns.blocks / n) : ns.blocks;
    const { onProgress, beforeRun: _b, ...plain } = o;
    const results = await runWorkers<EngineResult>(
      n,
      new URL('./perf-attach-worker.js', import.meta.url),
      (i): AttachWorkerData => ({ opts: { ...plain, backend, threads: 1 }, grants: grants[i]!, fds: fds[i]!, region: { base: o.verify ? i * span : 0, blocks: span, index: i, count: n } }),
      onProgress,
    );
    const head = { device: o.uri, transport: transport.kind, backend, threads: 1, rw: o.rw, bs: o.bs, qd: o.qd, nqueues: o.nqueues, nsid: o.nsid, blockSize: ns.blockSize, model: ctrl.identity.model };
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

export function mergeReports(rs: PerfReport[], o: PerfOptions): PerfReport {
  const first = rs[0]!;
  const hist = newLatencyHistogram();
  for (const r of rs) {
    if (r.latencyHistogram) {
      const h = hdr.decodeFromCompressedBase64(r.latencyHistogram, 64, false);
      hist.add(h);
      h.destroy();
    }
  }
  const sum = (f: (r: PerfReport) => number): number => rs.reduce((a, r) => a + f(r), 0);
  const ios = sum((r) => r.ios);
  const errorsByStatus: Record<string, number> = {};
  for (const r of rs) for (const [k, v] of Object.entries(r.errorsByStatus)) errorsByStatus[k] = (errorsByStatus[k] ?? 0) + v;
  const merged: PerfReport = {
    ...first,
    threads: rs.length,
    ios,
    reads: sum((r) => r.reads),
    writes: sum((r) => r.writes),
    errors: sum((r) => r.errors),
    errorsByStatus,
    elapsedSec: Math.max(...rs.map((r) => r.elapsedSec)),
    iops: sum((r) => r.iops),
    bandwidthMiBps: sum((r) => r.bandwidthMiBps),
    latencyUs: latencySummary(hist),
    verified: sum((r) => r.verified),
    verifyErrors: sum((r) => r.verifyErrors),
    firstMismatch: rs.find((r) => r.firstMismatch !== null)?.firstMismatch ?? null,
    cpuNsPerIo: ios > 0 ? sum((r) => r.cpuNsPerIo * r.ios) / ios : 0,
    // Each thread measured the whole process over its own run window; the windows overlap, so take the largest.
    processCpuNsPerIo: ios > 0 ? Math.max(...rs.map((r) => r.processCpuNsPerIo * r.ios)) / ios : 0,
    prefilledBlocks: sum((r) => r.prefilledBlocks),
    perThread: rs.map((r) => ({ iops: r.iops, ios: r.ios, cpuNsPerIo: r.cpuNsPerIo, errors: r.errors })),
  };
  delete merged.latencyHistogram;
  hist.destroy();
  void o;
  return merged;
}
