/**
 * File I/O below Node's fs API, through koffi: pread/pwrite on raw addresses (for page-aligned, O_DIRECT-able
 * memory that Node cannot allocate), fallocate, fdatasync, a descriptor's status flags (fcntl F_GETFL),
 * anonymous page-aligned memory, and the block device ioctls for discard / zero-out. One FFI call per
 * operation; callers keep these out of loops where they can.
 */
import koffi from 'koffi';
import { ERRNO, OsError } from './libc.js';

type Ptr = unknown;
interface FileLib {
  pread: (fd: number, addr: number, n: number, off: number) => number;
  pwrite: (fd: number, addr: number, n: number, off: number) => number;
  fallocate: (fd: number, mode: number, off: number, len: number) => number;
  fdatasync: (fd: number) => number;
  mmap: (addr: null, len: number, prot: number, flags: number, fd: number, off: number) => Ptr;
  munmap: (addr: Ptr, len: number) => number;
  ioctlRange: (fd: number, req: number, arg: BigUint64Array) => number;
  fcntlInt: (fd: number, cmd: number, arg: number) => number;
  fadvise: (fd: number, off: number, len: number, advice: number) => number;
}
let lib: FileLib | null = null;

function fileLib(): FileLib {
  if (lib === null) {
    if (process.platform !== 'linux') throw new OsError('dlopen(libc)', ERRNO.EOPNOTSUPP);
    const l = koffi.load('libc.so.6');
    lib = {
      // Addresses are passed as integers (same ABI as a pointer) so that no pointer object is built per call.
      pread: l.func('pread', 'int64', ['int', 'intptr_t', 'size_t', 'int64']) as FileLib['pread'],
      pwrite: l.func('pwrite', 'int64', ['int', 'intptr_t', 'size_t', 'int64']) as FileLib['pwrite'],
      fallocate: l.func('int fallocate(int fd, int mode, int64_t off, int64_t len)') as FileLib['fallocate'],
      fdatasync: l.func('int fdatasync(int fd)') as FileLib['fdatasync'],
      mmap: l.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)') as FileLib['mmap'],
      munmap: l.func('int munmap(void *addr, size_t len)') as FileLib['munmap'],
      ioctlRange: l.func('ioctl', 'int', ['int', 'unsigned long', 'void *']) as FileLib['ioctlRange'],
      // fcntl is variadic in C; an int third argument is passed identically on the Linux LP64 ABIs.
      fcntlInt: l.func('fcntl', 'int', ['int', 'int', 'int']) as FileLib['fcntlInt'],
      fadvise: l.func('int posix_fadvise(int fd, int64_t off, int64_t len, int advice)') as FileLib['fadvise'],
    };
  }
  return lib;
}

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;
/** _IO(0x12, 119): discard a byte range of a block device (u64 start, u64 length). */
export const BLKDISCARD = 0x1277;
/** _IO(0x12, 127): zero a byte range of a block device. */
export const BLKZEROOUT = 0x127f;

/** pread into memory at `addr`; returns bytes read or -errno. */
export function preadAt(fd: number, addr: number, n: number, off: number): number {
  const r = fileLib().pread(fd, addr, n, off);
  return r < 0 ? -koffi.errno() : r;
}
/** pwrite from memory at `addr`; returns bytes written or -errno. */
export function pwriteAt(fd: number, addr: number, n: number, off: number): number {
  const r = fileLib().pwrite(fd, addr, n, off);
  return r < 0 ? -koffi.errno() : r;
}
/** fallocate; returns 0 or -errno. */
export function fallocateRange(fd: number, mode: number, off: number, len: number): number {
  return fileLib().fallocate(fd, mode, off, len) < 0 ? -koffi.errno() : 0;
}
/** fdatasync; returns 0 or -errno. */
export function fdatasyncFd(fd: number): number {
  return fileLib().fdatasync(fd) < 0 ? -koffi.errno() : 0;
}
/** posix_fadvise advice: no particular pattern (the kernel's default readahead). */
export const POSIX_FADV_NORMAL = 0;
/** posix_fadvise advice: random access (no readahead on this open file). */
export const POSIX_FADV_RANDOM = 1;
/** posix_fadvise advice: sequential access (a larger readahead window on this open file). */
export const POSIX_FADV_SEQUENTIAL = 2;
/** posix_fadvise advice: the range will not be needed soon (clean pages of it leave the page cache). */
export const POSIX_FADV_DONTNEED = 4;

