/**
 * Unix domain sockets through koffi: socket / bind / listen / accept4 / connect with struct sockaddr_un,
 * sendmsg / recvmsg carrying SCM_RIGHTS file descriptors, SO_PEERCRED, poll(2), eventfd, fcntl dup, close,
 * shutdown, unlink. Node's net module can neither send nor receive descriptors (and reading a socket with it
 * discards ancillary data), so the IPC layer (src/ipc) does all of its socket I/O through these calls.
 *
 * Calls that fail routinely on non-blocking sockets (accept4, connect, sendmsg, recvmsg, poll) return -errno;
 * set-up calls throw OsError. ABI facts (x86-64 and arm64 Linux, LP64):
 *   struct sockaddr_un 110 bytes: sun_family u16 at 0, sun_path[108] at 2.
 *   struct msghdr 56 bytes: msg_name ptr 0, msg_namelen u32 8, msg_iov ptr 16, msg_iovlen u64 24,
 *     msg_control ptr 32, msg_controllen u64 40, msg_flags i32 48.
 *   struct iovec 16 bytes: iov_base ptr 0, iov_len u64 8.
 *   struct cmsghdr 16 bytes: cmsg_len u64 0, cmsg_level i32 8, cmsg_type i32 12, data at 16;
 *     CMSG_ALIGN = 8, CMSG_SPACE(n) = 16 + align8(n), CMSG_LEN(n) = 16 + n.
 *   struct ucred 12 bytes: pid i32 0, uid u32 4, gid u32 8.
 *   struct pollfd 8 bytes: fd i32 0, events i16 4, revents i16 6.
 */
import koffi from 'koffi';
import { ERRNO, OsError } from './libc.js';
import { allocHostMemory, freeHostMemory, type HostMemory } from './fileio.js';

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_PEERCRED = 17;
export const SCM_RIGHTS = 1;
export const MSG_CTRUNC = 0x8;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const SHUT_RD = 0;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
export const F_DUPFD_CLOEXEC = 1030;
/** The kernel's limit on descriptors in one SCM_RIGHTS message (SCM_MAX_FD). */
export const SCM_MAX_FD = 253;
/** Longest sun_path (without the terminating NUL). */
export const UNIX_PATH_MAX = 107;

const SOCKADDR_UN_SIZE = 110;

/** Peer credentials of a connected Unix socket (SO_PEERCRED: taken by the kernel at connect time). */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

type Ptr = unknown;
interface SockLib {
  socket: (domain: number, type: number, proto: number) => number;
  bind: (fd: number, addr: Uint8Array, len: number) => number;
  listen: (fd: number, backlog: number) => number;
  accept4: (fd: number, addr: Ptr | null, len: Ptr | null, flags: number) => number;
  connect: (fd: number, addr: Uint8Array, len: number) => number;
  sendmsg: (fd: number, msg: number, flags: number) => number;
  recvmsg: (fd: number, msg: number, flags: number) => number;
  getsockopt: (fd: number, level: number, name: number, val: Uint8Array, len: Uint32Array) => number;
  poll: (fds: Uint8Array, n: number, timeout: number) => number;
  close: (fd: number) => number;
  shutdown: (fd: number, how: number) => number;
  unlink: (path: string) => number;
  eventfd: (init: number, flags: number) => number;
  write: (fd: number, buf: Uint8Array, n: number) => number;
  read: (fd: number, buf: Uint8Array, n: number) => number;
  fcntl: (fd: number, cmd: number, arg: number) => number;
}
let lib: SockLib | null = null;

function sockLib(): SockLib {
  if (lib === null) {
    if (process.platform !== 'linux') throw new OsError('dlopen(libc)', ERRNO.EOPNOTSUPP);
    const l = koffi.load('libc.so.6');
    lib = {
      socket: l.func('int socket(int domain, int type, int protocol)') as SockLib['socket'],
      bind: l.func('bind', 'int', ['int', 'void *', 'uint32']) as SockLib['bind'],
      listen: l.func('int listen(int fd, int backlog)') as SockLib['listen'],
      accept4: l.func('accept4', 'int', ['int', 'void *', 'void *', 'int']) as SockLib['accept4'],
      connect: l.func('connect', 'int', ['int', 'void *', 'uint32']) as SockLib['connect'],
      // msghdr lives in native scratch memory; its address is passed as an integer (same ABI as a pointer).
      sendmsg: l.func('sendmsg', 'long', ['int', 'intptr_t', 'int']) as SockLib['sendmsg'],
      recvmsg: l.func('recvmsg', 'long', ['int', 'intptr_t', 'int']) as SockLib['recvmsg'],
      getsockopt: l.func('getsockopt', 'int', ['int', 'int', 'int', 'void *', 'void *']) as SockLib['getsockopt'],
      poll: l.func('poll', 'int', ['void *', 'unsigned long', 'int']) as SockLib['poll'],
      close: l.func('int close(int fd)') as SockLib['close'],
      shutdown: l.func('int shutdown(int fd, int how)') as SockLib['shutdown'],
      unlink: l.func('int unlink(const char *path)') as SockLib['unlink'],
      eventfd: l.func('int eventfd(unsigned int initval, int flags)') as SockLib['eventfd'],
      write: l.func('write', 'long', ['int', 'void *', 'size_t']) as SockLib['write'],
      read: l.func('read', 'long', ['int', 'void *', 'size_t']) as SockLib['read'],
      // fcntl is variadic in C; an int third argument is passed identically on the Linux LP64 ABIs.
      fcntl: l.func('fcntl', 'int', ['int', 'int', 'int']) as SockLib['fcntl'],
    };
  }
  return lib;
}

