/**
 * Shared memory between processes: memfd_create + ftruncate + mmap(MAP_SHARED), mapping of a received memfd,
 * and a process-shared futex (wait / wake) on a 32-bit word inside such memory. Control-plane calls except
 * futexWake, which a driver calls only when the device announced it sleeps.
 *
 * A region's CPU view is an ArrayBuffer over the mapping (koffi.view: no copy; not a SharedArrayBuffer, so
 * Atomics.load/store work on it but Atomics.wait/notify do not: use futexWait/futexWake instead). Like the
 * mappings of mman.ts, a closed region is never plainly unmapped: it is replaced by inert anonymous memory,
 * so a late access through an old view reads zeros instead of faulting the process.
 *
 * Seals (memfd_create(2), fcntl(2) "File seals"). Every memfd created here is made with MFD_ALLOW_SEALING and
 * sealed F_SEAL_SHRINK | F_SEAL_GROW as soon as its size is set, then F_SEAL_SEAL once its seal set is final:
 * whoever holds the fd (a client that received it by SCM_RIGHTS, or reopened /proc/<pid>/fd/N) can never change
 * its size, so no mapping of it can ever reach past the end of the file (the SIGBUS a shrink would cause), and
 * nobody can add a seal either. A region created `readOnlyForOthers` also carries F_SEAL_FUTURE_WRITE, added
 * after this process's own writable mapping exists: this process keeps writing through that mapping, while no
 * one (this process included, and a reopen of the fd O_RDWR) can write(2), punch a hole, or make a new writable
 * shared mapping. Mapping memory someone else created can require the size seals (mapShmFd requireSizeSeals),
 * which is how a process that must survive the other holder maps it.
 */
import * as fs from 'node:fs';
import koffi from 'koffi';
import { ERRNO, OsError } from './libc.js';
import { MAP_POPULATE, MAP_SHARED, Mapping, PROT_READ, PROT_WRITE, mlock, mmap } from './mman.js';

export const MFD_CLOEXEC = 0x1;
export const MFD_ALLOW_SEALING = 0x2;
export const MFD_HUGETLB = 0x4;
/** log2(hugepage size) in bits 26..31 of the flags (MFD_HUGE_SHIFT = 26): 2 MiB pages. */
export const MFD_HUGE_2MB = 21 << 26;
const HUGE_2MB_BYTES = 2 * 1024 * 1024;
const SYS_FUTEX = process.arch === 'arm64' ? 98 : 202;
export const FUTEX_WAIT = 0;
export const FUTEX_WAKE = 1;
/** fcntl(2) commands on file seals (F_LINUX_SPECIFIC_BASE + 9 and + 10). */
export const F_ADD_SEALS = 1024 + 9;
export const F_GET_SEALS = 1024 + 10;
/** No further seal can be added. */
export const F_SEAL_SEAL = 0x0001;
/** The file cannot shrink. */
export const F_SEAL_SHRINK = 0x0002;
/** The file cannot grow. */
export const F_SEAL_GROW = 0x0004;
/** No write at all (refused while a writable shared mapping exists). */
export const F_SEAL_WRITE = 0x0008;
/** No new write: write(2), hole punching and new writable shared mappings fail; existing mappings keep working. */
export const F_SEAL_FUTURE_WRITE = 0x0010;
/** The seals that fix a memfd's size: what every memfd of this project carries. */
export const SIZE_SEALS = F_SEAL_SHRINK | F_SEAL_GROW;
const ETIMEDOUT = 110;
const EAGAIN = 11;
const EINTR = 4;

type Ptr = unknown;
interface ShmLibc {
  memfdCreate: (name: string, flags: number) => number;
  ftruncate: (fd: number, len: number | bigint) => number;
  close: (fd: number) => number;
  fcntl: (fd: number, cmd: number, arg: number) => number;
  fchmod: (fd: number, mode: number) => number;
  futex: (nr: number, addr: number | bigint, op: number, val: number, timeout: Uint8Array | null, addr2: Ptr | null, val3: number) => number | bigint;
}
let lib: ShmLibc | null = null;

