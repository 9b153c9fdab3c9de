/**
 * A resolver thread of homid (started by resolver.ts): the slow file-system work of the extent service, off the
 * main thread that serves every tenant's IPC and mediated I/O. One job at a time:
 *
 *  - fiemap: check that the file lives on namespace 1 of the device (placement.ts), flush its dirty data
 *    (fdatasync), FIEMAP it with FIEMAP_FLAG_SYNC, and move the offsets onto the namespace. Always on homid's
 *    duplicate of the client's descriptor, never on a path.
 *  - decoder: flush the client's file, then decode the ext4 / XFS file system on namespace 1 and map the file's
 *    path inside it. A file-backed image is read here directly; a device read through homid's metadata queue
 *    pair is asked of the main thread block range by block range (resolve-protocol.ts), this thread waiting on
 *    a shared word (Atomics.wait) while the main thread reads without blocking.
 */
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { DeviceBlockSource, DeviceReadError, type NamespaceReader } from '../extents/device-source.js';
import { fiemapFd } from '../extents/fiemap.js';
import { openSource } from '../extents/open.js';
import { FileBlockSource, type BlockSource } from '../extents/source.js';
import { ExtentError, ImageRangeError, type FileMap } from '../extents/types.js';
import { HomidError } from './errors.js';
import { fiemapPlacement } from './placement.js';
import {
  CH_DATA_BYTES,
  CH_DATA_OFFSET,
  CH_DONE,
  CH_FAILED,
  CH_HEADER_BYTES,
  CH_MESSAGE_BYTES,
  CH_MESSAGE_LEN,
  CH_MESSAGE_OFFSET,
  CH_PENDING,
  CH_REASON,
  CH_SEQ,
  CH_STATE,
  CH_STATUS,
  READ_REASONS,
  type JobMessage,
  type ResolveJob,
  type WorkerInit,
  type WorkerMessage,
} from './resolve-protocol.js';

/** Extra wait for the main thread's answer beyond the device's own deadlines (it may be busy for a while). */
const REPLY_GRACE_MS = 10_000;
/** Reads of other resolver threads that may queue ahead of ours on the same metadata queue pair. */
const READS_AHEAD = 4;

const port = parentPort;
if (port === null) throw new Error('resolve-worker.js runs as a worker thread of homid');
const init = workerData as WorkerInit;
const ctl = new Int32Array(init.channel, 0, CH_HEADER_BYTES / 4);
const messageArea = new Uint8Array(init.channel, CH_MESSAGE_OFFSET, CH_MESSAGE_BYTES);
const dataArea = new Uint8Array(init.channel, CH_DATA_OFFSET, CH_DATA_BYTES);
let seq = 0;
let currentJob = 0;

/** Namespace 1 of a device, read through the main thread's metadata queue pair. */
class RemoteReader implements NamespaceReader {
  constructor(
    readonly size: number,
    readonly blockSize: number,
    readonly maxReadBytes: number,
    private readonly timeoutMs: number,
  ) {}

  readInto(offset: number, out: Uint8Array): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + out.length > this.size) throw new ImageRangeError(offset, out.length, this.size);
    for (let pos = 0; pos < out.length;) {
      const n = Math.min(CH_DATA_BYTES, out.length - pos);
      this.readChunk(offset + pos, n);
      out.set(dataArea.subarray(0, n), pos);
      pos += n;
    }
  }

  private readChunk(offset: number, length: number): void {
    const mine = (seq = (seq + 1) & 0x7fffffff);
    Atomics.store(ctl, CH_STATE, CH_PENDING);
    port!.postMessage({ type: 'read', id: currentJob, seq: mine, offset, length } satisfies WorkerMessage);
    const commands = Math.ceil(length / this.maxReadBytes) + READS_AHEAD;
    const limit = commands * this.timeoutMs + REPLY_GRACE_MS;
    const t0 = performance.now();
    for (;;) {
      const left = limit - (performance.now() - t0);
      if (left <= 0) throw new DeviceReadError('timeout', -1, `metadata read of ${length} bytes at byte ${offset}: no answer from homid's main thread within ${Math.round(limit)} ms`);
      Atomics.wait(ctl, CH_STATE, CH_PENDING, left);
      const state = Atomics.load(ctl, CH_STATE);
      if (state === CH_PENDING) continue;
      if (Atomics.load(ctl, CH_SEQ) !== mine) {
        // a late answer to an earlier read: wait on for ours
        Atomics.compareExchange(ctl, CH_STATE, state, CH_PENDING);
        continue;
      }
      if (state === CH_DONE) return;
      if (state !== CH_FAILED) throw new DeviceReadError('queue', -1, `metadata read of ${length} bytes at byte ${offset}: bad channel state ${state}`);
      const len = Math.max(0, Math.min(CH_MESSAGE_BYTES, Atomics.load(ctl, CH_MESSAGE_LEN)));
      const message = Buffer.from(messageArea.subarray(0, len)).toString('utf8');
      const reason = READ_REASONS[Atomics.load(ctl, CH_REASON) - 1] ?? 'other';
      if (reason === 'other') throw new ExtentError(message);
      throw new DeviceReadError(reason, Atomics.load(ctl, CH_STATUS), message);
    }
  }
}

