/**
 * homid's logic, independent of the socket: devices, client sessions, queue-pair leases with budgets,
 * mediated queues, the extent service and the status snapshot. The IPC server (server.ts) maps messages
 * onto these methods; tests drive them directly.
 *
 * Leases: every queue pair a client holds is a lease tied to its session. Each kind (raw, mediated, gpu) is a
 * module of leases/ that makes the lease and implements LeaseOps; homid checks budgets, registers the lease and
 * handles it through those operations only. When the session ends (the client closed, crashed or was killed:
 * the socket closes), homid stops the queues: revoke, Delete I/O SQ (the controller aborts what is
 * outstanding), Delete I/O CQ, and frees their memory. Queue ids and memory are reused.
 *
 * Budgets: per class, the queue pairs all its clients hold together (queue_pairs) and each client's share
 * (per_client), every kind counted; GPU leases are also counted against the class's gpu_queues (0 unless
 * configured). Raw and GPU leases need raw permission ([raw] users and groups).
 */
import { pino } from 'pino';
import { toLbaRanges } from '../extents/types.js';
import { openDmaBuf, type DmaBufHandle } from '../mem/dmabuf.js';
import { DeviceMemoryPool, peerBarSupplier, type DeviceMemoryBuffer, type DeviceMemorySupplier } from './device-memory-pool.js';
import { DmaBufError } from '../sys/dmabuf.js';
import { OsError } from '../sys/libc.js';
import { dupCloexec } from '../sys/socket.js';
import { ShmSealError } from '../sys/shm.js';
import { readExtentTable } from '../ipc/extent-table.js';
import type { DeviceStatus, LeaseMode, LeaseStatus, StatusSnapshot } from '../ipc/messages.js';
import type { HomidConfig, ClassConfig } from './config.js';
import { HomidError } from './errors.js';
import { ExtentService, type ExtentEntry } from './extent-service.js';
import { createGpuLease, createMediatedLease, createRawLease, type GpuLease, type Lease, type LeaseContext, type LiveDevice, type MediatedLease, type RawLease } from './leases/index.js';
import { MediatedPoller, type DeniedCommand } from './mediated.js';
import { classFor, identify, listedUser, mayHoldRaw, type Peer } from './principals.js';
import { DeviceRegistry, type TransportOpener } from './registry.js';
import { sabRegions, type RegionProvider, type SharedRegion } from './shared-region.js';
import { VfService, type VfLease } from './vf-service.js';
import { pfStatusFields } from './sriov.js';
import { UblkService, type UblkStatus } from './ublk-service.js';
import { UblkError } from '../ublk/control.js';
import { DEFAULT_UBLK_DEPTH, DEFAULT_UBLK_MAX_IO_KIB, DEFAULT_UBLK_QUEUES, type UblkConfig } from './config.js';
import { METADATA_NSID } from './registry.js';
import type { SysPathOptions } from '../pci/sysfs.js';
import type { SriovStatusResult } from '../ipc/messages.js';

export type { StatusSnapshot } from '../ipc/messages.js';
export type { GpuLease, Lease, MediatedLease, RawLease } from './leases/index.js';

/** The slice of a pino logger homid uses. */
export interface HomidLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export const HOMID_VERSION = '0.1.0';
const DEFAULT_DATA_BYTES = 1 << 20;
const MAX_DATA_BYTES = 64 << 20;

export interface OpenQueuePairsRequest {
  device: string;
  nsid?: number;
  depth: number;
  count?: number;
  /** The lease kind (default raw). */
  mode?: LeaseMode;
  /** Mediated: ask for writes (granted when the class allows it). */
  write?: boolean;
  /** Mediated: size of the data buffer (default 1 MiB; with dataDmaBuf, the dma-buf's size). */
  dataBytes?: number;
  /**
   * Mediated, one queue pair: the data buffer is this dma-buf (an fd of the caller's, e.g. received with the
   * request; homid duplicates it and keeps the duplicate for the lease). It must be a dma-buf of at least
   * dataBytes that the device's transport can import (src/mem/dmabuf.ts).
   */
  dataDmaBuf?: number;
  /** Mediated: 'device' puts the data buffer in the device's configured device memory (default 'host'). */
  dataMemory?: 'host' | 'device';
}

export interface FileGrant {
  readonly id: number;
  readonly device: string;
  readonly entry: ExtentEntry;
  /** What the client's own descriptor proved (descriptorAccess): never taken from the shared entry. */
  readonly readable: boolean;
  readonly writable: boolean;
}

export class ClientSession {
  readonly leases = new Map<number, Lease>();
  readonly files = new Map<number, FileGrant>();
  /** SR-IOV virtual functions held (openVf). */
  readonly vfs = new Map<number, VfLease>();
  /** VFs being provisioned (counted against the class's vfs budget). */
  reservedVfs = 0;
  /** File grants being resolved (counted against the file grant limits). */
  pendingFiles = 0;
  /** Queue pairs being created (counted against the budgets), and the GPU ones among them. */
  reserved = 0;
  reservedGpu = 0;
  closed = false;
  readonly connectedAt = Date.now();
  constructor(
    readonly id: number,
    readonly peer: Peer,
    readonly klass: ClassConfig,
    readonly raw: boolean,
  ) {}
}

