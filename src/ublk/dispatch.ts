/**
 * The ublk request dispatcher of one ublk queue: it turns the kernel's I/O descriptors (op, flags, start sector,
 * sector count) into NVMe commands on the NVMe queue pair that serves that ublk queue, and NVMe completions into
 * the result the server commits to the kernel (bytes transferred, 0, or a negative errno).
 *
 * Data movement: every ublk tag owns one DMA buffer of the queue pair's data region (page aligned, bufBytes long)
 * with its PRPs built once (PRP1 = the buffer, PRP2 = its second page or its PRP list). The server gives the
 * kernel that same buffer's virtual address in FETCH_REQ / COMMIT_AND_FETCH_REQ, so the kernel copies a write's
 * bio pages straight into the memory the NVMe Write then reads by DMA, and a read's data from the memory the
 * NVMe Read wrote into the bio pages: the kernel's bio <-> server-buffer copy is the only copy. (6.12 offers no
 * zero copy: UBLK_F_SUPPORT_ZERO_COPY is masked off by ADD_DEV; UBLK_F_USER_COPY only moves the same copy into
 * pread/pwrite calls of the server.)
 *
 * Address mapping: the ublk device shows the namespace's LBA range [rangeStart, rangeStart + rangeBlocks) with
 * the namespace's block size as its logical block size, so ublk byte offset B is namespace LBA
 * rangeStart + B / blockSize. A request that is not block aligned, is empty, runs past the range or exceeds the
 * tag's buffer is refused with -EINVAL / -EIO before anything reaches the controller.
 *
 * Fast path: start() and poll() allocate nothing, create no closure or Promise and make no FFI call.
 */
import type { DmaAllocator, DmaBuffer } from '../mem/dma.js';
import { dataPointer, type DataPointer } from '../driver/dptr.js';
import type { QueuePair } from '../driver/queue-pair.js';
import { statusSc, statusSct } from '../nvme/cqe.js';
import { DSM_ATTR_DEALLOCATE, DSM_RANGE_SIZE, NvmOpcode } from '../nvme/opcodes.js';
import { sqeCdw0, writeCmdSqe } from '../nvme/sqe.js';
import { GenericStatus, HostCause, Sct, statusCause, statusErrno } from '../nvme/status.js';
import { UBLK_IO_OP_MASK, UBLK_SECTOR_SHIFT, UblkIoOp } from '../sys/ublk.js';

/** errno values the results use (positive, as errno(3) has them). */
export const Errno = {
  EIO: 5,
  ENOMEM: 12,
  EBUSY: 16,
  EINVAL: 22,
  ENOSPC: 28,
  EROFS: 30,
  EBADE: 52,
  ENODATA: 61,
  ENOLINK: 67,
  EOPNOTSUPP: 95,
  ETIMEDOUT: 110,
  EREMOTEIO: 121,
} as const;

/** The namespace range a ublk device shows. */
export interface UblkTarget {
  nsid: number;
  /** The namespace's LBA size in bytes (the ublk device's logical block size). */
  blockSize: number;
  /** First namespace LBA of the range. */
  rangeStart: number;
  /** LBAs in the range. */
  rangeBlocks: number;
}

/** The NVMe queue operations the dispatcher uses (a QueuePair, or an AttachedQueuePair in the server's worker). */
export type DispatchQueue = Pick<QueuePair, 'submitIo' | 'submitSqe' | 'ring' | 'poll' | 'capacity' | 'outstanding'>;

/**
 * The negative errno the kernel gets for an NVMe completion status that is not success: what the kernel's own
 * NVMe driver would turn it into (nvme_error_status), so a file system on the ublk device sees the same errors as
 * on /dev/nvmeXnY: invalid opcode / field -> EOPNOTSUPP, LBA out of range -> EREMOTEIO, capacity exceeded ->
 * ENOSPC, write protected -> EROFS, reservation conflict -> EBADE, media and data integrity errors -> ENODATA,
 * path errors -> ENOLINK, a host timeout -> ETIMEDOUT, a kernel errno -> that errno, anything else -> EIO.
 */
