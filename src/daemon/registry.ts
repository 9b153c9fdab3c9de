/**
 * The devices homid serves: each configured device is opened and brought up with openController
 * (src/device/controller.ts).
 * A device that fails to come up is kept in the registry as 'failed' with its error (reported by status);
 * the others are served. homid keeps every admin queue to itself.
 *
 * A device with a decoder extent source (extents = "decoder:ext4" | "decoder:xfs") also gets a metadata
 * source for namespace 1: a DeviceReader (one I/O queue pair homid keeps for reading file-system metadata
 * from the device itself) for PCIe controllers and memory-backed emu:// devices; for a file-backed emu://
 * device, the image file itself (the same bytes: the embedded controller reads and writes the file with
 * pread/pwrite; reading it directly is 2 to 4 times faster, measured, and needs no queue pair).
 */
import { openController, type OpenedController } from '../device/controller.js';
import { openDevice } from '../device/open.js';
import { parseDeviceUri } from '../device/uri.js';
import type { Controller } from '../driver/controller.js';
import type { Transport } from '../transport/transport.js';
import { DeviceBlockSource, DeviceReader } from '../extents/device-source.js';
import { detectFs } from '../extents/open.js';
import { FileBlockSource, type BlockSource } from '../extents/source.js';
import type { DeviceConfig } from './config.js';
import { HomidError } from './errors.js';

export type DeviceState = 'starting' | 'live' | 'failed' | 'closed';

export interface DeviceEntry {
  readonly config: DeviceConfig;
  state: DeviceState;
  error: string | null;
  transport: Transport | null;
  controller: Controller | null;
  /** The transport with its controller, as opened (closes both). */
  opened: OpenedController | null;
  /** For decoder extent sources on a file-backed emu:// device: the image its namespace 1 is backed by. */
  imagePath: string | null;
  /** For decoder extent sources without an image file: namespace 1 read through homid's metadata queue pair. */
  metadata: DeviceReader | null;
}

/**
 * A fresh BlockSource over namespace 1 of a decoder device (the image file, or the device through its
 * DeviceReader), with an empty cache: make one per decode, close it after. Throws 'extent-source' when the
 * device has neither.
 */
export function metadataSource(e: DeviceEntry): BlockSource {
  if (e.imagePath !== null) return new FileBlockSource(e.imagePath);
  if (e.metadata !== null) return new DeviceBlockSource(e.metadata);
  throw new HomidError('extent-source', `device '${e.config.name}' has no metadata source for its decoder (extents = "${e.config.extents}")`);
}

/** The namespace file-system decoders read (extents address namespace 1 of a device). */
export const METADATA_NSID = 1;

export interface RegistryLog {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** How a device is opened (tests inject transports, e.g. an emu in shared-memory mode). */
export type TransportOpener = (cfg: DeviceConfig) => Promise<Transport>;

/** A queue pair created for another driver (a lease) was destroyed by a controller reset or removal. */
export type QueueLostHandler = (device: string, qid: number, reason: string) => void;

export class DeviceRegistry {
  readonly devices = new Map<string, DeviceEntry>();
  /** Set by homid: told when a controller reset or removal destroys a leased queue pair. */
  onQueueLost: QueueLostHandler | null = null;
  constructor(
    private readonly log: RegistryLog,
    private readonly opener: TransportOpener = (c) => openDevice(c.uri),
  ) {}

  /** Bring up every device; never throws for one device's failure. */
  async start(configs: DeviceConfig[]): Promise<void> {
    await Promise.all(configs.map((c) => this.bringUp(c)));
  }

  private async bringUp(cfg: DeviceConfig): Promise<void> {
    const e: DeviceEntry = { config: cfg, state: 'starting', error: null, transport: null, controller: null, opened: null, imagePath: null, metadata: null };
    this.devices.set(cfg.name, e);
    try {
      const decoder = cfg.extents.startsWith('decoder:');
      if (decoder) {
        const u = parseDeviceUri(cfg.uri);
        if (u.kind === 'emu' && u.file !== null) e.imagePath = u.file;
      }
      const opened = await openController(cfg.uri, {
        ioQueues: cfg.ioQueues,
        onRemoteQueueLost: (rq, reason) => this.onQueueLost?.(cfg.name, rq.qid, reason),
        openTransport: () => this.opener(cfg),
      });
      e.opened = opened;
      e.transport = opened.transport;
      e.controller = opened.controller;
      const c = opened.controller;
      if (decoder) {
        if (!c.namespaces.some((n) => n.nsid === METADATA_NSID)) {
          throw new HomidError('extent-source', `extents = "${cfg.extents}" reads namespace ${METADATA_NSID}, which is not active on '${cfg.uri}'`);
        }
        if (e.imagePath === null) e.metadata = await DeviceReader.open(c, { nsid: METADATA_NSID, label: cfg.name });
        this.checkFileSystem(e);
      }
      e.state = 'live';
      this.log.info(
        { device: cfg.name, uri: cfg.uri, model: c.identity.model.trim(), namespaces: c.namespaces.length, ioQueuePairs: c.maxIoQueuePairs, metadataQueue: e.metadata?.qp.qid ?? null },
        'device up',
      );
    } catch (err) {
      e.state = 'failed';
      e.error = (err as Error).message;
      this.log.error({ device: cfg.name, uri: cfg.uri, err: e.error }, 'device failed to come up; serving the others');
      const opened = e.opened;
      const m = e.metadata;
      e.opened = null;
      e.transport = null;
      e.controller = null;
      e.metadata = null;
      if (m) await m.close().catch(() => undefined);
      if (opened) await opened.close().catch(() => undefined);
    }
  }

  /**
   * Say at bring-up whether namespace 1 holds the file system the decoder expects. Not fatal: the image may be
   * written later (through a lease); each resolve reads the device afresh. A read error is fatal.
   */
  private checkFileSystem(e: DeviceEntry): void {
    const want = e.config.extents === 'decoder:xfs' ? 'xfs' : 'ext4';
    const src = metadataSource(e);
    let found: string | null;
    try {
      found = detectFs(src);
    } finally {
      src.close?.();
    }
    if (found !== want) this.log.info({ device: e.config.name, expected: want, found }, `namespace ${METADATA_NSID} holds no ${want} file system yet; extents resolve once it does`);
  }

  /** A live device or a typed refusal. */
  live(name: string): DeviceEntry & { controller: Controller; transport: Transport } {
    const e = this.devices.get(name);
    if (!e) throw new HomidError('no-device', `no device '${name}' (configured: ${[...this.devices.keys()].join(', ') || 'none'})`);
    if (e.state !== 'live' || !e.controller || !e.transport) throw new HomidError('device-down', `device '${name}' is ${e.state}${e.error ? `: ${e.error}` : ''}`);
    return e as DeviceEntry & { controller: Controller; transport: Transport };
  }

  async close(): Promise<void> {
    await Promise.all(
      [...this.devices.values()].map(async (e) => {
        if (e.metadata) await e.metadata.close().catch(() => undefined);
        e.metadata = null;
        if (e.opened) await e.opened.close().catch(() => undefined);
        e.opened = null;
        e.controller = null;
        e.transport = null;
        if (e.state === 'live') e.state = 'closed';
      }),
    );
  }
}

/**
 * The daemon's opener: embedded controllers in memfd mode, so their queue and data memory can be mapped by
 * client processes (raw grants, mediated data buffers); PCIe devices as usual.
 */
export const memfdOpener: TransportOpener = (cfg) => openDevice(cfg.uri, { sharedMemory: 'memfd' });
