/**
 * One io_uring instance driven from TypeScript: io_uring_setup, the three mappings (SQ ring, CQ ring, SQE array;
 * one mapping for both rings with IORING_FEAT_SINGLE_MMAP), and typed-array views over them. SQEs are written in
 * place, the SQ tail is published with Atomics.store, CQEs are read after an Atomics.load of the CQ tail and the
 * CQ head is published with Atomics.store. The SQ index array is filled once (identity) at setup, so the data
 * path never touches it. io_uring_enter is the only FFI call: once per batch (enter), plus one per submission
 * batch when a caller hands the kernel SQEs early (flush).
 */
import {
  decodeParams,
  encodeParams,
  ioUringEnter,
  ioUringRegister,
  ioUringSetup,
  mapRing,
  unmapRing,
  closeFd,
  IORING_ENTER_GETEVENTS,
  IORING_FEAT_SINGLE_MMAP,
  IORING_OFF_CQ_RING,
  IORING_OFF_SQ_RING,
  IORING_OFF_SQES,
  IORING_REGISTER_BUFFERS,
  IORING_SETUP_CLAMP,
  IORING_SETUP_COOP_TASKRUN,
  IORING_SETUP_CQE32,
  IORING_SETUP_CQSIZE,
  IORING_SETUP_DEFER_TASKRUN,
  IORING_SETUP_SINGLE_ISSUER,
  IORING_SETUP_SQE128,
  IOVEC_SIZE,
  type RingMapping,
} from '../sys/uring.js';
import { OsError } from '../sys/libc.js';
import type { HostBufferPool } from './common.js';
import { IoOpenError } from './types.js';

const EINTR = 4;
const EAGAIN = 11;
const EBUSY = 16;
const EINVAL = 22;

export interface RingOptions {
  /** SQ entries wanted (rounded up to a power of two by the kernel). */
  entries: number;
  /** Extra setup flags (IOPOLL, SQE128, CQE32). */
  flags: number;
}

export class UringRing {
  readonly fd: number;
  readonly sqEntries: number;
  readonly cqEntries: number;
  readonly sqMask: number;
  readonly cqMask: number;
  /** setup flags actually in force. */
  readonly flags: number;
  /** SQE size in 32-bit words (16 or 32). */
  readonly sqeWords: number;
  /** CQE size in 32-bit words (4 or 8). */
  readonly cqeWords: number;
  /** Views. */
  readonly sqes: Uint32Array;
  readonly sqes8: Uint8Array;
  private readonly sqRing: Uint32Array;
  private readonly cqRing: Uint32Array;
  /** CQ ring as Int32 (for cqe.res). */
  readonly cqI32: Int32Array;
  private readonly sqHeadIdx: number;
  private readonly sqTailIdx: number;
  private readonly cqHeadIdx: number;
  private readonly cqTailIdx: number;
  /** Word index of the first CQE in cqRing. */
  readonly cqesIdx: number;
  private readonly maps: RingMapping[] = [];
  /** Local SQ tail (published on enter). */
  private sqTail: number;
  private published: number;
  private closed = false;

