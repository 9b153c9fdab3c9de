/**
 * IpcServer: homid's end of the Unix socket. Accepts many concurrent clients (peer credentials from
 * SO_PEERCRED), validates every frame and request, calls the handler once per request, sends one response per
 * request (with descriptors when the handler returns some), and reports closed connections (peer closed,
 * crashed or was killed) so that leases can be reclaimed.
 *
 * Descriptor ownership: descriptors received with a request are the server's; the handler keeps the ones it
 * takes (`req.takeFds()`), the rest are closed once the handler has settled. Descriptors in a reply are
 * duplicated before the handler's promise settles into the send, so the handler may close its own at once
 * (or pass `closeFds: true` to have the server close them).
 *
 * Limits (limits.ts): connections, partial-frame bytes and age, held descriptors and requests in flight are
 * bounded per peer uid and in total by the I/O worker; the options named as IpcLimits set them (defaults in
 * DEFAULT_LIMITS). At listen() the soft RLIMIT_NOFILE is raised to the hard limit (raiseFdLimit), and new
 * connections are refused while fewer than fdReserve descriptors remain. stats() returns the accounting.
 */
import * as fs from 'node:fs';
import { bindUnix, closeFd, connectUnix, dupCloexec, listenFd, unixSocket, unlinkPath, type PeerCred } from '../sys/socket.js';
import { OsError, errnoName } from '../sys/libc.js';
import { raiseNofileLimit, type Rlimit } from '../sys/rlimit.js';
import { resolveLimits, type IpcLimitStats, type IpcLimits, type IpcRefusal } from './limits.js';
import { DEFAULT_MAX_FRAME, FLAG_FDS, KNOWN_FLAGS, MAX_FDS_PER_FRAME, PROTOCOL_VERSION, decodePayload, encodeFrame } from './frame.js';
import {
  catalogue as homidCatalogue,
  describeIssues,
  errorBody,
  peekId,
  responseSchema,
  validateRequest,
  type AnyRequest,
  type Catalogue,
  type HomidCatalogue,
  type IpcErrorBody,
  type ResponseBody,
} from './messages.js';
import { Reactor, type ConnHandlers } from './reactor.js';
import { IpcError, IpcErrorCode } from './errors.js';

/** A client connection. `closed` turns true before the close listeners run. */
export class IpcConnection {
  closed = false;
  closeReason: string | null = null;
  /** Requests whose handler has not settled yet. */
  inFlight = 0;
  private readonly closeListeners: Array<(conn: IpcConnection, reason: string) => void> = [];
  /** Free for the daemon's per-connection state (leases, grants). */
  readonly state = new Map<string, unknown>();

  constructor(
    /** Unique within the server, never reused. */
    readonly id: number,
    /** The peer's credentials as of connect(), from the kernel (SO_PEERCRED). */
    readonly cred: Readonly<PeerCred>,
    private readonly server: { closeConnection(conn: IpcConnection): void },
  ) {}

  /** Close the connection (responses still queued are sent first, within a bounded wait). */
  close(): void {
    this.server.closeConnection(this);
  }

  /** Run `fn` when this connection closes (at once when it already has). */
  onClose(fn: (conn: IpcConnection, reason: string) => void): void {
    if (this.closed) fn(this, this.closeReason ?? 'closed');
    else this.closeListeners.push(fn);
  }

  /** @internal */
  markClosed(reason: string): Array<(conn: IpcConnection, reason: string) => void> {
    this.closed = true;
    this.closeReason = reason;
    return this.closeListeners.splice(0);
  }
}

/** One validated request as the handler sees it. */
export interface IpcRequest<C extends Catalogue = HomidCatalogue, R extends AnyRequest<C> = AnyRequest<C>> {
  conn: IpcConnection;
  cred: Readonly<PeerCred>;
  request: R;
  /** Descriptors that came with the request (validated against the catalogue's count). */
  readonly fds: readonly number[];
  /** Take ownership of the descriptors (otherwise they are closed once the handler settles). */
  takeFds(): number[];
}

