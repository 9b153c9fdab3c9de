/**
 * homid's ublk devices ([[ublk]] in the config, or added at run time by root): each one a namespace, or an LBA
 * range of it, served to the kernel as /dev/ublkbN from NVMe I/O queue pairs homid keeps for the kernel (one per
 * ublk queue, provisioned like a raw lease's: driver/attach.ts provisionQueuePair, counted against the device's
 * queue pairs; the ublk I/O thread attaches them). src/ublk/ has the kernel protocol and the I/O thread.
 *
 * Failures to bring a device up are reported (status shows the error), not fatal. A clean stop (homid's stop:
 * SIGTERM) removes every device (STOP_DEV, DEL_DEV) and gives its queue pairs back; homid killed leaves the
 * kernel holding each device quiesced, and the next homid recovers the ones its config names.
 */
import * as fs from 'node:fs';
import { provisionQueuePair, type ProvisionedQueuePair } from '../driver/attach.js';
import type { UblkConfig } from './config.js';
import { HomidError } from './errors.js';
import { refusalOf, type LiveDevice } from './leases/lease.js';
import type { DeviceRegistry } from './registry.js';
import { UblkControl, UblkError } from '../ublk/control.js';
import { UblkDevice, type ProvisionedQueues, type UblkDeviceSpec, type UblkDeviceStatus, type UblkLogger } from '../ublk/device.js';
import { ublkBlockPath } from '../sys/ublk.js';
import { DSM_RANGE_SIZE } from '../nvme/opcodes.js';

/** ONCS bit 2: Dataset Management supported. */
const ONCS_DSM = 1 << 2;
const PAGE = 4096;

/** A configured (or added) ublk device and where it stands. */
export interface UblkEntry {
  config: UblkConfig;
  dev: UblkDevice | null;
  /** Why it is not serving (bring-up failed), or null. */
  error: string | null;
}

/** What status shows of one ublk device. */
export type UblkStatus = Omit<UblkDeviceStatus, 'state'> & { device: string; state: UblkDeviceStatus['state'] | 'failed' };

export interface UblkServiceOptions {
  /** The control device (tests: a path that is not there). */
  controlPath?: string;
}

export class UblkService {
  readonly entries = new Map<number, UblkEntry>();
  private ctrl: UblkControl | null = null;

  constructor(
    private readonly log: UblkLogger,
    private readonly registry: DeviceRegistry,
    /** homid's per-device lock for creating and deleting queue pairs. */
    private readonly serial: <T>(device: string, fn: () => Promise<T>) => Promise<T>,
    private readonly opts: UblkServiceOptions = {},
  ) {}

  /** Bring up every configured device; failures are recorded in the entries and logged. */
  async start(configs: readonly UblkConfig[]): Promise<void> {
    for (const c of configs) {
      try {
        await this.add(c);
      } catch (e) {
        this.log.error({ ublk: c.id, device: c.device, err: (e as Error).message }, 'ublk device not started');
      }
    }
  }

  private control(): UblkControl {
    this.ctrl ??= UblkControl.open(this.opts.controlPath === undefined ? {} : { path: this.opts.controlPath });
    return this.ctrl;
  }

  /** The spec of a config on a live device: the range checked against the namespace, the buffer against MDTS. */
  specFor(c: UblkConfig, dev: LiveDevice): UblkDeviceSpec {
    const ctl = dev.controller;
    const ns = ctl.namespaces.find((n) => n.nsid === c.nsid);
    if (!ns) throw new HomidError('bad-namespace', `ublk ${c.id}: namespace ${c.nsid} is not active on '${c.device}' (active: ${ctl.namespaces.map((n) => n.nsid).join(', ')})`);
    const count = c.count ?? ns.blocks - c.start;
    if (c.start >= ns.blocks || count < 1 || c.start + count > ns.blocks) {
      throw new HomidError('bad-request', `ublk ${c.id}: LBA range start ${c.start} count ${c.count ?? '(rest)'} is outside namespace ${c.nsid} of '${c.device}' (${ns.blocks} blocks)`);
    }
    const mdts = ctl.identity.mdts;
    const limit = Number.isFinite(mdts) && mdts > 0 ? mdts : c.maxIoBytes;
    const bufBytes = Math.max(PAGE, Math.floor(Math.min(c.maxIoBytes, limit) / PAGE) * PAGE);
    if (bufBytes < ns.blockSize) throw new HomidError('bad-request', `ublk ${c.id}: max_io_kib (${c.maxIoBytes / 1024}) is below one block of namespace ${c.nsid} (${ns.blockSize} bytes)`);
    if (c.depth + 1 > ctl.cap.maxQueueEntries) throw new HomidError('bad-depth', `ublk ${c.id}: depth ${c.depth} needs ${c.depth + 1} queue entries; the controller allows ${ctl.cap.maxQueueEntries}`);
    return {
      devId: c.id,
      target: { nsid: c.nsid, blockSize: ns.blockSize, rangeStart: c.start, rangeBlocks: count },
      queues: c.queues,
      depth: c.depth,
      bufBytes,
      discard: (ctl.identity.oncs & ONCS_DSM) !== 0,
    };
  }

