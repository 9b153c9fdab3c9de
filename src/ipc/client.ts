/**
 * IpcClient: a connection to homid. Requests get unique ids, travel as frames (with descriptors through
 * SCM_RIGHTS when given), and resolve with their validated response and the descriptors that came with it
 * (the caller owns those). Timeouts and connection loss reject with IpcError (timeout, connection-closed).
 *
 * All clients of a process share one I/O thread (sharedReactor). Request descriptors are duplicated at once,
 * so the caller may close its own as soon as request() returns.
 */
import { closeFd, connectUnix, dupCloexec, unixSocket } from '../sys/socket.js';
import { errnoName } from '../sys/libc.js';
import { DEFAULT_MAX_FRAME, FLAG_FDS, PROTOCOL_VERSION, decodePayload, encodeFrame } from './frame.js';
import { CLOSING_ERROR_CODES, IpcError, IpcErrorCode } from './errors.js';
import {
  ErrorResponse,
  catalogue as homidCatalogue,
  describeIssues,
  peekId,
  responseSchema,
  type Catalogue,
  type HomidCatalogue,
  type OkResponse,
  type RequestInput,
  type RequestType,
  type ResponseOf,
} from './messages.js';
import { sharedReactor, type Reactor } from './reactor.js';

export interface IpcClientOptions<C extends Catalogue = HomidCatalogue> {
  /** The messages spoken (default: homid's catalogue, messages.ts). */
  catalogue?: C;
  /** Default per-request timeout in ms (default 30 000; 0: none). */
  timeoutMs?: number;
  /** How long connect() retries while the server's backlog is full (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Largest request frame this client sends (default 1 MiB, the server's default limit). */
  maxFrame?: number;
}

export interface RequestOptions {
  timeoutMs?: number;
}

interface Pending {
  type: string;
  resolve: (v: { response: unknown; fds: number[] }) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout | null;
}

/** A frame from the server that answers no pending request (e.g. an error with id null). */
export interface UnmatchedMessage {
  /** Parsed JSON, or null when the payload was not JSON. */
  message: unknown;
  version: number;
  flags: number;
}

export class IpcClient<C extends Catalogue = HomidCatalogue> {
  private readonly pending = new Map<number, Pending>();
  private readonly closeListeners: Array<(reason: string) => void> = [];
  private readonly unmatchedListeners: Array<(m: UnmatchedMessage) => void> = [];
  private nextId = 1;
  private conn = -1;
  private closedReason: string | null = null;
  /** The error the server sent (id null) before closing the connection (e.g. too-many-connections). */
  private serverError: { code: string; message: string } | null = null;
  private closedPromise: Promise<void>;
  private resolveClosed!: () => void;
  private readonly timeoutMs: number;
  private readonly maxFrame: number;

  private constructor(
    readonly path: string,
    private readonly reactor: Reactor,
    private readonly catalogue: C,
    opts: IpcClientOptions<C>,
  ) {
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    this.closedPromise = new Promise((r) => (this.resolveClosed = r));
  }

