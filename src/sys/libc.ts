/**
 * The thin OS layer: a few libc calls through koffi, loaded lazily on first use.
 * Callers batch their work so that no FFI call sits in a per-item loop.
 */
import koffi from 'koffi';
import * as os from 'node:os';

/** A failed system call. */
export class OsError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  constructor(syscall: string, errno: number) {
    const code = errnoName(errno);
    super(`${syscall} failed: ${code} (errno ${errno})`);
    this.name = 'OsError';
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}

export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(os.constants.errno)) if (value === errno) return name;
  return `errno${errno}`;
}

export const ERRNO = {
  ENOTTY: os.constants.errno.ENOTTY,
  EOPNOTSUPP: os.constants.errno.EOPNOTSUPP ?? 95,
  EINVAL: os.constants.errno.EINVAL,
  EBADF: os.constants.errno.EBADF,
};

type IoctlFn = (fd: number, request: number | bigint, arg: Uint8Array) => number;
let ioctlFn: IoctlFn | null = null;

function libc(): { ioctl: IoctlFn } {
  if (ioctlFn === null) {
    if (process.platform !== 'linux') throw new OsError('dlopen(libc)', ERRNO.EOPNOTSUPP);
    const lib = koffi.load('libc.so.6');
    // ioctl is variadic in C; on Linux ABIs a fixed pointer third argument is passed identically.
    ioctlFn = lib.func('int ioctl(int fd, unsigned long request, void *arg)') as unknown as IoctlFn;
  }
  return { ioctl: ioctlFn };
}

/**
 * ioctl(fd, request, buf): the kernel reads and writes `buf` in place. Returns the (non-negative) result;
 * throws OsError with errno on failure.
 */
export function ioctl(fd: number, request: number, buf: Uint8Array): number {
  const f = libc().ioctl;
  const r = f(fd, request, buf);
  if (r < 0) throw new OsError('ioctl', koffi.errno());
  return r;
}

/** BLKGETSIZE64: the size in bytes of a block device open as `fd`. */
export const BLKGETSIZE64 = 0x80081272;
export function blockDeviceSize(fd: number): number {
  const b = new Uint8Array(8);
  ioctl(fd, BLKGETSIZE64, b);
  const v = new DataView(b.buffer).getBigUint64(0, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`block device size ${v} too large`);
  return Number(v);
}
