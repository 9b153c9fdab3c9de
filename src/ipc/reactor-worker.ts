/**
 * The IPC I/O thread: blocks in poll(2) on the listening sockets, every connection and a wake eventfd; accepts
 * (taking SO_PEERCRED), reads frames with recvmsg (never past a frame's end, so SCM_RIGHTS descriptors are
 * matched to their frame exactly), writes queued frames with sendmsg, and reports to the main thread.
 * Commands come on a MessagePort drained synchronously after each wake-up. poll never waits longer than
 * POLL_MS so that the thread returns to JavaScript regularly (worker termination at process exit).
 *
 * Limits (limits.ts; accepted connections only, when init.limits is set): every accepted connection is charged
 * to its peer uid and to the totals; the accounting is updated wherever a buffer grows or is dropped, a
 * descriptor arrives or leaves, a request is read or answered, so that closing a connection returns all of it
 * at once. Frame bodies grow in steps as their bytes arrive (BODY_STEP_MIN .. BODY_STEP_MAX at a time, never
 * past the declared length). The open descriptor count is estimated from a sample of /proc/self/fd (taken at
 * most every FD_SAMPLE_MS, or every FD_RESAMPLE_MS while near the limit) plus the descriptors this thread has
 * opened since; the number accept4 returned is a lower bound (the kernel hands out the lowest free one). One
 * spare descriptor is kept so that a connection can still be accepted and told why it is refused when the
 * table is full (EMFILE).
 */
