/**
 * The I/O thread of one ublk device (a worker_thread of homid): it owns the device's io_uring on /dev/ublkcN and
 * the NVMe queue pairs homid provisioned for it (one per ublk queue, attached here from their grants: the same
 * memory homid mapped, mapped again in this process), so homid's event loop never waits for I/O.
 *
 * Loop: FETCH_REQ for every tag of every queue; then, forever: io_uring_enter (blocking only when no NVMe command
 * is in flight), each fetch completion -> the tag's descriptor -> the dispatcher starts the NVMe command; each
 * NVMe completion -> COMMIT_AND_FETCH_REQ with the result (the same buffer again). A fetch completed with
 * UBLK_IO_RES_ABORT (STOP_DEV, or the device going away) retires its tag; when every tag is retired, or homid
 * raises the stop flag and wakes the eventfd read this loop keeps posted, the thread releases everything and
 * reports 'exit'. Nothing on the loop allocates per I/O.
 */
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { attachQueuePair, type AttachedQueuePair } from '../driver/attach.js';
import type { RawQueueGrant } from '../ipc/raw-grant.js';
import { UringRing, writeRwSqe } from '../io/uring-ring.js';
import { allocHostMemory, freeHostMemory } from '../sys/fileio.js';
import type { Mapping } from '../sys/mman.js';
import { IoringOp, Sqe } from '../sys/uring.js';
import { UBLK_IO_RES_ABORT, UBLK_IO_RES_OK, UBLK_U_IO_COMMIT_AND_FETCH_REQ, UBLK_U_IO_FETCH_REQ, mapIoDescs, ublkCharPath, unmapIoDescs, writeIoCmdWords } from '../sys/ublk.js';
import { UblkQueueDispatcher, type UblkTarget } from './dispatch.js';
import { CTRL_STOP, STATS_FIELDS, StatsField, type WorkerMessage } from './worker-protocol.js';

export interface UblkWorkerData {
  devId: number;
  target: UblkTarget;
  depth: number;
  bufBytes: number;
  queues: { grant: RawQueueGrant; fds: number[] }[];
  /** Float64Array(queues * STATS_FIELDS): per-queue counters this thread publishes. */
  stats: SharedArrayBuffer;
  /** Int32Array: [CTRL_STOP] set by homid to make the thread leave. */
  control: SharedArrayBuffer;
  /** eventfd homid writes to wake the thread. */
  wakeFd: number;
  /** NVMe command timeout in ms. */
  timeoutMs: number;
}

const KIND_IO = 1;
const KIND_WAKE = 2;
const OPEN_RETRY_MS = 5000;

function post(m: WorkerMessage): void {
  parentPort?.postMessage(m);
}

