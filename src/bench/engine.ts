/**
 * The benchmark engine: drives queues (the queue contract, src/queue/contract.ts) from one thread with a closed
 * loop of fixed depth per queue. It has to cost less than the driver it measures, so the loop allocates nothing
 * per I/O and calls nothing it need not: slots, buffers and data pointers are prepared up front; completions come
 * through one handler (a lean one without --verify); the clock is read once per loop iteration that completed
 * something, and that one reading stamps both the completions it ends and the submissions it starts; latencies
 * go into a flat count array with the HDR histogram's buckets (./latency.ts), moved into the HDR histogram once
 * per run. Per-I/O state lives in typed arrays, never in captured variables that would box a double.
 */
import * as hdr from 'hdr-histogram-js';
import { NvmOpcode } from '../nvme/opcodes.js';
import { statusName } from '../nvme/status.js';
import type { CompletionHandler, QueueContract } from '../queue/contract.js';
import { threadCpuNs, processCpuNs } from '../util/cputime.js';
import { DEFAULT_PERCENTILES, directionFigures, latencySummary, type DirectionFigures, type LatencySummary } from './figures.js';
import { LatencyRecorder, mergeMoments, newLatencyHistogram, type LatencyMoments } from './latency.js';
import { checkPattern, describeMismatch, fillPattern, type PatternMismatch } from './pattern.js';
import { isRandom, readPercent, Rng, type RwMode } from './workload.js';

export { newLatencyHistogram } from './latency.js';
export { latencySummary, type LatencySummary } from './figures.js';

/** The queues the engine drives: the queue contract. */
export type EngineQueue = QueueContract;

/** One I/O buffer with its prebuilt data pointer. */
export interface EngineBuffer {
  /** CPU view, 4-byte aligned, exactly bs bytes. */
  words: Uint32Array;
  prp1: number;
  prp2: number;
}

export interface EngineConfig {
  rw: RwMode;
  bs: number;
  qd: number;
  rwmixread: number;
  nsid: number;
  blockSize: number;
  /** Namespace size in blocks. */
  blocks: number;
  timeSec: number | null;
  ios: number | null;
  warmupSec: number;
  verify: boolean;
  /** Bytes of the namespace used when verifying (prefilled first). */
  verifySpan: number;
  seed: number;
  onProgress?: (p: EngineProgress) => void;
  progressIntervalMs?: number;
  /** Names a non-zero completion status for errorsByStatus (default: statusName, src/nvme/status.ts). */
  statusName?: (status: number) => string;
  /** First LBA of the region this engine works on (default 0; threads of one run get disjoint regions). */
  baseLba?: number;
  /** Return the latency histograms and moments per direction (for merging the results of several threads). */
  exportHistogram?: boolean;
  /** Percentiles to report (default DEFAULT_PERCENTILES, src/bench/figures.ts). */
  percentiles?: readonly number[];
  /** Called once the --verify prefill has written its span, before the warm-up (e.g. to drop the page cache). */
  afterPrefill?: () => void;
}

export interface EngineProgress {
  phase: 'prefill' | 'warmup' | 'run' | 'drain';
  elapsedSec: number;
  totalSec: number | null;
  ios: number;
  totalIos: number | null;
  iops: number;
  errors: number;
}

/** What a thread hands the merge for one direction: its latency histogram (ns, compressed base64) and exact moments. */
export interface LatencyExport {
  histogram: string;
  moments: LatencyMoments;
}

/** The settings of a run that are the same for every thread of it. */
export type EngineWorkload = Pick<EngineConfig, 'rw' | 'bs' | 'qd' | 'rwmixread' | 'timeSec' | 'ios' | 'warmupSec' | 'verify' | 'verifySpan' | 'seed' | 'percentiles'>;

/** EngineConfig for thread `thread` of a run, working on LBAs [baseLba, baseLba + blocks) of namespace `ns`. */
export function threadConfig(w: EngineWorkload, ns: { nsid: number; blockSize: number }, baseLba: number, blocks: number, thread: number): EngineConfig {
  return {
    rw: w.rw,
    bs: w.bs,
    qd: w.qd,
    rwmixread: w.rwmixread,
    nsid: ns.nsid,
    blockSize: ns.blockSize,
    blocks,
    baseLba,
    timeSec: w.timeSec,
    ios: w.ios,
    warmupSec: w.warmupSec,
    verify: w.verify,
    verifySpan: w.verifySpan,
    seed: w.seed + thread,
    ...(w.percentiles !== undefined ? { percentiles: w.percentiles } : {}),
  };
}

