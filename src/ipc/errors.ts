/**
 * Every error code that travels on homid's wire, and IpcError.
 *
 * One style: every code is kebab-case ASCII (`frame-too-large`, `budget-client`). The codes come in two tables
 * that never share a code (test/ipc/codes.test.ts checks both properties):
 *
 * - IpcErrorCode, the protocol: the frame, the message catalogue or the connection failed, so the request never
 *   reached homid's logic (or its answer never reached the client). Sent by the IPC server (with id null and a
 *   closed connection for CLOSING_ERROR_CODES), or raised by the IPC client itself (timeout, connection-closed,
 *   bad-response, connect-failed) without anything on the wire.
 * - HomidErrorCode, the service: homid understood a well-formed request and refused it; the message says what
 *   to change (a smaller depth, another mode, a descriptor that allows reads...).
 *
 * An error response is `{id, ok: false, error: {code, message}}`. Readers treat `code` as an open set (a code
 * this client does not know is still an error with a message); writers use only the codes below. The client
 * library adds codes of its own for failures that happen in the client (client/index.ts ClientErrorCode), in
 * the same style and disjoint from these.
 */

/** The error codes of limit refusals (also in IpcErrorCode; in limits.ts so that the I/O worker needs no schemas). */
import { LimitErrorCode } from './limits.js';

/** Protocol error codes (the IPC layer). */
export const IpcErrorCode = {
  /** Frame header invalid: reserved flag bits set. */
  BadFrame: 'bad-frame',
  /** Frame length field beyond the limit or below the header (the connection is closed after this reply). */
  FrameTooLarge: 'frame-too-large',
  /** Frame version byte (or hello's version) is not a supported protocol version. */
  UnsupportedVersion: 'unsupported-version',
  /** Payload is not UTF-8 JSON. */
  BadJson: 'bad-json',
  /** `type` names no known request. */
  UnknownType: 'unknown-type',
  /** Payload fails its request schema. */
  InvalidRequest: 'invalid-request',
  /** Descriptors attached that the request does not take (or the fds flag without descriptors, or too many). */
  UnexpectedFds: 'unexpected-fds',
  /** The request needs descriptors and has none (or too few). */
  MissingFds: 'missing-fds',
  /** The handler failed or produced an invalid response. */
  Internal: 'internal',
  /** Client side: no response within the timeout. */
  Timeout: 'timeout',
  /** Client side: the connection closed before the response came. */
  ConnectionClosed: 'connection-closed',
  /** Client side: the server's response failed its schema. */
  BadResponse: 'bad-response',
  /** Client side: could not connect. */
  ConnectFailed: 'connect-failed',
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
export const CLOSING_ERROR_CODES: ReadonlySet<string> = new Set<IpcErrorCodeValue>([
  IpcErrorCode.FrameTooLarge,
  IpcErrorCode.TooManyConnections,
  IpcErrorCode.DescriptorsExhausted,
  IpcErrorCode.LimitExceeded,
  IpcErrorCode.FrameTimeout,
]);

/** homid's refusals of well-formed requests (HomidError in src/daemon/errors.ts carries one). */
export const HomidErrorCode = {
  /** The client's class holds its whole queue-pair budget. */
  BudgetClass: 'budget-class',
  /** The client holds its per-client share of its class's budget. */
  BudgetClient: 'budget-client',
  /** The device has no free I/O queue pair. */
  DeviceQueues: 'device-queues',
  /** Depth outside 2..the class's max_depth or the controller's CAP.MQES + 1. */
  BadDepth: 'bad-depth',
  /** The uid may not hold raw queues. */
  RawDenied: 'raw-denied',
  /** The class (or the transport, for this uid) does not grant writes on mediated queues. */
  WriteDenied: 'write-denied',
  /** No device of that name. */
  NoDevice: 'no-device',
  /** The device failed to come up or was removed. */
  DeviceDown: 'device-down',
  /** The namespace is not active on the device. */
  BadNamespace: 'bad-namespace',
  /** The client holds no lease of that id. */
  NoLease: 'no-lease',
  /** A file must travel as an open descriptor. */
  NeedsFd: 'needs-fd',
  /** The file lies outside the device's extent_root. */
  OutsideRoot: 'outside-root',
  /** The descriptor is not a regular file. */
  NotAFile: 'not-a-file',
  /** No extent source for the device (or none configured anywhere). */
  ExtentSource: 'extent-source',
  /** Reading the device's metadata failed. */
  DeviceIo: 'device-io',
  /** The descriptor grants neither read nor write access (O_PATH, or an access mode that allows neither). */
  FdAccess: 'fd-access',
  /** FIEMAP: the file does not live on the namespace of the device (another file system or block device). */
  WrongDevice: 'wrong-device',
  /** The file's extents run outside the namespace, or are not aligned to its LBA size. */
  ExtentRange: 'extent-range',
  /** The client (or its uid) holds as many file grants as [limits] allows. */
  LimitFileGrants: 'limit-file-grants',
  /** The session closed while the request ran. */
  Closed: 'closed',
  /** No free hugepages for queue memory (uio). */
  NoHugepages: 'no-hugepages',
  /** No memory for queues or buffers. */
  NoMemory: 'no-memory',
  /** The device cannot give a GPU a queue pair (its transport exports no memory another process can map). */
  GpuUnsupported: 'gpu-unsupported',
  /** SR-IOV: the physical function has no room for the VF asked for (flexible VQ / VI resources, or no free VF). */
  ResourcesExhausted: 'resources-exhausted',
  /** SR-IOV: no physical function of that name is configured, or it did not come up. */
  NoSriov: 'no-sriov',
  /** SR-IOV: VFIO is missing (vfio-pci not loaded, no IOMMU), so a VF cannot be handed out. */
  NoVfio: 'no-vfio',
  /** ublk devices are added and removed by root only. */
  UblkDenied: 'ublk-denied',
  /** The kernel's ublk driver is missing or refused (the message says what: no module, not root, busy, ...). */
  Ublk: 'ublk',
  /** A request homid cannot serve as asked (the message says what to change). */
  BadRequest: 'bad-request',
  /** The peer's identity or class cannot be established (the connection is closed: fail closed). */
  Identity: 'identity',
  /** The device has no device memory configured (config device_memory), or its transport cannot reach it. */
  NoDeviceMemory: 'no-device-memory',
  /** The uid may not use the device's device memory (config device_memory_users). */
  DeviceMemoryDenied: 'device-memory-denied',
  /** The device's device memory is lent to another client (it serves one uid at a time). */
  DeviceMemoryBusy: 'device-memory-busy',
  /** The client's uid holds as many bytes of device memory as device_memory_per_client allows. */
  LimitDeviceMemory: 'limit-device-memory',
} as const;
export type HomidErrorCode = (typeof HomidErrorCode)[keyof typeof HomidErrorCode];

/** Any code a writer may put on the wire. */
export type WireErrorCode = IpcErrorCodeValue | HomidErrorCode;

/**
 * IpcError: a failure with a protocol error code. Handlers throw it to answer `{ok: false, error: {code,
 * message}}` with their own code (any other exception becomes `internal`); clients reject with it on timeouts,
 * lost connections, invalid responses, and (IpcClient.call) error responses.
 */
export class IpcError extends Error {
  readonly code: string;
  /** The request id concerned, when there is one. */
  readonly requestId: number | null;
  constructor(code: string, message: string, requestId: number | null = null) {
    super(message);
    this.name = 'IpcError';
    this.code = code;
    this.requestId = requestId;
  }
}
