/**
 * Mediated leases: the client writes commands to a software ring (src/ipc/mediated-ring.ts) and homid checks
 * each one against the client's file grants before a hardware queue sees it (daemon/mediated.ts).
 *
 * Direct completions wherever the transport can export memory to another process (a memfd embedded controller,
 * PCIe through vfio or uio): the data buffer and the hardware CQ share one exported region the client maps;
 * the hardware SQ and the PRP lists stay in homid's own memory, which no client sees. Otherwise (an embedded
 * controller over SharedArrayBuffers: in-process clients only) homid relays completions through its own
 * QueuePair. The client gets a MediatedQueueGrant (src/ipc/mediated-grant.ts): descriptor 0 the ring, 1 the
 * exported region (read-only without a write grant).
 */
import type { DmaBuffer } from '../../mem/dma.js';
import type { QueuePair } from '../../driver/queue-pair.js';
import { MEDIATED_GRANT_VERSION, MEDIATED_FD_SEGMENT, MEDIATED_FD_DEVICE_MEMORY, type MediatedQueueGrant } from '../../ipc/mediated-grant.js';
import { ringBytes } from '../../ipc/mediated-ring.js';
import { CQE_SIZE, SQE_SIZE } from '../../nvme/registers.js';
import { closeFd, openReadOnly } from '../../sys/shm.js';
import type { ExportedMemory } from '../../transport/transport.js';
import type { ImportedDmaBuf } from '../../mem/dmabuf.js';
import { DirectHwQueue } from '../direct-hw.js';
import { HomidError } from '../errors.js';
import { LbaSet, MediatedQueue, type MediatedGrant as MediatedAccess, type MediatedPoller } from '../mediated.js';
import type { SharedRegion } from '../shared-region.js';
import { leaseBase, refusalOf, type LeaseBase, type LeaseContext, type LeaseOps } from './lease.js';

export interface MediatedLease extends LeaseBase, LeaseOps {
  readonly kind: 'mediated';
  /** The checked queue homid polls. */
  readonly mediated: MediatedQueue;
  /** The client's software SQ/CQ. */
  readonly ring: SharedRegion;
  /** The data buffer commands transfer to and from (homid's view). */
  readonly data: DmaBuffer;
  /** Direct mode: the hardware CQ the client reaps (homid's view); null when homid relays completions. */
  readonly hwCq: DmaBuffer | null;
  /** What the client maps (descriptor indices as in `fds`). */
  readonly grant: MediatedQueueGrant;
  /** Over the socket: the ring and the exported region; empty in process (relay mode). */
  readonly fds: readonly number[];
}

/** homid's largest PRP-described transfer: one PRP list page of entries. */
function maxTransfer(mdts: number, page: number): number {
  const prpListBytes = page * (page / 8);
  return mdts > 0 ? Math.min(mdts, prpListBytes) : prpListBytes;
}

/**
 * Make a mediated lease; the poller serves it once homid calls start() (after it has registered the lease and
 * computed its file grants). Failures to get memory become typed refusals; what was made is freed on failure.
 */
