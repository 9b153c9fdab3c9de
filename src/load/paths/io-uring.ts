/**
 * The io_uring load path: one ring (src/io/uring-ring.ts), a pool of `depth` staging buffers of `chunkBytes`
 * each registered with IORING_REGISTER_BUFFERS (reads are READ_FIXED), and `depth` reads in flight across files.
 *
 * Files enter the window in plan order: the path opens a file (O_DIRECT by default), splits it into reads of
 * chunkBytes and issues them while staging slots are free; when every read of a file is issued it opens the next
 * one, so many small files are in flight together. A completed read goes to sink.deliver() (trimmed to the file
 * size) and its slot is reused at once; a file's descriptor is closed when its last read completes.
 *
 * O_DIRECT: offsets and lengths are multiples of DIRECT_ALIGN; the tail of a file is read as a whole aligned
 * block (the kernel returns the short count) and trimmed. A short read before the end of the file is resubmitted
 * for the rest, into the same slot. A failed read (negative res) fails its file; the others go on.
 *
 * The loop: fill the SQ, io_uring_enter (submit and wait for one completion when none is ready), reap every CQE,
 * repeat; user_data is the slot number, and per-slot and per-file state lives in typed arrays, so nothing is
 * allocated per read (a Uint8Array view per file tail excepted). Every YIELD_MS the loop yields to the event loop
 * (setImmediate) so that progress timers run.
 */
import * as fs from 'node:fs';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { UringRing, writeRwSqe } from '../../io/uring-ring.js';
import { allocHostMemory, freeHostMemory, type HostMemory } from '../../sys/fileio.js';
import { errnoName } from '../../sys/libc.js';
import { IoringOp } from '../../sys/uring.js';
import { formatSize } from '../../util/size.js';
import { DEFAULT_CHUNK_BYTES, DEFAULT_DEPTH } from '../defaults.js';
import { LoadFileError, type LoadEvents, type LoadFile, type LoadPathEngine, type LoadPathOptions, type LoadSink } from '../types.js';
import { DIRECT_ALIGN, checkPathOptions, openPlannedSync, readFailure, readLength, shortFile } from './open-file.js';

/** Longest stretch the loop runs without yielding to the event loop. */
const YIELD_MS = 20;
/** How long close() / an aborted run waits for reads still in flight before giving up on them. */
const DRAIN_MS = 10_000;

export async function openUringPath(opts: LoadPathOptions): Promise<LoadPathEngine> {
  const depth = opts.depth || DEFAULT_DEPTH;
  const chunk = opts.chunkBytes || DEFAULT_CHUNK_BYTES;
  const direct = opts.direct !== false;
  checkPathOptions('io_uring', depth, chunk, direct);
  return new UringPath(depth, chunk, direct);
}

class UringPath implements LoadPathEngine {
  readonly path = 'io_uring' as const;
  private readonly baseDescribe: string;
  private readonly bufferNote: string;
  /** Whether the last run read straight into the sink's host destinations. */
  private lastRunDirect = false;
  get describe(): string {
    return this.baseDescribe.replace('{buffers}', this.lastRunDirect ? 'straight into the destination (READ, no staging copy)' : this.bufferNote);
  }
  private readonly ring: UringRing;
  private readonly mem: HostMemory;
  private readonly staging: Uint8Array;
  /** Whether the staging slots are registered buffers (READ_FIXED) or plain memory (READ). */
  private readonly fixed: boolean;
  /** Full-chunk view of each slot (handed to deliver() without allocating). */
  private readonly slotView: Uint8Array[] = [];
  /** Per slot: the file (position in the run's list), the chunk's file offset, its length, bytes read so far. */
  private readonly slotFile: Int32Array;
  private readonly slotOff: Float64Array;
  private readonly slotLen: Int32Array;
  private readonly slotGot: Int32Array;
  private readonly freeSlots: Int32Array;
  private running = false;
  private closed = false;