export interface HomidOptions {
  logger?: HomidLogger;
  regions?: RegionProvider;
  opener?: TransportOpener;
  /** sysfs / procfs / devfs roots of SR-IOV management (tests: a fake tree). */
  sriovSys?: SysPathOptions;
  /**
   * How the descriptor of a dataDmaBuf request (homid's own duplicate, which the handle owns) becomes a handle.
   * Default: openDmaBuf, which refuses anything the kernel does not report as a dma-buf. Tests on kernels without
   * udmabuf pass one that accepts a memfd stand-in (src/mem/dmabuf.ts memfdStandIn).
   */
  dmaBufOpener?: (fd: number) => DmaBufHandle;
  /** The ublk control device (tests: a path that is not there). */
  ublkControlPath?: string;
  /**
   * How a device's configured device memory becomes a supply (default peerBarSupplier: a peer BAR on a PCIe
   * transport). Tests on the embedded controller pass a stand-in over exported memory.
   */
  deviceMemorySupplier?: DeviceMemorySupplier;
}

export class Homid {
  readonly log: HomidLogger;
  readonly registry: DeviceRegistry;
  readonly extents: ExtentService;
  readonly poller = new MediatedPoller();
  readonly sessions = new Map<number, ClientSession>();
  readonly regions: RegionProvider;
  readonly vfs: VfService;
  /** ublk block devices served from homid's queue pairs ([[ublk]]). */
  readonly ublk: UblkService;
  readonly counters = { reclaimedQueuePairs: 0, deniedCommands: 0, refusals: 0, clientsServed: 0, lostQueuePairs: 0, reclaimedVfs: 0 };
  /** The latest denied commands (also logged). */
  readonly denied: (DeniedCommand & { client: number; pid: number; uid: number })[] = [];
  readonly startedAt = Date.now();
  private readonly dmaBufOpener: (fd: number) => DmaBufHandle;
  private readonly deviceMemorySupplier: DeviceMemorySupplier;
  /** Device memory pools by device name, made at the first lease asking for one (on the transport of that time). */
  private readonly deviceMemory = new Map<string, DeviceMemoryPool>();
  private nextSession = 1;
  private nextLease = 1;
  private nextFile = 1;

  private constructor(
    readonly config: HomidConfig,
    opts: HomidOptions,
  ) {
    this.log = opts.logger ?? pino({ level: config.logLevel, name: 'homid' });
    this.regions = opts.regions ?? sabRegions;
    this.dmaBufOpener = opts.dmaBufOpener ?? ((fd) => openDmaBuf(fd, { ownFd: true }));
    this.deviceMemorySupplier = opts.deviceMemorySupplier ?? peerBarSupplier;
    this.registry = new DeviceRegistry({ info: (o, m) => this.log.info(o, m), error: (o, m) => this.log.error(o, m) }, opts.opener);
    this.registry.onQueueLost = (device, qid, reason) => this.onQueueLost(device, qid, reason);
    this.vfs = new VfService({ info: (o, m) => this.log.info(o, m), warn: (o, m) => this.log.warn(o, m), error: (o, m) => this.log.error(o, m) }, opts.sriovSys);
    this.extents = new ExtentService(this.regions, { info: (o, m) => this.log.debug(o, m), warn: (o, m) => this.log.warn(o, m) });
    this.ublk = new UblkService(
      { info: (o, m) => this.log.info(o, m), warn: (o, m) => this.log.warn(o, m), error: (o, m) => this.log.error(o, m) },
      this.registry,
      (device, fn) => this.serial(device, fn),
      opts.ublkControlPath === undefined ? {} : { controlPath: opts.ublkControlPath },
    );
    this.extents.ublkRanges = (device) => this.ublk.rangesOn(device, METADATA_NSID);
  }

  /** Bring up every configured device (failures are reported, not fatal). */
  static async start(config: HomidConfig, opts: HomidOptions = {}): Promise<Homid> {
    const h = new Homid(config, opts);
    await h.registry.start(config.devices);
    await h.vfs.start(config.sriov);
    await h.ublk.start(config.ublk ?? []);
    return h;
  }

  // ---------------------------------------------------------------- sessions

  /** A new session for `peer`; throws HomidError 'identity' (fail closed) when its class cannot be established. */
  connect(peer: Peer): ClientSession {
    let id: ReturnType<typeof identify>;
    try {
      id = identify(peer);
    } catch (e) {
      this.counters.refusals++;
      this.log.warn({ pid: peer.pid, uid: peer.uid, code: e instanceof HomidError ? e.code : undefined }, e instanceof Error ? e.message : String(e));
      throw e;
    }
    const s = new ClientSession(this.nextSession++, peer, classFor(this.config, id), mayHoldRaw(this.config, id));
    this.sessions.set(s.id, s);
    this.counters.clientsServed++;
    this.log.info({ client: s.id, pid: peer.pid, uid: peer.uid, class: s.klass.name, raw: s.raw }, 'client connected');
    return s;
  }

  /** The client went away (any reason): reclaim every lease and file grant. */
  async disconnect(s: ClientSession): Promise<void> {
    if (s.closed) return;
    s.closed = true;
    const leases = [...s.leases.values()];
    for (const l of leases) await this.reclaim(s, l);
    for (const v of [...s.vfs.values()]) await this.reclaimVf(s, v);
    for (const f of [...s.files.values()]) this.dropFile(s, f);
    this.sessions.delete(s.id);
    this.log.info({ client: s.id, pid: s.peer.pid, reclaimed: leases.length }, 'client disconnected; its queues were reclaimed');
  }

  private refuse(s: ClientSession, e: HomidError): never {
    this.counters.refusals++;
    this.log.warn({ client: s.id, pid: s.peer.pid, code: e.code }, e.message);
    throw e;
  }

