/**
 * dma-buf file descriptors (include/uapi/linux/dma-buf.h, udmabuf.h): telling a dma-buf apart from any other fd,
 * its size and exporter, mapping it, the CPU-access bracket (DMA_BUF_IOCTL_SYNC), naming it (DMA_BUF_SET_NAME),
 * and making one from a memfd with /dev/udmabuf (UDMABUF_CREATE, UDMABUF_CREATE_LIST). Control-plane calls only.
 *
 * How a dma-buf is recognised (inspectDmaBuf): the kernel backs every dma-buf with a file of its own pseudo
 * filesystem, whose /proc/self/fd link reads "/dmabuf:<name>" (older kernels: "anon_inode:dmabuf"), and its
 * /proc/self/fdinfo entry carries `size:` and `exp_name:` lines no other file has. Both are read, and they must
 * agree with fstat's size; anything else is refused with one DmaBufError.
 */
import * as fs from 'node:fs';
import { OsError, ioctl } from './libc.js';
import { MAP_SHARED, PROT_READ, PROT_WRITE, mmap, type Mapping } from './mman.js';
import { F_SEAL_SHRINK, F_SEAL_WRITE, getSeals } from './shm.js';

// _IOC encoding (asm-generic/ioctl.h): dir << 30 | size << 16 | type << 8 | nr; _IOW: dir = 1.
const IOC_WRITE = 1;
function iow(type: number, nr: number, size: number): number {
  return ((IOC_WRITE << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}
/** The dma-buf ioctl type, 'b'. */
const DMA_BUF_BASE = 0x62;
/** The udmabuf ioctl type, 'u'. */
const UDMABUF_BASE = 0x75;

/** struct dma_buf_sync { __u64 flags; }. */
const DMA_BUF_SYNC_BYTES = 8;
/** _IOW('b', 0, struct dma_buf_sync): bracket CPU access to the buffer's mapping. */
export const DMA_BUF_IOCTL_SYNC = iow(DMA_BUF_BASE, 0, DMA_BUF_SYNC_BYTES);
/** _IOW('b', 1, const char *) on 64-bit: name the buffer (shown in fdinfo `name:`, at most DMA_BUF_NAME_LEN - 1 bytes). */
export const DMA_BUF_SET_NAME = iow(DMA_BUF_BASE, 1, 8);
export const DMA_BUF_SYNC_READ = 1 << 0;
export const DMA_BUF_SYNC_WRITE = 1 << 1;
export const DMA_BUF_SYNC_RW = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE;
export const DMA_BUF_SYNC_START = 0 << 2;
export const DMA_BUF_SYNC_END = 1 << 2;
/** Longest dma-buf name, with its NUL. */
export const DMA_BUF_NAME_LEN = 32;

/** struct udmabuf_create { __u32 memfd; __u32 flags; __u64 offset; __u64 size; }. */
const UDMABUF_CREATE_BYTES = 24;
/** struct udmabuf_create_list { __u32 flags; __u32 count; struct udmabuf_create_item list[]; } (header). */
const UDMABUF_CREATE_LIST_HEADER = 8;
/** struct udmabuf_create_item { __u32 memfd; __u32 __pad; __u64 offset; __u64 size; }. */
const UDMABUF_CREATE_ITEM_BYTES = 24;
/** _IOW('u', 0x42, struct udmabuf_create): a dma-buf over [offset, offset + size) of a memfd. */
export const UDMABUF_CREATE = iow(UDMABUF_BASE, 0x42, UDMABUF_CREATE_BYTES);
/** _IOW('u', 0x43, struct udmabuf_create_list): a dma-buf over several memfd ranges. */
export const UDMABUF_CREATE_LIST = iow(UDMABUF_BASE, 0x43, UDMABUF_CREATE_LIST_HEADER);
/** The new dma-buf fd is close-on-exec. */
export const UDMABUF_FLAGS_CLOEXEC = 0x01;
/** The kernel's cap on items in one UDMABUF_CREATE_LIST (list_limit module parameter default). */
export const UDMABUF_LIST_LIMIT = 1024;
/** The udmabuf misc device. */
export const UDMABUF_DEVICE = '/dev/udmabuf';

const PAGE = 4096;

/** An fd that is not a dma-buf, or one whose facts contradict what was claimed about it. */
export class DmaBufError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DmaBufError';
  }
}

