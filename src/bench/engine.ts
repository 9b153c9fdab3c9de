/**
 * The benchmark engine: drives queue pairs from one thread with a closed loop of fixed depth per queue.
 * The loop allocates nothing per I/O: slots, buffers and data pointers are prepared up front, completions come
 * through one handler, latencies go into an HDR histogram, and the clock is read once per loop iteration.
 */
import * as hdr from 'hdr-histogram-js';
import { NvmOpcode } from '../nvme/opcodes.js';
import { statusName } from '../nvme/status.js';
import { threadCpuNs, processCpuNs } from '../util/cputime.js';
import { checkPattern, describeMismatch, fillPattern, type PatternMismatch } from './pattern.js';
import { isRandom, readPercent, Rng, type RwMode } from './workload.js';

/** The slice of a queue pair the engine needs (src/driver/queue-pair.ts implements it). */
export interface EngineQueue {
  readonly capacity: number;
  readonly outstanding: number;
  submitIo(opcode: number, nsid: number, slba: number, nlb: number, prp1: number, prp2: number, tag: number): number;
  ring(): void;
  poll(onComplete: (tag: number, status: number, result: number) => void, max?: number): number;
}

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
  /** Return the latency histogram, compressed (for merging the results of several threads). */
  exportHistogram?: boolean;
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

export interface LatencySummary {
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** A latency histogram in nanoseconds, as the engine records it and mergeReports (perf.ts) merges them. */
export function newLatencyHistogram(): hdr.Histogram {
  return hdr.build({ bitBucketSize: 64, autoResize: true, lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });
}

/** p50, p99, p99.9, max and mean of a nanosecond histogram, in microseconds (ns resolution). */
export function latencySummary(hist: hdr.Histogram): LatencySummary {
  const us = (v: number): number => Math.round(v) / 1000;
  return { p50: us(hist.getValueAtPercentile(50)), p99: us(hist.getValueAtPercentile(99)), p999: us(hist.getValueAtPercentile(99.9)), max: us(hist.maxValue), mean: us(hist.mean) };
}

/** The settings of a run that are the same for every thread of it. */
export type EngineWorkload = Pick<EngineConfig, 'rw' | 'bs' | 'qd' | 'rwmixread' | 'timeSec' | 'ios' | 'warmupSec' | 'verify' | 'verifySpan' | 'seed'>;

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
  latencyUs: LatencySummary;
  verified: number;
  verifyErrors: number;
  firstMismatch: PatternMismatch | null;
  /** CPU time of the driver thread per I/O, ns (this thread only where the OS tells per-thread time). */
  cpuNsPerIo: number;
  /** CPU time of the whole process per I/O (includes an in-process emulated controller), ns. */
  processCpuNsPerIo: number;
  prefilledBlocks: number;
  /** The latency histogram (ns), compressed base64, when cfg.exportHistogram. */
  latencyHistogram?: string;
}

const UNKNOWN_GEN = 0xffffffff;
/** Empty polling iterations (with I/O outstanding) before the loop yields the CPU briefly. */
const SPIN_BEFORE_YIELD = 4096;
/** How long a yield lasts, in ms (Atomics.wait timeout). */
const YIELD_MS = 0.02;
const yieldCell = new Int32Array(new SharedArrayBuffer(4));
const DRAIN_TIMEOUT_MS = 30_000;

