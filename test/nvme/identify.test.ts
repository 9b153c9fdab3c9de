import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  IDENTIFY_DATA_SIZE,
  IdCtrlOffset,
  activeNamespacesAfter,
  decodeActiveNamespaceList,
  decodeIdentifyController,
  decodeIdentifyNamespace,
  emptyIdentifyController,
  encodeActiveNamespaceList,
  encodeFlbas,
  encodeIdentifyController,
  encodeIdentifyNamespace,
  flbasFormatIndex,
  maxTransferBytes,
  type IdentifyController,
} from '../../src/nvme/identify.js';

const buf = (): Uint8Array => new Uint8Array(IDENTIFY_DATA_SIZE);

test('identify controller: known byte positions', () => {
  const out = buf().fill(0xaa);
  encodeIdentifyController(
    {
      vid: 0x1b36,
      ssvid: 0x1af4,
      sn: 'SN123',
      mn: 'HOMI Emulated NVMe',
      fr: '1.0',
      ieee: 0x525400,
      mdts: 5,
      cntlid: 0x0102,
      ver: 0x00020000,
      sqes: 0x66,
      cqes: 0x44,
      maxcmd: 256,
      nn: 4,
      oncs: 0x0c,
      vwc: 1,
      sgls: 1,
      subnqn: 'nqn.2024-01.io.homi:emu',
    },
    out,
  );
  assert.deepEqual([...out.subarray(0, 4)], [0x36, 0x1b, 0xf4, 0x1a]);
  assert.equal(String.fromCharCode(...out.subarray(4, 9)), 'SN123');
  assert.equal(out[9], 0x20); // space padded
  assert.equal(out[23], 0x20);
  assert.equal(String.fromCharCode(...out.subarray(24, 28)), 'HOMI');
  assert.equal(out[24], 0x48);
  assert.equal(out[63], 0x20);
  assert.deepEqual([...out.subarray(64, 72)], [0x31, 0x2e, 0x30, 0x20, 0x20, 0x20, 0x20, 0x20]);
  assert.deepEqual([...out.subarray(73, 76)], [0x00, 0x54, 0x52]); // OUI LSB first
  assert.equal(out[77], 5);
  assert.deepEqual([...out.subarray(78, 84)], [0x02, 0x01, 0x00, 0x00, 0x02, 0x00]);
  assert.equal(out[512], 0x66);
  assert.equal(out[513], 0x44);
  assert.deepEqual([...out.subarray(514, 520)], [0x00, 0x01, 4, 0, 0, 0]);
  assert.equal(out[520], 0x0c);
  assert.equal(out[525], 1);
  assert.equal(out[536], 1);
  assert.equal(out[IdCtrlOffset.SUBNQN], 'n'.charCodeAt(0));
  assert.equal(out[IdCtrlOffset.SUBNQN + 23], 0);
  assert.equal(out[4095], 0); // unused bytes zeroed
  const d = decodeIdentifyController(out);
  assert.equal(d.mn, 'HOMI Emulated NVMe');
  assert.equal(d.sn, 'SN123');
  assert.equal(d.fr, '1.0');
  assert.equal(d.subnqn, 'nqn.2024-01.io.homi:emu');
  assert.equal(d.ieee, 0x525400);
  assert.equal(d.nn, 4);
  assert.equal(d.maxcmd, 256);
  assert.equal(maxTransferBytes(d.mdts, 4096), 131072);
  assert.equal(maxTransferBytes(0, 4096), Infinity);
});

test('identify controller: decode trims NULs and validates', () => {
  const out = buf();
  out.set([0x41, 0x42, 0, 0, 0x20], IdCtrlOffset.MN);
  assert.equal(decodeIdentifyController(out).mn, 'AB');
  out[IdCtrlOffset.SQES] = 0x47; // min 7 > max 4
  assert.throws(() => decodeIdentifyController(out), /SQES/);
  assert.throws(() => decodeIdentifyController(new Uint8Array(100)), RangeError);
  assert.throws(() => encodeIdentifyController({ sn: 'x'.repeat(21) }, buf()), /SN/);
  assert.throws(() => encodeIdentifyController({ mn: 'caf\u00e9' }, buf()), /MN/);
  assert.throws(() => encodeIdentifyController({ vid: 0x10000 }, buf()), /VID/);
  assert.throws(() => encodeIdentifyController({ nn: -1 }, buf()), /NN/);
  assert.throws(() => encodeIdentifyController({ tnvmcap: 2 ** 53 }, buf()), /TNVMCAP/);
  out[IdCtrlOffset.SQES] = 0x66;
  out[IdCtrlOffset.TNVMCAP + 9] = 1;
  assert.throws(() => decodeIdentifyController(out), /TNVMCAP/);
});

