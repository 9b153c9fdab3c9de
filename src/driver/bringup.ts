/**
 * Register-level controller sequences (NVMe Base 2.0 section 3.5): disable, program the admin queue and enable,
 * normal shutdown. Everything here talks to registers only; the admin commands of bring-up live in controller.ts.
 */
import { CAP_CSS_NVM, CC_CSS_NVM, CC_EN, CC_SHN_MASK, CC_SHN_NORMAL, CC_SHN_SHIFT, CQES_LOG2, CSTS_RDY, REG_CC, REG_CSTS, SQES_LOG2, encodeCc, type Capabilities } from '../nvme/registers.js';
import type { Transport } from '../transport/transport.js';
import { InvalidArgumentError, NvmeError } from './errors.js';
import type { QueuePair } from './queue-pair.js';
import { readReg, waitReady, waitShutdown } from './registers.js';

/** CC.MPS for a memory page size: page size = 2^(12 + MPS). Checked against CAP.MPSMIN/MPSMAX. */
export function mpsFor(pageSize: number, cap: Capabilities): number {
  const log2 = Math.log2(pageSize);
  if (!Number.isInteger(log2) || log2 < 12) throw new InvalidArgumentError(`DMA page size ${pageSize} is not a power of two >= 4096`);
  if (pageSize < cap.minPageSize || pageSize > cap.maxPageSize) {
    throw new NvmeError(`DMA page size ${pageSize} is outside the controller's supported range ${cap.minPageSize}..${cap.maxPageSize} (CAP.MPSMIN/MPSMAX)`);
  }
  return log2 - 12;
}

/** Clear CC.EN if the controller is enabled (or still reports ready) and wait for CSTS.RDY=0. */
export async function disableController(t: Transport, timeoutMs: number, log: (m: string) => void): Promise<void> {
  const cc = readReg(t, REG_CC, 'CC');
  const csts = readReg(t, REG_CSTS, 'CSTS');
  if ((cc & CC_EN) === 0 && (csts & CSTS_RDY) === 0) return;
  log(`disabling controller (CC 0x${cc.toString(16)}, CSTS 0x${csts.toString(16)})`);
  t.write32(REG_CC, (cc & ~CC_EN) >>> 0);
  await waitReady(t, 0, timeoutMs, 'disabling the controller');
}

/**
 * Have the transport set up `admin` (PCIe: AQA/ASQ/ACQ), write CC (NVM command set, MPS for `pageSize`, round
 * robin, 64-byte SQEs, 16-byte CQEs), then set CC.EN and wait for CSTS.RDY=1. The controller must be disabled.
 */
export async function enableController(t: Transport, cap: Capabilities, admin: QueuePair, pageSize: number, timeoutMs: number): Promise<void> {
  if ((cap.commandSets & CAP_CSS_NVM) === 0) throw new NvmeError(`controller does not support the NVM command set (CAP.CSS 0x${cap.commandSets.toString(16)})`);
  await t.setupAdminQueue({ qid: admin.qid, entries: admin.entries, sqIova: admin.sqIova, cqIova: admin.cqIova });
  const cc = encodeCc({ enable: false, css: CC_CSS_NVM, mps: mpsFor(pageSize, cap), ams: 0, shn: 0, iosqes: SQES_LOG2, iocqes: CQES_LOG2 });
  t.write32(REG_CC, cc);
  t.write32(REG_CC, (cc | CC_EN) >>> 0);
  await waitReady(t, 1, timeoutMs, 'enabling the controller');
}

/**
 * Normal shutdown: CC.SHN = 01b, wait for CSTS.SHST = complete (bounded by `timeoutMs`), then clear CC.EN and
 * wait for RDY=0. Returns false if the shutdown did not complete in time (the controller is disabled anyway).
 */
export async function shutdownController(t: Transport, timeoutMs: number, log: (m: string) => void): Promise<boolean> {
  const cc = readReg(t, REG_CC, 'CC');
  let ok = true;
  if ((cc & CC_EN) !== 0) {
    t.write32(REG_CC, ((cc & ~CC_SHN_MASK) | (CC_SHN_NORMAL << CC_SHN_SHIFT)) >>> 0);
    ok = await waitShutdown(t, timeoutMs);
    if (!ok) log(`shutdown did not complete within ${timeoutMs} ms (CSTS.SHST); disabling anyway`);
  }
  const after = readReg(t, REG_CC, 'CC');
  t.write32(REG_CC, (after & ~(CC_EN | CC_SHN_MASK)) >>> 0);
  await waitReady(t, 0, timeoutMs, 'disabling the controller after shutdown');
  return ok;
}