  /** Serve `c` (recovering the kernel's device when a previous homid left it quiesced). */
  async add(c: UblkConfig): Promise<UblkStatus> {
    if (this.entries.get(c.id)?.dev) throw new UblkError('busy', `ublk device ${c.id} is already served by this homid`);
    const entry: UblkEntry = { config: c, dev: null, error: null };
    this.entries.set(c.id, entry);
    try {
      const dev = this.registry.live(c.device);
      const spec = this.specFor(c, dev);
      const ctrl = this.control();
      entry.dev = await UblkDevice.create(ctrl, spec, (n) => this.provide(dev, spec, n), this.log);
      return this.statusOf(entry);
    } catch (e) {
      entry.error = (e as Error).message;
      throw e;
    }
  }

  /** n queue pairs on `dev` for one ublk device: SQ/CQ of depth + 1 entries and a data region for the tags' buffers. */
  private async provide(dev: LiveDevice, spec: UblkDeviceSpec, n: number): Promise<ProvisionedQueues> {
    const made: ProvisionedQueuePair[] = [];
    const name = dev.config.name;
    const free = dev.controller.maxIoQueuePairs - dev.controller.queuePairs.length - dev.controller.remoteQueuePairs.length;
    if (n > free) throw new HomidError('device-queues', `ublk ${spec.devId}: device '${name}' has ${free} free I/O queue pairs, the ublk device needs ${n}`);
    // each tag: its buffer and one PRP list page; then the DSM ranges; then slack for the allocator's alignment
    const dataBytes = spec.depth * (spec.bufBytes + PAGE) + Math.ceil((spec.depth * DSM_RANGE_SIZE) / PAGE) * PAGE + 2 * PAGE;
    const release = async (): Promise<void> => {
      for (const p of made.splice(0)) {
        await this.serial(name, () => p.reclaim()).catch((e: unknown) => this.log.error({ ublk: spec.devId, qid: p.grant.qid, err: (e as Error).message }, 'reclaiming a ublk queue pair failed'));
      }
    };
    try {
      for (let i = 0; i < n; i++) {
        const p = await this.serial(name, () =>
          provisionQueuePair(dev.controller, dev.transport, { entries: spec.depth + 1, dataBytes, nsid: spec.target.nsid, name: `homid-ublk${spec.devId}-q${i}` }).catch((e: unknown) => {
            throw refusalOf(e, name);
          }),
        );
        made.push(p);
      }
    } catch (e) {
      await release();
      throw e;
    }
    return { queues: made.map((p) => ({ qid: p.grant.qid, grant: p.grant, fds: p.fds })), release };
  }

  /**
   * Remove ublk device `id`: refused (busy) while its block device is mounted or held open exclusively, unless
   * `force`; then STOP_DEV, DEL_DEV and the queue pairs go back.
   */
  async remove(id: number, opts: { force?: boolean } = {}): Promise<void> {
    const e = this.entries.get(id);
    if (!e) throw new UblkError('no-device', `homid serves no ublk device ${id} (serving: ${[...this.entries.keys()].join(', ') || 'none'})`);
    if (e.dev && e.dev.state === 'live' && !opts.force) assertNotBusy(id);
    if (e.dev) await e.dev.stop();
    this.entries.delete(id);
  }

  private statusOf(e: UblkEntry): UblkStatus {
    if (e.dev) return { device: e.config.device, ...e.dev.status(), error: e.dev.error ?? e.error };
    return {
      device: e.config.device,
      devId: e.config.id,
      blockDevice: ublkBlockPath(e.config.id),
      state: 'failed',
      recovered: false,
      nsid: e.config.nsid,
      blockSize: 0,
      rangeStart: e.config.start,
      rangeBlocks: e.config.count ?? 0,
      depth: e.config.depth,
      bufBytes: e.config.maxIoBytes,
      qids: [],
      io: { reads: 0, writes: 0, flushes: 0, discards: 0, errors: 0, refused: 0, bytesRead: 0, bytesWritten: 0 },
      error: e.error,
    };
  }

  /** The live ublk devices on namespace `nsid` of `device`: their block device and byte range on the namespace. */
  rangesOn(device: string, nsid: number): { blockDevice: string; offset: number; bytes: number }[] {
    const out: { blockDevice: string; offset: number; bytes: number }[] = [];
    for (const e of this.entries.values()) {
      const d = e.dev;
      if (!d || e.config.device !== device || e.config.nsid !== nsid || d.state !== 'live') continue;
      const t = d.spec.target;
      out.push({ blockDevice: d.blockDevice, offset: t.rangeStart * t.blockSize, bytes: t.rangeBlocks * t.blockSize });
    }
    return out;
  }

  list(): UblkStatus[] {
    return [...this.entries.values()].map((e) => this.statusOf(e)).sort((a, b) => a.devId - b.devId);
  }

  /** Clean stop: remove every device (even a mounted one: the kernel fails its I/O from here on) and close the control device. */
  async stop(): Promise<void> {
    for (const id of [...this.entries.keys()]) {
      try {
        await this.remove(id, { force: true });
      } catch (e) {
        this.log.error({ ublk: id, err: (e as Error).message }, 'removing a ublk device failed');
      }
    }
    this.ctrl?.close();
    this.ctrl = null;
  }
}

/** Throws UblkError('busy') when /dev/ublkbN is mounted or held exclusively (an O_EXCL open of a block device fails). */
export function assertNotBusy(id: number): void {
  const path = ublkBlockPath(id);
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_EXCL);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EBUSY') throw new UblkError('busy', `${path} is busy: mounted or held open exclusively (unmount it first, or force the removal)`, 16);
    if (code === 'ENOENT') return;
    throw e;
  }
  fs.closeSync(fd);
}