const ascii = (max: number) => fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: max }).map((s) => s.replace(/ +$/, ''));

test('identify controller: encode/decode round trip (property)', () => {
  fc.assert(
    fc.property(
      fc.record({
        vid: fc.integer({ min: 0, max: 0xffff }),
        sn: ascii(20),
        mn: ascii(40),
        fr: ascii(8),
        ieee: fc.integer({ min: 0, max: 0xffffff }),
        nn: fc.integer({ min: 0, max: 0xffffffff }),
        oaes: fc.integer({ min: 0, max: 0xffffffff }),
        tnvmcap: fc.maxSafeNat(),
        mdts: fc.integer({ min: 0, max: 255 }),
        sgls: fc.integer({ min: 0, max: 0xffffffff }),
      }),
      (r) => {
        const out = buf();
        encodeIdentifyController(r, out);
        const expected: IdentifyController = { ...emptyIdentifyController(), ...r };
        assert.deepEqual(decodeIdentifyController(out), expected);
      },
    ),
    { numRuns: 200 },
  );
});

test('identify namespace: byte layout and active format', () => {
  const out = buf();
  encodeIdentifyNamespace(
    {
      nsze: 0x1_0000_0002,
      lbaFormats: [
        { ms: 0, lbads: 9, rp: 2 },
        { ms: 8, lbads: 12, rp: 0 },
      ],
      formatIndex: 1,
      nmic: 1,
      eui64: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]),
    },
    out,
  );
  assert.deepEqual([...out.subarray(0, 8)], [2, 0, 0, 0, 1, 0, 0, 0]);
  assert.deepEqual([...out.subarray(8, 16)], [2, 0, 0, 0, 1, 0, 0, 0]); // NCAP defaults to NSZE
  assert.equal(out[25], 1); // NLBAF 0's based
  assert.equal(out[26], 1); // FLBAS
  assert.equal(out[30], 1);
  assert.deepEqual([...out.subarray(120, 128)], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual([...out.subarray(128, 136)], [0, 0, 9, 2, 8, 0, 12, 0]);
  const d = decodeIdentifyNamespace(out);
  assert.equal(d.blockSize, 4096);
  assert.equal(d.blocks, 0x1_0000_0002);
  assert.equal(d.formatIndex, 1);
  assert.deepEqual(d.activeFormat, { ms: 8, lbads: 12, rp: 0 });
  assert.equal(d.lbaFormats.length, 2);
  assert.equal(d.extendedLba, false);
});

