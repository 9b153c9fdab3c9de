/**
 * Queue management as NVMe over PCIe does it, shared by the PCIe transport and the embedded controller (a
 * PCIe-shaped controller in software): the admin queue through AQA / ASQ / ACQ, I/O queue pairs with Create /
 * Delete I/O CQ / SQ at the rings' IOVAs (physically contiguous, interrupts off: the driver polls). A transport
 * without these registers and commands (fabrics) implements the same Transport methods its own way.
 */
import * as cmd from '../nvme/commands.js';
import { REG_ACQ, REG_AQA, REG_ASQ, encodeAqa } from '../nvme/registers.js';
import { hi32, lo32 } from '../nvme/sqe.js';
import type { AdminChannel, QueueRings } from './transport.js';

/** Create I/O CQ: physically contiguous, interrupts disabled (vector 0 unused). */
const CQ_PHYSICALLY_CONTIGUOUS = true;
const CQ_INTERRUPTS_ENABLED = false;
const CQ_INTERRUPT_VECTOR = 0;
/** Bytes between the low and the high dword of a 64-bit register. */
const REG_HIGH_DWORD = 4;

/** Program AQA, ASQ and ACQ for the admin queue (the controller must be disabled). Low dwords first. */
export function programAdminQueue(write32: (offset: number, value: number) => void, rings: QueueRings): void {
  write32(REG_AQA, encodeAqa(rings.entries, rings.entries));
  write32(REG_ASQ, lo32(rings.sqIova));
  write32(REG_ASQ + REG_HIGH_DWORD, hi32(rings.sqIova));
  write32(REG_ACQ, lo32(rings.cqIova));
  write32(REG_ACQ + REG_HIGH_DWORD, hi32(rings.cqIova));
}

/** Create I/O CQ, then Create I/O SQ bound to it (same qid); a failed SQ creation deletes the CQ again. */
export async function createIoQueuePair(admin: AdminChannel, rings: QueueRings): Promise<void> {
  const { qid, entries } = rings;
  await admin.run(cmd.createIoCq(qid, entries, rings.cqIova, CQ_PHYSICALLY_CONTIGUOUS, CQ_INTERRUPTS_ENABLED, CQ_INTERRUPT_VECTOR));
  try {
    await admin.run(cmd.createIoSq(qid, entries, rings.sqIova, qid));
  } catch (e) {
    try {
      await admin.run(cmd.deleteIoCq(qid));
    } catch (e2) {
      admin.log(`cleanup after failed Create I/O SQ ${qid}: Delete I/O CQ failed: ${(e2 as Error).message}`);
    }
    throw e;
  }
}

/** Delete I/O SQ (the controller aborts what is outstanding into the CQ), `afterSq`, then Delete I/O CQ. */
export async function deleteIoQueuePair(admin: AdminChannel, qid: number, afterSq?: () => void): Promise<void> {
  await admin.run(cmd.deleteIoSq(qid));
  afterSq?.();
  await admin.run(cmd.deleteIoCq(qid));
}