export interface IpcReply<C extends Catalogue = HomidCatalogue> {
  /** The response without `id` (the server echoes the request's): `{ok: true, ...}` or `{ok: false, error}`. */
  response: ResponseBody<C> | { ok: false; error: IpcErrorBody };
  /** Descriptors to pass with the response (duplicated at once; the handler keeps its own). */
  fds?: number[];
  /** Close the handler's `fds` after duplicating them. */
  closeFds?: boolean;
}

export type IpcHandler<C extends Catalogue = HomidCatalogue> = (req: IpcRequest<C>) => Promise<IpcReply<C>> | IpcReply<C>;

/** Something the server rejected or noticed, for logs. */
export interface IpcProtocolEvent {
  conn: IpcConnection;
  code: string;
  message: string;
}

export interface IpcServerOptions<C extends Catalogue = HomidCatalogue> extends Partial<IpcLimits> {
  /** Socket path (a leading NUL: abstract namespace). A stale socket file nobody listens on is replaced. */
  path: string;
  handler: IpcHandler<C>;
  /** The messages served (default: homid's catalogue, messages.ts). */
  catalogue?: C;
  /** chmod of the socket file (default 0o660), applied before listen(). */
  mode?: number;
  /** Limit on a frame's length field (default 1 MiB), both ways. */
  maxFrame?: number;
  /** Requests one connection may have in flight before the server stops reading it (default 64). */
  maxInFlight?: number;
  backlog?: number;
  onConnection?: (conn: IpcConnection) => void;
  onClose?: (conn: IpcConnection, reason: string) => void;
  /** Rejected frames and requests, handler failures, accept errors. */
  onProtocolError?: (e: IpcProtocolEvent) => void;
  onListenError?: (message: string) => void;
  /** Connections refused at accept by a limit (at most 20 reports a second; the rest are counted in stats()). */
  onRefused?: (e: IpcRefusal) => void;
  /** Raise the soft RLIMIT_NOFILE to the hard limit at listen() (default true). */
  raiseFdLimit?: boolean;
}

export class IpcServer<C extends Catalogue = HomidCatalogue> {
  readonly path: string;
  private readonly catalogue: C;
  private readonly reactor: Reactor;
  private readonly listener: number;
  private readonly conns = new Map<number, IpcConnection>();
  private readonly closeListeners = new Set<(conn: IpcConnection, reason: string) => void>();
  private readonly connectionListeners = new Set<(conn: IpcConnection) => void>();
  private readonly maxFrame: number;
  private readonly ino: number | null;
  private closing: Promise<void> | null = null;
  /** The limits in force (the defaults overridden by the options). */
  readonly limits: Readonly<IpcLimits>;
  /** RLIMIT_NOFILE before and after listen() raised it (null: not raised, or the kernel refused). */
  readonly fdLimit: { before: Rlimit; after: Rlimit } | null;

  private constructor(
    private readonly opts: IpcServerOptions<C>,
    catalogue: C,
    fd: number,
    ino: number | null,
    limits: IpcLimits,
    fdLimit: { before: Rlimit; after: Rlimit } | null,
  ) {
    this.path = opts.path;
    this.catalogue = catalogue;
    this.ino = ino;
    this.limits = Object.freeze({ ...limits });
    this.fdLimit = fdLimit;
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    if (opts.onClose) this.closeListeners.add(opts.onClose);
    if (opts.onConnection) this.connectionListeners.add(opts.onConnection);
    this.reactor = new Reactor({ maxFrame: this.maxFrame, maxInFlight: opts.maxInFlight ?? 64, limits });
    this.reactor.ref();
    this.listener = this.reactor.listen(fd, {
      onAccept: (id, cred) => this.accepted(id, cred),
      onRefused: (e) => {
        const fn = this.opts.onRefused;
        if (fn) safely(() => fn({ ...e }));
      },
      onError: (message) => this.opts.onListenError?.(message),
    });
  }