/** posix_fadvise(fd, off, len, advice); returns 0 or -errno (the call returns the error number itself). */
export function fadviseRange(fd: number, off: number, len: number, advice: number): number {
  const r = fileLib().fadvise(fd, off, len, advice);
  return r > 0 ? -r : 0;
}

/**
 * Drop [off, off + len) of a file or block device from the page cache, as fio's invalidate does: fdatasync first
 * (POSIX_FADV_DONTNEED leaves dirty pages where they are), then POSIX_FADV_DONTNEED. Returns 0 or -errno.
 */
export function dropPageCache(fd: number, off: number, len: number): number {
  const r = fdatasyncFd(fd);
  return r < 0 ? r : fadviseRange(fd, off, len, POSIX_FADV_DONTNEED);
}

/** fcntl F_GETFL: a descriptor's file access mode and status flags (open(2) flags as the kernel keeps them). */
export const F_GETFL = 3;
/** The access-mode bits of the status flags (open(2)): O_RDONLY, O_WRONLY or O_RDWR. */
export const O_ACCMODE = 0o3;
export const O_RDONLY = 0o0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_APPEND = 0o2000;
/**
 * O_PATH (Linux, the same value on x86-64 and arm64): a descriptor that only names a file. It grants neither
 * read nor write access; open(2) needs no permission on the file itself to make one.
 */
export const O_PATH = 0o10000000;

/** fcntl(fd, F_GETFL): the status flags of the open file description behind `fd`. Throws OsError (EBADF). */
export function fdStatusFlags(fd: number): number {
  const r = fileLib().fcntlInt(fd, F_GETFL, 0);
  if (r < 0) throw new OsError(`fcntl(${fd}, F_GETFL)`, koffi.errno());
  return r;
}

/** fcntl F_SETFL: set a descriptor's status flags (only O_APPEND, O_ASYNC, O_DIRECT, O_NOATIME, O_NONBLOCK change). */
export const F_SETFL = 4;

/** fcntl(fd, F_SETFL, flags). Throws OsError. */
export function setFdStatusFlags(fd: number, flags: number): void {
  if (fileLib().fcntlInt(fd, F_SETFL, flags) < 0) throw new OsError(`fcntl(${fd}, F_SETFL)`, koffi.errno());
}

/** BLKDISCARD / BLKZEROOUT on [off, off + len); returns 0 or -errno. */
export function blockRangeIoctl(fd: number, request: number, off: number, len: number): number {
  return fileLib().ioctlRange(fd, request, new BigUint64Array([BigInt(off), BigInt(len)])) < 0 ? -koffi.errno() : 0;
}

/** Anonymous, page-aligned, zeroed memory that the kernel can DMA into (O_DIRECT, registered buffers). */
export interface HostMemory {
  readonly ptr: Ptr;
  /** Virtual address (< 2^47, exact as a number). */
  readonly address: number;
  readonly length: number;
  readonly buffer: ArrayBuffer;
}

export function allocHostMemory(length: number): HostMemory {
  if (!Number.isSafeInteger(length) || length <= 0) throw new RangeError(`host memory: invalid length ${length}`);
  const PROT_RW = 0x3;
  const MAP_PRIVATE_ANON_POPULATE = 0x02 | 0x20 | 0x8000;
  const p = fileLib().mmap(null, length, PROT_RW, MAP_PRIVATE_ANON_POPULATE, -1, 0);
  const a = koffi.address(p);
  if (a === 0xffff_ffff_ffff_ffffn) throw new OsError(`mmap(${length} bytes of host memory)`, koffi.errno());
  return { ptr: p, address: Number(a), length, buffer: koffi.view(p, length) as ArrayBuffer };
}

export function freeHostMemory(m: HostMemory): void {
  fileLib().munmap(m.ptr, m.length);
}
