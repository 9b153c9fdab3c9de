/** Error injection: status, delay, drop (+ Abort, SQ deletion), fatal; rules are active when inject() returns. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { QueuePair, TestHost, sctSc, sleep, waitFor } from './helper.js';
import { AdminOpcode, FeatureId, NvmOpcode } from '../../src/nvme/opcodes.js';
import { GenericStatus as G, MediaStatus, Sct } from '../../src/nvme/status.js';
import { CSTS_CFS, CSTS_RDY } from '../../src/nvme/registers.js';

const read = (slba: number, prp1: number) => ({ opcode: NvmOpcode.Read, nsid: 1, prp1, cdw10: slba, cdw12: 0 });

describe('emu fault injection', () => {
  let h: TestHost;
  let qp: QueuePair;
  let buf: { iova: number };
  before(async () => {
    h = await TestHost.open({ namespaces: [{ sizeBytes: 1 << 20, lbads: 9 }] });
    qp = await h.createQueuePair(1, 16);
    buf = h.t.dma.alloc(4096);
  });
  after(async () => {
    await h.close();
  });

  it('status: matching commands complete with the injected status, count decrements', async () => {
    h.t.inject({ qid: 1, opcode: NvmOpcode.Read, count: 2, action: { kind: 'status', sct: Sct.MediaDataIntegrity, sc: MediaStatus.UnrecoveredReadError, dnr: true } });
    // A write does not match.
    assert.deepEqual(sctSc(await qp.run({ opcode: NvmOpcode.Write, nsid: 1, prp1: buf.iova, cdw10: 0, cdw12: 0 })), [0, 0]);
    for (let i = 0; i < 2; i++) assert.deepEqual(sctSc(await qp.run(read(0, buf.iova))), [Sct.MediaDataIntegrity, MediaStatus.UnrecoveredReadError]);
    assert.deepEqual(sctSc(await qp.run(read(0, buf.iova))), [0, 0]);
  });

  it('status on admin commands (qid 0) and clearFaults', async () => {
    h.t.inject({ qid: 0, opcode: AdminOpcode.GetFeatures, count: Infinity, action: { kind: 'status', sct: Sct.Generic, sc: G.InternalError } });
    for (let i = 0; i < 3; i++) {
      const c = await h.admin.run({ opcode: AdminOpcode.GetFeatures, cdw10: FeatureId.NumberOfQueues });
      assert.deepEqual(sctSc(c), [Sct.Generic, G.InternalError]);
    }
    h.t.clearFaults();
    assert.deepEqual(sctSc(await h.admin.run({ opcode: AdminOpcode.GetFeatures, cdw10: FeatureId.NumberOfQueues })), [0, 0]);
  });

  it('delay: the completion is held back; later commands complete first', async () => {
    h.t.inject({ qid: 1, opcode: NvmOpcode.Read, nsid: 1, action: { kind: 'delay', ms: 120 } });
    const t0 = performance.now();
    const slow = qp.submit(read(1, buf.iova));
    const fast = qp.submit({ opcode: NvmOpcode.Flush, nsid: 1 });
    const first = await qp.next();
    assert.equal(first.cid, fast);
    const second = await qp.next(2000);
    assert.equal(second.cid, slow);
    assert.deepEqual(sctSc(second), [0, 0]);
    assert.ok(performance.now() - t0 >= 110, `delayed completion after ${performance.now() - t0} ms`);
  });

  it('drop: no completion ever; Abort completes it with Command Abort Requested', async () => {
    h.t.inject({ qid: 1, action: { kind: 'drop' } });
    const lost = qp.submit(read(2, buf.iova));
    await sleep(50);
    assert.equal(qp.peek(), null);
    const ab = await h.admin.run({ opcode: AdminOpcode.Abort, cdw10: (lost << 16) | 1 });
    assert.deepEqual(sctSc(ab), [0, 0]);
    assert.equal(ab.result & 1, 0, 'aborted');
    const c = await qp.next();
    assert.equal(c.cid, lost);
    assert.deepEqual(sctSc(c), [Sct.Generic, G.AbortRequested]);
  });

  it('Abort of a command still queued behind a full CQ completes it with Command Abort Requested when fetched', async () => {
    const q = await h.createQueuePair(3, 8, 2); // CQ of 2 entries: one completion at a time
    const c0 = q.put(read(0, buf.iova));
    const c1 = q.put(read(1, buf.iova));
    const c2 = q.put(read(2, buf.iova));
    q.ring();
    await sleep(20);
    const ab = await h.admin.run({ opcode: AdminOpcode.Abort, cdw10: (c1 << 16) | 3 });
    assert.equal(ab.result & 1, 0, 'will be aborted');
    const got = [];
    for (let i = 0; i < 3; i++) got.push(await q.next());
    assert.deepEqual(
      got.map((c) => c.cid),
      [c0, c1, c2],
    );
    assert.deepEqual(sctSc(got[0]!), [0, 0]);
    assert.deepEqual(sctSc(got[1]!), [Sct.Generic, G.AbortRequested]);
    assert.deepEqual(sctSc(got[2]!), [0, 0]);
    await h.admin.run({ opcode: AdminOpcode.DeleteIoSq, cdw10: 3 });
    await h.admin.run({ opcode: AdminOpcode.DeleteIoCq, cdw10: 3 });
  });

  it('Abort of a delayed command completes it early', async () => {
    h.t.inject({ qid: 1, action: { kind: 'delay', ms: 5000 } });
    const cid = qp.submit(read(3, buf.iova));
    await sleep(20);
    const ab = await h.admin.run({ opcode: AdminOpcode.Abort, cdw10: (cid << 16) | 1 });
    assert.equal(ab.result & 1, 0);
    const c = await qp.next(1000);
    assert.equal(c.cid, cid);
    assert.deepEqual(sctSc(c), [Sct.Generic, G.AbortRequested]);
  });

  it('deleting an SQ aborts its held commands with Command Aborted due to SQ Deletion', async () => {
    const q2 = await h.createQueuePair(2, 8);
    h.t.inject({ qid: 2, count: 2, action: { kind: 'drop' } });
    const a = q2.submit(read(0, buf.iova));
    const b = q2.submit(read(1, buf.iova));
    await sleep(30);
    assert.equal(q2.peek(), null);
    const d = await h.admin.run({ opcode: AdminOpcode.DeleteIoSq, cdw10: 2 });
    assert.deepEqual(sctSc(d), [0, 0]);
    // Their completions are in CQ 2 already when Delete SQ completes.
    const c1 = q2.poll();
    const c2 = q2.poll();
    assert.ok(c1 && c2);
    assert.deepEqual([c1.cid, c2.cid].sort(), [a, b].sort());
    assert.deepEqual(sctSc(c1), [Sct.Generic, G.AbortedSqDeletion]);
    assert.deepEqual(sctSc(c2), [Sct.Generic, G.AbortedSqDeletion]);
    assert.deepEqual(sctSc(await h.admin.run({ opcode: AdminOpcode.DeleteIoCq, cdw10: 2 })), [0, 0]);
  });

  it('fatal: fetching the matching command sets CSTS.CFS; processing stops until reset', async () => {
    h.t.inject({ qid: 1, opcode: NvmOpcode.Write, action: { kind: 'fatal' } });
    qp.submit({ opcode: NvmOpcode.Write, nsid: 1, prp1: buf.iova, cdw10: 0, cdw12: 0 });
    await waitFor(() => (h.csts() & CSTS_CFS) !== 0, 2000, 'CFS');
    qp.submit(read(0, buf.iova));
    await sleep(30);
    assert.equal(qp.peek(), null);
    await h.disable();
    assert.equal(h.csts() & (CSTS_CFS | CSTS_RDY), 0);
    await h.enable();
    qp = await h.createQueuePair(1, 16);
    assert.deepEqual(sctSc(await qp.run(read(0, buf.iova))), [0, 0]);
  });

  it('a malformed PSDT is Invalid Field', async () => {
    const c = await qp.run({ opcode: NvmOpcode.Read, nsid: 1, prp1: buf.iova, cdw10: 0, cdw12: 0, psdt: 3 });
    assert.deepEqual(sctSc(c), [Sct.Generic, G.InvalidField]);
    assert.deepEqual(sctSc(await qp.run(read(0, buf.iova))), [0, 0]);
  });
});

describe('emu internal errors', () => {
  it('an exception inside a command handler becomes Internal Error and the controller keeps going', async () => {
    // A serial number longer than Identify's 20-byte field makes the Identify encoder throw inside the worker.
    const h = await TestHost.open({ namespaces: [{ sizeBytes: 1 << 20, lbads: 9 }], serial: 'X'.repeat(30) });
    try {
      const b = h.t.dma.alloc(4096);
      const c = await h.admin.run({ opcode: AdminOpcode.Identify, prp1: b.iova, cdw10: 1 });
      assert.deepEqual(sctSc(c), [Sct.Generic, G.InternalError]);
      assert.deepEqual(sctSc(await h.admin.run({ opcode: AdminOpcode.Identify, prp1: b.iova, nsid: 1, cdw10: 0 })), [0, 0]);
      assert.ok(h.t.stats().errors >= 1);
    } finally {
      await h.close();
    }
  });
});
