/**
 * homid configuration: a TOML file (smol-toml) validated by zod, with defaults. Every error names the key
 * that is wrong (e.g. `device[1].uri: ...`).
 *
 * ```toml
 * socket = "/run/homi/homid.sock"   # Unix socket path
 * socket_mode = "0660"              # octal permission bits of the socket
 * log_level = "info"
 *
 * [[device]]
 * name = "emu0"
 * uri = "emu://?size=1GiB"
 * extents = "fiemap"                # fiemap | decoder:ext4 | decoder:xfs | none
 *                                   # decoder:*: the unmounted file system on namespace 1, read from the
 *                                   # device itself (pci: and emu:// alike) on a queue pair homid keeps
 * # extent_root = "/srv/tree"       # decoder only: the host directory the image was built from
 * # block_device = "/dev/sdb"       # fiemap only: the kernel block device that IS namespace 1 of this device
 *                                   # (see below)
 * io_queues = 16
 * # device_memory = "peer:0000:00:04.0"  # optional: a memory BAR (default 2) of another PCI function that
 *                                   # mediated leases may ask data buffers in (dataMemory 'device'); the function
 *                                   # must be bound to uio_pci_generic or pci-stub (pci/peer-bar.ts); pci: only
 * # device_memory_bytes = 1048576   # use only this much of the BAR (default: all of it)
 * # device_memory_users = ["alice"] # who may get data buffers in it besides root (user names or uids; default
 *                                   # none): a holder can map ALL of it (daemon/device-memory-pool.ts says why)
 * # device_memory_per_client = 16777216  # bytes of it one uid may hold (default 16 MiB); the memory serves
 *                                   # one uid at a time
 *
 * [class.default]                   # initiator classes: budgets; membership by user / group
 * queue_pairs = 16                  # queue pairs held by all clients of the class together
 * per_client = 4                    # queue pairs one client connection may hold
 * max_depth = 1024
 * users = []                        # user names or uids; "default" takes everyone not matched elsewhere
 * groups = []
 * write = true                      # mediated clients of this class may be granted writes
 * gpu_queues = 0                    # GPU queue pairs (lease mode 'gpu') held by all clients of the class
 *                                   # together, counted in queue_pairs too; 0 (the default): none (see below)
 *
 * vfs = 0                          # SR-IOV virtual functions (openVf) held by all clients of the class
 *                                   # together; 0 (the default): none. A VF carries raw trust (see [raw])
 *
 * [[sriov]]                         # a physical function whose VFs homid provisions and hands out
 * name = "pf0"
 * pf = "0000:01:00.0"               # its PCI address; it stays bound to the kernel's nvme driver
 * admin = "kernel"                  # admin commands through the kernel's passthrough (/dev/nvmeX)
 * # vfs = 2                         # VFs to enable (default: all it supports), driver autoprobe off
 * # namespaces = [1]                # the namespaces a VF may have attached (default: any of the PF's)
 *
 * [[ublk]]                          # a namespace (or an LBA range of it) served to the kernel as /dev/ublkbN
 * device = "emu0"                   # a [[device]] name
 * nsid = 1
 * # id = 0                          # ublk device id (default: 0, 1, ... in order); fixed so that a restarted
 *                                   # homid recovers the device (UBLK_F_USER_RECOVERY)
 * # start = 0                       # first namespace LBA of the range
 * # count = 262144                  # LBAs (default: to the end of the namespace)
 * queues = 1                        # ublk queues: each served by one NVMe I/O queue pair homid keeps
 * depth = 16                        # tags per queue
 * max_io_kib = 64                   # largest request; each tag has a buffer this size in the queue's DMA memory
 *
 * [raw]                             # who may hold raw (unmediated) queues
 * users = ["root"]
 * groups = ["homi"]
 *
 * [limits]                          # optional
 * file_grants_per_client = 4096     # file grants (resolveExtents) one client connection may hold
 * file_grants_per_uid = 16384       # file grants all connections of one uid may hold together
 * # the socket (src/ipc/limits.ts has the meaning of each; defaults shown):
 * connections = 1024                # open connections, all uids
 * connections_per_uid = 64          # per uid (root: connections_root, 0 = only the total)
 * connections_root = 0
 * partial_bytes = 67108864          # bytes of incomplete frames, all uids
 * partial_bytes_per_uid = 8388608
 * frame_timeout_ms = 10000          # a frame must complete this long after its first byte
 * held_fds = 4096                   # descriptors received and not yet processed, all uids
 * held_fds_per_uid = 512
 * in_flight_per_uid = 256           # requests awaiting replies (reading pauses)
 * queued_bytes_per_uid = 16777216   # unread replies (reading pauses)
 * fd_reserve = 64                   # refuse new connections this close to RLIMIT_NOFILE
 * ```
 *
 * extents = "fiemap" maps a file with FIEMAP, whose physical offsets are byte offsets on the kernel block
 * device holding the file's file system (its st_dev). homid grants them as LBAs of namespace 1 only when that
 * block device is the namespace: a loop device whose backing file is the image of a file-backed emu:// device
 * (the same file by st_dev and st_ino; the loop offset, and a partition's start, are added), or the
 * `block_device` configured here (the file's st_dev is that device, or one of its partitions: the partition's
 * start is added). Any other file is refused ('wrong-device').
 *
 * gpu_queues defaults to 0 in every class, "default" included: GPU leases are opted into per class. A GPU lease
 * carries raw trust (its holder must also be a [raw] user or group), and on the embedded controller each one
 * keeps the controller's thread busy polling (a whole core) for as long as it is held.
 */
