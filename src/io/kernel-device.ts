/** The part of the posix and io_uring devices they share: the target, the host buffer pool, Promise helpers. */
import * as fs from 'node:fs';
import { statusName } from '../nvme/status.js';
import { errnoName } from '../sys/libc.js';
import { dropPageCache, fadviseRange, POSIX_FADV_RANDOM, POSIX_FADV_SEQUENTIAL } from '../sys/fileio.js';
import { HOST_MEMORY, HostBufferPool, PromiseIoDevice, type MemorySource } from './common.js';
import type { KernelTarget } from './target.js';
import type { BackendName, IoBuffer, IoDevice, IoFeatures, IoGeometry, IoQueue } from './types.js';

/** statfs(2) f_type of tmpfs: its page cache is the file's storage, and dropping it is a no-op. */
const TMPFS_MAGIC = 0x01021994;

export abstract class KernelDevice extends PromiseIoDevice implements IoDevice {
  abstract readonly backend: BackendName;
  abstract readonly transport: string;
  readonly geometry: IoGeometry;
  readonly features: IoFeatures = { flush: true, writeZeroes: true, deallocate: true };
  /** The data buffers: host memory, or (io_uring) a PCI function's p2pmem. */
  readonly pool: HostBufferPool;
  protected readonly queues = new Set<IoQueue>();
  private closed = false;

  constructor(
    readonly uri: string,
    readonly target: KernelTarget,
    maxQueueDepth: number,
    memory: MemorySource = HOST_MEMORY,
  ) {
    super();
    this.pool = new HostBufferPool(memory);
    this.geometry = {
      blockSize: target.blockSize,
      blocks: Math.floor(target.sizeBytes / target.blockSize),
      maxTransferBytes: target.maxTransferBytes,
      nsid: 1,
      maxQueueDepth,
    };
  }

  /** Without O_DIRECT the page cache is in the path. */
  get buffered(): boolean {
    return !this.target.direct;
  }

  invalidateCache(offset: number, length: number): string | null {
    this.checkOpen();
    const r = dropPageCache(this.target.fd, offset, length);
    if (r < 0) throw new Error(`${this.target.path}: cannot drop the page cache (fdatasync, posix_fadvise DONTNEED): ${errnoName(-r)}`);
    if (this.target.type === 'file' && fs.statfsSync(this.target.path).type === TMPFS_MAGIC) return 'tmpfs: the page cache is the file itself; it cannot be invalidated';
    return null;
  }

  /** posix_fadvise on the whole file, as fio's fadvise_hint (RANDOM turns readahead off for this descriptor). */
  adviseAccess(pattern: 'random' | 'sequential'): void {
    this.checkOpen();
    const r = fadviseRange(this.target.fd, 0, 0, pattern === 'random' ? POSIX_FADV_RANDOM : POSIX_FADV_SEQUENTIAL);
    if (r < 0) throw new Error(`${this.target.path}: posix_fadvise ${pattern.toUpperCase()}: ${errnoName(-r)}`);
  }

  get model(): string {
    return `${this.target.type === 'block' ? 'block device' : 'file'} ${this.target.path}`;
  }

  allocBuffer(size: number): IoBuffer {
    return this.pool.alloc(size);
  }
  freeBuffer(buf: IoBuffer): void {
    this.pool.free(buf);
  }
  override statusName(status: number): string {
    return statusName(status);
  }
  protected checkOpen(): void {
    if (this.closed) throw new Error(`${this.uri}: device is closed`);
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.promises.close();
    for (const q of [...this.queues]) await q.close();
    this.pool.freeAll();
    fs.closeSync(this.target.fd);
  }
}