  constructor(o: RingOptions) {
    const base = o.flags | IORING_SETUP_CLAMP | IORING_SETUP_CQSIZE;
    // Prefer deferred task work (completions run only when we enter with GETEVENTS, which we always do);
    // fall back for older kernels.
    const attempts = [base | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, base | IORING_SETUP_COOP_TASKRUN, base];
    let fd = -1;
    let params: Uint8Array | null = null;
    let lastErr: unknown = null;
    for (const f of attempts) {
      params = encodeParams(f, Math.max(2 * o.entries, 8));
      try {
        fd = ioUringSetup(o.entries, params);
        break;
      } catch (e) {
        lastErr = e;
        if (!(e instanceof OsError) || e.errno !== EINVAL) throw e;
      }
    }
    if (fd < 0) throw lastErr;
    const p = decodeParams(params!);
    this.fd = fd;
    this.flags = p.flags;
    this.sqEntries = p.sqEntries;
    this.cqEntries = p.cqEntries;
    const sqe128 = (p.flags & IORING_SETUP_SQE128) !== 0;
    const cqe32 = (p.flags & IORING_SETUP_CQE32) !== 0;
    this.sqeWords = sqe128 ? 32 : 16;
    this.cqeWords = cqe32 ? 8 : 4;
    try {
      const sqSize = p.sqOff.array + p.sqEntries * 4;
      const cqSize = p.cqOff.cqes + p.cqEntries * this.cqeWords * 4;
      const single = (p.features & IORING_FEAT_SINGLE_MMAP) !== 0;
      const sqMap = mapRing(fd, single ? Math.max(sqSize, cqSize) : sqSize, IORING_OFF_SQ_RING, 'io_uring SQ ring');
      this.maps.push(sqMap);
      const cqMap = single ? sqMap : mapRing(fd, cqSize, IORING_OFF_CQ_RING, 'io_uring CQ ring');
      if (!single) this.maps.push(cqMap);
      const sqeMap = mapRing(fd, p.sqEntries * this.sqeWords * 4, IORING_OFF_SQES, 'io_uring SQEs');
      this.maps.push(sqeMap);
      this.sqRing = new Uint32Array(sqMap.buffer);
      this.cqRing = new Uint32Array(cqMap.buffer);
      this.cqI32 = new Int32Array(cqMap.buffer);
      this.sqes = new Uint32Array(sqeMap.buffer);
      this.sqes8 = new Uint8Array(sqeMap.buffer);
      this.sqHeadIdx = p.sqOff.head >>> 2;
      this.sqTailIdx = p.sqOff.tail >>> 2;
      this.cqHeadIdx = p.cqOff.head >>> 2;
      this.cqTailIdx = p.cqOff.tail >>> 2;
      this.cqesIdx = p.cqOff.cqes >>> 2;
      this.sqMask = this.sqRing[p.sqOff.ringMask >>> 2]!;
      this.cqMask = this.cqRing[p.cqOff.ringMask >>> 2]!;
      const arrayIdx = p.sqOff.array >>> 2;
      for (let i = 0; i < p.sqEntries; i++) this.sqRing[arrayIdx + i] = i;
      this.sqTail = Atomics.load(this.sqRing, this.sqTailIdx);
      this.published = this.sqTail;
    } catch (e) {
      this.releaseMaps();
      closeFd(fd);
      throw e;
    }
  }

  /** Word index of the next free SQE, or -1 when the SQ is full. Fill it, then call commit(). */
  nextSqe(): number {
    const tail = this.sqTail;
    if ((tail - Atomics.load(this.sqRing, this.sqHeadIdx)) >>> 0 >= this.sqEntries) return -1;
    return (tail & this.sqMask) * this.sqeWords;
  }

  /** Make the SQE returned by nextSqe part of the next submission. */
  commit(): void {
    this.sqTail = (this.sqTail + 1) >>> 0;
  }

  /** SQEs committed but not yet handed to the kernel. */
  get unsubmitted(): number {
    return (this.sqTail - this.published) >>> 0;
  }

  /** CQEs ready to be reaped. */
  cqReady(): number {
    return (Atomics.load(this.cqRing, this.cqTailIdx) - this.cqRing[this.cqHeadIdx]!) >>> 0;
  }

  /**
   * Publish the SQ tail and call io_uring_enter once: submit what is queued and, with minComplete > 0, wait for
   * that many completions. Returns false when the kernel asked to retry (EINTR/EAGAIN/EBUSY); throws otherwise.
   */
  enter(minComplete: number): boolean {
    const n = (this.sqTail - this.published) >>> 0;
    if (n > 0) Atomics.store(this.sqRing, this.sqTailIdx, this.sqTail);
    const r = ioUringEnter(this.fd, n, minComplete, IORING_ENTER_GETEVENTS);
    if (r < 0) {
      if (r === -EINTR || r === -EAGAIN || r === -EBUSY) return false;
      throw new OsError('io_uring_enter', -r);
    }
    this.published = (this.published + r) >>> 0;
    return true;
  }

  /**
   * Hand what is queued to the kernel now, without waiting (io_uring_enter(n, 0, GETEVENTS): with deferred task
   * work this also posts the completions that are ready). Never throws: on any error the SQEs stay queued and the
   * next enter() submits them or reports the error. Returns false when nothing was submitted.
   */
  flush(): boolean {
    const n = (this.sqTail - this.published) >>> 0;
    if (n === 0) return false;
    Atomics.store(this.sqRing, this.sqTailIdx, this.sqTail);
    const r = ioUringEnter(this.fd, n, 0, IORING_ENTER_GETEVENTS);
    if (r <= 0) return false;
    this.published = (this.published + r) >>> 0;
    return true;
  }

