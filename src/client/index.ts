/**
 * The homid client library: connect, hello, list devices, open queue pairs (raw: the driver core's QueuePair
 * over memory homid shares, via attachQueuePair; mediated: MediatedQueuePair over homid-polled rings, the same
 * submitIo / ring / poll API; gpu: the checked grant and its descriptors, for a GPU layer to map and register),
 * resolve extents (a descriptor, never a path), read a file through its extents, status, close. Closing the
 * connection (or dying) gives every queue pair back.
 */
import * as fs from 'node:fs';
import { attachQueuePair } from '../driver/attach.js';
import { IpcClient } from '../ipc/client.js';
import { PROTOCOL_VERSION } from '../ipc/frame.js';
import { MEDIATED_FD_RING, MEDIATED_FD_SEGMENT, validateMediatedGrant, type MediatedQueueGrant } from '../ipc/mediated-grant.js';
import {
  DEFAULT_SOCKET,
  type DeviceInfo,
  type ErrorResponse,
  type GpuDeviceKind,
  type LeaseGrant,
  type OkResponse,
  type RequestType,
  type SriovStatusResult,
  type StatusResult,
  type UblkDeviceStatus,
} from '../ipc/messages.js';
import { validateRawGrant, type RawQueueGrant } from '../ipc/raw-grant.js';
import { WireFormatError } from '../ipc/validate.js';
import { mapShmFd, closeFd, ShmRegion } from '../sys/shm.js';
import { mapDmaBuf } from '../sys/dmabuf.js';
import { readExtentTable, tryReadExtentTable, extentTableGeneration, type ExtentSnapshot } from '../ipc/extent-table.js';
import { MediatedQueuePair } from './mediated-queue.js';
import { Controller } from '../driver/controller.js';
import { openPcieVfioFds, type PcieTransport } from '../transport/pcie.js';

import { ClientErrorCode, HomidClientError } from './errors.js';
import type { Lease, MediatedLease, RawLease } from './lease.js';
import { readExtents, type ReadOptions } from './read-file.js';

export { MediatedQueuePair } from './mediated-queue.js';
export { ClientErrorCode, HomidClientError } from './errors.js';
export type { Lease, MediatedGrantInfo, MediatedLease, RawLease } from './lease.js';
export {
  DEFAULT_MAX_COMMAND_BYTES,
  DEFAULT_READ_DEPTH,
  DEFAULT_READ_TIMEOUT_MS,
  ExtentReader,
  planRead,
  readExtents,
  type ReadCommand,
  type ReadDest,
  type ReadOptions,
  type ReadPlan,
  type ReadStats,
} from './read-file.js';

/** What openQueuePairs asks for (the fields of the openQueuePair request). */
export interface OpenOptions {
  device: string;
  nsid?: number;
  depth: number;
  count?: number;
  mode?: 'raw' | 'mediated';
  write?: boolean;
  dataBytes?: number;
  /**
   * Mediated, count 1: a dma-buf fd of this process (e.g. a udmabuf) to be the data buffer. It is sent to homid,
   * which imports it for the device; this process keeps owning it, and the lease maps it for the data view.
   */
  dataDmaBuf?: number;
  /**
   * Mediated: 'device' asks for the data buffer in the device's device memory (homid's config device_memory: a
   * peer PCI function's BAR the controller writes peer to peer); the lease maps only its own buffer of it.
   */
  dataMemory?: 'host' | 'device';
}

/** What openGpuQueue asks for: one queue pair (the fields of the openQueuePair request, mode 'gpu'). */
export interface GpuQueueOptions {
  device: string;
  /** Namespace (default 1). */
  nsid?: number;
  /** SQ and CQ entries. */
  depth: number;
  /** Bytes of data region with the queue pair (homid's default when absent). */
  dataBytes?: number;
  /** Passed on as for raw queues: a GPU queue, like a raw one, is not checked per command. */
  write?: boolean;
}

