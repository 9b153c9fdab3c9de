import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeCqe, encodeCqe, makeStatus, statusDnr, statusOk, statusSc, statusSct, type Cqe } from '../../src/nvme/cqe.js';
import { decodeSqe, encodeSqe } from '../../src/nvme/sqe.js';
import { GenericStatus, Sct, allStatusCodes, statusFieldName, statusName } from '../../src/nvme/status.js';
import { cqHeadDoorbellOffset, decodeAqa, decodeCap, decodeCc, decodeCsts, encodeAqa, encodeCap, encodeCc, sqTailDoorbellOffset } from '../../src/nvme/registers.js';
import { read } from '../../src/nvme/commands.js';

const bytesOf = (dw: Uint32Array): number[] => [...new Uint8Array(dw.buffer, dw.byteOffset, dw.byteLength)];

test('CQE: hand-computed DW3 for SCT=0 SC=0x80 DNR=1 phase=1 cid=0x1234', () => {
  const status = makeStatus(Sct.Generic, GenericStatus.LbaOutOfRange, true);
  assert.equal(status, 0x4080); // SC 7:0 = 0x80, DNR = bit 14 of the 15-bit field
  const dw = new Uint32Array(4);
  encodeCqe({ result: 0xdeadbeef, resultHi: 0, sqHead: 0x0010, sqId: 3, cid: 0x1234, phase: 1, status }, dw);
  // DW3: CID 15:0 = 0x1234, P bit 16, SC 24:17 = 0x80 -> 0x0100_0000, DNR bit 31 -> 0x8000_0000.
  assert.equal(dw[3], 0x8101_1234);
  assert.deepEqual(bytesOf(dw), [0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0, 0x10, 0x00, 0x03, 0x00, 0x34, 0x12, 0x01, 0x81]);
  const c = decodeCqe(dw);
  assert.equal(c.status, 0x4080);
  assert.equal(statusSct(c.status), 0);
  assert.equal(statusSc(c.status), 0x80);
  assert.ok(statusDnr(c.status));
  assert.ok(!statusOk(c.status));
  assert.equal(statusFieldName(c.status), 'LBA Out of Range');
});

test('SQE: Read command bytes (cid, nsid, PRP1, SLBA high/low, NLB)', () => {
  const sqe = read(1, 0x1_0000_0010, 8, { prp1: 0x1_2345_6000 });
  sqe.cid = 0x00ab;
  const dw = new Uint32Array(16);
  encodeSqe(sqe, dw);
  const b = bytesOf(dw);
  assert.deepEqual(b.slice(0, 4), [0x02, 0x00, 0xab, 0x00]); // opcode 02h, CID 31:16
  assert.deepEqual(b.slice(4, 8), [1, 0, 0, 0]); // NSID
  assert.deepEqual(b.slice(24, 32), [0x00, 0x60, 0x45, 0x23, 0x01, 0, 0, 0]); // PRP1
  assert.deepEqual(b.slice(32, 40), [0, 0, 0, 0, 0, 0, 0, 0]); // PRP2
  assert.deepEqual(b.slice(40, 44), [0x10, 0, 0, 0]); // SLBA low
  assert.deepEqual(b.slice(44, 48), [0x01, 0, 0, 0]); // SLBA high
  assert.deepEqual(b.slice(48, 52), [0x07, 0, 0, 0]); // NLB 0's based
  assert.deepEqual(b.slice(52, 64), new Array(12).fill(0));
});

