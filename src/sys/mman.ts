/**
 * Memory mapping through koffi: mmap / munmap / mlock, and ioctl forms that take an integer or a string
 * argument (the buffer form lives in libc.ts). Control-plane only: nothing here is called per I/O.
 *
 * A mapping is exposed as an ArrayBuffer over the mapped memory (koffi.view: no copy). Touching that
 * ArrayBuffer after the mapping is gone would fault the process, so mappings are never plainly unmapped:
 * `retire()` replaces them in place with inert anonymous memory (MAP_FIXED), which releases the device or
 * hugepage memory while keeping stray late accesses harmless.
 */
import koffi from 'koffi';
import { ERRNO, OsError } from './libc.js';

export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MAP_POPULATE = 0x8000;
export const MAP_HUGETLB = 0x40000;
/** log2(page size) in bits 26..31 of the flags selects the hugepage size (MAP_HUGE_SHIFT = 26). */
export const MAP_HUGE_2MB = 21 << 26;

type Ptr = unknown;
interface Libc {
  mmap: (addr: Ptr | null, len: number, prot: number, flags: number, fd: number, off: number | bigint) => Ptr;
  munmap: (addr: Ptr, len: number) => number;
  mlock: (addr: Ptr, len: number) => number;
  ioctlLong: (fd: number, req: number, arg: number) => number;
  ioctlStr: (fd: number, req: number, arg: string) => number;
  mincore: (addr: Ptr, len: number, vec: Uint8Array) => number;
  sysconf: (name: number) => number;
}
let lib: Libc | null = null;

function libc(): Libc {
  if (lib === null) {
    if (process.platform !== 'linux') throw new OsError('dlopen(libc)', ERRNO.EOPNOTSUPP);
    const l = koffi.load('libc.so.6');
    lib = {
      mmap: l.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)') as Libc['mmap'],
      munmap: l.func('int munmap(void *addr, size_t len)') as Libc['munmap'],
      mlock: l.func('int mlock(void *addr, size_t len)') as Libc['mlock'],
      // ioctl is variadic in C; on the Linux x86-64 / arm64 ABIs a fixed third argument is passed identically.
      ioctlLong: l.func('ioctl', 'int', ['int', 'unsigned long', 'long']) as Libc['ioctlLong'],
      ioctlStr: l.func('ioctl', 'int', ['int', 'unsigned long', 'const char *']) as Libc['ioctlStr'],
      mincore: l.func('int mincore(void *addr, size_t len, void *vec)') as Libc['mincore'],
      sysconf: l.func('long sysconf(int name)') as Libc['sysconf'],
    };
  }
  return lib;
}

const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/** A live memory mapping. */
export class Mapping {
  private retired = false;
  constructor(
    /** Opaque koffi pointer. */
    readonly ptr: Ptr,
    /** Virtual address of the first byte. */
    readonly address: bigint,
    readonly length: number,
    /** CPU view of the whole mapping. */
    readonly buffer: ArrayBuffer,
    /** What it maps, for messages. */
    readonly what: string,
  ) {}

  get isRetired(): boolean {
    return this.retired;
  }

  /** Virtual address as a number (user-space addresses are < 2^47). */
  get addressNumber(): number {
    return Number(this.address);
  }

  /**
   * Release what is mapped (device registers, hugepages) by mapping inert anonymous memory over the same range.
   * Idempotent. Late accesses through old views then read zeros instead of faulting the process.
   */
  retire(): void {
    if (this.retired) return;
    this.retired = true;
    const l = libc();
    const p = l.mmap(this.ptr, this.length, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (koffi.address(p) === MAP_FAILED) {
      // Could not replace it: unmap for real (releases the memory; late accesses would fault).
      l.munmap(this.ptr, this.length);
    }
  }
}

/** mmap(NULL, length, prot, flags, fd, offset). Throws OsError on failure. */
export function mmap(length: number, prot: number, flags: number, fd: number, offset: number, what: string): Mapping {
  if (!Number.isSafeInteger(length) || length <= 0) throw new RangeError(`mmap of ${what}: invalid length ${length}`);
  const l = libc();
  const p = l.mmap(null, length, prot, flags, fd, BigInt(offset));
  const addr = koffi.address(p);
  if (addr === MAP_FAILED) {
    const e = new OsError(`mmap(${what}, ${length} bytes)`, koffi.errno());
    throw e;
  }
  return new Mapping(p, addr, length, koffi.view(p, length), what);
}

/** munmap the whole mapping (its views must not be used afterwards). Idempotent. */
export function munmap(m: Mapping): void {
  if (m.isRetired) return;
  m.retire();
  libc().munmap(m.ptr, m.length);
}

/** mlock the whole mapping (keeps it resident). Throws OsError on failure. */
export function mlock(m: Mapping): void {
  if (libc().mlock(m.ptr, m.length) !== 0) throw new OsError(`mlock(${m.what})`, koffi.errno());
}

/** ioctl(fd, request, integer). Returns the non-negative result; throws OsError on failure. */
export function ioctlLong(fd: number, request: number, arg: number): number {
  const r = libc().ioctlLong(fd, request, arg);
  if (r < 0) throw new OsError(`ioctl(0x${request.toString(16)})`, koffi.errno());
  return r;
}

/** ioctl(fd, request, "string"). Returns the non-negative result; throws OsError on failure. */
export function ioctlString(fd: number, request: number, arg: string): number {
  const r = libc().ioctlStr(fd, request, arg);
  if (r < 0) throw new OsError(`ioctl(0x${request.toString(16)}, "${arg}")`, koffi.errno());
  return r;
}

const SC_PAGESIZE = 30;

/** The size of a memory page (sysconf(_SC_PAGESIZE)). */
export function pageSize(): number {
  return libc().sysconf(SC_PAGESIZE);
}

/**
 * How many of the pages of [0, length) of a file are in the page cache: the file is mapped read-only and shared
 * (nothing is read through the mapping), mincore(2) tells each page's residency, the mapping is dropped. Linux
 * answers for the page cache only for a file the caller owns or may write; otherwise only for pages this process
 * mapped. Throws OsError on failure.
 */
export function residentPages(fd: number, length: number): { resident: number; pages: number } {
  if (!Number.isSafeInteger(length) || length <= 0) throw new RangeError(`residentPages: invalid length ${length}`);
  const l = libc();
  const p = l.mmap(null, length, PROT_READ, MAP_SHARED, fd, 0n);
  if (koffi.address(p) === MAP_FAILED) throw new OsError(`mmap(fd ${fd}, ${length} bytes)`, koffi.errno());
  try {
    const page = pageSize();
    const vec = new Uint8Array(Math.ceil(length / page));
    if (l.mincore(p, length, vec) !== 0) throw new OsError(`mincore(fd ${fd}, ${length} bytes)`, koffi.errno());
    let resident = 0;
    for (const b of vec) resident += b & 1;
    return { resident, pages: vec.length };
  } finally {
    l.munmap(p, length);
  }
}