/**
 * A GPU queue pair: the checked raw grant and the descriptors it names (this process owns them), for a GPU layer
 * to map and register with its context; nothing is mapped here. `busyPoll`: homid holds the controller (a
 * software one that sleeps when idle) awake for the lease, so doorbell stores alone are seen; `device`: the
 * controller's kind. close() gives the queue pair back and closes the descriptors; mappings made from them stay
 * valid memory (stale once homid deleted the queues) until they are unmapped.
 */
export interface GpuQueueLease {
  mode: 'gpu';
  grantId: string;
  qid: number;
  grant: RawQueueGrant;
  /** Descriptor i is the grant's fd index i. */
  fds: readonly number[];
  busyPoll: boolean;
  device: GpuDeviceKind;
  /** Why the queue pair is gone (the connection to homid closed, so homid reclaimed it), or null. */
  readonly gone: string | null;
  /** Give the queue pair back to homid (when still connected) and close the descriptors. Idempotent. */
  close(): Promise<void>;
}

/** A published extent map: re-read it when `changed` (the generation moved). */
export class ExtentMapHandle {
  private seen: number;
  constructor(
    readonly fileId: number,
    readonly device: string,
    private readonly region: ShmRegion | null,
    first: ExtentSnapshot,
  ) {
    this.seen = first.generation;
    this.last = first;
  }
  last: ExtentSnapshot;
  get generation(): number {
    return this.region ? extentTableGeneration(new Uint8Array(this.region.buffer)) : this.last.generation;
  }
  /** True when homid rebuilt (or is rebuilding) the map since the last read. */
  get changed(): boolean {
    return this.generation !== this.seen;
  }
  /** The current map (null while homid is rebuilding it). */
  read(): ExtentSnapshot | null {
    if (!this.region) return this.last;
    const s = tryReadExtentTable(new Uint8Array(this.region.buffer));
    if (s) {
      this.seen = s.generation;
      this.last = s;
    }
    return s;
  }
  close(): void {
    this.region?.close();
  }
}

/** The result of a response, or HomidClientError with homid's code and message. */
function check<T extends RequestType>(r: OkResponse<T> | ErrorResponse): OkResponse<T> {
  if (r.ok === false) throw new HomidClientError(r.error.code, r.error.message);
  return r;
}

/**
 * An SR-IOV virtual function homid handed to this process: its VFIO descriptors (container, group, device)
 * until `open()` turns them into a transport and a live controller driven by HOMI's driver (its own admin
 * queue). Closing (or losing the connection) closes the transport; homid then reclaims the VF.
 */
export class VfLease {
  transport: PcieTransport | null = null;
  controller: Controller | null = null;
  private fds: { container: number; group: number; device: number } | null;
  constructor(
    readonly leaseId: string,
    readonly address: string,
    readonly iommuGroup: number,
    readonly scid: number,
    readonly vfNumber: number,
    readonly vq: number,
    readonly vi: number,
    readonly nsids: readonly number[],
    fds: { container: number; group: number; device: number },
  ) {
    this.fds = fds;
  }

  /** Bring the VF's controller up with HOMI's driver (I/O queue pairs: at most vq - 1). */
  async open(opts: { ioQueues?: number } = {}): Promise<Controller> {
    if (!this.fds) throw new Error(`VF ${this.address}: already opened or closed`);
    const fds = this.fds;
    this.fds = null;
    this.transport = await openPcieVfioFds(this.address, this.iommuGroup, fds);
    try {
      this.controller = await Controller.open(this.transport, { ioQueues: opts.ioQueues ?? Math.max(1, this.vq - 1) });
    } catch (e) {
      await this.transport.close().catch(() => undefined);
      this.transport = null;
      throw e;
    }
    return this.controller;
  }

  /** Shut the controller down and close the VFIO descriptors (idempotent). */
  async release(): Promise<void> {
    const c = this.controller;
    const t = this.transport;
    this.controller = null;
    this.transport = null;
    if (c) await c.close().catch(() => undefined);
    if (t) await t.close().catch(() => undefined);
    if (this.fds) for (const fd of [this.fds.device, this.fds.group, this.fds.container]) closeFd(fd);
    this.fds = null;
  }
}