function openChar(devId: number): number {
  const path = ublkCharPath(devId);
  const deadline = Date.now() + OPEN_RETRY_MS;
  for (;;) {
    try {
      return fs.openSync(path, fs.constants.O_RDWR);
    } catch (e) {
      // devtmpfs creates the node as ADD_DEV returns; give it a moment
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || Date.now() > deadline) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
}

function run(d: UblkWorkerData): void {
  const nq = d.queues.length;
  const depth = d.depth;
  const stats = new Float64Array(d.stats);
  const control = new Int32Array(d.control);
  const qps: AttachedQueuePair[] = [];
  const disps: UblkQueueDispatcher[] = [];
  const descMaps: Mapping[] = [];
  const descs: Uint32Array[] = [];
  const addrs: Float64Array[] = [];
  const charFd = openChar(d.devId);
  const ring = new UringRing({ entries: Math.max(8, nq * depth + 2), flags: 0 });
  const wakeBuf = allocHostMemory(4096);
  let retired = 0;
  const w = ring.sqes;
  const pushIo = (q: number, tag: number, cmdOp: number, result: number): void => {
    const at = ring.nextSqe();
    if (at < 0) throw new Error('ublk io ring full (cannot happen: one command per tag)');
    writeRwSqe(w, at, IoringOp.UringCmd, charFd, 0, 0, 0, 0, (q << 16) | tag, KIND_IO, 0);
    w[at + (Sqe.cmdOp >> 2)] = cmdOp;
    writeIoCmdWords(w, at + (Sqe.cmd >> 2), q, tag, result, addrs[q]![tag]!);
    ring.commit();
  };
  const armWake = (): void => {
    const at = ring.nextSqe();
    if (at < 0) return;
    writeRwSqe(w, at, IoringOp.Read, d.wakeFd, 0, wakeBuf.address, 8, 0, 0, KIND_WAKE, 0);
    ring.commit();
  };
  try {
    for (let q = 0; q < nq; q++) {
      const g = d.queues[q]!;
      const qp = attachQueuePair(g.grant, g.fds, { closeFds: false, timeoutMs: d.timeoutMs });
      qps.push(qp);
      const mem = qp.mappings.find((m) => m.role === 'memory');
      if (!mem) throw new Error(`queue ${q}: the grant maps no queue memory`);
      const disp = new UblkQueueDispatcher(qp, qp.dma, d.target, depth, d.bufBytes, (tag, result) => pushIo(q, tag, UBLK_U_IO_COMMIT_AND_FETCH_REQ, result));
      disps.push(disp);
      // the kernel copies into and out of the very buffers the NVMe commands use: their address in this process
      addrs.push(Float64Array.from(disp.buffers, (b) => mem.address + b.bytes.byteOffset));
      const m = mapIoDescs(charFd, q, depth);
      descMaps.push(m);
      descs.push(new Uint32Array(m.buffer));
    }
    armWake();
    for (let q = 0; q < nq; q++) for (let t = 0; t < depth; t++) pushIo(q, t, UBLK_U_IO_FETCH_REQ, 0);
    ring.enter(0);
    post({ type: 'ready' });
    const total = nq * depth;
    let stopping = false;
    while (retired < total && !stopping) {
      let busy = false;
      for (let q = 0; q < nq; q++) if (disps[q]!.inFlight > 0) busy = true;
      ring.enter(busy || ring.cqReady() > 0 || ring.unsubmitted > 0 ? 0 : 1);
      let head = ring.cqHead();
      const tail = ring.cqTail();
      while (head !== tail) {
        const idx = ring.cqeIndex(head);
        const lo = ring.cqWord(idx);
        const kind = ring.cqWord(idx + 1);
        const res = ring.cqI32[idx + 2]!;
        head = (head + 1) >>> 0;
        if (kind === KIND_WAKE) {
          if (Atomics.load(control, CTRL_STOP) !== 0) stopping = true;
          else armWake();
          continue;
        }
        const q = lo >>> 16;
        const tag = lo & 0xffff;
        if (q >= nq || tag >= depth) continue;
        if (res === UBLK_IO_RES_OK) {
          const dw = descs[q]!;
          const o = tag * 6;
          const r = disps[q]!.start(tag, dw[o]!, dw[o + 1]!, dw[o + 2]! + dw[o + 3]! * 4294967296);
          if (r !== 0) pushIo(q, tag, UBLK_U_IO_COMMIT_AND_FETCH_REQ, r);
        } else {
          // UBLK_IO_RES_ABORT: the device is stopping; anything else: the kernel refused the command
          retired++;
          if (res !== UBLK_IO_RES_ABORT) post({ type: 'warn', message: `queue ${q} tag ${tag}: fetch/commit failed: ${res}` });
        }
      }
      ring.advanceCq(head);
      for (let q = 0; q < nq; q++) {
        const disp = disps[q]!;
        disp.ring();
        if (disp.inFlight > 0 && disp.poll() > 0) publish(stats, q, disp);
      }
      if (Atomics.load(control, CTRL_STOP) !== 0) stopping = true;
    }
    for (let q = 0; q < nq; q++) publish(stats, q, disps[q]!);
    post({ type: 'exit', retired, stopped: stopping });
  } catch (e) {
    post({ type: 'error', message: (e as Error).stack ?? String(e) });
  } finally {
    ring.close();
    for (const m of descMaps) unmapIoDescs(m);
    for (const qp of qps) qp.detach();
    for (const disp of disps) {
      try {
        disp.release();
      } catch {
        // the region is unmapped with the queue pair
      }
    }
    freeHostMemory(wakeBuf);
    try {
      fs.closeSync(charFd);
    } catch {
      // closed
    }
  }
}

function publish(stats: Float64Array, q: number, disp: UblkQueueDispatcher): void {
  const c = disp.counters;
  const o = q * STATS_FIELDS;
  stats[o + StatsField.reads] = c.reads;
  stats[o + StatsField.writes] = c.writes;
  stats[o + StatsField.flushes] = c.flushes;
  stats[o + StatsField.discards] = c.discards;
  stats[o + StatsField.errors] = c.errors;
  stats[o + StatsField.refused] = c.refused;
  stats[o + StatsField.bytesRead] = c.bytesRead;
  stats[o + StatsField.bytesWritten] = c.bytesWritten;
}

if (parentPort !== null && workerData !== null && typeof workerData === 'object' && 'devId' in (workerData as object)) run(workerData as UblkWorkerData);
