/**
 * The I/O loop shared by the shm tests' parent and child: a closed loop at a fixed queue depth over one
 * queue pair, each slot with its own DMA buffer and prebuilt PRPs; optional data patterns written and
 * verified. Synchronous (it spins on poll()): the controller runs in another thread or process.
 * This module only exports; loaded as a test file it does nothing.
 */
import type { DmaAllocator, DmaBuffer } from '../../src/mem/dma.js';
import { dataPointer, type DataPointer } from '../../src/driver/dptr.js';
import type { QueuePair } from '../../src/driver/queue-pair.js';

export const OP_WRITE = 0x01;
export const OP_READ = 0x02;

/** Fill one block with a pattern derived from (lba, seed). */
export function fillPattern(bytes: Uint8Array, lba: number, seed: number): void {
  const w = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  let x = (Math.imul(lba + 1, 0x9e3779b1) ^ seed) >>> 0;
  for (let i = 0; i < w.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w[i] = x >>> 0;
  }
  w[0] = lba >>> 0;
}

/** Whether one block holds the pattern of (lba, seed). */
export function checkPattern(bytes: Uint8Array, lba: number, seed: number, scratch: Uint8Array): boolean {
  fillPattern(scratch, lba, seed);
  return Buffer.compare(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), Buffer.from(scratch.buffer, scratch.byteOffset, scratch.byteLength)) === 0;
}

export interface LoopOptions {
  nsid: number;
  blockSize: number;
  qd: number;
  op: number;
  /** LBAs [firstLba, firstLba + count) in order, each once; or, with durationMs, random LBAs below lbaRange. */
  firstLba?: number;
  count?: number;
  durationMs?: number;
  lbaRange?: number;
  /** Write the (lba, seed) pattern / verify it after reads. */
  seed?: number;
  verify?: boolean;
}

export interface LoopResult {
  ios: number;
  errors: number;
  mismatches: number;
  elapsedMs: number;
  iops: number;
  firstError: string | null;
}

/** Run the loop to completion. */
export function runLoop(qp: QueuePair, dma: DmaAllocator, o: LoopOptions): LoopResult {
  const qd = Math.min(o.qd, qp.capacity);
  const bufs: DmaBuffer[] = [];
  const ptrs: DataPointer[] = [];
  const slotLba = new Float64Array(qd);
  for (let i = 0; i < qd; i++) {
    const b = dma.alloc(o.blockSize, dma.pageSize);
    bufs.push(b);
    ptrs.push(dataPointer(dma, b));
  }
  const scratch = new Uint8Array(o.blockSize);
  const timed = o.durationMs !== undefined;
  const first = o.firstLba ?? 0;
  const total = timed ? Number.POSITIVE_INFINITY : o.count!;
  const range = o.lbaRange ?? 1;
  let nextSeq = 0;
  let submitted = 0;
  let done = 0;
  let errors = 0;
  let mismatches = 0;
  let firstError: string | null = null;
  const free: number[] = [];
  for (let i = qd - 1; i >= 0; i--) free.push(i);
  const seed = o.seed ?? 0;
  const onComplete = (tag: number, status: number): void => {
    done++;
    if (status !== 0) {
      errors++;
      firstError ??= `lba ${slotLba[tag]} status 0x${status.toString(16)}`;
    } else if (o.verify && o.op === OP_READ && !checkPattern(bufs[tag]!.bytes, slotLba[tag]!, seed, scratch)) {
      mismatches++;
      firstError ??= `lba ${slotLba[tag]}: data mismatch`;
    }
    free.push(tag);
  };
  const start = performance.now();
  const end = timed ? start + o.durationMs! : Number.POSITIVE_INFINITY;
  let limit = total;
  let spins = 0;
  for (;;) {
    let queued = 0;
    while (free.length !== 0 && submitted < limit) {
      const slot = free[free.length - 1]!;
      const lba = timed ? Math.floor(Math.random() * range) : first + nextSeq;
      if (o.op === OP_WRITE && o.seed !== undefined) fillPattern(bufs[slot]!.bytes, lba, seed);
      const p = ptrs[slot]!;
      if (qp.submitIo(o.op, o.nsid, lba, 1, p.prp1, p.prp2, slot) < 0) break;
      free.pop();
      slotLba[slot] = lba;
      nextSeq++;
      submitted++;
      queued++;
    }
    if (queued !== 0) qp.ring();
    qp.poll(onComplete);
    if (done === submitted && submitted >= limit) break;
    if (timed && limit === total && (++spins & 255) === 0 && performance.now() >= end) limit = submitted;
  }
  const elapsedMs = performance.now() - start;
  for (const p of ptrs) p.release();
  for (const b of bufs) dma.free(b);
  return { ios: done, errors, mismatches, elapsedMs, iops: (done / elapsedMs) * 1000, firstError };
}
