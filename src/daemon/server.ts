/**
 * homid on its Unix socket: one ClientSession per connection (credentials from SO_PEERCRED), the message
 * catalogue of src/ipc/messages.ts mapped onto Homid's methods, and the lease tie: when a connection closes
 * (the client closed it, crashed or was killed) every queue pair and file grant of its session is reclaimed.
 */
import { pino } from 'pino';
import { HomidErrorCode, IpcErrorCode, type WireErrorCode } from '../ipc/errors.js';
import { readExtentTable } from '../ipc/extent-table.js';
import { PROTOCOL_VERSION } from '../ipc/frame.js';
import type { LeaseGrant } from '../ipc/messages.js';
import { IpcServer, type IpcConnection, type IpcReply, type IpcRequest } from '../ipc/server.js';
import { closeFd } from '../sys/shm.js';
import type { HomidConfig } from './config.js';
import { HomidError } from './errors.js';
import { HOMID_VERSION, Homid, type ClientSession, type HomidLogger, type HomidOptions } from './homid.js';
import { memfdOpener } from './registry.js';
import { memfdRegions } from './shared-region.js';

function fail(code: WireErrorCode, message: string): IpcReply {
  return { response: { ok: false, error: { code, message } } };
}

export interface HomidServer {
  homid: Homid;
  ipc: IpcServer;
  close(): Promise<void>;
}

/**
 * Take the socket, then bring up the devices, then serve. The socket comes first: a second homid started while
 * one is live fails on the socket ('another server is listening') before it touches (resets) any device.
 * Requests that arrive while the devices come up wait for them.
 */
