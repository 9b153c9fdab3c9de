import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dataPointer, type DataPointer } from '../../src/driver/dptr.js';
import { NvmeStatusError, NvmeTimeoutError } from '../../src/driver/errors.js';
import type { QueuePair } from '../../src/driver/queue-pair.js';
import { STATUS_TIMEOUT } from '../../src/driver/status.js';
import type { DmaBuffer } from '../../src/mem/dma.js';
import { CQE_CID_MASK, CQE_DW_STATUS, statusSc, statusSct } from '../../src/nvme/cqe.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { GenericStatus, MediaStatus, Sct } from '../../src/nvme/status.js';
import { openRig, pollUntil, waitFor, type Rig } from './helpers.js';

interface Io {
  buf: DmaBuffer;
  dp: DataPointer;
  done: Array<[number, number]>;
  handler: (tag: number, status: number) => void;
  free(): void;
}
function io(rig: Rig, bytes = 4096): Io {
  const buf = rig.emu.dma.alloc(bytes);
  const dp = dataPointer(rig.emu.dma, buf);
  const done: Array<[number, number]> = [];
  return {
    buf,
    dp,
    done,
    handler: (tag, status) => void done.push([tag, status]),
    free() {
      dp.release();
      rig.emu.dma.free(buf);
    },
  };
}

async function readOnce(qp: QueuePair, x: Io, nsid: number, slba: number, tag: number): Promise<number> {
  const n = x.done.length;
  assert.ok(qp.submitIo(NvmOpcode.Read, nsid, slba, 1, x.dp.prp1, x.dp.prp2, tag) >= 0);
  qp.ring();
  await pollUntil(qp, x.handler, () => x.done.length > n);
  const [t, s] = x.done[x.done.length - 1]!;
  assert.equal(t, tag);
  return s;
}

test('status errors surface as NvmeStatusError with spec names (LBA Out of Range, Invalid Namespace or Format)', async () => {
  const rig = await openRig();
  const x = io(rig);
  try {
    const qp = await rig.ctrl.createQueuePair({ entries: 16 });
    const blocks = rig.ctrl.namespace(1).blocks;
    await assert.rejects(qp.exec({ opcode: NvmOpcode.Read, cid: 0, nsid: 1, prp1: x.dp.prp1, cdw10: blocks, cdw12: 0 }), (e: unknown) => {
      assert.ok(e instanceof NvmeStatusError);
      assert.equal(e.statusName, 'LBA Out of Range');
      assert.equal(e.sct, Sct.Generic);
      assert.equal(e.sc, GenericStatus.LbaOutOfRange);
      assert.equal(e.opcode, NvmOpcode.Read);
      assert.equal(e.opcodeName, 'Read');
      assert.equal(e.qid, qp.qid);
      assert.match(e.message, /^Read on queue 1 \(cid \d+\) failed: LBA Out of Range \(SCT 0x0 SC 0x80(, DNR)?\)$/);
      return true;
    });
    await assert.rejects(
      qp.exec({ opcode: NvmOpcode.Write, cid: 0, nsid: 7, prp1: x.dp.prp1, cdw10: 0 }),
      (e: unknown) => e instanceof NvmeStatusError && e.statusName === 'Invalid Namespace or Format' && e.opcodeName === 'Write',
    );
    // Fast path: the raw 15-bit status arrives in onComplete.
    const s = await readOnce(qp, x, 2, rig.ctrl.namespace(2).blocks + 10, 5);
    assert.equal(statusSct(s), Sct.Generic);
    assert.equal(statusSc(s), GenericStatus.LbaOutOfRange);
    // Queue still fine.
    assert.equal(await readOnce(qp, x, 1, 0, 6), 0);
  } finally {
    x.free();
    await rig.close();
  }
});

test('injected error status hits exactly the chosen command', async () => {
  const rig = await openRig();
  const x = io(rig);
  try {
    const qp = await rig.ctrl.createQueuePair({ entries: 16 });
    rig.emu.inject({ qid: qp.qid, opcode: NvmOpcode.Read, nsid: 1, count: 1, action: { kind: 'status', sct: Sct.MediaDataIntegrity, sc: MediaStatus.UnrecoveredReadError, dnr: true } });
    assert.equal(await readOnce(qp, x, 2, 0, 1), 0, 'other namespace unaffected');
    const s = await readOnce(qp, x, 1, 0, 2);
    assert.equal(statusSct(s), Sct.MediaDataIntegrity);
    assert.equal(statusSc(s), MediaStatus.UnrecoveredReadError);
    assert.equal(await readOnce(qp, x, 1, 0, 3), 0, 'rule consumed');
    rig.emu.inject({ qid: qp.qid, opcode: NvmOpcode.Write, action: { kind: 'status', sct: Sct.MediaDataIntegrity, sc: MediaStatus.WriteFault } });
    await assert.rejects(qp.exec({ opcode: NvmOpcode.Write, cid: 0, nsid: 1, prp1: x.dp.prp1, cdw10: 1 }), (e: unknown) => e instanceof NvmeStatusError && e.statusName === 'Write Fault' && !e.dnr);
  } finally {
    x.free();
    await rig.close();
  }
});