/** Write back the file's dirty data so delayed allocations have blocks (read-only file systems refuse: fine). */
function flush(fd: number): void {
  try {
    fs.fdatasyncSync(fd);
  } catch {
    // EROFS, EINVAL: nothing to write back
  }
}

function runFiemap(job: Extract<ResolveJob, { kind: 'fiemap' }>): { map: FileMap; via: string } {
  const st = fs.fstatSync(job.fd, { bigint: true });
  if (!st.isFile()) throw new HomidError('not-a-file', 'the descriptor is not a regular file');
  // Where the file lives is checked first: a file on another device is neither flushed nor mapped.
  const place = fiemapPlacement(st.dev, job.target);
  flush(job.fd);
  const map = fiemapFd(job.fd, { sync: true, path: job.path });
  if (place.offset !== 0) {
    for (const e of map.extents) {
      if (e.flags.includes('inline')) continue;
      const p = e.physical + place.offset;
      if (!Number.isSafeInteger(p)) throw new ExtentError(`${job.path}: physical offset ${e.physical} + ${place.offset} exceeds 2^53`);
      e.physical = p;
    }
  }
  if (place.limit !== undefined) {
    for (const e of map.extents) {
      if (e.flags.includes('inline')) continue;
      if (e.physical + e.length > place.limit) {
        throw new HomidError(
          'extent-range',
          `${job.path}: the extent at file offset ${e.logical} ends at namespace byte ${e.physical + e.length}, past the end of ${place.via}'s range (${place.limit})`,
        );
      }
    }
  }
  return { map, via: place.via };
}

function runDecoder(job: Extract<ResolveJob, { kind: 'decoder' }>): FileMap {
  flush(job.fd);
  const s = job.source;
  const src: BlockSource = s.kind === 'file' ? new FileBlockSource(s.path) : new DeviceBlockSource(new RemoteReader(s.size, s.blockSize, s.maxReadBytes, s.timeoutMs));
  try {
    const img = openSource(src, { fs: job.fs });
    try {
      return img.mapPath(job.imagePath);
    } finally {
      img.close();
    }
  } finally {
    src.close?.();
  }
}

port.on('message', (m: JobMessage) => {
  if (m?.type !== 'job') return;
  currentJob = m.id;
  const job = m.job;
  let reply: WorkerMessage;
  try {
    if (job.kind === 'fiemap') {
      const r = runFiemap(job);
      reply = { type: 'done', id: m.id, map: r.map, via: r.via };
    } else {
      reply = { type: 'done', id: m.id, map: runDecoder(job), via: null };
    }
  } catch (e) {
    const message = (e as Error).message ?? String(e);
    if (e instanceof HomidError) reply = { type: 'failed', id: m.id, code: e.code, message };
    else if (e instanceof DeviceReadError && job.kind === 'decoder') reply = { type: 'failed', id: m.id, code: 'device-io', message: `device '${job.device}': ${message}` };
    else reply = { type: 'failed', id: m.id, code: 'extent-source', message: `cannot map the file: ${message}` };
  }
  port.postMessage(reply);
});