export function errnoForStatus(status: number): number {
  const cause = statusCause(status);
  if (cause === HostCause.Timeout) return -Errno.ETIMEDOUT;
  if (cause === HostCause.Errno) return -(statusErrno(status) || Errno.EIO);
  if (cause !== HostCause.None) return -Errno.EIO;
  const sct = statusSct(status);
  const sc = statusSc(status);
  if (sct === Sct.Generic) {
    switch (sc) {
      case GenericStatus.Success:
        return 0;
      case GenericStatus.InvalidOpcode:
      case GenericStatus.InvalidField:
        return -Errno.EOPNOTSUPP;
      case GenericStatus.LbaOutOfRange:
        return -Errno.EREMOTEIO;
      case GenericStatus.CapacityExceeded:
        return -Errno.ENOSPC;
      case GenericStatus.NamespaceWriteProtected:
        return -Errno.EROFS;
      case GenericStatus.ReservationConflict:
        return -Errno.EBADE;
      default:
        return -Errno.EIO;
    }
  }
  if (sct === Sct.MediaDataIntegrity) return -Errno.ENODATA;
  if (sct === Sct.PathRelated) return -Errno.ENOLINK;
  return -Errno.EIO;
}

/** Why start() refused a descriptor without touching the controller (for counters and tests). */
export const Refusal = { None: 0, Unaligned: 1, OutOfRange: 2, TooLarge: 3, Unsupported: 4, Busy: 5 } as const;

export interface DispatchCounters {
  reads: number;
  writes: number;
  flushes: number;
  discards: number;
  writeZeroes: number;
  errors: number;
  refused: number;
  bytesRead: number;
  bytesWritten: number;
}

/** What a finished request reports: its tag and the result to commit (bytes, 0 or -errno). */
export type DoneHandler = (tag: number, result: number) => void;

const TAG_IDLE = 0;
const TAG_BUSY = 1;

export class UblkQueueDispatcher {
  readonly depth: number;
  readonly bufBytes: number;
  /** Each tag's data buffer (its bytes are the view the kernel's copy and the controller's DMA share). */
  readonly buffers: DmaBuffer[] = [];
  readonly counters: DispatchCounters = { reads: 0, writes: 0, flushes: 0, discards: 0, writeZeroes: 0, errors: 0, refused: 0, bytesRead: 0, bytesWritten: 0 };
  /** The refusal reason of the latest start() that returned an errno (Refusal.*). */
  lastRefusal: number = Refusal.None;
  private readonly pointers: DataPointer[] = [];
  private readonly prp1: Float64Array;
  private readonly page2: Float64Array;
  private readonly prpList: Float64Array;
  private readonly pageSize: number;
  /** Per tag: the op, the bytes it moves and whether it is in flight. */
  private readonly tagOp: Uint8Array;
  private readonly tagBytes: Float64Array;
  private readonly tagState: Uint8Array;
  /** One DSM range per tag. */
  private readonly ranges: DmaBuffer;
  private readonly rangeView: DataView;
  private readonly onDone: DoneHandler;
  private readonly handler: (tag: number, status: number) => void;
  /** Operands of the command submitSqe's fill writes (set just before the call: no closure per I/O). */
  private fOpcode = 0;
  private fPrp1 = 0;
  private fCdw10 = 0;
  private fCdw11 = 0;
  private readonly fill: (dw: Uint32Array, at: number) => void;
  private released = false;

