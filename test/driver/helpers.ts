/** Shared helpers for the driver tests: an embedded controller, a driven poll loop, data patterns. */
import { openEmu, type EmuTransport } from '../../src/transport/emu.js';
import { Controller, type ControllerOptions } from '../../src/driver/controller.js';
import type { CompletionHandler, QueuePair } from '../../src/driver/queue-pair.js';

export const NS1 = { sizeBytes: 64 << 20, lbads: 12 as const };
export const NS2 = { sizeBytes: 16 << 20, lbads: 9 as const };

export interface Rig {
  emu: EmuTransport;
  ctrl: Controller;
  logs: string[];
  close(): Promise<void>;
}

export async function openRig(ctrlOpts: ControllerOptions = {}, emuOpts: Record<string, unknown> = {}): Promise<Rig> {
  const emu = await openEmu({ namespaces: [NS1, NS2], backing: 'memory', ...emuOpts });
  const logs: string[] = [];
  let ctrl: Controller;
  try {
    ctrl = await Controller.open(emu, { log: (m) => logs.push(m), ...ctrlOpts });
  } catch (e) {
    await emu.close();
    throw e;
  }
  return {
    emu,
    ctrl,
    logs,
    async close() {
      try {
        await ctrl.close();
      } finally {
        await emu.close();
      }
    },
  };
}

const yieldNow = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Poll `qp` (yielding to the event loop between polls) until `done()` or `ms` elapse. */
export async function pollUntil(qp: QueuePair, onComplete: CompletionHandler, done: () => boolean, ms = 5000): Promise<void> {
  const start = performance.now();
  let i = 0;
  while (!done()) {
    qp.poll(onComplete);
    if (done()) return;
    if (performance.now() - start > ms) throw new Error(`pollUntil: condition not met within ${ms} ms (outstanding ${qp.outstanding})`);
    if ((++i & 15) === 0) await yieldNow();
  }
}

/** Wait (yielding) until `cond()` holds. */
export async function waitFor(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const start = performance.now();
  while (!cond()) {
    if (performance.now() - start > ms) throw new Error(`waitFor: ${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Deterministic pseudo-random bytes. */
export function fillPattern(b: Uint8Array, seed: number): void {
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < b.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
}

/** Index of the first differing byte, or -1. */
export function firstDiff(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}
