/**
 * homid's resolver threads: a small pool of worker threads (resolve-worker.ts) that do the extent service's slow
 * file-system work (flush, FIEMAP, decoding), so that the main thread, which serves every tenant's IPC requests
 * and mediated queues, never waits for it. Jobs queue when every thread is busy.
 *
 * A decoder reading the device through homid's metadata queue pair asks the main thread for blocks; the main
 * thread reads them with DeviceReader.readAsync (submit, then poll from setImmediate / timers: every step is
 * short) and answers through the thread's shared channel (resolve-protocol.ts).
 *
 * Descriptors named in a job stay open until its promise settles; a thread that dies fails its job only once
 * it has exited, so a caller never closes a descriptor a thread may still use.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { DeviceReadError, type DeviceReader } from '../extents/device-source.js';
import type { FileMap } from '../extents/types.js';
import { HomidError } from './errors.js';
import {
  CH_DATA_BYTES,
  CH_DATA_OFFSET,
  CH_DONE,
  CH_FAILED,
  CH_HEADER_BYTES,
  CH_MESSAGE_BYTES,
  CH_MESSAGE_LEN,
  CH_MESSAGE_OFFSET,
  CH_REASON,
  CH_SEQ,
  CH_STATE,
  CH_STATUS,
  CH_TOTAL_BYTES,
  READ_REASONS,
  type ResolveJob,
  type WorkerMessage,
} from './resolve-protocol.js';

/**
 * Resolver threads homid runs at most (each does one flush / FIEMAP / decode at a time): half the CPUs, 2 to 8.
 * A load of many small files through homid is bound by them (one resolve per file: a flush, and a decode that
 * opens the image and walks the path).
 */
export const RESOLVE_THREADS = Math.min(8, Math.max(2, Math.floor(availableParallelism() / 2)));

export interface ResolveResult {
  map: FileMap;
  /** FIEMAP: how the file's block device was matched to the namespace. */
  via: string | null;
}

interface Job {
  id: number;
  job: ResolveJob;
  reader: DeviceReader | null;
  resolve: (r: ResolveResult) => void;
  reject: (e: Error) => void;
}

interface Thread {
  worker: Worker;
  ctl: Int32Array;
  message: Uint8Array;
  data: Uint8Array;
  job: Job | null;
  error: string | null;
}

export class ResolverPool {
  private readonly threads: Thread[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;
  readonly stats = { jobs: 0, reads: 0, threadsStarted: 0 };

  constructor(private readonly size = RESOLVE_THREADS) {}

  /** Run `job` on a resolver thread; `reader` answers its block reads (decoders over the metadata queue). */
  run(job: ResolveJob, reader: DeviceReader | null = null): Promise<ResolveResult> {
    if (this.closed) return Promise.reject(new HomidError('closed', 'homid is stopping'));
    return new Promise<ResolveResult>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, job, reader, resolve, reject });
      this.pump();
    });
  }

  /** Jobs queued or running. */
  get pending(): number {
    return this.queue.length + this.threads.filter((t) => t.job !== null).length;
  }

  private pump(): void {
    while (this.queue.length > 0 && !this.closed) {
      let t = this.threads.find((x) => x.job === null);
      if (!t) {
        if (this.threads.length >= this.size) return;
        t = this.spawn();
      }
      const j = this.queue.shift()!;
      t.job = j;
      this.stats.jobs++;
      t.worker.ref();
      t.worker.postMessage({ type: 'job', id: j.id, job: j.job });
    }
  }

  private spawn(): Thread {
    const channel = new SharedArrayBuffer(CH_TOTAL_BYTES);
    const worker = new Worker(new URL('./resolve-worker.js', import.meta.url), { workerData: { channel } });
    worker.unref();
    const t: Thread = {
      worker,
      ctl: new Int32Array(channel, 0, CH_HEADER_BYTES / 4),
      message: new Uint8Array(channel, CH_MESSAGE_OFFSET, CH_MESSAGE_BYTES),
      data: new Uint8Array(channel, CH_DATA_OFFSET, CH_DATA_BYTES),
      job: null,
      error: null,
    };
    this.threads.push(t);
    this.stats.threadsStarted++;
    worker.on('message', (m: WorkerMessage) => this.onMessage(t, m));
    worker.on('error', (e) => (t.error = e.message));
    worker.on('exit', (code) => {
      const i = this.threads.indexOf(t);
      if (i >= 0) this.threads.splice(i, 1);
      const j = t.job;
      t.job = null;
      if (j)
        j.reject(
          new HomidError(
            this.closed ? 'closed' : 'extent-source',
            this.closed ? 'homid stopped while the file was being resolved' : `the resolver thread ended (${t.error ?? `exit code ${code}`}) while resolving the file`,
          ),
        );
      this.pump();
    });
    return t;
  }

  private onMessage(t: Thread, m: WorkerMessage): void {
    const j = t.job;
    if (!j || m.id !== j.id) return; // nothing of a job that is over
    switch (m.type) {
      case 'read':
        this.serveRead(t, j, m.seq, m.offset, m.length);
        return;
      case 'done':
        t.job = null;
        t.worker.unref();
        j.resolve({ map: m.map, via: m.via });
        this.pump();
        return;
      case 'failed':
        t.job = null;
        t.worker.unref();
        j.reject(new HomidError(m.code, m.message));
        this.pump();
        return;
    }
  }

  /** Read namespace bytes for a thread's decoder on the metadata queue pair, without blocking this thread. */
  private serveRead(t: Thread, j: Job, seq: number, offset: number, length: number): void {
    this.stats.reads++;
    const answer = (state: number, reason = 0, status = -1, message = ''): void => {
      if (t.job !== j) return; // the job ended (its thread died): the channel is no longer read
      const bytes = Buffer.from(message, 'utf8').subarray(0, CH_MESSAGE_BYTES);
      t.message.set(bytes);
      Atomics.store(t.ctl, CH_MESSAGE_LEN, bytes.length);
      Atomics.store(t.ctl, CH_REASON, reason);
      Atomics.store(t.ctl, CH_STATUS, status);
      Atomics.store(t.ctl, CH_SEQ, seq);
      Atomics.store(t.ctl, CH_STATE, state);
      Atomics.notify(t.ctl, CH_STATE);
    };
    const other = READ_REASONS.indexOf('other') + 1;
    if (j.reader === null) return answer(CH_FAILED, other, -1, 'this job has no device reader');
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || length > CH_DATA_BYTES) {
      return answer(CH_FAILED, other, -1, `bad block read request: ${length} bytes at ${offset}`);
    }
    j.reader.readAsync(offset, t.data.subarray(0, length)).then(
      () => answer(CH_DONE),
      (e: unknown) => {
        if (e instanceof DeviceReadError) answer(CH_FAILED, READ_REASONS.indexOf(e.reason) + 1, e.status, e.message);
        else answer(CH_FAILED, other, -1, (e as Error).message ?? String(e));
      },
    );
  }

  /** Stop the threads; running and queued jobs fail with 'closed' (running ones once their thread has exited). */
  async close(): Promise<void> {
    this.closed = true;
    for (const j of this.queue.splice(0)) j.reject(new HomidError('closed', 'homid stopped before the file was resolved'));
    await Promise.all(this.threads.map((t) => t.worker.terminate().catch(() => undefined)));
  }
}