  constructor(
    private readonly depth: number,
    private readonly chunk: number,
    private readonly direct: boolean,
  ) {
    this.ring = new UringRing({ entries: depth, flags: 0 });
    try {
      this.mem = allocHostMemory(depth * chunk);
    } catch (e) {
      this.ring.close();
      throw e;
    }
    this.staging = new Uint8Array(this.mem.buffer, 0, depth * chunk);
    for (let s = 0; s < depth; s++) this.slotView.push(this.staging.subarray(s * chunk, (s + 1) * chunk));
    let bufferNote: string;
    try {
      this.ring.registerBuffers(this.slotView.map((_v, s) => ({ address: this.mem.address + s * chunk, length: chunk })));
      this.fixed = true;
      bufferNote = 'registered buffers (READ_FIXED)';
    } catch (e) {
      // Said in every report: plain READ from unregistered memory (e.g. RLIMIT_MEMLOCK too small to pin it).
      this.fixed = false;
      bufferNote = `unregistered buffers (READ; IORING_REGISTER_BUFFERS failed: ${(e as Error).message})`;
    }
    this.slotFile = new Int32Array(depth);
    this.slotOff = new Float64Array(depth);
    this.slotLen = new Int32Array(depth);
    this.slotGot = new Int32Array(depth);
    this.freeSlots = new Int32Array(depth);
    this.bufferNote = bufferNote;
    this.baseDescribe = `io_uring, ${direct ? 'O_DIRECT' : 'buffered (page cache)'}, {buffers}, ${depth} in flight, ${formatSize(chunk)} reads`;
  }

