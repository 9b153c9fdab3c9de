/**
 * Memory homid shares with a client: queue rings of mediated queues and extent tables. In one process the
 * stand-in is a SharedArrayBuffer; across processes a memfd (src/sys/shm.ts) whose fd travels by SCM_RIGHTS.
 * A provider is chosen when homid starts.
 */
import * as fs from 'node:fs';
import { createShm, openReadOnly, shmPageRound } from '../sys/shm.js';

export interface SharedRegion {
  /** The whole region (length = size). */
  readonly bytes: Uint8Array;
  readonly size: number;
  /** File descriptor to pass to a client (memfd), or null for in-process memory. */
  readonly fd: number | null;
  /** Unmap / close (idempotent). */
  close(): void;
}

export interface RegionProvider {
  readonly kind: string;
  /**
   * A zeroed region of at least `size` bytes whose size no client can change; `readOnlyForClients` regions are
   * sealed against client writes (homid keeps writing through its own view).
   */
  create(size: number, name: string, opts?: { readOnlyForClients?: boolean }): SharedRegion;
}

/** In-process regions (SharedArrayBuffer). */
export const sabRegions: RegionProvider = {
  kind: 'sab',
  create(size: number): SharedRegion {
    const sab = new SharedArrayBuffer(Math.max(8, Math.ceil(size / 8) * 8));
    const bytes = new Uint8Array(sab);
    return { bytes, size: bytes.length, fd: null, close: () => undefined };
  },
};

/**
 * Cross-process regions: memfds mapped MAP_SHARED (createShm: sealed against shrinking and growing, so a client
 * cannot truncate one under homid's mapping). A region read-only to clients is also sealed F_SEAL_FUTURE_WRITE
 * after homid's own mapping exists: that is the guarantee (a client that reopens /proc/self/fd/N O_RDWR still
 * cannot write, punch holes or map it writable). The fd handed out is besides a second, O_RDONLY descriptor of
 * the same memfd (opened through /proc/self/fd).
 */
export const memfdRegions: RegionProvider = {
  kind: 'memfd',
  create(size: number, name: string, opts: { readOnlyForClients?: boolean } = {}): SharedRegion {
    const r = createShm(`homid-${name}`, shmPageRound(size), { readOnlyForOthers: opts.readOnlyForClients === true });
    let ro: number | null = null;
    try {
      if (opts.readOnlyForClients) ro = openReadOnly(r.fd);
    } catch (e) {
      r.close();
      throw e;
    }
    const bytes = new Uint8Array(r.buffer);
    return {
      bytes,
      size: r.size,
      fd: ro ?? r.fd,
      close(): void {
        r.close();
        if (ro !== null) {
          try {
            fs.closeSync(ro);
          } catch {
            // closed
          }
          ro = null;
        }
      },
    };
  },
};