/** struct sockaddr_un for `path` (a leading NUL selects the abstract namespace) and its length. */
export function sockaddrUn(path: string): { addr: Uint8Array; len: number } {
  const bytes = Buffer.from(path, 'utf8');
  const abstract = bytes.length > 0 && bytes[0] === 0;
  if (bytes.length === 0) throw new OsError(`sockaddr_un("")`, ERRNO.EINVAL);
  if (bytes.length > UNIX_PATH_MAX + (abstract ? 1 : 0)) {
    throw new OsError(`sockaddr_un(${JSON.stringify(path)}): path of ${bytes.length} bytes`, ERRNO_ENAMETOOLONG);
  }
  if (!abstract && bytes.includes(0)) throw new OsError(`sockaddr_un(${JSON.stringify(path)})`, ERRNO.EINVAL);
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, 2);
  // Abstract addresses count exactly their bytes; path names include the terminating NUL.
  return { addr, len: 2 + bytes.length + (abstract ? 0 : 1) };
}
const ERRNO_ENAMETOOLONG = 36;

/** socket(AF_UNIX, SOCK_STREAM | flags, 0). Throws OsError. */
export function unixSocket(flags = SOCK_CLOEXEC | SOCK_NONBLOCK): number {
  const fd = sockLib().socket(AF_UNIX, SOCK_STREAM | flags, 0);
  if (fd < 0) throw new OsError('socket(AF_UNIX)', koffi.errno());
  return fd;
}

/** bind(fd, path). Throws OsError (EADDRINUSE when the path exists). */
export function bindUnix(fd: number, path: string): void {
  const { addr, len } = sockaddrUn(path);
  if (sockLib().bind(fd, addr, len) < 0) throw new OsError(`bind(${path})`, koffi.errno());
}

/** listen(fd, backlog). Throws OsError. */
export function listenFd(fd: number, backlog: number): void {
  if (sockLib().listen(fd, backlog) < 0) throw new OsError('listen', koffi.errno());
}

/** accept4(fd, NULL, NULL, flags): the new descriptor, or -errno (-EAGAIN when none is pending). */
export function accept4(fd: number, flags = SOCK_CLOEXEC | SOCK_NONBLOCK): number {
  const r = sockLib().accept4(fd, null, null, flags);
  return r < 0 ? -koffi.errno() : r;
}

/**
 * connect(fd, path): 0, or -errno. On a non-blocking Unix socket a full backlog gives -EAGAIN (retry later);
 * ENOENT / ECONNREFUSED mean nobody listens there.
 */
export function connectUnix(fd: number, path: string): number {
  const { addr, len } = sockaddrUn(path);
  return sockLib().connect(fd, addr, len) < 0 ? -koffi.errno() : 0;
}

/** getsockopt(SOL_SOCKET, SO_PEERCRED): the peer's pid, uid and gid as of connect(). Throws OsError. */
export function peerCred(fd: number): PeerCred {
  const v = new Uint8Array(12);
  const len = new Uint32Array([12]);
  if (sockLib().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, v, len) < 0) {
    throw new OsError('getsockopt(SO_PEERCRED)', koffi.errno());
  }
  const dv = new DataView(v.buffer);
  return { pid: dv.getInt32(0, true), uid: dv.getUint32(4, true), gid: dv.getUint32(8, true) };
}

/** poll(fds, n, timeoutMs) over an array of struct pollfd (see PollSet): ready count or -errno. */
export function pollFds(fds: Uint8Array, n: number, timeoutMs: number): number {
  const r = sockLib().poll(fds, n, timeoutMs);
  return r < 0 ? -koffi.errno() : r;
}