  constructor(
    private readonly qp: DispatchQueue,
    private readonly dma: DmaAllocator,
    readonly target: UblkTarget,
    depth: number,
    bufBytes: number,
    onDone: DoneHandler,
  ) {
    validateTarget(target);
    if (!Number.isInteger(depth) || depth < 1 || depth > qp.capacity) throw new RangeError(`ublk queue depth must be 1..${qp.capacity} (the NVMe queue's capacity), got ${depth}`);
    this.pageSize = dma.pageSize;
    if (!Number.isInteger(bufBytes) || bufBytes < target.blockSize || bufBytes % this.pageSize !== 0) {
      throw new RangeError(`ublk I/O buffer must be a whole number of ${this.pageSize}-byte pages and at least one block (${target.blockSize}), got ${bufBytes}`);
    }
    this.depth = depth;
    this.bufBytes = bufBytes;
    this.onDone = onDone;
    this.prp1 = new Float64Array(depth);
    this.page2 = new Float64Array(depth);
    this.prpList = new Float64Array(depth);
    this.tagOp = new Uint8Array(depth);
    this.tagBytes = new Float64Array(depth);
    this.tagState = new Uint8Array(depth);
    try {
      for (let t = 0; t < depth; t++) {
        const b = dma.alloc(bufBytes, this.pageSize);
        this.buffers.push(b);
        const dp = dataPointer(dma, b);
        this.pointers.push(dp);
        this.prp1[t] = b.iova;
        this.page2[t] = bufBytes > this.pageSize ? b.iova + this.pageSize : 0;
        this.prpList[t] = dp.list !== null ? dp.prp2 : this.page2[t]!;
      }
      this.ranges = dma.alloc(Math.max(this.pageSize, depth * DSM_RANGE_SIZE), this.pageSize);
    } catch (e) {
      this.releaseBuffers();
      throw e;
    }
    this.rangeView = new DataView(this.ranges.bytes.buffer, this.ranges.bytes.byteOffset, this.ranges.size);
    this.handler = (tag, status) => this.complete(tag, status);
    this.fill = (dw, at) => writeCmdSqe(dw, at, sqeCdw0(this.fOpcode, 0), this.target.nsid, this.fPrp1, 0, this.fCdw10, this.fCdw11, 0);
  }

  /** Requests in flight on the controller. */
  get inFlight(): number {
    return this.qp.outstanding;
  }

  /**
   * Start the request the kernel put in tag `tag`'s descriptor. Returns 0 when a command was queued (its result
   * comes through onDone after poll()), or the negative errno to commit at once (the request was refused before
   * reaching the controller). Does not ring the doorbell: call ring() after a batch.
   */
  start(tag: number, opFlags: number, nrSectors: number, startSector: number): number {
    if (!(tag >= 0 && tag < this.depth) || this.tagState[tag] !== TAG_IDLE) return this.refuse(Refusal.Busy, -Errno.EBUSY);
    const op = opFlags & UBLK_IO_OP_MASK;
    const t = this.target;
    if (op === UblkIoOp.Flush) {
      this.fOpcode = NvmOpcode.Flush;
      this.fPrp1 = 0;
      this.fCdw10 = 0;
      this.fCdw11 = 0;
      return this.queued(tag, op, 0, this.qp.submitSqe(this.fill, tag));
    }
    const bs = t.blockSize;
    const byteOff = startSector * (1 << UBLK_SECTOR_SHIFT);
    const bytes = nrSectors * (1 << UBLK_SECTOR_SHIFT);
    if (nrSectors === 0 || byteOff % bs !== 0 || bytes % bs !== 0) return this.refuse(Refusal.Unaligned, -Errno.EINVAL);
    const lba = byteOff / bs;
    const nlb = bytes / bs;
    if (lba + nlb > t.rangeBlocks) return this.refuse(Refusal.OutOfRange, -Errno.EIO);
    const slba = t.rangeStart + lba;
    switch (op) {
      case UblkIoOp.Read:
      case UblkIoOp.Write: {
        if (bytes > this.bufBytes || nlb > 0x10000) return this.refuse(Refusal.TooLarge, -Errno.EINVAL);
        const prp2 = bytes <= this.pageSize ? 0 : bytes <= 2 * this.pageSize ? this.page2[tag]! : this.prpList[tag]!;
        const opcode = op === UblkIoOp.Read ? NvmOpcode.Read : NvmOpcode.Write;
        return this.queued(tag, op, bytes, this.qp.submitIo(opcode, t.nsid, slba, nlb, this.prp1[tag]!, prp2, tag));
      }
      case UblkIoOp.WriteZeroes:
        if (nlb > 0x10000) return this.refuse(Refusal.TooLarge, -Errno.EINVAL);
        return this.queued(tag, op, 0, this.qp.submitIo(NvmOpcode.WriteZeroes, t.nsid, slba, nlb, 0, 0, tag));
      case UblkIoOp.Discard: {
        const o = tag * DSM_RANGE_SIZE;
        const v = this.rangeView;
        v.setUint32(o, 0, true); // context attributes
        v.setUint32(o + 4, nlb, true);
        v.setUint32(o + 8, slba >>> 0, true);
        v.setUint32(o + 12, (slba / 4294967296) >>> 0, true);
        this.fOpcode = NvmOpcode.DatasetManagement;
        this.fPrp1 = this.ranges.iova + o;
        this.fCdw10 = 0; // NR: one range
        this.fCdw11 = DSM_ATTR_DEALLOCATE;
        return this.queued(tag, op, 0, this.qp.submitSqe(this.fill, tag));
      }
      default:
        return this.refuse(Refusal.Unsupported, -Errno.EOPNOTSUPP);
    }
  }