import { receiveMessageOnPort, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { MsgIo, PollSet, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, accept4, closeFd, eventFd, eventFdDrain, peerCred, shutdownFd, type PeerCred } from '../sys/socket.js';
import { errnoName } from '../sys/libc.js';
import { countOpenFds, getNofileLimit } from '../sys/rlimit.js';
import { HEADER_SIZE, LENGTH_OVERHEAD, MAX_FDS_PER_FRAME, encodeFrame } from './frame.js';
import { LIMIT_CLOSE_FLUSH_MS, LIMIT_REASONS, TRANSIT_MIN_BYTES, limitErrorCode, type IpcLimitReason, type IpcLimitStats, type IpcUidUsage } from './limits.js';
import type { Command, ReactorEvent, ReactorInit } from './reactor-protocol.js';

const POLL_MS = 250;
const CLOSE_FLUSH_MS = 2000;
const EMFILE_PAUSE_MS = 100;
const READS_PER_WAKE = 32;
const ACCEPTS_PER_WAKE = 64;
/** Smallest growth of a frame body buffer (and its rounding). */
const BODY_STEP_MIN = 16 * 1024;
/** Largest growth of a frame body buffer at once. */
const BODY_STEP_MAX = 256 * 1024;
/** Sample /proc/self/fd at most this often ... */
const FD_SAMPLE_MS = 1000;
/** ... or this often while the estimate says the reserve is reached. */
const FD_RESAMPLE_MS = 100;
/** At most this many 'refused' events per second; the rest are only counted. */
const REFUSAL_EVENTS_PER_SECOND = 20;
const ONE_SECOND_MS = 1000;
/** Longest message put in a refusal frame. */
const MAX_REFUSAL_MESSAGE = 512;
const EAGAIN = 11;
const EINTR = 4;
const EMFILE = 24;
const ENFILE = 23;
const ENOBUFS = 105;
const ENOMEM = 12;
const EPIPE = 32;
const ECONNRESET = 104;

interface Out {
  data: Uint8Array;
  off: number;
  fds: number[];
  reply: boolean;
}

/** What one uid (or everyone: uid -1) holds. */
interface Usage {
  uid: number;
  conns: number;
  /** Capacity of incomplete-frame body buffers. */
  partialBytes: number;
  /** Completed frames (>= TRANSIT_MIN_BYTES) posted and not yet taken. */
  transitBytes: number;
  /** Descriptors in incomplete frames. */
  partialFds: number;
  /** Descriptors of completed frames posted and not yet taken. */
  transitFds: number;
  /** Frames read and not yet answered. */
  inflight: number;
  /** Bytes of output queued (replies the peer has not read yet). */
  queuedBytes: number;
}
type Counter = 'conns' | 'partialBytes' | 'transitBytes' | 'partialFds' | 'transitFds' | 'inflight' | 'queuedBytes';

interface Conn {
  id: number;
  fd: number;
  /** The uid this connection is charged to (accepted connections under limits), else null. */
  usage: Usage | null;
  hdr: Uint8Array;
  hdrHave: number;
  /** The body buffer once the header is complete (it grows to bodyLen as bytes arrive), else null. */
  body: Uint8Array | null;
  bodyLen: number;
  bodyHave: number;
  version: number;
  flags: number;
  /** When the frame being read got its first byte (0: none in progress). */
  frameStart: number;
  /** Descriptors received within the frame being read. */
  fds: number[];
  out: Out[];
  /** Frame boundary lost, or closed for a limit: read nothing more. */
  broken: boolean;
  /** Closing once `out` is empty (or at the deadline). */
  closeAt: number | null;
  /** The reason reported when the close happens. */
  closeReason: string | null;
  inflight: number;
}

interface Listener {
  id: number;
  fd: number;
  pausedUntil: number;
}

const init = workerData.init as ReactorInit;
const limits = init.limits;
const commands = workerData.port as MessagePort;
const post = (e: ReactorEvent, transfer?: ArrayBuffer[]): void => parentPort!.postMessage(e, transfer);

const io = new MsgIo(256 * 1024);
const ps = new PollSet();
const conns = new Map<number, Conn>();
const listeners = new Map<number, Listener>();
let nextConnId = 2;
let stopping = false;

// ---- accounting ----

const newUsage = (uid: number): Usage => ({
  uid,
  conns: 0,
  partialBytes: 0,
  transitBytes: 0,
  partialFds: 0,
  transitFds: 0,
  inflight: 0,
  queuedBytes: 0,
});
const uids = new Map<number, Usage>();
const total = newUsage(-1);
/** Frames posted with a token: what they hold until the main thread says 'taken'. */
const transit = new Map<number, { usage: Usage; bytes: number; fds: number }>();
let nextToken = 1;
const refusals = Object.fromEntries(LIMIT_REASONS.map((r) => [r, 0])) as Record<IpcLimitReason, number>;
let refusalWindowStart = 0;
let refusalWindowCount = 0;
let refusalsUnreportedSince = 0;
let refusalsUnreported = 0;

function usageOf(uid: number): Usage {
  let u = uids.get(uid);
  if (u === undefined) {
    u = newUsage(uid);
    uids.set(uid, u);
  }
  return u;
}

function charge(u: Usage | null, k: Counter, delta: number): void {
  if (u === null || delta === 0) return;
  u[k] += delta;
  total[k] += delta;
  if (delta < 0 && u.conns === 0 && u.partialBytes === 0 && u.transitBytes === 0 && u.partialFds === 0 && u.transitFds === 0 && u.inflight === 0 && u.queuedBytes === 0 && uids.get(u.uid) === u) {
    uids.delete(u.uid);
  }
}

const heldFds = (u: Usage): number => u.partialFds + u.transitFds;

// ---- the descriptor table ----

let fdLimit = Number.MAX_SAFE_INTEGER;
let fdSampleCount = 0;
let fdSampleAt = 0;
/** Descriptors this thread opened (accepted, received) since the last sample. */
let fdsOpenedSinceSample = 0;
/** A descriptor kept free for the EMFILE refusal path (-1: none now). */
let spareFd = -1;

function sampleFds(now: number): void {
  fdSampleAt = now;
  fdsOpenedSinceSample = 0;
  try {
    fdLimit = getNofileLimit().soft;
  } catch {
    // keep the last known limit
  }
  try {
    fdSampleCount = countOpenFds();
  } catch {
    // /proc unreadable (e.g. EMFILE itself): assume the table is full.
    fdSampleCount = fdLimit;
  }
}

/** Estimated open descriptors; `lowerBound` is one known to be in use (accept4's result), or -1. */
function fdEstimate(lowerBound: number): number {
  if (limits === null) return 0;
  const now = Date.now();
  if (now - fdSampleAt >= FD_SAMPLE_MS) sampleFds(now);
  let est = Math.max(fdSampleCount + fdsOpenedSinceSample, lowerBound + 1);
  if (fdLimit - est < limits.fdReserve && now - fdSampleAt >= FD_RESAMPLE_MS) {
    sampleFds(now);
    est = Math.max(fdSampleCount + fdsOpenedSinceSample, lowerBound + 1);
  }
  return est;
}

function makeSpareFd(): void {
  if (spareFd >= 0 || limits === null) return;
  try {
    spareFd = eventFd();
  } catch {
    spareFd = -1;
  }
}

// ---- connections ----

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) if (fd >= 0) closeFd(fd);
}

