/**
 * Namespaces of the embedded controller and their backing stores. A store moves bytes between its media and
 * a Buffer (a view of a DMA segment or a scratch buffer); it never allocates per call on the fast path.
 */
import * as fs from 'node:fs';
import type { EmuBacking, EmuNamespaceConfig } from './config.js';

export interface BackingStore {
  /** Copy `len` bytes at media offset `off` into dst[dstOff..]. */
  read(off: number, dst: Buffer, dstOff: number, len: number): void;
  /** Copy `len` bytes from src[srcOff..] to media offset `off`. */
  write(off: number, src: Buffer, srcOff: number, len: number): void;
  /** Make [off, off+len) read as zeros. */
  zero(off: number, len: number): void;
  /** Make written data durable. */
  flush(): void;
  close(): void;
}

/** What MemoryStore.span does with each piece of a range. */
const OP_READ = 0;
const OP_WRITE = 1;
const OP_ZERO = 2;

/** RAM store, chunked so namespaces may exceed the largest single Buffer. */
export class MemoryStore implements BackingStore {
  static readonly CHUNK_SHIFT = 30; // 1 GiB chunks
  private readonly chunks: Buffer[] = [];
  constructor(readonly size: number) {
    const chunk = 2 ** MemoryStore.CHUNK_SHIFT;
    for (let off = 0; off < size; off += chunk) this.chunks.push(Buffer.alloc(Math.min(chunk, size - off)));
  }
  read(off: number, dst: Buffer, dstOff: number, len: number): void {
    this.span(OP_READ, off, dst, dstOff, len);
  }
  write(off: number, src: Buffer, srcOff: number, len: number): void {
    this.span(OP_WRITE, off, src, srcOff, len);
  }
  zero(off: number, len: number): void {
    this.span(OP_ZERO, off, null, 0, len);
  }
  /** Walk [off, off + len) across the 1 GiB chunks, copying to / from `buf` or zeroing, piece by piece. */
  private span(op: number, off: number, buf: Buffer | null, bufOff: number, len: number): void {
    const chunk = 2 ** MemoryStore.CHUNK_SHIFT;
    while (len > 0) {
      const ci = Math.floor(off / chunk);
      const c = this.chunks[ci]!;
      const co = off - ci * chunk;
      const n = Math.min(len, c.length - co);
      if (op === OP_READ) c.copy(buf!, bufOff, co, co + n);
      else if (op === OP_WRITE) buf!.copy(c, co, bufOff, bufOff + n);
      else c.fill(0, co, co + n);
      off += n;
      bufOff += n;
      len -= n;
    }
  }
  flush(): void {}
  close(): void {
    this.chunks.length = 0;
  }
}

/** No media: reads and writes complete without touching data (like Linux null_blk). */
export class NullStore implements BackingStore {
  read(): void {}
  write(): void {}
  zero(): void {}
  flush(): void {}
  close(): void {}
}

/** A window [base, base+size) of a file shared by all namespaces. */
export class FileStore implements BackingStore {
  private static zeros: Buffer | null = null;
  constructor(
    private readonly file: SharedFile,
    private readonly base: number,
    readonly size: number,
  ) {}
  read(off: number, dst: Buffer, dstOff: number, len: number): void {
    let pos = this.base + off;
    while (len > 0) {
      const n = fs.readSync(this.file.fd, dst, dstOff, len, pos);
      if (n <= 0) {
        dst.fill(0, dstOff, dstOff + len); // beyond end of file: reads as zeros
        return;
      }
      pos += n;
      dstOff += n;
      len -= n;
    }
  }
  write(off: number, src: Buffer, srcOff: number, len: number): void {
    let pos = this.base + off;
    while (len > 0) {
      const n = fs.writeSync(this.file.fd, src, srcOff, len, pos);
      pos += n;
      srcOff += n;
      len -= n;
    }
    this.file.dirty = true;
  }
  zero(off: number, len: number): void {
    const z = (FileStore.zeros ??= Buffer.alloc(1 << 20));
    while (len > 0) {
      const n = Math.min(len, z.length);
      this.write(off, z, 0, n);
      off += n;
      len -= n;
    }
  }
  flush(): void {
    this.file.flush();
  }
  close(): void {
    this.file.close();
  }
}

/** The open backing file, created or extended to hold every namespace. */
export class SharedFile {
  fd: number;
  dirty = false;
  private closed = false;
  constructor(path: string, totalSize: number) {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r+');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      fd = fs.openSync(path, 'w+');
    }
    if (fs.fstatSync(fd).size < totalSize) fs.ftruncateSync(fd, totalSize);
    this.fd = fd;
  }
  flush(): void {
    if (this.closed || !this.dirty) return;
    fs.fsyncSync(this.fd);
    this.dirty = false;
  }
  close(): void {
    if (this.closed) return;
    this.flush();
    fs.closeSync(this.fd);
    this.closed = true;
  }
}

export class Namespace {
  /** Number of logical blocks (NSZE). */
  readonly nlba: number;
  /** Bytes of media deallocated and never written again would read as zero: tracked for NUSE only roughly. */
  constructor(
    readonly nsid: number,
    readonly lbads: number,
    readonly sizeBytes: number,
    readonly store: BackingStore,
  ) {
    this.nlba = sizeBytes / 2 ** lbads;
  }
}

/** Create the namespaces (nsid 1..n) for a backing configuration. */
export function createNamespaces(cfgs: EmuNamespaceConfig[], backing: EmuBacking): { namespaces: Namespace[]; file: SharedFile | null } {
  if (backing === 'null') {
    const s = new NullStore();
    return { namespaces: cfgs.map((c, i) => new Namespace(i + 1, c.lbads, c.sizeBytes, s)), file: null };
  }
  if (backing === 'memory') {
    return { namespaces: cfgs.map((c, i) => new Namespace(i + 1, c.lbads, c.sizeBytes, new MemoryStore(c.sizeBytes))), file: null };
  }
  const total = cfgs.reduce((a, c) => a + c.sizeBytes, 0);
  const file = new SharedFile(backing.file, total);
  let base = 0;
  const namespaces = cfgs.map((c, i) => {
    const ns = new Namespace(i + 1, c.lbads, c.sizeBytes, new FileStore(file, base, c.sizeBytes));
    base += c.sizeBytes;
    return ns;
  });
  return { namespaces, file };
}
