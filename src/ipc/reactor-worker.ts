/**
 * The IPC I/O thread: blocks in poll(2) on the listening sockets, every connection and a wake eventfd; accepts
 * (taking SO_PEERCRED), reads frames with recvmsg (never past a frame's end, so SCM_RIGHTS descriptors are
 * matched to their frame exactly), writes queued frames with sendmsg, and reports to the main thread.
 * Commands come on a MessagePort drained synchronously after each wake-up. poll never waits longer than
 * POLL_MS so that the thread returns to JavaScript regularly (worker termination at process exit).
 */
import { receiveMessageOnPort, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import {
  MsgIo,
  PollSet,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  POLLOUT,
  accept4,
  closeFd,
  eventFdDrain,
  peerCred,
  shutdownFd,
} from '../sys/socket.js';
import { errnoName } from '../sys/libc.js';
import { HEADER_SIZE, LENGTH_OVERHEAD, MAX_FDS_PER_FRAME } from './frame.js';
import type { Command, ReactorEvent, ReactorInit } from './reactor-protocol.js';

const POLL_MS = 250;
const CLOSE_FLUSH_MS = 2000;
const EMFILE_PAUSE_MS = 100;
const READS_PER_WAKE = 32;
const EAGAIN = 11;
const EINTR = 4;
const EMFILE = 24;
const ENFILE = 23;
const ENOBUFS = 105;
const ENOMEM = 12;

interface Out {
  data: Uint8Array;
  off: number;
  fds: number[];
  reply: boolean;
}

interface Conn {
  id: number;
  fd: number;
  hdr: Uint8Array;
  hdrHave: number;
  body: Uint8Array | null;
  bodyHave: number;
  version: number;
  flags: number;
  /** Descriptors received within the frame being read. */
  fds: number[];
  out: Out[];
  /** Frame boundary lost: read nothing more. */
  broken: boolean;
  /** Closing once `out` is empty (or at the deadline). */
  closeAt: number | null;
  inflight: number;
}

interface Listener {
  id: number;
  fd: number;
  pausedUntil: number;
}

const init = workerData.init as ReactorInit;
const commands = workerData.port as MessagePort;
const post = (e: ReactorEvent, transfer?: ArrayBuffer[]): void => parentPort!.postMessage(e, transfer);

const io = new MsgIo(256 * 1024);
const ps = new PollSet();
const conns = new Map<number, Conn>();
const listeners = new Map<number, Listener>();
let nextConnId = 2;
let stopping = false;

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) if (fd >= 0) closeFd(fd);
}

function newConn(id: number, fd: number): Conn {
  const c: Conn = {
    id,
    fd,
    hdr: new Uint8Array(HEADER_SIZE),
    hdrHave: 0,
    body: null,
    bodyHave: 0,
    version: 0,
    flags: 0,
    fds: [],
    out: [],
    broken: false,
    closeAt: null,
    inflight: 0,
  };
  conns.set(id, c);
  return c;
}

function closeConn(c: Conn, reason: string): void {
  if (!conns.delete(c.id)) return;
  shutdownFd(c.fd);
  closeFd(c.fd);
  closeAll(c.fds);
  c.fds = [];
  for (const o of c.out) closeAll(o.fds);
  c.out = [];
  post({ ev: 'closed', conn: c.id, reason });
}

function handle(cmd: Command): void {
  switch (cmd.op) {
    case 'listen':
      listeners.set(cmd.listener, { id: cmd.listener, fd: cmd.fd, pausedUntil: 0 });
      break;
    case 'unlisten': {
      const l = listeners.get(cmd.listener);
      if (l) {
        listeners.delete(cmd.listener);
        closeFd(l.fd);
      }
      break;
    }
    case 'adopt':
      newConn(cmd.conn, cmd.fd);
      break;
    case 'send': {
      const c = conns.get(cmd.conn);
      if (c === undefined || c.closeAt !== null) {
        closeAll(cmd.fds);
        break;
      }
      c.out.push({ data: cmd.data, off: 0, fds: cmd.fds, reply: cmd.reply });
      flush(c);
      break;
    }
    case 'close': {
      const c = conns.get(cmd.conn);
      if (c === undefined) break;
      if (!cmd.flush || c.out.length === 0) closeConn(c, 'closed locally');
      else {
        c.broken = true;
        c.closeAt = Date.now() + CLOSE_FLUSH_MS;
      }
      break;
    }
    case 'stop':
      stopping = true;
      break;
  }
}

