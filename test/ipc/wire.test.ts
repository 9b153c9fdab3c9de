/**
 * homid's wire in one place (src/ipc): one error-code style in two disjoint tables, exact result schemas, the
 * mediated grant's checks, and the shared-memory layouts' readers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientErrorCode } from '../../src/client/index.js';
import {
  CLOSING_ERROR_CODES,
  EXTENT_TABLE_HEADER,
  ExtentTableBusyError,
  ExtentTableWriter,
  HelloResult,
  HomidErrorCode,
  IpcClient,
  IpcErrorCode,
  IpcServer,
  LeaseGrant,
  MEDIATED_GRANT_VERSION,
  RING_SQ_OFFSET,
  StatusResult,
  WireFormatError,
  extentTableBytes,
  initRing,
  openRing,
  readExtentTable,
  ringBytes,
  ringCqOffset,
  tryReadExtentTable,
  validateMediatedGrant,
  type IpcHandler,
  type MediatedQueueGrant,
} from '../../src/ipc/index.js';
import { socketPath } from './helpers.js';

const KEBAB = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

test('error codes: one style (kebab-case), protocol and homid tables disjoint, client-side codes apart from both', () => {
  const ipc = Object.values(IpcErrorCode);
  const homid = Object.values(HomidErrorCode);
  const client = Object.values(ClientErrorCode);
  for (const c of [...ipc, ...homid, ...client]) assert.match(c, KEBAB, c);
  const all = [...ipc, ...homid, ...client];
  assert.equal(new Set(all).size, all.length, 'no code is in two tables (or twice in one)');
  for (const c of CLOSING_ERROR_CODES) assert.ok((ipc as string[]).includes(c), `${c} closes the connection: a protocol code`);
});

test('results are exact: a field the catalogue does not declare is refused, at both ends', async () => {
  const hello = { version: 1, server: 'homid', session: 1, class: 'default', raw: false };
  assert.ok(HelloResult.safeParse(hello).success);
  assert.equal(HelloResult.safeParse({ ...hello, extra: 1 }).success, false, 'unknown field');
  assert.equal(HelloResult.safeParse({ version: 1, server: 'homid' }).success, false, 'missing fields');
  const status = {
    version: '0',
    pid: 1,
    uptimeS: 0,
    devices: [],
    classes: [],
    clients: [],
    extents: [],
    counters: { reclaimedQueuePairs: 0, deniedCommands: 0, refusals: 0, clientsServed: 0, lostQueuePairs: 0, reclaimedVfs: 0 },
  };
  assert.ok(StatusResult.safeParse(status).success);
  assert.equal(StatusResult.safeParse({ ...status, counters: { ...status.counters, other: 1 } }).success, false);
  const io = { lease: 1, device: 'd', qid: 1, mode: 'raw', nsid: 1, depth: 8, lost: null };
  const client = { id: 1, pid: 1, uid: 0, class: 'default', raw: true, files: 0 };
  for (const good of [null, { submitted: 1, completed: 1 }, { submitted: 1, forwarded: 1, denied: 0, completed: 1 }]) {
    assert.ok(StatusResult.safeParse({ ...status, clients: [{ ...client, queuePairs: [{ ...io, io: good }] }] }).success, JSON.stringify(good));
  }
  assert.equal(StatusResult.safeParse({ ...status, clients: [{ ...client, queuePairs: [{ ...io, io: { anything: 1 } }] }] }).success, false, 'io is one of two shapes');
  assert.equal(LeaseGrant.safeParse({ grantId: '1', qid: 1, fdBase: 0, fdCount: 0, mode: 'vf', grant: {} }).success, false, 'modes are the listed ones');

  // a handler answering with a field homid's catalogue does not have: the client gets `internal`, not the field
  const path = socketPath('exact');
  const handler: IpcHandler = (req) =>
    req.request.type === 'hello' ? { response: { ok: true, ...hello, extra: 1 } as never } : { response: { ok: false, error: { code: IpcErrorCode.Internal, message: 'no' } } };
  const server = await IpcServer.listen({ path, handler });
  try {
    const c = await IpcClient.connect(path);
    const r = await c.request({ type: 'hello', version: 1 });
    assert.equal(r.response.ok, false);
    if (!r.response.ok) assert.equal(r.response.error.code, IpcErrorCode.Internal);
    await c.close();
  } finally {
    await server.close();
  }
});

test('mediated grant: checked field by field before anything is mapped, naming the field', () => {
  const entries = 16;
  const good: MediatedQueueGrant = {
    version: MEDIATED_GRANT_VERSION,
    entries,
    ringBytes: ringBytes(entries),
    dataBytes: 1 << 16,
    dataOffset: 0,
    segmentBytes: (1 << 16) + 4096,
    hwCq: { fd: 1, offset: 1 << 16, bytes: 4096, qid: 3 },
    nsid: 1,
    blockSize: 512,
    blocks: 1 << 20,
    maxTransferBytes: 1 << 20,
    write: false,
  };
  assert.deepEqual(validateMediatedGrant(good, 2), good);
  assert.deepEqual(validateMediatedGrant({ ...good, hwCq: null }, 2).hwCq, null);
  const cases: Array<[string, unknown, number, RegExp]> = [
    ['not an object', null, 2, /the grant is not an object/],
    ['another version', { ...good, version: 1 }, 2, /unsupported version 1/],
    ['a ring too small', { ...good, ringBytes: 4096 }, 2, /ringBytes 4096 is too small for 16 entries/],
    ['data past its segment', { ...good, dataBytes: good.segmentBytes + 4096 }, 2, /data buffer lies outside its segment/],
    ['a CQ past its segment', { ...good, hwCq: { ...good.hwCq!, offset: good.segmentBytes } }, 2, /hardware CQ lies outside its segment/],
    ['a CQ on the ring descriptor', { ...good, hwCq: { ...good.hwCq!, fd: 0 } }, 2, /bad hardware CQ region/],
    ['a CQ on a descriptor that did not come', { ...good, hwCq: { ...good.hwCq!, fd: 2 } }, 2, /bad hardware CQ region/],
    ['one descriptor', good, 1, /expected at least 2 descriptors, got 1/],
    ['a string count', { ...good, entries: '16' }, 2, /entries "16" is not an integer/],
    ['an unknown field', { ...good, extra: true }, 2, /unknown field\(s\) "extra"/],
  ];
  for (const [what, g, fds, re] of cases) {
    assert.throws(
      () => validateMediatedGrant(g, fds),
      (e: unknown) => e instanceof WireFormatError && re.test(e.message),
      what,
    );
  }
});

test('mediated ring: named offsets, identity checked once when the client opens it', () => {
  const entries = 100;
  assert.equal(RING_SQ_OFFSET, 4096);
  assert.equal(ringCqOffset(entries), 4096 + 8192, 'the CQ starts on the page after 100 64-byte SQEs');
  assert.equal(ringBytes(entries), 4096 + 8192 + 4096);
  const bytes = new Uint8Array(new SharedArrayBuffer(ringBytes(entries)));
  initRing(bytes, entries, { hwQid: 7 });
  const v = openRing(bytes);
  assert.equal(v.entries, entries);
  assert.equal(v.sq.byteOffset, RING_SQ_OFFSET);
  assert.equal(v.cq.byteOffset, ringCqOffset(entries));
  assert.throws(() => openRing(new Uint8Array(new SharedArrayBuffer(ringBytes(entries)))), /bad magic or version/);
});

test('extent table: a table being rebuilt reads as busy (typed), then as the new map', () => {
  const bytes = new Uint8Array(new SharedArrayBuffer(extentTableBytes(4)));
  const w = new ExtentTableWriter(bytes);
  assert.equal(w.capacity, 4);
  w.publish({ size: 8192, ino: 12, extents: [{ logical: 0, physical: 4096, length: 8192, flags: ['last'] }] }, 3);
  const s = readExtentTable(bytes);
  assert.deepEqual(s.extents, [{ logical: 0, physical: 4096, length: 8192, flags: ['last'] }]);
  assert.equal(s.size, 8192);
  w.begin();
  assert.throws(() => readExtentTable(bytes, 10), ExtentTableBusyError);
  assert.equal(tryReadExtentTable(bytes), null);
  w.publish({ size: 0, ino: 12, extents: [] }, 3);
  assert.equal(tryReadExtentTable(bytes)!.extents.length, 0);
  assert.equal(EXTENT_TABLE_HEADER, 64);
});
