/**
 * The homid message catalogue: every request type with its zod schema, the schema of its successful result,
 * and how many file descriptors it carries each way. Both ends validate every message against these schemas
 * (the server its own responses too, so that a handler cannot send what the catalogue does not say).
 *
 * To add a request type: define `XRequest` (with `...requestBase` and a literal `type`) and `XResult`, add an
 * entry to `catalogue`, and add `XRequest` to the list in `RequestSchema`. To add a field, add it to the
 * schema. Requests drop unknown fields (a client's extra fields are ignored, never trusted). Results are exact
 * (strict objects, every field declared, unknown fields refused): a result means the same thing at both ends
 * of one protocol version, and a client never has to cast one. Changing a result is a protocol change.
 *
 * The layouts inside messages live beside this file: raw-grant.ts and mediated-grant.ts (openQueuePair's
 * grants), extent-table.ts (resolveExtents' shared table), mediated-ring.ts (the ring a mediated grant maps).
 *
 * Envelope: every request has a numeric `id` (non-negative safe integer), echoed by its one response.
 * Responses are `{id, ok: true, ...result}` or `{id, ok: false, error: {code, message}}`; `id` is null when the
 * server could not read one from the frame. Error codes: errors.ts.
 *
 * The IPC server and client are generic over a Catalogue (tests of the IPC layer bring their own); homid's is
 * `catalogue` below, their default.
 */
import { z } from 'zod';
import { PROTOCOL_VERSION } from './frame.js';
import { IpcErrorCode, type IpcErrorCodeValue } from './errors.js';
import { EXTENT_FLAG_BITS } from './extent-table.js';
import { LIMIT_REASONS, type IpcLimitStats } from './limits.js';
import { MediatedQueueGrant } from './mediated-grant.js';
import { RawQueueGrant } from './raw-grant.js';

export { PROTOCOL_VERSION };

/** Where homid listens unless configured otherwise ([socket] in homid.toml, HOMID_SOCKET for clients). */
export const DEFAULT_SOCKET = '/run/homi/homid.sock';

const MAX_STRING = 4096;

/**
 * The kinds of lease a client may ask for (openQueuePair `mode`): raw, the client drives the queues itself;
 * mediated, homid checks each command; gpu, a raw queue pair handed to a GPU (kernels build SQEs and store
 * doorbells; homid keeps a software controller awake for it).
 */
export const LEASE_MODES = ['raw', 'mediated', 'gpu'] as const;
export const LeaseMode = z.enum(LEASE_MODES);
export type LeaseMode = z.infer<typeof LeaseMode>;

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
  /** raw: the client drives the queues itself; mediated: homid checks each command; gpu: raw, driven by a GPU. */
  mode: LeaseMode,
  /** Write access wanted (default false: read-only). */
  write: z.boolean().optional(),
  /** Bytes of data buffer with the queue pair (homid's default when absent). */
  dataBytes: z
    .number()
    .int()
    .min(4096)
    .max(1 << 30)
    .optional(),
  /**
   * Mediated, count 1: the data buffer is the dma-buf sent as the request's one descriptor (homid checks that it is
   * a dma-buf of at least dataBytes, imports it for the device, and keeps it until the lease ends).
   */
  dataDmaBuf: z.literal(true).optional(),
  /**
   * Mediated: where homid puts the data buffer: 'host' memory (the default) or the device's configured 'device'
   * memory (a peer PCI function's BAR: the controller reaches it peer to peer).
   */
  dataMemory: z.enum(['host', 'device']).optional(),
});

export const CloseQueuePairRequest = z.object({
  ...requestBase,
  type: z.literal('closeQueuePair'),
  grantId: z.string().min(1).max(256),
});

/** An SR-IOV virtual function with its flexible resources and namespaces, driven by the client through VFIO. */
export const OpenVfRequest = z.object({
  ...requestBase,
  type: z.literal('openVf'),
  /** The physical function's name in homid's [[sriov]] configuration. */
  pf: z.string().min(1).max(MAX_STRING),
  /** Flexible queue resources (the VF's admin queue pair counts: 2 gives one I/O queue pair). */
  vq: z.number().int().min(2).max(0xffff),
  /** Flexible interrupt resources. */
  vi: z.number().int().min(1).max(0xffff),
  /** Namespaces to attach to the VF's controller (each shared with the PF). */
  nsids: z.array(z.number().int().min(1).max(0xffff_fffe)).max(64),
});

