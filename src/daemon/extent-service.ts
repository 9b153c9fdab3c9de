/**
 * The extent service. A client proves access to a file by passing an open descriptor (never a path string);
 * homid flushes the file's dirty data, resolves its extents (FIEMAP with FIEMAP_FLAG_SYNC, or the on-disk
 * decoder for a device homid owns), caches them by (device, st_dev, st_ino), and publishes them in a shared
 * table (extent-table.ts) with a generation counter. A watch on the file invalidates and refreshes the entry:
 * the generation goes odd while the map is rebuilt and even again with the new map.
 *
 * Decoder sources (extents = "decoder:ext4" | "decoder:xfs") read the unmounted file system on namespace 1 of
 * the device itself, through homid's metadata queue pair (DeviceReader, extents/device-source.ts), for any
 * device homid brings up (PCIe, emu:// in memory; a file-backed emu:// device's image file is read directly,
 * see registry.ts). The descriptor must name a file under the
 * device's `extent_root` (the host directory the image was built from, e.g. with mkfs.ext4 -d); its path
 * relative to that root is looked up on the device. The descriptor proves the client may read the file; the
 * decoder says where the bytes are on the device. A device read that fails or times out refuses with
 * 'device-io'.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fiemapFd } from '../extents/fiemap.js';
import { DeviceReadError } from '../extents/device-source.js';
import { openSource } from '../extents/open.js';
import type { FileMap } from '../extents/types.js';
import { metadataSource, type DeviceEntry } from './registry.js';
import { HomidError } from './errors.js';
import { ExtentTableWriter, extentTableBytes } from './extent-table.js';
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
  fd: number;
}

export interface ExtentServiceLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

const DEFAULT_CAPACITY = 1024;
/** Coalesce bursts of change events (a rewrite is truncate + several writes). */
const DEBOUNCE_MS = 30;

/** The real path of an fd this process holds. */
export function fdPath(fd: number): string {
  return fs.readlinkSync(`/proc/self/fd/${fd}`);
}

export class ExtentService {
  readonly entries = new Map<string, ExtentEntry>();
  constructor(private readonly regions: RegionProvider, private readonly log: ExtentServiceLog) {}

  /**
   * Resolve (or take from the cache) the map of the file open on `fd`, for `device`. The service keeps its
   * own duplicate of the descriptor while the entry lives; the caller still owns `fd`.
   */
  acquire(fd: unknown, device: DeviceEntry): ExtentEntry {
    if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
      throw new HomidError('needs-fd', 'a file must be passed as an open descriptor (SCM_RIGHTS); homid does not accept path strings');
    }
    let st: fs.Stats;
    try {
      st = fs.fstatSync(fd);
    } catch (e) {
      throw new HomidError('needs-fd', `descriptor ${fd} is not usable: ${(e as Error).message}`);
    }
    if (!st.isFile()) throw new HomidError('not-a-file', 'the descriptor is not a regular file');
    const source = device.config.extents;
    if (source === 'none') throw new HomidError('extent-source', `device '${device.config.name}' has no extent source (extents = "none")`);
    const key = `${device.config.name}:${st.dev}:${st.ino}`;
    const hit = this.entries.get(key);
    if (hit) {
      hit.refs++;
      return hit;
    }
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
    const own = fs.openSync(`/proc/self/fd/${fd}`, 'r');
    let map: FileMap;
    try {
      map = this.resolve(own, real, imagePath, device);
    } catch (e) {
      fs.closeSync(own);
      if (e instanceof HomidError) throw e;
      throw new HomidError('extent-source', `cannot map the file: ${(e as Error).message}`);
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
      refs: 1,
      refreshes: 0,
      lastError: null,
      listeners: new Set(),
      watcher: null,
      timer: null,
      fd: own,
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

  private resolve(fd: number, real: string, imagePath: string | null, device: DeviceEntry): FileMap {
    const source = device.config.extents;
    // Flush the file's dirty data so delayed allocations have blocks (FIEMAP_FLAG_SYNC does it again for FIEMAP).
    try {
      fs.fdatasyncSync(fd);
    } catch {
      // read-only file systems and the like
    }
    if (source === 'fiemap') return fiemapFd(fd, { sync: true, path: real });
    if (!imagePath) throw new HomidError('extent-source', `device '${device.config.name}': no path inside the file system for the file`);
    // A fresh source (and block cache) per resolve: the device may have been rewritten since the last one.
    const src = metadataSource(device);
    try {
      const img = openSource(src, { fs: source === 'decoder:xfs' ? 'xfs' : 'ext4' });
      try {
        return img.mapPath(imagePath);
      } finally {
        img.close();
      }
    } catch (e) {
      if (e instanceof DeviceReadError) throw new HomidError('device-io', `device '${device.config.name}': ${e.message}`);
      throw e;
    } finally {
      src.close?.();
    }
  }

  private schedule(entry: ExtentEntry, device: DeviceEntry): void {
    if (entry.refs <= 0) return;
    entry.writer.begin(); // readers see the map is stale at once
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = setTimeout(() => {
      entry.timer = null;
      this.refresh(entry, device);
    }, DEBOUNCE_MS);
    entry.timer.unref();
  }

  /** Re-resolve now and publish (also used when a watch is not possible). */
  refresh(entry: ExtentEntry, device: DeviceEntry): void {
    if (entry.refs <= 0) return;
    try {
      const map = this.resolve(entry.fd, entry.path, entry.imagePath, device);
      if (map.extents.length > entry.writer.capacity) throw new Error(`${map.extents.length} extents exceed the table capacity ${entry.writer.capacity}`);
      entry.map = map;
      entry.writer.publish(map, entry.dev);
      entry.lastError = null;
    } catch (e) {
      entry.lastError = (e as Error).message;
      entry.map = { ...entry.map, extents: [] };
      entry.writer.publishError();
      this.log.warn({ path: entry.path, err: entry.lastError }, 'extent refresh failed; map published as invalid');
    }
    entry.refreshes++;
    for (const l of entry.listeners) l(entry);
    this.log.info({ device: entry.device, path: entry.path, extents: entry.map.extents.length, generation: entry.writer.generation }, 'extents refreshed');
  }

  release(entry: ExtentEntry): void {
    if (--entry.refs > 0) return;
    this.entries.delete(entry.key);
    entry.watcher?.close();
    if (entry.timer) clearTimeout(entry.timer);
    entry.region.close();
    try {
      fs.closeSync(entry.fd);
    } catch {
      // already closed
    }
  }

  closeAll(): void {
    for (const e of [...this.entries.values()]) {
      e.refs = 1;
      this.release(e);
    }
  }
}