test('registers: CAP / CC / CSTS / AQA encodings', () => {
  const [lo, hi] = encodeCap({ mqes: 1023, cqr: true, toUnits: 20, dstrd: 0, css: 1, mpsmin: 0, mpsmax: 4 });
  assert.equal(lo, 0x1401_03ff);
  assert.equal(hi, 0x0040_0020);
  const cap = decodeCap(lo, hi);
  assert.equal(cap.maxQueueEntries, 1024);
  assert.equal(cap.contiguousQueuesRequired, true);
  assert.equal(cap.timeoutMs, 10_000);
  assert.equal(cap.doorbellStride, 4);
  assert.equal(cap.commandSets, 1);
  assert.equal(cap.minPageSize, 4096);
  assert.equal(cap.maxPageSize, 65536);
  const cc = encodeCc({ enable: true, css: 0, mps: 0, ams: 0, shn: 0, iosqes: 6, iocqes: 4 });
  assert.equal(cc, 0x0046_0001);
  assert.deepEqual(decodeCc(0x0046_4081), { enable: true, css: 0, mps: 1, ams: 0, shn: 1, iosqes: 6, iocqes: 4 });
  const csts = decodeCsts(0x9);
  assert.equal(csts.ready, true);
  assert.equal(csts.shutdownStatus, 2);
  assert.equal(csts.fatal, false);
  assert.equal(decodeCsts(0x2).fatal, true);
  assert.equal(encodeAqa(32, 32), 0x001f_001f);
  assert.equal(encodeAqa(4096, 2), 0x0001_0fff);
  assert.deepEqual(decodeAqa(0x003f_000f), { asqEntries: 16, acqEntries: 64 });
  assert.equal(sqTailDoorbellOffset(1, 4), 0x1008);
  assert.equal(cqHeadDoorbellOffset(1, 4), 0x100c);
  assert.equal(cqHeadDoorbellOffset(0, 16), 0x1010);
});

test('status names', () => {
  assert.equal(statusName(0, 0x80), 'LBA Out of Range');
  assert.equal(statusName(1, 0x01), 'Invalid Queue Identifier');
  assert.equal(statusName(0, 0x13), 'PRP Offset Invalid');
  assert.equal(statusName(2, 0x86), 'Access Denied');
  assert.equal(statusName(0, 0x00), 'Successful Completion');
  assert.equal(statusName(0, 0x02), 'Invalid Field in Command');
  assert.equal(statusName(1, 0x02), 'Invalid Queue Size');
  assert.equal(statusName(0, 0x0f), 'Data SGL Length Invalid');
  assert.equal(statusName(0, 0x11), 'SGL Descriptor Type Invalid');
  assert.equal(statusName(2, 0x81), 'Unrecovered Read Error');
  assert.match(statusName(7, 0x12), /Vendor Specific/);
  assert.match(statusName(0, 0x7f), /Reserved/);
  const keys = allStatusCodes().map((s) => (s.sct << 8) | s.sc);
  assert.equal(new Set(keys).size, keys.length);
});

test('SQE property: encode/decode round trip', () => {
  const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
  fc.assert(
    fc.property(
      fc.record({
        opcode: fc.integer({ min: 0, max: 255 }),
        fuse: fc.integer({ min: 0, max: 3 }),
        psdt: fc.integer({ min: 0, max: 3 }),
        cid: fc.integer({ min: 0, max: 0xffff }),
        nsid: u32,
        cdw2: u32,
        cdw3: u32,
        mptr: fc.maxSafeNat(),
        prp1: fc.maxSafeNat(),
        prp2: fc.maxSafeNat(),
        cdw10: u32,
        cdw11: u32,
        cdw12: u32,
        cdw13: u32,
        cdw14: u32,
        cdw15: u32,
      }),
      fc.integer({ min: 0, max: 3 }),
      (e, slot) => {
        const dw = new Uint32Array(64);
        encodeSqe(e, dw, slot * 16);
        const d = decodeSqe(dw, slot * 16);
        const { dptr, ...rest } = d;
        assert.deepEqual(rest, { ...e });
        assert.equal(dptr.length, 4);
      },
    ),
    { numRuns: 200 },
  );
});

test('CQE property: encode/decode round trip', () => {
  fc.assert(
    fc.property(
      fc.record({
        result: fc.integer({ min: 0, max: 0xffff_ffff }),
        resultHi: fc.integer({ min: 0, max: 0xffff_ffff }),
        sqHead: fc.integer({ min: 0, max: 0xffff }),
        sqId: fc.integer({ min: 0, max: 0xffff }),
        cid: fc.integer({ min: 0, max: 0xffff }),
        phase: fc.integer({ min: 0, max: 1 }),
        status: fc.integer({ min: 0, max: 0x7fff }),
      }),
      (e: Cqe) => {
        const dw = new Uint32Array(8);
        encodeCqe(e, dw, 4);
        assert.deepEqual(decodeCqe(dw, 4), { ...e });
      },
    ),
    { numRuns: 200 },
  );
});
