/**
 * The one asynchronous block I/O interface of HOMI. Every backend (posix, io_uring, io_uring_cmd, the user-space
 * driver over the embedded controller or PCIe) implements IoDevice / IoQueue / IoBuffer.
 *
 * Fast path: IoQueue.submitIo(opcode, nsid, slba, nlb, h1, h2, tag) with NVMe opcodes, a buffer's two handles
 * (h1/h2: PRP1/PRP2 for the driver, address/buffer id for the kernel paths) and a caller tag; ring() once per
 * batch; poll(onComplete) delivers (tag, status, result) without allocating. Slow path: IoQueue.submit with an
 * IoBuffer, or the Promise helpers on IoDevice (read/write/flush/writeZeroes/deallocate).
 *
 * Status values: HOMI's one completion status space (src/nvme/status.ts): 0 success; an NVMe status field
 * (SCT/SC, as in a CQE); or a host outcome (timeout, reset, removal, a kernel errno from the kernel paths), an
 * SCT 3 path-related status with its cause (and errno) in the bits above the field. Never negative. The device's
 * statusName() (the same statusName) turns any of them into words.
 */
import type { CompletionHandler, QueueContract } from '../queue/contract.js';

export const BACKENDS = ['posix', 'io_uring', 'io_uring_cmd', 'driver', 'emu'] as const;
export type BackendName = (typeof BACKENDS)[number];

/** Operations, as NVMe NVM opcodes (the fast path passes these numbers). */
export const IoOp = {
  Flush: 0x00,
  Write: 0x01,
  Read: 0x02,
  WriteZeroes: 0x08,
  /** Dataset Management with the Deallocate attribute, one range. */
  Deallocate: 0x09,
} as const;
export type IoOpcode = (typeof IoOp)[keyof typeof IoOp];

export function ioOpName(op: number): string {
  switch (op) {
    case IoOp.Flush:
      return 'flush';
    case IoOp.Write:
      return 'write';
    case IoOp.Read:
      return 'read';
    case IoOp.WriteZeroes:
      return 'write-zeroes';
    case IoOp.Deallocate:
      return 'deallocate';
    default:
      return `opcode 0x${op.toString(16)}`;
  }
}

export interface IoGeometry {
  /** Logical block size in bytes. */
  blockSize: number;
  /** Capacity in logical blocks. */
  blocks: number;
  /** Largest single transfer in bytes. */
  maxTransferBytes: number;
  /** NVMe namespace id (1 for files and block devices). */
  nsid: number;
  /** Largest queue depth a queue may be created with. */
  maxQueueDepth: number;
}

export interface IoFeatures {
  flush: boolean;
  writeZeroes: boolean;
  deallocate: boolean;
}

/**
 * Where the data buffers of a device live: host memory (the default), or device memory the controller reaches
 * peer to peer (`peer`: a memory BAR of another PCI function; the driver backend on a pci: controller), or the
 * p2pmem a PCI function publishes through the kernel (`p2pmem`: io_uring with O_DIRECT).
 */
export type BufferPlacement = { kind: 'host' } | { kind: 'peer'; address: string; bar: number } | { kind: 'p2pmem'; bdf: string };

/** Options of openIo(). Each backend refuses, at open, an option it cannot honour. */
export interface IoOpenOptions {
  /** Data buffers in host memory (default) or device memory. */
  buffers?: BufferPlacement;
  /** Backend; default: driver for emu:/pci: URIs, io_uring for files and block devices, io_uring_cmd for /dev/ng*. */
  backend?: BackendName;
  /** O_DIRECT (posix, io_uring). */
  direct?: boolean;
  /** Registered buffers: IORING_REGISTER_BUFFERS + READ_FIXED/WRITE_FIXED (io_uring, io_uring_cmd). */
  fixedBuffers?: boolean;
  /** Polled completions: IORING_SETUP_IOPOLL (io_uring, io_uring_cmd; needs O_DIRECT and poll queues). */
  hipri?: boolean;
  /** Namespace (driver backends; default 1). */
  nsid?: number;
  /** I/O queue pairs the driver asks the controller for (driver backends; default 16). */
  maxQueues?: number;
  /**
   * Data buffers in the p2pmem of this PCI function (DDDD:BB:DD.F) instead of host memory (io_uring with O_DIRECT).
   * `sysfsRoot` (default /sys) lets tests point at a fake tree.
   */
  p2pmem?: { bdf: string; sysfsRoot?: string };
}

