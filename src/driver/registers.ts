/**
 * Controller register access on top of a Transport: 64-bit registers as two 32-bit accesses (low dword first),
 * all-ones detection (surprise removal), and waiting for CSTS transitions within the CAP.TO bound.
 */
import { CSTS_CFS, CSTS_RDY, CSTS_SHST_COMPLETE, CSTS_SHST_MASK, CSTS_SHST_SHIFT, REG_CSTS } from '../nvme/registers.js';
import { TWO_POW_32, hi32, lo32 } from '../nvme/sqe.js';
import type { Transport } from '../transport/transport.js';
import { ControllerFatalError, ControllerReadyTimeoutError, DeviceRemovedError, NvmeError } from './errors.js';

/** What a register reads when the device is gone. */
export const ALL_ONES = 0xffffffff;

/** Read a 32-bit register; throws DeviceRemovedError when it reads all ones. */
export function readReg(t: Transport, offset: number, name: string): number {
  const v = t.read32(offset) >>> 0;
  if (v === ALL_ONES) throw new DeviceRemovedError(name);
  return v;
}

/** Read a 64-bit register as [lo, hi]; throws DeviceRemovedError when both halves read all ones. */
export function readReg64(t: Transport, offset: number, name: string): [number, number] {
  const lo = t.read32(offset) >>> 0;
  const hi = t.read32(offset + 4) >>> 0;
  if (lo === ALL_ONES && hi === ALL_ONES) throw new DeviceRemovedError(name);
  return [lo, hi];
}

/** Write a 64-bit register as two 32-bit writes, low dword first. */
export function writeReg64(t: Transport, offset: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new NvmeError(`64-bit register value must be a non-negative safe integer, got ${value}`);
  t.write32(offset, lo32(value));
  t.write32(offset + 4, hi32(value));
}

export { TWO_POW_32 };

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Poll CSTS until RDY equals `ready`, for at most `timeoutMs`. While waiting for RDY=1, CSTS.CFS fails with
 * ControllerFatalError. All ones fails with DeviceRemovedError.
 */
export async function waitReady(t: Transport, ready: 0 | 1, timeoutMs: number, what: string): Promise<void> {
  const start = performance.now();
  let csts = 0;
  for (let i = 0; ; i++) {
    csts = readReg(t, REG_CSTS, 'CSTS');
    if ((csts & CSTS_RDY) === (ready ? CSTS_RDY : 0)) return;
    if (ready === 1 && (csts & CSTS_CFS) !== 0) throw new ControllerFatalError(`while ${what} (waiting for CSTS.RDY=1)`, csts);
    if (performance.now() - start > timeoutMs) throw new ControllerReadyTimeoutError(ready, timeoutMs, csts, what);
    await sleep(i < 10 ? 0 : 1);
  }
}

/** Poll CSTS until SHST reads "shutdown processing complete", for at most `timeoutMs`. Returns false on timeout. */
export async function waitShutdown(t: Transport, timeoutMs: number): Promise<boolean> {
  const start = performance.now();
  for (let i = 0; ; i++) {
    const csts = readReg(t, REG_CSTS, 'CSTS');
    if ((csts & CSTS_SHST_MASK) >>> CSTS_SHST_SHIFT === CSTS_SHST_COMPLETE) return true;
    if (performance.now() - start > timeoutMs) return false;
    await sleep(i < 10 ? 0 : 1);
  }
}