  /** Connect to a homid socket. Rejects with IpcError connect-failed (e.g. ENOENT, ECONNREFUSED, EACCES). */
  static connect(path: string, opts?: IpcClientOptions<HomidCatalogue> & { catalogue?: undefined }): Promise<IpcClient<HomidCatalogue>>;
  static connect<C extends Catalogue>(path: string, opts: IpcClientOptions<C> & { catalogue: C }): Promise<IpcClient<C>>;
  static async connect<C extends Catalogue>(path: string, opts: IpcClientOptions<C> = {}): Promise<IpcClient<C>> {
    const cat = (opts.catalogue ?? homidCatalogue) as C;
    const deadline = Date.now() + (opts.connectTimeoutMs ?? 5000);
    const fd = unixSocket();
    try {
      for (;;) {
        const r = connectUnix(fd, path);
        if (r === 0) break;
        const name = errnoName(-r);
        if ((name === 'EAGAIN' || name === 'EINTR') && Date.now() < deadline) {
          await new Promise((res) => setTimeout(res, 5));
          continue;
        }
        throw new IpcError(IpcErrorCode.ConnectFailed, `connect(${JSON.stringify(path)}) failed: ${name}`);
      }
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    const reactor = sharedReactor();
    const c = new IpcClient<C>(path, reactor, cat, opts);
    c.conn = reactor.adopt(fd, {
      onFrame: (version, flags, payload, fds) => c.frame(version, flags, payload, fds),
      onBadFrame: (_length, message) => {
        c.failAll(IpcErrorCode.BadResponse, `bad frame from the server: ${message}`);
        reactor.close(c.conn, false);
      },
      onClosed: (reason) => c.closed(reason),
    });
    return c;
  }

  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  /** Requests awaiting a response. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /**
   * Send a request (an id is assigned when it has none) with optional descriptors, and wait for its response:
   * `{ok: true, ...}` or `{ok: false, error}` (both resolve), validated against the catalogue. Descriptors in the
   * response belong to the caller. Rejects with IpcError on timeout, connection loss or an invalid response.
   */
  request<T extends RequestType<C>>(msg: RequestInput<C, T> & { type: T }, fds: readonly number[] = [], opts: RequestOptions = {}): Promise<{ response: ResponseOf<T, C>; fds: number[] }> {
    const type: string = msg.type;
    if (this.closedReason !== null) {
      const code = this.serverError?.code ?? IpcErrorCode.ConnectionClosed;
      return Promise.reject(new IpcError(code, `connection to ${this.path} is closed: ${this.closedReason}`));
    }
    if (!Object.prototype.hasOwnProperty.call(this.catalogue, type)) {
      return Promise.reject(new IpcError(IpcErrorCode.UnknownType, `unknown request type ${JSON.stringify(type)}`));
    }
    let id = (msg as { id?: number }).id;
    if (id === undefined || this.pending.has(id)) {
      while (this.pending.has(this.nextId)) this.nextId++;
      id = this.nextId++;
    }
    const full = { ...msg, id };
    let data: Uint8Array;
    try {
      data = encodeFrame(full, fds.length > 0, this.maxFrame);
    } catch (e) {
      return Promise.reject(new IpcError(IpcErrorCode.InvalidRequest, (e as Error).message, id));
    }
    let dups: number[];
    try {
      dups = fds.map((fd) => dupCloexec(fd));
    } catch (e) {
      return Promise.reject(e);
    }
    const reqId = id;
    return new Promise((resolve, reject) => {
      const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
      const p: Pending = {
        type,
        resolve: resolve as Pending['resolve'],
        reject,
        timer: null,
      };
      if (timeoutMs > 0) {
        p.timer = setTimeout(() => {
          if (this.pending.get(reqId) !== p) return;
          this.settle(reqId);
          reject(new IpcError(IpcErrorCode.Timeout, `${type} request ${reqId} to ${this.path}: no response within ${timeoutMs} ms`, reqId));
        }, timeoutMs);
      }
      this.pending.set(reqId, p);
      this.reactor.ref();
      this.reactor.send(this.conn, data, dups, false);
    });
  }

  /** request(), resolving with the success response only; an error response rejects with IpcError(code). */
  async call<T extends RequestType<C>>(msg: RequestInput<C, T> & { type: T }, fds: readonly number[] = [], opts: RequestOptions = {}): Promise<{ response: OkResponse<T, C>; fds: number[] }> {
    const r = await this.request(msg, fds, opts);
    const response: ResponseOf<T, C> = r.response;
    if (response.ok === false) {
      throw new IpcError(response.error.code, response.error.message, response.id);
    }
    return { response, fds: r.fds };
  }

  /**
   * Send raw bytes as they are (tests and diagnostics: malformed frames); `fds` go with the first byte and are
   * duplicated first. Responses arrive through onUnmatched unless they answer a pending request.
   */
  sendRaw(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.closedReason !== null) throw new IpcError(IpcErrorCode.ConnectionClosed, `connection to ${this.path} is closed`);
    const dups = fds.map((fd) => dupCloexec(fd));
    this.reactor.send(this.conn, bytes.slice(), dups, false);
  }

