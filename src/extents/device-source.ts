/**
 * A BlockSource backed by an NVMe namespace the driver core owns (a PCIe controller through uio or VFIO, or
 * the embedded controller): the XFS and ext4 decoders then read the device itself, not an image file.
 *
 * DeviceReader owns one I/O queue pair dedicated to metadata reads and one DMA buffer. The decoders are
 * synchronous, so `readInto` is synchronous too: submitIo, ring, then spin on poll until the completion arrives
 * or a deadline passes. `readAsync` reads the same way without ever blocking its thread: it submits, then polls
 * from setImmediate / timer callbacks, each step a few polls long (homid serves the decoders of its resolver
 * threads with it, from the main thread that also serves every tenant's I/O). Reads are one at a time: async
 * reads queue behind each other, and a synchronous read while an async one is in flight is refused. A read that
 * fails or times out throws one DeviceReadError naming the device, the byte range, the queue and the status.
 * After a timeout the buffer is retired (the device may still write it) and a fresh one is used; the timed-out
 * command's late completion carries an old tag and is ignored.
 *
 * DeviceBlockSource is a per-use view with a small LRU block cache (decoders make many small reads of
 * neighbouring metadata) over any NamespaceReader (a DeviceReader, or a proxy of one in another thread). Make a
 * new one for each decode: its cache is never invalidated.
 */
import type { Controller } from '../driver/controller.js';
import { dataPointer, type DataPointer } from '../driver/dptr.js';
import type { QueuePair } from '../driver/queue-pair.js';
import { STATUS_TIMEOUT, isSuccess, statusName } from '../nvme/status.js';
import type { DmaAllocator, DmaBuffer } from '../mem/dma.js';
import { NvmOpcode } from '../nvme/opcodes.js';
import { copyFromChunks, type BlockSource } from './source.js';
import { ExtentError, ImageRangeError } from './types.js';
import { LruCache } from '../util/lru.js';

/** Entries of the metadata queue pair (reads are issued one at a time). */
export const METADATA_QUEUE_ENTRIES = 8;
/** Default deadline of one metadata read. */
export const METADATA_READ_TIMEOUT_MS = 5000;
/** Largest single read (bounded further by the controller's MDTS). */
export const METADATA_MAX_READ_BYTES = 256 * 1024;
/** Cache granule of DeviceBlockSource (like FileBlockSource's chunks). */
export const DEVICE_CACHE_CHUNK_BYTES = 64 * 1024;
/** Default cache size of one DeviceBlockSource. */
export const DEVICE_CACHE_BYTES = 8 * 1024 * 1024;
/** Reads longer than this many chunks (file contents) bypass the cache. */
const BYPASS_CHUNKS = 8;
/** Spins between clock reads while waiting for a completion. */
const SPINS_PER_CLOCK = 64;
/** Polls before the wait starts to nap between polls (a software controller's thread may need the CPU). */
const SPINS_BEFORE_NAP = 256;
/** Length of one nap, in ms (Atomics.wait on a private word: gives the CPU away without an event loop). */
const NAP_MS = 0.05;
const napWord = new Int32Array(new SharedArrayBuffer(4));
/** readAsync: polls per event-loop step (each a few microseconds: the step stays short). */
const ASYNC_POLLS_PER_STEP = 16;
/** readAsync: poll from setImmediate this long after submitting, then from 1 ms timers. */
const ASYNC_SPIN_MS = 2;
/** readAsync: the timer period once the read is slow. */
const ASYNC_TIMER_MS = 1;

/** What DeviceBlockSource reads through: a namespace read synchronously in byte ranges. */
export interface NamespaceReader {
  /** Namespace size in bytes. */
  readonly size: number;
  readonly blockSize: number;
  /** Bytes one command reads at most (a multiple of blockSize). */
  readonly maxReadBytes: number;
  /** Exactly `out.length` bytes at byte `offset` of the namespace, into `out`. */
  readInto(offset: number, out: Uint8Array): void;
}

