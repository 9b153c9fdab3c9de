/** Register state machine: enable, disable/reset, invalid configuration, shutdown, fatal status, device loss. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Worker } from 'node:worker_threads';
import { TestHost, sctSc, sleep, waitFor } from './helper.js';
import { AdminOpcode, Cns, FeatureId } from '../../src/nvme/opcodes.js';
import {
  CC_SHN_NORMAL,
  CC_SHN_SHIFT,
  CSTS_CFS,
  CSTS_RDY,
  CSTS_SHST_COMPLETE,
  CSTS_SHST_MASK,
  CSTS_SHST_SHIFT,
  REG_AQA,
  REG_ASQ,
  REG_CAP,
  REG_CC,
  REG_CSTS,
  REG_VS,
  decodeCap,
  decodeVersion,
  encodeCc,
} from '../../src/nvme/registers.js';

const NS = [{ sizeBytes: 1 << 20, lbads: 9 as const }];

describe('emu controller registers', () => {
  it('reports CAP and VS, and ignores writes to read-only registers', async () => {
    const h = await TestHost.open({ namespaces: NS, maxQueuePairs: 8, mqes: 255 }, { enable: false });
    try {
      const cap = decodeCap(h.t.read32(REG_CAP), h.t.read32(REG_CAP + 4));
      assert.equal(cap.maxQueueEntries, 256);
      assert.equal(cap.contiguousQueuesRequired, true);
      assert.equal(cap.timeoutMs, 1000);
      assert.equal(cap.doorbellStride, 4);
      assert.equal(cap.commandSets & 1, 1);
      assert.equal(cap.minPageSize, 4096);
      assert.equal(cap.maxPageSize, 65536);
      assert.deepEqual(decodeVersion(h.t.read32(REG_VS)), { major: 1, minor: 4, tertiary: 0 });
      h.t.write32(REG_CSTS, CSTS_RDY);
      h.t.write32(REG_CAP, 0);
      assert.equal(h.t.read32(REG_CSTS), 0);
      assert.equal(decodeCap(h.t.read32(REG_CAP), h.t.read32(REG_CAP + 4)).maxQueueEntries, 256);
    } finally {
      await h.close();
    }
  });

  it('enables, disables (reset drops I/O queues) and re-enables', async () => {
    const h = await TestHost.open({ namespaces: NS });
    try {
      assert.equal(h.csts() & CSTS_RDY, CSTS_RDY);
      await h.createQueuePair(1, 8);
      await h.disable();
      assert.equal(h.csts(), 0);
      await h.enable();
      assert.equal(h.csts() & (CSTS_RDY | CSTS_CFS), CSTS_RDY);
      // Queue 1 was deleted by the reset: creating it again succeeds, and the admin queue restarted at slot 0.
      const qp = await h.createQueuePair(1, 8);
      assert.equal(qp.qid, 1);
      const c = await h.admin.run({ opcode: AdminOpcode.GetFeatures, cdw10: FeatureId.NumberOfQueues });
      assert.deepEqual(sctSc(c), [0, 0]);
    } finally {
      await h.close();
    }
  });

  it('sets RDY only after the configured ready delay', async () => {
    const h = await TestHost.open({ namespaces: NS, readyDelayMs: 80 }, { enable: false });
    try {
      const t0 = Date.now();
      await h.enable({}, false);
      await sleep(20);
      assert.equal(h.csts() & CSTS_RDY, 0);
      await waitFor(() => (h.csts() & CSTS_RDY) !== 0, 2000, 'RDY');
      assert.ok(Date.now() - t0 >= 75);
    } finally {
      await h.close();
    }
  });

  for (const [what, setup] of [
    ['admin queue of 1 entry', (h: TestHost) => h.t.write32(REG_AQA, 0)],
    ['unaligned ASQ', (h: TestHost) => h.t.write32(REG_ASQ, h.admin.sq.iova + 64)],
    ['ASQ outside DMA memory', (h: TestHost) => h.t.write32(REG_ASQ + 4, 0x7000)],
  ] as const) {
    it(`invalid configuration (${what}) sets CSTS.CFS; disabling clears it`, async () => {
      const h = await TestHost.open({ namespaces: NS }, { enable: false });
      try {
        h.programAdmin();
        setup(h);
        h.t.write32(REG_CC, encodeCc({ enable: true, css: 0, mps: 0, ams: 0, shn: 0, iosqes: 6, iocqes: 4 }));
        await waitFor(() => (h.csts() & (CSTS_CFS | CSTS_RDY)) !== 0, 2000, 'CFS');
        assert.equal(h.csts() & CSTS_CFS, CSTS_CFS);
        assert.equal(h.csts() & CSTS_RDY, 0);
        await h.disable();
        assert.equal(h.csts(), 0);
        await h.enable();
        assert.equal(h.csts() & (CSTS_RDY | CSTS_CFS), CSTS_RDY);
      } finally {
        await h.close();
      }
    });
  }

  it('invalid memory page size (MPS above CAP.MPSMAX) sets CSTS.CFS', async () => {
    const h = await TestHost.open({ namespaces: NS }, { enable: false });
    try {
      await h.enable({ mps: 5 }, true);
      assert.equal(h.csts() & CSTS_CFS, CSTS_CFS);
    } finally {
      await h.close();
    }
  });

  it('I/O queue creation checks CC.IOSQES / CC.IOCQES', async () => {
    const h = await TestHost.open({ namespaces: NS }, { enable: false });
    try {
      await h.enable({ iosqes: 0, iocqes: 0 });
      const m = h.t.dma.alloc(4096);
      const c = await h.admin.run({ opcode: AdminOpcode.CreateIoCq, prp1: m.iova, cdw10: (7 << 16) | 1, cdw11: 1 });
      assert.deepEqual(sctSc(c), [0, 2]);
    } finally {
      await h.close();
    }
  });

  it('shutdown notification: SHST goes to complete', async () => {
    const h = await TestHost.open({ namespaces: NS });
    try {
      const cc = h.t.read32(REG_CC);
      h.t.write32(REG_CC, cc | (CC_SHN_NORMAL << CC_SHN_SHIFT));
      await waitFor(() => (h.csts() & CSTS_SHST_MASK) >>> CSTS_SHST_SHIFT === CSTS_SHST_COMPLETE, 2000, 'SHST complete');
      // After a disable, SHST clears and the controller can be brought up again.
      await h.disable();
      assert.equal(h.csts() & CSTS_SHST_MASK, 0);
      await h.enable();
      const buf = h.t.dma.alloc(4096);
      const c = await h.admin.run({ opcode: AdminOpcode.Identify, prp1: buf.iova, cdw10: Cns.Controller });
      assert.deepEqual(sctSc(c), [0, 0]);
    } finally {
      await h.close();
    }
  });

  it('setFatal sets CSTS.CFS synchronously and stops command processing until reset', async () => {
    const h = await TestHost.open({ namespaces: NS });
    try {
      h.t.setFatal();
      assert.equal(h.csts() & CSTS_CFS, CSTS_CFS);
      h.admin.submit({ opcode: AdminOpcode.GetFeatures, cdw10: FeatureId.NumberOfQueues });
      await sleep(30);
      assert.equal(h.admin.peek(), null);
      await h.disable();
      assert.equal(h.csts() & CSTS_CFS, 0);
      await h.enable();
      const c = await h.admin.run({ opcode: AdminOpcode.GetFeatures, cdw10: FeatureId.NumberOfQueues });
      assert.deepEqual(sctSc(c), [0, 0]);
    } finally {
      await h.close();
    }
  });

  it('a dead worker reads as a surprise-removed device; close is idempotent', async () => {
    const h = await TestHost.open({ namespaces: NS });
    const w = (h.t as unknown as { worker: Worker }).worker;
    await w.terminate();
    await waitFor(() => h.t.failure !== null, 2000, 'failure');
    assert.equal(h.t.read32(REG_CSTS), 0xffffffff);
    assert.match(h.t.failure!.message, /exited unexpectedly/);
    assert.throws(() => h.t.inject({ action: { kind: 'drop' } }));
    await h.close();
    await h.close();
  });

  it('close stops the worker; later register reads return all ones', async () => {
    const h = await TestHost.open({ namespaces: NS });
    await h.close();
    assert.equal(h.t.read32(REG_CSTS), 0xffffffff);
    await h.t.close();
  });

  it('sleeps when idle and is woken by the doorbell, not by its sleep timeout', async () => {
    // A 2 s sleep timeout: were the wake lost, the command would take up to 2 s.
    const h = await TestHost.open({ namespaces: NS, sleepMs: 2000 });
    try {
      await sleep(30);
      const s0 = h.t.stats().sleeps;
      assert.ok(s0 > 0, 'controller should have slept while idle');
      const t0 = performance.now();
      const c = await h.admin.run({ opcode: AdminOpcode.GetFeatures, cdw10: FeatureId.NumberOfQueues });
      assert.deepEqual(sctSc(c), [0, 0]);
      assert.ok(performance.now() - t0 < 500, `idle wake took ${performance.now() - t0} ms`);
    } finally {
      await h.close();
    }
  });
});