/** What the kernel says about a dma-buf fd. */
export interface DmaBufFacts {
  /** Bytes of the buffer (fdinfo `size:`, equal to fstat's size). */
  size: number;
  /** The exporting driver (fdinfo `exp_name:`): "udmabuf", "nv_dmabuf", "vfio-pci", ... */
  exporter: string;
  /** The name set by DMA_BUF_SET_NAME (fdinfo `name:`), or "". */
  name: string;
}

/**
 * The facts of dma-buf `fd`, or DmaBufError when `fd` is not an open dma-buf (closed, a regular file, a memfd,
 * a socket, ...). Reads this process's /proc/self/fd and /proc/self/fdinfo entries.
 */
export function inspectDmaBuf(fd: number): DmaBufFacts {
  if (!Number.isInteger(fd) || fd < 0) throw new DmaBufError(`${fd} is not a file descriptor`);
  let link: string;
  let info: string;
  let st: fs.Stats;
  try {
    st = fs.fstatSync(fd);
    link = fs.readlinkSync(`/proc/self/fd/${fd}`);
    info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  } catch (e) {
    throw new DmaBufError(`fd ${fd} is not an open file descriptor (${(e as Error).message})`);
  }
  if (!link.startsWith('/dmabuf:') && link !== 'anon_inode:dmabuf') {
    throw new DmaBufError(`fd ${fd} is not a dma-buf (it is ${link.length > 80 ? link.slice(0, 80) + '...' : link})`);
  }
  const field = (key: string): string | null => {
    const m = new RegExp(`^${key}:\\s*(.*)$`, 'm').exec(info);
    return m === null ? null : m[1]!.trim();
  };
  const exporter = field('exp_name');
  const sizeText = field('size');
  if (exporter === null || sizeText === null || !/^\d+$/.test(sizeText)) throw new DmaBufError(`fd ${fd} is not a dma-buf (its fdinfo has no exp_name/size lines)`);
  const size = Number(sizeText);
  if (!Number.isSafeInteger(size) || size <= 0) throw new DmaBufError(`dma-buf fd ${fd} reports an unusable size ${sizeText}`);
  if (st.size !== size) throw new DmaBufError(`dma-buf fd ${fd}: fstat says ${st.size} bytes, fdinfo ${size}`);
  return { size, exporter, name: field('name') ?? '' };
}

/** mmap(MAP_SHARED) the first `size` bytes of dma-buf `fd` (the exporter may refuse: nv_dmabuf answers ENOTSUPP). */
export function mapDmaBuf(fd: number, size: number, opts: { readOnly?: boolean } = {}): Mapping {
  return mmap(size, opts.readOnly === true ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, `dma-buf fd ${fd}`);
}

const syncArg = new Uint8Array(DMA_BUF_SYNC_BYTES);
const syncView = new DataView(syncArg.buffer);

/** DMA_BUF_IOCTL_SYNC with `flags` (DMA_BUF_SYNC_START / END | READ / WRITE / RW). */
export function dmaBufSync(fd: number, flags: number): void {
  syncView.setBigUint64(0, BigInt(flags), true);
  try {
    ioctl(fd, DMA_BUF_IOCTL_SYNC, syncArg);
  } catch (e) {
    throw e instanceof OsError ? new OsError(`DMA_BUF_IOCTL_SYNC(fd ${fd}, 0x${flags.toString(16)})`, e.errno) : e;
  }
}