import * as fs from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { parseDeviceUri } from '../device/uri.js';
import { parsePeerSpec } from '../pci/peer-bar.js';
import type { DeviceMemoryConfig } from './device-memory-pool.js';
import type { IpcLimits } from '../ipc/limits.js';
import { DEFAULT_SOCKET } from '../ipc/messages.js';

/** Where homid listens by default (the wire's well-known address, src/ipc/messages.ts). */
export { DEFAULT_SOCKET };
export const DEFAULT_CONFIG_PATH = '/etc/homi/homid.toml';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Default of [[device]] device_memory_per_client: bytes of device memory one client may hold. */
export const DEFAULT_DEVICE_MEMORY_PER_CLIENT = 16 * 1024 * 1024;

const principal = z.union([z.string().min(1), z.number().int().nonnegative()]);

const deviceSchema = z
  .object({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . - (1..64 characters)')
      .optional(),
    uri: z
      .string()
      .min(1)
      .superRefine((s, ctx) => {
        try {
          parseDeviceUri(s);
        } catch (e) {
          ctx.addIssue({ code: 'custom', message: (e as Error).message });
        }
      }),
    extents: z.enum(['fiemap', 'decoder:ext4', 'decoder:xfs', 'none']).default('fiemap'),
    extent_root: z.string().min(1).optional(),
    block_device: z
      .string()
      .regex(/^\/[^\0]*$/, 'an absolute path of a block device such as "/dev/sdb"')
      .optional(),
    io_queues: z.number().int().min(1).max(65535).default(16),
    device_memory: z
      .string()
      .superRefine((s, ctx) => {
        try {
          if (!s.startsWith('peer:')) throw new Error(`'${s}' is not peer:<bdf>[:bar] (a memory BAR of another PCI function)`);
          parsePeerSpec(s.slice('peer:'.length));
        } catch (e) {
          ctx.addIssue({ code: 'custom', message: (e as Error).message });
        }
      })
      .optional(),
    device_memory_bytes: z
      .number()
      .int()
      .min(4096)
      .max(2 ** 40)
      .refine((n) => n % 4096 === 0, 'a whole number of 4 KiB pages')
      .optional(),
    device_memory_users: z.array(principal).default([]),
    device_memory_per_client: z
      .number()
      .int()
      .min(4096)
      .max(2 ** 40)
      .default(DEFAULT_DEVICE_MEMORY_PER_CLIENT),
  })
  .strict()
  .superRefine((d, ctx) => {
    if (d.extents.startsWith('decoder:') && d.extent_root === undefined) {
      ctx.addIssue({ code: 'custom', path: ['extent_root'], message: `required when extents = "${d.extents}" (the host directory the image was built from)` });
    }
    if (d.device_memory === undefined && d.device_memory_users.length > 0) {
      ctx.addIssue({ code: 'custom', path: ['device_memory_users'], message: 'only used with device_memory' });
    }
    if (d.device_memory === undefined && d.device_memory_bytes !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['device_memory_bytes'], message: 'only used with device_memory' });
    }
    if (d.block_device !== undefined && d.extents !== 'fiemap') {
      ctx.addIssue({ code: 'custom', path: ['block_device'], message: `only used with extents = "fiemap" (this device has extents = "${d.extents}")` });
    }
  });

/** Default of [limits] file_grants_per_client: file grants one client connection may hold. */
export const DEFAULT_FILE_GRANTS_PER_CLIENT = 4096;
/** Default of [limits] file_grants_per_uid: file grants all connections of one uid may hold together. */
export const DEFAULT_FILE_GRANTS_PER_UID = 16384;
/** Default of [class.*] gpu_queues: no GPU queue pairs unless the class says so. */
export const DEFAULT_GPU_QUEUES = 0;

