import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  abort,
  createIoCq,
  createIoSq,
  decodeDsmRanges,
  decodeLogPageBytes,
  decodeNumberOfQueues,
  decodeSlba,
  deleteIoCq,
  deleteIoSq,
  dsm,
  encodeDsmRanges,
  encodeNumberOfQueues,
  flush,
  getFeatures,
  getLogPage,
  identify,
  read,
  setFeatures,
  setNumberOfQueues,
  write,
  writeZeroes,
} from '../../src/nvme/commands.js';
import { AdminOpcode, Cns, FeatureId, LogPageId, NvmOpcode } from '../../src/nvme/opcodes.js';
import { sglDescriptorDwords, SglType } from '../../src/nvme/sgl.js';

test('identify', () => {
  const s = identify(Cns.Controller, 0, 0x1000);
  assert.deepEqual(s, { opcode: AdminOpcode.Identify, cid: 0, nsid: 0, cdw10: 1, cdw11: 0, psdt: 0, prp1: 0x1000, prp2: 0 });
  assert.equal(identify(Cns.Namespace, 7, 0x2000, { cntid: 0x12, csi: 2 }).cdw10, 0x0012_0000);
  assert.equal(identify(Cns.Namespace, 7, 0x2000, { csi: 2 }).cdw11, 0x0200_0000);
  assert.throws(() => identify(256, 0, 0), /cns/);
});

test('queue creation and deletion', () => {
  const cq = createIoCq(1, 1024, 0x8000, true, true, 1);
  assert.equal(cq.opcode, 0x05);
  assert.equal(cq.cdw10, 0x03ff_0001);
  assert.equal(cq.cdw11, 0x0001_0003);
  assert.equal(cq.prp1, 0x8000);
  const sq = createIoSq(1, 1024, 0x9000, 1, 2);
  assert.equal(sq.opcode, 0x01);
  assert.equal(sq.cdw10, 0x03ff_0001);
  assert.equal(sq.cdw11, 0x0001_0005);
  assert.equal(createIoSq(2, 65536, 0, 3, 0, false).cdw10, 0xffff_0002);
  assert.deepEqual(deleteIoSq(5), { opcode: 0x00, cid: 0, cdw10: 5 });
  assert.deepEqual(deleteIoCq(5), { opcode: 0x04, cid: 0, cdw10: 5 });
  assert.throws(() => createIoCq(0, 16, 0, true, false, 0), /qid/);
  assert.throws(() => createIoCq(1, 1, 0, true, false, 0), /size/);
  assert.throws(() => createIoCq(1, 65537, 0, true, false, 0), /size/);
  assert.throws(() => createIoSq(1, 16, 0, 0), /cqid/);
  assert.throws(() => createIoSq(1, 16, 0, 1, 4), /prio/);
  assert.throws(() => deleteIoSq(0), /qid/);
});

test('get log page: NUMD split across NUMDL/NUMDU, 64-bit offset', () => {
  const s = getLogPage(LogPageId.SmartHealth, 512, 0xffff_ffff, 0x3000);
  assert.equal(s.opcode, 0x02);
  assert.equal(s.cdw10, 0x007f_0002);
  assert.equal(s.cdw11, 0);
  assert.equal(s.nsid, 0xffff_ffff);
  assert.equal(decodeLogPageBytes(s.cdw10!, s.cdw11!), 512);
  const big = getLogPage(LogPageId.ErrorInformation, 1 << 20, 0, 0x3000, 0x4000, 0x1_0000_0004, { rae: true });
  assert.equal(big.cdw10, (0xffff_0000 | 0x8000 | 0x01) >>> 0);
  assert.equal(big.cdw11, 3);
  assert.equal(big.cdw12, 4);
  assert.equal(big.cdw13, 1);
  assert.equal(big.prp2, 0x4000);
  assert.equal(decodeLogPageBytes(big.cdw10!, big.cdw11!), 1 << 20);
  assert.throws(() => getLogPage(2, 6, 0, 0), /numdBytes/);
  assert.throws(() => getLogPage(2, 0, 0, 0), /numdBytes/);
  assert.throws(() => getLogPage(2, 8, 0, 0, 0, 2), /offset/);
});

