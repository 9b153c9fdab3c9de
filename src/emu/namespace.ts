/**
 * Namespaces of the embedded controller and their backing stores. A store moves bytes between its media and
 * a Buffer (a view of a DMA segment or a scratch buffer); it never allocates per call on the fast path.
 */
import * as fs from 'node:fs';
import { MAX_MEMORY_NAMESPACE_BYTES, MEMORY_MAX_CHUNKS, MEMORY_MIN_CHUNK_SHIFT, type EmuBacking, type EmuNamespaceConfig } from './config.js';

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

/**
 * RAM store, sparse: the media is cut into chunks that are allocated on their first write; a chunk never
 * written (or zeroed whole since) reads as zeros. A 1 TiB namespace costs its chunk table until written. The
 * chunk size grows with the namespace so that the table stays at most MEMORY_MAX_CHUNKS entries; the largest
 * namespace is MEMORY_MAX_CHUNKS chunks of 2^MEMORY_MAX_CHUNK_SHIFT bytes (MAX_MEMORY_NAMESPACE_BYTES, checked by
 * the configuration). Once a chunk exists, reads and writes through it allocate nothing.
 */
export class MemoryStore implements BackingStore {
  readonly chunkShift: number;
  private readonly chunkBytes: number;
  private readonly chunks: Array<Buffer | null>;
  private allocated = 0;
  constructor(readonly size: number) {
    if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_MEMORY_NAMESPACE_BYTES) {
      throw new RangeError(`a memory namespace holds 1 byte to ${MAX_MEMORY_NAMESPACE_BYTES} bytes (64 TiB); got ${size}`);
    }
    let shift = MEMORY_MIN_CHUNK_SHIFT;
    while (size > MEMORY_MAX_CHUNKS * 2 ** shift) shift++;
    this.chunkShift = shift;
    this.chunkBytes = 2 ** shift;
    this.chunks = new Array<Buffer | null>(Math.ceil(size / this.chunkBytes)).fill(null);
  }
  /** Bytes of RAM held by written chunks. */
  get allocatedBytes(): number {
    return this.allocated;
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
  /** Walk [off, off + len) across the chunks, copying to / from `buf` or zeroing, piece by piece. */
  private span(op: number, off: number, buf: Buffer | null, bufOff: number, len: number): void {
    const chunk = this.chunkBytes;
    while (len > 0) {
      const ci = Math.floor(off / chunk);
      const co = off - ci * chunk;
      const n = Math.min(len, chunk - co);
      const c = this.chunks[ci]!;
      if (op === OP_READ) {
        if (c === null) buf!.fill(0, bufOff, bufOff + n);
        else c.copy(buf!, bufOff, co, co + n);
      } else if (op === OP_WRITE) buf!.copy(c ?? this.allocate(ci), co, bufOff, bufOff + n);
      else if (c !== null) {
        if (n === c.length) this.release(ci);
        else c.fill(0, co, co + n);
      }
      off += n;
      bufOff += n;
      len -= n;
    }
  }
  private allocate(ci: number): Buffer {
    const c = Buffer.alloc(Math.min(this.chunkBytes, this.size - ci * this.chunkBytes));
    this.chunks[ci] = c;
    this.allocated += c.length;
    return c;
  }
  /** A chunk zeroed whole goes back: it reads as zeros again. */
  private release(ci: number): void {
    this.allocated -= this.chunks[ci]!.length;
    this.chunks[ci] = null;
  }
  flush(): void {}
  close(): void {
    this.chunks.fill(null);
    this.allocated = 0;
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
