/**
 * Pieces every backend shares: the page-aligned host buffer pool of the kernel paths, argument checks, the
 * Promise helpers over any IoQueue, and status names.
 */
import { allocHostMemory, freeHostMemory, type HostMemory } from '../sys/fileio.js';
import { IoError, IoOp, IoRangeError, ioOpName, type IoBuffer, type IoDevice, type IoOpcode, type IoQueue } from './types.js';

/** One allocation of host memory, or a slice of one. h1 = virtual address, h2 = allocation id. */
export class HostBuffer implements IoBuffer {
  constructor(
    readonly bytes: Uint8Array,
    readonly h1: number,
    readonly h2: number,
    readonly mem: HostMemory | null,
  ) {}
  get size(): number {
    return this.bytes.length;
  }
  slice(offset: number, length: number): IoBuffer {
    checkSlice(this.size, offset, length);
    return new HostBuffer(this.bytes.subarray(offset, offset + length), this.h1 + offset, this.h2, null);
  }
}

export function checkSlice(size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset + length > size) {
    throw new RangeError(`buffer slice [${offset}, ${offset + length}) is outside the ${size}-byte buffer`);
  }
  if (offset % 512 !== 0) throw new RangeError(`buffer slice offset ${offset} is not a multiple of 512`);
}

/** Page-aligned, zeroed host memory (mmap), usable with O_DIRECT and as io_uring registered buffers. */
/** Where a pool's memory comes from: page-aligned mappings, freed one by one. */
export interface MemorySource {
  /** For messages and reports, e.g. 'host memory', 'p2pmem 0000:03:00.0'. */
  readonly describe: string;
  alloc(length: number): HostMemory;
  free(m: HostMemory): void;
}

/** Anonymous host memory (mmap, populated). */
export const HOST_MEMORY: MemorySource = { describe: 'host memory', alloc: allocHostMemory, free: freeHostMemory };

export class HostBufferPool {
  private nextId = 0;
  private readonly live = new Map<number, HostBuffer>();

  constructor(readonly source: MemorySource = HOST_MEMORY) {}

  alloc(size: number): HostBuffer {
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`buffer size must be a positive integer, got ${size}`);
    const length = Math.ceil(size / 4096) * 4096;
    const mem = this.source.alloc(length);
    const b = new HostBuffer(new Uint8Array(mem.buffer, 0, size), mem.address, this.nextId++, mem);
    this.live.set(b.h2, b);
    return b;
  }

  free(buf: IoBuffer): void {
    const b = this.live.get(buf.h2);
    if (!b || b !== buf) throw new RangeError('freeBuffer: not a buffer allocated (and not yet freed) by this device; free the parent, not a slice');
    this.live.delete(b.h2);
    this.source.free(b.mem!);
  }

  /** Live allocations, in id order (for IORING_REGISTER_BUFFERS). */
  allocations(): HostBuffer[] {
    return [...this.live.values()];
  }

  get maxId(): number {
    return this.nextId;
  }

  freeAll(): void {
    for (const b of this.live.values()) this.source.free(b.mem!);
    this.live.clear();
  }
}

export function checkRange(op: IoOpcode, lba: number, nlb: number, blocks: number): void {
  if (op === IoOp.Flush) return;
  if (!Number.isSafeInteger(lba) || !Number.isSafeInteger(nlb) || lba < 0 || nlb < 1) {
    throw new RangeError(`${ioOpName(op)}: LBA ${lba} and block count ${nlb} must be non-negative integers (count >= 1)`);
  }
  if (lba + nlb > blocks) throw new IoRangeError(ioOpName(op), lba, nlb, blocks);
}

export function checkBufferFor(op: IoOpcode, nlb: number, blockSize: number, buf: IoBuffer | null): void {
  if (op === IoOp.Read || op === IoOp.Write) {
    if (buf === null) throw new RangeError(`${ioOpName(op)} needs a buffer`);
    if (buf.size < nlb * blockSize) throw new RangeError(`${ioOpName(op)} of ${nlb} blocks needs ${nlb * blockSize} bytes; the buffer has ${buf.size}`);
  }
}

interface Pending {
  op: IoOpcode;
  resolve: () => void;
  reject: (e: Error) => void;
}

/**
 * Promise helpers over one lazily created queue of a device: each call submits, rings, and resolves when its
 * completion arrives; one pump loop polls while anything is pending (yielding to the event loop between polls).
 */
export class PromiseIo {
  private queue: IoQueue | null = null;
  private opening: Promise<IoQueue> | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextTag = 1;
  private pumping = false;
  private readonly onComplete = (tag: number, status: number): void => {
    const p = this.pending.get(tag);
    if (!p) return;
    this.pending.delete(tag);
    if (status === 0) p.resolve();
    else p.reject(new IoError(ioOpName(p.op), status, this.dev.statusName(status)));
  };

  constructor(
    private readonly dev: IoDevice,
    private readonly depth = 32,
  ) {}

  private async getQueue(): Promise<IoQueue> {
    if (this.queue) return this.queue;
    this.opening ??= this.dev.createQueue(this.depth);
    this.queue = await this.opening;
    return this.queue;
  }

  async exec(op: IoOpcode, lba: number, nlb: number, buf: IoBuffer | null): Promise<void> {
    const q = await this.getQueue();
    const tag = this.nextTag;
    this.nextTag = this.nextTag >= 0x7fffffff ? 1 : this.nextTag + 1;
    const done = new Promise<void>((resolve, reject) => this.pending.set(tag, { op, resolve, reject }));
    try {
      while (q.submit(op, lba, nlb, buf, tag) < 0) {
        q.ring();
        q.poll(this.onComplete);
        await new Promise<void>((r) => setImmediate(r));
      }
    } catch (e) {
      this.pending.delete(tag);
      throw e;
    }
    q.ring();
    void this.pump(q);
    return done;
  }

  private async pump(q: IoQueue): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.pending.size > 0) {
        q.ring();
        if (q.poll(this.onComplete) === 0) await new Promise<void>((r) => setImmediate(r));
      }
    } catch (e) {
      for (const p of this.pending.values()) p.reject(e as Error);
      this.pending.clear();
    } finally {
      this.pumping = false;
    }
  }

  async close(): Promise<void> {
    const q = this.queue ?? (this.opening ? await this.opening : null);
    this.queue = null;
    this.opening = null;
    if (q) await q.close();
  }
}

/**
 * The Promise half of every IoDevice: read / write / flush / write-zeroes / deallocate through one lazily
 * created queue (PromiseIo). Backends extend it and supply createQueue and statusName.
 */
export abstract class PromiseIoDevice {
  protected readonly promises = new PromiseIo(this as unknown as IoDevice);
  abstract createQueue(depth: number): Promise<IoQueue>;
  abstract statusName(status: number): string;
  read(lba: number, nlb: number, buf: IoBuffer): Promise<void> {
    return this.promises.exec(IoOp.Read, lba, nlb, buf);
  }
  write(lba: number, nlb: number, buf: IoBuffer): Promise<void> {
    return this.promises.exec(IoOp.Write, lba, nlb, buf);
  }
  flush(): Promise<void> {
    return this.promises.exec(IoOp.Flush, 0, 0, null);
  }
  writeZeroes(lba: number, nlb: number): Promise<void> {
    return this.promises.exec(IoOp.WriteZeroes, lba, nlb, null);
  }
  deallocate(lba: number, nlb: number): Promise<void> {
    return this.promises.exec(IoOp.Deallocate, lba, nlb, null);
  }
}
