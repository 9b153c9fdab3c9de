/**
 * Open a device URI, bring its controller up, and take both down again: the one sequence every caller that
 * starts from a URI uses (`homi identify`, the driver I/O backend, homid's device registry, `homi perf`'s
 * worker-thread mode). It lives here, above the driver core: device/ turns URIs into transports, the driver core
 * never sees a URI.
 *
 * On any failure after the transport opened (bring-up, the caller's check) the controller and the transport are
 * closed before the error is rethrown; close() takes the controller down (queues deleted, normal shutdown) and
 * then releases the transport, even when the controller's close fails.
 */
import { Controller, type ControllerOptions } from '../driver/controller.js';
import type { Transport } from '../transport/transport.js';
import { openDevice, type OpenDeviceOptions } from './open.js';
import type { DeviceUri } from './uri.js';

export interface OpenControllerOptions extends ControllerOptions, OpenDeviceOptions {
  /** How to get the transport (default openDevice(uri, { sharedMemory })); tests and homid inject their own. */
  openTransport?: () => Promise<Transport>;
  /**
   * Checks on the live controller before the handle is returned (a namespace the caller needs, ...). A throw
   * closes everything and is rethrown as it is.
   */
  check?: (controller: Controller, transport: Transport) => void | Promise<void>;
}

/** A transport with its controller up: what openController returns. */
export class OpenedController {
  private closing: Promise<void> | null = null;

  /** Use openController(). */
  constructor(
    readonly uri: string,
    readonly transport: Transport,
    readonly controller: Controller,
  ) {}

  /** Close the controller (delete its queues, shut it down), then the transport. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        await this.controller.close();
      } finally {
        await this.transport.close();
      }
    })();
    return this.closing;
  }
}

/** Open `uri`, bring the controller up (Controller.open with `opts`), run `opts.check`. */
export async function openController(uri: string | DeviceUri, opts: OpenControllerOptions = {}): Promise<OpenedController> {
  const { openTransport, check, sharedMemory, ...controllerOpts } = opts;
  const log = opts.log ?? ((): void => undefined);
  const transport = openTransport ? await openTransport() : await openDevice(uri, { sharedMemory });
  let controller: Controller | null = null;
  try {
    controller = await Controller.open(transport, controllerOpts);
    await check?.(controller, transport);
    return new OpenedController(typeof uri === 'string' ? uri : uri.uri, transport, controller);
  } catch (e) {
    try {
      if (controller !== null) await controller.close();
    } catch (e2) {
      log(`closing the controller after a failed open: ${(e2 as Error).message}`);
    } finally {
      await transport.close().catch((e3: unknown) => log(`closing ${transport.description} after a failed open: ${(e3 as Error).message}`));
    }
    throw e;
  }
}

/** Open `uri` with openController, run `fn` on it, and close it whatever `fn` does. */
export async function withController<T>(uri: string | DeviceUri, opts: OpenControllerOptions, fn: (opened: OpenedController) => Promise<T> | T): Promise<T> {
  const opened = await openController(uri, opts);
  try {
    return await fn(opened);
  } finally {
    await opened.close();
  }
}
