/**
 * The completion status space (src/nvme/status.ts): host outcomes are SCT 3 path-related statuses with their
 * cause (and a kernel errno) above the 15-bit field; nothing is negative; one statusName names all of them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { makeStatus, statusDnr, statusSc, statusSct } from '../../src/nvme/cqe.js';
import {
  GenericStatus,
  HostCause,
  PathStatus,
  STATUS_ABORTED_BY_RESET,
  STATUS_DEVICE_REMOVED,
  STATUS_DISCONNECTED,
  STATUS_FIELD_MASK,
  STATUS_TIMEOUT,
  Sct,
  errnoName,
  errnoStatus,
  isCompletionStatus,
  isSuccess,
  statusCause,
  statusErrno,
  statusField,
  statusName,
} from '../../src/nvme/status.js';

test('host outcomes: distinct, non-negative, SCT 3 path statuses underneath, named', () => {
  const host = [STATUS_TIMEOUT, STATUS_ABORTED_BY_RESET, STATUS_DEVICE_REMOVED, STATUS_DISCONNECTED, errnoStatus(5)];
  assert.equal(new Set(host).size, host.length);
  for (const s of host) {
    assert.ok(s > STATUS_FIELD_MASK && s < 2 ** 31, `0x${s.toString(16)} lies above the 15-bit field, below 2^31`);
    assert.equal(statusSct(statusField(s)), Sct.PathRelated);
    assert.ok(!isSuccess(s));
    assert.ok(isCompletionStatus(s));
    assert.equal(new Int32Array([s])[0], s, 'fits an Int32Array cell');
  }
  assert.equal(statusSc(STATUS_TIMEOUT), PathStatus.CommandAbortedByHost);
  assert.equal(statusSc(STATUS_ABORTED_BY_RESET), PathStatus.CommandAbortedByHost);
  assert.equal(statusSc(STATUS_DEVICE_REMOVED), PathStatus.HostPathingError);
  assert.ok(statusDnr(STATUS_DEVICE_REMOVED) && statusDnr(STATUS_DISCONNECTED) && !statusDnr(STATUS_TIMEOUT));
  assert.equal(statusField(STATUS_DISCONNECTED), makeStatus(Sct.PathRelated, PathStatus.CommandAbortedByHost, true));
  assert.deepEqual(host.map(statusCause), [HostCause.Timeout, HostCause.ControllerReset, HostCause.DeviceRemoved, HostCause.Disconnected, HostCause.Errno]);
  assert.equal(statusName(STATUS_TIMEOUT), 'Command Timeout');
  assert.equal(statusName(STATUS_ABORTED_BY_RESET), 'Command Aborted by Controller Reset');
  assert.equal(statusName(STATUS_DEVICE_REMOVED), 'Device Removed');
  assert.match(statusName(STATUS_DISCONNECTED), /homid/);
  assert.equal(statusName(errnoStatus(5)), 'EIO (errno 5)');
  assert.match(statusName(errnoStatus(95)), /^(EOPNOTSUPP|ENOTSUP) \(errno 95\)$/);
});

test('controller statuses are their own 15-bit field, named by the spec; statusName(sct, sc) still names a pair', () => {
  const lba = makeStatus(Sct.Generic, GenericStatus.LbaOutOfRange, true);
  assert.equal(statusCause(lba), HostCause.None);
  assert.equal(statusField(lba), lba);
  assert.equal(statusName(lba), 'LBA Out of Range');
  assert.equal(statusName(0), 'Successful Completion');
  assert.equal(statusName(0x371), 'Command Aborted By Host', 'the same path status, posted by a controller');
  assert.equal(statusName(Sct.Generic, GenericStatus.LbaOutOfRange), 'LBA Out of Range');
  assert.ok(isSuccess(0) && isSuccess(makeStatus(0, 0, true)));
  assert.ok(!isSuccess(lba));
  assert.ok(isCompletionStatus(lba) && isCompletionStatus(0));
  assert.ok(!isCompletionStatus(-1) && !isCompletionStatus(0x8000) && !isCompletionStatus(0x6_0000 | 0x370));
});

test('property: every errno survives the round trip and keeps its name', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 2047 }), (e) => {
      const s = errnoStatus(e);
      return statusErrno(s) === e && s > 0 && statusName(s) === `${errnoName(e)} (errno ${e})` && isCompletionStatus(s);
    }),
  );
  assert.equal(statusErrno(STATUS_TIMEOUT), 0);
  assert.equal(statusErrno(0x2), 0);
  assert.equal(statusErrno(errnoStatus(5000)), 2047, 'out of range errnos saturate, still a host path error');
});