  // ---------------------------------------------------------------- devices

  listDevices(): DeviceStatus[] {
    return [...this.registry.devices.values()].map((d) => ({
      name: d.config.name,
      uri: d.config.uri,
      state: d.state,
      error: d.error,
      model: d.controller ? d.controller.identity.model.trim() : null,
      serial: d.controller ? d.controller.identity.serial.trim() : null,
      namespaces: d.controller ? d.controller.namespaces.map((n) => ({ nsid: n.nsid, blockSize: n.blockSize, blocks: n.blocks })) : [],
      maxQueuePairs: d.controller ? d.controller.maxIoQueuePairs : 0,
      queuePairsInUse: d.controller ? d.controller.queuePairs.length + d.controller.remoteQueuePairs.length : 0,
      extents: d.config.extents,
    }));
  }

  // ---------------------------------------------------------------- leases

  private classHeld(name: string): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.klass.name === name) n += s.leases.size + s.reserved;
    return n;
  }

  /** GPU queue pairs the clients of class `name` hold or are being given. */
  private classGpuHeld(name: string): number {
    let n = 0;
    for (const s of this.sessions.values()) {
      if (s.klass.name !== name) continue;
      n += s.reservedGpu;
      for (const l of s.leases.values()) if (l.kind === 'gpu') n++;
    }
    return n;
  }

  /** Open `count` queue pairs (all or none): leases of the kind `mode` names (raw by default). */
  async openQueuePairs(s: ClientSession, req: OpenQueuePairsRequest & { mode: 'mediated' }): Promise<MediatedLease[]>;
  async openQueuePairs(s: ClientSession, req: OpenQueuePairsRequest & { mode?: 'raw' }): Promise<RawLease[]>;
  async openQueuePairs(s: ClientSession, req: OpenQueuePairsRequest & { mode: 'gpu' }): Promise<GpuLease[]>;
  async openQueuePairs(s: ClientSession, req: OpenQueuePairsRequest): Promise<Lease[]>;
  async openQueuePairs(s: ClientSession, req: OpenQueuePairsRequest): Promise<Lease[]> {
    if (req.dataMemory !== undefined && req.dataMemory !== 'host' && req.dataMemory !== 'device') {
      this.refuse(s, new HomidError('bad-request', `dataMemory must be 'host' or 'device', got ${String(req.dataMemory)}`));
    }
    if (req.dataMemory === 'device') {
      if ((req.mode ?? 'raw') !== 'mediated') {
        this.refuse(
          s,
          new HomidError(
            'bad-request',
            `device-memory data buffers are for mediated queue pairs (asked for ${req.mode ?? 'raw'}: a raw or GPU client programs its own PRPs, which homid cannot confine to a buffer)`,
          ),
        );
      }
      if (req.dataDmaBuf !== undefined) this.refuse(s, new HomidError('bad-request', 'a data buffer is either a dma-buf or device memory, not both'));
    }
    if (req.dataDmaBuf === undefined) return this.openLeases(s, req, null);
    if (s.closed) throw new HomidError('closed', 'the session is closed');
    if ((req.mode ?? 'raw') !== 'mediated' || (req.count ?? 1) !== 1) {
      this.refuse(s, new HomidError('bad-request', `a dma-buf data buffer is for one mediated queue pair (asked for ${req.count ?? 1} ${req.mode ?? 'raw'})`));
    }
    let buf: DmaBufHandle;
    try {
      buf = this.dmaBufOpener(dupCloexec(req.dataDmaBuf));
    } catch (e) {
      if (e instanceof DmaBufError || e instanceof OsError || e instanceof ShmSealError) this.refuse(s, new HomidError('bad-request', `the data buffer descriptor is refused: ${e.message}`));
      throw e;
    }
    let kept = false;
    try {
      if (buf.size > MAX_DATA_BYTES) {
        // homid maps (and under VFIO pins) all of it: bounded like any data buffer
        this.refuse(s, new HomidError('bad-request', `the ${buf.exporter} dma-buf holds ${buf.size} bytes; a data buffer is at most ${MAX_DATA_BYTES}`));
      }
      if (req.dataBytes !== undefined && req.dataBytes > buf.size) {
        this.refuse(s, new HomidError('bad-request', `dataBytes ${req.dataBytes} is more than the ${buf.size} bytes of the ${buf.exporter} dma-buf`));
      }
      const leases = await this.openLeases(s, { ...req, dataBytes: req.dataBytes ?? buf.size }, buf);
      kept = true;
      return leases;
    } finally {
      // the lease closes it on release; a refusal closes it here
      if (!kept) buf.close();
    }
  }

  private async openLeases(s: ClientSession, req: OpenQueuePairsRequest, dataDmaBuf: DmaBufHandle | null): Promise<Lease[]> {
    if (s.closed) throw new HomidError('closed', 'the session is closed');
    const count = req.count ?? 1;
    const mode = req.mode ?? 'raw';
    const nsid = req.nsid ?? 1;
    if (!Number.isInteger(count) || count < 1 || count > 1024) this.refuse(s, new HomidError('bad-request', `count must be 1..1024, got ${count}`));
    const k = s.klass;
    if (!Number.isInteger(req.depth) || req.depth < 2 || req.depth > k.maxDepth) {
      this.refuse(s, new HomidError('bad-depth', `depth must be an integer in 2..${k.maxDepth} (class '${k.name}' max_depth), got ${req.depth}`));
    }
    if (mode === 'raw' && !s.raw) this.refuse(s, new HomidError('raw-denied', `uid ${s.peer.uid} may not hold raw queues (config [raw] users/groups); ask for mode 'mediated'`));
    if (mode === 'gpu' && !s.raw) {
      this.refuse(s, new HomidError('raw-denied', `uid ${s.peer.uid} may not hold GPU queues: a GPU drives its queue pair unchecked, as a raw client does (config [raw] users/groups)`));
    }
    if (mode === 'mediated' && req.write && !k.write) this.refuse(s, new HomidError('write-denied', `class '${k.name}' does not grant writes on mediated queues`));
    let dev: LiveDevice;
    try {
      dev = this.registry.live(req.device);
    } catch (e) {
      if (e instanceof HomidError) this.refuse(s, e);
      throw e;
    }
    const c = dev.controller;
    if (req.depth > c.cap.maxQueueEntries) this.refuse(s, new HomidError('bad-depth', `depth ${req.depth} exceeds the controller's ${c.cap.maxQueueEntries} entries (CAP.MQES + 1)`));
    const ns = c.namespaces.find((n) => n.nsid === nsid);
    if (!ns) this.refuse(s, new HomidError('bad-namespace', `namespace ${nsid} is not active on '${req.device}' (active: ${c.namespaces.map((n) => n.nsid).join(', ')})`));
    const mine = s.leases.size + s.reserved;
    if (mine + count > k.perClient) {
      this.refuse(s, new HomidError('budget-client', `client budget exceeded: holds ${mine} of ${k.perClient} queue pairs (class '${k.name}' per_client), asked for ${count} more`));
    }
    if (mode === 'gpu') {
      const gpuHeld = this.classGpuHeld(k.name);
      if (gpuHeld + count > k.gpuQueues) {
        this.refuse(s, new HomidError('budget-class', `class GPU budget exceeded: class '${k.name}' holds ${gpuHeld} of ${k.gpuQueues} GPU queue pairs (gpu_queues), asked for ${count} more`));
      }
    }
    const held = this.classHeld(k.name);
    if (held + count > k.queuePairs) {
      this.refuse(s, new HomidError('budget-class', `class budget exceeded: class '${k.name}' holds ${held} of ${k.queuePairs} queue pairs, asked for ${count} more`));
    }
    const reservedOnDevice = this.reservedOn(req.device);
    const freeQ = c.maxIoQueuePairs - c.queuePairs.length - c.remoteQueuePairs.length - reservedOnDevice;
    if (count > freeQ) {
      this.refuse(s, new HomidError('device-queues', `device '${req.device}' has ${Math.max(0, freeQ)} free I/O queue pairs of ${c.maxIoQueuePairs}, asked for ${count}`));
    }
    const gpuCount = mode === 'gpu' ? count : 0;
    s.reserved += count;
    s.reservedGpu += gpuCount;
    this.deviceReserved.set(req.device, reservedOnDevice + count);
    const made: Lease[] = [];
    try {
      for (let i = 0; i < count; i++) made.push(await this.createLease(s, dev, mode, nsid, req, dataDmaBuf));
    } catch (e) {
      for (const l of made) await this.reclaim(s, l).catch(() => undefined);
      if (e instanceof HomidError) this.refuse(s, e);
      throw e;
    } finally {
      s.reserved -= count;
      s.reservedGpu -= gpuCount;
      this.deviceReserved.set(req.device, (this.deviceReserved.get(req.device) ?? count) - count);
    }
    if (s.closed) {
      // the client went away while we were creating its queues
      for (const l of made) await this.reclaim(s, l).catch(() => undefined);
      throw new HomidError('closed', 'the session closed while its queue pairs were being created');
    }
    return made;
  }

  private readonly deviceReserved = new Map<string, number>();
  private readonly deviceLocks = new Map<string, Promise<unknown>>();
  /**
   * Run `fn` (creating or deleting queue pairs on `device`) after every earlier such operation on the device.
   * The driver frees a queue id as soon as its deletion starts; without this, a lease created while another
   * is being reclaimed could get the same qid and race the old Delete I/O CQ (Invalid Queue Identifier, or
   * worse, the new CQ deleted under the new client).
   */
  private serial<T>(device: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.deviceLocks.get(device) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.deviceLocks.set(device, tail);
    void tail.then(() => {
      if (this.deviceLocks.get(device) === tail) this.deviceLocks.delete(device);
    });
    return run;
  }
  private reservedOn(device: string): number {
    return this.deviceReserved.get(device) ?? 0;
  }

  /** The device memory pool of `dev`: made on first use, remade when the device's transport was replaced. */
  private deviceMemoryPool(dev: LiveDevice): DeviceMemoryPool {
    const name = dev.config.name;
    const cfg = dev.config.deviceMemory;
    if (cfg === undefined) throw new HomidError('no-device-memory', `device '${name}' has no device memory configured (device_memory in its [[device]] table)`);
    const old = this.deviceMemory.get(name);
    if (old !== undefined && old.transport === dev.transport) return old;
    if (old !== undefined && old.holderUid !== null) {
      throw new HomidError('device-memory-busy', `device '${name}': leases of the previous controller still hold its device memory; try again when they are closed`);
    }
    old?.close();
    this.deviceMemory.delete(name);
    let pool: DeviceMemoryPool;
    try {
      pool = new DeviceMemoryPool(name, dev.transport, this.deviceMemorySupplier(name, dev.transport, cfg), cfg.perClient);
    } catch (e) {
      if (e instanceof HomidError) throw e;
      this.log.error({ device: name, peer: cfg.address, bar: cfg.bar }, `device memory cannot be attached: ${(e as Error).message}`);
      throw new HomidError('no-device-memory', `device '${name}': its device memory (${cfg.address} BAR${cfg.bar}) cannot be attached: ${(e as Error).message}`);
    }
    this.deviceMemory.set(name, pool);
    this.log.info({ device: name, memory: pool.what, perClient: cfg.perClient }, 'device memory attached for mediated leases');
    return pool;
  }

  /** One lease of kind `mode`, registered in the session and serving. */
  private async createLease(s: ClientSession, dev: LiveDevice, mode: LeaseMode, nsid: number, req: OpenQueuePairsRequest, dataDmaBuf: DmaBufHandle | null): Promise<Lease> {
    const dataBytes = req.dataBytes ?? DEFAULT_DATA_BYTES;
    if (!Number.isInteger(dataBytes) || dataBytes < 4096 || dataBytes > MAX_DATA_BYTES) {
      throw new HomidError('bad-request', `dataBytes must be an integer in 4096..${MAX_DATA_BYTES}, got ${dataBytes}`);
    }
    const device = dev.config.name;
    const ctx: LeaseContext = {
      id: this.nextLease++,
      client: s.id,
      uid: s.peer.uid,
      dev,
      nsid,
      depth: req.depth,
      dataBytes,
      dataDmaBuf,
      dataDeviceMemory: null,
      write: req.write === true,
      serial: (fn) => this.serial(device, fn),
      regions: this.regions,
      onDenied: (d) => this.onDenied(s, d),
    };
    if (mode === 'mediated' && req.dataMemory === 'device') {
      // the lease owns the buffer from here (released with it, or by createMediatedLease on failure)
      const users = dev.config.deviceMemory?.users ?? [];
      if (dev.config.deviceMemory !== undefined && s.peer.uid !== 0 && !listedUser(identify(s.peer), users)) {
        throw new HomidError(
          'device-memory-denied',
          `uid ${s.peer.uid} may not use the device memory of '${dev.config.name}' (device_memory_users): a holder can map all of it, so it is lent only to users the config names`,
        );
      }
      (ctx as { dataDeviceMemory: DeviceMemoryBuffer | null }).dataDeviceMemory = this.deviceMemoryPool(dev).take(s.peer.uid, dataBytes);
    }
    const lease = mode === 'raw' ? await createRawLease(ctx) : mode === 'gpu' ? await createGpuLease(ctx) : await createMediatedLease(ctx, this.poller);
    s.leases.set(lease.id, lease);
    this.recomputeGrant(s, lease);
    lease.start();
    if (lease.kind === 'mediated') {
      this.log.info(
        { client: s.id, lease: lease.id, device, qid: lease.qid, depth: req.depth, mode, write: lease.grant.write, completions: lease.hwCq !== null ? 'direct' : 'relayed' },
        'mediated queue pair granted',
      );
    } else if (lease.kind === 'gpu') {
      this.log.info({ client: s.id, lease: lease.id, device, qid: lease.qid, depth: req.depth, mode, controller: lease.deviceKind, busyPoll: lease.busyPoll }, 'GPU queue pair granted');
    } else {
      this.log.info({ client: s.id, lease: lease.id, device, qid: lease.qid, depth: req.depth, mode }, 'queue pair granted');
    }
    return lease;
  }

  /**
   * A controller reset or removal destroyed a queue pair created for a lease (raw, or mediated with direct
   * completions). It is not recreated: the client's queue state no longer matches a fresh queue. The lease is
   * marked lost (status shows why; a mediated ring is revoked by the poller); the client closes it and opens
   * another. homid's own queue pairs (relayed mediated leases) are recovered by the driver core.
   */
  private onQueueLost(device: string, qid: number, reason: string): void {
    for (const s of this.sessions.values()) {
      for (const l of s.leases.values()) {
        if (l.device !== device || l.qid !== qid || l.lost !== null || !l.lostWithController) continue;
        l.lost = reason;
        this.counters.lostQueuePairs++;
        this.log.warn({ client: s.id, pid: s.peer.pid, lease: l.id, device, qid, reason }, 'a leased queue pair was destroyed with the controller; the client must close it and open another');
      }
    }
  }

  private onDenied(s: ClientSession, d: DeniedCommand): void {
    this.counters.deniedCommands++;
    const rec = { ...d, client: s.id, pid: s.peer.pid, uid: s.peer.uid };
    this.denied.push(rec);
    if (this.denied.length > 100) this.denied.shift();
    this.log.warn(rec, 'mediated command denied (Access Denied)');
  }

  async closeQueuePair(s: ClientSession, leaseId: number): Promise<void> {
    const l = s.leases.get(leaseId);
    if (!l) throw new HomidError('no-lease', `client ${s.id} holds no queue pair lease ${leaseId}`);
    await this.reclaim(s, l);
  }

  /** Stop a lease's queues: revoke, Delete SQ (the controller aborts what is outstanding), Delete CQ, free memory. */
  private async reclaim(s: ClientSession, l: Lease): Promise<void> {
    if (!s.leases.delete(l.id)) return;
    l.revoke();
    const dev = this.registry.devices.get(l.device);
    try {
      if (dev?.controller && dev.state === 'live') await this.serial(l.device, () => l.deleteQueues());
    } catch (e) {
      this.log.error({ lease: l.id, qid: l.qid, err: (e as Error).message }, 'deleting a reclaimed queue pair failed');
    }
    l.release();
    this.counters.reclaimedQueuePairs++;
    this.log.info({ client: s.id, lease: l.id, device: l.device, qid: l.qid }, 'queue pair reclaimed');
  }

  // ---------------------------------------------------------------- SR-IOV virtual functions

  /** VFs the clients of class `name` hold or are being given. */
  private classVfHeld(name: string): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.klass.name === name) n += s.vfs.size + s.reservedVfs;
    return n;
  }

  /**
   * Hand the client an SR-IOV virtual function: raw trust ([raw]) and the class's `vfs` budget are checked
   * first; then the VF is provisioned and bound to vfio-pci (vf-service.ts). Refusals: raw-denied,
   * budget-class, no-sriov, no-vfio, resources-exhausted.
   */
  async openVf(s: ClientSession, req: { pf: string; vq: number; vi: number; nsids: number[] }): Promise<VfLease> {
    if (s.closed) throw new HomidError('closed', 'the session is closed');
    if (!s.raw)
      this.refuse(s, new HomidError('raw-denied', `uid ${s.peer.uid} may not hold a virtual function: its holder drives a controller unchecked, as a raw client does (config [raw] users/groups)`));
    const allowed = this.config.sriov.find((x) => x.name === req.pf)?.namespaces;
    const outside = allowed === undefined ? [] : req.nsids.filter((n) => !allowed.includes(n));
    if (outside.length > 0) {
      this.refuse(s, new HomidError('bad-namespace', `namespace ${outside.join(', ')} may not be attached to a VF of '${req.pf}' (config [[sriov]] namespaces: ${allowed!.join(', ')})`));
    }
    if (new Set(req.nsids).size !== req.nsids.length) this.refuse(s, new HomidError('bad-request', `nsids lists a namespace twice: ${req.nsids.join(', ')}`));
    const k = s.klass;
    const held = this.classVfHeld(k.name);
    if (held + 1 > k.vfs) this.refuse(s, new HomidError('budget-class', `class VF budget exceeded: class '${k.name}' holds ${held} of ${k.vfs} virtual functions (vfs)`));
    s.reservedVfs++;
    let lease: VfLease;
    try {
      lease = await this.serial(`sriov:${req.pf}`, () => this.vfs.open(this.nextLease++, s.id, req));
    } catch (e) {
      if (e instanceof HomidError) this.refuse(s, e);
      throw e;
    } finally {
      s.reservedVfs--;
    }
    s.vfs.set(lease.id, lease);
    if (s.closed) {
      await this.reclaimVf(s, lease);
      throw new HomidError('closed', 'the session closed while its virtual function was being provisioned');
    }
    this.log.info(
      { client: s.id, pid: s.peer.pid, lease: lease.id, pf: req.pf, vf: lease.vf.address, scid: lease.vf.scid, vq: lease.vf.resources.vq, vi: lease.vf.resources.vi, nsids: lease.vf.nsids },
      'virtual function granted',
    );
    return lease;
  }

  async closeVf(s: ClientSession, leaseId: number): Promise<void> {
    const l = s.vfs.get(leaseId);
    if (!l) throw new HomidError('no-lease', `client ${s.id} holds no virtual function lease ${leaseId}`);
    await this.reclaimVf(s, l);
  }

  private async reclaimVf(s: ClientSession, l: VfLease): Promise<void> {
    if (!s.vfs.delete(l.id)) return;
    const errs = await this.serial(`sriov:${l.pf}`, () => this.vfs.reclaim(l));
    this.counters.reclaimedVfs++;
    if (errs.length > 0) this.log.error({ client: s.id, lease: l.id, vf: l.vf.address, errors: errs }, 'reclaiming a virtual function did not finish');
    else this.log.info({ client: s.id, lease: l.id, vf: l.vf.address, scid: l.vf.scid }, 'virtual function reclaimed');
  }

  /** The managed PFs and their secondary controllers, as the controller reports them, with holders. */
  async sriovStatus(viewer: ClientSession | null = null): Promise<SriovStatusResult> {
    const all = viewer === null || viewer.peer.uid === 0;
    const holders = new Map<string, { client: number; pid: number; uid: number }>();
    for (const s of this.sessions.values()) {
      if (!all && s !== viewer) continue;
      for (const l of s.vfs.values()) holders.set(`${l.pf}/${l.vf.scid}`, { client: s.id, pid: s.peer.pid, uid: s.peer.uid });
    }
    const pfs: SriovStatusResult['pfs'] = [];
    for (const m of this.vfs.pfs.values()) {
      const base = { name: m.config.name, pf: m.config.pf, admin: m.pool?.mgr.channel.description ?? m.config.admin };
      const empty = { totalVfs: 0, numVfs: 0, vqFlexible: 0, vqAssigned: 0, viFlexible: 0, viAssigned: 0, vqMaxPerVf: 0, viMaxPerVf: 0, secondaries: [] };
      if (!m.pool) {
        pfs.push({ ...base, error: m.error ?? 'not started', ...empty });
        continue;
      }
      try {
        const pool = m.pool;
        const st = await this.serial(`sriov:${m.config.name}`, async () => {
          const nsids = await pool.mgr.namespaceIds();
          return { st: await pool.status(nsids), nsids };
        });
        pfs.push({ ...base, error: null, ...pfStatusFields(st.st, st.nsids, (scid) => holders.get(`${m.config.name}/${scid}`) ?? null) });
      } catch (e) {
        pfs.push({ ...base, error: (e as Error).message, ...empty });
      }
    }
    return { pfs };
  }

  // ---------------------------------------------------------------- ublk block devices

  /** The ublk devices homid serves (their ranges, queue pairs and counters: nothing of another tenant). */
  ublkList(): UblkStatus[] {
    return this.ublk.list();
  }

  private ublkRefusal(s: ClientSession | null, e: unknown): never {
    const err = e instanceof UblkError ? new HomidError('ublk', e.message) : e;
    if (s && err instanceof HomidError) this.refuse(s, err);
    throw err;
  }

  /**
   * Serve an LBA range of a namespace to the kernel as /dev/ublkb<id>: root only (the kernel's block device is
   * open to whoever the kernel lets in, and its queue pair is homid's). Kernel refusals say what: no ublk
   * module, not root, the id busy.
   */
  async ublkAdd(s: ClientSession | null, req: { device: string; nsid?: number; id: number; start?: number; count?: number; queues?: number; depth?: number; maxIoKib?: number }): Promise<UblkStatus> {
    if (s !== null && s.peer.uid !== 0) this.refuse(s, new HomidError('ublk-denied', `uid ${s.peer.uid} may not add ublk devices: root only`));
    const c: UblkConfig = {
      device: req.device,
      nsid: req.nsid ?? 1,
      id: req.id,
      start: req.start ?? 0,
      queues: req.queues ?? DEFAULT_UBLK_QUEUES,
      depth: req.depth ?? DEFAULT_UBLK_DEPTH,
      maxIoBytes: (req.maxIoKib ?? DEFAULT_UBLK_MAX_IO_KIB) * 1024,
    };
    if (req.count !== undefined) c.count = req.count;
    if (c.maxIoBytes % 4096 !== 0) this.ublkRefusal(s, new HomidError('bad-request', `maxIoKib must be a multiple of 4, got ${req.maxIoKib}`));
    const existing = this.ublk.entries.get(c.id);
    if (existing?.dev && existing.dev.state !== 'failed') this.ublkRefusal(s, new UblkError('busy', `ublk device ${c.id} is already served by this homid (${existing.dev.blockDevice})`));
    try {
      return await this.ublk.add(c);
    } catch (e) {
      // a failed add is not kept: the caller sees why, status does not list it
      if (!existing) this.ublk.entries.delete(c.id);
      return this.ublkRefusal(s, e);
    }
  }

  /** Remove /dev/ublkb<id> (root only): refused while its file system is mounted unless `force`. */
  async ublkDel(s: ClientSession | null, id: number, force = false): Promise<void> {
    if (s !== null && s.peer.uid !== 0) this.refuse(s, new HomidError('ublk-denied', `uid ${s.peer.uid} may not remove ublk devices: root only`));
    try {
      await this.ublk.remove(id, { force });
    } catch (e) {
      this.ublkRefusal(s, e);
    }
  }

  // ---------------------------------------------------------------- files and extents

  /** File grants (held and being resolved) per uid, for [limits] file_grants_per_uid. */
  private readonly fileGrantsByUid = new Map<number, number>();

  private countFileGrant(uid: number, delta: number): void {
    const n = (this.fileGrantsByUid.get(uid) ?? 0) + delta;
    if (n > 0) this.fileGrantsByUid.set(uid, n);
    else this.fileGrantsByUid.delete(uid);
  }

  /**
   * Resolve the extents of the file open on `fd` (the client's descriptor, received by SCM_RIGHTS) for
   * `device`, publish them, and add the file's LBAs to the client's mediated grants on that device: readable
   * when the descriptor allows reads (O_RDONLY, O_RDWR), writable when it allows writes in place (O_WRONLY,
   * O_RDWR without O_APPEND). An O_WRONLY descriptor thus gives a write-only grant. A path string, an O_PATH
   * descriptor, a file on another device (FIEMAP) and a grant beyond [limits] are refused. The flush and the
   * mapping run on a resolver thread: the main thread keeps serving everyone else meanwhile.
   */
  async resolveExtents(s: ClientSession, device: string, fd: unknown): Promise<{ grant: FileGrant; region: SharedRegion }> {
    if (s.closed) throw new HomidError('closed', 'the session is closed');
    const lim = this.config.limits;
    const mine = s.files.size + s.pendingFiles;
    if (mine >= lim.fileGrantsPerClient) {
      this.refuse(s, new HomidError('limit-file-grants', `client ${s.id} holds ${mine} of ${lim.fileGrantsPerClient} file grants ([limits] file_grants_per_client); release one first`));
    }
    const uid = s.peer.uid;
    const ofUid = this.fileGrantsByUid.get(uid) ?? 0;
    if (ofUid >= lim.fileGrantsPerUid) {
      this.refuse(
        s,
        new HomidError('limit-file-grants', `uid ${uid} holds ${ofUid} of ${lim.fileGrantsPerUid} file grants over all its connections ([limits] file_grants_per_uid); release one first`),
      );
    }
    s.pendingFiles++;
    this.countFileGrant(uid, 1);
    let acquired: Awaited<ReturnType<ExtentService['acquire']>>;
    try {
      const dev = this.registry.live(device);
      acquired = await this.extents.acquire(fd, dev);
    } catch (e) {
      this.countFileGrant(uid, -1);
      if (e instanceof HomidError) this.refuse(s, e);
      throw e;
    } finally {
      s.pendingFiles--;
    }
    const { entry, access } = acquired;
    if (s.closed) {
      // the client went away while its file was being resolved
      this.countFileGrant(uid, -1);
      this.extents.release(entry);
      throw new HomidError('closed', 'the session closed while its file was being resolved');
    }
    const grant: FileGrant = { id: this.nextFile++, device, entry, readable: access.read, writable: access.write };
    s.files.set(grant.id, grant);
    const listener = (): void => {
      for (const l of s.leases.values()) if (l.device === device) this.recomputeGrant(s, l);
    };
    this.fileListeners.set(grant, listener);
    entry.listeners.add(listener);
    listener();
    return { grant, region: entry.region };
  }

  /** Each grant's listener on its (shared) entry, removed with the grant. */
  private readonly fileListeners = new Map<FileGrant, () => void>();

  /** Drop a file grant: its entry hold, its listener and its count against the limits. */
  private dropFile(s: ClientSession, f: FileGrant): void {
    if (!s.files.delete(f.id)) return;
    const listener = this.fileListeners.get(f);
    if (listener) f.entry.listeners.delete(listener);
    this.fileListeners.delete(f);
    this.countFileGrant(s.peer.uid, -1);
    this.extents.release(f.entry);
  }

  releaseFile(s: ClientSession, fileId: number): void {
    const f = s.files.get(fileId);
    if (!f) throw new HomidError('bad-request', `no file grant ${fileId}`);
    this.dropFile(s, f);
    for (const l of s.leases.values()) if (l.device === f.device) this.recomputeGrant(s, l);
  }

  /**
   * The LBAs a mediated lease may touch: the extents of the client's files on that device and namespace.
   * Readable: the block-addressed extents of files whose descriptor allowed reads, less unwritten extents (the
   * file reads zeros there; the blocks still hold whatever was there before). Writable: those of files whose
   * descriptor allowed writes, less shared extents (reflinked blocks belong to other files too).
   */
  private recomputeGrant(s: ClientSession, l: Lease): void {
    if (l.kind !== 'mediated') return;
    const mq = l.mediated;
    const readable: { lba: number; count: number }[] = [];
    const writable: { lba: number; count: number }[] = [];
    for (const f of s.files.values()) {
      if (f.device !== l.device || l.nsid !== 1) continue; // extents address namespace 1 of the device
      const ranges = toLbaRanges(f.entry.map, mq.grant.lbaSize).filter((r) => !r.flags.includes('unknown') && !r.flags.includes('encoded'));
      if (f.readable) readable.push(...ranges.filter((r) => !r.flags.includes('unwritten')));
      if (f.writable) writable.push(...ranges.filter((r) => !r.flags.includes('shared')));
    }
    mq.grant.readable.set(readable);
    mq.grant.writable.set(writable);
  }

  // ---------------------------------------------------------------- status

  /**
   * The status snapshot as `viewer` may see it: root (uid 0) and in-process callers (no viewer) see every
   * session and every published file; any other client sees only its own session and the files it holds
   * (other tenants' pids, uids, paths and queues are theirs).
   */
  status(viewer: ClientSession | null = null): StatusSnapshot {
    const all = viewer === null || viewer.peer.uid === 0;
    const devices = this.listDevices();
    const classes = [...this.config.classes.values()].map((k) => ({
      name: k.name,
      queuePairs: k.queuePairs,
      perClient: k.perClient,
      held: this.classHeld(k.name),
      gpuQueues: k.gpuQueues,
      gpuHeld: this.classGpuHeld(k.name),
    }));
    const visible = all ? [...this.sessions.values()] : [viewer];
    const held = new Set<ExtentEntry>();
    if (!all) for (const f of viewer.files.values()) held.add(f.entry);
    const clients = visible.map((s) => ({
      id: s.id,
      pid: s.peer.pid,
      uid: s.peer.uid,
      class: s.klass.name,
      raw: s.raw,
      files: s.files.size,
      queuePairs: [...s.leases.values()].map(
        (l) =>
          ({
            lease: l.id,
            device: l.device,
            qid: l.qid,
            mode: l.kind,
            nsid: l.nsid,
            depth: l.depth,
            lost: l.lost,
            ...(l.kind === 'gpu' ? { holdsAwake: l.holdsAwake() } : {}),
            io: l.io(),
          }) satisfies LeaseStatus,
      ),
    }));
    const extents = [...this.extents.entries.values()]
      .filter((e) => all || held.has(e))
      .map((e) => {
        let generation = 0;
        try {
          generation = readExtentTable(e.region.bytes, 1000).generation;
        } catch {
          generation = -1;
        }
        return { device: e.device, path: e.path, ino: e.ino, size: e.map.size, extents: e.map.extents.length, generation, holders: e.refs, refreshes: e.refreshes, error: e.lastError };
      });
    return {
      version: HOMID_VERSION,
      pid: process.pid,
      uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      devices,
      classes,
      clients,
      extents,
      // the kernel's devices: who mounts them is the kernel's business, their ranges and counters are homid's
      ...(this.ublk.entries.size > 0 ? { ublk: this.ublk.list() } : {}),
      // homid-wide counters say nothing about another tenant in particular
      counters: { ...this.counters },
    };
  }

  async stop(): Promise<void> {
    for (const s of [...this.sessions.values()]) await this.disconnect(s);
    await this.ublk.stop();
    for (const p of this.deviceMemory.values()) p.close();
    this.deviceMemory.clear();
    await this.vfs.stop();
    this.poller.stop();
    await this.extents.closeAll();
    await this.registry.close();
  }
}