/** Write queued frames until done or the socket is full. */
function flush(c: Conn): void {
  while (c.out.length > 0) {
    const o = c.out[0];
    const r = io.send(c.fd, o.data, o.off, o.data.length - o.off, o.fds);
    if (r < 0) {
      if (-r === EAGAIN || -r === EINTR) return;
      if ((-r === ENOBUFS || -r === ENOMEM) && o.off === 0) return; // transient; POLLOUT retries
      closeConn(c, `sendmsg: ${errnoName(-r)}`);
      return;
    }
    if (o.fds.length > 0) {
      // The kernel holds its own references to descriptors in flight.
      closeAll(o.fds);
      o.fds = [];
    }
    o.off += r;
    if (o.off >= o.data.length) {
      c.out.shift();
      if (o.reply && c.inflight > 0) c.inflight--;
    }
  }
  if (c.closeAt !== null) closeConn(c, 'closed locally');
}

/** Read whole frames from a readable connection (a bounded number per wake-up). */
function readConn(c: Conn): void {
  for (let k = 0; k < READS_PER_WAKE; k++) {
    if (c.broken || (init.maxInFlight > 0 && c.inflight >= init.maxInFlight)) return;
    const want = c.body === null ? HEADER_SIZE - c.hdrHave : c.body.length - c.bodyHave;
    const r = io.recv(c.fd, want);
    if (typeof r === 'number') {
      if (-r === EAGAIN) return;
      if (-r === EINTR) continue;
      closeConn(c, `recvmsg: ${errnoName(-r)}`);
      return;
    }
    if (r.fds.length > 0) for (const fd of r.fds) c.fds.push(fd);
    if (r.n === 0) {
      const mid = c.hdrHave > 0 || c.body !== null;
      closeConn(c, mid ? 'peer closed mid-frame' : 'peer closed');
      return;
    }
    if (c.fds.length > MAX_FDS_PER_FRAME || r.truncatedFds) {
      // More descriptors than any frame may carry: nobody can be talking the protocol.
      breakConn(c, 0, `more than ${MAX_FDS_PER_FRAME} descriptors in one frame`);
      return;
    }
    const got = io.recvBuffer.subarray(0, r.n);
    if (c.body === null) {
      c.hdr.set(got, c.hdrHave);
      c.hdrHave += r.n;
      if (c.hdrHave < HEADER_SIZE) continue;
      const length = new DataView(c.hdr.buffer).getUint32(0, true);
      if (length < LENGTH_OVERHEAD || length > init.maxFrame) {
        breakConn(c, length, length < LENGTH_OVERHEAD ? `frame length ${length} is below the header size` : `frame length ${length} exceeds the limit of ${init.maxFrame} bytes`);
        return;
      }
      c.version = c.hdr[4];
      c.flags = c.hdr[5];
      c.body = new Uint8Array(length - LENGTH_OVERHEAD);
      c.bodyHave = 0;
    } else {
      c.body.set(got, c.bodyHave);
      c.bodyHave += r.n;
    }
    if (c.body !== null && c.bodyHave === c.body.length) {
      const payload = c.body;
      const fds = c.fds;
      c.body = null;
      c.hdrHave = 0;
      c.fds = [];
      c.inflight++;
      post({ ev: 'frame', conn: c.id, version: c.version, flags: c.flags, payload, fds }, [payload.buffer as ArrayBuffer]);
    }
  }
}