/** Default of [class.*] vfs: no SR-IOV virtual functions unless the class says so. */
export const DEFAULT_VFS = 0;

/** Largest value either limit accepts. */
const MAX_FILE_GRANTS = 1 << 24;

/** [limits] keys of the socket's limits (src/ipc/limits.ts) and the IpcLimits field each sets. */
export const IPC_LIMIT_KEYS = {
  connections: 'maxConnections',
  connections_per_uid: 'maxConnectionsPerUid',
  connections_root: 'maxConnectionsRoot',
  partial_bytes: 'maxPartialBytes',
  partial_bytes_per_uid: 'maxPartialBytesPerUid',
  frame_timeout_ms: 'frameTimeoutMs',
  held_fds: 'maxHeldFds',
  held_fds_per_uid: 'maxHeldFdsPerUid',
  in_flight_per_uid: 'maxInFlightPerUid',
  queued_bytes_per_uid: 'maxQueuedBytesPerUid',
  fd_reserve: 'fdReserve',
} as const satisfies Record<string, keyof IpcLimits>;
/** Keys that may be 0 (connections_root: no per-uid cap for root; fd_reserve: no reserve). */
const IPC_ZERO_ALLOWED = new Set(['connections_root', 'fd_reserve']);

const ipcLimitShape = Object.fromEntries(
  Object.keys(IPC_LIMIT_KEYS).map((k) => [
    k,
    z
      .number()
      .int()
      .min(IPC_ZERO_ALLOWED.has(k) ? 0 : 1)
      .max(Number.MAX_SAFE_INTEGER)
      .optional(),
  ]),
) as Record<keyof typeof IPC_LIMIT_KEYS, z.ZodOptional<z.ZodNumber>>;

const limitsSchema = z
  .object({
    file_grants_per_client: z.number().int().min(0).max(MAX_FILE_GRANTS).default(DEFAULT_FILE_GRANTS_PER_CLIENT),
    file_grants_per_uid: z.number().int().min(0).max(MAX_FILE_GRANTS).default(DEFAULT_FILE_GRANTS_PER_UID),
    ...ipcLimitShape,
  })
  .strict();

const classSchema = z
  .object({
    queue_pairs: z.number().int().min(0).default(16),
    per_client: z.number().int().min(0).default(4),
    max_depth: z.number().int().min(2).max(65536).default(1024),
    users: z.array(principal).default([]),
    groups: z.array(principal).default([]),
    write: z.boolean().default(true),
    gpu_queues: z.number().int().min(0).default(DEFAULT_GPU_QUEUES),
    vfs: z.number().int().min(0).default(DEFAULT_VFS),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.per_client > c.queue_pairs) ctx.addIssue({ code: 'custom', path: ['per_client'], message: `per_client (${c.per_client}) exceeds queue_pairs (${c.queue_pairs})` });
    if (c.gpu_queues > c.queue_pairs) {
      ctx.addIssue({ code: 'custom', path: ['gpu_queues'], message: `gpu_queues (${c.gpu_queues}) exceeds queue_pairs (${c.queue_pairs}): GPU queue pairs count in queue_pairs too` });
    }
  });

const sriovSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . - (1..64 characters)'),
    pf: z.string().regex(/^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/, 'a PCI address such as "0000:01:00.0"'),
    // The PF stays with the kernel: admin commands go through its passthrough. (HOMI's own admin queue is the
    // driver core's other AdminChannel, for a PF that homid owns as a device; not configurable here yet.)
    admin: z.enum(['kernel']).default('kernel'),
    vfs: z.number().int().min(1).max(65535).optional(),
    namespaces: z.array(z.number().int().min(1).max(0xffff_fffe)).optional(),
  })
  .strict();

/** Defaults of [[ublk]]: one queue of depth 16 with 64 KiB requests fits a uio export (2 MiB) per queue. */
export const DEFAULT_UBLK_QUEUES = 1;
export const DEFAULT_UBLK_DEPTH = 16;
export const DEFAULT_UBLK_MAX_IO_KIB = 64;

const ublkSchema = z
  .object({
    device: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'the name of a [[device]]'),
    nsid: z.number().int().min(1).max(0xffff_fffe).default(1),
    id: z
      .number()
      .int()
      .min(0)
      .max((1 << 20) - 1)
      .optional(),
    start: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
    count: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
    queues: z.number().int().min(1).max(64).default(DEFAULT_UBLK_QUEUES),
    depth: z.number().int().min(1).max(4096).default(DEFAULT_UBLK_DEPTH),
    max_io_kib: z
      .number()
      .int()
      .min(4)
      .max(32768)
      .refine((n) => n % 4 === 0, 'a multiple of 4')
      .default(DEFAULT_UBLK_MAX_IO_KIB),
  })
  .strict();

