/**
 * The posix load path: the baseline a Node user would write, made fair. Up to `depth` files are read at once with
 * node:fs/promises (FileHandle.read: pread on libuv's thread pool), each worker reading its file in chunks of
 * chunkBytes into a buffer of its own that it reuses for every read, and handing each chunk to the sink.
 * Buffered (page cache) by default; with `direct`, O_DIRECT into page-aligned memory (anonymous mmap), the tail
 * of a file read as a whole aligned block and trimmed. A short read before the end of a file is followed by a
 * read of the rest into the same buffer; each chunk is delivered whole.
 */
import type { FileHandle } from 'node:fs/promises';
import { allocHostMemory, freeHostMemory, type HostMemory } from '../../sys/fileio.js';
import { formatSize } from '../../util/size.js';
import { DEFAULT_CHUNK_BYTES, DEFAULT_DEPTH } from '../defaults.js';
import { LoadFileError, type LoadEvents, type LoadFile, type LoadPathEngine, type LoadPathOptions, type LoadSink } from '../types.js';
import { DIRECT_ALIGN, checkPathOptions, openPlanned, readFailure, readLength, shortFile } from './open-file.js';

export async function openPosixPath(opts: LoadPathOptions): Promise<LoadPathEngine> {
  const depth = opts.depth || DEFAULT_DEPTH;
  const chunk = opts.chunkBytes || DEFAULT_CHUNK_BYTES;
  const direct = opts.direct === true;
  checkPathOptions('posix', depth, chunk, direct);
  return new PosixPath(depth, chunk, direct);
}

/** libuv's thread pool size (UV_THREADPOOL_SIZE, 4 unless set; libuv caps it at 1024). */
function threadPoolSize(): number {
  const v = Number(process.env['UV_THREADPOOL_SIZE']);
  return Number.isInteger(v) && v > 0 ? Math.min(v, 1024) : 4;
}

class PosixPath implements LoadPathEngine {
  readonly path = 'posix' as const;
  readonly describe: string;
  /** One buffer for all workers (so a sink can adopt it once): page-aligned mmap memory with O_DIRECT. */
  private readonly mem: HostMemory | null;
  private readonly staging: Uint8Array;
  private running = false;
  private closed = false;

  constructor(
    private readonly depth: number,
    private readonly chunk: number,
    private readonly direct: boolean,
  ) {
    if (direct) {
      this.mem = allocHostMemory(depth * chunk);
      this.staging = new Uint8Array(this.mem.buffer, 0, depth * chunk);
    } else {
      this.mem = null;
      this.staging = Buffer.allocUnsafeSlow(depth * chunk);
    }
    const threads = threadPoolSize();
    this.describe = `pread (node:fs/promises on libuv's ${threads} threads), ${direct ? 'O_DIRECT (page-aligned buffers)' : 'buffered'}, ${depth} files at a time, ${formatSize(chunk)} reads`;
  }

  async run(files: readonly LoadFile[], sink: LoadSink, events: LoadEvents): Promise<void> {
    if (this.closed) throw new Error('posix path: run() after close()');
    if (this.running) throw new Error('posix path: run() is already in progress');
    this.running = true;
    try {
      sink.adoptStaging(this.staging, this.mem?.address);
      let cursor = 0;
      const worker = async (w: number): Promise<void> => {
        const buf = this.staging.subarray(w * this.chunk, (w + 1) * this.chunk);
        while (cursor < files.length) {
          const f = files[cursor++]!;
          events.fileStart(f.index);
          events.fileDone(f.index, await this.loadOne(f, buf, sink, events));
        }
      };
      const workers: Promise<void>[] = [];
      for (let w = 0; w < Math.min(this.depth, files.length); w++) workers.push(worker(w));
      // Let every worker finish its file before an error (a sink that failed) rejects the run.
      const results = await Promise.allSettled(workers);
      for (const r of results) if (r.status === 'rejected') throw r.reason;
    } finally {
      this.running = false;
    }
  }

  /** Read one file into the sink; resolves to null, or to the error that failed the file (sink errors reject). */
  private async loadOne(f: LoadFile, buf: Uint8Array, sink: LoadSink, events: LoadEvents): Promise<LoadFileError | null> {
    let h: FileHandle;
    try {
      h = await openPlanned(f, this.direct);
    } catch (e) {
      return e instanceof LoadFileError ? e : new LoadFileError(f.path, (e as Error).message);
    }
    try {
      for (let off = 0; off < f.size;) {
        const len = readLength(f, off, this.chunk, this.direct);
        const want = Math.min(len, f.size - off);
        // A short read before the end of the file: read the rest into the same buffer, then deliver the chunk whole.
        for (let have = 0; have < want;) {
          let n: number;
          try {
            n = (await h.read(buf, have, len - have, off + have)).bytesRead;
          } catch (e) {
            return readFailure(f, off + have, (e as NodeJS.ErrnoException).code ?? (e as Error).message);
          }
          if (n === 0) return shortFile(f, off + have);
          have += n;
          if (this.direct && have < want && have % DIRECT_ALIGN !== 0) {
            return new LoadFileError(f.path, `O_DIRECT read at offset ${off + have - n} returned ${n} bytes, not a whole number of ${DIRECT_ALIGN}-byte blocks, before the end of the file`);
          }
        }
        sink.deliver(f.index, off, want === buf.length ? buf : buf.subarray(0, want));
        events.bytes(want);
        off += want;
      }
      return null;
    } finally {
      await h.close();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.mem !== null && !this.running) freeHostMemory(this.mem);
  }
}
