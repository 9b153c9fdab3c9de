/**
 * io_uring system calls and ABI facts (x86-64 / arm64 Linux), through koffi. Control plane only: the rings
 * themselves are driven from TypeScript over mapped memory (src/io/uring.ts); the only FFI call on the data
 * path is io_uring_enter, once per batch.
 *
 * Struct layouts (include/uapi/linux/io_uring.h):
 *   io_uring_params 120 bytes: sq_entries 0, cq_entries 4, flags 8, sq_thread_cpu 12, sq_thread_idle 16,
 *     features 20, wq_fd 24, resv[3] 28, sq_off 40 (io_sqring_offsets, 40 bytes), cq_off 80 (io_cqring_offsets).
 *   io_sqring_offsets: head 0, tail 4, ring_mask 8, ring_entries 12, flags 16, dropped 20, array 24, resv1 28,
 *     user_addr 32.
 *   io_cqring_offsets: head 0, tail 4, ring_mask 8, ring_entries 12, overflow 16, cqes 20, flags 24, resv1 28,
 *     user_addr 32.
 *   io_uring_sqe 64 bytes (128 with SQE128): opcode 0, flags 1, ioprio 2, fd 4, off|addr2|cmd_op 8, addr 16,
 *     len 24, rw_flags|fsync_flags|uring_cmd_flags 28, user_data 32, buf_index 40, personality 42,
 *     file_index 44, addr3 48 (the URING_CMD payload starts at 48), pad 56.
 *   io_uring_cqe 16 bytes (32 with CQE32): user_data 0, res 4..: res at 8 (s32), flags 12, big_cqe at 16.
 */
import koffi from 'koffi';
import { ERRNO, OsError } from './libc.js';

export const SYS_IO_URING_SETUP = 425;
export const SYS_IO_URING_ENTER = 426;
export const SYS_IO_URING_REGISTER = 427;

export const IORING_OFF_SQ_RING = 0;
export const IORING_OFF_CQ_RING = 0x8000000;
export const IORING_OFF_SQES = 0x10000000;

export const IORING_SETUP_IOPOLL = 1 << 0;
export const IORING_SETUP_SQPOLL = 1 << 1;
export const IORING_SETUP_CQSIZE = 1 << 3;
export const IORING_SETUP_CLAMP = 1 << 4;
export const IORING_SETUP_SUBMIT_ALL = 1 << 7;
export const IORING_SETUP_COOP_TASKRUN = 1 << 8;
export const IORING_SETUP_SQE128 = 1 << 10;
export const IORING_SETUP_CQE32 = 1 << 11;
export const IORING_SETUP_SINGLE_ISSUER = 1 << 12;
export const IORING_SETUP_DEFER_TASKRUN = 1 << 13;

export const IORING_FEAT_SINGLE_MMAP = 1 << 0;
export const IORING_FEAT_NODROP = 1 << 1;

export const IORING_ENTER_GETEVENTS = 1 << 0;

export const IORING_REGISTER_BUFFERS = 0;
export const IORING_UNREGISTER_BUFFERS = 1;

export const IORING_SQ_CQ_OVERFLOW = 1 << 1;
export const IORING_SQ_TASKRUN = 1 << 2;

export const IORING_FSYNC_DATASYNC = 1 << 0;
export const IORING_URING_CMD_FIXED = 1 << 0;

/** The io_uring opcodes this project uses (enum io_uring_op). */
export const IoringOp = {
  Nop: 0,
  Fsync: 3,
  ReadFixed: 4,
  WriteFixed: 5,
  Fallocate: 17,
  Read: 22,
  Write: 23,
  UringCmd: 46,
} as const;

export const PARAMS_SIZE = 120;
export const SQE_SIZE = 64;
export const CQE_SIZE = 16;
export const IOVEC_SIZE = 16;

/** Byte offsets inside io_uring_params. */
export const Params = {
  sqEntries: 0,
  cqEntries: 4,
  flags: 8,
  sqThreadCpu: 12,
  sqThreadIdle: 16,
  features: 20,
  wqFd: 24,
  sqOff: 40,
  cqOff: 80,
} as const;

/** Byte offsets inside io_sqring_offsets (relative to Params.sqOff). */
export const SqOff = { head: 0, tail: 4, ringMask: 8, ringEntries: 12, flags: 16, dropped: 20, array: 24 } as const;
/** Byte offsets inside io_cqring_offsets (relative to Params.cqOff). */
export const CqOff = { head: 0, tail: 4, ringMask: 8, ringEntries: 12, overflow: 16, cqes: 20, flags: 24 } as const;
/** Byte offsets inside io_uring_sqe. */
export const Sqe = {
  opcode: 0,
  flags: 1,
  ioprio: 2,
  fd: 4,
  off: 8,
  cmdOp: 8,
  addr: 16,
  len: 24,
  opFlags: 28,
  userData: 32,
  bufIndex: 40,
  personality: 42,
  fileIndex: 44,
  addr3: 48,
  cmd: 48,
} as const;
/** Byte offsets inside io_uring_cqe. */
export const Cqe = { userData: 0, res: 8, flags: 12, big: 16 } as const;

export interface UringParamsOut {
  sqEntries: number;
  cqEntries: number;
  flags: number;
  features: number;
  sqOff: { head: number; tail: number; ringMask: number; ringEntries: number; flags: number; dropped: number; array: number };
  cqOff: { head: number; tail: number; ringMask: number; ringEntries: number; overflow: number; cqes: number; flags: number };
}