function newConn(id: number, fd: number, usage: Usage | null): Conn {
  const c: Conn = {
    id,
    fd,
    usage,
    hdr: new Uint8Array(HEADER_SIZE),
    hdrHave: 0,
    body: null,
    bodyLen: 0,
    bodyHave: 0,
    version: 0,
    flags: 0,
    frameStart: 0,
    fds: [],
    out: [],
    broken: false,
    closeAt: null,
    closeReason: null,
    inflight: 0,
  };
  conns.set(id, c);
  charge(usage, 'conns', 1);
  return c;
}

/** Drop the frame being read: its buffer and descriptors leave the accounting at once. */
function dropPartial(c: Conn): void {
  charge(c.usage, 'partialBytes', -(c.body?.length ?? 0));
  charge(c.usage, 'partialFds', -c.fds.length);
  closeAll(c.fds);
  c.fds = [];
  c.body = null;
  c.bodyLen = 0;
  c.bodyHave = 0;
  c.hdrHave = 0;
  c.frameStart = 0;
}

function closeConn(c: Conn, reason: string): void {
  if (!conns.delete(c.id)) return;
  shutdownFd(c.fd);
  closeFd(c.fd);
  dropPartial(c);
  for (const o of c.out) {
    closeAll(o.fds);
    charge(c.usage, 'queuedBytes', -o.data.length);
  }
  c.out = [];
  charge(c.usage, 'inflight', -c.inflight);
  c.inflight = 0;
  charge(c.usage, 'conns', -1);
  post({ ev: 'closed', conn: c.id, reason });
}

/** An error frame as the server sends it to a connection it is about to close. */
function errorFrame(code: string, message: string): Uint8Array {
  const text = message.length > MAX_REFUSAL_MESSAGE ? `${message.slice(0, MAX_REFUSAL_MESSAGE)}…` : message;
  return encodeFrame({ id: null, ok: false, error: { code, message: text } }, false, Number.MAX_SAFE_INTEGER);
}

/**
 * The connection went over a limit: drop its partial frame and descriptors now, read nothing more, queue one
 * error frame and close once it has gone (LIMIT_CLOSE_FLUSH_MS at most).
 */
function limitClose(c: Conn, reason: IpcLimitReason, message: string): void {
  if (!conns.has(c.id) || c.broken) return;
  refusals[reason]++;
  const code = limitErrorCode(reason);
  dropPartial(c);
  c.broken = true;
  c.closeReason = `${code}: ${message}`;
  const deadline = Date.now() + LIMIT_CLOSE_FLUSH_MS;
  c.closeAt = c.closeAt === null ? deadline : Math.min(c.closeAt, deadline);
  queue(c, { data: errorFrame(code, message), off: 0, fds: [], reply: false });
  post({ ev: 'limit', conn: c.id, code, reason, message });
  flush(c);
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
      newConn(cmd.conn, cmd.fd, null);
      break;
    case 'send': {
      const c = conns.get(cmd.conn);
      if (c === undefined || c.closeAt !== null) {
        closeAll(cmd.fds);
        break;
      }
      queue(c, { data: cmd.data, off: 0, fds: cmd.fds, reply: cmd.reply });
      flush(c);
      break;
    }
    case 'close': {
      const c = conns.get(cmd.conn);
      if (c === undefined) break;
      if (!cmd.flush || c.out.length === 0) closeConn(c, c.closeReason ?? 'closed locally');
      else {
        c.broken = true;
        dropPartial(c);
        if (c.closeAt === null) c.closeAt = Date.now() + CLOSE_FLUSH_MS;
      }
      break;
    }
    case 'taken': {
      const t = transit.get(cmd.token);
      if (t === undefined) break;
      transit.delete(cmd.token);
      charge(t.usage, 'transitBytes', -t.bytes);
      charge(t.usage, 'transitFds', -t.fds);
      break;
    }
    case 'stats':
      post({ ev: 'stats', seq: cmd.seq, stats: snapshot() });
      break;
    case 'stop':
      stopping = true;
      break;
  }
}