/** A metadata read on the device failed: an error status, a timeout, or a queue that takes no commands. */
export class DeviceReadError extends ExtentError {
  readonly reason: 'status' | 'timeout' | 'queue';
  /** The NVMe status field (or a negative driver status); -1 when not from a completion. */
  readonly status: number;
  constructor(reason: 'status' | 'timeout' | 'queue', status: number, message: string) {
    super(message);
    this.name = 'DeviceReadError';
    this.reason = reason;
    this.status = status;
  }
}

export interface DeviceReaderOptions {
  /** Namespace to read (default 1). */
  nsid?: number;
  /** Deadline of one read in ms (default METADATA_READ_TIMEOUT_MS). */
  timeoutMs?: number;
  /** Name used in error messages (e.g. the homid device name). */
  label?: string;
}

/** One namespace read through a dedicated queue pair. Create with DeviceReader.open(). */
export class DeviceReader implements NamespaceReader {
  /** Namespace size in bytes. */
  readonly size: number;
  readonly blockSize: number;
  /** Bytes one command reads at most (a multiple of blockSize). */
  readonly maxReadBytes: number;
  readonly nsid: number;
  readonly label: string;
  timeoutMs: number;
  readonly stats = { reads: 0, bytes: 0, errors: 0, timeouts: 0 };

  private buf: DmaBuffer;
  private dptr: DataPointer;
  private readonly retired: { buf: DmaBuffer; dptr: DataPointer }[] = [];
  private tag = 0;
  private doneTag = -1;
  private doneStatus = 0;
  private readonly onComplete = (tag: number, status: number): void => {
    if (tag === this.tag) {
      this.doneTag = tag;
      this.doneStatus = status;
    }
  };
  private closed = false;

  private constructor(
    private readonly controller: Controller,
    readonly qp: QueuePair,
    private readonly dma: DmaAllocator,
    nsid: number,
    blockSize: number,
    blocks: number,
    maxReadBytes: number,
    opts: DeviceReaderOptions,
  ) {
    this.nsid = nsid;
    this.blockSize = blockSize;
    // a namespace of 2^53 bytes or more has no exact size as a number: expose the exact part below that
    // (the decoders refuse file systems that large anyway, so nothing past it is ever read)
    this.size = Math.min(blocks, Math.floor(Number.MAX_SAFE_INTEGER / blockSize)) * blockSize;
    this.maxReadBytes = maxReadBytes;
    this.label = opts.label ?? controller.transport.description;
    this.timeoutMs = opts.timeoutMs ?? METADATA_READ_TIMEOUT_MS;
    this.buf = dma.alloc(maxReadBytes, dma.pageSize);
    try {
      this.dptr = dataPointer(dma, this.buf);
    } catch (e) {
      dma.free(this.buf);
      throw e;
    }
  }

  /** Create the metadata queue pair on `controller` and the read buffer. */
  static async open(controller: Controller, opts: DeviceReaderOptions = {}): Promise<DeviceReader> {
    const nsid = opts.nsid ?? 1;
    const ns = controller.namespace(nsid);
    const dma = controller.transport.dma;
    const cap = Math.min(METADATA_MAX_READ_BYTES, controller.identity.mdts);
    const maxReadBytes = Math.max(ns.blockSize, Math.floor(cap / ns.blockSize) * ns.blockSize);
    const timeoutMs = opts.timeoutMs ?? METADATA_READ_TIMEOUT_MS;
    const entries = Math.min(METADATA_QUEUE_ENTRIES, controller.cap.maxQueueEntries);
    const qp = await controller.createQueuePair({ entries, timeoutMs });
    try {
      return new DeviceReader(controller, qp, dma, nsid, ns.blockSize, ns.blocks, maxReadBytes, { ...opts, timeoutMs });
    } catch (e) {
      await controller.deleteQueuePair(qp).catch(() => undefined);
      throw e;
    }
  }

  private fail(reason: 'status' | 'timeout' | 'queue', status: number, offset: number, length: number, what: string): never {
    this.stats.errors++;
    throw new DeviceReadError(reason, status, `metadata read of ${length} bytes at byte ${offset} of '${this.label}' namespace ${this.nsid} (queue ${this.qp.qid}) ${what}`);
  }

