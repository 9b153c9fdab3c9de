/**
 * One result type for every source of file extents (FIEMAP on a mounted file system, the XFS and ext4
 * on-disk decoders), its helpers, and the typed errors of the extents layer.
 *
 * All offsets and lengths are in BYTES. `physical` is the byte offset on the device / image.
 */

export type ExtentFlag = 'unwritten' | 'last' | 'shared' | 'inline' | 'delalloc' | 'encoded' | 'unknown';

export type FileType = 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket' | 'unknown';

export interface Extent {
  /** Byte offset inside the file. */
  logical: number;
  /** Byte offset on the device or image (for 'inline' extents: where the inline bytes sit, not block aligned). */
  physical: number;
  /** Length in bytes (whole blocks for block-mapped extents; may run past the end of the file). */
  length: number;
  flags: ExtentFlag[];
}

export interface FileMap {
  path: string;
  /** Inode number (0 when unknown). */
  ino: number;
  /** File size in bytes. */
  size: number;
  type?: FileType;
  /** Ordered by `logical`, non-overlapping. */
  extents: Extent[];
}

export interface LbaRange {
  /** First LBA. */
  lba: number;
  /** Number of LBAs. */
  count: number;
  /** Byte offset in the file of the first byte of this range. */
  logical: number;
  flags: ExtentFlag[];
}

export interface Hole {
  logical: number;
  length: number;
}

/**
 * The LBA ranges (for a device with `lbaSize`-byte blocks) covered by the block-addressable extents of `map`.
 * Inline extents are not block addressable and are skipped unless `includeInline` is set.
 */
export function toLbaRanges(map: FileMap, lbaSize: number, includeInline = false): LbaRange[] {
  if (!Number.isInteger(lbaSize) || lbaSize <= 0) throw new RangeError(`bad LBA size ${lbaSize}`);
  const out: LbaRange[] = [];
  for (const e of map.extents) {
    // never round: an inexact offset would name LBAs that are not the file's
    if (!isByteCount(e.logical) || !isByteCount(e.physical) || !isByteCount(e.length) || !Number.isSafeInteger(e.physical + e.length)) {
      throw new RangeError(`${map.path}: extent at logical ${e.logical} (physical ${e.physical}, ${e.length} bytes) is not made of exact non-negative integers`);
    }
    if (e.flags.includes('inline') && !includeInline) continue;
    if (e.flags.includes('delalloc') || e.length === 0) continue;
    const first = Math.floor(e.physical / lbaSize);
    const end = Math.ceil((e.physical + e.length) / lbaSize);
    out.push({ lba: first, count: end - first, logical: e.logical, flags: [...e.flags] });
  }
  return out;
}