function queue(c: Conn, o: Out): void {
  c.out.push(o);
  charge(c.usage, 'queuedBytes', o.data.length);
}

/** Write queued frames until done or the socket is full. */
function flush(c: Conn): void {
  while (c.out.length > 0) {
    const o = c.out[0];
    const r = io.send(c.fd, o.data, o.off, o.data.length - o.off, o.fds);
    if (r < 0) {
      if (-r === EAGAIN || -r === EINTR) return;
      if ((-r === ENOBUFS || -r === ENOMEM) && o.off === 0) return; // transient; POLLOUT retries
      if ((-r === EPIPE || -r === ECONNRESET) && c.usage === null && !c.broken) {
        // The peer has gone; what it said last (e.g. why it refused us) may still be queued for reading.
        readConn(c);
      }
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
      charge(c.usage, 'queuedBytes', -o.data.length);
      if (o.reply && c.inflight > 0) {
        c.inflight--;
        charge(c.usage, 'inflight', -1);
      }
    }
  }
  if (c.closeAt !== null) closeConn(c, c.closeReason ?? 'closed locally');
}

/** Not reading this connection now: broken, or (between frames only) too many requests await replies. */
function readPaused(c: Conn): boolean {
  if (c.broken) return true;
  if (c.hdrHave > 0) return false; // finish the frame under way
  if (init.maxInFlight > 0 && c.inflight >= init.maxInFlight) return true;
  const u = c.usage;
  if (u !== null && limits !== null) {
    if (u.inflight >= limits.maxInFlightPerUid) return true;
    if (u.transitBytes >= limits.maxPartialBytesPerUid) return true;
    if (u.queuedBytes >= limits.maxQueuedBytesPerUid) return true;
  }
  return false;
}

/** Grow `c.body` to hold `need` bytes; false when a limit closed the connection instead. */
function growBody(c: Conn, need: number): boolean {
  const body = c.body!;
  if (need <= body.length) return true;
  const step = Math.min(Math.max(body.length, BODY_STEP_MIN), BODY_STEP_MAX);
  const rounded = Math.ceil(need / BODY_STEP_MIN) * BODY_STEP_MIN;
  const cap = Math.min(c.bodyLen, Math.max(rounded, body.length + step));
  const delta = cap - body.length;
  const u = c.usage;
  if (u !== null && limits !== null) {
    if (u.partialBytes + delta > limits.maxPartialBytesPerUid) {
      limitClose(c, 'partialBytesPerUid', `uid ${u.uid} would hold ${u.partialBytes + delta} bytes of incomplete frames, over maxPartialBytesPerUid ${limits.maxPartialBytesPerUid}`);
      return false;
    }
    if (total.partialBytes + delta > limits.maxPartialBytes) {
      limitClose(
        c,
        'partialBytes',
        `incomplete frames of all clients would hold ${total.partialBytes + delta} bytes, over maxPartialBytes ${limits.maxPartialBytes} (connection of uid ${u.uid} closed)`,
      );
      return false;
    }
  }
  let grown: Uint8Array;
  try {
    grown = new Uint8Array(cap);
  } catch {
    if (u !== null) {
      limitClose(c, 'memory', `cannot allocate ${cap} bytes for a frame of uid ${u.uid}`);
      return false;
    }
    closeConn(c, `cannot allocate ${cap} bytes for a frame`);
    return false;
  }
  grown.set(body.subarray(0, c.bodyHave));
  c.body = grown;
  charge(u, 'partialBytes', delta);
  return true;
}

