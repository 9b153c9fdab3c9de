import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ERROR_LOG_ENTRY_SIZE, SMART_LOG_SIZE, bytesToDataUnits, decodeErrorLogEntry, decodeSmartLog, encodeErrorLogEntry, encodeSmartLog, parameterErrorLocation } from '../../src/nvme/logpages.js';
import { makeStatus } from '../../src/nvme/cqe.js';
import { blockSizeToLbads, blocksToBytes, bytesToBlocks, bytesToBlocksCeil, checkLbaRange, decodeNlb, encodeNlb, lbaRangeInBounds, lbadsToBlockSize } from '../../src/nvme/lba.js';

test('error log entry: byte layout', () => {
  const out = new Uint8Array(2 * ERROR_LOG_ENTRY_SIZE).fill(0xaa);
  encodeErrorLogEntry(
    {
      errorCount: 5,
      sqid: 1,
      cid: 0x1234,
      phase: 1,
      status: makeStatus(0, 0x80, true),
      parameterErrorLocation: parameterErrorLocation(40, 0),
      lba: 0x1_0000_0000,
      nsid: 1,
    },
    out,
    ERROR_LOG_ENTRY_SIZE,
  );
  const e = out.subarray(ERROR_LOG_ENTRY_SIZE);
  assert.deepEqual([...e.subarray(0, 8)], [5, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...e.subarray(8, 16)], [0x01, 0x00, 0x34, 0x12, 0x01, 0x81, 0x28, 0x00]);
  assert.deepEqual([...e.subarray(16, 28)], [0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
  assert.equal(e[63], 0);
  assert.equal(out[0], 0xaa);
  const d = decodeErrorLogEntry(out, ERROR_LOG_ENTRY_SIZE);
  assert.equal(d.status, 0x4080);
  assert.equal(d.phase, 1);
  assert.equal(d.cid, 0x1234);
  assert.equal(d.lba, 0x1_0000_0000);
  const blank = new Uint8Array(64);
  encodeErrorLogEntry({ errorCount: 1, status: 0 }, blank);
  assert.equal(decodeErrorLogEntry(blank).parameterErrorLocation, 0xffff);
  assert.throws(() => encodeErrorLogEntry({ errorCount: 1, status: 0x8000 }, blank), /status/);
  assert.throws(() => parameterErrorLocation(0, 8), /bit/);
});

test('SMART log: byte layout and 128-bit counters', () => {
  const out = new Uint8Array(SMART_LOG_SIZE);
  encodeSmartLog(
    {
      criticalWarning: 0x04,
      compositeTemperature: 310,
      availableSpare: 100,
      availableSpareThreshold: 10,
      percentageUsed: 3,
      dataUnitsRead: 1000,
      dataUnitsWritten: 2 ** 40,
      powerOnHours: 12,
      errorLogEntries: 2,
      temperatureSensors: [305, 306],
    },
    out,
  );
  assert.deepEqual([...out.subarray(0, 6)], [0x04, 0x36, 0x01, 100, 10, 3]);
  assert.deepEqual([...out.subarray(32, 48)], [0xe8, 0x03, ...new Array(14).fill(0)]);
  assert.deepEqual([...out.subarray(48, 56)], [0, 0, 0, 0, 0, 1, 0, 0]);
  assert.equal(out[128], 12);
  assert.equal(out[176], 2);
  assert.deepEqual([...out.subarray(200, 204)], [0x31, 0x01, 0x32, 0x01]);
  const s = decodeSmartLog(out);
  assert.equal(s.compositeTemperature, 310);
  assert.equal(s.dataUnitsWritten, 2 ** 40);
  assert.deepEqual(s.temperatureSensors, [305, 306, 0, 0, 0, 0, 0, 0]);
  out[32 + 8] = 1; // data units read >= 2^64
  assert.throws(() => decodeSmartLog(out), /dataUnitsRead/);
  out[32 + 8] = 0;
  out[32 + 6] = 0x20; // 2^53
  assert.throws(() => decodeSmartLog(out), /dataUnitsRead/);
  assert.throws(() => encodeSmartLog({ mediaErrors: 2 ** 53 }, out), /mediaErrors/);
  assert.equal(bytesToDataUnits(512_000), 1);
  assert.equal(bytesToDataUnits(512_001), 2);
});

test('SMART log property: round trip', () => {
  fc.assert(
    fc.property(fc.maxSafeNat(), fc.maxSafeNat(), fc.integer({ min: 0, max: 0xffff }), (a, b, t) => {
      const out = new Uint8Array(SMART_LOG_SIZE);
      encodeSmartLog({ hostReadCommands: a, unsafeShutdowns: b, compositeTemperature: t }, out);
      const s = decodeSmartLog(out);
      assert.equal(s.hostReadCommands, a);
      assert.equal(s.unsafeShutdowns, b);
      assert.equal(s.compositeTemperature, t);
    }),
    { numRuns: 200 },
  );
});

test('LBA helpers', () => {
  assert.equal(lbadsToBlockSize(12), 4096);
  assert.equal(blockSizeToLbads(512), 9);
  assert.throws(() => lbadsToBlockSize(8), /LBADS/);
  assert.throws(() => blockSizeToLbads(1000), /blockSize/);
  assert.equal(bytesToBlocks(8192, 4096), 2);
  assert.throws(() => bytesToBlocks(1000, 512), /multiple/);
  assert.equal(bytesToBlocksCeil(1000, 512), 2);
  assert.equal(blocksToBytes(3, 512), 1536);
  assert.throws(() => blocksToBytes(2 ** 50, 4096), /2\^53/);
  assert.ok(lbaRangeInBounds(0, 10, 10));
  assert.ok(!lbaRangeInBounds(1, 10, 10));
  assert.ok(lbaRangeInBounds(10, 0, 10));
  assert.throws(() => checkLbaRange(5, 6, 10), /LBA Out of Range/);
  assert.equal(encodeNlb(1), 0);
  assert.equal(encodeNlb(65536), 0xffff);
  assert.equal(decodeNlb(0xabcd_0007), 8);
  assert.throws(() => encodeNlb(0), /block count/);
});