export class HomidClient {
  /** VFs held: released (controller shut down, descriptors closed) when the connection ends. */
  private readonly vfs = new Set<VfLease>();
  /** Raw leases still attached: detached (doorbells and memory unmapped) when the connection ends. */
  private readonly raws = new Set<RawLease>();
  /** Mediated leases still open: abandoned (in-flight commands fail at once) when the connection ends. */
  private readonly mediated = new Set<MediatedLease>();
  /** GPU leases still open: told that they are gone when the connection ends (the GPU layer stops its kernels). */
  private readonly gpus = new Map<GpuQueueLease, (reason: string) => void>();
  private constructor(readonly ipc: IpcClient) {
    // homid reclaims every queue pair of a closed connection (or is gone): stop touching them, and let go of
    // the mappings (a VFIO device mapping would otherwise keep the device busy for the next owner). Mediated
    // queues are told at once, so their callers see STATUS_HOMID_GONE rather than waiting for a timeout.
    ipc.onClose((reason) => {
      for (const l of this.raws) l.qp.detach();
      this.raws.clear();
      for (const l of this.mediated) l.qp.abandon(`homid connection closed: ${reason}`);
      this.mediated.clear();
      for (const gone of this.gpus.values()) gone(`homid connection closed: ${reason}`);
      this.gpus.clear();
      for (const v of this.vfs) void v.release();
      this.vfs.clear();
    });
  }