  /** Bind, chmod and listen on `opts.path`, and start serving. Throws RangeError on an invalid limit. */
  static listen(opts: IpcServerOptions<HomidCatalogue> & { catalogue?: undefined }): Promise<IpcServer<HomidCatalogue>>;
  static listen<C extends Catalogue>(opts: IpcServerOptions<C> & { catalogue: C }): Promise<IpcServer<C>>;
  static async listen<C extends Catalogue>(opts: IpcServerOptions<C>): Promise<IpcServer<C>> {
    const cat = opts.catalogue ?? homidCatalogue;
    const limits = resolveLimits(opts);
    let fdLimit: { before: Rlimit; after: Rlimit } | null = null;
    if (opts.raiseFdLimit ?? true) {
      try {
        fdLimit = raiseNofileLimit();
      } catch (e) {
        // Serving goes on under the current limit; the descriptor reserve still applies to it.
        opts.onListenError?.(`cannot raise RLIMIT_NOFILE: ${(e as Error).message}`);
      }
    }
    const fd = unixSocket();
    let ino: number | null = null;
    try {
      bindReplacingStale(fd, opts.path);
      if (!opts.path.startsWith('\0')) {
        fs.chmodSync(opts.path, opts.mode ?? 0o660);
        ino = fs.statSync(opts.path).ino;
      }
      listenFd(fd, opts.backlog ?? 512);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    return new IpcServer<C>(opts, cat as C, fd, ino, limits, fdLimit);
  }

  /**
   * What clients hold now, per uid and in total (connections, partial-frame bytes, held descriptors, requests
   * in flight), refusals by reason, and the descriptor table estimate. Rejects once the server is closed.
   */
  stats(): Promise<IpcLimitStats> {
    return this.reactor.stats();
  }

  /** Open connections. */
  get connections(): ReadonlySet<IpcConnection> {
    return new Set(this.conns.values());
  }

  /** Listen for closed connections (peer closed, crashed, killed, or closed by the server); returns an unsubscribe. */
  onClose(fn: (conn: IpcConnection, reason: string) => void): () => void {
    this.closeListeners.add(fn);
    return () => this.closeListeners.delete(fn);
  }

  /** Listen for new connections; returns an unsubscribe. */
  onConnection(fn: (conn: IpcConnection) => void): () => void {
    this.connectionListeners.add(fn);
    return () => this.connectionListeners.delete(fn);
  }

  /** Stop listening, close every connection (close listeners run for each), remove the socket file. */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    this.closing = (async () => {
      this.reactor.unlisten(this.listener);
      this.removeSocketFile();
      await this.reactor.stop();
      this.reactor.unref();
    })();
    return this.closing;
  }

  /** @internal */
  closeConnection(conn: IpcConnection): void {
    if (!conn.closed) this.reactor.close(conn.id, true);
  }

  private removeSocketFile(): void {
    if (this.path.startsWith('\0') || this.ino === null) return;
    try {
      const st = fs.lstatSync(this.path);
      if (st.isSocket() && st.ino === this.ino) unlinkPath(this.path);
    } catch {
      // already gone
    }
  }

  private accepted(id: number, cred: PeerCred): ConnHandlers {
    const conn = new IpcConnection(id, Object.freeze({ ...cred }), this);
    this.conns.set(id, conn);
    queueMicrotask(() => {
      if (conn.closed) return;
      for (const fn of this.connectionListeners) safely(() => fn(conn));
    });
    return {
      onFrame: (version, flags, payload, fds) => this.frame(conn, version, flags, payload, fds),
      onBadFrame: (_length, message) => {
        this.protocolError(conn, IpcErrorCode.FrameTooLarge, message);
        this.sendRaw(conn, { id: null, ...errorBody(IpcErrorCode.FrameTooLarge, message) }, [], false);
        this.reactor.close(conn.id, true);
      },
      onLimit: (code, _reason, message) => this.protocolError(conn, code, message),
      onClosed: (reason) => {
        this.conns.delete(id);
        const fns = conn.markClosed(reason);
        for (const fn of fns) safely(() => fn(conn, reason));
        for (const fn of this.closeListeners) safely(() => fn(conn, reason));
      },
    };
  }

