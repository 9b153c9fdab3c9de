import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dataPointer } from '../../src/driver/dptr.js';
import { ControllerResetError, DeviceRemovedError } from '../../src/driver/errors.js';
import { STATUS_ABORTED_BY_RESET, STATUS_DEVICE_REMOVED, STATUS_TIMEOUT } from '../../src/driver/status.js';
import { AdminOpcode, NvmOpcode } from '../../src/nvme/opcodes.js';
import { GenericStatus, Sct } from '../../src/nvme/status.js';
import { firstDiff, fillPattern, openRig, pollUntil, waitFor } from './helpers.js';

test('fatal status (CSTS.CFS) -> reset; outstanding I/O completes with STATUS_ABORTED_BY_RESET; same QueuePairs work after', async () => {
  const rig = await openRig();
  const { ctrl, emu } = rig;
  const buf = emu.dma.alloc(8 * 4096);
  const dp = dataPointer(emu.dma, buf);
  try {
    const qp1 = await ctrl.createQueuePair({ entries: 16 });
    const qp2 = await ctrl.createQueuePair({ entries: 32 });
    // data written before the reset must survive it
    fillPattern(buf.bytes, 42);
    const want = buf.bytes.slice();
    await qp1.exec({ opcode: NvmOpcode.Write, cid: 0, nsid: 1, prp1: dp.prp1, prp2: dp.prp2, cdw10: 64, cdw12: 7 });

    // Keep commands in flight, then make the controller fatal.
    emu.inject({ qid: qp1.qid, opcode: NvmOpcode.Read, count: Infinity, action: { kind: 'delay', ms: 10_000 } });
    const done: Array<[number, number]> = [];
    for (let i = 0; i < 5; i++) qp1.submitIo(NvmOpcode.Read, 1, i, 1, dp.prp1, dp.prp2, i);
    qp1.ring();
    await new Promise((r) => setTimeout(r, 20));
    emu.setFatal();
    emu.clearFaults();
    await pollUntil(
      qp1,
      (t, s) => void done.push([t, s]),
      () => done.length === 5,
      5000,
    );
    assert.deepEqual(done.map(([t]) => t).sort(), [0, 1, 2, 3, 4]);
    assert.ok(
      done.every(([, s]) => s === STATUS_ABORTED_BY_RESET),
      JSON.stringify(done),
    );
    await waitFor(() => ctrl.state === 'live', 5000, 'reset finished');
    assert.equal(ctrl.counters.resets, 1);
    assert.ok(
      rig.logs.some((l) => /controller reset \(controller fatal status/.test(l)),
      rig.logs.join('\n'),
    );
    // Same objects, same qids, working.
    assert.deepEqual(ctrl.queuePairs, [qp1, qp2]);
    assert.equal(qp1.state, 'live');
    assert.equal(qp1.outstanding, 0);
    buf.bytes.fill(0);
    const c = await qp2.exec({ opcode: NvmOpcode.Read, cid: 0, nsid: 1, prp1: dp.prp1, prp2: dp.prp2, cdw10: 64, cdw12: 7 });
    assert.equal(c.status, 0);
    assert.equal(firstDiff(buf.bytes, want), -1, 'data survives the reset');
    const after: number[] = [];
    for (let i = 0; i < qp1.capacity; i++) assert.ok(qp1.submitIo(NvmOpcode.Read, 2, i, 1, dp.prp1, dp.prp2, i) >= 0);
    qp1.ring();
    await pollUntil(
      qp1,
      (_t, s) => void after.push(s),
      () => after.length === 15,
      5000,
    );
    assert.ok(after.every((s) => s === 0));
    assert.equal(qp1.stats.resets, 1);
  } finally {
    dp.release();
    emu.dma.free(buf);
    await rig.close();
  }
});

test('explicit reset(): exec() waiters reject with ControllerResetError, fast-path I/O gets STATUS_ABORTED_BY_RESET', async () => {
  const rig = await openRig();
  const { ctrl, emu } = rig;
  const buf = emu.dma.alloc(4096);
  try {
    const qp = await ctrl.createQueuePair({ entries: 16 });
    emu.inject({ qid: qp.qid, opcode: NvmOpcode.Read, count: 2, action: { kind: 'delay', ms: 5000 } });
    const pending = qp.exec({ opcode: NvmOpcode.Read, cid: 0, nsid: 1, prp1: buf.iova, cdw10: 0 });
    const cid = qp.submitIo(NvmOpcode.Read, 1, 1, 1, buf.iova, 0, 123);
    assert.ok(cid >= 0);
    qp.ring();
    await new Promise((r) => setTimeout(r, 20));
    const r = ctrl.reset('test');
    assert.equal(ctrl.state, 'resetting');
    assert.equal(qp.submitIo(NvmOpcode.Read, 1, 0, 1, buf.iova, 0, 1), -1, 'no submissions while resetting');
    await assert.rejects(pending, (e: unknown) => e instanceof ControllerResetError && /aborted by a controller reset \(test\)/.test(e.message));
    const got: Array<[number, number]> = [];
    qp.poll((t, s) => void got.push([t, s]));
    assert.deepEqual(got, [[123, STATUS_ABORTED_BY_RESET]]);
    await r;
    assert.equal(ctrl.state, 'live');
    emu.clearFaults();
    await qp.exec({ opcode: NvmOpcode.Read, cid: 0, nsid: 1, prp1: buf.iova, cdw10: 0 });
    assert.ok(ctrl.reset('again') === ctrl.reset('again2'), 'concurrent resets share one promise');
    await ctrl.reset('x');
    assert.equal(ctrl.counters.resets, 2);
  } finally {
    emu.dma.free(buf);
    await rig.close();
  }
});

test('timeout whose Abort fails escalates to a controller reset', async () => {
  const rig = await openRig();
  const { ctrl, emu } = rig;
  const buf = emu.dma.alloc(4096);
  try {
    const qp = await ctrl.createQueuePair({ entries: 16, timeoutMs: 80 });
    emu.inject({ qid: 0, opcode: AdminOpcode.Abort, count: 1, action: { kind: 'status', sct: Sct.Generic, sc: GenericStatus.InternalError } });
    emu.inject({ qid: qp.qid, opcode: NvmOpcode.Write, count: 1, action: { kind: 'drop' } });
    const got: number[] = [];
    qp.submitIo(NvmOpcode.Write, 1, 0, 1, buf.iova, 0, 1);
    qp.ring();
    await pollUntil(
      qp,
      (_t, s) => void got.push(s),
      () => got.length === 1,
      3000,
    );
    assert.deepEqual(got, [STATUS_TIMEOUT]);
    await waitFor(() => ctrl.counters.resets === 1 && ctrl.state === 'live', 5000, 'escalated reset');
    assert.ok(
      rig.logs.some((l) => /Abort of Write on queue 1 .* failed: Abort on the admin queue .* Internal Error/.test(l)),
      rig.logs.join('\n'),
    );
    assert.equal(qp.quarantined, 0, 'reset released the quarantined cid');
    const c = await qp.exec({ opcode: NvmOpcode.Read, cid: 0, nsid: 1, prp1: buf.iova, cdw10: 0 });
    assert.equal(c.status, 0);
  } finally {
    emu.dma.free(buf);
    await rig.close();
  }
});

test('device removal while polling: outstanding I/O completes with STATUS_DEVICE_REMOVED; close() still works', async () => {
  const rig = await openRig();
  const { ctrl, emu } = rig;
  const buf = emu.dma.alloc(4096);
  const qp = await ctrl.createQueuePair({ entries: 16 });
  emu.inject({ qid: qp.qid, opcode: NvmOpcode.Read, count: 1, action: { kind: 'delay', ms: 10_000 } });
  qp.submitIo(NvmOpcode.Read, 1, 0, 1, buf.iova, 0, 5);
  qp.ring();
  await new Promise((r) => setTimeout(r, 10));
  await emu.close(); // registers now read all ones
  const got: Array<[number, number]> = [];
  await pollUntil(
    qp,
    (t, s) => void got.push([t, s]),
    () => got.length === 1,
    3000,
  );
  assert.deepEqual(got, [[5, STATUS_DEVICE_REMOVED]]);
  assert.equal(ctrl.state, 'removed');
  assert.throws(() => ctrl.checkHealth(), DeviceRemovedError);
  await assert.rejects(ctrl.createQueuePair(), DeviceRemovedError);
  await ctrl.close();
  assert.equal(ctrl.state, 'closed');
  await rig.close();
});
