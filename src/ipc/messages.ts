/**
 * The homid message catalogue: every request type with its zod schema, the schema of its successful result,
 * and how many file descriptors it carries each way. Both ends validate every message against these schemas
 * before using it.
 *
 * To add a request type: define `XRequest` (with `...requestBase` and a literal `type`) and `XResult`, add an
 * entry to `catalogue`, and add `XRequest` to the list in `RequestSchema`. To add a field, add it to the
 * schema: requests drop unknown fields (so a newer client's extra fields are ignored, never trusted), results
 * are loose objects (a client keeps fields it does not know yet).
 *
 * Envelope: every request has a numeric `id` (non-negative safe integer), echoed by its one response.
 * Responses are `{id, ok: true, ...result}` or `{id, ok: false, error: {code, message}}`; `id` is null when the
 * server could not read one from the frame.
 */
import { z } from 'zod';
import { PROTOCOL_VERSION } from './frame.js';
import { LimitErrorCode } from './limits.js';

export { PROTOCOL_VERSION };

/** Error codes of the IPC layer itself (handlers may use their own codes as well: any non-empty string). */
export const IpcErrorCode = {
  /** Frame header invalid: reserved flag bits set. */
  BadFrame: 'BAD_FRAME',
  /** Frame length field beyond the limit or below the header (the connection is closed after this reply). */
  FrameTooLarge: 'FRAME_TOO_LARGE',
  /** Frame version byte is not a supported protocol version. */
  UnsupportedVersion: 'UNSUPPORTED_VERSION',
  /** Payload is not UTF-8 JSON. */
  BadJson: 'BAD_JSON',
  /** `type` names no known request. */
  UnknownType: 'UNKNOWN_TYPE',
  /** Payload fails its request schema. */
  InvalidRequest: 'INVALID_REQUEST',
  /** Descriptors attached that the request does not take (or the fds flag without descriptors, or too many). */
  UnexpectedFds: 'UNEXPECTED_FDS',
  /** The request needs descriptors and has none (or too few). */
  MissingFds: 'MISSING_FDS',
  /** The handler failed or produced an invalid response. */
  Internal: 'INTERNAL',
  /** Client side: no response within the timeout. */
  Timeout: 'TIMEOUT',
  /** Client side: the connection closed before the response came. */
  ConnectionClosed: 'CONNECTION_CLOSED',
  /** Client side: the server's response failed its schema. */
  BadResponse: 'BAD_RESPONSE',
  /** Client side: could not connect. */
  ConnectFailed: 'CONNECT_FAILED',
  /** Connection refused at accept: maxConnections, or the uid's maxConnectionsPerUid / maxConnectionsRoot, reached. */
  TooManyConnections: LimitErrorCode.TooManyConnections,
  /** Connection refused (or closed as descriptors arrived): homid is within fdReserve of its descriptor limit. */
  DescriptorsExhausted: LimitErrorCode.DescriptorsExhausted,
  /** Connection closed: its uid (or all clients together) holds too many partial-frame bytes or descriptors. */
  LimitExceeded: LimitErrorCode.LimitExceeded,
  /** Connection closed: a frame stayed incomplete longer than frameTimeoutMs. */
  FrameTimeout: LimitErrorCode.FrameTimeout,
} as const;
export type IpcErrorCodeValue = (typeof IpcErrorCode)[keyof typeof IpcErrorCode];

/** Error codes after which the server closes the connection (sent with id null). */
export const CLOSING_ERROR_CODES: ReadonlySet<string> = new Set([
  IpcErrorCode.FrameTooLarge,
  IpcErrorCode.TooManyConnections,
  IpcErrorCode.DescriptorsExhausted,
  IpcErrorCode.LimitExceeded,
  IpcErrorCode.FrameTimeout,
]);

const MAX_STRING = 4096;

/** Fields every request has. */
export const requestBase = {
  id: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
};

// ---- requests ----

export const HelloRequest = z.object({
  ...requestBase,
  type: z.literal('hello'),
  /** The protocol version the client speaks. */
  version: z.number().int().positive(),
  /** Free-form client name, for logs. */
  client: z.string().max(256).optional(),
});

