/** Where decoders read images from: a plain file, a block device, or memory. */
import * as fs from 'node:fs';
import { CorruptImageError, ImageRangeError } from './types.js';
import { blockDeviceSize } from '../sys/index.js';
import { LruCache } from '../util/lru.js';

export interface BlockSource {
  /** Size in bytes. */
  readonly size: number;
  /** Exactly `length` bytes at `offset`; throws ImageRangeError outside [0, size). The result may be shared: do not modify. */
  read(offset: number, length: number): Uint8Array;
  close?(): void;
}

function checkRange(offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new ImageRangeError(offset, length, size);
  }
}

/** An image held in memory. */
export class BufferBlockSource implements BlockSource {
  readonly size: number;
  constructor(private readonly buf: Uint8Array) {
    this.size = buf.length;
  }
  read(offset: number, length: number): Uint8Array {
    checkRange(offset, length, this.size);
    return this.buf.subarray(offset, offset + length);
  }
}

const CHUNK_SHIFT = 16;
const CHUNK = 1 << CHUNK_SHIFT;

/**
 * An image file or block device read with fs.readSync, through an LRU cache of 64 KiB chunks
 * (decoders make many small reads of neighbouring metadata).
 */
export class FileBlockSource implements BlockSource {
  readonly size: number;
  private fd: number;
  private readonly ownsFd: boolean;
  private readonly cache: LruCache<number, Uint8Array>;

  constructor(pathOrFd: string | number, opts: { cacheBytes?: number } = {}) {
    this.ownsFd = typeof pathOrFd === 'string';
    this.fd = typeof pathOrFd === 'string' ? fs.openSync(pathOrFd, 'r') : pathOrFd;
    try {
      const st = fs.fstatSync(this.fd);
      this.size = st.isBlockDevice() ? blockDeviceSize(this.fd) : st.size;
    } catch (e) {
      if (this.ownsFd) fs.closeSync(this.fd);
      throw e;
    }
    this.cache = new LruCache(Math.max(4, Math.floor((opts.cacheBytes ?? 64 * 1024 * 1024) / CHUNK)));
  }

  private chunk(index: number): Uint8Array {
    let c = this.cache.get(index);
    if (c !== undefined) return c;
    const start = index * CHUNK;
    const len = Math.min(CHUNK, this.size - start);
    c = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const n = fs.readSync(this.fd, c, done, len - done, start + done);
      if (n <= 0) throw new CorruptImageError('image file', start + done, 'unexpected end of file');
      done += n;
    }
    this.cache.set(index, c);
    return c;
  }

  read(offset: number, length: number): Uint8Array {
    checkRange(offset, length, this.size);
    const first = Math.floor(offset / CHUNK);
    const last = Math.floor((offset + length - 1) / CHUNK);
    if (length === 0) return new Uint8Array(0);
    if (first === last) {
      const c = this.chunk(first);
      const o = offset - first * CHUNK;
      return c.subarray(o, o + length);
    }
    if (length > 8 * CHUNK) {
      // big reads (file contents) bypass the cache
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = fs.readSync(this.fd, out, done, length - done, offset + done);
        if (n <= 0) throw new CorruptImageError('image file', offset + done, 'unexpected end of file');
        done += n;
      }
      return out;
    }
    return copyFromChunks(new Uint8Array(length), offset, CHUNK, (i) => this.chunk(i));
  }

  close(): void {
    this.cache.clear();
    if (this.ownsFd && this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}

/**
 * Fill `out` with the bytes at [offset, offset + out.length) of a source cached in chunks of `chunkBytes`
 * (`chunk(i)` returns chunk i, shorter only at the end of the source). Returns `out`.
 */
export function copyFromChunks(out: Uint8Array, offset: number, chunkBytes: number, chunk: (index: number) => Uint8Array): Uint8Array {
  const end = offset + out.length;
  let pos = offset;
  while (pos < end) {
    const idx = Math.floor(pos / chunkBytes);
    const c = chunk(idx);
    const o = pos - idx * chunkBytes;
    const n = Math.min(c.length - o, end - pos);
    out.set(c.subarray(o, o + n), pos - offset);
    pos += n;
  }
  return out;
}