/** A growable array of struct pollfd for poll(2). */
export class PollSet {
  private bytes = new Uint8Array(8 * 16);
  private view = new DataView(this.bytes.buffer);
  size = 0;

  clear(): void {
    this.size = 0;
  }
  add(fd: number, events: number): number {
    if ((this.size + 1) * 8 > this.bytes.length) {
      const b = new Uint8Array(this.bytes.length * 2);
      b.set(this.bytes);
      this.bytes = b;
      this.view = new DataView(b.buffer);
    }
    const i = this.size++;
    this.view.setInt32(i * 8, fd, true);
    this.view.setInt16(i * 8 + 4, events, true);
    this.view.setInt16(i * 8 + 6, 0, true);
    return i;
  }
  fd(i: number): number {
    return this.view.getInt32(i * 8, true);
  }
  revents(i: number): number {
    return this.view.getUint16(i * 8 + 6, true);
  }
  /** poll(2) on the set: ready count, 0 on timeout, or -errno (-EINTR is harmless). */
  poll(timeoutMs: number): number {
    return pollFds(this.bytes, this.size, timeoutMs);
  }
}

/** close(fd); returns 0 or -errno (never throws: used on clean-up paths). */
export function closeFd(fd: number): number {
  return sockLib().close(fd) < 0 ? -koffi.errno() : 0;
}

/** shutdown(fd, how); returns 0 or -errno. */
export function shutdownFd(fd: number, how = SHUT_RDWR): number {
  return sockLib().shutdown(fd, how) < 0 ? -koffi.errno() : 0;
}

/** unlink(path); returns 0 or -errno. */
export function unlinkPath(path: string): number {
  return sockLib().unlink(path) < 0 ? -koffi.errno() : 0;
}

/** fcntl(fd, F_DUPFD_CLOEXEC, 0): a new descriptor for the same open file. Throws OsError. */
export function dupCloexec(fd: number): number {
  const r = sockLib().fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (r < 0) throw new OsError(`fcntl(${fd}, F_DUPFD_CLOEXEC)`, koffi.errno());
  return r;
}

/** eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK). Throws OsError. */
export function eventFd(flags = EFD_CLOEXEC | EFD_NONBLOCK): number {
  const r = sockLib().eventfd(0, flags);
  if (r < 0) throw new OsError('eventfd', koffi.errno());
  return r;
}

const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);
/** Add 1 to an eventfd's counter (wakes a poll on it); returns 0 or -errno (-EAGAIN at the counter's limit). */
export function eventFdSignal(fd: number): number {
  return sockLib().write(fd, ONE, 8) < 0 ? -koffi.errno() : 0;
}

/** Reset a non-blocking eventfd's counter; returns the counter value read (0 when it was already 0). */
export function eventFdDrain(fd: number): number {
  const b = new Uint8Array(8);
  const r = sockLib().read(fd, b, 8);
  if (r !== 8) return 0;
  return Number(new DataView(b.buffer).getBigUint64(0, true));
}

/** The result of one recvmsg: byte count (0 at end of stream) and the descriptors that came with them. */
export interface Received {
  /** Bytes now at the start of MsgIo.recvBuffer. */
  n: number;
  /** Descriptors received (already close-on-exec); the caller owns them. */
  fds: number[];
  /** MSG_CTRUNC: the kernel had more descriptors than the control buffer held (it closed the rest). */
  truncatedFds: boolean;
}

/**
 * sendmsg / recvmsg with SCM_RIGHTS over native scratch memory: a msghdr, one iovec, a control buffer with
 * room for SCM_MAX_FD descriptors, and a data buffer. One instance per thread (not re-entrant).
 */
export class MsgIo {
  static readonly HDR = 0;
  static readonly IOV = 64;
  static readonly CTRL = 128;
  static readonly CTRL_SPACE = 16 + ((SCM_MAX_FD * 4 + 7) & ~7);
  static readonly DATA = 4096;

  private readonly mem: HostMemory;
  private readonly dv: DataView;
  private readonly bytes: Uint8Array;
  /** The data area: recvmsg fills it from offset 0; sendmsg sends from it. */
  readonly recvBuffer: Uint8Array;
  readonly dataSize: number;
  private freed = false;

  constructor(dataSize = 256 * 1024) {
    this.dataSize = dataSize;
    this.mem = allocHostMemory(MsgIo.DATA + dataSize);
    this.dv = new DataView(this.mem.buffer);
    this.bytes = new Uint8Array(this.mem.buffer);
    this.recvBuffer = new Uint8Array(this.mem.buffer, MsgIo.DATA, dataSize);
  }

