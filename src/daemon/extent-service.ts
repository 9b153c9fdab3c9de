/**
 * The extent service. A client proves access to a file by passing an open descriptor (never a path string);
 * homid flushes the file's dirty data, resolves its extents (FIEMAP with FIEMAP_FLAG_SYNC, or the on-disk
 * decoder for a device homid owns), caches them by (device, st_dev, st_ino), and publishes them in a shared
 * table (extent-table.ts) with a generation counter. A watch on the file invalidates and refreshes the entry:
 * the generation goes odd while the map is rebuilt and even again with the new map.
 *
 * Access: what a descriptor proves is what its open file description allows, read with fcntl(F_GETFL): an
 * O_RDONLY descriptor proves read access, O_WRONLY write access, O_RDWR both; an O_PATH descriptor proves
 * nothing and is refused ('fd-access'), as is an append-only one without read access (O_APPEND forbids writes
 * in place). The decision is made per descriptor, for the grant it makes (descriptorAccess); a cached entry
 * shared with other clients carries no access of its own. homid never reopens the file: it keeps a duplicate
 * of the client's descriptor (F_DUPFD_CLOEXEC) and flushes and maps through it.
 *
 * Threads: flushing and mapping run on homid's resolver threads (resolver.ts), never on the main thread, which
 * serves every tenant's requests and mediated queues. Concurrent resolves of the same file share one job;
 * refreshes after file changes go through the threads too, one at a time per entry. A descriptor stays open
 * while a job may use it, even after its entry is released.
 *
 * FIEMAP (extents = "fiemap") maps a file onto namespace 1 only when the file lives on the namespace itself
 * (placement.ts): a loop device over the image of a file-backed emu:// device, or the configured block_device.
 * Any other file is refused ('wrong-device').
 *
 * Decoder sources (extents = "decoder:ext4" | "decoder:xfs") read the unmounted file system on namespace 1 of
 * the device itself, through homid's metadata queue pair (DeviceReader, extents/device-source.ts), for any
 * device homid brings up (PCIe, emu:// in memory; a file-backed emu:// device's image file is read directly,
 * see registry.ts). The descriptor must name a file under the
 * device's `extent_root` (the host directory the image was built from, e.g. with mkfs.ext4 -d); its path
 * relative to that root is looked up on the device. The descriptor proves the client's access to the file;
 * the decoder says where the bytes are on the device. A device read that fails or times out refuses with
 * 'device-io'.
 *
 * Every map is checked against the namespace before it is published: an extent outside it, or not aligned to
 * its LBA size (a grant would expose the rest of a shared block), refuses with 'extent-range'.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseDeviceUri } from '../device/uri.js';
import type { DeviceReader } from '../extents/device-source.js';
import type { FileMap } from '../extents/types.js';
import { fdStatusFlags, O_ACCMODE, O_APPEND, O_PATH, O_RDONLY, O_RDWR, O_WRONLY } from '../sys/fileio.js';
import { closeFd, dupCloexec } from '../sys/socket.js';
import { METADATA_NSID, type DeviceEntry } from './registry.js';
import { HomidError } from './errors.js';
import { ExtentTableWriter, extentTableBytes } from '../ipc/extent-table.js';
import { CH_DATA_BYTES, type ResolveJob } from './resolve-protocol.js';
import { ResolverPool } from './resolver.js';
import type { RegionProvider, SharedRegion } from './shared-region.js';

export interface ExtentEntry {
  readonly key: string;
  readonly device: string;
  /** Real path of the file (from /proc/self/fd). */
  readonly path: string;
  /** Path inside the image (decoder sources), else null. */
  readonly imagePath: string | null;
  readonly dev: number;
  readonly ino: number;
  map: FileMap;
  region: SharedRegion;
  writer: ExtentTableWriter;
  /** Holders (client grants); the entry is dropped when the last one releases it. */
  refs: number;
  refreshes: number;
  lastError: string | null;
  /** Called after every refresh (mediated grants recompute their LBA ranges). */
  readonly listeners: Set<(e: ExtentEntry) => void>;
  watcher: fs.FSWatcher | null;
  timer: NodeJS.Timeout | null;
  /** homid's duplicate of the first client's descriptor: every flush and FIEMAP goes through it. */
  fd: number;
  /** The refresh in flight (its resolver job may use `fd`), else null. */
  refreshing: Promise<void> | null;
  /** A change arrived while a refresh was in flight: run another after it. */
  again: boolean;
  /** Released by its last holder: nothing is published any more; `fd` closes once no job uses it. */
  released: boolean;
}

