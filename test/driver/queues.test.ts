import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dataPointer } from '../../src/driver/dptr.js';
import { InvalidArgumentError, NvmeError, NvmeStatusError } from '../../src/driver/errors.js';
import { STATUS_ABORTED_SQ_DELETION } from '../../src/driver/controller.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { openRig, pollUntil } from './helpers.js';

test('create/delete queue pairs, lowest qid reused, too many refused with a clear error', async () => {
  const rig = await openRig({ ioQueues: 3 });
  try {
    const { ctrl } = rig;
    assert.equal(ctrl.maxIoQueuePairs, 3);
    const a = await ctrl.createQueuePair({ entries: 16 });
    const b = await ctrl.createQueuePair();
    const c = await ctrl.createQueuePair({ entries: 2 });
    assert.deepEqual([a.qid, b.qid, c.qid], [1, 2, 3]);
    assert.equal(b.entries, 1024, 'default entries = min(1024, MQES+1)');
    assert.equal(c.capacity, 1);
    await assert.rejects(ctrl.createQueuePair(), (e: unknown) => e instanceof NvmeError && /all 3 queue pairs the controller granted/.test(e.message));
    await ctrl.deleteQueuePair(b);
    assert.equal(b.state, 'deleted');
    assert.equal(b.submitIo(NvmOpcode.Read, 1, 0, 1, 0, 0, 0), -1);
    await ctrl.deleteQueuePair(b); // idempotent
    const d = await ctrl.createQueuePair({ entries: 8 });
    assert.equal(d.qid, 2, 'freed qid reused');
    assert.deepEqual(
      ctrl.queuePairs.map((q) => q.qid),
      [1, 2, 3],
    );
    // the reused queue works
    const buf = rig.emu.dma.alloc(4096);
    const dp = dataPointer(rig.emu.dma, buf);
    try {
      await d.exec({ opcode: NvmOpcode.Read, cid: 0, nsid: 1, prp1: dp.prp1, cdw10: 0 });
    } finally {
      dp.release();
      rig.emu.dma.free(buf);
    }
    await assert.rejects(ctrl.createQueuePair({ entries: 1 }), InvalidArgumentError);
    await assert.rejects(ctrl.createQueuePair({ entries: 4096 }), /entries must be an integer in 2\.\.1024/);
  } finally {
    await rig.close();
  }
});

test('deleting a queue pair with commands outstanding completes them (SQ deletion) through poll()', async () => {
  const rig = await openRig();
  try {
    const { ctrl, emu } = rig;
    const qp = await ctrl.createQueuePair({ entries: 16 });
    const buf = emu.dma.alloc(4096);
    const dp = dataPointer(emu.dma, buf);
    try {
      // Hold the commands in the controller long enough for the delete to overtake them.
      emu.inject({ qid: qp.qid, opcode: NvmOpcode.Read, count: 4, action: { kind: 'delay', ms: 300 } });
      for (let i = 0; i < 4; i++) assert.ok(qp.submitIo(NvmOpcode.Read, 1, i, 1, dp.prp1, dp.prp2, 10 + i) >= 0);
      qp.ring();
      await new Promise((r) => setTimeout(r, 20));
      await ctrl.deleteQueuePair(qp);
      const got: Array<[number, number]> = [];
      qp.poll((tag, status) => void got.push([tag, status]));
      assert.equal(got.length, 4, 'every outstanding command is completed');
      for (const [, status] of got) assert.ok(status === 0 || status === STATUS_ABORTED_SQ_DELETION, `status ${status}`);
      assert.equal(qp.outstanding, 0);
    } finally {
      dp.release();
      emu.dma.free(buf);
    }
    await new Promise((r) => setTimeout(r, 350)); // let delayed completions (if any) drain in the controller
    const again = await ctrl.createQueuePair({ entries: 16 });
    assert.equal(again.qid, 1);
    let n = 0;
    const b2 = emu.dma.alloc(4096);
    try {
      again.submitIo(NvmOpcode.Read, 1, 0, 1, b2.iova, 0, 1);
      again.ring();
      await pollUntil(
        again,
        (_t, s) => {
          assert.equal(s, 0);
          n++;
        },
        () => n === 1,
      );
    } finally {
      emu.dma.free(b2);
    }
  } finally {
    await rig.close();
  }
});

test('a Create I/O queue failure surfaces as NvmeStatusError and frees the qid', async () => {
  const rig = await openRig();
  try {
    const { ctrl, emu } = rig;
    const { AdminOpcode } = await import('../../src/nvme/opcodes.js');
    emu.inject({ qid: 0, opcode: AdminOpcode.CreateIoSq, action: { kind: 'status', sct: 1, sc: 0x02, dnr: true } });
    const before = emu.dma.allocatedBytes;
    await assert.rejects(ctrl.createQueuePair({ entries: 16 }), (e: unknown) => {
      assert.ok(e instanceof NvmeStatusError);
      assert.equal(e.statusName, 'Invalid Queue Size');
      assert.equal(e.opcodeName, 'CreateIoSq');
      assert.equal(e.qid, 0);
      assert.match(e.message, /CreateIoSq on the admin queue \(cid \d+\) failed: Invalid Queue Size \(SCT 0x1 SC 0x02, DNR\)/);
      return true;
    });
    assert.equal(emu.dma.allocatedBytes, before, 'queue memory freed');
    const qp = await ctrl.createQueuePair({ entries: 16 });
    assert.equal(qp.qid, 1);
  } finally {
    await rig.close();
  }
});