function breakConn(c: Conn, length: number, message: string): void {
  c.broken = true;
  closeAll(c.fds);
  c.fds = [];
  c.body = null;
  post({ ev: 'badFrame', conn: c.id, length, message });
}

function acceptAll(l: Listener): void {
  for (let k = 0; k < 64; k++) {
    const fd = accept4(l.fd);
    if (fd < 0) {
      const e = -fd;
      if (e === EAGAIN || e === EINTR) return;
      if (e === EMFILE || e === ENFILE || e === ENOBUFS || e === ENOMEM) {
        l.pausedUntil = Date.now() + EMFILE_PAUSE_MS;
        post({ ev: 'listenError', listener: l.id, message: `accept4: ${errnoName(e)} (pausing accepts)` });
        return;
      }
      // ECONNABORTED and friends: that one connection is gone; keep going.
      continue;
    }
    let cred;
    try {
      cred = peerCred(fd);
    } catch {
      closeFd(fd);
      continue;
    }
    const id = nextConnId;
    nextConnId += 2;
    newConn(id, fd);
    post({ ev: 'accept', listener: l.id, conn: id, cred });
  }
}

type Slot = { kind: 'wake' } | { kind: 'listener'; l: Listener } | { kind: 'conn'; c: Conn };

function drainCommands(): void {
  for (;;) {
    const m = receiveMessageOnPort(commands);
    if (m === undefined) return;
    handle(m.message as Command);
  }
}

function loop(): void {
  const slots: Slot[] = [];
  while (!stopping) {
    const now = Date.now();
    let timeout = POLL_MS;
    ps.clear();
    slots.length = 0;
    ps.add(init.wakeFd, POLLIN);
    slots.push({ kind: 'wake' });
    for (const l of listeners.values()) {
      if (l.pausedUntil > now) {
        timeout = Math.min(timeout, l.pausedUntil - now);
        continue;
      }
      ps.add(l.fd, POLLIN);
      slots.push({ kind: 'listener', l });
    }
    for (const c of conns.values()) {
      if (c.closeAt !== null) {
        if (c.closeAt <= now) {
          closeConn(c, 'closed locally (output not drained)');
          continue;
        }
        timeout = Math.min(timeout, c.closeAt - now);
      }
      let ev = 0;
      const paused = c.broken || (init.maxInFlight > 0 && c.inflight >= init.maxInFlight);
      if (!paused) ev |= POLLIN;
      if (c.out.length > 0) ev |= POLLOUT;
      ps.add(c.fd, ev);
      slots.push({ kind: 'conn', c });
    }
    const n = ps.poll(Math.max(0, timeout));
    drainCommands();
    if (n <= 0) continue;
    for (let i = 0; i < slots.length; i++) {
      const re = ps.revents(i);
      if (re === 0) continue;
      const s = slots[i];
      if (s.kind === 'wake') eventFdDrain(init.wakeFd);
      else if (s.kind === 'listener') {
        if (listeners.get(s.l.id) === s.l) acceptAll(s.l);
      } else {
        const c = s.c;
        if (conns.get(c.id) !== c) continue;
        if (re & POLLNVAL) {
          closeConn(c, 'descriptor invalid');
          continue;
        }
        if (re & POLLOUT) flush(c);
        if (conns.get(c.id) !== c) continue;
        const paused = c.broken || (init.maxInFlight > 0 && c.inflight >= init.maxInFlight);
        if (re & (POLLIN | POLLHUP | POLLERR)) {
          if (!paused) readConn(c);
          else if (re & (POLLHUP | POLLERR)) closeConn(c, 'peer closed');
        }
      }
    }
  }
  for (const c of [...conns.values()]) closeConn(c, 'reactor stopped');
  for (const l of listeners.values()) closeFd(l.fd);
  listeners.clear();
  io.free();
  post({ ev: 'stopped' });
}

loop();