export async function startHomidServer(
  config: HomidConfig,
  opts: { logger?: HomidLogger; socket?: string; dmaBufOpener?: HomidOptions['dmaBufOpener']; deviceMemorySupplier?: HomidOptions['deviceMemorySupplier'] } = {},
): Promise<HomidServer> {
  const log: HomidLogger = opts.logger ?? pino({ level: config.logLevel, name: 'homid' });
  let homid!: Homid;
  let markReady!: () => void;
  const ready = new Promise<void>((r) => (markReady = r));
  /** Each connection's session, made at its first request. */
  const sessions = new WeakMap<IpcConnection, ClientSession>();
  const sessionOf = (req: IpcRequest): ClientSession => {
    let s = sessions.get(req.conn);
    if (!s) {
      s = homid.connect({ pid: req.cred.pid, uid: req.cred.uid, gid: req.cred.gid });
      sessions.set(req.conn, s);
    }
    return s;
  };
  const handler = async (req: IpcRequest): Promise<IpcReply> => {
    await ready;
    let s: ClientSession;
    try {
      s = sessionOf(req);
    } catch (e) {
      if (!(e instanceof HomidError)) throw e;
      // fail closed: a peer whose identity or class cannot be established is refused and disconnected
      setImmediate(() => req.conn.close());
      return fail(e.code, e.message);
    }
    const r = req.request;
    try {
      switch (r.type) {
        case 'hello':
          if (r.version !== PROTOCOL_VERSION) return fail(IpcErrorCode.UnsupportedVersion, `homid speaks protocol ${PROTOCOL_VERSION}, the client ${r.version}`);
          return { response: { ok: true, version: PROTOCOL_VERSION, server: `homid ${HOMID_VERSION}`, session: s.id, class: s.klass.name, raw: s.raw } };
        case 'listDevices':
          return {
            response: {
              ok: true,
              devices: homid.listDevices().map((d) => ({
                device: d.name,
                uri: d.uri,
                state: d.state,
                error: d.error,
                ...(d.model !== null ? { model: d.model } : {}),
                ...(d.serial !== null ? { serial: d.serial } : {}),
                namespaces: d.namespaces.map((n) => ({ nsid: n.nsid, size: n.blocks * n.blockSize, blockSize: n.blockSize, blocks: n.blocks })),
                maxQueuePairs: d.maxQueuePairs,
                queuePairsInUse: d.queuePairsInUse,
                extents: d.extents,
              })),
            },
          };
        case 'openQueuePair': {
          // a dma-buf data buffer comes as the one descriptor; homid keeps its own duplicate
          if (r.dataDmaBuf === true && req.fds.length !== 1) return fail(IpcErrorCode.MissingFds, 'openQueuePair with dataDmaBuf needs the dma-buf as its one descriptor');
          if (r.dataDmaBuf !== true && req.fds.length !== 0) return fail(IpcErrorCode.UnexpectedFds, 'openQueuePair takes a descriptor only with dataDmaBuf (the dma-buf data buffer)');
          const leases = await homid.openQueuePairs(s, {
            device: r.device,
            nsid: r.nsid,
            depth: r.depth,
            count: r.count,
            mode: r.mode,
            write: r.write === true,
            ...(r.dataBytes !== undefined ? { dataBytes: r.dataBytes } : {}),
            ...(r.dataDmaBuf === true ? { dataDmaBuf: req.fds[0]! } : {}),
            ...(r.dataMemory !== undefined ? { dataMemory: r.dataMemory } : {}),
          });
          const wires = leases.map((l) => l.wire());
          if (wires.some((w) => w === null)) {
            // a transport that exports no memory serves callers in homid's own process only
            for (const l of leases) await homid.closeQueuePair(s, l.id);
            return fail(HomidErrorCode.BadRequest, `device '${r.device}' cannot hand ${r.mode} queues to another process (its transport exports no memory)`);
          }
          const fds: number[] = [];
          const grants = leases.map((l, i): LeaseGrant => {
            const w = wires[i]!;
            const fdBase = fds.length;
            fds.push(...w.fds);
            return { ...w.grant, grantId: String(l.id), qid: l.qid, fdBase, fdCount: w.fds.length };
          });
          return { response: { ok: true, grantId: grants[0]!.grantId, grants }, fds };
        }
        case 'closeQueuePair':
          await homid.closeQueuePair(s, Number(r.grantId));
          return { response: { ok: true } };
        case 'resolveExtents': {
          // homid resolves through its own duplicate of the descriptor: this one closes when the request is done
          const [fd] = req.takeFds();
          try {
            const device = r.device ?? homid.listDevices().find((d) => d.state === 'live' && d.extents !== 'none')?.name;
            if (device === undefined) return fail(HomidErrorCode.ExtentSource, 'no live device has an extent source');
            const { grant, region } = await homid.resolveExtents(s, device, fd);
            const snap = readExtentTable(region.bytes);
            return {
              response: { ok: true, fileId: grant.id, device, size: snap.size, generation: snap.generation, extents: snap.extents, tableBytes: region.size },
              fds: region.fd !== null ? [region.fd] : [],
            };
          } finally {
            if (fd !== undefined) closeFd(fd);
          }
        }
        case 'releaseFile':
          homid.releaseFile(s, r.fileId);
          return { response: { ok: true } };
        case 'openVf': {
          const l = await homid.openVf(s, { pf: r.pf, vq: r.vq, vi: r.vi, nsids: r.nsids });
          const d = l.vfio!.descriptors();
          const v = l.vf;
          return {
            response: { ok: true, leaseId: String(l.id), address: v.address, iommuGroup: l.iommuGroup, scid: v.scid, vfNumber: v.vfNumber, vq: v.resources.vq, vi: v.resources.vi, nsids: v.nsids },
            fds: [d.container, d.group, d.device],
          };
        }
        case 'closeVf':
          await homid.closeVf(s, Number(r.leaseId));
          return { response: { ok: true } };
        case 'sriovStatus':
          return { response: { ok: true, ...(await homid.sriovStatus(s)) } };
        case 'ublkList':
          return { response: { ok: true, devices: homid.ublkList() } };
        case 'ublkAdd': {
          const req = { device: r.device, id: r.ublkId, ...(r.nsid !== undefined ? { nsid: r.nsid } : {}), ...(r.start !== undefined ? { start: r.start } : {}) };
          const more = {
            ...(r.count !== undefined ? { count: r.count } : {}),
            ...(r.queues !== undefined ? { queues: r.queues } : {}),
            ...(r.depth !== undefined ? { depth: r.depth } : {}),
            ...(r.maxIoKib !== undefined ? { maxIoKib: r.maxIoKib } : {}),
          };
          return { response: { ok: true, device: await homid.ublkAdd(s, { ...req, ...more }) } };
        }
        case 'ublkDel':
          await homid.ublkDel(s, r.ublkId, r.force ?? false);
          return { response: { ok: true } };
        case 'status':
          // the socket's accounting (per-uid connections, refusals) is homid-wide: root only
          return { response: { ok: true, ...homid.status(s), ...(s.peer.uid === 0 ? { ipc: await ipc.stats() } : {}) } };
      }
    } catch (e) {
      if (e instanceof HomidError) return fail(e.code, e.message);
      throw e;
    }
    return fail(IpcErrorCode.UnknownType, 'unhandled request');
  };
  const ipc = await IpcServer.listen({
    path: opts.socket ?? config.socket,
    mode: config.socketMode,
    handler,
    onClose: (conn) => {
      const s = sessions.get(conn);
      if (s) void homid.disconnect(s).catch((e: unknown) => log.error({ client: s.id, err: (e as Error).message }, 'reclaim failed'));
    },
    onProtocolError: (e) => log.warn({ conn: e.conn.id, pid: e.conn.cred.pid, code: e.code }, e.message),
    onListenError: (m) => log.error({}, m),
    onRefused: (e) => log.warn({ pid: e.cred?.pid ?? null, uid: e.cred?.uid ?? null, code: e.code, reason: e.reason, unreported: e.unreported }, e.message),
    ...(config.limits.ipc ?? {}),
  });
  try {
    homid = await Homid.start(config, {
      logger: log,
      regions: memfdRegions,
      opener: memfdOpener,
      ...(opts.dmaBufOpener ? { dmaBufOpener: opts.dmaBufOpener } : {}),
      ...(opts.deviceMemorySupplier ? { deviceMemorySupplier: opts.deviceMemorySupplier } : {}),
    });
  } catch (e) {
    await ipc.close();
    throw e;
  }
  markReady();
  log.info({ socket: ipc.path, devices: homid.listDevices().map((d) => `${d.name}:${d.state}`) }, 'homid listening');
  return {
    homid,
    ipc,
    async close(): Promise<void> {
      await ipc.close();
      await homid.stop();
    },
  };
}