function isByteCount(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** The holes implied by gaps between extents, before the first and after the last one (up to `size`). */
export function holes(map: FileMap): Hole[] {
  const out: Hole[] = [];
  let pos = 0;
  for (const e of map.extents) {
    if (e.logical > pos) out.push({ logical: pos, length: e.logical - pos });
    pos = Math.max(pos, e.logical + e.length);
  }
  if (map.size > pos) out.push({ logical: pos, length: map.size - pos });
  return out;
}

/** Total bytes mapped by extents. */
export function mappedBytes(map: FileMap): number {
  let n = 0;
  for (const e of map.extents) n += e.length;
  return n;
}

/** The JSON shape printed by `homi extents --json`. */
export function fileMapJson(map: FileMap): {
  path: string;
  size: number;
  extents: { logical: number; physical: number; length: number; flags: string[] }[];
} {
  return {
    path: map.path,
    size: map.size,
    extents: map.extents.map((e) => ({ logical: e.logical, physical: e.physical, length: e.length, flags: [...e.flags] })),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Errors

/** Base class of every error of the extents layer. */
export class ExtentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExtentError';
  }
}

/** An on-disk structure failed validation (magic, CRC, range, count, ordering, cycle...). */
export class CorruptImageError extends ExtentError {
  /** Which structure, e.g. 'xfs superblock', 'xfs bmbt block', 'ext4 extent header', 'xfs dir2 data'. */
  readonly structure: string;
  /** Byte offset of the structure (or the field) in the image; -1 when not tied to one place. */
  readonly offset: number;
  readonly detail: string;
  constructor(structure: string, offset: number, detail: string) {
    super(`corrupt ${structure}${offset >= 0 ? ` at byte ${offset}` : ''}: ${detail}`);
    this.name = 'CorruptImageError';
    this.structure = structure;
    this.offset = offset;
    this.detail = detail;
  }
}

/** Which geometry rule an extent (or a block a decoder was about to read) broke. */
export type ExtentRule =
  /** A run of zero blocks. */
  | 'zero length'
  /** A block number, count or byte value that is not a non-negative safe integer (it would be rounded). */
  | 'not an exact integer'
  /** A logical offset or length past what the on-disk format allows for a file. */
  | 'beyond the format limit'
  /** Physical blocks before the first data block, past the end of the file system, or past the end of an allocation group. */
  | 'outside the data area'
  /** Physical blocks that hold the file system's fixed metadata (superblocks, descriptors, bitmaps, inode tables, AG headers, log). */
  | 'overlaps metadata';

/**
 * A decoded extent, or a mapping block about to be read, failed the geometry checks: refused rather than handed
 * out, since a wrong physical range would give a client blocks that are not its file's.
 */
export class BadExtentError extends CorruptImageError {
  /** Inode whose map holds the extent (-1 when not tied to one). */
  readonly ino: number;
  /** What was refused, e.g. 'extent 3 (logical block 0, physical block 0, 1 block)'. */
  readonly what: string;
  readonly rule: ExtentRule;
  constructor(structure: string, offset: number, ino: number, what: string, rule: ExtentRule, detail: string) {
    super(structure, offset, `${ino >= 0 ? `inode ${ino}, ` : ''}${what}: ${rule}: ${detail}`);
    this.name = 'BadExtentError';
    this.ino = ino;
    this.what = what;
    this.rule = rule;
  }
}

/** A BlockSource was asked to read outside the image. Decoders check bounds first, so this means a bug. */
export class ImageRangeError extends ExtentError {
  readonly offset: number;
  readonly length: number;
  readonly size: number;
  constructor(offset: number, length: number, size: number) {
    super(`read of ${length} bytes at ${offset} is outside the image (${size} bytes)`);
    this.name = 'ImageRangeError';
    this.offset = offset;
    this.length = length;
    this.size = size;
  }
}

/** The image is not the named file system (no magic at the expected place). */
export class NotThisFileSystemError extends ExtentError {
  readonly fs: string;
  constructor(fs: string, detail: string) {
    super(`not an ${fs} file system: ${detail}`);
    this.name = 'NotThisFileSystemError';
    this.fs = fs;
  }
}

/** A valid on-disk feature this decoder does not handle. */
export class UnsupportedFeatureError extends ExtentError {
  readonly feature: string;
  constructor(feature: string, detail?: string) {
    super(`unsupported: ${feature}${detail ? ` (${detail})` : ''}`);
    this.name = 'UnsupportedFeatureError';
    this.feature = feature;
  }
}

export type PathProblem = 'not found' | 'not a directory' | 'too many symbolic links' | 'path too long' | 'bad path';

/** Path resolution failed inside an image. */
export class PathLookupError extends ExtentError {
  readonly path: string;
  readonly problem: PathProblem;
  constructor(path: string, problem: PathProblem, component?: string) {
    super(`${path}: ${problem}${component !== undefined && component !== path ? ` (at '${component}')` : ''}`);
    this.name = 'PathLookupError';
    this.path = path;
    this.problem = problem;
  }
}

/** FIEMAP failed: the file system does not support it, or the system call failed. */
export class FiemapError extends ExtentError {
  readonly errno: number;
  readonly code: string;
  readonly unsupported: boolean;
  constructor(path: string, errno: number, code: string, unsupported: boolean) {
    super(unsupported ? `${path}: file system does not support FIEMAP` : `${path}: FIEMAP failed: ${code} (errno ${errno})`);
    this.name = 'FiemapError';
    this.errno = errno;
    this.code = code;
    this.unsupported = unsupported;
  }
}

/** Inodes a decoder keeps decoded (least recently used dropped first). */
export const INODE_CACHE_ENTRIES = 256;