  /**
   * Connect and say hello. `timeoutMs` bounds every request of the connection, hello included (default 30 s).
   * A failed hello (timeout, refusal) closes the connection before the error is rethrown.
   */
  static async connect(
    socket = process.env.HOMID_SOCKET ?? DEFAULT_SOCKET,
    opts: { client?: string; timeoutMs?: number } = {},
  ): Promise<HomidClient & { session: number; raw: boolean; class: string }> {
    const ipc = await IpcClient.connect(socket, opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs });
    const c = new HomidClient(ipc);
    try {
      const { response } = await ipc.request({ type: 'hello', version: PROTOCOL_VERSION, client: opts.client ?? `pid ${process.pid}` });
      const r = check(response);
      return Object.assign(c, { session: r.session, raw: r.raw, class: r.class });
    } catch (e) {
      c.close();
      throw e;
    }
  }

  async listDevices(): Promise<DeviceInfo[]> {
    const { response } = await this.ipc.request({ type: 'listDevices' });
    return check(response).devices;
  }

  /** homid's status as this client may see it (root: everything, with the socket's accounting in `ipc`). */
  async status(): Promise<StatusResult & { ok: true; id: number }> {
    const { response } = await this.ipc.request({ type: 'status' });
    return check(response);
  }

  /** Open `count` queue pairs on `device` (raw unless `mode` says 'mediated'). */
  async openQueuePairs(o: OpenOptions & { mode: 'mediated' }): Promise<MediatedLease[]>;
  async openQueuePairs(o: OpenOptions & { mode?: 'raw' }): Promise<RawLease[]>;
  async openQueuePairs(o: OpenOptions): Promise<Lease[]>;
  async openQueuePairs(o: OpenOptions): Promise<Lease[]> {
    const { response, fds } = await this.ipc.request(
      {
        type: 'openQueuePair',
        device: o.device,
        nsid: o.nsid ?? 1,
        depth: o.depth,
        count: o.count ?? 1,
        mode: o.mode ?? 'raw',
        ...(o.write !== undefined ? { write: o.write } : {}),
        ...(o.dataBytes !== undefined ? { dataBytes: o.dataBytes } : {}),
        ...(o.dataDmaBuf !== undefined ? { dataDmaBuf: true as const } : {}),
        ...(o.dataMemory !== undefined ? { dataMemory: o.dataMemory } : {}),
      },
      o.dataDmaBuf !== undefined ? [o.dataDmaBuf] : [],
    );
    try {
      const r = check(response);
      return r.grants.map((g: LeaseGrant): Lease => {
        const mine = fds.slice(g.fdBase, g.fdBase + g.fdCount);
        if (g.mode === 'gpu') throw new HomidClientError(ClientErrorCode.BadGrant, 'homid answered with a gpu grant: open GPU queues with openGpuQueue');
        if (g.mode === 'raw') {
          const qp = attachQueuePair(g.grant, mine, { closeFds: false });
          const lease = { mode: 'raw', grantId: g.grantId, qid: g.qid, grant: qp.grant, qp } satisfies RawLease;
          this.raws.add(lease);
          return lease;
        }
        let gi: MediatedQueueGrant;
        try {
          gi = validateMediatedGrant(g.grant, mine.length);
        } catch (e) {
          if (e instanceof WireFormatError) throw new HomidClientError(ClientErrorCode.BadGrant, `${e.message} (from homid)`);
          throw e;
        }
        const regions: ShmRegion[] = [];
        try {
          const ring = mapShmFd(mine[MEDIATED_FD_RING]!, gi.ringBytes);
          regions.push(ring);
          // without a write grant homid passes a read-only descriptor: the data buffer and hardware CQ are read-only
          const seg = mapShmFd(mine[MEDIATED_FD_SEGMENT]!, gi.segmentBytes, { readOnly: !gi.write });
          regions.push(seg);
          let data: Uint8Array;
          if (gi.dataDmaBuf === true) {
            if (o.dataDmaBuf === undefined) throw new HomidClientError(ClientErrorCode.BadGrant, 'homid answered with a dma-buf data buffer this client did not send');
            const end = gi.dataOffset + gi.dataBytes;
            const m = mapDmaBuf(o.dataDmaBuf, Math.ceil(end / 4096) * 4096);
            const own = new ShmRegion(o.dataDmaBuf, m.length, m.buffer, m, false, false);
            regions.push(own);
            data = new Uint8Array(own.buffer, gi.dataOffset, gi.dataBytes);
          } else if (gi.dataDevice !== undefined) {
            if (o.dataMemory !== 'device') throw new HomidClientError(ClientErrorCode.BadGrant, 'homid answered with a device-memory data buffer this client did not ask for');
            // the descriptor may reach all of the device memory: map only this lease's buffer
            const dev = mapShmFd(mine[gi.dataDevice.fd]!, Math.ceil(gi.dataBytes / 4096) * 4096, { offset: gi.dataDevice.offset, readOnly: !gi.write });
            regions.push(dev);
            data = new Uint8Array(dev.buffer, 0, gi.dataBytes);
          } else data = new Uint8Array(seg.buffer, gi.dataOffset, gi.dataBytes);
          let hwCq: Uint8Array | null = null;
          if (gi.hwCq) {
            let cq = seg;
            if (gi.hwCq.fd !== MEDIATED_FD_SEGMENT) {
              cq = mapShmFd(mine[gi.hwCq.fd]!, gi.hwCq.offset + gi.hwCq.bytes, { readOnly: true });
              regions.push(cq);
            }
            hwCq = new Uint8Array(cq.buffer, gi.hwCq.offset, gi.hwCq.bytes);
          }
          const lease = { mode: 'mediated', grantId: g.grantId, qid: g.qid, grant: gi, regions, qp: new MediatedQueuePair(new Uint8Array(ring.buffer), data, g.qid, hwCq) } satisfies MediatedLease;
          if (this.ipc.isClosed) lease.qp.abandon('homid connection closed');
          else this.mediated.add(lease);
          return lease;
        } catch (e) {
          for (const r of regions) r.close();
          throw e;
        }
      });
    } finally {
      for (const fd of fds) closeFd(fd);
    }
  }

  /**
   * Open one GPU queue pair on `device`: the grant is checked (validateRawGrant) and returned with its
   * descriptors, unmapped. Needs raw permission and a class with gpu_queues; a transport that exports no memory
   * is refused ('gpu-unsupported').
   */
  async openGpuQueue(o: GpuQueueOptions): Promise<GpuQueueLease> {
    const { response, fds } = await this.ipc.request({
      type: 'openQueuePair',
      device: o.device,
      nsid: o.nsid ?? 1,
      depth: o.depth,
      count: 1,
      mode: 'gpu',
      ...(o.write !== undefined ? { write: o.write } : {}),
      ...(o.dataBytes !== undefined ? { dataBytes: o.dataBytes } : {}),
    });
    let kept: readonly number[] = [];
    try {
      const r = check(response);
      const g = r.grants[0]!;
      if (r.grants.length !== 1 || g.mode !== 'gpu') throw new HomidClientError(ClientErrorCode.BadGrant, `asked for one gpu queue pair, homid answered ${r.grants.map((x) => x.mode).join(', ')}`);
      const mine = fds.slice(g.fdBase, g.fdBase + g.fdCount);
      let grant: RawQueueGrant;
      try {
        grant = validateRawGrant(g.grant, mine.length);
      } catch (e) {
        if (e instanceof WireFormatError) throw new HomidClientError(ClientErrorCode.BadGrant, `${e.message} (from homid)`);
        throw e;
      }
      kept = mine.slice(0, grant.fds.length);
      return this.gpuLease(g.grantId, g.qid, grant, kept, g.busyPoll, g.device);
    } finally {
      for (const fd of fds) if (!kept.includes(fd)) closeFd(fd);
    }
  }

  private gpuLease(grantId: string, qid: number, grant: RawQueueGrant, fds: readonly number[], busyPoll: boolean, device: GpuDeviceKind): GpuQueueLease {
    let gone: string | null = null;
    let closing: Promise<void> | null = null;
    const lease: GpuQueueLease = {
      mode: 'gpu',
      grantId,
      qid,
      grant,
      fds,
      busyPoll,
      device,
      get gone() {
        return gone;
      },
      close: () =>
        (closing ??= (async () => {
          try {
            if (gone === null && !this.ipc.isClosed) check((await this.ipc.request({ type: 'closeQueuePair', grantId })).response);
          } finally {
            gone ??= 'closed';
            this.gpus.delete(lease);
            for (const fd of fds) closeFd(fd);
          }
        })()),
    };
    if (this.ipc.isClosed) gone = 'homid connection closed';
    else this.gpus.set(lease, (reason) => (gone ??= reason));
    return lease;
  }

  /**
   * Ask homid for an SR-IOV virtual function of physical function `pf` (its [[sriov]] name) with `vq` queue and
   * `vi` interrupt resources and namespaces `nsids` attached. `open()` the lease to drive it.
   */
  async openVf(o: { pf: string; vq: number; vi: number; nsids: number[] }): Promise<VfLease> {
    const { response, fds } = await this.ipc.request({ type: 'openVf', pf: o.pf, vq: o.vq, vi: o.vi, nsids: o.nsids });
    let r;
    try {
      r = check(response);
    } catch (e) {
      for (const fd of fds) closeFd(fd);
      throw e;
    }
    if (fds.length !== 3) {
      for (const fd of fds) closeFd(fd);
      throw new WireFormatError(`openVf: expected 3 descriptors (VFIO container, group, device), got ${fds.length}`, 'fds');
    }
    const v = new VfLease(r.leaseId, r.address, r.iommuGroup, r.scid, r.vfNumber, r.vq, r.vi, r.nsids, { container: fds[0]!, group: fds[1]!, device: fds[2]! });
    this.vfs.add(v);
    return v;
  }

  /** Shut the VF down here, then have homid reclaim it. */
  async closeVf(v: VfLease): Promise<void> {
    await v.release();
    this.vfs.delete(v);
    const { response } = await this.ipc.request({ type: 'closeVf', leaseId: v.leaseId });
    check(response);
  }

  /** The ublk block devices homid serves to the kernel. */
  async ublkList(): Promise<UblkDeviceStatus[]> {
    const { response } = await this.ipc.request({ type: 'ublkList' });
    return check(response).devices;
  }

  /** Have homid serve an LBA range of a namespace as /dev/ublkb<ublkId> (root only). */
  async ublkAdd(req: { device: string; ublkId: number; nsid?: number; start?: number; count?: number; queues?: number; depth?: number; maxIoKib?: number }): Promise<UblkDeviceStatus> {
    const { response } = await this.ipc.request({ type: 'ublkAdd', ...req });
    return check(response).device;
  }

  /** Have homid remove /dev/ublkb<ublkId> (root only; refused while mounted unless force). */
  async ublkDel(ublkId: number, force = false): Promise<void> {
    const { response } = await this.ipc.request({ type: 'ublkDel', ublkId, force });
    check(response);
  }

  /** The SR-IOV physical functions homid manages, their secondary controllers and holders. */
  async sriovStatus(): Promise<SriovStatusResult> {
    const { response } = await this.ipc.request({ type: 'sriovStatus' });
    const r = check(response);
    return { pfs: r.pfs };
  }

  async closeQueuePair(l: Lease): Promise<void> {
    const { response } = await this.ipc.request({ type: 'closeQueuePair', grantId: l.grantId });
    check(response);
    if (l.mode === 'mediated') {
      this.mediated.delete(l);
      for (const r of l.regions) r.close();
    } else {
      this.raws.delete(l);
      l.qp.detach();
    }
  }

  /** Resolve the extents of an open file (the descriptor travels by SCM_RIGHTS). */
  async resolveExtents(fd: number, device?: string): Promise<ExtentMapHandle> {
    const { response, fds } = await this.ipc.request({ type: 'resolveExtents', ...(device ? { device } : {}) }, [fd]);
    const r = check(response);
    let region: ShmRegion | null = null;
    if (fds.length === 1) {
      region = mapShmFd(fds[0]!, r.tableBytes, { readOnly: true, ownFd: true });
    }
    const first: ExtentSnapshot = region ? readExtentTable(new Uint8Array(region.buffer)) : { generation: r.generation, valid: true, size: r.size, ino: 0, dev: 0, extents: r.extents };
    return new ExtentMapHandle(r.fileId, r.device, region, first);
  }

  /**
   * Read a whole file through its extents: open it, pass the descriptor, map it, and read its blocks through
   * `lease` with up to `opts.depth` commands in flight (readExtents: raw, into the attached queue pair's data
   * region; mediated, into the grant's data buffer), into a new buffer of the file's size. Fails with
   * 'file-changed' when homid rebuilt the file's extent map before the read was over.
   */
  async readFile(path: string, lease: Lease, device?: string, opts: ReadOptions = {}): Promise<Uint8Array> {
    const fd = fs.openSync(path, 'r');
    let map: ExtentMapHandle;
    try {
      map = await this.resolveExtents(fd, device);
    } finally {
      fs.closeSync(fd);
    }
    try {
      const out = new Uint8Array(map.last.size);
      await readExtents(lease, map, (off, bytes) => out.set(bytes, off), opts);
      return out;
    } finally {
      await this.releaseFile(map);
    }
  }

  /**
   * Give a file grant back and unmap its table (homid drops the file's LBAs from this client's mediated grants
   * and stops counting it against [limits] file_grants_*). Without it, grants last as long as the connection.
   */
  async releaseFile(map: ExtentMapHandle): Promise<void> {
    map.close();
    if (this.ipc.isClosed) return;
    check((await this.ipc.request({ type: 'releaseFile', fileId: map.fileId })).response);
  }

  /** Close the connection (homid reclaims every lease). */
  close(): void {
    void this.ipc.close();
  }
}

/** Read the bytes of `snap` through a lease's queue pair (readExtents into a new buffer of the file's size). */
export async function readThrough(lease: Lease, snap: ExtentSnapshot, opts: ReadOptions = {}): Promise<Uint8Array> {
  const out = new Uint8Array(snap.size);
  await readExtents(lease, snap, (off, bytes) => out.set(bytes, off), opts);
  return out;
}
