/**
 * What one local user may make homid hold. The IPC I/O worker (reactor-worker.ts) enforces these per peer uid
 * (SO_PEERCRED at accept) and in total, on accepted connections only (a client's own connections are not
 * limited):
 *
 *   connections        maxConnections in total; maxConnectionsPerUid for every uid but 0; maxConnectionsRoot for
 *                      uid 0 (0: no per-uid cap for root, which stays under maxConnections and the descriptor
 *                      reserve: root can always reach its own daemon unless homid as a whole is full)
 *   partial frames     bytes of incomplete frames: maxPartialBytesPerUid and maxPartialBytes in total (one
 *                      connection holds at most one incomplete frame, so maxFrame bounds a connection). A body
 *                      buffer grows as its bytes arrive, never to the declared length up front. Completed frames
 *                      of TRANSIT_MIN_BYTES or more that the main thread has not taken yet are counted as well
 *                      (transitBytes): while they reach maxPartialBytesPerUid, that uid's connections are not
 *                      read (back-pressure, not an error)
 *   frame age          one frame may stay incomplete frameTimeoutMs after its first byte arrived
 *   descriptors held   received in incomplete frames, or in complete ones the main thread has not taken yet:
 *                      maxHeldFdsPerUid, maxHeldFds in total
 *   requests in flight maxInFlight per connection (IpcServerOptions), maxInFlightPerUid per uid: reading
 *                      pauses at a frame boundary (back-pressure, not an error)
 *   queued output      replies a uid's connections have not read yet: while they reach maxQueuedBytesPerUid,
 *                      that uid's connections are not read (back-pressure; a request read before the pause is
 *                      still answered, so the output stays below this plus maxInFlightPerUid replies)
 *   descriptor reserve new connections (and descriptors arriving) are refused while fewer than fdReserve
 *                      descriptors remain below homid's RLIMIT_NOFILE soft limit
 *
 * A connection over a limit gets one error frame (`{id: null, ok: false, error: {code, message}}`, the message
 * naming the limit, the uid and the values), its partial frame and descriptors are released at once, and it is
 * closed (after at most LIMIT_CLOSE_FLUSH_MS to deliver the error). A connection refused at accept gets the
 * error frame with one non-blocking send and is closed at once.
 */

/** The error codes of limit refusals (also in IpcErrorCode; defined here so that the worker needs no schemas). */
export const LimitErrorCode = {
  /** Refused at accept: maxConnections or the uid's connection limit reached. */
  TooManyConnections: 'too-many-connections',
  /** Refused: homid is within fdReserve of its descriptor limit (or out of descriptors). */
  DescriptorsExhausted: 'descriptors-exhausted',
  /** Closed: the connection's uid (or everyone together) holds too many partial-frame bytes or descriptors. */
  LimitExceeded: 'limit-exceeded',
  /** Closed: a frame stayed incomplete longer than frameTimeoutMs. */
  FrameTimeout: 'frame-timeout',
} as const;
export type LimitErrorCodeValue = (typeof LimitErrorCode)[keyof typeof LimitErrorCode];

export interface IpcLimits {
  /** Connections open at once, all uids together. */
  maxConnections: number;
  /** Connections open at once per uid (every uid but 0). */
  maxConnectionsPerUid: number;
  /** Connections open at once for uid 0 (0: no per-uid cap; maxConnections still applies). */
  maxConnectionsRoot: number;
  /** Bytes held for incomplete frames, all uids together. */
  maxPartialBytes: number;
  /**
   * Bytes held for one uid's incomplete frames (a value below maxFrame also lowers the largest frame that uid can
   * send; while completed frames not yet taken reach it, the uid's connections are not read).
   */
  maxPartialBytesPerUid: number;
  /** How long one frame may stay incomplete after its first byte arrived (ms). */
  frameTimeoutMs: number;
  /** Descriptors received and not yet taken by the main thread, all uids together. */
  maxHeldFds: number;
  /** Descriptors received and not yet taken by the main thread, per uid. */
  maxHeldFdsPerUid: number;
  /** Requests of one uid awaiting a reply before its connections are no longer read. */
  maxInFlightPerUid: number;
  /** Bytes of replies queued for one uid's connections (unread by the peer) before they are no longer read. */
  maxQueuedBytesPerUid: number;
  /** Descriptors kept free below RLIMIT_NOFILE: new connections are refused inside this margin (0: none). */
  fdReserve: number;
}

export const DEFAULT_MAX_CONNECTIONS = 1024;
export const DEFAULT_MAX_CONNECTIONS_PER_UID = 64;
/** uid 0: no per-uid cap by default. */
export const DEFAULT_MAX_CONNECTIONS_ROOT = 0;
export const DEFAULT_MAX_PARTIAL_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_PARTIAL_BYTES_PER_UID = 8 * 1024 * 1024;
export const DEFAULT_FRAME_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_HELD_FDS = 4096;
export const DEFAULT_MAX_HELD_FDS_PER_UID = 512;
export const DEFAULT_MAX_IN_FLIGHT_PER_UID = 256;
export const DEFAULT_MAX_QUEUED_BYTES_PER_UID = 16 * 1024 * 1024;
export const DEFAULT_FD_RESERVE = 64;

/** Completed frames at least this large count in transitBytes until the main thread takes them. */
export const TRANSIT_MIN_BYTES = 64 * 1024;
/** How long a connection closed for a limit may take to receive its error frame. */
export const LIMIT_CLOSE_FLUSH_MS = 250;