export interface EngineResult {
  ios: number;
  reads: number;
  writes: number;
  errors: number;
  /** Error counts by status name. */
  errorsByStatus: Record<string, number>;
  elapsedSec: number;
  iops: number;
  bandwidthMiBps: number;
  /** Latency of every I/O of the run (both directions). */
  latencyUs: LatencySummary;
  /** Reads and writes apart (as fio's read and write sections; a direction without I/O has zeros). */
  read: DirectionFigures;
  write: DirectionFigures;
  verified: number;
  verifyErrors: number;
  firstMismatch: PatternMismatch | null;
  /** CPU time of the driver thread per I/O, ns (this thread only where the OS tells per-thread time). */
  cpuNsPerIo: number;
  /** CPU time of the whole process per I/O (includes an in-process emulated controller), ns. */
  processCpuNsPerIo: number;
  prefilledBlocks: number;
  /** Per direction, the latency histogram and moments, when cfg.exportHistogram. */
  latencyExport?: { read: LatencyExport; write: LatencyExport };
}

const UNKNOWN_GEN = 0xffffffff;
/**
 * With I/O outstanding and nothing completing for this long, the loop starts giving the CPU away (YIELD_MS at a
 * time, every 64 empty polls) until something completes: on a machine where the device (the embedded
 * controller's thread) shares a core with this loop, pure spinning starves the device; on a free core this
 * point is never reached. The same rule as the lean client of homid-bench.ts (spin 100 us, then 20 us naps).
 */
const SPIN_BEFORE_YIELD_MS = 0.1;
/** How long a yield lasts, in ms (Atomics.wait timeout). */
const YIELD_MS = 0.02;
const yieldCell = new Int32Array(new SharedArrayBuffer(4));
const DRAIN_TIMEOUT_MS = 30_000;

// Indices of the engine's counters (a Float64Array: counts may pass 2^31 in a long run, and a captured variable
// holding a double would be boxed on every update).
const C_DONE = 0;
const C_WRITES = 1;
const C_ERRORS = 2;
const C_VERIFIED = 3;
const C_VERIFY_ERRORS = 4;
const C_COUNT = 5;

// Indices of a phase's state (Float64Array): the clock and the last time something completed, in ms.
const P_NOW = 0;
const P_LAST_DONE = 1;