  /** Submit a read of blocks [lba, lba + nlb) into the DMA buffer (nlb * blockSize <= maxReadBytes). */
  private submit(lba: number, nlb: number): void {
    const offset = lba * this.blockSize;
    const length = nlb * this.blockSize;
    if (this.closed) this.fail('queue', -1, offset, length, 'failed: the reader is closed');
    this.tag = (this.tag + 1) & 0x7fffffff;
    this.doneTag = -1;
    const qp = this.qp;
    if (qp.submitIo(NvmOpcode.Read, this.nsid, lba, nlb, this.dptr.prp1, this.dptr.prp2, this.tag) < 0) {
      this.fail('queue', -1, offset, length, `failed: the queue takes no commands (${qp.state}, ${qp.outstanding} outstanding, ${qp.quarantined} timed out)`);
    }
    qp.ring();
  }

  /** Poll once; true when the submitted read has completed. */
  private pollDone(): boolean {
    if (this.doneTag === this.tag) return true;
    this.qp.poll(this.onComplete);
    return this.doneTag === this.tag;
  }

  /** Account for the submitted read of blocks [lba, lba + nlb): throws its error, if any. */
  private finish(lba: number, nlb: number, timedOut: boolean): void {
    const offset = lba * this.blockSize;
    const length = nlb * this.blockSize;
    this.stats.reads++;
    const st = timedOut ? STATUS_TIMEOUT : this.doneStatus;
    if (st === STATUS_TIMEOUT) {
      this.stats.timeouts++;
      // The device may still write the buffer: never reuse it.
      this.retired.push({ buf: this.buf, dptr: this.dptr });
      this.buf = this.dma.alloc(this.maxReadBytes, this.dma.pageSize);
      this.dptr = dataPointer(this.dma, this.buf);
      this.fail('timeout', st, offset, length, `timed out after ${this.timeoutMs} ms`);
    }
    if (!isSuccess(st)) this.fail('status', st, offset, length, `failed: ${statusName(st)} (status 0x${st.toString(16)})`);
    this.stats.bytes += length;
  }

  /** Read blocks [lba, lba + nlb) into the DMA buffer, spinning until done (nlb * blockSize <= maxReadBytes). */
  private readBlocks(lba: number, nlb: number): void {
    this.submit(lba, nlb);
    const deadline = performance.now() + this.timeoutMs;
    let spins = 0;
    let timedOut = false;
    while (!this.pollDone()) {
      if (++spins % SPINS_PER_CLOCK === 0 && performance.now() > deadline) {
        timedOut = true;
        break;
      }
      if (spins > SPINS_BEFORE_NAP) Atomics.wait(napWord, 0, 0, NAP_MS);
    }
    this.finish(lba, nlb, timedOut);
  }