test('injected delay: the completion arrives late but correctly; others are not blocked', async () => {
  const rig = await openRig();
  const x = io(rig);
  const y = io(rig);
  try {
    const qp = await rig.ctrl.createQueuePair({ entries: 16 });
    rig.emu.inject({ qid: qp.qid, opcode: NvmOpcode.Read, nsid: 1, count: 1, action: { kind: 'delay', ms: 150 } });
    const t0 = performance.now();
    qp.submitIo(NvmOpcode.Read, 1, 0, 1, x.dp.prp1, x.dp.prp2, 1);
    qp.submitIo(NvmOpcode.Read, 2, 0, 1, y.dp.prp1, y.dp.prp2, 2);
    qp.ring();
    const order: Array<[number, number, number]> = [];
    await pollUntil(
      qp,
      (tag, status) => void order.push([tag, status, performance.now() - t0]),
      () => order.length === 2,
    );
    assert.deepEqual(
      order.map(([t, s]) => [t, s]),
      [
        [2, 0],
        [1, 0],
      ],
    );
    assert.ok(order[1]![2] >= 140, `delayed completion after ${order[1]![2]} ms`);
    assert.equal(qp.stats.timeouts, 0);
  } finally {
    x.free();
    y.free();
    await rig.close();
  }
});

test('dropped completion -> STATUS_TIMEOUT -> Abort sent; cid quarantined; the queue keeps working', async () => {
  const rig = await openRig();
  const x = io(rig);
  try {
    const qp = await rig.ctrl.createQueuePair({ entries: 8, timeoutMs: 100 });
    rig.emu.inject({ qid: qp.qid, opcode: NvmOpcode.Read, count: 1, action: { kind: 'drop' } });
    const t0 = performance.now();
    const cid = qp.submitIo(NvmOpcode.Read, 1, 3, 1, x.dp.prp1, x.dp.prp2, 77);
    qp.ring();
    await pollUntil(qp, x.handler, () => x.done.length === 1, 3000);
    const waited = performance.now() - t0;
    assert.deepEqual(x.done[0], [77, STATUS_TIMEOUT]);
    assert.ok(waited >= 100 && waited < 1000, `timed out after ${waited} ms`);
    assert.equal(qp.stats.timeouts, 1);
    assert.equal(qp.outstanding, 0);
    await waitFor(() => rig.ctrl.counters.aborts === 1, 2000, 'Abort sent');
    assert.equal(rig.ctrl.counters.timeouts, 1);
    // The CID is not reused while quarantined.
    const used = new Set<number>();
    for (let i = 0; i < 50; i++) {
      const c = qp.submitIo(NvmOpcode.Read, 1, i, 1, x.dp.prp1, x.dp.prp2, i);
      assert.ok(c >= 0);
      used.add(c);
      qp.ring();
      await pollUntil(qp, x.handler, () => x.done.length === 2 + i);
      assert.equal(x.done[x.done.length - 1]![1], 0);
    }
    if (qp.isQuarantined(cid)) assert.ok(!used.has(cid), 'quarantined cid reused');
    assert.equal(rig.ctrl.state, 'live');
    // exec() times out with NvmeTimeoutError.
    rig.emu.inject({ qid: qp.qid, opcode: NvmOpcode.Read, count: 1, action: { kind: 'drop' } });
    await assert.rejects(qp.exec({ opcode: NvmOpcode.Read, cid: 0, nsid: 1, prp1: x.dp.prp1, cdw10: 0 }, { timeoutMs: 80 }), (e: unknown) => {
      assert.ok(e instanceof NvmeTimeoutError);
      assert.equal(e.ms, 80);
      assert.match(e.message, /^Read on queue 1 \(cid \d+\) timed out: no completion within 80 ms$/);
      return true;
    });
    assert.equal(await readOnce(qp, x, 1, 0, 999), 0);
  } finally {
    x.free();
    await rig.close();
  }
});

test('malformed completion (unknown cid) is counted and skipped, not a crash', async () => {
  const rig = await openRig();
  const x = io(rig);
  try {
    const qp = await rig.ctrl.createQueuePair({ entries: 8, timeoutMs: 0 });
    const seen: string[] = [];
    qp.submitIo(NvmOpcode.Read, 1, 0, 1, x.dp.prp1, x.dp.prp2, 1);
    qp.ring();
    // Wait for the controller to post the CQE, then corrupt its CID before the driver reads it.
    const { dw, head, phase } = qp._debugCompletionQueue();
    const at = head * 4 + CQE_DW_STATUS;
    await waitFor(() => ((Atomics.load(dw, at) >>> 16) & 1) === phase, 2000, 'CQE posted');
    const good = Atomics.load(dw, at);
    Atomics.store(dw, at, ((good & ~CQE_CID_MASK) | 0xfff0) >>> 0);
    const n = qp.poll((tag) => void seen.push(`tag ${tag}`));
    assert.equal(n, 0);
    assert.deepEqual(seen, []);
    assert.equal(qp.stats.malformed, 1);
    assert.equal(rig.ctrl.counters.malformed, 1);
    assert.match(qp.lastMalformed!.reason, /CID 65520 is out of range/);
    assert.ok(rig.logs.some((l) => /malformed completion/.test(l)));
    assert.equal(qp.outstanding, 1, 'the real command is still outstanding (its completion was lost)');
    // The queue keeps working.
    assert.equal(await readOnce(qp, x, 1, 1, 2), 0);
  } finally {
    x.free();
    await rig.close();
  }
});
