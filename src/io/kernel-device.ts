/** The part of the posix and io_uring devices they share: the target, the host buffer pool, Promise helpers. */
import * as fs from 'node:fs';
import { statusName } from '../nvme/status.js';
import { HostBufferPool, PromiseIoDevice } from './common.js';
import type { KernelTarget } from './target.js';
import type { BackendName, IoBuffer, IoDevice, IoFeatures, IoGeometry, IoQueue } from './types.js';

export abstract class KernelDevice extends PromiseIoDevice implements IoDevice {
  abstract readonly backend: BackendName;
  abstract readonly transport: string;
  readonly geometry: IoGeometry;
  readonly features: IoFeatures = { flush: true, writeZeroes: true, deallocate: true };
  readonly pool = new HostBufferPool();
  protected readonly queues = new Set<IoQueue>();
  private closed = false;

  constructor(
    readonly uri: string,
    readonly target: KernelTarget,
    maxQueueDepth: number,
  ) {
    super();
    this.geometry = {
      blockSize: target.blockSize,
      blocks: Math.floor(target.sizeBytes / target.blockSize),
      maxTransferBytes: target.maxTransferBytes,
      nsid: 1,
      maxQueueDepth,
    };
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