  private protocolError(conn: IpcConnection, code: string, message: string): void {
    const fn = this.opts.onProtocolError;
    if (fn) safely(() => fn({ conn, code, message }));
  }

  /** Reply with an error to a frame that is not processed further; closes its descriptors. */
  private reject(conn: IpcConnection, id: number | null, code: string, message: string, fds: number[]): void {
    for (const fd of fds) closeFd(fd);
    this.protocolError(conn, code, message);
    this.sendRaw(conn, { id, ...errorBody(code, message) }, [], true);
  }

  private frame(conn: IpcConnection, version: number, flags: number, payload: Uint8Array, fds: number[]): void {
    if (version !== PROTOCOL_VERSION) {
      this.reject(conn, null, IpcErrorCode.UnsupportedVersion, `protocol version ${version} is not supported (this server speaks ${PROTOCOL_VERSION})`, fds);
      return;
    }
    const decoded = decodePayload(payload);
    if (!decoded.ok) {
      this.reject(conn, null, IpcErrorCode.BadJson, decoded.message, fds);
      return;
    }
    const id = peekId(decoded.value);
    if ((flags & ~KNOWN_FLAGS) !== 0) {
      this.reject(conn, id, IpcErrorCode.BadFrame, `reserved frame flag bits set (0x${flags.toString(16)})`, fds);
      return;
    }
    const hasFlag = (flags & FLAG_FDS) !== 0;
    if (hasFlag !== fds.length > 0) {
      const msg = hasFlag ? 'frame flags say descriptors are attached, none came' : 'descriptors came with a frame whose flags say none are attached';
      this.reject(conn, id, hasFlag ? IpcErrorCode.MissingFds : IpcErrorCode.UnexpectedFds, msg, fds);
      return;
    }
    const v = validateRequest(decoded.value, this.catalogue);
    if (!v.ok) {
      this.reject(conn, v.id, v.code, v.message, fds);
      return;
    }
    const request = v.request;
    const want = this.catalogue[request.type]!.requestFds;
    if (fds.length > want.max || fds.length > MAX_FDS_PER_FRAME) {
      this.reject(conn, request.id, IpcErrorCode.UnexpectedFds, `${request.type} takes at most ${want.max} descriptor(s), ${fds.length} came`, fds);
      return;
    }
    if (fds.length < want.min) {
      this.reject(conn, request.id, IpcErrorCode.MissingFds, `${request.type} needs ${want.min} descriptor(s), ${fds.length} came`, fds);
      return;
    }
    void this.dispatch(conn, request, fds);
  }

  private async dispatch(conn: IpcConnection, request: AnyRequest<C>, fds: number[]): Promise<void> {
    let owned = fds;
    const req: IpcRequest<C> = {
      conn,
      cred: conn.cred,
      request,
      fds: Object.freeze([...fds]),
      takeFds: () => {
        const t = owned;
        owned = [];
        return t;
      },
    };
    conn.inFlight++;
    let reply: IpcReply<C>;
    try {
      reply = await this.opts.handler(req);
    } catch (e) {
      if (e instanceof IpcError) reply = { response: errorBody(e.code, e.message) };
      else {
        const message = `${request.type} failed: ${e instanceof Error ? e.message : String(e)}`;
        this.protocolError(conn, IpcErrorCode.Internal, message);
        reply = { response: errorBody(IpcErrorCode.Internal, message) };
      }
    } finally {
      conn.inFlight--;
      for (const fd of owned) closeFd(fd);
      owned = [];
    }
    this.respond(conn, request.type, request.id, reply);
  }