/** Descriptors just arrived on `c`: false when a limit closed the connection. */
function checkFds(c: Conn, n: number): boolean {
  const u = c.usage;
  fdsOpenedSinceSample += n;
  if (u === null || limits === null) return true;
  if (heldFds(u) > limits.maxHeldFdsPerUid) {
    limitClose(c, 'heldFdsPerUid', `uid ${u.uid} holds ${heldFds(u)} descriptors in frames not yet processed, over maxHeldFdsPerUid ${limits.maxHeldFdsPerUid}`);
    return false;
  }
  if (heldFds(total) > limits.maxHeldFds) {
    limitClose(c, 'heldFds', `all clients hold ${heldFds(total)} descriptors in frames not yet processed, over maxHeldFds ${limits.maxHeldFds} (connection of uid ${u.uid} closed)`);
    return false;
  }
  const est = fdEstimate(-1);
  if (fdLimit - est < limits.fdReserve) {
    limitClose(c, 'descriptorReserve', `homid has about ${est} of ${fdLimit} descriptors open, fewer than fdReserve ${limits.fdReserve} left (descriptors from uid ${u.uid} refused)`);
    return false;
  }
  return true;
}

/** Read whole frames from a readable connection (a bounded number per wake-up). */
function readConn(c: Conn): void {
  for (let k = 0; k < READS_PER_WAKE; k++) {
    if (conns.get(c.id) !== c || readPaused(c)) return;
    const want = c.body === null ? HEADER_SIZE - c.hdrHave : c.bodyLen - c.bodyHave;
    const r = io.recv(c.fd, want);
    if (typeof r === 'number') {
      if (-r === EAGAIN) return;
      if (-r === EINTR) continue;
      closeConn(c, `recvmsg: ${errnoName(-r)}`);
      return;
    }
    if (r.fds.length > 0) {
      for (const fd of r.fds) c.fds.push(fd);
      charge(c.usage, 'partialFds', r.fds.length);
    }
    if (r.n === 0) {
      const mid = c.hdrHave > 0;
      closeConn(c, mid ? 'peer closed mid-frame' : 'peer closed');
      return;
    }
    if (c.fds.length > MAX_FDS_PER_FRAME || r.truncatedFds) {
      // More descriptors than any frame may carry: nobody can be talking the protocol.
      fdsOpenedSinceSample += r.fds.length;
      breakConn(c, 0, `more than ${MAX_FDS_PER_FRAME} descriptors in one frame`);
      return;
    }
    if (r.fds.length > 0 && !checkFds(c, r.fds.length)) return;
    if (c.frameStart === 0) c.frameStart = Date.now();
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
      c.body = new Uint8Array(0);
      c.bodyLen = length - LENGTH_OVERHEAD;
      c.bodyHave = 0;
    } else {
      if (!growBody(c, c.bodyHave + r.n)) return;
      c.body.set(got, c.bodyHave);
      c.bodyHave += r.n;
    }
    if (c.body !== null && c.bodyHave === c.bodyLen) completeFrame(c);
  }
}

/** The frame under way is whole: hand it (and its descriptors) to the main thread. */
function completeFrame(c: Conn): void {
  const body = c.body!;
  const payload = body.length === c.bodyLen ? body : body.slice(0, c.bodyLen);
  const fds = c.fds;
  const u = c.usage;
  charge(u, 'partialBytes', -body.length);
  charge(u, 'partialFds', -fds.length);
  c.fds = [];
  c.body = null;
  c.bodyLen = 0;
  c.bodyHave = 0;
  c.hdrHave = 0;
  c.frameStart = 0;
  c.inflight++;
  charge(u, 'inflight', 1);
  let token = 0;
  if (u !== null) {
    const bytes = payload.length >= TRANSIT_MIN_BYTES ? payload.length : 0;
    if (bytes > 0 || fds.length > 0) {
      token = nextToken++;
      transit.set(token, { usage: u, bytes, fds: fds.length });
      charge(u, 'transitBytes', bytes);
      charge(u, 'transitFds', fds.length);
    }
  }
  post({ ev: 'frame', conn: c.id, version: c.version, flags: c.flags, payload, fds, token }, [payload.buffer as ArrayBuffer]);
}