function libc(): ShmLibc {
  if (lib === null) {
    if (process.platform !== 'linux') throw new OsError('dlopen(libc)', ERRNO.EOPNOTSUPP);
    const l = koffi.load('libc.so.6');
    lib = {
      memfdCreate: l.func('int memfd_create(const char *name, unsigned int flags)') as ShmLibc['memfdCreate'],
      ftruncate: l.func('int ftruncate(int fd, int64_t len)') as ShmLibc['ftruncate'],
      close: l.func('int close(int fd)') as ShmLibc['close'],
      // fcntl and syscall are variadic in C; with integer/pointer arguments only, the x86-64 and arm64 Linux ABIs
      // pass fixed arguments identically.
      fcntl: l.func('fcntl', 'int', ['int', 'int', 'int']) as ShmLibc['fcntl'],
      fchmod: l.func('int fchmod(int fd, unsigned int mode)') as ShmLibc['fchmod'],
      futex: l.func('syscall', 'long', ['long', 'uintptr_t', 'int', 'int', 'void *', 'void *', 'int']) as ShmLibc['futex'],
    };
  }
  return lib;
}

/** A mapping of shared memory (created here or received as a file descriptor). */
export class ShmRegion {
  private closed = false;
  constructor(
    /** The memfd (or received fd). -1 after close() when this region owned it. */
    private fdValue: number,
    /** Mapped bytes. */
    readonly size: number,
    /** CPU view of the whole region (not a SharedArrayBuffer). */
    readonly buffer: ArrayBuffer,
    /** The mapping (virtual address for futexes). */
    readonly mapping: Mapping,
    /** Whether close() closes the fd. */
    private readonly ownsFd: boolean,
    readonly readOnly: boolean,
  ) {}

  /** The fd's seals (F_GET_SEALS; F_SEAL_* bits). Throws OsError when the fd is closed or cannot be sealed. */
  get seals(): number {
    return getSeals(this.fdValue);
  }
  /** Whether the memory is sealed read-only for every other holder (F_SEAL_FUTURE_WRITE; createShm readOnlyForOthers). */
  get readOnlyForOthers(): boolean {
    return (this.seals & F_SEAL_FUTURE_WRITE) !== 0;
  }

  get fd(): number {
    return this.fdValue;
  }
  /** Virtual address of byte 0 in this process. */
  get address(): number {
    return this.mapping.addressNumber;
  }
  get isClosed(): boolean {
    return this.closed;
  }

  /** Release the mapping (replaced by inert memory) and close the fd if this region owns it. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.mapping.retire();
    if (this.ownsFd && this.fdValue >= 0) {
      libc().close(this.fdValue);
      this.fdValue = -1;
    }
  }
}

/** Round up to the 4 KiB page size. */
export function shmPageRound(n: number): number {
  return Math.ceil(n / 4096) * 4096;
}

export interface CreateShmOptions {
  /**
   * Back the memory with 2 MiB hugetlb pages (memfd_create(MFD_HUGETLB | MFD_HUGE_2MB)): `size` must be a
   * multiple of 2 MiB, the pages come from the hugepage pool (mmap fails with ENOMEM when it is empty), are
   * populated and locked at once, and never move (their physical addresses stay valid).
   */
  hugetlb?: boolean;
  /**
   * Read-only for everyone else: F_SEAL_FUTURE_WRITE is added once this region's own writable mapping exists.
   * This process writes through `buffer`; every other holder of the fd (and any reopen of it, O_RDWR included)
   * can only read: write(2), hole punching and writable shared mappings fail with EPERM.
   */
  readOnlyForOthers?: boolean;
}

/**
 * Create `size` bytes of shared memory: memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING), ftruncate, seal
 * its size (F_SEAL_SHRINK | F_SEAL_GROW), mmap(MAP_SHARED), then (`readOnlyForOthers`) F_SEAL_FUTURE_WRITE, and
 * finally F_SEAL_SEAL: the seal set never changes afterwards. The memory is zeroed. The fd is close-on-exec (pass
 * it to a child explicitly: spawn's stdio array or SCM_RIGHTS).
 */
export function createShm(name: string, size: number, opts: CreateShmOptions = {}): ShmRegion {
  if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`shared memory size must be a positive integer, got ${size}`);
  const huge = opts.hugetlb === true;
  if (huge && size % HUGE_2MB_BYTES !== 0) throw new RangeError(`hugetlb shared memory must be a multiple of 2 MiB, got ${size}`);
  const l = libc();
  // Hugetlb memfds accept MFD_ALLOW_SEALING since Linux 4.16.
  const fd = l.memfdCreate(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0));
  if (fd < 0) throw new OsError(`memfd_create(${name}${huge ? ', MFD_HUGETLB' : ''})`, koffi.errno());
  try {
    // Owner-only: a memfd is born 0777, so anyone handed even a read-only descriptor could reopen it read-write
    // through /proc/self/fd/N. At 0600 only the creator's uid can reopen it (openReadOnly).
    if (l.fchmod(fd, MEMFD_MODE) !== 0) throw new OsError(`fchmod(memfd ${name}, 0${MEMFD_MODE.toString(8)})`, koffi.errno());
    if (l.ftruncate(fd, BigInt(size)) !== 0) throw new OsError(`ftruncate(memfd ${name}, ${size})`, koffi.errno());
    addSeals(fd, SIZE_SEALS);
    const m = mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED | (huge ? MAP_POPULATE : 0), fd, 0, `memfd ${name}`);
    try {
      if (huge) mlock(m);
      // After our own writable mapping: it stays writable, no later one can be.
      if (opts.readOnlyForOthers === true) addSeals(fd, F_SEAL_FUTURE_WRITE);
      addSeals(fd, F_SEAL_SEAL);
    } catch (e) {
      m.retire();
      throw e;
    }
    return new ShmRegion(fd, size, m.buffer, m, true, false);
  } catch (e) {
    l.close(fd);
    throw e;
  }
}