export const DEFAULT_LIMITS: Readonly<IpcLimits> = Object.freeze({
  maxConnections: DEFAULT_MAX_CONNECTIONS,
  maxConnectionsPerUid: DEFAULT_MAX_CONNECTIONS_PER_UID,
  maxConnectionsRoot: DEFAULT_MAX_CONNECTIONS_ROOT,
  maxPartialBytes: DEFAULT_MAX_PARTIAL_BYTES,
  maxPartialBytesPerUid: DEFAULT_MAX_PARTIAL_BYTES_PER_UID,
  frameTimeoutMs: DEFAULT_FRAME_TIMEOUT_MS,
  maxHeldFds: DEFAULT_MAX_HELD_FDS,
  maxHeldFdsPerUid: DEFAULT_MAX_HELD_FDS_PER_UID,
  maxInFlightPerUid: DEFAULT_MAX_IN_FLIGHT_PER_UID,
  maxQueuedBytesPerUid: DEFAULT_MAX_QUEUED_BYTES_PER_UID,
  fdReserve: DEFAULT_FD_RESERVE,
});

/** Limits that may be 0 (with the meaning given in IpcLimits); all others must be at least 1. */
const ZERO_ALLOWED: ReadonlySet<keyof IpcLimits> = new Set(['maxConnectionsRoot', 'fdReserve']);
const LIMIT_KEYS = Object.keys(DEFAULT_LIMITS) as Array<keyof IpcLimits>;

/** The defaults overridden by the limits set in `opts` (undefined: default). Throws RangeError on a bad value. */
export function resolveLimits(opts: Partial<IpcLimits>): IpcLimits {
  const out = { ...DEFAULT_LIMITS };
  for (const k of LIMIT_KEYS) {
    const v = opts[k];
    if (v === undefined) continue;
    const min = ZERO_ALLOWED.has(k) ? 0 : 1;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      throw new RangeError(`IPC limit ${k} must be an integer >= ${min}, got ${String(v)}`);
    }
    out[k] = v;
  }
  return out;
}

/** Why a connection was refused or closed by a limit (the keys of IpcLimitStats.refusals). */
export const LIMIT_REASONS = [
  /** maxConnections reached (refused at accept). */
  'connections',
  /** maxConnectionsPerUid / maxConnectionsRoot reached (refused at accept). */
  'connectionsPerUid',
  /** Fewer than fdReserve descriptors left (refused at accept, or closed when descriptors arrived). */
  'descriptorReserve',
  /** accept4 failed with EMFILE / ENFILE; the connection was taken with the spare descriptor and refused. */
  'descriptorsExhausted',
  /** maxPartialBytes reached. */
  'partialBytes',
  /** maxPartialBytesPerUid reached. */
  'partialBytesPerUid',
  /** maxHeldFds reached. */
  'heldFds',
  /** maxHeldFdsPerUid reached. */
  'heldFdsPerUid',
  /** A frame stayed incomplete longer than frameTimeoutMs. */
  'frameTimeout',
  /** A frame buffer could not be allocated. */
  'memory',
] as const;
export type IpcLimitReason = (typeof LIMIT_REASONS)[number];

/** The error code a client receives for each reason. */
export function limitErrorCode(reason: IpcLimitReason): LimitErrorCodeValue {
  switch (reason) {
    case 'connections':
    case 'connectionsPerUid':
      return LimitErrorCode.TooManyConnections;
    case 'descriptorReserve':
    case 'descriptorsExhausted':
      return LimitErrorCode.DescriptorsExhausted;
    case 'frameTimeout':
      return LimitErrorCode.FrameTimeout;
    case 'partialBytes':
    case 'partialBytesPerUid':
    case 'heldFds':
    case 'heldFdsPerUid':
    case 'memory':
      return LimitErrorCode.LimitExceeded;
  }
}

/** What one uid holds now. */
export interface IpcUidUsage {
  uid: number;
  connections: number;
  /** Buffer bytes of incomplete frames. */
  partialBytes: number;
  /** Bytes of completed frames (TRANSIT_MIN_BYTES or more) the main thread has not taken yet. */
  transitBytes: number;
  /** Descriptors in incomplete frames plus those in completed frames not taken yet. */
  heldFds: number;
  /** Requests awaiting their reply. */
  inFlight: number;
  /** Bytes of replies queued, not yet read by the peer. */
  queuedBytes: number;
}

/** A snapshot of the IPC worker's accounting (IpcServer.stats()). */
export interface IpcLimitStats {
  limits: IpcLimits;
  /** All uids together (uid: -1). */
  total: IpcUidUsage;
  /** Uids holding anything, by uid. */
  uids: IpcUidUsage[];
  /** Refusals and limit closes since start, by reason. */
  refusals: Record<IpcLimitReason, number>;
  /** Refusal events not reported to onRefused (rate limited), since start. */
  refusalsUnreported: number;
  /** The descriptor table as last sampled (estimate: sample plus descriptors the worker opened since). */
  fds: { open: number; limit: number; reserve: number; sampledAt: number };
}

/** A connection refused at accept (IpcServerOptions.onRefused; rate limited). */
export interface IpcRefusal {
  /** The peer, when its credentials could be read. */
  cred: { pid: number; uid: number; gid: number } | null;
  code: string;
  reason: IpcLimitReason;
  message: string;
  /** Refusals since the previous report that were counted but not reported. */
  unreported: number;
}