export const ListDevicesRequest = z.object({
  ...requestBase,
  type: z.literal('listDevices'),
});

export const OpenQueuePairRequest = z.object({
  ...requestBase,
  type: z.literal('openQueuePair'),
  /** Device URI or name as listed by listDevices. */
  device: z.string().min(1).max(MAX_STRING),
  /** Namespace id (1-based). */
  nsid: z.number().int().min(1).max(0xffff_fffe),
  /** Entries per queue. */
  depth: z.number().int().min(2).max(65536),
  /** Queue pairs to open. */
  count: z.number().int().min(1).max(1024),
  /** raw: the client drives the queues itself; mediated: homid checks each command. */
  mode: z.enum(['raw', 'mediated']),
  /** Write access wanted (default false: read-only). */
  write: z.boolean().optional(),
  /** Bytes of data buffer with the queue pair (homid's default when absent). */
  dataBytes: z.number().int().min(4096).max(1 << 30).optional(),
});

export const CloseQueuePairRequest = z.object({
  ...requestBase,
  type: z.literal('closeQueuePair'),
  grantId: z.string().min(1).max(256),
});

/** The file to resolve travels as one open descriptor (SCM_RIGHTS); homid never trusts a path. */
export const ResolveExtentsRequest = z.object({
  ...requestBase,
  type: z.literal('resolveExtents'),
  /** Flush dirty data first so that extents are allocated (FIEMAP_FLAG_SYNC). */
  sync: z.boolean().optional(),
  /** Device whose extent source maps the file (default: the first live device with one). */
  device: z.string().min(1).max(MAX_STRING).optional(),
});

export const StatusRequest = z.object({
  ...requestBase,
  type: z.literal('status'),
});

// ---- results (the fields of a successful response besides id and ok) ----

export const HelloResult = z.looseObject({
  /** The protocol version the server speaks. */
  version: z.number().int().positive(),
  /** Server name and version. */
  server: z.string(),
});

export const DeviceInfo = z.looseObject({
  /** What OpenQueuePair's `device` takes. */
  device: z.string(),
  model: z.string().optional(),
  serial: z.string().optional(),
  namespaces: z.array(z.looseObject({ nsid: z.number().int(), size: z.number().nonnegative().optional() })).optional(),
});

export const ListDevicesResult = z.looseObject({
  devices: z.array(DeviceInfo),
});

export const OpenQueuePairResult = z.looseObject({
  /** Names the grant in closeQueuePair; the grant is also released when the connection closes. */
  grantId: z.string(),
});

export const CloseQueuePairResult = z.looseObject({});

export const Extent = z.looseObject({
  logical: z.number().nonnegative(),
  physical: z.number().nonnegative(),
  length: z.number().nonnegative(),
  flags: z.array(z.string()).optional(),
});

export const ResolveExtentsResult = z.looseObject({
  size: z.number().nonnegative(),
  extents: z.array(Extent),
});

export const StatusResult = z.looseObject({});

/** How many descriptors a message may carry. */
export interface FdCount {
  min: number;
  max: number;
}
const NO_FDS: FdCount = { min: 0, max: 0 };

/** Per request type: schemas and descriptor counts (request: client to server; result: server to client). */
export const catalogue = {
  hello: { request: HelloRequest, result: HelloResult, requestFds: NO_FDS, resultFds: NO_FDS },
  listDevices: { request: ListDevicesRequest, result: ListDevicesResult, requestFds: NO_FDS, resultFds: NO_FDS },
  openQueuePair: {
    request: OpenQueuePairRequest,
    result: OpenQueuePairResult,
    requestFds: NO_FDS,
    /** Queue and doorbell memory the client maps. */
    resultFds: { min: 0, max: 64 },
  },
  closeQueuePair: { request: CloseQueuePairRequest, result: CloseQueuePairResult, requestFds: NO_FDS, resultFds: NO_FDS },
  resolveExtents: {
    request: ResolveExtentsRequest,
    result: ResolveExtentsResult,
    requestFds: { min: 1, max: 1 },
    /** The read-only shared extent table (homid). */
    resultFds: { min: 0, max: 1 },
  },
  status: { request: StatusRequest, result: StatusResult, requestFds: NO_FDS, resultFds: NO_FDS },
} as const;

