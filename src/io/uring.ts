/**
 * The io_uring backend: IORING_OP_READ/WRITE (READ_FIXED/WRITE_FIXED on registered buffers), FSYNC and
 * FALLOCATE on a file or block device, optionally O_DIRECT and IORING_SETUP_IOPOLL. One ring per queue set.
 *
 * user_data carries the caller's tag in its low 32 bits and the expected byte count in its high 32 bits, so a
 * short transfer is detected at reaping time without any per-I/O bookkeeping.
 */
import { IORING_FSYNC_DATASYNC, IORING_SETUP_IOPOLL, IoringOp } from '../sys/uring.js';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocateRange, fdatasyncFd } from '../sys/fileio.js';
import { checkBufferFor, checkRange, type MemorySource } from './common.js';
import { KernelDevice } from './kernel-device.js';
import type { KernelTarget } from './target.js';
import { UringRing, registerPoolBuffers, writeRwSqe } from './uring-ring.js';
import { IoOp, IoOpenError, STATUS_LBA_OUT_OF_RANGE, type BackendName, type IoBuffer, type IoCompletionHandler, type IoOpcode, type IoQueue } from './types.js';
import type { QueueContract } from '../queue/contract.js';
import { errnoStatus, statusErrno } from '../nvme/status.js';

const EIO = 5;
const EINVAL = 22;
const EOPNOTSUPP = 95;
/** A short transfer (fewer bytes than asked): EIO, as the block layer reports it. */
const STATUS_EIO = errnoStatus(EIO);
const STATUS_EINVAL = errnoStatus(EINVAL);

/** A system call's "0 or -errno" as a completion status (src/nvme/status.ts). */
function sysStatus(r: number): number {
  return r < 0 ? errnoStatus(-r) : 0;
}
const MAX_RING_ENTRIES = 32768;
/**
 * SQEs queued before submitIo hands them to the kernel itself (ring() submits the rest). Submitting a whole
 * reaped batch in one io_uring_enter (about 11 SQEs at qd 32) was measurably slower than smaller submissions;
 * the likely cause (not verified) is that the kernel plugs a submission of more than 2 SQEs and issues it to the
 * device as one burst. Measured on a 2-core VM (virtio-blk; ext4 O_DIRECT file and a direct-io loop device,
 * 4 KiB randread, qd 32): one enter per batch gave 62-66k IOPS on the file, one per 4 SQEs 73-81k (fio's
 * io_uring, which submits one I/O per enter by default, 79-86k); 2 was as good on the file but not on the loop
 * device, 8 in between. Below qd 4 it never triggers; at qd 32 it costs a few tenths of a us of CPU per I/O.
 */
const SUBMIT_BATCH = 4;

export interface UringDeviceOptions {
  fixedBuffers: boolean;
  hipri: boolean;
  /** Where the data buffers live (default host memory; e.g. p2pmem.ts's p2pmemSource). */
  memory?: MemorySource;
}

export class UringDevice extends KernelDevice {
  readonly backend: BackendName = 'io_uring';
  readonly transport: string;
  /** Where the data buffers live, for reports: 'host memory' or the memory source's own account (e.g. p2pmem). */
  readonly bufferPlacement: string;
  constructor(
    uri: string,
    target: KernelTarget,
    readonly opts: UringDeviceOptions,
  ) {
    super(uri, target, MAX_RING_ENTRIES / 2, opts.memory);
    this.bufferPlacement = opts.memory ? opts.memory.describe : 'host memory';
    this.transport = `io_uring${target.direct ? ' O_DIRECT' : ''}${opts.fixedBuffers ? ' fixed-buffers' : ''}${opts.hipri ? ' IOPOLL' : ''}${opts.memory ? `, buffers in ${opts.memory.describe}` : ''}`;
  }

  override async createQueue(depth: number): Promise<IoQueue> {
    this.checkOpen();
    if (!Number.isInteger(depth) || depth < 1 || depth > this.geometry.maxQueueDepth) throw new RangeError(`queue depth must be 1..${this.geometry.maxQueueDepth}, got ${depth}`);
    const q = new UringQueue(this, depth, () => this.queues.delete(q));
    this.queues.add(q);
    return q;
  }