export async function runEngine(queues: QueueContract[], buffers: EngineBuffer[][], cfg: EngineConfig): Promise<EngineResult> {
  const nq = queues.length;
  const qd = cfg.qd;
  if (nq < 1) throw new RangeError('at least one queue is needed');
  for (let q = 0; q < nq; q++) {
    if (queues[q]!.capacity < qd) throw new RangeError(`queue depth ${qd} exceeds queue ${q}'s capacity ${queues[q]!.capacity}`);
    if (buffers[q]!.length < qd) throw new RangeError(`queue ${q} has ${buffers[q]!.length} buffers for depth ${qd}`);
  }
  if (cfg.bs % cfg.blockSize !== 0 || cfg.bs < cfg.blockSize) {
    throw new RangeError(`block size of the I/O (${cfg.bs}) must be a multiple of the namespace block size ${cfg.blockSize}`);
  }
  const nlb = cfg.bs / cfg.blockSize;
  const spanBlocks = cfg.verify ? Math.min(cfg.blocks, Math.floor(cfg.verifySpan / cfg.blockSize)) : cfg.blocks;
  // cfg.blocks counts from cfg.baseLba.
  const units = Math.floor(spanBlocks / nlb);
  if (units < 1) throw new RangeError(`the namespace (${cfg.blocks} blocks) is smaller than one ${cfg.bs}-byte I/O`);
  const slotsTotal = nq * qd;
  if (cfg.verify && units < 2 * slotsTotal) {
    throw new RangeError(`--verify needs at least ${2 * slotsTotal} distinct ${cfg.bs}-byte units in its span; have ${units}`);
  }

  // Per-slot state (tag = q * qd + slot).
  const slotUnit = new Float64Array(slotsTotal);
  const slotWrite = new Uint8Array(slotsTotal);
  const slotStart = new Float64Array(slotsTotal);
  const slotGen = new Uint32Array(slotsTotal);
  const freeStack = new Int32Array(slotsTotal);
  const freeTop = new Int32Array(nq);
  for (let q = 0; q < nq; q++) {
    for (let s = 0; s < qd; s++) freeStack[q * qd + s] = q * qd + s;
    freeTop[q] = qd;
  }
  const unitGen = cfg.verify ? new Uint32Array(units) : new Uint32Array(0);
  const unitBusy = cfg.verify ? new Uint8Array(units) : new Uint8Array(0);
  const slotWords: Uint32Array[] = [];
  // Data pointers in arrays of tagged values (the array starts with a non-number, so V8 keeps generic elements):
  // an IOVA above 2^30 read from a Float64Array or a double array is boxed anew for every submitIo call that is
  // not inlined (measured: one allocation per I/O); here each is boxed once, up front.
  const slotPrp1: number[] = new Array<number>(slotsTotal).fill(null as unknown as number);
  const slotPrp2: number[] = new Array<number>(slotsTotal).fill(null as unknown as number);
  for (let q = 0; q < nq; q++) {
    for (let s = 0; s < qd; s++) {
      const b = buffers[q]![s]!;
      slotWords.push(b.words);
      slotPrp1[q * qd + s] = b.prp1;
      slotPrp2[q * qd + s] = b.prp2;
    }
  }

  // Lane 0: reads, lane 1: writes (a slot's slotWrite value picks its lane).
  const lat = new LatencyRecorder(2);
  const rng = new Rng(cfg.seed);
  const nsid = cfg.nsid;
  const verify = cfg.verify;
  const blockSize = cfg.blockSize;
  const base = cfg.baseLba ?? 0;
  const nameOf = cfg.statusName ?? statusName;

  // Counters (reset at the end of prefill and warm-up).
  const C = new Float64Array(C_COUNT);
  let firstMismatch: PatternMismatch | null = null;
  const errorsByStatus: Record<string, number> = {};
  let recordLatency = false;
  // Tags completed in the current loop iteration; their latency is recorded after one clock read.
  const doneTags = new Int32Array(slotsTotal);
  let nDone = 0;

  /** A failed command (off the fast path). */
  const noteError = (tag: number, status: number): void => {
    C[C_ERRORS]++;
    const name = nameOf(status);
    errorsByStatus[name] = (errorsByStatus[name] ?? 0) + 1;
    if (verify && slotWrite[tag] === 1) unitGen[slotUnit[tag]!] = UNKNOWN_GEN;
  };

  /** The completion handler without --verify: count, free the slot, remember the tag for its latency. */
  const onComplete: CompletionHandler = (tag, status) => {
    if (status !== 0) noteError(tag, status);
    if (slotWrite[tag] === 1) C[C_WRITES]++;
    doneTags[nDone++] = tag;
    const q = (tag / qd) | 0;
    freeStack[q * qd + freeTop[q]!] = tag;
    freeTop[q]!++;
  };

  /** The completion handler with --verify: also track each unit's generation and check what reads return. */
  const onCompleteVerify: CompletionHandler = (tag, status) => {
    const unit = slotUnit[tag]!;
    const isWrite = slotWrite[tag] === 1;
    if (status !== 0) noteError(tag, status);
    else if (isWrite) {
      unitGen[unit] = slotGen[tag]!;
    } else {
      const gen = slotGen[tag]!;
      if (gen !== UNKNOWN_GEN && gen !== 0) {
        const bad = checkPattern(slotWords[tag]!, 0, base + unit * nlb, nlb, blockSize, gen, nsid);
        if (bad < 0) C[C_VERIFIED] += nlb;
        else {
          C[C_VERIFY_ERRORS]++;
          if (firstMismatch === null) firstMismatch = describeMismatch(slotWords[tag]!, 0, base + unit * nlb, bad, blockSize, gen);
        }
      }
    }
    unitBusy[unit] = 0;
    if (isWrite) C[C_WRITES]++;
    doneTags[nDone++] = tag;
    const q = (tag / qd) | 0;
    freeStack[q * qd + freeTop[q]!] = tag;
    freeTop[q]!++;
  };
  const handler = verify ? onCompleteVerify : onComplete;

  const random = isRandom(cfg.rw);
  const readPct = readPercent(cfg.rw, cfg.rwmixread);
  const P = new Float64Array(2);
  P[P_NOW] = performance.now();

  /** Where a phase stands between two runs of its loop (the loop returns to let the event loop in). */
  interface PhaseState {
    forceWrite: boolean;
    sequential: boolean;
    limitIos: number;
    limitMs: number;
    t0: number;
    issued: number;
    seqCursor: number;
    stop: boolean;
    idle: number;
    iter: number;
    nextProgress: number;
  }

  /**
   * The closed loop of a phase, run until the phase is over (returns true) or a progress report is due (false).
   * Fill every queue's free slots, ring each queue once, poll each queue once; stamp what completed.
   */
  const loop = (st: PhaseState): boolean => {
    const { forceWrite, limitIos, limitMs, t0 } = st;
    const sequential = st.sequential || !random;
    let issued = st.issued;
    let seqCursor = st.seqCursor;
    let stop = st.stop;
    let idle = st.idle;
    let iter = st.iter;
    let now = P[P_NOW]!;
    let finished = false;
    for (;;) {
      if (!stop && ((limitMs > 0 && now - t0 >= limitMs) || (limitIos > 0 && issued >= limitIos))) stop = true;
      if (!stop) {
        for (let q = 0; q < nq; q++) {
          const qp = queues[q]!;
          let top = freeTop[q]!;
          const fbase = q * qd;
          while (top > 0 && (limitIos === 0 || issued < limitIos)) {
            const tag = freeStack[fbase + top - 1]!;
            let unit: number;
            if (sequential) {
              unit = seqCursor;
              seqCursor = seqCursor + 1 >= units ? 0 : seqCursor + 1;
            } else unit = rng.below(units);
            const write = forceWrite || (readPct < 100 && (readPct === 0 || rng.below(100) >= readPct));
            if (verify) {
              let tries = 0;
              while (unitBusy[unit] === 1 && tries < units) {
                unit = unit + 1 >= units ? 0 : unit + 1;
                tries++;
              }
              unitBusy[unit] = 1;
              if (write) {
                const g = unitGen[unit] === UNKNOWN_GEN ? 1 : unitGen[unit]! + 1;
                slotGen[tag] = g;
                fillPattern(slotWords[tag]!, 0, base + unit * nlb, nlb, blockSize, g, nsid);
              } else slotGen[tag] = unitGen[unit]!;
            }
            if (qp.submitIo(write ? NvmOpcode.Write : NvmOpcode.Read, nsid, base + unit * nlb, nlb, slotPrp1[tag]!, slotPrp2[tag]!, tag) < 0) {
              if (verify) unitBusy[unit] = 0;
              break;
            }
            slotUnit[tag] = unit;
            slotWrite[tag] = write ? 1 : 0;
            slotStart[tag] = now;
            top--;
            issued++;
          }
          freeTop[q] = top;
          qp.ring();
        }
      }
      nDone = 0;
      let inflight = 0;
      for (let q = 0; q < nq; q++) {
        const qp = queues[q]!;
        qp.poll(handler);
        inflight += qp.outstanding;
      }
      // The clock is read once per iteration that completed something (it stamps those completions and the
      // submissions of the next iteration), and every 64 empty iterations otherwise.
      if (nDone > 0) {
        now = performance.now();
        P[P_NOW] = now;
        P[P_LAST_DONE] = now;
        C[C_DONE] += nDone;
        if (recordLatency) lat.recordBatch(P, P_NOW, slotStart, doneTags, nDone, slotWrite);
        idle = 0;
      } else if ((++idle & 63) === 0) {
        now = performance.now();
        if (inflight > 0 && now - P[P_LAST_DONE]! >= SPIN_BEFORE_YIELD_MS) Atomics.wait(yieldCell, 0, 0, YIELD_MS);
      }
      if (stop && inflight === 0) {
        finished = true;
        break;
      }
      if (stop && limitMs > 0 && now - t0 > limitMs + DRAIN_TIMEOUT_MS) throw new Error(`${inflight} I/Os still outstanding ${DRAIN_TIMEOUT_MS} ms after the run ended`);
      if ((++iter & 0x3ff) === 0 && now >= st.nextProgress) break;
    }
    P[P_NOW] = now;
    st.issued = issued;
    st.seqCursor = seqCursor;
    st.stop = stop;
    st.idle = idle;
    st.iter = iter;
    return finished;
  };

  /** One closed-loop phase. Returns measured elapsed seconds. */
  const phase = async (name: EngineProgress['phase'], forceWrite: boolean, sequential: boolean, limitIos: number, limitMs: number): Promise<number> => {
    C[C_DONE] = 0;
    const t0 = performance.now();
    P[P_NOW] = t0;
    P[P_LAST_DONE] = t0;
    const interval = cfg.progressIntervalMs ?? 1000;
    const st: PhaseState = { forceWrite, sequential, limitIos, limitMs, t0, issued: 0, seqCursor: 0, stop: false, idle: 0, iter: 0, nextProgress: t0 + interval };
    while (!loop(st)) {
      const now = P[P_NOW]!;
      st.nextProgress = now + interval;
      const el = (now - t0) / 1000;
      const done = C[C_DONE]!;
      cfg.onProgress?.({ phase: name, elapsedSec: el, totalSec: limitMs > 0 ? limitMs / 1000 : null, ios: done, totalIos: limitIos > 0 ? limitIos : null, iops: done / el, errors: C[C_ERRORS]! });
      // Let timers, signals and the worker's messages run once a second.
      await new Promise<void>((r) => setImmediate(r));
    }
    return (performance.now() - t0) / 1000;
  };

  let prefilledBlocks = 0;
  if (verify) {
    await phase('prefill', true, true, units, 0);
    prefilledBlocks = units * nlb;
    if (C[C_ERRORS]! > 0) throw new Error(`prefill for --verify failed: ${C[C_ERRORS]} write errors (${Object.keys(errorsByStatus).join(', ')})`);
    cfg.afterPrefill?.();
  }
  if (cfg.warmupSec > 0) await phase('warmup', false, false, 0, cfg.warmupSec * 1000);
  // Measured phase.
  C.fill(0);
  firstMismatch = null;
  for (const k of Object.keys(errorsByStatus)) delete errorsByStatus[k];
  lat.reset();
  recordLatency = true;
  const cpu0 = threadCpuNs();
  const pcpu0 = processCpuNs();
  const limitMs = cfg.timeSec !== null ? cfg.timeSec * 1000 : 0;
  const limitIos = cfg.ios !== null ? cfg.ios : 0;
  const elapsedSec = await phase('run', false, false, limitIos, limitMs);
  const cpu = threadCpuNs() - cpu0;
  const pcpu = processCpuNs() - pcpu0;
  const ios = C[C_DONE]!;
  const writes = C[C_WRITES]!;
  const result: EngineResult = {
    ios,
    reads: ios - writes,
    writes,
    errors: C[C_ERRORS]!,
    errorsByStatus: { ...errorsByStatus },
    elapsedSec,
    iops: ios / elapsedSec,
    bandwidthMiBps: (ios * cfg.bs) / elapsedSec / (1024 * 1024),
    ...latencyFigures(lat, ios - writes, writes, cfg.bs, elapsedSec, cfg.percentiles, cfg.exportHistogram ?? false),
    verified: C[C_VERIFIED]!,
    verifyErrors: C[C_VERIFY_ERRORS]!,
    firstMismatch,
    cpuNsPerIo: ios > 0 ? cpu / ios : 0,
    processCpuNsPerIo: ios > 0 ? pcpu / ios : 0,
    prefilledBlocks,
  };
  return result;
}