export const RequestSchema = z.discriminatedUnion('type', [
  HelloRequest,
  ListDevicesRequest,
  OpenQueuePairRequest,
  CloseQueuePairRequest,
  ResolveExtentsRequest,
  StatusRequest,
]);

export type Request = z.infer<typeof RequestSchema>;
export type RequestType = keyof typeof catalogue;
export type RequestOf<T extends RequestType> = z.infer<(typeof catalogue)[T]['request']>;
export type ResultOf<T extends RequestType> = z.infer<(typeof catalogue)[T]['result']>;
/** A request as a client writes it: the client assigns `id`. */
export type RequestInput<T extends RequestType = RequestType> = T extends RequestType
  ? Omit<RequestOf<T>, 'id'> & { id?: number }
  : never;

export const IpcErrorBody = z.looseObject({
  code: z.string().min(1).max(256),
  message: z.string().max(64 * 1024),
});
export type IpcErrorBody = z.infer<typeof IpcErrorBody>;

export const ErrorResponse = z.object({
  id: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).nullable(),
  ok: z.literal(false),
  error: IpcErrorBody,
});
export type ErrorResponse = z.infer<typeof ErrorResponse>;

export type OkResponse<T extends RequestType> = ResultOf<T> & { id: number; ok: true };
export type ResponseOf<T extends RequestType> = OkResponse<T> | ErrorResponse;
/** What a handler returns as the response (the server adds `id`). */
export type ResponseBody<T extends RequestType = RequestType> =
  | (ResultOf<T> & { ok: true })
  | { ok: false; error: IpcErrorBody };

const responseSchemas = new Map<string, z.ZodType>();
/** The schema of a response to a request of type `type` (success or error). */
export function responseSchema(type: RequestType): z.ZodType {
  let s = responseSchemas.get(type);
  if (s === undefined) {
    const ok = catalogue[type].result.extend({ id: requestBase.id, ok: z.literal(true) });
    s = z.union([ok, ErrorResponse]);
    responseSchemas.set(type, s);
  }
  return s;
}

/** Is `type` a request type in the catalogue? */
export function isRequestType(type: unknown): type is RequestType {
  return typeof type === 'string' && Object.prototype.hasOwnProperty.call(catalogue, type);
}

/** The request id in an unvalidated payload, or null when it has no valid one. */
export function peekId(value: unknown): number | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null;
  const id = (value as { id?: unknown }).id;
  return typeof id === 'number' && Number.isSafeInteger(id) && id >= 0 ? id : null;
}

/** A short, bounded description of a schema failure. */
export function describeIssues(error: z.ZodError): string {
  const parts = error.issues.slice(0, 5).map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.message}`);
  if (error.issues.length > 5) parts.push(`and ${error.issues.length - 5} more`);
  const s = parts.join('; ');
  return s.length > 1000 ? `${s.slice(0, 1000)}…` : s;
}

export type ValidatedRequest =
  | { ok: true; request: Request }
  | { ok: false; id: number | null; code: IpcErrorCodeValue; message: string };

/** Validate a decoded payload as a request of the catalogue. */
export function validateRequest(value: unknown): ValidatedRequest {
  const id = peekId(value);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, id, code: IpcErrorCode.InvalidRequest, message: 'a request must be a JSON object' };
  }
  const type = (value as { type?: unknown }).type;
  if (!isRequestType(type)) {
    const shown = typeof type === 'string' ? JSON.stringify(type.slice(0, 64)) : typeof type;
    return { ok: false, id, code: IpcErrorCode.UnknownType, message: `unknown request type ${shown}` };
  }
  const r = catalogue[type].request.safeParse(value);
  if (!r.success) {
    return { ok: false, id, code: IpcErrorCode.InvalidRequest, message: `invalid ${type} request: ${describeIssues(r.error)}` };
  }
  return { ok: true, request: r.data as Request };
}

/** An error response body. */
export function errorBody(code: string, message: string): { ok: false; error: IpcErrorBody } {
  return { ok: false, error: { code, message } };
}
