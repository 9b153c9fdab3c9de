/**
 * The io_uring_cmd backend: NVMe commands passed through the kernel's NVMe driver on the generic char device
 * /dev/ngXnY with IORING_OP_URING_CMD on a ring set up with IORING_SETUP_SQE128 | IORING_SETUP_CQE32.
 *
 * struct nvme_uring_cmd (72 bytes, placed at sqe offset 48, the `cmd` area):
 *   opcode 0 (u8), flags 1 (u8), rsvd1 2 (u16), nsid 4, cdw2 8, cdw3 12, metadata 16 (u64), addr 24 (u64),
 *   metadata_len 32, data_len 36, cdw10 40, cdw11 44, cdw12 48, cdw13 52, cdw14 56, cdw15 60, timeout_ms 64,
 *   rsvd2 68.
 * sqe.cmd_op (offset 8) = NVME_URING_CMD_IO = _IOWR('N', 0x80, struct nvme_uring_cmd).
 * Completion: cqe.res = 0, a positive NVMe status field, or -errno (delivered as errnoStatus(errno), see
 * src/nvme/status.ts); big_cqe[0] = the command's result (DW0).
 */
import * as fs from 'node:fs';
import { IORING_SETUP_CQE32, IORING_SETUP_IOPOLL, IORING_SETUP_SQE128, IORING_URING_CMD_FIXED, IoringOp, Sqe } from '../sys/uring.js';
import { allocHostMemory, freeHostMemory, type HostMemory } from '../sys/fileio.js';
import { ioctl } from '../sys/libc.js';
import { NVME_IOCTL_ID, NVME_IOCTL_TYPE, NVME_PASSTHRU_CMD_SIZE, iowr } from '../sys/nvme-ioctl.js';
import { HostBufferPool, PromiseIoDevice, checkBufferFor, checkRange } from './common.js';
import { UringRing, registerPoolBuffers } from './uring-ring.js';
import { IoOp, IoOpenError, type BackendName, type IoBuffer, type IoCompletionHandler, type IoDevice, type IoFeatures, type IoGeometry, type IoOpcode, type IoQueue } from './types.js';
import type { QueueContract } from '../queue/contract.js';
import { STATUS_FIELD_MASK, errnoStatus, statusName } from '../nvme/status.js';

export { iowr, NVME_IOCTL_ID } from '../sys/nvme-ioctl.js';
/** sizeof(struct nvme_uring_cmd): struct nvme_passthru_cmd's layout (src/sys/nvme-ioctl.ts). */
export const NVME_URING_CMD_SIZE = NVME_PASSTHRU_CMD_SIZE;
export const NVME_URING_CMD_IO = iowr(NVME_IOCTL_TYPE, 0x80, NVME_URING_CMD_SIZE);
const DSM_ATTR_DEALLOCATE = 1 << 2;
const TWO32 = 4294967296;

export interface NvmeUringCmd {
  opcode: number;
  nsid: number;
  addr: number;
  dataLen: number;
  cdw10: number;
  cdw11: number;
  cdw12: number;
  cdw13?: number;
  timeoutMs?: number;
}

/**
 * Write one IORING_OP_URING_CMD SQE (128 bytes: 32 words from word `at`) carrying `cmd`. `bufIndex` >= 0 uses a
 * registered buffer (IORING_URING_CMD_FIXED).
 */
export function encodeUringCmdSqe(w: Uint32Array, at: number, fd: number, tag: number, cmd: NvmeUringCmd, bufIndex = -1): void {
  for (let i = 0; i < 32; i++) w[at + i] = 0;
  w[at] = IoringOp.UringCmd;
  w[at + (Sqe.fd >> 2)] = fd;
  w[at + (Sqe.cmdOp >> 2)] = NVME_URING_CMD_IO;
  w[at + (Sqe.opFlags >> 2)] = bufIndex >= 0 ? IORING_URING_CMD_FIXED : 0;
  w[at + (Sqe.userData >> 2)] = tag;
  w[at + (Sqe.bufIndex >> 2)] = bufIndex >= 0 ? bufIndex : 0;
  const c = at + (Sqe.cmd >> 2);
  w[c] = cmd.opcode & 0xff; // opcode, flags 0, rsvd1 0
  w[c + 1] = cmd.nsid >>> 0;
  w[c + 6] = cmd.addr >>> 0;
  w[c + 7] = (cmd.addr / TWO32) >>> 0;
  w[c + 9] = cmd.dataLen >>> 0;
  w[c + 10] = cmd.cdw10 >>> 0;
  w[c + 11] = cmd.cdw11 >>> 0;
  w[c + 12] = cmd.cdw12 >>> 0;
  w[c + 13] = (cmd.cdw13 ?? 0) >>> 0;
  w[c + 16] = (cmd.timeoutMs ?? 0) >>> 0;
}