export async function createMediatedLease(ctx: LeaseContext, poller: MediatedPoller): Promise<MediatedLease> {
  const dev = ctx.dev;
  const c = dev.controller;
  const ns = c.namespaces.find((n) => n.nsid === ctx.nsid)!;
  const t = dev.transport;
  const dma = t.dma;
  const page = dma.pageSize;
  const name = `homid-mq-${ctx.client}-${ctx.id}`;
  const x = t.queueExporter?.() ?? null;
  const dataPart = Math.ceil(ctx.dataBytes / page) * page;
  const cqPart = Math.ceil((ctx.depth * CQE_SIZE) / page) * page;
  let exported: ExportedMemory | null = null;
  /** The client's dma-buf as the device reaches it (ctx.dataDmaBuf). */
  let imported: ImportedDmaBuf | null = null;
  /** Without a write grant the client gets a read-only descriptor of the exported memory (openReadOnly). */
  let clientFd: number | null = null;
  /** The client's descriptor onto the device memory holding the data buffer (ctx.dataDeviceMemory). */
  let deviceFd: number | null = null;
  const devmem = ctx.dataDeviceMemory;
  /** The data buffer is not in the exported region (a dma-buf, or device memory): the region holds the CQ only. */
  const externalData = ctx.dataDmaBuf !== null || devmem !== null;
  let hwSq: DmaBuffer | null = null;
  let direct: DirectHwQueue | null = null;
  let qp: QueuePair | null = null;
  let data: DmaBuffer | null = null;
  let ring: SharedRegion | null = null;
  const releaseMemory = (): void => {
    ring?.close();
    if (clientFd !== null) closeFd(clientFd);
    clientFd = null;
    if (deviceFd !== null) closeFd(deviceFd);
    deviceFd = null;
    devmem?.release();
    if (exported) exported.release();
    else if (data) dma.free(data);
    imported?.release();
    ctx.dataDmaBuf?.close();
    if (hwSq) dma.free(hwSq);
  };
  try {
    if (x) {
      if (ctx.write && !x.writableExportSafe && ctx.uid !== 0) {
        throw new HomidError(
          'write-denied',
          `device '${dev.config.name}' (${x.kind}): mediated writes need a data buffer the client can write, and on this transport a client could release that memory under the device (a hugetlb hole punch); only root gets one here: use vfio, or ask without write`,
        );
      }
      if ((externalData ? cqPart : dataPart + cqPart) > x.maxExportBytes) {
        throw new HomidError(
          'bad-request',
          `device '${dev.config.name}': a mediated queue of depth ${ctx.depth} with ${dataPart} bytes of data needs ${dataPart + cqPart} bytes of exported memory; this transport (${x.kind}) exports at most ${x.maxExportBytes}: ask for less dataBytes or depth`,
        );
      }
      const dmabuf = ctx.dataDmaBuf;
      try {
        if (dmabuf !== null) {
          // the data buffer is the client's dma-buf, imported for this device; homid exports only the hardware CQ
          imported = x.importDmaBuf(dmabuf, name);
          exported = x.exportMemory(cqPart, name);
        } else if (devmem !== null) {
          // the data buffer is in the device's device memory; homid exports only the hardware CQ
          exported = x.exportMemory(cqPart, name);
          deviceFd = devmem.clientFd(ctx.write);
        } else exported = x.exportMemory(dataPart + cqPart, name);
      } catch (e) {
        throw refusalOf(e, dev.config.name);
      }
      const mem = exported;
      if (!ctx.write) clientFd = openReadOnly(mem.fd);
      const cqAt = externalData ? 0 : dataPart;
      data =
        imported !== null
          ? { iova: imported.iova, size: dataPart, bytes: imported.view.subarray(0, dataPart) }
          : devmem !== null
            ? { iova: devmem.buffer.iova, size: dataPart, bytes: devmem.buffer.bytes.subarray(0, dataPart) }
            : { iova: mem.iova, size: dataPart, bytes: mem.view.subarray(0, dataPart) };
      const cq: DmaBuffer = { iova: mem.iova + cqAt, size: cqPart, bytes: mem.view.subarray(cqAt, cqAt + cqPart) };
      const sq = (hwSq = dma.alloc(Math.ceil((ctx.depth * SQE_SIZE) / page) * page, page));
      const remote = await ctx.serial(() => c.createQueuePairOn({ sq, cq }, { entries: ctx.depth }));
      direct = new DirectHwQueue(t, remote);
    } else {
      if (externalData) {
        throw new HomidError(
          'bad-request',
          `device '${dev.config.name}' cannot take a dma-buf or device-memory data buffer: its transport exports no memory to other processes (an embedded controller in SharedArrayBuffer mode)`,
        );
      }
      data = dma.alloc(dataPart, page);
      qp = await ctx.serial(() => c.createQueuePair({ entries: ctx.depth, timeoutMs: 0 }));
    }
  } catch (e) {
    releaseMemory();
    throw e;
  }
  const hw = direct ?? qp!;
  const deleteQueues = async (): Promise<void> => {
    if (direct) {
      if (direct.remote.state === 'live') await c.deleteQueuePair(direct.remote);
    } else await c.deleteQueuePair(qp!);
  };
  try {
    ring = ctx.regions.create(ringBytes(ctx.depth), name);
    const access: MediatedAccess = {
      nsid: ctx.nsid,
      lbaSize: ns.blockSize,
      maxTransfer: maxTransfer(c.identity.mdts, page),
      write: ctx.write,
      readable: new LbaSet(),
      writable: new LbaSet(),
    };
    const mq = new MediatedQueue({ id: ctx.id, entries: ctx.depth, ring, data, hw, dma, grant: access, onDenied: (d) => ctx.onDenied(d) });
    const mem = exported;
    const grant: MediatedQueueGrant = {
      version: MEDIATED_GRANT_VERSION,
      entries: ctx.depth,
      ringBytes: ring.size,
      dataBytes: data.size,
      dataOffset: 0,
      segmentBytes: mem ? mem.bytes : 0,
      // direct mode: the hardware CQ follows the data buffer in the same region (read it, never write it), or,
      // when the data buffer is the client's dma-buf, is alone in the region
      hwCq: mem ? { fd: MEDIATED_FD_SEGMENT, offset: externalData ? 0 : dataPart, bytes: cqPart, qid: hw.qid } : null,
      ...(imported !== null ? { dataDmaBuf: true } : {}),
      ...(devmem !== null ? { dataDevice: { fd: MEDIATED_FD_DEVICE_MEMORY, offset: devmem.fdOffset, what: devmem.what } } : {}),
      nsid: ctx.nsid,
      blockSize: ns.blockSize,
      blocks: ns.blocks,
      maxTransferBytes: access.maxTransfer,
      write: access.write,
    };
    // over the socket a client needs the ring and the exported region; in process it uses the views
    const fds = ring.fd !== null && mem ? [ring.fd, clientFd ?? mem.fd, ...(deviceFd !== null ? [deviceFd] : [])] : [];
    return {
      ...leaseBase(ctx, hw.qid),
      kind: 'mediated',
      mediated: mq,
      ring,
      data,
      hwCq: direct ? direct.remote.cq : null,
      grant,
      fds,
      // homid's own QueuePair (relay mode) is recovered by the driver core; a CQ the client reaps is not
      lostWithController: direct !== null,
      start: () => poller.add(mq),
      revoke: () => {
        mq.revoke();
        poller.remove(mq);
      },
      deleteQueues,
      release: () => {
        mq.free();
        releaseMemory();
      },
      io: () => ({ submitted: mq.stats.submitted, forwarded: mq.stats.forwarded, denied: mq.stats.denied, completed: mq.stats.completed }),
      wire: () => (fds.length >= 2 ? { grant: { mode: 'mediated', grant }, fds } : null),
    };
  } catch (e) {
    await ctx.serial(deleteQueues).catch(() => undefined);
    releaseMemory();
    throw e;
  }
}