/** DMA_BUF_SET_NAME: name the buffer (visible in /proc/<pid>/fdinfo and debugfs). */
export function dmaBufSetName(fd: number, name: string): void {
  const bytes = Buffer.from(name + '\0', 'utf8');
  if (bytes.length > DMA_BUF_NAME_LEN) throw new RangeError(`a dma-buf name is at most ${DMA_BUF_NAME_LEN - 1} bytes`);
  try {
    ioctl(fd, DMA_BUF_SET_NAME, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
  } catch (e) {
    throw e instanceof OsError ? new OsError(`DMA_BUF_SET_NAME(fd ${fd})`, e.errno) : e;
  }
}

/** Whether this kernel offers udmabuf (the misc device exists). */
export function hasUdmabuf(): boolean {
  return fs.existsSync(UDMABUF_DEVICE);
}

/** One memfd range of a udmabuf. */
export interface UdmabufRange {
  memfd: number;
  /** Byte offset in the memfd (page aligned). */
  offset: number;
  /** Bytes (page aligned, > 0). */
  size: number;
}

/**
 * A dma-buf over memfd ranges (UDMABUF_CREATE for one, UDMABUF_CREATE_LIST for several), close-on-exec. The kernel
 * requires each memfd to carry F_SEAL_SHRINK and not F_SEAL_WRITE, and page-aligned ranges; both are checked here
 * first so the error says which. The caller owns the returned fd.
 */
export function createUdmabuf(ranges: readonly UdmabufRange[]): number {
  if (ranges.length === 0 || ranges.length > UDMABUF_LIST_LIMIT) throw new RangeError(`a udmabuf takes 1..${UDMABUF_LIST_LIMIT} memfd ranges, got ${ranges.length}`);
  for (const r of ranges) {
    if (!Number.isSafeInteger(r.offset) || r.offset < 0 || r.offset % PAGE !== 0) throw new RangeError(`udmabuf range offset ${r.offset} is not page aligned`);
    if (!Number.isSafeInteger(r.size) || r.size <= 0 || r.size % PAGE !== 0) throw new RangeError(`udmabuf range size ${r.size} is not a positive multiple of ${PAGE}`);
    const seals = getSeals(r.memfd);
    if ((seals & F_SEAL_SHRINK) === 0) throw new DmaBufError(`memfd ${r.memfd} lacks F_SEAL_SHRINK, which udmabuf requires`);
    if ((seals & F_SEAL_WRITE) !== 0) throw new DmaBufError(`memfd ${r.memfd} carries F_SEAL_WRITE, which udmabuf refuses`);
  }
  let dev: number;
  try {
    dev = fs.openSync(UDMABUF_DEVICE, fs.constants.O_RDWR);
  } catch (e) {
    throw new DmaBufError(`no udmabuf on this kernel: cannot open ${UDMABUF_DEVICE} (${(e as Error).message})`);
  }
  try {
    let arg: Uint8Array;
    let req: number;
    if (ranges.length === 1) {
      arg = new Uint8Array(UDMABUF_CREATE_BYTES);
      const v = new DataView(arg.buffer);
      v.setUint32(0, ranges[0]!.memfd, true);
      v.setUint32(4, UDMABUF_FLAGS_CLOEXEC, true);
      v.setBigUint64(8, BigInt(ranges[0]!.offset), true);
      v.setBigUint64(16, BigInt(ranges[0]!.size), true);
      req = UDMABUF_CREATE;
    } else {
      arg = new Uint8Array(UDMABUF_CREATE_LIST_HEADER + ranges.length * UDMABUF_CREATE_ITEM_BYTES);
      const v = new DataView(arg.buffer);
      v.setUint32(0, UDMABUF_FLAGS_CLOEXEC, true);
      v.setUint32(4, ranges.length, true);
      ranges.forEach((r, i) => {
        const o = UDMABUF_CREATE_LIST_HEADER + i * UDMABUF_CREATE_ITEM_BYTES;
        v.setUint32(o, r.memfd, true);
        v.setBigUint64(o + 8, BigInt(r.offset), true);
        v.setBigUint64(o + 16, BigInt(r.size), true);
      });
      req = UDMABUF_CREATE_LIST;
    }
    try {
      return ioctl(dev, req, arg);
    } catch (e) {
      const name = ranges.length === 1 ? 'UDMABUF_CREATE' : 'UDMABUF_CREATE_LIST';
      throw e instanceof OsError ? new OsError(`${name}(${ranges.length} range(s), ${ranges.reduce((a, r) => a + r.size, 0)} bytes)`, e.errno) : e;
    }
  } finally {
    fs.closeSync(dev);
  }
}