/** The NVMe command for one operation of the unified interface. */
export function nvmeCommandFor(op: number, nsid: number, slba: number, nlb: number, addr: number, blockSize: number): NvmeUringCmd {
  const lo = slba >>> 0;
  const hi = (slba / TWO32) >>> 0;
  switch (op) {
    case IoOp.Read:
    case IoOp.Write:
      return { opcode: op, nsid, addr, dataLen: nlb * blockSize, cdw10: lo, cdw11: hi, cdw12: (nlb - 1) & 0xffff };
    case IoOp.Flush:
      return { opcode: op, nsid, addr: 0, dataLen: 0, cdw10: 0, cdw11: 0, cdw12: 0 };
    case IoOp.WriteZeroes:
      return { opcode: op, nsid, addr: 0, dataLen: 0, cdw10: lo, cdw11: hi, cdw12: (nlb - 1) & 0xffff };
    case IoOp.Deallocate:
      // addr: one 16-byte DSM range (filled by the caller); NR = 0 (one range), AD.
      return { opcode: op, nsid, addr, dataLen: 16, cdw10: 0, cdw11: DSM_ATTR_DEALLOCATE, cdw12: 0 };
    default:
      throw new RangeError(`opcode 0x${op.toString(16)} is not an operation of the I/O interface`);
  }
}

