/**
 * The posix backend: pread / pwrite (fdatasync, fallocate) on a file or block device, optionally O_DIRECT.
 * Synchronous under the hood: submitIo performs the operation at once (one FFI call) and queues its completion;
 * poll delivers completions from a preallocated ring. Nothing is allocated per I/O.
 */
import { fallocateRange, fdatasyncFd, preadAt, pwriteAt, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE } from '../sys/fileio.js';
import { checkBufferFor, checkRange } from './common.js';
import { KernelDevice } from './kernel-device.js';
import type { KernelTarget } from './target.js';
import { IoOp, STATUS_LBA_OUT_OF_RANGE, type BackendName, type IoBuffer, type IoOpcode, type IoQueue, type IoCompletionHandler } from './types.js';
import type { QueueContract } from '../queue/contract.js';
import { errnoStatus } from '../nvme/status.js';

const EIO = 5;
const EINVAL = 22;
/** A short transfer (the kernel moved fewer bytes than asked): EIO, as the block layer reports it. */
const STATUS_EIO = errnoStatus(EIO);
const STATUS_EINVAL = errnoStatus(EINVAL);

/** A system call's "0 or -errno" as a completion status (src/nvme/status.ts). */
function sysStatus(r: number): number {
  return r < 0 ? errnoStatus(-r) : 0;
}

export class PosixDevice extends KernelDevice {
  readonly backend: BackendName = 'posix';
  readonly transport: string;
  constructor(uri: string, target: KernelTarget) {
    super(uri, target, 65536);
    this.transport = `pread/pwrite${target.direct ? ' O_DIRECT' : ''}`;
  }

  override async createQueue(depth: number): Promise<IoQueue> {
    this.checkOpen();
    if (!Number.isInteger(depth) || depth < 1 || depth > this.geometry.maxQueueDepth) throw new RangeError(`queue depth must be 1..${this.geometry.maxQueueDepth}, got ${depth}`);
    const q = new PosixQueue(this, depth, () => this.queues.delete(q));
    this.queues.add(q);
    return q;
  }

  /** Perform one operation now; returns its completion status (0, an NVMe status field, or errnoStatus(errno)). */
  execNow(opcode: number, slba: number, nlb: number, addr: number): number {
    const g = this.geometry;
    const fd = this.target.fd;
    if (opcode !== IoOp.Flush && (slba + nlb > g.blocks || slba < 0 || nlb < 1)) return STATUS_LBA_OUT_OF_RANGE;
    const off = slba * g.blockSize;
    const len = nlb * g.blockSize;
    let r: number;
    switch (opcode) {
      case IoOp.Read:
        r = preadAt(fd, addr, len, off);
        return r === len ? 0 : r < 0 ? errnoStatus(-r) : STATUS_EIO;
      case IoOp.Write:
        r = pwriteAt(fd, addr, len, off);
        return r === len ? 0 : r < 0 ? errnoStatus(-r) : STATUS_EIO;
      case IoOp.Flush:
        return sysStatus(fdatasyncFd(fd));
      case IoOp.WriteZeroes:
        return sysStatus(fallocateRange(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len));
      case IoOp.Deallocate:
        return sysStatus(fallocateRange(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len));
      default:
        return STATUS_EINVAL;
    }
  }
}

class PosixQueue implements IoQueue {
  readonly capacity: number;
  readonly engineQueue: QueueContract = this;
  private readonly tags: Int32Array;
  private readonly statuses: Int32Array;
  private head = 0;
  private count = 0;
  private closed = false;

  constructor(
    private readonly dev: PosixDevice,
    depth: number,
    private readonly onClose: () => void,
  ) {
    this.capacity = depth;
    this.tags = new Int32Array(depth);
    this.statuses = new Int32Array(depth);
  }

  get outstanding(): number {
    return this.count;
  }

  submitIo(opcode: number, _nsid: number, slba: number, nlb: number, h1: number, _h2: number, tag: number): number {
    if (this.count >= this.capacity || this.closed) return -1;
    const status = this.dev.execNow(opcode, slba, nlb, h1);
    let i = this.head + this.count;
    if (i >= this.capacity) i -= this.capacity;
    this.tags[i] = tag;
    this.statuses[i] = status;
    this.count++;
    return i;
  }

  submit(op: IoOpcode, lba: number, nlb: number, buf: IoBuffer | null, tag: number): number {
    checkRange(op, lba, nlb, this.dev.geometry.blocks);
    checkBufferFor(op, nlb, this.dev.geometry.blockSize, buf);
    return this.submitIo(op, 1, lba, nlb, buf ? buf.h1 : 0, buf ? buf.h2 : 0, tag);
  }

  ring(): void {
    /* operations ran at submit */
  }

  poll(onComplete: IoCompletionHandler, max: number = this.capacity): number {
    let n = 0;
    while (this.count > 0 && n < max) {
      const i = this.head;
      this.head = i + 1 === this.capacity ? 0 : i + 1;
      this.count--;
      n++;
      onComplete(this.tags[i]!, this.statuses[i]!, 0);
    }
    return n;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.onClose();
  }
}
