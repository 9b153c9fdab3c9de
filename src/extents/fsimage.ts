/** What the XFS and ext4 decoders share: path resolution, symlinks, and the tree walk. */
import type { BlockSource } from './source.js';
import { CorruptImageError, PathLookupError, type FileMap, type FileType } from './types.js';

export interface DirEntry {
  name: string;
  ino: number;
  /** From the directory entry's file type field ('unknown' when the format has none). */
  type: FileType;
}

export interface InodeInfo {
  ino: number;
  type: FileType;
  mode: number;
  size: number;
  nlink: number;
}

export interface WalkEntry {
  path: string;
  ino: number;
  type: FileType;
  size: number;
  /** Present when walk({maps: true}) and the inode has a data map (files, dirs, symlinks). */
  map?: FileMap;
}

export interface WalkOptions {
  /** Decode each inode's extents (default true). */
  maps?: boolean;
  /** Start directory (default '/'). */
  root?: string;
}

const MAX_SYMLINKS = 40;
const MAX_DEPTH = 4096;
const MAX_PATH = 4096;

export abstract class FsImage {
  abstract readonly fsType: 'xfs' | 'ext4';
  /** File system block size in bytes. */
  abstract readonly blockSize: number;
  abstract readonly rootIno: number;
  abstract readonly source: BlockSource;

  /** Type, size and mode of an inode (validated). */
  abstract stat(ino: number): InodeInfo;
  /** Entries of a directory, without '.' and '..'. */
  abstract readDir(ino: number): DirEntry[];
  /** Target of a symbolic link. */
  abstract readLink(ino: number): string;
  /** The extents of an inode's data. */
  abstract mapInode(ino: number, path?: string): FileMap;

  private dirCache = new Map<number, Map<string, DirEntry>>();

  private dirIndex(ino: number): Map<string, DirEntry> {
    let m = this.dirCache.get(ino);
    if (m === undefined) {
      m = new Map();
      for (const e of this.readDir(ino)) m.set(e.name, e);
      this.dirCache.set(ino, m);
      if (this.dirCache.size > 64) this.dirCache.delete(this.dirCache.keys().next().value as number);
    }
    return m;
  }

  /** Resolve a path (absolute, relative to the root) to an inode number. */
  lookup(path: string, opts: { follow?: boolean } = {}): number {
    const follow = opts.follow ?? true;
    if (path.length > MAX_PATH) throw new PathLookupError(path, 'path too long');
    if (path.includes('\0')) throw new PathLookupError(path, 'bad path');
    let stack: number[] = [this.rootIno];
    let pending = path.split('/').filter((c) => c !== '' && c !== '.');
    let links = 0;
    let cur = this.rootIno;
    while (pending.length > 0) {
      const comp = pending.shift()!;
      const isLast = pending.length === 0;
      if (comp === '..') {
        if (stack.length > 1) stack.pop();
        cur = stack[stack.length - 1]!;
        continue;
      }
      const dirInfo = this.stat(cur);
      if (dirInfo.type !== 'dir') throw new PathLookupError(path, 'not a directory', comp);
      const e = this.dirIndex(cur).get(comp);
      if (e === undefined) throw new PathLookupError(path, 'not found', comp);
      const info = this.stat(e.ino);
      if (info.type === 'symlink' && (!isLast || follow)) {
        if (++links > MAX_SYMLINKS) throw new PathLookupError(path, 'too many symbolic links', comp);
        const target = this.readLink(e.ino);
        if (target.length === 0) throw new PathLookupError(path, 'not found', comp);
        const parts = target.split('/').filter((c) => c !== '' && c !== '.');
        if (target.startsWith('/')) {
          stack = [this.rootIno];
          cur = this.rootIno;
        }
        pending = [...parts, ...pending];
        if (pending.length > MAX_PATH) throw new PathLookupError(path, 'path too long');
        continue;
      }
      cur = e.ino;
      stack.push(cur);
      if (stack.length > MAX_DEPTH) throw new PathLookupError(path, 'path too long');
    }
    return cur;
  }

  /** The extents of the file at `path` (symbolic links followed). */
  mapPath(path: string, opts: { follow?: boolean } = {}): FileMap {
    const ino = this.lookup(path, opts);
    return this.mapInode(ino, normalize(path));
  }

  /** Every inode reachable from the root, depth first, parents before children. */
  *walk(opts: WalkOptions = {}): Generator<WalkEntry> {
    const maps = opts.maps ?? true;
    const startPath = normalize(opts.root ?? '/');
    const startIno = this.lookup(startPath);
    const seenDirs = new Set<number>();
    const stack: { path: string; ino: number; depth: number }[] = [{ path: startPath, ino: startIno, depth: 0 }];
    while (stack.length > 0) {
      const { path, ino, depth } = stack.pop()!;
      const info = this.stat(ino);
      const entry: WalkEntry = { path, ino, type: info.type, size: info.size };
      if (maps && (info.type === 'file' || info.type === 'dir' || info.type === 'symlink')) entry.map = this.mapInode(ino, path);
      yield entry;
      if (info.type !== 'dir') continue;
      if (seenDirs.has(ino)) throw new CorruptImageError('directory tree', -1, `directory inode ${ino} is reachable twice (cycle)`);
      seenDirs.add(ino);
      if (depth >= MAX_DEPTH) throw new CorruptImageError('directory tree', -1, `deeper than ${MAX_DEPTH} levels`);
      const entries = this.readDir(ino);
      for (let i = entries.length - 1; i >= 0; i--) {
        const e = entries[i]!;
        stack.push({ path: path === '/' ? `/${e.name}` : `${path}/${e.name}`, ino: e.ino, depth: depth + 1 });
      }
    }
  }

  close(): void {
    this.dirCache.clear();
    this.source.close?.();
  }
}

export function normalize(p: string): string {
  const parts = p.split('/').filter((c) => c !== '' && c !== '.');
  return '/' + parts.join('/');
}

/** File type from the S_IFMT bits of a mode. */
export function typeFromMode(mode: number): FileType {
  switch (mode & 0o170000) {
    case 0o100000:
      return 'file';
    case 0o040000:
      return 'dir';
    case 0o120000:
      return 'symlink';
    case 0o020000:
      return 'chardev';
    case 0o060000:
      return 'blockdev';
    case 0o010000:
      return 'fifo';
    case 0o140000:
      return 'socket';
    default:
      return 'unknown';
  }
}

/** File type from a directory entry's type byte (same values in XFS and ext4). */
export function typeFromDirent(t: number): FileType {
  switch (t) {
    case 1:
      return 'file';
    case 2:
      return 'dir';
    case 3:
      return 'chardev';
    case 4:
      return 'blockdev';
    case 5:
      return 'fifo';
    case 6:
      return 'socket';
    case 7:
      return 'symlink';
    default:
      return 'unknown';
  }
}
