/**
 * The devices homid serves: each configured device is brought up through the driver core (Controller.open).
 * A device that fails to come up is kept in the registry as 'failed' with its error (reported by status);
 * the others are served. homid keeps every admin queue to itself.
 */
import { emuOptionsFor, openDevice } from '../device/open.js';
import { openEmu } from '../transport/emu.js';
import { parseDeviceUri } from '../device/uri.js';
import { Controller } from '../driver/controller.js';
import type { Transport } from '../transport/transport.js';
import type { DeviceConfig } from './config.js';
import { HomidError } from './errors.js';

export type DeviceState = 'starting' | 'live' | 'failed' | 'closed';

export interface DeviceEntry {
  readonly config: DeviceConfig;
  state: DeviceState;
  error: string | null;
  transport: Transport | null;
  controller: Controller | null;
  /** For decoder extent sources: the image the device's namespace 1 is backed by. */
  imagePath: string | null;
}

export interface RegistryLog {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** How a device is opened (tests inject transports, e.g. an emu in shared-memory mode). */
export type TransportOpener = (cfg: DeviceConfig) => Promise<Transport>;

export class DeviceRegistry {
  readonly devices = new Map<string, DeviceEntry>();
  constructor(private readonly log: RegistryLog, private readonly opener: TransportOpener = (c) => openDevice(c.uri)) {}

  /** Bring up every device; never throws for one device's failure. */
  async start(configs: DeviceConfig[]): Promise<void> {
    await Promise.all(configs.map((c) => this.bringUp(c)));
  }

  private async bringUp(cfg: DeviceConfig): Promise<void> {
    const e: DeviceEntry = { config: cfg, state: 'starting', error: null, transport: null, controller: null, imagePath: null };
    this.devices.set(cfg.name, e);
    try {
      if (cfg.extents.startsWith('decoder:')) {
        const u = parseDeviceUri(cfg.uri);
        if (u.kind !== 'emu' || u.file === null) throw new HomidError('extent-source', `extents = "${cfg.extents}" needs a file-backed emu:// device (the decoder reads the image); got '${cfg.uri}'`);
        e.imagePath = u.file;
      }
      e.transport = await this.opener(cfg);
      e.controller = await Controller.open(e.transport, { ioQueues: cfg.ioQueues });
      e.state = 'live';
      const c = e.controller;
      this.log.info({ device: cfg.name, uri: cfg.uri, model: c.identity.model.trim(), namespaces: c.namespaces.length, ioQueuePairs: c.maxIoQueuePairs }, 'device up');
    } catch (err) {
      e.state = 'failed';
      e.error = (err as Error).message;
      this.log.error({ device: cfg.name, uri: cfg.uri, err: e.error }, 'device failed to come up; serving the others');
      const t = e.transport;
      e.transport = null;
      e.controller = null;
      if (t) await t.close().catch(() => undefined);
    }
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
        if (e.controller) await e.controller.close().catch(() => undefined);
        if (e.transport) await e.transport.close().catch(() => undefined);
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
export const memfdOpener: TransportOpener = async (cfg) => {
  const u = parseDeviceUri(cfg.uri);
  if (u.kind !== 'emu') return openDevice(u);
  return openEmu({ ...emuOptionsFor(u), sharedMemory: 'memfd' });
};