function breakConn(c: Conn, length: number, message: string): void {
  c.broken = true;
  dropPartial(c);
  post({ ev: 'badFrame', conn: c.id, length, message });
}

// ---- accepting ----

/** Report a refusal to the main thread, at most REFUSAL_EVENTS_PER_SECOND times a second. */
function reportRefusal(l: Listener, cred: PeerCred | null, reason: IpcLimitReason, message: string): void {
  const now = Date.now();
  if (now - refusalWindowStart >= ONE_SECOND_MS) {
    refusalWindowStart = now;
    refusalWindowCount = 0;
  }
  if (refusalWindowCount >= REFUSAL_EVENTS_PER_SECOND) {
    refusalsUnreportedSince++;
    refusalsUnreported++;
    return;
  }
  refusalWindowCount++;
  const unreported = refusalsUnreportedSince;
  refusalsUnreportedSince = 0;
  post({ ev: 'refused', listener: l.id, cred, code: limitErrorCode(reason), reason, message, unreported });
}

/** Tell a just-accepted connection why it is refused (one non-blocking send) and close it at once. */
function refuse(l: Listener, fd: number, cred: PeerCred | null, reason: IpcLimitReason, message: string): void {
  refusals[reason]++;
  const data = errorFrame(limitErrorCode(reason), message);
  io.send(fd, data, 0, data.length, []);
  shutdownFd(fd);
  closeFd(fd);
  reportRefusal(l, cred, reason, message);
}

/** Why a new connection from `cred` (accepted as `fd`) is refused, or null to take it. */
function admission(fd: number, cred: PeerCred): { reason: IpcLimitReason; message: string } | null {
  if (limits === null) return null;
  const est = fdEstimate(fd);
  if (fdLimit - est < limits.fdReserve) {
    return {
      reason: 'descriptorReserve',
      message: `homid has about ${est} of ${fdLimit} descriptors open, fewer than fdReserve ${limits.fdReserve} left; connection from uid ${cred.uid} refused`,
    };
  }
  if (total.conns >= limits.maxConnections) {
    return {
      reason: 'connections',
      message: `homid has ${total.conns} connections open, maxConnections is ${limits.maxConnections}; connection from uid ${cred.uid} refused`,
    };
  }
  const root = cred.uid === 0;
  const cap = root ? limits.maxConnectionsRoot : limits.maxConnectionsPerUid;
  const have = uids.get(cred.uid)?.conns ?? 0;
  if (cap > 0 && have >= cap) {
    return {
      reason: 'connectionsPerUid',
      message: `uid ${cred.uid} has ${have} connections open, ${root ? 'maxConnectionsRoot' : 'maxConnectionsPerUid'} is ${cap}; connection refused`,
    };
  }
  return null;
}

function pauseAccepts(l: Listener, e: number): void {
  l.pausedUntil = Date.now() + EMFILE_PAUSE_MS;
  post({ ev: 'listenError', listener: l.id, message: `accept4: ${errnoName(e)} (pausing accepts)` });
}

/**
 * Out of descriptors: free the spare one, accept with it, refuse that connection, take the spare back.
 * 'again': one was refused and the spare is back; 'empty': nobody was waiting; 'stuck': no spare to use.
 */
function refuseWithSpare(l: Listener): 'again' | 'empty' | 'stuck' {
  if (spareFd < 0) {
    makeSpareFd();
    return 'stuck';
  }
  closeFd(spareFd);
  spareFd = -1;
  const fd = accept4(l.fd);
  if (fd >= 0) {
    try {
      fdLimit = getNofileLimit().soft;
    } catch {
      // keep the last known limit for the message
    }
    let cred: PeerCred | null = null;
    try {
      cred = peerCred(fd);
    } catch {
      cred = null;
    }
    const who = cred === null ? 'a client' : `uid ${cred.uid}`;
    refuse(l, fd, cred, 'descriptorsExhausted', `homid is out of descriptors (RLIMIT_NOFILE ${fdLimit}); connection from ${who} refused`);
  }
  makeSpareFd();
  if (spareFd < 0) return 'stuck';
  if (fd >= 0) return 'again';
  return -fd === EAGAIN || -fd === EINTR ? 'empty' : 'stuck';
}