/** The mode of every memfd createShm makes: read and write for the creating uid only. */
export const MEMFD_MODE = 0o600;

/**
 * A second, read-only descriptor of the memfd `fd` (created here, so mode 0600 and this uid's): open of
 * /proc/self/fd/N with O_RDONLY | O_CLOEXEC. Whoever receives it can map the memory PROT_READ only, cannot write(),
 * fallocate (punch holes) or mmap it writable (the descriptor is not open for writing), and cannot reopen it
 * read-write (another uid fails the 0600 permission check). The caller owns the new descriptor.
 */
export function openReadOnly(fd: number): number {
  return fs.openSync(`/proc/self/fd/${fd}`, 'r');
}

export interface MapShmOptions {
  /** Map PROT_READ only. */
  readOnly?: boolean;
  /** Byte offset into the file (a multiple of the page size; default 0). */
  offset?: number;
  /** Whether close() closes `fd` (default false: the caller keeps owning it). */
  ownFd?: boolean;
  /**
   * Refuse (ShmSealError) unless `fd` is a memfd sealed F_SEAL_SHRINK | F_SEAL_GROW that holds the whole mapped
   * range: then no other holder of the fd can ever leave the mapping past the end of the file (SIGBUS). (A holder
   * with write access can still punch holes: a shmem page refaults as zeros, a hugetlb page only while the pool
   * has one free.)
   */
  requireSizeSeals?: boolean;
}

/** Map `size` bytes of a shared memory fd received from another process (SCM_RIGHTS, inheritance) or this one. */
export function mapShmFd(fd: number, size: number, opts: MapShmOptions = {}): ShmRegion {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`invalid fd ${fd}`);
  if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`mapping size must be a positive integer, got ${size}`);
  const offset = opts.offset ?? 0;
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % 4096 !== 0) throw new RangeError(`mapping offset ${offset} is not a page-aligned file offset`);
  if (opts.requireSizeSeals === true) requireSizeSealed(fd, offset + size);
  const prot = opts.readOnly ? PROT_READ : PROT_READ | PROT_WRITE;
  const m = mmap(size, prot, MAP_SHARED, fd, offset, `shm fd ${fd}`);
  return new ShmRegion(fd, size, m.buffer, m, opts.ownFd ?? false, opts.readOnly ?? false);
}

/** close(fd). */
export function closeFd(fd: number): void {
  if (libc().close(fd) !== 0) throw new OsError(`close(${fd})`, koffi.errno());
}

/** Memory that cannot be mapped safely: not a memfd sealed against size changes, or smaller than the mapping. */
export class ShmSealError extends Error {
  constructor(
    readonly fd: number,
    message: string,
  ) {
    super(message);
    this.name = 'ShmSealError';
  }
}