export function encodeParams(flags: number, cqEntries = 0): Uint8Array {
  const b = new Uint8Array(PARAMS_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(Params.flags, flags >>> 0, true);
  if (cqEntries > 0) v.setUint32(Params.cqEntries, cqEntries, true);
  return b;
}

export function decodeParams(b: Uint8Array): UringParamsOut {
  if (b.length < PARAMS_SIZE) throw new RangeError(`io_uring_params needs ${PARAMS_SIZE} bytes, got ${b.length}`);
  const v = new DataView(b.buffer, b.byteOffset, PARAMS_SIZE);
  const u = (o: number): number => v.getUint32(o, true);
  const s = Params.sqOff;
  const c = Params.cqOff;
  return {
    sqEntries: u(Params.sqEntries),
    cqEntries: u(Params.cqEntries),
    flags: u(Params.flags),
    features: u(Params.features),
    sqOff: {
      head: u(s + SqOff.head),
      tail: u(s + SqOff.tail),
      ringMask: u(s + SqOff.ringMask),
      ringEntries: u(s + SqOff.ringEntries),
      flags: u(s + SqOff.flags),
      dropped: u(s + SqOff.dropped),
      array: u(s + SqOff.array),
    },
    cqOff: {
      head: u(c + CqOff.head),
      tail: u(c + CqOff.tail),
      ringMask: u(c + CqOff.ringMask),
      ringEntries: u(c + CqOff.ringEntries),
      overflow: u(c + CqOff.overflow),
      cqes: u(c + CqOff.cqes),
      flags: u(c + CqOff.flags),
    },
  };
}

type Ptr = unknown;
interface UringLib {
  setup: (nr: number, entries: number, params: Uint8Array) => number;
  enter: (nr: number, fd: number, toSubmit: number, minComplete: number, flags: number, arg: null, argsz: number) => number;
  register: (nr: number, fd: number, opcode: number, arg: Uint8Array | null, nrArgs: number) => number;
  mmap: (addr: null, len: number, prot: number, flags: number, fd: number, off: number) => Ptr;
  munmap: (addr: Ptr, len: number) => number;
  close: (fd: number) => number;
}
let lib: UringLib | null = null;

function uring(): UringLib {
  if (lib === null) {
    if (process.platform !== 'linux') throw new OsError('dlopen(libc)', ERRNO.EOPNOTSUPP);
    const l = koffi.load('libc.so.6');
    // syscall(2) is variadic; on the Linux x86-64 / arm64 ABIs integer and pointer arguments are passed the same way.
    lib = {
      setup: l.func('syscall', 'long', ['long', 'uint32', 'void *']) as UringLib['setup'],
      enter: l.func('syscall', 'long', ['long', 'int', 'uint32', 'uint32', 'uint32', 'void *', 'size_t']) as UringLib['enter'],
      register: l.func('syscall', 'long', ['long', 'int', 'uint32', 'void *', 'uint32']) as UringLib['register'],
      mmap: l.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)') as UringLib['mmap'],
      munmap: l.func('int munmap(void *addr, size_t len)') as UringLib['munmap'],
      close: l.func('int close(int fd)') as UringLib['close'],
    };
  }
  return lib;
}

/** io_uring_setup(entries, params): returns the ring fd; params is updated in place. Throws OsError. */
export function ioUringSetup(entries: number, params: Uint8Array): number {
  const r = uring().setup(SYS_IO_URING_SETUP, entries, params);
  if (r < 0) throw new OsError('io_uring_setup', koffi.errno());
  return r;
}

/**
 * io_uring_enter(fd, toSubmit, minComplete, flags): returns the number of SQEs consumed, or -errno (no throw:
 * this is the data path, and EINTR / EAGAIN / EBUSY are normal there).
 */
export function ioUringEnter(fd: number, toSubmit: number, minComplete: number, flags: number): number {
  const r = (lib ?? uring()).enter(SYS_IO_URING_ENTER, fd, toSubmit, minComplete, flags, null, 0);
  return r < 0 ? -koffi.errno() : r;
}

/** io_uring_register(fd, opcode, arg, nrArgs). Throws OsError. */
export function ioUringRegister(fd: number, opcode: number, arg: Uint8Array | null, nrArgs: number): number {
  const r = uring().register(SYS_IO_URING_REGISTER, fd, opcode, arg, nrArgs);
  if (r < 0) throw new OsError(`io_uring_register(${opcode})`, koffi.errno());
  return r;
}

/** A shared mapping of part of a ring fd. */
export interface RingMapping {
  ptr: Ptr;
  length: number;
  buffer: ArrayBuffer;
}

export function mapRing(fd: number, length: number, offset: number, what: string): RingMapping {
  const PROT_RW = 0x3;
  const MAP_SHARED_POPULATE = 0x01 | 0x8000;
  const p = uring().mmap(null, length, PROT_RW, MAP_SHARED_POPULATE, fd, offset);
  if (koffi.address(p) === 0xffff_ffff_ffff_ffffn) throw new OsError(`mmap(${what})`, koffi.errno());
  return { ptr: p, length, buffer: koffi.view(p, length) as ArrayBuffer };
}

export function unmapRing(m: RingMapping): void {
  uring().munmap(m.ptr, m.length);
}

export function closeFd(fd: number): void {
  uring().close(fd);
}
