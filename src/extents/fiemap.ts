/** FIEMAP (FS_IOC_FIEMAP) on a mounted file system: a file's extents by fd or path. */
import * as fs from 'node:fs';
import { ioctl, OsError, ERRNO } from '../sys/index.js';
import { ExtentError, FiemapError, type Extent, type ExtentFlag, type FileMap } from './types.js';

export const FS_IOC_FIEMAP = 0xc020660b;
export const FIEMAP_FLAG_SYNC = 0x1;
export const FIEMAP_FLAG_XATTR = 0x2;
const HEADER = 32;
const EXTENT = 56;
const MAX_OFFSET = 0xffff_ffff_ffff_ffffn;

export const FIEMAP_EXTENT = {
  LAST: 0x1,
  UNKNOWN: 0x2,
  DELALLOC: 0x4,
  ENCODED: 0x8,
  DATA_ENCRYPTED: 0x80,
  NOT_ALIGNED: 0x100,
  DATA_INLINE: 0x200,
  DATA_TAIL: 0x400,
  UNWRITTEN: 0x800,
  MERGED: 0x1000,
  SHARED: 0x2000,
} as const;

/** FIEMAP extent flags to flag strings. */
export function fiemapFlags(f: number): ExtentFlag[] {
  const out: ExtentFlag[] = [];
  if (f & FIEMAP_EXTENT.UNWRITTEN) out.push('unwritten');
  if (f & FIEMAP_EXTENT.SHARED) out.push('shared');
  if (f & (FIEMAP_EXTENT.DATA_INLINE | FIEMAP_EXTENT.DATA_TAIL | FIEMAP_EXTENT.NOT_ALIGNED)) out.push('inline');
  if (f & FIEMAP_EXTENT.DELALLOC) out.push('delalloc');
  if (f & (FIEMAP_EXTENT.ENCODED | FIEMAP_EXTENT.DATA_ENCRYPTED)) out.push('encoded');
  if (f & FIEMAP_EXTENT.UNKNOWN) out.push('unknown');
  if (f & FIEMAP_EXTENT.LAST) out.push('last');
  return out;
}

export interface FiemapOptions {
  /** FIEMAP_FLAG_SYNC: flush dirty data first so delayed allocations get real blocks. */
  sync?: boolean;
  /** Extents asked for per ioctl (default 512). */
  batch?: number;
  /** Path to report (when mapping by fd). */
  path?: string;
}

function toSafe(v: bigint, what: string, path: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ExtentError(`${path}: FIEMAP ${what} ${v} exceeds 2^53`);
  return Number(v);
}

/** Map an open file descriptor. */
export function fiemapFd(fd: number, opts: FiemapOptions = {}): FileMap {
  const path = opts.path ?? `fd ${fd}`;
  const st = fs.fstatSync(fd);
  const batch = Math.max(1, Math.min(opts.batch ?? 512, 65536));
  const buf = new Uint8Array(HEADER + batch * EXTENT);
  const dv = new DataView(buf.buffer);
  const extents: Extent[] = [];
  let start = 0n;
  for (let round = 0; ; round++) {
    buf.fill(0, 0, HEADER);
    dv.setBigUint64(0, start, true); // fm_start
    dv.setBigUint64(8, MAX_OFFSET - start, true); // fm_length
    dv.setUint32(16, opts.sync ? FIEMAP_FLAG_SYNC : 0, true); // fm_flags
    dv.setUint32(24, batch, true); // fm_extent_count
    try {
      ioctl(fd, FS_IOC_FIEMAP, buf);
    } catch (e) {
      if (e instanceof OsError) {
        const unsupported = e.errno === ERRNO.ENOTTY || e.errno === ERRNO.EOPNOTSUPP;
        throw new FiemapError(path, e.errno, e.code, unsupported);
      }
      throw e;
    }
    const mapped = dv.getUint32(20, true);
    if (mapped > batch) throw new ExtentError(`${path}: FIEMAP returned ${mapped} extents for ${batch} slots`);
    let last = false;
    let end = start;
    for (let i = 0; i < mapped; i++) {
      const o = HEADER + i * EXTENT;
      const logical = dv.getBigUint64(o, true);
      const physical = dv.getBigUint64(o + 8, true);
      const length = dv.getBigUint64(o + 16, true);
      const flags = dv.getUint32(o + 40, true);
      extents.push({
        logical: toSafe(logical, 'logical offset', path),
        physical: toSafe(physical, 'physical offset', path),
        length: toSafe(length, 'length', path),
        flags: fiemapFlags(flags),
      });
      if (logical + length > end) end = logical + length;
      if (flags & FIEMAP_EXTENT.LAST) last = true;
    }
    if (last || mapped === 0 || mapped < batch) break;
    if (end <= start) throw new ExtentError(`${path}: FIEMAP made no progress at ${start}`);
    start = end;
    if (round > 1_000_000) throw new ExtentError(`${path}: FIEMAP did not terminate`);
  }
  const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'unknown';
  return { path, ino: Number(st.ino), size: st.size, type, extents };
}

/** Map a file by path on a mounted file system. */
export function fiemapPath(path: string, opts: FiemapOptions = {}): FileMap {
  const fd = fs.openSync(path, 'r');
  try {
    return fiemapFd(fd, { ...opts, path });
  } finally {
    fs.closeSync(fd);
  }
}