export interface ExtentServiceLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** What one descriptor proves: its open file description's access mode (fcntl F_GETFL). */
export interface DescriptorAccess {
  read: boolean;
  write: boolean;
  /** The status flags as read. */
  flags: number;
}

const DEFAULT_CAPACITY = 1024;
/** Coalesce bursts of change events (a rewrite is truncate + several writes). */
const DEBOUNCE_MS = 30;
/** Extent flags whose physical offsets address no blocks of the file on the namespace. */
const UNADDRESSED_FLAGS = ['inline', 'delalloc', 'unknown', 'encoded'] as const;

/** The real path of an fd this process holds. */
export function fdPath(fd: number): string {
  return fs.readlinkSync(`/proc/self/fd/${fd}`);
}

/**
 * The access a client's descriptor proves: read for O_RDONLY and O_RDWR, write for O_WRONLY and O_RDWR (not
 * when O_APPEND: such a descriptor cannot write in place). Refuses ('fd-access') an O_PATH descriptor and one
 * that proves neither.
 */
export function descriptorAccess(fd: number): DescriptorAccess {
  let flags: number;
  try {
    flags = fdStatusFlags(fd);
  } catch (e) {
    throw new HomidError('needs-fd', `descriptor ${fd} is not usable: ${(e as Error).message}`);
  }
  if ((flags & O_PATH) !== 0) {
    throw new HomidError('fd-access', 'the descriptor was opened with O_PATH: it names the file but grants no access to it; open the file with O_RDONLY (reads), O_WRONLY (writes) or O_RDWR');
  }
  const mode = flags & O_ACCMODE;
  const read = mode === O_RDONLY || mode === O_RDWR;
  const write = (mode === O_WRONLY || mode === O_RDWR) && (flags & O_APPEND) === 0;
  if (!read && !write) {
    throw new HomidError(
      'fd-access',
      `the descriptor grants neither reads nor writes in place (access mode ${mode}${flags & O_APPEND ? ', O_APPEND' : ''}); open the file with O_RDONLY, O_WRONLY or O_RDWR`,
    );
  }
  return { read, write, flags };
}

/** The image file of a file-backed emu:// device, else null. */
function emuImageFile(uri: string): string | null {
  try {
    const u = parseDeviceUri(uri);
    return u.kind === 'emu' && u.file !== null ? path.resolve(u.file) : null;
  } catch {
    return null;
  }
}

/** Refuse a map with an extent outside namespace 1 or not aligned to its LBA size. */
export function checkMapOnNamespace(map: FileMap, device: string, namespaceBytes: number, lbaSize: number): void {
  for (const e of map.extents) {
    if (e.length === 0 || UNADDRESSED_FLAGS.some((f) => e.flags.includes(f))) continue;
    const end = e.physical + e.length;
    if (!Number.isSafeInteger(e.physical) || !Number.isSafeInteger(e.length) || e.physical < 0 || e.length < 0 || !Number.isSafeInteger(end) || end > namespaceBytes) {
      throw new HomidError('extent-range', `the extent at file offset ${e.logical} (bytes ${e.physical}..${end}) lies outside namespace 1 of device '${device}' (${namespaceBytes} bytes)`);
    }
    if (e.physical % lbaSize !== 0 || e.length % lbaSize !== 0) {
      throw new HomidError(
        'extent-range',
        `the extent at file offset ${e.logical} (${e.length} bytes at byte ${e.physical}) is not aligned to the ${lbaSize}-byte LBAs of device '${device}': its blocks share LBAs with other data`,
      );
    }
  }
}

interface PendingCreate {
  promise: Promise<ExtentEntry>;
  /** Acquirers waiting for it; the new entry starts with this many holders. */
  waiters: number;
}

export class ExtentService {
  readonly entries = new Map<string, ExtentEntry>();
  /** The ublk devices homid serves from namespace 1 of a device (set by homid: ublk-service.ts). */
  ublkRanges: (device: string) => { blockDevice: string; offset: number; bytes: number }[] = () => [];
  /** Entries being created (their first resolve runs), by key: later acquirers of the same file wait for it. */
  private readonly creating = new Map<string, PendingCreate>();
  readonly pool: ResolverPool;
  private closed = false;

  constructor(
    private readonly regions: RegionProvider,
    private readonly log: ExtentServiceLog,
    pool?: ResolverPool,
  ) {
    this.pool = pool ?? new ResolverPool();
  }