export async function runEngine(queues: EngineQueue[], buffers: EngineBuffer[][], cfg: EngineConfig): Promise<EngineResult> {
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
  const slotPrp1 = new Float64Array(slotsTotal);
  const slotPrp2 = new Float64Array(slotsTotal);
  for (let q = 0; q < nq; q++) {
    for (let s = 0; s < qd; s++) {
      const b = buffers[q]![s]!;
      slotWords.push(b.words);
      slotPrp1[q * qd + s] = b.prp1;
      slotPrp2[q * qd + s] = b.prp2;
    }
  }

  const hist = newLatencyHistogram();
  const rng = new Rng(cfg.seed);
  const nsid = cfg.nsid;
  const verify = cfg.verify;
  const blockSize = cfg.blockSize;
  const base = cfg.baseLba ?? 0;
  const nameOf = cfg.statusName ?? statusName;

  // Counters (reset at the end of prefill and warm-up).
  let done = 0;
  let reads = 0;
  let writes = 0;
  let errors = 0;
  let verified = 0;
  let verifyErrors = 0;
  let firstMismatch: PatternMismatch | null = null;
  const errorsByStatus: Record<string, number> = {};
  let recordLatency = false;
  let now = performance.now();
  // Tags completed in the current loop iteration; their latency is recorded after one clock read.
  const doneTags = new Int32Array(slotsTotal);
  let nDone = 0;
  let seqCursor = 0;

  const onComplete = (tag: number, status: number, _result: number): void => {
    const q = (tag / qd) | 0;
    const unit = slotUnit[tag]!;
    const isWrite = slotWrite[tag] === 1;
    if (status !== 0) {
      errors++;
      const name = nameOf(status);
      errorsByStatus[name] = (errorsByStatus[name] ?? 0) + 1;
      if (verify && isWrite) unitGen[unit] = UNKNOWN_GEN;
    } else if (verify) {
      if (isWrite) {
        unitGen[unit] = slotGen[tag]!;
      } else {
        const gen = slotGen[tag]!;
        if (gen !== UNKNOWN_GEN && gen !== 0) {
          const bad = checkPattern(slotWords[tag]!, 0, base + unit * nlb, nlb, blockSize, gen, nsid);
          if (bad < 0) verified += nlb;
          else {
            verifyErrors++;
            if (firstMismatch === null) firstMismatch = describeMismatch(slotWords[tag]!, 0, base + unit * nlb, bad, blockSize, gen);
          }
        }
      }
    }
    if (verify) unitBusy[unit] = 0;
    if (isWrite) writes++;
    else reads++;
    done++;
    doneTags[nDone++] = tag;
    freeStack[q * qd + freeTop[q]!] = tag;
    freeTop[q]!++;
  };

  const random = isRandom(cfg.rw);
  const readPct = readPercent(cfg.rw, cfg.rwmixread);

  /** One closed-loop phase. Returns measured elapsed seconds. */
  const phase = async (
    name: EngineProgress['phase'],
    forceWrite: boolean,
    sequentialAll: boolean,
    limitIos: number,
    limitMs: number,
  ): Promise<number> => {
    done = 0;
    let issued = 0;
    const t0 = performance.now();
    const interval = cfg.progressIntervalMs ?? 1000;
    let nextProgress = t0 + interval;
    let iter = 0;
    let stop = false;
    seqCursor = 0;
    let idle = 0;
    while (true) {
      if (!stop && ((limitMs > 0 && now - t0 >= limitMs) || (limitIos > 0 && issued >= limitIos))) stop = true;
      let inflight = 0;
      for (let q = 0; q < nq; q++) {
        const qp = queues[q]!;
        if (!stop) {
          while (freeTop[q]! > 0 && (limitIos === 0 || issued < limitIos)) {
            const tag = freeStack[q * qd + freeTop[q]! - 1]!;
            let unit: number;
            if (sequentialAll || !random) {
              unit = seqCursor;
              seqCursor = seqCursor + 1 >= units ? 0 : seqCursor + 1;
            } else unit = rng.below(units);
            if (verify) {
              let tries = 0;
              while (unitBusy[unit] === 1 && tries < units) {
                unit = unit + 1 >= units ? 0 : unit + 1;
                tries++;
              }
            }
            const write = forceWrite || (readPct < 100 && (readPct === 0 || rng.below(100) >= readPct));
            if (verify) {
              unitBusy[unit] = 1;
              if (write) {
                const g = unitGen[unit] === UNKNOWN_GEN ? 1 : unitGen[unit]! + 1;
                slotGen[tag] = g;
                fillPattern(slotWords[tag]!, 0, base + unit * nlb, nlb, blockSize, g, nsid);
              } else slotGen[tag] = unitGen[unit]!;
            }
            const cid = qp.submitIo(write ? NvmOpcode.Write : NvmOpcode.Read, nsid, base + unit * nlb, nlb, slotPrp1[tag]!, slotPrp2[tag]!, tag);
            if (cid < 0) {
              if (verify) unitBusy[unit] = 0;
              break;
            }
            slotUnit[tag] = unit;
            slotWrite[tag] = write ? 1 : 0;
            slotStart[tag] = now;
            freeTop[q]!--;
            issued++;
          }
          qp.ring();
        }
      }
      nDone = 0;
      for (let q = 0; q < nq; q++) {
        const qp = queues[q]!;
        qp.poll(onComplete);
        inflight += qp.outstanding;
      }
      // The clock (about 40 ns a read here) is read once per iteration that completed something, and every
      // 64 idle iterations otherwise. Completions are stamped with it; the next submissions reuse it.
      if (nDone > 0) {
        now = performance.now();
        if (recordLatency) for (let i = 0; i < nDone; i++) hist.recordValue(Math.max(1, Math.round((now - slotStart[doneTags[i]!]!) * 1e6)));
        idle = 0;
      } else if ((++idle & 63) === 0) {
        now = performance.now();
        // Hybrid polling: after a spin budget with I/O outstanding and nothing completing, give the CPU away for
        // a few microseconds. On a machine where the device (the embedded controller's thread) shares a core with
        // this loop, pure spinning starves the device; on a free core this point is never reached.
        if (idle >= SPIN_BEFORE_YIELD && inflight > 0) {
          Atomics.wait(yieldCell, 0, 0, YIELD_MS);
          idle = 0;
        }
      }
      if (stop && inflight === 0) break;
      if (stop && now - t0 > limitMs + DRAIN_TIMEOUT_MS && limitMs > 0) throw new Error(`${inflight} I/Os still outstanding ${DRAIN_TIMEOUT_MS} ms after the run ended`);
      if ((++iter & 0x3ff) === 0 && now >= nextProgress) {
        nextProgress = now + interval;
        const el = (now - t0) / 1000;
        cfg.onProgress?.({ phase: name, elapsedSec: el, totalSec: limitMs > 0 ? limitMs / 1000 : null, ios: done, totalIos: limitIos > 0 ? limitIos : null, iops: done / el, errors });
        // Let timers, signals and the worker's messages run once a second.
        await new Promise<void>((r) => setImmediate(r));
      }
    }
    return (performance.now() - t0) / 1000;
  };

  let prefilledBlocks = 0;
  if (verify) {
    await phase('prefill', true, true, units, 0);
    prefilledBlocks = units * nlb;
    if (errors > 0) throw new Error(`prefill for --verify failed: ${errors} write errors (${Object.keys(errorsByStatus).join(', ')})`);
  }
  if (cfg.warmupSec > 0) await phase('warmup', false, false, 0, cfg.warmupSec * 1000);
  // Measured phase.
  reads = writes = errors = verified = verifyErrors = 0;
  firstMismatch = null;
  for (const k of Object.keys(errorsByStatus)) delete errorsByStatus[k];
  hist.reset();
  recordLatency = true;
  const cpu0 = threadCpuNs();
  const pcpu0 = processCpuNs();
  const limitMs = cfg.timeSec !== null ? cfg.timeSec * 1000 : 0;
  const limitIos = cfg.ios !== null ? cfg.ios : 0;
  const elapsedSec = await phase('run', false, false, limitIos, limitMs);
  const cpu = threadCpuNs() - cpu0;
  const pcpu = processCpuNs() - pcpu0;
  const ios = done;
  const result: EngineResult = {
    ios,
    reads,
    writes,
    errors,
    errorsByStatus: { ...errorsByStatus },
    elapsedSec,
    iops: ios / elapsedSec,
    bandwidthMiBps: (ios * cfg.bs) / elapsedSec / (1024 * 1024),
    latencyUs: latencySummary(hist),
    verified,
    verifyErrors,
    firstMismatch,
    cpuNsPerIo: ios > 0 ? cpu / ios : 0,
    processCpuNsPerIo: ios > 0 ? pcpu / ios : 0,
    prefilledBlocks,
  };
  if (cfg.exportHistogram) result.latencyHistogram = hdr.encodeIntoCompressedBase64(hist);
  hist.destroy();
  return result;
}