  /** CQ head (for reaping: entries head .. tail-1, then advance()). */
  cqHead(): number {
    return this.cqRing[this.cqHeadIdx]!;
  }
  cqTail(): number {
    return Atomics.load(this.cqRing, this.cqTailIdx);
  }
  /** Word index in cqRing of CQE number `i` (unmasked). */
  cqeIndex(i: number): number {
    return this.cqesIdx + (i & this.cqMask) * this.cqeWords;
  }
  cqWord(idx: number): number {
    return this.cqRing[idx]!;
  }
  advanceCq(head: number): void {
    Atomics.store(this.cqRing, this.cqHeadIdx, head >>> 0);
  }

  /** IORING_REGISTER_BUFFERS with (address, length) pairs; returns nothing, throws OsError. */
  registerBuffers(iovecs: Array<{ address: number; length: number }>): void {
    if (iovecs.length === 0) return;
    const b = new Uint8Array(iovecs.length * IOVEC_SIZE);
    const v = new DataView(b.buffer);
    iovecs.forEach((io, i) => {
      v.setBigUint64(i * IOVEC_SIZE, BigInt(io.address), true);
      v.setBigUint64(i * IOVEC_SIZE + 8, BigInt(io.length), true);
    });
    ioUringRegister(this.fd, IORING_REGISTER_BUFFERS, b, iovecs.length);
  }

  private releaseMaps(): void {
    for (const m of this.maps) unmapRing(m);
    this.maps.length = 0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.releaseMaps();
    closeFd(this.fd);
  }
}

const TWO32 = 4294967296;

/**
 * Write the 64-byte SQE at word `at` of `w` (UringRing.sqes, the index nextSqe() returned) for a read/write-style
 * operation (READ, WRITE, READ_FIXED, WRITE_FIXED, FSYNC, FALLOCATE): sqe.flags and ioprio 0, `off` as the 64-bit
 * file offset, `addr` the 64-bit address (FALLOCATE: the length), `len` (FALLOCATE: the mode), `opFlags`
 * (rw_flags / fsync_flags), user_data = userHi << 32 | userLo, buf_index (READ_FIXED / WRITE_FIXED). Call
 * UringRing.commit() after it.
 */
export function writeRwSqe(w: Uint32Array, at: number, op: number, fd: number, off: number, addr: number, len: number, opFlags: number, userLo: number, userHi: number, bufIndex: number): void {
  w[at] = op;
  w[at + 1] = fd;
  w[at + 2] = off >>> 0;
  w[at + 3] = (off / TWO32) >>> 0;
  w[at + 4] = addr >>> 0;
  w[at + 5] = (addr / TWO32) >>> 0;
  w[at + 6] = len;
  w[at + 7] = opFlags;
  w[at + 8] = userLo;
  w[at + 9] = userHi;
  w[at + 10] = bufIndex;
  w[at + 11] = 0;
  w[at + 12] = 0;
  w[at + 13] = 0;
  w[at + 14] = 0;
  w[at + 15] = 0;
}

/**
 * The registered-buffer index of every allocation of `pool` (by allocation id; -1: not registered). With
 * `register`, the pool's live buffers are registered with `ring` first (IORING_REGISTER_BUFFERS); if that fails
 * the ring is closed and an IoOpenError names the cause.
 */
export function registerPoolBuffers(ring: UringRing, pool: HostBufferPool, register: boolean): Int32Array {
  const index = new Int32Array(pool.maxId).fill(-1);
  if (!register) return index;
  const allocs = pool.allocations();
  try {
    ring.registerBuffers(allocs.map((b) => ({ address: b.h1, length: b.mem!.length })));
  } catch (e) {
    ring.close();
    throw new IoOpenError(`--fixed-buffers: IORING_REGISTER_BUFFERS failed: ${(e as Error).message}`);
  }
  allocs.forEach((b, i) => (index[b.h2] = i));
  return index;
}
