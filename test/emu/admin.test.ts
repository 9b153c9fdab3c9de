/** Admin command set: Identify, queue management validation, features, log pages, AER, invalid doorbells. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { QueuePair, TestHost, sctSc, sleep } from './helper.js';
import { AdminOpcode, Cns, FeatureId, LogPageId, NvmOpcode } from '../../src/nvme/opcodes.js';
import { decodeIdentifyController, ONCS_DSM, ONCS_WRITE_ZEROES, SGLS_SUPPORTED } from '../../src/nvme/identify-controller.js';
import { decodeIdentifyNamespace } from '../../src/nvme/identify-namespace.js';
import { decodeActiveNamespaceList } from '../../src/nvme/namespace-list.js';
import { decodeErrorLogEntry, decodeSmartLog } from '../../src/nvme/logpages.js';
import { CommandSpecificStatus as CS, GenericStatus as G, Sct } from '../../src/nvme/status.js';
import { statusDnr } from '../../src/nvme/cqe.js';

const NS = [
  { sizeBytes: 1 << 20, lbads: 9 as const },
  { sizeBytes: 4 << 20, lbads: 12 as const },
  { sizeBytes: 2 << 20, lbads: 9 as const },
];

describe('emu admin commands', () => {
  let h: TestHost;
  let buf: { iova: number; bytes: Uint8Array };
  before(async () => {
    h = await TestHost.open({ namespaces: NS, maxQueuePairs: 4, mqes: 63, serial: 'SN-TEST-42', model: 'Model X', firmware: 'FW1.2', vendorId: 0x1234 });
    buf = h.t.dma.alloc(8192);
  });
  after(async () => {
    await h.close();
  });

  const identify = (cns: number, nsid = 0) => h.admin.run({ opcode: AdminOpcode.Identify, nsid, prp1: buf.iova, cdw10: cns });

  it('Identify Controller', async () => {
    const c = await identify(Cns.Controller);
    assert.deepEqual(sctSc(c), [0, 0]);
    assert.equal(c.sqId, 0);
    const id = decodeIdentifyController(buf.bytes);
    assert.equal(id.vid, 0x1234);
    assert.equal(id.sn, 'SN-TEST-42');
    assert.equal(id.mn, 'Model X');
    assert.equal(id.fr, 'FW1.2');
    assert.equal(id.mdts, 5);
    assert.equal(id.sqes, 0x66);
    assert.equal(id.cqes, 0x44);
    assert.equal(id.nn, 3);
    assert.equal(id.oncs & (ONCS_DSM | ONCS_WRITE_ZEROES), ONCS_DSM | ONCS_WRITE_ZEROES);
    assert.equal(id.sgls & 0x3, SGLS_SUPPORTED);
    assert.equal(id.ver, 0x00010400);
    assert.equal(id.cntlid, 1);
  });

  it('Identify Namespace for each format, and invalid nsids', async () => {
    let c = await identify(Cns.Namespace, 1);
    assert.deepEqual(sctSc(c), [0, 0]);
    let ns = decodeIdentifyNamespace(buf.bytes);
    assert.equal(ns.nsze, (1 << 20) / 512);
    assert.equal(ns.blockSize, 512);
    c = await identify(Cns.Namespace, 2);
    ns = decodeIdentifyNamespace(buf.bytes);
    assert.equal(ns.nsze, (4 << 20) / 4096);
    assert.equal(ns.blockSize, 4096);
    assert.equal(buf.bytes[33]! & 0x7, 1, 'DLFEAT: deallocated blocks read as zeros');
    for (const bad of [0, 4, 0xffffffff]) {
      c = await identify(Cns.Namespace, bad);
      assert.deepEqual(sctSc(c), [Sct.Generic, G.InvalidNamespaceOrFormat], `nsid ${bad}`);
    }
  });

  it('Identify active namespace list above CDW1.NSID', async () => {
    let c = await identify(Cns.ActiveNamespaceList, 0);
    assert.deepEqual(sctSc(c), [0, 0]);
    assert.deepEqual(decodeActiveNamespaceList(buf.bytes), [1, 2, 3]);
    c = await identify(Cns.ActiveNamespaceList, 1);
    assert.deepEqual(decodeActiveNamespaceList(buf.bytes), [2, 3]);
    c = await identify(Cns.ActiveNamespaceList, 3);
    assert.deepEqual(decodeActiveNamespaceList(buf.bytes), []);
    c = await identify(0x55);
    assert.deepEqual(sctSc(c), [Sct.Generic, G.InvalidField]);
  });

  it('Identify into PRP1 with offset and PRP2 (two pages)', async () => {
    const b = h.t.dma.alloc(8192);
    const c = await h.admin.run({ opcode: AdminOpcode.Identify, prp1: b.iova + 2048, prp2: b.iova + 4096, cdw10: Cns.Controller });
    assert.deepEqual(sctSc(c), [0, 0]);
    assert.equal(decodeIdentifyController(b.bytes.subarray(2048, 2048 + 4096)).sn, 'SN-TEST-42');
  });

  it('unknown admin opcode is Invalid Command Opcode', async () => {
    const c = await h.admin.run({ opcode: 0x7e });
    assert.deepEqual(sctSc(c), [Sct.Generic, G.InvalidOpcode]);
    assert.equal(statusDnr(c.status), true);
  });

  it('Number of Queues: set before queues exist, capped; Command Sequence Error after', async () => {
    let c = await h.admin.run({ opcode: AdminOpcode.SetFeatures, cdw10: FeatureId.NumberOfQueues, cdw11: (99 << 16) | 1 });
    assert.deepEqual(sctSc(c), [0, 0]);
    assert.equal(c.result & 0xffff, 1);
    assert.equal(c.result >>> 16, 3); // maxQueuePairs 4 → 0's based 3
    c = await h.admin.run({ opcode: AdminOpcode.GetFeatures, cdw10: FeatureId.NumberOfQueues });
    assert.equal(c.result, (3 << 16) | 1);
    const qp = await h.createQueuePair(1, 4);
    c = await h.admin.run({ opcode: AdminOpcode.SetFeatures, cdw10: FeatureId.NumberOfQueues, cdw11: 0x00010001 });
    assert.deepEqual(sctSc(c), [Sct.Generic, G.CommandSequenceError]);
    await deletePair(h, qp);
  });

  it('Volatile Write Cache and Arbitration are stored; unknown features are Invalid Field', async () => {
    let c = await h.admin.run({ opcode: AdminOpcode.SetFeatures, cdw10: FeatureId.VolatileWriteCache, cdw11: 0 });
    assert.deepEqual(sctSc(c), [0, 0]);
    c = await h.admin.run({ opcode: AdminOpcode.GetFeatures, cdw10: FeatureId.VolatileWriteCache });
    assert.equal(c.result, 0);
    await h.admin.run({ opcode: AdminOpcode.SetFeatures, cdw10: FeatureId.VolatileWriteCache, cdw11: 1 });
    c = await h.admin.run({ opcode: AdminOpcode.GetFeatures, cdw10: FeatureId.VolatileWriteCache });
    assert.equal(c.result, 1);
    await h.admin.run({ opcode: AdminOpcode.SetFeatures, cdw10: FeatureId.Arbitration, cdw11: 0x03020103 });
    c = await h.admin.run({ opcode: AdminOpcode.GetFeatures, cdw10: FeatureId.Arbitration });
    assert.equal(c.result, 0x03020103);
    c = await h.admin.run({ opcode: AdminOpcode.SetFeatures, cdw10: FeatureId.TemperatureThreshold, cdw11: 1 });
    assert.deepEqual(sctSc(c), [Sct.Generic, G.InvalidField]);
    c = await h.admin.run({ opcode: AdminOpcode.GetFeatures, cdw10: 0x77 });
    assert.deepEqual(sctSc(c), [Sct.Generic, G.InvalidField]);
  });

  it('queue creation and deletion validation', async () => {
    const mem = h.t.dma.alloc(64 * 64);
    const cq = (qid: number, size: number, cdw11 = 1, prp1 = mem.iova) => h.admin.run({ opcode: AdminOpcode.CreateIoCq, prp1, cdw10: ((size - 1) << 16) | qid, cdw11 });
    const sq = (qid: number, size: number, cqid: number, cdw11 = 1, prp1 = mem.iova) =>
      h.admin.run({ opcode: AdminOpcode.CreateIoSq, prp1, cdw10: ((size - 1) << 16) | qid, cdw11: (cqid << 16) | cdw11 });
    const expect = (c: { status: number }, sct: number, sc: number, what: string) => assert.deepEqual(sctSc(c as never), [sct, sc], what);

    expect(await cq(0, 8), Sct.CommandSpecific, CS.InvalidQueueIdentifier, 'CQ qid 0');
    expect(await cq(5, 8), Sct.CommandSpecific, CS.InvalidQueueIdentifier, 'CQ qid > max');
    expect(await cq(2, 1), Sct.CommandSpecific, CS.InvalidQueueSize, 'CQ size 1');
    expect(await cq(2, 65), Sct.CommandSpecific, CS.InvalidQueueSize, 'CQ size > MQES+1');
    expect(await cq(2, 8, 0), Sct.Generic, G.InvalidField, 'CQ not physically contiguous');
    expect(await cq(2, 8, 1, mem.iova + 512), Sct.Generic, G.PrpOffsetInvalid, 'CQ base not page aligned');
    expect(await cq(2, 8, 1, 0x1000), Sct.Generic, G.DataTransferError, 'CQ base outside DMA memory');
    expect(await cq(2, 64), 0, 0, 'CQ 2 created');
    expect(await cq(2, 8), Sct.CommandSpecific, CS.InvalidQueueIdentifier, 'CQ 2 exists');

    const sqMem = h.t.dma.alloc(64 * 64);
    expect(await sq(0, 8, 2, 1, sqMem.iova), Sct.CommandSpecific, CS.InvalidQueueIdentifier, 'SQ qid 0');
    expect(await sq(5, 8, 2, 1, sqMem.iova), Sct.CommandSpecific, CS.InvalidQueueIdentifier, 'SQ qid > max');
    expect(await sq(2, 1, 2, 1, sqMem.iova), Sct.CommandSpecific, CS.InvalidQueueSize, 'SQ size 1');
    expect(await sq(2, 65, 2, 1, sqMem.iova), Sct.CommandSpecific, CS.InvalidQueueSize, 'SQ size > MQES+1');
    expect(await sq(2, 8, 3, 1, sqMem.iova), Sct.CommandSpecific, CS.CompletionQueueInvalid, 'SQ on missing CQ');
    expect(await sq(2, 8, 0, 1, sqMem.iova), Sct.CommandSpecific, CS.CompletionQueueInvalid, 'SQ on admin CQ');
    expect(await sq(2, 8, 2, 0, sqMem.iova), Sct.Generic, G.InvalidField, 'SQ not physically contiguous');
    expect(await sq(2, 8, 2, 1, sqMem.iova), 0, 0, 'SQ 2 created');
    expect(await sq(2, 8, 2, 1, sqMem.iova), Sct.CommandSpecific, CS.InvalidQueueIdentifier, 'SQ 2 exists');

    const del = (op: number, qid: number) => h.admin.run({ opcode: op, cdw10: qid });
    expect(await del(AdminOpcode.DeleteIoCq, 2), Sct.CommandSpecific, CS.InvalidQueueDeletion, 'CQ still used by SQ 2');
    expect(await del(AdminOpcode.DeleteIoSq, 0), Sct.CommandSpecific, CS.InvalidQueueIdentifier, 'delete admin SQ');
    expect(await del(AdminOpcode.DeleteIoSq, 3), Sct.CommandSpecific, CS.InvalidQueueIdentifier, 'delete missing SQ');
    expect(await del(AdminOpcode.DeleteIoCq, 0), Sct.CommandSpecific, CS.InvalidQueueIdentifier, 'delete admin CQ');
    expect(await del(AdminOpcode.DeleteIoSq, 2), 0, 0, 'delete SQ 2');
    expect(await del(AdminOpcode.DeleteIoCq, 2), 0, 0, 'delete CQ 2');
    expect(await del(AdminOpcode.DeleteIoCq, 2), Sct.CommandSpecific, CS.InvalidQueueIdentifier, 'CQ 2 already deleted');
  });

  it('SMART / Health log counts host commands and data units', async () => {
    const qp = await h.createQueuePair(1, 8);
    const data = h.t.dma.alloc(4096);
    for (let i = 0; i < 3; i++) assert.deepEqual(sctSc(await qp.run({ opcode: NvmOpcode.Write, nsid: 1, prp1: data.iova, cdw10: i * 8, cdw12: 7 })), [0, 0]);
    for (let i = 0; i < 5; i++) assert.deepEqual(sctSc(await qp.run({ opcode: NvmOpcode.Read, nsid: 2, prp1: data.iova, cdw10: i, cdw12: 0 })), [0, 0]);
    const log = h.t.dma.alloc(512);
    const c = await h.admin.run({ opcode: AdminOpcode.GetLogPage, prp1: log.iova, cdw10: LogPageId.SmartHealth | ((512 / 4 - 1) << 16) });
    assert.deepEqual(sctSc(c), [0, 0]);
    const s = decodeSmartLog(log.bytes);
    assert.equal(s.compositeTemperature, 313);
    assert.equal(s.availableSpare, 100);
    assert.ok(s.hostWriteCommands >= 3);
    assert.ok(s.hostReadCommands >= 5);
    assert.ok(s.dataUnitsRead >= 1);
    assert.ok(s.dataUnitsWritten >= 1);
    assert.equal(s.powerCycles, 1);
    await deletePair(h, qp);
  });

  it('Error Information log records failed commands, newest first', async () => {
    const qp = await h.createQueuePair(1, 8);
    const data = h.t.dma.alloc(4096);
    const c1 = await qp.run({ opcode: NvmOpcode.Read, nsid: 1, prp1: data.iova, cdw10: 5000, cdw12: 0 });
    assert.deepEqual(sctSc(c1), [Sct.Generic, G.LbaOutOfRange]);
    const log = h.t.dma.alloc(4096);
    const c = await h.admin.run({ opcode: AdminOpcode.GetLogPage, prp1: log.iova, cdw10: LogPageId.ErrorInformation | ((4096 / 4 - 1) << 16) });
    assert.deepEqual(sctSc(c), [0, 0]);
    const e = decodeErrorLogEntry(log.bytes, 0);
    assert.equal(e.sqid, 1);
    assert.equal(e.cid, c1.cid);
    assert.equal(e.status & 0xff, G.LbaOutOfRange);
    assert.equal(e.lba, 5000);
    assert.equal(e.nsid, 1);
    assert.ok(e.errorCount >= 1);
    const older = decodeErrorLogEntry(log.bytes, 64);
    assert.ok(older.errorCount === 0 || older.errorCount < e.errorCount);
    const bad = await h.admin.run({ opcode: AdminOpcode.GetLogPage, prp1: log.iova, cdw10: 0x33 | (15 << 16) });
    assert.deepEqual(sctSc(bad), [Sct.CommandSpecific, CS.InvalidLogPage]);
    await deletePair(h, qp);
  });

  it('invalid doorbell writes are ignored, logged, and reported by an AER', async () => {
    const qp = await h.createQueuePair(1, 8);
    const aerCid = h.admin.submit({ opcode: AdminOpcode.AsyncEventRequest });
    await sleep(10);
    assert.equal(h.admin.peek(), null, 'AER stays outstanding');
    Atomics.store(h.t.doorbells, 2 * 1, 8 + 3); // SQ tail beyond the queue
    h.t.write32(0x1000 + 8, 8 + 3);
    const ev = await h.admin.next();
    assert.equal(ev.cid, aerCid);
    assert.deepEqual(sctSc(ev), [0, 0]);
    assert.equal(ev.result & 0x7, 0, 'event type: error status');
    assert.equal((ev.result >>> 8) & 0xff, 1, 'invalid doorbell write value');
    assert.equal((ev.result >>> 16) & 0xff, LogPageId.ErrorInformation);
    assert.ok(h.t.stats().invalidDoorbells >= 1);
    // The queue still works with a valid tail.
    const data = h.t.dma.alloc(512);
    qp.tail = 0;
    const c = await qp.run({ opcode: NvmOpcode.Read, nsid: 1, prp1: data.iova, cdw10: 0, cdw12: 0 });
    assert.deepEqual(sctSc(c), [0, 0]);
    await deletePair(h, qp);
  });

  it('Abort of an unknown command reports not aborted (result bit 0 = 1)', async () => {
    const c = await h.admin.run({ opcode: AdminOpcode.Abort, cdw10: (0x4444 << 16) | 0 });
    assert.deepEqual(sctSc(c), [0, 0]);
    assert.equal(c.result & 1, 1);
  });
});

async function deletePair(h: TestHost, qp: QueuePair): Promise<void> {
  assert.deepEqual(sctSc(await h.admin.run({ opcode: AdminOpcode.DeleteIoSq, cdw10: qp.qid })), [0, 0]);
  assert.deepEqual(sctSc(await h.admin.run({ opcode: AdminOpcode.DeleteIoCq, cdw10: qp.qid })), [0, 0]);
}