/** A buffer from the device's allocator: DMA-visible for the driver, page-aligned for O_DIRECT. */
export interface IoBuffer {
  /** CPU view of exactly this buffer. */
  readonly bytes: Uint8Array;
  readonly size: number;
  /** Backend handle 1 (driver: PRP1; kernel paths: virtual address). */
  readonly h1: number;
  /** Backend handle 2 (driver: PRP2; kernel paths: allocation id, for registered-buffer lookup). */
  readonly h2: number;
  /** A sub-range of this buffer (offset a multiple of 512), with its own handles. Freed with its parent. */
  slice(offset: number, length: number): IoBuffer;
}

/** The completion handler of the queue contract (src/queue/contract.ts). */
export type IoCompletionHandler = CompletionHandler;

/** One queue set: a submission/completion pair owned by one thread. */
export interface IoQueue extends QueueContract {
  /** The object the benchmark engine drives (the queue itself, or the driver's raw QueuePair). */
  readonly engineQueue: QueueContract;
  /**
   * Queue one operation on `buf` (null for flush / write-zeroes / deallocate). Returns >= 0 when queued, -1 when
   * the queue is full. Validates its arguments (throws IoRangeError for an LBA range beyond the device).
   * Call ring() to start queued work.
   */
  submit(op: IoOpcode, lba: number, nlb: number, buf: IoBuffer | null, tag: number): number;
  close(): Promise<void>;
}

export interface IoDevice {
  readonly backend: BackendName;
  readonly uri: string;
  /** What carries the commands, for reports (e.g. "emu (null)", "io_uring O_DIRECT", "pread/pwrite"). */
  readonly transport: string;
  /** Device model / description. */
  readonly model: string;
  /** Where allocBuffer's memory lives, for reports (e.g. "host memory", "BAR2 of 0000:00:04.0 at IOVA 0x..."). */
  readonly bufferPlacement?: string;
  readonly geometry: IoGeometry;
  readonly features: IoFeatures;
  allocBuffer(size: number): IoBuffer;
  freeBuffer(buf: IoBuffer): void;
  /** A new queue set with at least `depth` slots. */
  createQueue(depth: number): Promise<IoQueue>;
  statusName(status: number): string;
  /** The kernel paths: whether I/O goes through the page cache (a file or block device opened without O_DIRECT). */
  readonly buffered?: boolean;
  /**
   * The kernel paths: write back, then drop bytes [offset, offset + length) of the target from the page cache
   * (fdatasync + POSIX_FADV_DONTNEED, as fio's invalidate). Returns a note when the cache cannot be dropped (tmpfs).
   */
  invalidateCache?(offset: number, length: number): string | null;
  /** The kernel paths: tell the kernel the access pattern of this open file (readahead off for random). */
  adviseAccess?(pattern: 'random' | 'sequential'): void;
  read(lba: number, nlb: number, buf: IoBuffer): Promise<void>;
  write(lba: number, nlb: number, buf: IoBuffer): Promise<void>;
  flush(): Promise<void>;
  writeZeroes(lba: number, nlb: number): Promise<void>;
  deallocate(lba: number, nlb: number): Promise<void>;
  close(): Promise<void>;
}

/** An operation that completed with a non-zero status. */
export class IoError extends Error {
  constructor(
    readonly op: string,
    readonly status: number,
    readonly statusText: string,
  ) {
    super(`${op} failed: ${statusText}`);
    this.name = 'IoError';
  }
}

/** An LBA range outside the device, refused before submission. */
export class IoRangeError extends RangeError {
  constructor(op: string, lba: number, nlb: number, blocks: number) {
    super(`${op} of LBAs ${lba}..${lba + nlb - 1} is outside the device (${blocks} blocks: 0..${blocks - 1})`);
    this.name = 'IoRangeError';
  }
}

/** A backend, option or target that cannot be used; raised by openIo before any I/O. */
export class IoOpenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IoOpenError';
  }
}

/** The NVMe status field for LBA Out of Range (SCT 0, SC 0x80), which the kernel paths also report. */
export const STATUS_LBA_OUT_OF_RANGE = 0x80;