  private respond(conn: IpcConnection, type: string, id: number, reply: IpcReply<C>): void {
    if (typeof reply !== 'object' || reply === null || typeof reply.response !== 'object' || reply.response === null) {
      const problem = `${type} handler returned no response object`;
      this.protocolError(conn, IpcErrorCode.Internal, problem);
      this.sendRaw(conn, { id, ...errorBody(IpcErrorCode.Internal, problem) }, [], true);
      return;
    }
    const handlerFds = Array.isArray(reply.fds) ? reply.fds : [];
    let dups: number[] = [];
    let message: object = { ...reply.response, id };
    const checked = responseSchema(type, this.catalogue).safeParse(message);
    const wantFds = this.catalogue[type]!.resultFds;
    let problem: string | null = null;
    if (!checked.success) problem = `invalid ${type} response from the handler: ${describeIssues(checked.error)}`;
    else if (reply.response.ok && (handlerFds.length < wantFds.min || handlerFds.length > wantFds.max)) {
      problem = `${type} response carries ${handlerFds.length} descriptor(s), the catalogue allows ${wantFds.min}..${wantFds.max}`;
    } else if (!reply.response.ok && handlerFds.length > 0) problem = 'error responses carry no descriptors';
    if (problem === null && !conn.closed) {
      try {
        for (const fd of handlerFds) dups.push(dupCloexec(fd));
      } catch (e) {
        for (const fd of dups) closeFd(fd);
        dups = [];
        problem = `cannot duplicate reply descriptors: ${(e as Error).message}`;
      }
    }
    if (reply.closeFds) for (const fd of handlerFds) closeFd(fd);
    if (problem !== null) {
      this.protocolError(conn, IpcErrorCode.Internal, problem);
      message = { id, ...errorBody(IpcErrorCode.Internal, problem) };
    }
    this.sendRaw(conn, message, dups, true);
  }

  private sendRaw(conn: IpcConnection, message: unknown, fds: number[], reply: boolean): void {
    if (conn.closed) {
      for (const fd of fds) closeFd(fd);
      return;
    }
    let data: Uint8Array;
    try {
      data = encodeFrame(message, fds.length > 0, this.maxFrame);
    } catch (e) {
      for (const fd of fds) closeFd(fd);
      const id = peekId(message);
      const msg = `response too large: ${(e as Error).message}`;
      this.protocolError(conn, IpcErrorCode.Internal, msg);
      data = encodeFrame({ id, ...errorBody(IpcErrorCode.Internal, msg) }, false, Number.MAX_SAFE_INTEGER);
      fds = [];
    }
    this.reactor.send(conn.id, data, fds, reply);
  }
}

function safely(fn: () => void): void {
  try {
    fn();
  } catch (e) {
    queueMicrotask(() => {
      throw e;
    });
  }
}

/** bind(); when the path is a socket file nobody listens on (a previous homid died), remove it and retry. */
function bindReplacingStale(fd: number, path: string): void {
  try {
    bindUnix(fd, path);
    return;
  } catch (e) {
    if (!(e instanceof OsError) || e.code !== 'EADDRINUSE' || path.startsWith('\0')) throw e;
  }
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch {
    bindUnix(fd, path);
    return;
  }
  if (!st.isSocket()) throw new OsError(`bind(${path}): exists and is not a socket`, 17 /* EEXIST */);
  const probe = unixSocket();
  try {
    const r = connectUnix(probe, path);
    if (r === 0 || errnoName(-r) === 'EAGAIN') throw new OsError(`bind(${path}): another server is listening`, 98 /* EADDRINUSE */);
  } finally {
    closeFd(probe);
  }
  unlinkPath(path);
  bindUnix(fd, path);
}