  /** Frames that answer no pending request; returns an unsubscribe. */
  onUnmatched(fn: (m: UnmatchedMessage) => void): () => void {
    this.unmatchedListeners.push(fn);
    return () => {
      const i = this.unmatchedListeners.indexOf(fn);
      if (i >= 0) this.unmatchedListeners.splice(i, 1);
    };
  }

  /** Run `fn` when the connection closes (at once when it has). */
  onClose(fn: (reason: string) => void): void {
    if (this.closedReason !== null) fn(this.closedReason);
    else this.closeListeners.push(fn);
  }

  /** Close the connection; pending requests reject with connection-closed. Resolves once closed. */
  close(): Promise<void> {
    if (this.closedReason === null) {
      this.failAll(IpcErrorCode.ConnectionClosed, `connection to ${this.path} closed by the client`);
      this.reactor.close(this.conn, false);
    }
    return this.closedPromise;
  }

  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (p === undefined) return undefined;
    this.pending.delete(id);
    if (p.timer !== null) clearTimeout(p.timer);
    this.reactor.unref();
    return p;
  }

  private failAll(code: string, message: string): void {
    for (const id of [...this.pending.keys()]) {
      const p = this.settle(id);
      p?.reject(new IpcError(code, message, id));
    }
  }

  /** Why the server closed this connection, when it said so before closing (e.g. a limit); else null. */
  get closedByServer(): { code: string; message: string } | null {
    return this.serverError === null ? null : { ...this.serverError };
  }

  private closed(reason: string): void {
    if (this.closedReason !== null) return;
    const se = this.serverError;
    // Pending requests fail with the server's own reason when it gave one before closing.
    if (se !== null) reason = `${se.code}: ${se.message}`;
    this.closedReason = reason;
    if (se !== null) this.failAll(se.code, `connection to ${this.path} closed by the server: ${reason}`);
    else this.failAll(IpcErrorCode.ConnectionClosed, `connection to ${this.path} lost: ${reason}`);
    for (const fn of this.closeListeners.splice(0)) fn(reason);
    this.resolveClosed();
  }

  private unmatched(m: UnmatchedMessage, fds: number[]): void {
    for (const fd of fds) closeFd(fd);
    for (const fn of [...this.unmatchedListeners]) fn(m);
  }

  /** Remember an id-less error after which the server closes the connection. */
  private noteServerError(value: unknown): void {
    const e = ErrorResponse.safeParse(value);
    if (!e.success || e.data.id !== null || !CLOSING_ERROR_CODES.has(e.data.error.code)) return;
    this.serverError = { code: e.data.error.code, message: e.data.error.message };
  }

  private frame(version: number, flags: number, payload: Uint8Array, fds: number[]): void {
    const decoded = decodePayload(payload);
    const value = decoded.ok ? decoded.value : null;
    const id = version === PROTOCOL_VERSION ? peekId(value) : null;
    const p = id === null ? undefined : this.pending.get(id);
    if (id === null || p === undefined) {
      if (id === null && version === PROTOCOL_VERSION) this.noteServerError(value);
      this.unmatched({ message: value, version, flags }, fds);
      return;
    }
    this.settle(id);
    const fail = (message: string): void => {
      for (const fd of fds) closeFd(fd);
      p.reject(new IpcError(IpcErrorCode.BadResponse, `${p.type} request ${id}: ${message}`, id));
    };
    if (((flags & FLAG_FDS) !== 0) !== fds.length > 0) return fail('descriptor flag and descriptors disagree');
    const checked = responseSchema(p.type, this.catalogue).safeParse(value);
    if (!checked.success) return fail(`invalid response: ${describeIssues(checked.error)}`);
    const response = checked.data as { ok: boolean };
    const allowed = response.ok ? this.catalogue[p.type]!.resultFds : { min: 0, max: 0 };
    if (fds.length < allowed.min || fds.length > allowed.max) {
      return fail(`${fds.length} descriptor(s) with the response, ${allowed.min}..${allowed.max} expected`);
    }
    p.resolve({ response, fds });
  }
}