test('identify namespace: FLBAS upper index bits and validation', () => {
  assert.equal(encodeFlbas(0x23, true), 0x40 | 0x10 | 0x3);
  assert.equal(flbasFormatIndex(0x53), 0x23);
  const fmts = Array.from({ length: 40 }, (_, i) => ({ ms: i, lbads: 9 + (i % 4), rp: i % 4 }));
  const out = buf();
  encodeIdentifyNamespace({ nsze: 1000, lbaFormats: fmts, formatIndex: 35 }, out);
  assert.equal(out[26], 0x43); // index 35 = 10_0011b: bits 6:5 = 10b, bits 3:0 = 0011b
  const d = decodeIdentifyNamespace(out);
  assert.equal(d.formatIndex, 35);
  assert.equal(d.blockSize, 2 ** (9 + 3));

  const bad = buf();
  encodeIdentifyNamespace({ nsze: 8, lbaFormats: [{ ms: 0, lbads: 9, rp: 0 }] }, bad);
  bad[26] = 2; // index 2 > NLBAF 0
  assert.throws(() => decodeIdentifyNamespace(bad), /FLBAS/);
  bad[26] = 0;
  bad[25] = 64;
  assert.throws(() => decodeIdentifyNamespace(bad), /NLBAF/);
  bad[25] = 0;
  bad[130] = 8;
  assert.throws(() => decodeIdentifyNamespace(bad), /LBAF\[0\]\.LBADS/);
  bad[130] = 31;
  assert.throws(() => decodeIdentifyNamespace(bad), /LBAF\[0\]\.LBADS/);
  bad[6] = 0x20; // NSZE >= 2^53
  bad[130] = 9;
  assert.throws(() => decodeIdentifyNamespace(bad), /NSZE/);
  assert.throws(() => encodeIdentifyNamespace({ nsze: 1, lbaFormats: [] }, buf()), /lbaFormats/);
  assert.throws(() => encodeIdentifyNamespace({ nsze: 1, lbaFormats: [{ ms: 0, lbads: 9, rp: 0 }], formatIndex: 1 }, buf()), /formatIndex/);
  assert.throws(() => encodeIdentifyNamespace({ nsze: 1, lbaFormats: [{ ms: 0, lbads: 40, rp: 0 }] }, buf()), /LBADS/);
  assert.throws(() => encodeIdentifyNamespace({ nsze: 2 ** 53, lbaFormats: [{ ms: 0, lbads: 9, rp: 0 }] }, buf()), /NSZE/);
  assert.throws(() => encodeIdentifyNamespace({ nsze: 1, lbaFormats: [{ ms: 0, lbads: 9, rp: 0 }], eui64: new Uint8Array(4) }, buf()), /EUI64/);
});

test('identify namespace: round trip (property)', () => {
  const fmt = fc.record({ ms: fc.integer({ min: 0, max: 0xffff }), lbads: fc.integer({ min: 9, max: 30 }), rp: fc.integer({ min: 0, max: 3 }) }).map((f) => ({ ...f }));
  fc.assert(
    fc.property(fc.array(fmt, { minLength: 1, maxLength: 64 }), fc.nat(), fc.maxSafeNat(), fc.boolean(), (fmts, idx, nsze, ext) => {
      const formatIndex = idx % fmts.length;
      const out = buf();
      encodeIdentifyNamespace({ nsze, ncap: nsze, nuse: 0, lbaFormats: fmts, formatIndex, extendedLba: ext }, out);
      const d = decodeIdentifyNamespace(out);
      assert.deepEqual(d.lbaFormats, fmts);
      assert.equal(d.formatIndex, formatIndex);
      assert.equal(d.nlbaf, fmts.length - 1);
      assert.equal(d.blocks, nsze);
      assert.equal(d.nuse, 0);
      assert.equal(d.extendedLba, ext);
      assert.equal(d.blockSize, 2 ** fmts[formatIndex]!.lbads);
    }),
    { numRuns: 200 },
  );
});

test('active namespace list', () => {
  const out = buf().fill(0xff);
  encodeActiveNamespaceList([1, 2, 0x100], out);
  assert.deepEqual([...out.subarray(0, 16)], [1, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
  assert.equal(out[4095], 0);
  assert.deepEqual(decodeActiveNamespaceList(out), [1, 2, 0x100]);
  const full = Array.from({ length: 1024 }, (_, i) => i + 1);
  encodeActiveNamespaceList(full, out);
  assert.deepEqual(decodeActiveNamespaceList(out), full);
  assert.throws(() => encodeActiveNamespaceList([...full, 1025], out), /1024/);
  assert.throws(() => encodeActiveNamespaceList([2, 1], out), /nsids\[1\]/);
  assert.throws(() => encodeActiveNamespaceList([0], out), /nsids\[0\]/);
  assert.throws(() => encodeActiveNamespaceList([0xffffffff], out), /nsids\[0\]/);
  out.fill(0);
  out.set([5, 0, 0, 0, 3], 0);
  assert.throws(() => decodeActiveNamespaceList(out), /not greater/);
  assert.deepEqual(activeNamespacesAfter(new Set([7, 3, 1, 9]), 3), [7, 9]);
});