test('features and number of queues', () => {
  assert.equal(encodeNumberOfQueues(16, 16), 0x000f_000f);
  assert.equal(encodeNumberOfQueues(65535, 1), 0x0000_fffe);
  assert.deepEqual(decodeNumberOfQueues(0x0003_0007), { sqCount: 8, cqCount: 4 });
  assert.throws(() => encodeNumberOfQueues(0, 1), /sqCount/);
  assert.throws(() => encodeNumberOfQueues(1, 65536), /cqCount/);
  const s = setNumberOfQueues(4, 2);
  assert.equal(s.opcode, AdminOpcode.SetFeatures);
  assert.equal(s.cdw10, FeatureId.NumberOfQueues);
  assert.equal(s.cdw11, 0x0001_0003);
  assert.equal(setFeatures(FeatureId.VolatileWriteCache, 1, { save: true }).cdw10, 0x8000_0006);
  const g = getFeatures(FeatureId.Arbitration, { sel: 3 });
  assert.equal(g.opcode, 0x0a);
  assert.equal(g.cdw10, 0x0301);
  assert.throws(() => getFeatures(1, { sel: 4 }), /sel/);
});

test('abort', () => {
  assert.deepEqual(abort(1, 0x55), { opcode: 0x08, cid: 0, cdw10: 0x0055_0001 });
  assert.throws(() => abort(1, 0x10000), /cid/);
});

test('NVM I/O commands', () => {
  const w = write(3, 2 ** 40 + 5, 65536, { prp1: 0x1000, prp2: 0x2000 }, { fua: true, dsm: 0x7 });
  assert.equal(w.opcode, NvmOpcode.Write);
  assert.equal(w.cdw10, 5);
  assert.equal(w.cdw11, 0x100);
  assert.equal(w.cdw12, (0x4000_0000 | 0xffff) >>> 0);
  assert.equal(w.cdw13, 7);
  assert.equal(decodeSlba(w.cdw10!, w.cdw11!), 2 ** 40 + 5);
  const sgl = sglDescriptorDwords({ type: SglType.DataBlock, subtype: 0, address: 0x5000, length: 4096 });
  const r = read(1, 0, 1, { sgl }, { limitedRetry: true });
  assert.equal(r.psdt, 1);
  assert.deepEqual(r.dptr, sgl);
  assert.equal(r.cdw12, 0x8000_0000);
  assert.throws(() => read(1, 0, 0, { prp1: 0 }), /block count/);
  assert.throws(() => read(1, 0, 65537, { prp1: 0 }), /block count/);
  assert.throws(() => read(1, -1, 1, { prp1: 0 }), /slba/);
  assert.deepEqual(flush(0xffff_ffff), { opcode: 0, cid: 0, nsid: 0xffff_ffff });
  const wz = writeZeroes(1, 100, 8, { deallocate: true });
  assert.equal(wz.opcode, 0x08);
  assert.equal(wz.cdw12, 0x0200_0007);
  const d = dsm(1, 2, { prp1: 0x6000 });
  assert.equal(d.opcode, 0x09);
  assert.equal(d.cdw10, 1);
  assert.equal(d.cdw11, 4);
  assert.throws(() => dsm(1, 257, { prp1: 0 }), /ranges/);
});

test('DSM range descriptors', () => {
  const out = new Uint8Array(32);
  encodeDsmRanges(
    [
      { slba: 0x1_0000_0002, blocks: 8 },
      { slba: 9, blocks: 1, contextAttributes: 3 },
    ],
    out,
  );
  assert.deepEqual([...out.subarray(0, 16)], [0, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0]);
  assert.deepEqual(decodeDsmRanges(out, 2), [
    { contextAttributes: 0, blocks: 8, slba: 0x1_0000_0002 },
    { contextAttributes: 3, blocks: 1, slba: 9 },
  ]);
  assert.throws(() => encodeDsmRanges([{ slba: 0, blocks: 2 ** 32 }], out), /ranges\[0\]\.blocks/);
});