/** fcntl(fd, F_ADD_SEALS, seals). Throws OsError (EPERM: F_SEAL_SEAL is set; EBUSY: F_SEAL_WRITE with a writable mapping). */
export function addSeals(fd: number, seals: number): void {
  if (libc().fcntl(fd, F_ADD_SEALS, seals) < 0) throw new OsError(`fcntl(${fd}, F_ADD_SEALS, 0x${seals.toString(16)})`, koffi.errno());
}

/** fcntl(fd, F_GET_SEALS): the fd's F_SEAL_* bits. Throws OsError (EINVAL: the file does not support sealing). */
export function getSeals(fd: number): number {
  const r = libc().fcntl(fd, F_GET_SEALS, 0);
  if (r < 0) throw new OsError(`fcntl(${fd}, F_GET_SEALS)`, koffi.errno());
  return r;
}

/**
 * Throws ShmSealError unless `fd` carries F_SEAL_SHRINK and F_SEAL_GROW and is at least `bytes` long: a mapping
 * of its first `bytes` then never lies past the end of the file, whatever any other holder of the fd does.
 */
export function requireSizeSealed(fd: number, bytes: number): void {
  let seals: number;
  try {
    seals = getSeals(fd);
  } catch (e) {
    throw new ShmSealError(fd, `fd ${fd} is not sealable shared memory (${(e as Error).message}); only a memfd sealed against shrinking and growing is mapped`);
  }
  if ((seals & SIZE_SEALS) !== SIZE_SEALS) {
    throw new ShmSealError(fd, `fd ${fd} is not sealed against shrinking and growing (seals 0x${seals.toString(16)}); its holder could truncate it under the mapping`);
  }
  const have = fs.fstatSync(fd).size;
  if (have < bytes) throw new ShmSealError(fd, `fd ${fd} holds ${have} bytes, fewer than the ${bytes} to map`);
}

const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;

/** Clear or set FD_CLOEXEC on an fd (an fd that must survive exec into a child needs it cleared). */
export function setCloexec(fd: number, on: boolean): void {
  const l = libc();
  const cur = l.fcntl(fd, F_GETFD, 0);
  if (cur < 0) throw new OsError(`fcntl(${fd}, F_GETFD)`, koffi.errno());
  const next = on ? cur | FD_CLOEXEC : cur & ~FD_CLOEXEC;
  if (l.fcntl(fd, F_SETFD, next) < 0) throw new OsError(`fcntl(${fd}, F_SETFD)`, koffi.errno());
}

const timespec = new Uint8Array(16);
const timespecView = new DataView(timespec.buffer);

/**
 * FUTEX_WAIT (process-shared) on the 32-bit word at virtual address `address`: sleeps while the word equals
 * `expected`, at most `timeoutMs` (negative = forever). Returns 'ok' (woken, possibly spuriously),
 * 'not-equal' (the word differed), or 'timed-out'.
 */
export function futexWait(address: number, expected: number, timeoutMs: number): 'ok' | 'not-equal' | 'timed-out' {
  let ts: Uint8Array | null = null;
  if (timeoutMs >= 0) {
    const sec = Math.floor(timeoutMs / 1000);
    const nsec = Math.round((timeoutMs - sec * 1000) * 1e6);
    timespecView.setBigInt64(0, BigInt(sec), true);
    timespecView.setBigInt64(8, BigInt(Math.min(nsec, 999_999_999)), true);
    ts = timespec;
  }
  const r = Number(libc().futex(SYS_FUTEX, address, FUTEX_WAIT, expected | 0, ts, null, 0));
  if (r === 0) return 'ok';
  const e = koffi.errno();
  if (e === ETIMEDOUT) return 'timed-out';
  if (e === EAGAIN) return 'not-equal';
  if (e === EINTR) return 'ok';
  throw new OsError('futex(FUTEX_WAIT)', e);
}

/** FUTEX_WAKE (process-shared): wake up to `count` waiters on the word at `address`. Returns how many woke. */
export function futexWake(address: number, count = 1): number {
  const r = Number(libc().futex(SYS_FUTEX, address, FUTEX_WAKE, count, null, null, 0));
  if (r < 0) throw new OsError('futex(FUTEX_WAKE)', koffi.errno());
  return r;
}