  /**
   * For --hipri: one polled 1-block read at LBA 0; refuses (IoOpenError) when the target cannot do polled I/O.
   * Regular files and devices without poll queues complete it with EOPNOTSUPP (or EINVAL).
   */
  async probePolled(): Promise<void> {
    const buf = this.allocBuffer(this.geometry.blockSize);
    const q = (await this.createQueue(1)) as UringQueue;
    const once = (op: number): number => {
      let status = 1;
      q.submitIo(op, 1, 0, 1, buf.h1, buf.h2, 7);
      const deadline = performance.now() + 5000;
      while (status === 1 && performance.now() < deadline) {
        q.ring();
        q.poll((_t, s) => (status = s));
      }
      return status;
    };
    try {
      let status = once(IoOp.Read);
      // A read of a hole in a file never reaches the device; write the block back (same bytes) to be sure.
      // Writes that allocate may complete without polling, so read the now-allocated block once more.
      if (status === 0 && this.target.type === 'file') status = once(IoOp.Write);
      if (status === 0 && this.target.type === 'file') status = once(IoOp.Read);
      const errno = statusErrno(status);
      if (errno === EOPNOTSUPP || errno === EINVAL) {
        throw new IoOpenError(
          `--hipri: '${this.target.path}' cannot do polled I/O (IORING_SETUP_IOPOLL read failed with ${errno === EINVAL ? 'EINVAL' : 'EOPNOTSUPP'}): ${this.target.type === 'file' ? 'a regular file is served by its block device, and that one has no poll queues' : 'the block device has no poll queues (e.g. nvme.poll_queues=0)'}`,
        );
      }
      if (status !== 0) throw new IoOpenError(`--hipri: a polled probe read of '${this.target.path}' failed: ${this.statusName(status)}`);
    } finally {
      await q.close();
      this.freeBuffer(buf);
    }
  }
}

class UringQueue implements IoQueue {
  readonly capacity: number;
  readonly engineQueue: QueueContract = this;
  private readonly ring_: UringRing;
  private readonly w: Uint32Array;
  private readonly fd: number;
  private readonly blockSize: number;
  private readonly blocks: number;
  /** Registered-buffer index by allocation id (-1: not registered). */
  private readonly fixedIndex: Int32Array;
  private outstanding_ = 0;
  /** Completions made locally (range errors), delivered by poll. */
  private readonly localTags: Int32Array;
  private readonly localStatus: Int32Array;
  private nLocal = 0;
  private closed = false;

  constructor(
    private readonly dev: UringDevice,
    depth: number,
    private readonly onClose: () => void,
  ) {
    this.capacity = depth;
    this.ring_ = new UringRing({ entries: depth, flags: dev.opts.hipri ? IORING_SETUP_IOPOLL : 0 });
    this.w = this.ring_.sqes;
    this.fd = dev.target.fd;
    this.blockSize = dev.geometry.blockSize;
    this.blocks = dev.geometry.blocks;
    this.localTags = new Int32Array(depth);
    this.localStatus = new Int32Array(depth);
    this.fixedIndex = registerPoolBuffers(this.ring_, dev.pool, dev.opts.fixedBuffers === true);
  }

  get outstanding(): number {
    return this.outstanding_ + this.nLocal;
  }

