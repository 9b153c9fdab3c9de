/**
 * Open a device URI as a Transport for the driver core. To bring a controller up on it as well (and take both
 * down again), use openController (src/device/controller.ts).
 */
import { resolve } from 'node:path';
import type { Transport } from '../transport/transport.js';
import { openEmu, type EmuOptions } from '../transport/emu.js';
import { openPcie } from '../transport/pcie.js';
import { parseDeviceUri, type DeviceUri, type EmuUri } from './uri.js';

export class DeviceOpenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceOpenError';
  }
}

/** Embedded-controller options for a parsed emu:// URI. */
export function emuOptionsFor(u: EmuUri): EmuOptions {
  const namespaces = Array.from({ length: u.namespaces }, () => ({ sizeBytes: u.namespaceSize, lbads: u.lbads }));
  const opts: EmuOptions = {
    namespaces,
    backing: u.nullMode ? 'null' : u.file ? { file: resolve(u.file) } : 'memory',
    maxQueuePairs: u.maxQueuePairs,
    description: u.uri,
  };
  if (u.model !== undefined) opts.model = u.model;
  if (u.serial !== undefined) opts.serial = u.serial;
  return opts;
}

export interface OpenDeviceOptions {
  /**
   * Where an embedded controller (emu://) keeps BAR0 and its DMA memory: 'sab' (default) SharedArrayBuffers,
   * this process only; 'memfd' shared memory other processes can map (raw grants, mediated data buffers,
   * worker threads). Ignored for pci: URIs.
   */
  sharedMemory?: 'sab' | 'memfd';
}

export async function openDevice(uriOrParsed: string | DeviceUri, opts: OpenDeviceOptions = {}): Promise<Transport> {
  const u = typeof uriOrParsed === 'string' ? parseDeviceUri(uriOrParsed) : uriOrParsed;
  if (u.kind === 'emu') {
    try {
      return await openEmu({ ...emuOptionsFor(u), sharedMemory: opts.sharedMemory ?? 'sab' });
    } catch (e) {
      throw new DeviceOpenError(`cannot start the embedded controller for '${u.uri}': ${(e as Error).message}`);
    }
  }
  try {
    return await openPcie(u.address, { mode: u.mode });
  } catch (e) {
    throw new DeviceOpenError(`cannot open '${u.uri}': ${(e as Error).message}`);
  }
}