  async run(files: readonly LoadFile[], sink: LoadSink, events: LoadEvents): Promise<void> {
    if (this.closed) throw new Error('io_uring path: run() after close()');
    if (this.running) throw new Error('io_uring path: run() is already in progress');
    this.running = true;
    const n = files.length;
    const ring = this.ring;
    const sqes = ring.sqes;
    const cqI32 = ring.cqI32;
    const { depth, chunk, direct, fixed, staging, slotView, slotFile, slotOff, slotLen, slotGot, freeSlots } = this;
    const base = this.mem.address;
    // A sink with host destinations (the pinned arena) is read into straight: no staging, no copy, plain READ
    // (the arena is not a registered buffer). Otherwise each read lands in a staging slot and is delivered.
    const into = sink.hostAddress?.bind(sink) ?? null;
    const landed = sink.landed?.bind(sink) ?? null;
    const op = fixed && into === null ? IoringOp.ReadFixed : IoringOp.Read;
    this.lastRunDirect = into !== null;
    /** Per file: descriptor (-1: not open), next offset to issue, reads in flight, error (once failed). */
    const fds = new Int32Array(n).fill(-1);
    const nextOff = new Float64Array(n);
    const inflight = new Int32Array(n);
    const errors: (LoadFileError | null)[] = new Array<LoadFileError | null>(n).fill(null);
    let freeTop = depth;
    for (let s = 0; s < depth; s++) freeSlots[s] = depth - 1 - s;
    let outstanding = 0;
    let cursor = 0;
    let issuing = -1;
    let done = 0;

    const finish = (k: number): void => {
      const fd = fds[k]!;
      if (fd >= 0) {
        fds[k] = -1;
        fs.closeSync(fd);
      }
      done++;
      events.fileDone(files[k]!.index, errors[k]!);
    };

    /** Queue a read of `len` bytes at file offset `off` into slot `s` at byte `at` of the slot (an SQE is free). */
    const queueRead = (s: number, fd: number, off: number, at: number, len: number): void => {
      const w = ring.nextSqe();
      if (w < 0) throw new Error('io_uring path: the SQ is full with a free staging slot (a bug)');
      const addr = into !== null ? into(files[slotFile[s]!]!.index) + off + at : base + s * chunk + at;
      writeRwSqe(sqes, w, op, fd, off, addr, len, 0, s, 0, op === IoringOp.ReadFixed ? s : 0);
      ring.commit();
      outstanding++;
    };

    /** Issue reads while slots are free, opening files as they enter the window. */
    const fill = (): void => {
      while (freeTop > 0) {
        if (issuing < 0) {
          if (cursor >= n) return;
          const k = cursor++;
          const f = files[k]!;
          events.fileStart(f.index);
          try {
            fds[k] = openPlannedSync(f, direct);
          } catch (e) {
            errors[k] = e instanceof LoadFileError ? e : new LoadFileError(f.path, (e as Error).message);
            finish(k);
            continue;
          }
          if (f.size === 0) {
            finish(k);
            continue;
          }
          issuing = k;
        }
        const k = issuing;
        const off = nextOff[k]!;
        const len = readLength(files[k]!, off, chunk, direct);
        const s = freeSlots[--freeTop]!;
        slotFile[s] = k;
        slotOff[s] = off;
        slotLen[s] = len;
        slotGot[s] = 0;
        queueRead(s, fds[k]!, off, 0, len);
        inflight[k]++;
        nextOff[k] = off + len;
        if (off + len >= files[k]!.size) issuing = -1;
      }
    };

    /** One completion of slot `s` with result `res`. */
    const complete = (s: number, res: number): void => {
      const k = slotFile[s]!;
      const f = files[k]!;
      if (errors[k] === null) {
        const off = slotOff[s]!;
        const len = slotLen[s]!;
        const got = slotGot[s]!;
        if (res < 0) {
          errors[k] = readFailure(f, off + got, errnoName(-res));
        } else {
          const have = got + res;
          const want = Math.min(len, f.size - off);
          if (have >= want) {
            if (into === null) sink.deliver(f.index, off, want === chunk ? slotView[s]! : staging.subarray(s * chunk, s * chunk + want));
            if (into !== null && landed !== null) landed(f.index, off, want);
            events.bytes(want);
          } else if (res === 0) {
            errors[k] = shortFile(f, off + have);
          } else if (direct && have % DIRECT_ALIGN !== 0) {
            errors[k] = new LoadFileError(f.path, `O_DIRECT read at offset ${off + got} returned ${res} bytes, not a whole number of ${DIRECT_ALIGN}-byte blocks, before the end of the file`);
          } else {
            // A short read before the end of the file: read the rest into the same slot.
            slotGot[s] = have;
            queueRead(s, fds[k]!, off + have, have, len - have);
            return;
          }
        }
        if (errors[k] !== null && issuing === k) issuing = -1;
      }
      freeSlots[freeTop++] = s;
      if (--inflight[k]! === 0 && (errors[k] !== null || nextOff[k]! >= f.size)) finish(k);
    };

    const reap = (): void => {
      let head = ring.cqHead();
      const tail = ring.cqTail();
      while (head !== tail) {
        const idx = ring.cqeIndex(head);
        const s = ring.cqWord(idx);
        const res = cqI32[idx + 2]!;
        head = (head + 1) >>> 0;
        outstanding--;
        complete(s, res);
      }
      ring.advanceCq(head);
    };

    try {
      sink.adoptStaging(staging, this.mem.address);
      let lastYield = performance.now();
      while (done < n) {
        fill();
        if (outstanding === 0) {
          if (done < n) throw new Error(`io_uring path: ${n - done} files neither in flight nor done (a bug)`);
          break;
        }
        ring.enter(ring.cqReady() > 0 ? 0 : 1);
        reap();
        const now = performance.now();
        if (now - lastYield >= YIELD_MS) {
          await yieldToLoop();
          lastYield = performance.now();
        }
      }
    } finally {
      if (outstanding > 0) outstanding = this.drain(outstanding);
      for (let k = 0; k < n; k++) {
        if (fds[k]! >= 0) fs.closeSync(fds[k]!);
      }
      this.running = outstanding > 0;
    }
  }

  /** Reap (and drop) `outstanding` completions after an aborted run; returns how many never came back. */
  private drain(outstanding: number): number {
    const ring = this.ring;
    const deadline = performance.now() + DRAIN_MS;
    while (outstanding > 0 && performance.now() < deadline) {
      try {
        ring.enter(ring.cqReady() > 0 ? 0 : 1);
      } catch {
        break;
      }
      let head = ring.cqHead();
      const tail = ring.cqTail();
      while (head !== tail) {
        head = (head + 1) >>> 0;
        outstanding--;
      }
      ring.advanceCq(head);
    }
    return outstanding;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ring.close();
    // Reads that never came back (a run that aborted and could not drain) may still target the staging memory.
    if (!this.running) freeHostMemory(this.mem);
  }
}