  private refuse(reason: number, errno: number): number {
    this.lastRefusal = reason;
    this.counters.refused++;
    return errno;
  }

  private queued(tag: number, op: number, bytes: number, cid: number): number {
    // the NVMe queue holds at least `depth` commands and each tag has at most one in flight
    if (cid < 0) return this.refuse(Refusal.Busy, -Errno.EBUSY);
    this.tagState[tag] = TAG_BUSY;
    this.tagOp[tag] = op;
    this.tagBytes[tag] = bytes;
    this.lastRefusal = Refusal.None;
    return 0;
  }

  ring(): void {
    this.qp.ring();
  }

  /** Reap NVMe completions; onDone runs for each finished request. Returns how many finished. */
  poll(): number {
    return this.qp.poll(this.handler);
  }

  private complete(tag: number, status: number): void {
    if (!(tag >= 0 && tag < this.depth) || this.tagState[tag] !== TAG_BUSY) return;
    this.tagState[tag] = TAG_IDLE;
    const op = this.tagOp[tag]!;
    const c = this.counters;
    let result: number;
    if (status === 0) {
      const bytes = this.tagBytes[tag]!;
      result = bytes;
      switch (op) {
        case UblkIoOp.Read:
          c.reads++;
          c.bytesRead += bytes;
          break;
        case UblkIoOp.Write:
          c.writes++;
          c.bytesWritten += bytes;
          break;
        case UblkIoOp.Flush:
          c.flushes++;
          break;
        case UblkIoOp.Discard:
          c.discards++;
          break;
        default:
          c.writeZeroes++;
      }
    } else {
      c.errors++;
      result = errnoForStatus(status);
      if (result === 0) result = -Errno.EIO;
    }
    this.onDone(tag, result);
  }

  /** Free the buffers and PRP lists (the queue pair must be idle or gone). Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.releaseBuffers();
    this.dma.free(this.ranges);
  }

  private releaseBuffers(): void {
    for (const p of this.pointers) p.release();
    for (const b of this.buffers) this.dma.free(b);
    this.pointers.length = 0;
    this.buffers.length = 0;
  }
}

/** Throws RangeError naming the bad field of a target. */
export function validateTarget(t: UblkTarget): void {
  if (!Number.isInteger(t.nsid) || t.nsid < 1 || t.nsid > 0xfffffffe) throw new RangeError(`nsid must be 1..0xfffffffe, got ${t.nsid}`);
  if (!Number.isInteger(t.blockSize) || t.blockSize < 512 || t.blockSize > 65536 || (t.blockSize & (t.blockSize - 1)) !== 0) {
    throw new RangeError(`block size must be a power of two in 512..65536, got ${t.blockSize}`);
  }
  if (!Number.isSafeInteger(t.rangeStart) || t.rangeStart < 0) throw new RangeError(`range start must be a non-negative LBA, got ${t.rangeStart}`);
  if (!Number.isSafeInteger(t.rangeBlocks) || t.rangeBlocks < 1) throw new RangeError(`range count must be a positive number of LBAs, got ${t.rangeBlocks}`);
}