  /** The same read without blocking the thread: polls from setImmediate, then from 1 ms timers. */
  private readBlocksAsync(lba: number, nlb: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      try {
        this.submit(lba, nlb);
      } catch (e) {
        reject(e);
        return;
      }
      const start = performance.now();
      const deadline = start + this.timeoutMs;
      const step = (): void => {
        try {
          if (this.closed) this.fail('queue', -1, lba * this.blockSize, nlb * this.blockSize, 'failed: the reader was closed during the read');
          for (let i = 0; i < ASYNC_POLLS_PER_STEP; i++) {
            if (this.pollDone()) {
              this.finish(lba, nlb, false);
              resolve();
              return;
            }
          }
          const now = performance.now();
          if (now > deadline) {
            this.finish(lba, nlb, true);
            return; // finish throws on a timeout
          }
          if (now - start < ASYNC_SPIN_MS) setImmediate(step);
          else setTimeout(step, ASYNC_TIMER_MS);
        } catch (e) {
          reject(e);
        }
      };
      step();
    });
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > this.size) throw new ImageRangeError(offset, length, this.size);
  }

  /** Exactly `out.length` bytes at byte `offset` of the namespace, into `out` (blocks the thread). */
  readInto(offset: number, out: Uint8Array): void {
    const length = out.length;
    this.checkRange(offset, length);
    if (this.asyncBusy) this.fail('queue', -1, offset, length, 'failed: an asynchronous read is in flight on the queue');
    const bs = this.blockSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const lba = Math.floor(pos / bs);
      const skip = pos - lba * bs;
      const nlb = Math.min(this.maxReadBytes / bs, Math.ceil((end - lba * bs) / bs));
      this.readBlocks(lba, nlb);
      const n = Math.min(nlb * bs - skip, end - pos);
      out.set(this.buf.bytes.subarray(skip, skip + n), pos - offset);
      pos += n;
    }
  }

  private asyncBusy = false;
  private asyncTail: Promise<void> = Promise.resolve();

  /**
   * Exactly `out.length` bytes at byte `offset` of the namespace, into `out`, without blocking the thread.
   * Reads queue behind each other (one command at a time on the queue pair).
   */
  readAsync(offset: number, out: Uint8Array): Promise<void> {
    const run = async (): Promise<void> => {
      const length = out.length;
      this.checkRange(offset, length);
      this.asyncBusy = true;
      try {
        const bs = this.blockSize;
        let pos = offset;
        const end = offset + length;
        while (pos < end) {
          const lba = Math.floor(pos / bs);
          const skip = pos - lba * bs;
          const nlb = Math.min(this.maxReadBytes / bs, Math.ceil((end - lba * bs) / bs));
          await this.readBlocksAsync(lba, nlb);
          const n = Math.min(nlb * bs - skip, end - pos);
          out.set(this.buf.bytes.subarray(skip, skip + n), pos - offset);
          pos += n;
        }
      } finally {
        this.asyncBusy = false;
      }
    };
    const p = this.asyncTail.then(run, run);
    this.asyncTail = p.catch(() => undefined);
    return p;
  }

  /** Delete the queue pair and free the buffers (the controller stays up). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.qp.state !== 'deleted') await this.controller.deleteQueuePair(this.qp).catch(() => undefined);
    for (const r of [...this.retired, { buf: this.buf, dptr: this.dptr }]) {
      r.dptr.release();
      this.dma.free(r.buf);
    }
    this.retired.length = 0;
  }
}

/** A BlockSource over a NamespaceReader (a DeviceReader), with an LRU cache of DEVICE_CACHE_CHUNK_BYTES chunks. */
export class DeviceBlockSource implements BlockSource {
  readonly size: number;
  private readonly chunkBytes: number;
  private readonly cache: LruCache<number, Uint8Array>;

  constructor(
    private readonly reader: NamespaceReader,
    opts: { cacheBytes?: number; size?: number } = {},
  ) {
    this.size = Math.min(opts.size ?? reader.size, reader.size);
    this.chunkBytes = Math.max(reader.blockSize, Math.min(DEVICE_CACHE_CHUNK_BYTES, reader.maxReadBytes));
    this.cache = new LruCache(Math.max(4, Math.floor((opts.cacheBytes ?? DEVICE_CACHE_BYTES) / this.chunkBytes)));
  }

  private chunk(index: number): Uint8Array {
    let c = this.cache.get(index);
    if (c !== undefined) return c;
    const start = index * this.chunkBytes;
    c = new Uint8Array(Math.min(this.chunkBytes, this.size - start));
    this.reader.readInto(start, c);
    this.cache.set(index, c);
    return c;
  }

  read(offset: number, length: number): Uint8Array {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new ImageRangeError(offset, length, this.size);
    }
    if (length === 0) return new Uint8Array(0);
    const cb = this.chunkBytes;
    const first = Math.floor(offset / cb);
    const last = Math.floor((offset + length - 1) / cb);
    if (first === last) {
      const o = offset - first * cb;
      return this.chunk(first).subarray(o, o + length);
    }
    const out = new Uint8Array(length);
    if (last - first + 1 > BYPASS_CHUNKS) {
      this.reader.readInto(offset, out);
      return out;
    }
    return copyFromChunks(out, offset, cb, (i) => this.chunk(i));
  }

  /** Drops the cache; the reader (and its queue pair) belongs to whoever opened it. */
  close(): void {
    this.cache.clear();
  }
}