export const CloseVfRequest = z.object({
  ...requestBase,
  type: z.literal('closeVf'),
  leaseId: z.string().min(1).max(256),
});

export const SriovStatusRequest = z.object({
  ...requestBase,
  type: z.literal('sriovStatus'),
});

export const UblkListRequest = z.object({
  ...requestBase,
  type: z.literal('ublkList'),
});

/** Serve an LBA range of a namespace to the kernel as /dev/ublkb<id> (root only). */
export const UblkAddRequest = z.object({
  ...requestBase,
  type: z.literal('ublkAdd'),
  device: z.string().min(1).max(MAX_STRING),
  nsid: z.number().int().min(1).max(0xffff_fffe).optional(),
  ublkId: z
    .number()
    .int()
    .min(0)
    .max((1 << 20) - 1),
  start: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  count: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  queues: z.number().int().min(1).max(64).optional(),
  depth: z.number().int().min(1).max(4096).optional(),
  maxIoKib: z.number().int().min(4).max(32768).optional(),
});

/** Remove /dev/ublkb<id> (root only); refused while mounted unless `force`. */
export const UblkDelRequest = z.object({
  ...requestBase,
  type: z.literal('ublkDel'),
  ublkId: z
    .number()
    .int()
    .min(0)
    .max((1 << 20) - 1),
  force: z.boolean().optional(),
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

/** Give a file grant back (its fileId from resolveExtents): its LBAs leave the client's mediated grants. */
export const ReleaseFileRequest = z.object({
  ...requestBase,
  type: z.literal('releaseFile'),
  fileId: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
});

export const StatusRequest = z.object({
  ...requestBase,
  type: z.literal('status'),
});

// ---- results (the fields of a successful response besides id and ok) ----

const int = z.number().int();
const count = z.number().int().nonnegative();

export const HelloResult = z.strictObject({
  /** The protocol version the server speaks. */
  version: z.number().int().positive(),
  /** Server name and version. */
  server: z.string(),
  /** The client's session id (status lists sessions by it). */
  session: count,
  /** The client's class ([[class]] in homid.toml). */
  class: z.string(),
  /** Whether this client may hold raw queues. */
  raw: z.boolean(),
});

/** Device states (daemon/registry.ts). */
export const DeviceState = z.enum(['starting', 'live', 'failed', 'closed']);
/** Where a device's file extents come from ([[device]] extents in homid.toml). */
export const ExtentSourceKind = z.enum(['fiemap', 'decoder:ext4', 'decoder:xfs', 'none']);

export const DeviceInfo = z.strictObject({
  /** What OpenQueuePair's `device` takes. */
  device: z.string(),
  uri: z.string(),
  state: DeviceState,
  /** Why the device is not live, or null. */
  error: z.string().nullable(),
  model: z.string().optional(),
  serial: z.string().optional(),
  namespaces: z.array(z.strictObject({ nsid: count, size: count, blockSize: count, blocks: count })),
  maxQueuePairs: count,
  queuePairsInUse: count,
  extents: ExtentSourceKind,
});
export type DeviceInfo = z.infer<typeof DeviceInfo>;

export const ListDevicesResult = z.strictObject({
  devices: z.array(DeviceInfo),
});

/** Fields of every lease in an openQueuePair result: `fdBase`, `fdCount` slice the response's descriptors. */
const leaseGrantBase = {
  /** Names the lease in closeQueuePair. */
  grantId: z.string(),
  /** The hardware queue id. */
  qid: int.min(0).max(0xffff),
  fdBase: count,
  fdCount: count,
};
export const RawLeaseGrant = z.strictObject({ ...leaseGrantBase, mode: z.literal('raw'), grant: RawQueueGrant });
export const MediatedLeaseGrant = z.strictObject({ ...leaseGrantBase, mode: z.literal('mediated'), grant: MediatedQueueGrant });
/** The controller behind a GPU lease: the embedded software controller, or PCIe hardware. */
export const GpuDeviceKind = z.enum(['emu', 'pcie']);
export type GpuDeviceKind = z.infer<typeof GpuDeviceKind>;
/**
 * A GPU lease: the raw grant (the same windows and descriptors), plus what the GPU side needs to know about the
 * controller: `busyPoll`, whether homid holds a controller that sleeps when idle awake for the lease's whole life
 * (a GPU only stores doorbells, it cannot wake a thread); `device`, which kind of controller it is.
 */
export const GpuLeaseGrant = z.strictObject({ ...leaseGrantBase, mode: z.literal('gpu'), grant: RawQueueGrant, busyPoll: z.boolean(), device: GpuDeviceKind });
/** One lease of an openQueuePair result, by mode (a new lease kind is a new member). */
export const LeaseGrant = z.discriminatedUnion('mode', [RawLeaseGrant, MediatedLeaseGrant, GpuLeaseGrant]);
export type LeaseGrant = z.infer<typeof LeaseGrant>;

export const OpenQueuePairResult = z.strictObject({
  /** The first lease's grantId (`grants[0].grantId`). */
  grantId: z.string(),
  /** One per queue pair asked for. The grant is also released when the connection closes. */
  grants: z.array(LeaseGrant).min(1),
});

export const CloseQueuePairResult = z.strictObject({});
export const ReleaseFileResult = z.strictObject({});

/**
 * A VF lease: the VF's PCI address and IOMMU group, and three descriptors in this order: the VFIO container
 * (the group attached, the type1 IOMMU set: the client maps its own memory with VFIO_IOMMU_MAP_DMA), the
 * group, and the device. Released with closeVf or when the connection closes: homid then takes the secondary
 * controller offline, unbinds and resets the VF, detaches its namespaces and returns its resources.
 */
export const OpenVfResult = z.strictObject({
  leaseId: z.string(),
  address: z.string(),
  iommuGroup: count,
  /** The secondary controller's id (the VF controller's CNTLID) and the VF number (1-based). */
  scid: count,
  vfNumber: count,
  vq: count,
  vi: count,
  nsids: z.array(count),
});
export const CloseVfResult = z.strictObject({});

export const SecondaryControllerStatus = z.strictObject({
  scid: count,
  vfNumber: count,
  online: z.boolean(),
  vq: count,
  vi: count,
  /** The VF's PCI address while it is enabled, its driver. */
  address: z.string().nullable(),
  driver: z.string().nullable(),
  /** The session holding it (only what the viewer may see: root sees every holder). */
  holder: z.strictObject({ client: count, pid: count, uid: count }).nullable(),
  /** Namespaces attached (of the PF's). */
  nsids: z.array(count),
});
export const SriovPfStatusWire = z.strictObject({
  name: z.string(),
  pf: z.string(),
  admin: z.string(),
  error: z.string().nullable(),
  totalVfs: count,
  numVfs: count,
  vqFlexible: count,
  vqAssigned: count,
  viFlexible: count,
  viAssigned: count,
  vqMaxPerVf: count,
  viMaxPerVf: count,
  secondaries: z.array(SecondaryControllerStatus),
});
export const SriovStatusResult = z.strictObject({ pfs: z.array(SriovPfStatusWire) });
export type SriovStatusResult = z.infer<typeof SriovStatusResult>;

export const Extent = z.strictObject({
  logical: z.number().nonnegative(),
  physical: z.number().nonnegative(),
  length: z.number().nonnegative(),
  flags: z.array(z.enum(EXTENT_FLAG_BITS)),
});

export const ResolveExtentsResult = z.strictObject({
  /** Names the file grant. */
  fileId: count,
  /** The device whose namespace the extents address. */
  device: z.string(),
  size: z.number().nonnegative(),
  /** The extent table's generation when this answer was made. */
  generation: int,
  extents: z.array(Extent),
  /** Bytes of the shared extent table (the one descriptor of the response); map this many. */
  tableBytes: count,
});

// ---- status ----

/** A device as status shows it (Homid.listDevices). */
export const DeviceStatus = z.strictObject({
  name: z.string(),
  uri: z.string(),
  state: DeviceState,
  error: z.string().nullable(),
  model: z.string().nullable(),
  serial: z.string().nullable(),
  namespaces: z.array(z.strictObject({ nsid: count, blockSize: count, blocks: count })),
  maxQueuePairs: count,
  queuePairsInUse: count,
  extents: ExtentSourceKind,
});
export type DeviceStatus = z.infer<typeof DeviceStatus>;

/** A class's budgets and what its clients hold: all queue pairs (`queuePairs`, `held`), and GPU ones among them. */
export const ClassStatus = z.strictObject({ name: z.string(), queuePairs: count, perClient: count, held: count, gpuQueues: count, gpuHeld: count });

/** I/O counters of a queue homid drives: mediated (every command checked), or homid's own queue pair. */
export const MediatedIo = z.strictObject({ submitted: count, forwarded: count, denied: count, completed: count });
export const QueueIo = z.strictObject({ submitted: count, completed: count });

export const LeaseStatus = z.strictObject({
  lease: count,
  device: z.string(),
  qid: count,
  mode: LeaseMode,
  nsid: count,
  depth: count,
  /** Why the hardware queue is gone (a controller reset or removal), or null. */
  lost: z.string().nullable(),
  /** gpu leases only: whether the lease holds a controller that sleeps when idle awake (it busy-polls). */
  holdsAwake: z.boolean().optional(),
  /** What homid counted, or null where the client drives the queue itself (raw, in its own process). */
  io: z.union([MediatedIo, QueueIo]).nullable(),
});
export type LeaseStatus = z.infer<typeof LeaseStatus>;

export const ClientStatus = z.strictObject({
  id: count,
  pid: int,
  uid: int,
  class: z.string(),
  raw: z.boolean(),
  files: count,
  queuePairs: z.array(LeaseStatus),
});

export const ExtentEntryStatus = z.strictObject({
  device: z.string(),
  path: z.string(),
  ino: count,
  size: count,
  extents: count,
  /** The table's generation (-1: unreadable). */
  generation: int,
  holders: count,
  refreshes: count,
  error: z.string().nullable(),
});

export const HomidCounters = z.strictObject({
  reclaimedQueuePairs: count,
  deniedCommands: count,
  refusals: count,
  clientsServed: count,
  lostQueuePairs: count,
  /** SR-IOV virtual function leases taken back (closeVf or the client went away). */
  reclaimedVfs: count,
});

const IpcUidUsage = z.strictObject({
  uid: int,
  connections: count,
  partialBytes: count,
  transitBytes: count,
  heldFds: count,
  inFlight: count,
  queuedBytes: count,
});
/** The socket's accounting (limits.ts IpcLimitStats): root only. */
export const IpcStats = z.strictObject({
  limits: z.strictObject({
    maxConnections: count,
    maxConnectionsPerUid: count,
    maxConnectionsRoot: count,
    maxPartialBytes: count,
    maxPartialBytesPerUid: count,
    frameTimeoutMs: count,
    maxHeldFds: count,
    maxHeldFdsPerUid: count,
    maxInFlightPerUid: count,
    maxQueuedBytesPerUid: count,
    fdReserve: count,
  }),
  total: IpcUidUsage,
  uids: z.array(IpcUidUsage),
  refusals: z.record(z.enum(LIMIT_REASONS), count),
  refusalsUnreported: count,
  fds: z.strictObject({ open: count, limit: z.number(), reserve: count, sampledAt: z.number() }),
});
/** IpcStats is IpcLimitStats, field for field (a compile error here means one of them changed alone). */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const ipcStatsMatch: Same<z.infer<typeof IpcStats>, IpcLimitStats> = true;
void ipcStatsMatch;

/** A ublk block device homid serves to the kernel ([[ublk]]). */
export const UblkDeviceStatus = z.strictObject({
  /** The [[device]] it is on. */
  device: z.string(),
  devId: count,
  blockDevice: z.string(),
  state: z.enum(['starting', 'recovering', 'live', 'stopping', 'stopped', 'failed']),
  /** Taken over from a previous homid (user recovery). */
  recovered: z.boolean(),
  nsid: count,
  blockSize: count,
  rangeStart: count,
  rangeBlocks: count,
  depth: count,
  bufBytes: count,
  /** The NVMe queue pairs serving its ublk queues. */
  qids: z.array(count),
  io: z.strictObject({ reads: count, writes: count, flushes: count, discards: count, errors: count, refused: count, bytesRead: count, bytesWritten: count }),
  error: z.string().nullable(),
});
export type UblkDeviceStatus = z.infer<typeof UblkDeviceStatus>;
export const UblkListResult = z.strictObject({ devices: z.array(UblkDeviceStatus) });
export const UblkAddResult = z.strictObject({ device: UblkDeviceStatus });
export const UblkDelResult = z.strictObject({});

/**
 * homid's status as `viewer` may see it: root sees every session and published file and the socket's
 * accounting (`ipc`); any other client only its own session and the files it holds, and no `ipc`.
 */
export const StatusResult = z.strictObject({
  version: z.string(),
  pid: int,
  uptimeS: count,
  devices: z.array(DeviceStatus),
  classes: z.array(ClassStatus),
  clients: z.array(ClientStatus),
  extents: z.array(ExtentEntryStatus),
  counters: HomidCounters,
  /** ublk devices (absent when homid serves none). */
  ublk: z.array(UblkDeviceStatus).optional(),
  ipc: IpcStats.optional(),
});
export type StatusResult = z.infer<typeof StatusResult>;
/** The snapshot Homid.status() builds (the socket adds `ipc` for root). */
export type StatusSnapshot = Omit<StatusResult, 'ipc'>;

// ---- the catalogue ----

/** How many descriptors a message may carry. */
export interface FdCount {
  min: number;
  max: number;
}
const NO_FDS: FdCount = { min: 0, max: 0 };

/** One request type: its schemas and descriptor counts (request: client to server; result: server to client). */
export interface MessageSpec {
  /** An object schema with `id` (requestBase) and a literal `type`. */
  request: z.ZodType<{ id: number; type: string }>;
  result: z.ZodObject;
  requestFds: FdCount;
  resultFds: FdCount;
}
/** A message catalogue: request type -> its spec. */
export type Catalogue = { readonly [type: string]: MessageSpec };

/** homid's catalogue. */
export const catalogue = {
  hello: { request: HelloRequest, result: HelloResult, requestFds: NO_FDS, resultFds: NO_FDS },
  listDevices: { request: ListDevicesRequest, result: ListDevicesResult, requestFds: NO_FDS, resultFds: NO_FDS },
  openQueuePair: {
    request: OpenQueuePairRequest,
    result: OpenQueuePairResult,
    /** The dma-buf of a dataDmaBuf request. */
    requestFds: { min: 0, max: 1 },
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
  releaseFile: { request: ReleaseFileRequest, result: ReleaseFileResult, requestFds: NO_FDS, resultFds: NO_FDS },
  status: { request: StatusRequest, result: StatusResult, requestFds: NO_FDS, resultFds: NO_FDS },
  /** The VFIO container, group and device descriptors. */
  openVf: { request: OpenVfRequest, result: OpenVfResult, requestFds: NO_FDS, resultFds: { min: 3, max: 3 } },
  closeVf: { request: CloseVfRequest, result: CloseVfResult, requestFds: NO_FDS, resultFds: NO_FDS },
  sriovStatus: { request: SriovStatusRequest, result: SriovStatusResult, requestFds: NO_FDS, resultFds: NO_FDS },
  ublkList: { request: UblkListRequest, result: UblkListResult, requestFds: NO_FDS, resultFds: NO_FDS },
  ublkAdd: { request: UblkAddRequest, result: UblkAddResult, requestFds: NO_FDS, resultFds: NO_FDS },
  ublkDel: { request: UblkDelRequest, result: UblkDelResult, requestFds: NO_FDS, resultFds: NO_FDS },
} as const satisfies Catalogue;
export type HomidCatalogue = typeof catalogue;

export const RequestSchema = z.discriminatedUnion('type', [
  HelloRequest,
  ListDevicesRequest,
  OpenQueuePairRequest,
  CloseQueuePairRequest,
  ResolveExtentsRequest,
  ReleaseFileRequest,
  StatusRequest,
  OpenVfRequest,
  CloseVfRequest,
  SriovStatusRequest,
  UblkListRequest,
  UblkAddRequest,
  UblkDelRequest,
]);

export type RequestType<C extends Catalogue = HomidCatalogue> = keyof C & string;
export type RequestOf<T extends RequestType<C>, C extends Catalogue = HomidCatalogue> = z.infer<C[T]['request']>;
/** z.infer of a result schema; zod types an empty object as Record<string, never>, here it has no fields. */
type Fields<T> = [T] extends [Record<string, never>] ? Record<never, never> : T;
export type ResultOf<T extends RequestType<C>, C extends Catalogue = HomidCatalogue> = Fields<z.infer<C[T]['result']>>;
/** Any request of catalogue C (validated). */
export type AnyRequest<C extends Catalogue = HomidCatalogue> = { [T in RequestType<C>]: RequestOf<T, C> }[RequestType<C>];
/** Any request of homid's catalogue. */
export type Request = AnyRequest<HomidCatalogue>;
/** A request as a client writes it: the client assigns `id`. */
export type RequestInput<C extends Catalogue = HomidCatalogue, T extends RequestType<C> = RequestType<C>> = T extends RequestType<C> ? Omit<RequestOf<T, C>, 'id'> & { id?: number } : never;

export const IpcErrorBody = z.strictObject({
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

export type OkResponse<T extends RequestType<C>, C extends Catalogue = HomidCatalogue> = ResultOf<T, C> & { id: number; ok: true };
export type ResponseOf<T extends RequestType<C>, C extends Catalogue = HomidCatalogue> = OkResponse<T, C> | ErrorResponse;
/** What a handler returns as the response (the server adds `id`). */
export type ResponseBody<C extends Catalogue = HomidCatalogue> = { [T in RequestType<C>]: ResultOf<T, C> & { ok: true } }[RequestType<C>] | { ok: false; error: IpcErrorBody };

const responseSchemas = new WeakMap<Catalogue, Map<string, z.ZodType>>();
/** The schema of a response to a request of type `type` in `cat` (success or error). */
export function responseSchema(type: string, cat: Catalogue = catalogue): z.ZodType {
  let byType = responseSchemas.get(cat);
  if (byType === undefined) responseSchemas.set(cat, (byType = new Map()));
  let s = byType.get(type);
  if (s === undefined) {
    const ok = cat[type]!.result.extend({ id: requestBase.id, ok: z.literal(true) });
    s = z.union([ok, ErrorResponse]);
    byType.set(type, s);
  }
  return s;
}

/** Is `type` a request type in `cat`? */
export function isRequestType<C extends Catalogue = HomidCatalogue>(type: unknown, cat: C = catalogue as Catalogue as C): type is RequestType<C> {
  return typeof type === 'string' && Object.prototype.hasOwnProperty.call(cat, type);
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

export type ValidatedRequest<C extends Catalogue = HomidCatalogue> = { ok: true; request: AnyRequest<C> } | { ok: false; id: number | null; code: IpcErrorCodeValue; message: string };

/** Validate a decoded payload as a request of `cat` (homid's catalogue by default). */
export function validateRequest<C extends Catalogue = HomidCatalogue>(value: unknown, cat: C = catalogue as Catalogue as C): ValidatedRequest<C> {
  const id = peekId(value);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, id, code: IpcErrorCode.InvalidRequest, message: 'a request must be a JSON object' };
  }
  const type = (value as { type?: unknown }).type;
  if (!isRequestType(type, cat)) {
    const shown = typeof type === 'string' ? JSON.stringify(type.slice(0, 64)) : typeof type;
    return { ok: false, id, code: IpcErrorCode.UnknownType, message: `unknown request type ${shown}` };
  }
  const r = cat[type]!.request.safeParse(value);
  if (!r.success) {
    return { ok: false, id, code: IpcErrorCode.InvalidRequest, message: `invalid ${type} request: ${describeIssues(r.error)}` };
  }
  return { ok: true, request: r.data as AnyRequest<C> };
}

/** An error response body. */
export function errorBody(code: string, message: string): { ok: false; error: IpcErrorBody } {
  return { ok: false, error: { code, message } };
}