const configSchema = z
  .object({
    socket: z.string().min(1).default(DEFAULT_SOCKET),
    socket_mode: z
      .string()
      .regex(/^0?[0-7]{3}$/, 'octal permission bits such as "0660"')
      .default('0660'),
    log_level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    device: z.array(deviceSchema).default([]),
    sriov: z.array(sriovSchema).default([]),
    ublk: z.array(ublkSchema).default([]),
    class: z.record(z.string().regex(/^[A-Za-z0-9_-]{1,32}$/), classSchema).default({}),
    raw: z
      .object({ users: z.array(principal).default(['root']), groups: z.array(principal).default([]) })
      .strict()
      .default({ users: ['root'], groups: [] }),
    limits: limitsSchema.default({ file_grants_per_client: DEFAULT_FILE_GRANTS_PER_CLIENT, file_grants_per_uid: DEFAULT_FILE_GRANTS_PER_UID }),
  })
  .strict();

export interface DeviceConfig {
  name: string;
  uri: string;
  extents: 'fiemap' | 'decoder:ext4' | 'decoder:xfs' | 'none';
  extentRoot?: string;
  /** extents = "fiemap": the kernel block device that is namespace 1 of this device (config `block_device`). */
  blockDevice?: string;
  ioQueues: number;
  /** Config device_memory (with _bytes, _per_client): data buffers of mediated leases in a peer's BAR. */
  deviceMemory?: DeviceMemoryConfig;
}

export interface LimitsConfig {
  fileGrantsPerClient: number;
  fileGrantsPerUid: number;
  /** The socket's limits set in [limits] (the rest keep src/ipc/limits.ts's defaults). */
  ipc?: Partial<IpcLimits>;
}

export interface ClassConfig {
  name: string;
  queuePairs: number;
  perClient: number;
  maxDepth: number;
  users: (string | number)[];
  groups: (string | number)[];
  write: boolean;
  /** GPU queue pairs all clients of the class may hold together (also counted in queuePairs). */
  gpuQueues: number;
  /** SR-IOV virtual functions all clients of the class may hold together. */
  vfs: number;
}

export interface SriovConfig {
  name: string;
  /** The PF's PCI address (normalised to domain:bus:dev.fn). */
  pf: string;
  admin: 'kernel';
  /** VFs to enable (undefined: all the PF supports). */
  vfs?: number;
  /** The namespaces a VF may have attached (undefined: any of the PF's). */
  namespaces?: number[];
}

/** One [[ublk]] table: a namespace (or an LBA range of it) that homid serves to the kernel as /dev/ublkbN. */
export interface UblkConfig {
  /** The [[device]] name. */
  device: string;
  nsid: number;
  /** The ublk device id (/dev/ublkbN): fixed, so a restarted homid finds and recovers it. Default: 0, 1, ... in order. */
  id: number;
  /** First namespace LBA of the range. */
  start: number;
  /** LBAs in the range (undefined: to the end of the namespace). */
  count?: number;
  /** ublk queues, each served by one NVMe I/O queue pair homid keeps for the kernel. */
  queues: number;
  depth: number;
  /** Largest request in bytes (each tag's buffer). */
  maxIoBytes: number;
}

export interface HomidConfig {
  socket: string;
  socketMode: number;
  logLevel: string;
  devices: DeviceConfig[];
  sriov: SriovConfig[];
  /** Always holds "default". */
  classes: Map<string, ClassConfig>;
  raw: { users: (string | number)[]; groups: (string | number)[] };
  limits: LimitsConfig;
  /** [[ublk]] devices (absent: none). */
  ublk?: UblkConfig[];
}

function issuePath(p: readonly PropertyKey[]): string {
  let s = '';
  for (const k of p) s += typeof k === 'number' ? `[${k}]` : s === '' ? String(k) : `.${String(k)}`;
  return s === '' ? '(top level)' : s;
}