function acceptAll(l: Listener): void {
  for (let k = 0; k < ACCEPTS_PER_WAKE; k++) {
    const fd = accept4(l.fd);
    if (fd < 0) {
      const e = -fd;
      if (e === EAGAIN || e === EINTR) return;
      if (e === EMFILE || e === ENFILE) {
        const spare = limits === null ? 'stuck' : refuseWithSpare(l);
        if (spare === 'again') continue;
        if (spare === 'empty') return;
        pauseAccepts(l, e);
        return;
      }
      if (e === ENOBUFS || e === ENOMEM) {
        pauseAccepts(l, e);
        return;
      }
      // ECONNABORTED and friends: that one connection is gone; keep going.
      continue;
    }
    fdsOpenedSinceSample++;
    let cred: PeerCred;
    try {
      cred = peerCred(fd);
    } catch {
      closeFd(fd);
      continue;
    }
    const refusal = admission(fd, cred);
    if (refusal !== null) {
      refuse(l, fd, cred, refusal.reason, refusal.message);
      continue;
    }
    const id = nextConnId;
    nextConnId += 2;
    newConn(id, fd, limits === null ? null : usageOf(cred.uid));
    post({ ev: 'accept', listener: l.id, conn: id, cred });
  }
}

// ---- stats ----

function usageView(u: Usage): IpcUidUsage {
  return {
    uid: u.uid,
    connections: u.conns,
    partialBytes: u.partialBytes,
    transitBytes: u.transitBytes,
    heldFds: heldFds(u),
    inFlight: u.inflight,
    queuedBytes: u.queuedBytes,
  };
}

function snapshot(): IpcLimitStats {
  const open = limits === null ? 0 : fdEstimate(-1);
  return {
    limits: limits ?? ({} as IpcLimitStats['limits']),
    total: usageView(total),
    uids: [...uids.values()].sort((a, b) => a.uid - b.uid).map(usageView),
    refusals: { ...refusals },
    refusalsUnreported,
    fds: { open, limit: fdLimit, reserve: limits?.fdReserve ?? 0, sampledAt: fdSampleAt },
  };
}

// ---- the loop ----

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
  if (limits !== null) {
    sampleFds(Date.now());
    makeSpareFd();
  }
  while (!stopping) {
    let now = Date.now();
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
      if (limits !== null && c.usage !== null && c.frameStart > 0 && !c.broken) {
        const deadline = c.frameStart + limits.frameTimeoutMs;
        if (deadline <= now) {
          limitClose(c, 'frameTimeout', `a frame of uid ${c.usage.uid} stayed incomplete for ${now - c.frameStart} ms, over frameTimeoutMs ${limits.frameTimeoutMs}`);
          now = Date.now();
          if (conns.get(c.id) !== c) continue;
        } else timeout = Math.min(timeout, deadline - now);
      }
      if (c.closeAt !== null) {
        if (c.closeAt <= now) {
          closeConn(c, c.closeReason ?? 'closed locally (output not drained)');
          continue;
        }
        timeout = Math.min(timeout, c.closeAt - now);
      }
      let ev = 0;
      if (!readPaused(c)) ev |= POLLIN;
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
        if (re & (POLLIN | POLLHUP | POLLERR)) {
          if (!readPaused(c)) readConn(c);
          else if (re & (POLLHUP | POLLERR)) closeConn(c, c.closeReason ?? 'peer closed');
        }
      }
    }
  }
  for (const c of [...conns.values()]) closeConn(c, 'reactor stopped');
  for (const l of listeners.values()) closeFd(l.fd);
  listeners.clear();
  if (spareFd >= 0) closeFd(spareFd);
  spareFd = -1;
  io.free();
  post({ ev: 'stopped' });
}

loop();