/** The latency part of a result from the recorder's two lanes (0 reads, 1 writes), and their export if asked. */
function latencyFigures(
  lat: LatencyRecorder,
  reads: number,
  writes: number,
  bs: number,
  elapsedSec: number,
  percentiles: readonly number[] | undefined,
  exportHistogram: boolean,
): Pick<EngineResult, 'latencyUs' | 'read' | 'write' | 'latencyExport'> {
  const hists = [newLatencyHistogram(), newLatencyHistogram()] as const;
  const all = newLatencyHistogram();
  try {
    lat.addTo(hists[0], 0);
    lat.addTo(hists[1], 1);
    all.add(hists[0]);
    all.add(hists[1]);
    const [mr, mw] = [lat.moments(0), lat.moments(1)];
    const out: Pick<EngineResult, 'latencyUs' | 'read' | 'write' | 'latencyExport'> = {
      latencyUs: latencySummary(all, mergeMoments(mr, mw), percentiles),
      read: directionFigures(reads, bs, elapsedSec, hists[0], mr, percentiles ?? DEFAULT_PERCENTILES),
      write: directionFigures(writes, bs, elapsedSec, hists[1], mw, percentiles ?? DEFAULT_PERCENTILES),
    };
    if (exportHistogram) {
      out.latencyExport = {
        read: { histogram: hdr.encodeIntoCompressedBase64(hists[0]), moments: mr },
        write: { histogram: hdr.encodeIntoCompressedBase64(hists[1]), moments: mw },
      };
    }
    return out;
  } finally {
    for (const h of [...hists, all]) h.destroy();
  }
}