/** Validate an already-parsed TOML document. */
export function configFromObject(doc: unknown, source = 'config'): HomidConfig {
  const r = configSchema.safeParse(doc);
  if (!r.success) {
    const lines = r.error.issues.map((i) => {
      const keys = i.code === 'unrecognized_keys' ? ` (${(i as { keys: string[] }).keys.join(', ')})` : '';
      return `  ${issuePath(i.path)}: ${i.message}${keys}`;
    });
    throw new ConfigError(`${source}: invalid configuration:\n${lines.join('\n')}`);
  }
  const c = r.data;
  const names = new Set<string>();
  const devices: DeviceConfig[] = c.device.map((d, i) => {
    const name = d.name ?? `dev${i}`;
    if (names.has(name)) throw new ConfigError(`${source}: invalid configuration:\n  device[${i}].name: duplicate device name '${name}'`);
    names.add(name);
    const out: DeviceConfig = { name, uri: d.uri, extents: d.extents, ioQueues: d.io_queues };
    if (d.extent_root !== undefined) out.extentRoot = d.extent_root;
    if (d.block_device !== undefined) out.blockDevice = d.block_device;
    if (d.device_memory !== undefined) {
      const peer = parsePeerSpec(d.device_memory.slice('peer:'.length));
      out.deviceMemory = { ...peer, perClient: d.device_memory_per_client, users: d.device_memory_users, ...(d.device_memory_bytes !== undefined ? { bytes: d.device_memory_bytes } : {}) };
    }
    return out;
  });
  const pfNames = new Set<string>();
  const sriov: SriovConfig[] = c.sriov.map((x, i) => {
    if (pfNames.has(x.name)) throw new ConfigError(`${source}: invalid configuration:\n  sriov[${i}].name: duplicate name '${x.name}'`);
    pfNames.add(x.name);
    const pf = (x.pf.length === 7 ? `0000:${x.pf}` : x.pf).toLowerCase();
    const out: SriovConfig = { name: x.name, pf, admin: x.admin };
    if (x.vfs !== undefined) out.vfs = x.vfs;
    if (x.namespaces !== undefined) out.namespaces = x.namespaces;
    return out;
  });
  const ids = new Set<number>();
  const ublk: UblkConfig[] = c.ublk.map((u, i) => {
    const bad = (key: string, m: string): never => {
      throw new ConfigError(`${source}: invalid configuration:\n  ublk[${i}].${key}: ${m}`);
    };
    if (!names.has(u.device)) bad('device', `no [[device]] is named '${u.device}' (devices: ${[...names].join(', ') || 'none'})`);
    const id = u.id ?? i;
    if (ids.has(id)) bad('id', `ublk device id ${id} is used twice`);
    ids.add(id);
    const out: UblkConfig = { device: u.device, nsid: u.nsid, id, start: u.start, queues: u.queues, depth: u.depth, maxIoBytes: u.max_io_kib * 1024 };
    if (u.count !== undefined) out.count = u.count;
    return out;
  });
  const classes = new Map<string, ClassConfig>();
  const dflt = classSchema.parse({});
  for (const [name, k] of Object.entries({ default: dflt, ...c.class })) {
    classes.set(name, { name, queuePairs: k.queue_pairs, perClient: k.per_client, maxDepth: k.max_depth, users: k.users, groups: k.groups, write: k.write, gpuQueues: k.gpu_queues, vfs: k.vfs });
  }
  const ipc: Partial<IpcLimits> = {};
  for (const [key, field] of Object.entries(IPC_LIMIT_KEYS)) {
    const v = c.limits[key as keyof typeof IPC_LIMIT_KEYS];
    if (v !== undefined) ipc[field] = v;
  }
  const limits: LimitsConfig = { fileGrantsPerClient: c.limits.file_grants_per_client, fileGrantsPerUid: c.limits.file_grants_per_uid };
  if (Object.keys(ipc).length > 0) limits.ipc = ipc;
  return { socket: c.socket, socketMode: parseInt(c.socket_mode, 8), logLevel: c.log_level, devices, sriov, classes, raw: c.raw, limits, ublk };
}

/** Parse TOML text. */
export function parseConfig(text: string, source = 'config'): HomidConfig {
  let doc: unknown;
  try {
    doc = parseToml(text);
  } catch (e) {
    throw new ConfigError(`${source}: not valid TOML: ${(e as Error).message}`);
  }
  return configFromObject(doc, source);
}

/** Read and parse a config file; a missing file at the default path gives the defaults. */
export function loadConfig(path: string | undefined): HomidConfig {
  const p = path ?? DEFAULT_CONFIG_PATH;
  let text: string;
  try {
    text = fs.readFileSync(p, 'utf8');
  } catch (e) {
    if (path === undefined && (e as NodeJS.ErrnoException).code === 'ENOENT') return configFromObject({}, '(defaults)');
    throw new ConfigError(`${p}: cannot read: ${(e as Error).message}`);
  }
  return parseConfig(text, p);
}