  submitIo(opcode: number, _nsid: number, slba: number, nlb: number, h1: number, h2: number, tag: number): number {
    if (this.outstanding_ + this.nLocal >= this.capacity || this.closed) return -1;
    if (opcode !== IoOp.Flush && (slba + nlb > this.blocks || slba < 0 || nlb < 1)) {
      this.localTags[this.nLocal] = tag;
      this.localStatus[this.nLocal++] = STATUS_LBA_OUT_OF_RANGE;
      return 0;
    }
    if (this.dev.opts.hipri && opcode !== IoOp.Read && opcode !== IoOp.Write) {
      // An IOPOLL ring takes only pollable operations (fsync and fallocate fail there with EINVAL): run the
      // others synchronously and deliver their completion through poll, like a range error.
      this.localTags[this.nLocal] = tag;
      this.localStatus[this.nLocal++] = this.syncOp(opcode, slba, nlb);
      return 0;
    }
    const at = this.ring_.nextSqe();
    if (at < 0) return -1;
    const w = this.w;
    const off = slba * this.blockSize;
    const len = nlb * this.blockSize;
    let op: number;
    let addr = 0;
    let length = 0;
    let opFlags = 0;
    let bufIndex = 0;
    let expect = 0;
    switch (opcode) {
      case IoOp.Read:
      case IoOp.Write: {
        const fixed = h2 < this.fixedIndex.length ? this.fixedIndex[h2]! : -1;
        if (fixed >= 0) {
          op = opcode === IoOp.Read ? IoringOp.ReadFixed : IoringOp.WriteFixed;
          bufIndex = fixed;
        } else op = opcode === IoOp.Read ? IoringOp.Read : IoringOp.Write;
        addr = h1;
        length = len;
        expect = len;
        break;
      }
      case IoOp.Flush:
        op = IoringOp.Fsync;
        opFlags = IORING_FSYNC_DATASYNC;
        break;
      case IoOp.WriteZeroes:
      case IoOp.Deallocate:
        // fallocate: sqe.off = offset, sqe.addr = length, sqe.len = mode.
        op = IoringOp.Fallocate;
        addr = len;
        length = opcode === IoOp.WriteZeroes ? FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
        break;
      default:
        return -1;
    }
    const fileOff = opcode === IoOp.Flush ? 0 : off;
    writeRwSqe(w, at, op, this.fd, fileOff, addr, length, opFlags, tag, expect, bufIndex);
    const r = this.ring_;
    r.commit();
    this.outstanding_++;
    if (r.unsubmitted >= SUBMIT_BATCH) r.flush();
    return 0;
  }

  /** Flush / write zeroes / deallocate done at once (for IOPOLL rings); returns their completion status. */
  private syncOp(opcode: number, slba: number, nlb: number): number {
    const off = slba * this.blockSize;
    const len = nlb * this.blockSize;
    switch (opcode) {
      case IoOp.Flush:
        return sysStatus(fdatasyncFd(this.fd));
      case IoOp.WriteZeroes:
        return sysStatus(fallocateRange(this.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len));
      case IoOp.Deallocate:
        return sysStatus(fallocateRange(this.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len));
      default:
        return STATUS_EINVAL;
    }
  }

  submit(op: IoOpcode, lba: number, nlb: number, buf: IoBuffer | null, tag: number): number {
    checkRange(op, lba, nlb, this.blocks);
    checkBufferFor(op, nlb, this.blockSize, buf);
    return this.submitIo(op, 1, lba, nlb, buf ? buf.h1 : 0, buf ? buf.h2 : 0, tag);
  }

  /** Submit what is queued; when nothing is ready to reap, wait in the same system call for one completion. */
  ring(): void {
    const r = this.ring_;
    const pending = r.unsubmitted;
    if (pending === 0 && (this.outstanding_ === 0 || r.cqReady() > 0)) return;
    r.enter(this.nLocal === 0 && r.cqReady() === 0 && this.outstanding_ > 0 ? 1 : 0);
  }

  poll(onComplete: IoCompletionHandler, max: number = this.capacity): number {
    let n = 0;
    if (this.nLocal > 0) {
      const k = this.nLocal;
      this.nLocal = 0;
      for (let i = 0; i < k; i++) onComplete(this.localTags[i]!, this.localStatus[i]!, 0);
      n += k;
    }
    const r = this.ring_;
    let head = r.cqHead();
    let tail = r.cqTail();
    if (head === tail && this.outstanding_ > 0 && n === 0) {
      // Nothing reaped yet: one enter runs deferred task work (and IOPOLL) and waits for a completion.
      r.enter(1);
      tail = r.cqTail();
    }
    while (head !== tail && n < max) {
      const idx = r.cqeIndex(head);
      const tag = r.cqWord(idx) | 0;
      const expect = r.cqWord(idx + 1);
      const res = r.cqI32[idx + 2]!;
      head = (head + 1) >>> 0;
      this.outstanding_--;
      n++;
      onComplete(tag, res < 0 ? errnoStatus(-res) : expect !== 0 && res !== expect ? STATUS_EIO : 0, res);
    }
    r.advanceCq(head);
    return n;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Let in-flight I/O finish before the ring (and the memory it targets) goes away.
    const deadline = performance.now() + 10_000;
    while (this.outstanding_ > 0 && performance.now() < deadline) {
      this.ring_.enter(0);
      this.poll(() => undefined);
    }
    this.ring_.close();
    this.onClose();
  }
}