  /**
   * Resolve (or take from the cache) the map of the file open on `fd`, for `device`, with the access `fd`
   * proves. The service keeps its own duplicate of the descriptor while the entry lives; the caller still owns
   * `fd`. The slow part runs on a resolver thread.
   */
  async acquire(fd: unknown, device: DeviceEntry): Promise<{ entry: ExtentEntry; access: DescriptorAccess }> {
    if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
      throw new HomidError('needs-fd', 'a file must be passed as an open descriptor (SCM_RIGHTS); homid does not accept path strings');
    }
    if (this.closed) throw new HomidError('closed', 'homid is stopping');
    let st: fs.BigIntStats;
    try {
      st = fs.fstatSync(fd, { bigint: true });
    } catch (e) {
      throw new HomidError('needs-fd', `descriptor ${fd} is not usable: ${(e as Error).message}`);
    }
    if (!st.isFile()) throw new HomidError('not-a-file', 'the descriptor is not a regular file');
    const access = descriptorAccess(fd);
    const source = device.config.extents;
    if (source === 'none') throw new HomidError('extent-source', `device '${device.config.name}' has no extent source (extents = "none")`);
    const key = `${device.config.name}:${st.dev}:${st.ino}`;
    const hit = this.entries.get(key);
    if (hit) {
      hit.refs++;
      return { entry: hit, access };
    }
    let pending = this.creating.get(key);
    if (pending) pending.waiters++;
    else {
      const p = { waiters: 1 } as PendingCreate;
      p.promise = this.create(fd, key, st, device, () => p.waiters);
      this.creating.set(key, p);
      const done = (): void => {
        if (this.creating.get(key) === p) this.creating.delete(key);
      };
      p.promise.then(done, done);
      pending = p;
    }
    return { entry: await pending.promise, access };
  }

  private async create(fd: number, key: string, st: fs.BigIntStats, device: DeviceEntry, holders: () => number): Promise<ExtentEntry> {
    const source = device.config.extents;
    const real = fdPath(fd);
    let imagePath: string | null = null;
    if (source.startsWith('decoder:')) {
      const root = path.resolve(device.config.extentRoot!);
      const rel = path.relative(fs.realpathSync(root), real);
      if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
        throw new HomidError('outside-root', `the file is not under the extent root of device '${device.config.name}' (${root})`);
      }
      imagePath = '/' + rel.split(path.sep).join('/');
    }
    // Our own descriptor: the client may close its copy; the map is refreshed through this one.
    let own: number;
    try {
      own = dupCloexec(fd);
    } catch (e) {
      throw new HomidError('needs-fd', `cannot keep the descriptor: ${(e as Error).message}`);
    }
    let map: FileMap;
    try {
      map = await this.resolve(own, real, imagePath, device);
      if (this.closed) throw new HomidError('closed', 'homid stopped while the file was being resolved');
    } catch (e) {
      closeFd(own); // the job is over: no thread uses the descriptor any more
      throw e;
    }
    const region = this.regions.create(extentTableBytes(Math.max(DEFAULT_CAPACITY, map.extents.length * 2)), `extents-${st.ino}`, { readOnlyForClients: true });
    const writer = new ExtentTableWriter(region.bytes);
    const entry: ExtentEntry = {
      key,
      device: device.config.name,
      path: real,
      imagePath,
      dev: Number(st.dev),
      ino: Number(st.ino),
      map,
      region,
      writer,
      refs: holders(),
      refreshes: 0,
      lastError: null,
      listeners: new Set(),
      watcher: null,
      timer: null,
      fd: own,
      refreshing: null,
      again: false,
      released: false,
    };
    writer.publish(map, entry.dev);
    try {
      entry.watcher = fs.watch(real, { persistent: false }, () => this.schedule(entry, device));
      entry.watcher.on('error', () => undefined);
    } catch (e) {
      this.log.warn({ path: real, err: (e as Error).message }, 'cannot watch file; its extent map is refreshed only on request');
    }
    this.entries.set(key, entry);
    this.log.info({ device: entry.device, path: real, extents: map.extents.length, generation: writer.generation }, 'extents resolved');
    return entry;
  }

  /** Flush and map the file open on `fd` (homid's own descriptor) on a resolver thread, then check the map. */
  private async resolve(fd: number, real: string, imagePath: string | null, device: DeviceEntry): Promise<FileMap> {
    const name = device.config.name;
    const c = device.controller;
    if (device.state !== 'live' || c === null) throw new HomidError('device-down', `device '${name}' is ${device.state}${device.error ? `: ${device.error}` : ''}`);
    const ns = c.namespaces.find((n) => n.nsid === METADATA_NSID);
    if (!ns) throw new HomidError('extent-source', `extents address namespace ${METADATA_NSID}, which is not active on device '${name}'`);
    const namespaceBytes = ns.blocks * ns.blockSize;
    const source = device.config.extents;
    let job: ResolveJob;
    let reader: DeviceReader | null = null;
    if (source === 'fiemap') {
      job = {
        kind: 'fiemap',
        fd,
        path: real,
        target: { device: name, imageFile: emuImageFile(device.config.uri), blockDevice: device.config.blockDevice ?? null, namespaceBytes, lbaSize: ns.blockSize, ublk: this.ublkRanges(name) },
      };
    } else {
      if (!imagePath) throw new HomidError('extent-source', `device '${name}': no path inside the file system for the file`);
      let src: Extract<ResolveJob, { kind: 'decoder' }>['source'];
      if (device.imagePath !== null) src = { kind: 'file', path: device.imagePath };
      else if (device.metadata !== null) {
        reader = device.metadata;
        src = { kind: 'device', size: reader.size, blockSize: reader.blockSize, maxReadBytes: Math.min(reader.maxReadBytes, CH_DATA_BYTES), timeoutMs: reader.timeoutMs };
      } else throw new HomidError('extent-source', `device '${name}' has no metadata source for its decoder (extents = "${source}")`);
      job = { kind: 'decoder', fd, path: real, device: name, fs: source === 'decoder:xfs' ? 'xfs' : 'ext4', imagePath, source: src };
    }
    const r = await this.pool.run(job, reader);
    checkMapOnNamespace(r.map, name, namespaceBytes, ns.blockSize);
    return r.map;
  }

  private schedule(entry: ExtentEntry, device: DeviceEntry): void {
    if (entry.released) return;
    entry.writer.begin(); // readers see the map is stale at once
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = setTimeout(() => {
      entry.timer = null;
      void this.refresh(entry, device);
    }, DEBOUNCE_MS);
    entry.timer.unref();
  }

  /**
   * Re-resolve on a resolver thread and publish (also used when a watch is not possible). A refresh asked for
   * while one is in flight runs once more after it; the promise settles when the entry is up to date.
   */
  refresh(entry: ExtentEntry, device: DeviceEntry): Promise<void> {
    if (entry.released) return Promise.resolve();
    if (entry.refreshing) {
      entry.again = true;
      return entry.refreshing;
    }
    const run = async (): Promise<void> => {
      do {
        entry.again = false;
        let map: FileMap | null = null;
        let err: string | null = null;
        try {
          map = await this.resolve(entry.fd, entry.path, entry.imagePath, device);
          if (map.extents.length > entry.writer.capacity) throw new Error(`${map.extents.length} extents exceed the table capacity ${entry.writer.capacity}`);
        } catch (e) {
          err = (e as Error).message;
        }
        if (entry.released) return; // its table is gone
        if (map !== null && err === null) {
          entry.map = map;
          entry.writer.publish(map, entry.dev);
          entry.lastError = null;
        } else {
          entry.lastError = err;
          entry.map = { ...entry.map, extents: [] };
          entry.writer.publishError();
          this.log.warn({ path: entry.path, err }, 'extent refresh failed; map published as invalid');
        }
        entry.refreshes++;
        for (const l of entry.listeners) l(entry);
        this.log.info({ device: entry.device, path: entry.path, extents: entry.map.extents.length, generation: entry.writer.generation }, 'extents refreshed');
      } while (entry.again && !entry.released);
    };
    const p = run().finally(() => {
      entry.refreshing = null;
    });
    entry.refreshing = p;
    return p;
  }

  release(entry: ExtentEntry): void {
    if (--entry.refs > 0) return;
    entry.released = true;
    this.entries.delete(entry.key);
    entry.watcher?.close();
    if (entry.timer) clearTimeout(entry.timer);
    entry.region.close();
    // A resolver thread may still flush or map through the descriptor: close it once its job is over.
    if (entry.refreshing) void entry.refreshing.then(() => closeFd(entry.fd));
    else closeFd(entry.fd);
  }

  /** Drop every entry and stop the resolver threads. */
  async closeAll(): Promise<void> {
    this.closed = true;
    for (const e of [...this.entries.values()]) {
      e.refs = 1;
      this.release(e);
    }
    await this.pool.close();
  }
}