function readSys(path: string): string | null {
  try {
    return fs.readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

export interface UringCmdOptions {
  fixedBuffers: boolean;
  hipri: boolean;
}

export class UringCmdDevice extends PromiseIoDevice implements IoDevice {
  readonly backend: BackendName = 'io_uring_cmd';
  readonly transport: string;
  readonly model: string;
  readonly geometry: IoGeometry;
  readonly features: IoFeatures = { flush: true, writeZeroes: true, deallocate: true };
  readonly pool = new HostBufferPool();
  private readonly queues = new Set<IoQueue>();

  private constructor(
    readonly uri: string,
    readonly path: string,
    readonly fd: number,
    geometry: IoGeometry,
    model: string,
    readonly opts: UringCmdOptions,
  ) {
    super();
    this.geometry = geometry;
    this.model = model;
    this.transport = `io_uring_cmd NVMe passthrough${opts.fixedBuffers ? ' fixed-buffers' : ''}${opts.hipri ? ' IOPOLL' : ''}`;
  }

  static open(uri: string, path: string, opts: UringCmdOptions): UringCmdDevice {
    const m = /^\/dev\/ng(\d+)n(\d+)$/.exec(path);
    if (!m) throw new IoOpenError(`io_uring_cmd needs an NVMe generic char device /dev/ngXnY; '${path}' is not one`);
    if (!fs.existsSync(path)) {
      let have: string[] = [];
      try {
        have = fs.readdirSync('/dev').filter((n) => /^ng\d+n\d+$/.test(n));
      } catch {
        have = [];
      }
      throw new IoOpenError(
        `'${path}' does not exist: ${have.length === 0 ? 'this machine has no NVMe generic char devices (/dev/ng*; they need an NVMe controller bound to the kernel nvme driver)' : `present: ${have.map((n) => `/dev/${n}`).join(', ')}`}`,
      );
    }
    const st = fs.statSync(path);
    if (!st.isCharacterDevice()) throw new IoOpenError(`'${path}' is not a character device`);
    const fd = fs.openSync(path, fs.constants.O_RDWR);
    try {
      const nsid = ioctl(fd, NVME_IOCTL_ID, new Uint8Array(8));
      const blk = `/sys/block/nvme${m[1]}n${m[2]}`;
      const lbs = Number(readSys(`${blk}/queue/logical_block_size`) ?? '512');
      const sectors = Number(readSys(`${blk}/size`) ?? '0');
      const maxKb = Number(readSys(`${blk}/queue/max_hw_sectors_kb`) ?? '128');
      const model = readSys(`/sys/class/nvme/nvme${m[1]}/model`) ?? 'NVMe namespace';
      if (!(lbs > 0) || !(sectors > 0)) throw new IoOpenError(`'${path}': cannot read the namespace geometry from ${blk}`);
      const geometry: IoGeometry = { blockSize: lbs, blocks: Math.floor((sectors * 512) / lbs), maxTransferBytes: maxKb * 1024, nsid, maxQueueDepth: 4096 };
      return new UringCmdDevice(`${uri}`, path, fd, geometry, model, opts);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  allocBuffer(size: number): IoBuffer {
    return this.pool.alloc(size);
  }
  freeBuffer(buf: IoBuffer): void {
    this.pool.free(buf);
  }
  override async createQueue(depth: number): Promise<IoQueue> {
    const q = new UringCmdQueue(this, depth, () => this.queues.delete(q));
    this.queues.add(q);
    return q;
  }
  override statusName(status: number): string {
    return statusName(status);
  }
  async close(): Promise<void> {
    await this.promises.close();
    for (const q of [...this.queues]) await q.close();
    this.pool.freeAll();
    fs.closeSync(this.fd);
  }
}

class UringCmdQueue implements IoQueue {
  readonly capacity: number;
  readonly engineQueue: QueueContract = this;
  private readonly ring_: UringRing;
  private readonly fixedIndex: Int32Array;
  private readonly ranges: HostMemory;
  private readonly rangeView: DataView;
  private readonly freeRanges: Int32Array;
  private nFree: number;
  private outstanding_ = 0;
  private closed = false;

  constructor(
    private readonly dev: UringCmdDevice,
    depth: number,
    private readonly onClose: () => void,
  ) {
    this.capacity = depth;
    this.ring_ = new UringRing({ entries: depth, flags: IORING_SETUP_SQE128 | IORING_SETUP_CQE32 | (dev.opts.hipri ? IORING_SETUP_IOPOLL : 0) });
    this.fixedIndex = registerPoolBuffers(this.ring_, dev.pool, dev.opts.fixedBuffers === true);
    this.ranges = allocHostMemory(Math.ceil((depth * 16) / 4096) * 4096);
    this.rangeView = new DataView(this.ranges.buffer);
    this.freeRanges = new Int32Array(depth);
    for (let i = 0; i < depth; i++) this.freeRanges[i] = i;
    this.nFree = depth;
  }

  get outstanding(): number {
    return this.outstanding_;
  }

  submitIo(opcode: number, nsid: number, slba: number, nlb: number, h1: number, h2: number, tag: number): number {
    if (this.outstanding_ >= this.capacity || this.closed) return -1;
    const at = this.ring_.nextSqe();
    if (at < 0) return -1;
    let addr = h1;
    let range = 0xffff;
    if (opcode === IoOp.Deallocate) {
      range = this.freeRanges[--this.nFree]!;
      const o = range * 16;
      this.rangeView.setUint32(o, 0, true);
      this.rangeView.setUint32(o + 4, nlb, true);
      this.rangeView.setUint32(o + 8, slba >>> 0, true);
      this.rangeView.setUint32(o + 12, (slba / TWO32) >>> 0, true);
      addr = this.ranges.address + o;
    }
    const fixed = (opcode === IoOp.Read || opcode === IoOp.Write) && h2 < this.fixedIndex.length ? this.fixedIndex[h2]! : -1;
    encodeUringCmdSqe(this.ring_.sqes, at, this.dev.fd, tag, nvmeCommandFor(opcode, nsid, slba, nlb, addr, this.dev.geometry.blockSize), fixed);
    this.ring_.sqes[at + (Sqe.userData >> 2) + 1] = range;
    this.ring_.commit();
    this.outstanding_++;
    return 0;
  }

  submit(op: IoOpcode, lba: number, nlb: number, buf: IoBuffer | null, tag: number): number {
    checkRange(op, lba, nlb, this.dev.geometry.blocks);
    checkBufferFor(op, nlb, this.dev.geometry.blockSize, buf);
    return this.submitIo(op, this.dev.geometry.nsid, lba, nlb, buf ? buf.h1 : 0, buf ? buf.h2 : 0, tag);
  }

  ring(): void {
    const r = this.ring_;
    if (r.unsubmitted === 0 && (this.outstanding_ === 0 || r.cqReady() > 0)) return;
    r.enter(r.cqReady() === 0 && this.outstanding_ > 0 ? 1 : 0);
  }

  poll(onComplete: IoCompletionHandler, max: number = this.capacity): number {
    const r = this.ring_;
    let head = r.cqHead();
    let tail = r.cqTail();
    if (head === tail && this.outstanding_ > 0) {
      r.enter(1);
      tail = r.cqTail();
    }
    let n = 0;
    while (head !== tail && n < max) {
      const idx = r.cqeIndex(head);
      const tag = r.cqWord(idx) | 0;
      const range = r.cqWord(idx + 1);
      const res = r.cqI32[idx + 2]!;
      const result = r.cqWord(idx + 4);
      if (range !== 0xffff) this.freeRanges[this.nFree++] = range;
      head = (head + 1) >>> 0;
      this.outstanding_--;
      n++;
      onComplete(tag, res < 0 ? errnoStatus(-res) : res & STATUS_FIELD_MASK, result);
    }
    r.advanceCq(head);
    return n;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const deadline = performance.now() + 10_000;
    while (this.outstanding_ > 0 && performance.now() < deadline) this.poll(() => undefined);
    this.ring_.close();
    freeHostMemory(this.ranges);
    this.onClose();
  }
}