  private setup(len: number, controlLen: number): void {
    const a = this.mem.address;
    const dv = this.dv;
    dv.setBigUint64(MsgIo.HDR + 0, 0n, true); // msg_name
    dv.setUint32(MsgIo.HDR + 8, 0, true); // msg_namelen
    dv.setUint32(MsgIo.HDR + 12, 0, true);
    dv.setBigUint64(MsgIo.HDR + 16, BigInt(a + MsgIo.IOV), true); // msg_iov
    dv.setBigUint64(MsgIo.HDR + 24, 1n, true); // msg_iovlen
    dv.setBigUint64(MsgIo.HDR + 32, controlLen > 0 ? BigInt(a + MsgIo.CTRL) : 0n, true); // msg_control
    dv.setBigUint64(MsgIo.HDR + 40, BigInt(controlLen), true); // msg_controllen
    dv.setInt32(MsgIo.HDR + 48, 0, true); // msg_flags
    dv.setBigUint64(MsgIo.IOV + 0, BigInt(a + MsgIo.DATA), true); // iov_base
    dv.setBigUint64(MsgIo.IOV + 8, BigInt(len), true); // iov_len
  }

  /**
   * sendmsg(fd) of data[offset, offset + min(len, dataSize)) with `fds` as one SCM_RIGHTS message (none when
   * empty). MSG_NOSIGNAL | MSG_DONTWAIT. Returns the bytes sent (the descriptors went with them when > 0) or
   * -errno (-EAGAIN: try again when POLLOUT).
   */
  send(fd: number, data: Uint8Array, offset: number, len: number, fds: readonly number[] = []): number {
    if (fds.length > SCM_MAX_FD) return -ERRNO.EINVAL;
    const n = Math.min(len, this.dataSize);
    this.bytes.set(data.subarray(offset, offset + n), MsgIo.DATA);
    let controlLen = 0;
    if (fds.length > 0) {
      const dlen = fds.length * 4;
      controlLen = 16 + ((dlen + 7) & ~7);
      this.dv.setBigUint64(MsgIo.CTRL + 0, BigInt(16 + dlen), true); // cmsg_len = CMSG_LEN(dlen)
      this.dv.setInt32(MsgIo.CTRL + 8, SOL_SOCKET, true);
      this.dv.setInt32(MsgIo.CTRL + 12, SCM_RIGHTS, true);
      for (let i = 0; i < fds.length; i++) this.dv.setInt32(MsgIo.CTRL + 16 + i * 4, fds[i], true);
      for (let i = 16 + dlen; i < controlLen; i++) this.bytes[MsgIo.CTRL + i] = 0;
    }
    this.setup(n, controlLen);
    const r = sockLib().sendmsg(fd, this.mem.address + MsgIo.HDR, MSG_NOSIGNAL | MSG_DONTWAIT);
    return r < 0 ? -koffi.errno() : r;
  }

  /**
   * recvmsg(fd) of up to `max` bytes into recvBuffer, with MSG_CMSG_CLOEXEC | MSG_DONTWAIT. Returns what came
   * (n = 0: end of stream) or -errno (-EAGAIN: nothing now).
   */
  recv(fd: number, max = this.dataSize): Received | number {
    this.setup(Math.min(max, this.dataSize), MsgIo.CTRL_SPACE);
    const r = sockLib().recvmsg(fd, this.mem.address + MsgIo.HDR, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (r < 0) return -koffi.errno();
    const flags = this.dv.getInt32(MsgIo.HDR + 48, true);
    const controlLen = Number(this.dv.getBigUint64(MsgIo.HDR + 40, true));
    const fds: number[] = [];
    // Walk the control messages (CMSG_FIRSTHDR / CMSG_NXTHDR).
    let off = 0;
    while (off + 16 <= controlLen) {
      const cmsgLen = Number(this.dv.getBigUint64(MsgIo.CTRL + off, true));
      if (cmsgLen < 16 || off + cmsgLen > controlLen) break;
      const level = this.dv.getInt32(MsgIo.CTRL + off + 8, true);
      const type = this.dv.getInt32(MsgIo.CTRL + off + 12, true);
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        const count = Math.floor((cmsgLen - 16) / 4);
        for (let i = 0; i < count; i++) fds.push(this.dv.getInt32(MsgIo.CTRL + off + 16 + i * 4, true));
      }
      off += (cmsgLen + 7) & ~7;
    }
    return { n: r, fds, truncatedFds: (flags & MSG_CTRUNC) !== 0 };
  }

  /** Release the scratch memory (idempotent). */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    freeHostMemory(this.mem);
  }
}
