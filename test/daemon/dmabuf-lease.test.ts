/**
 * A mediated lease whose data buffer is the client's dma-buf (openQueuePair dataDmaBuf): homid duplicates the
 * descriptor it received, checks it is a dma-buf of at least dataBytes, imports it for the device and releases it
 * with the lease. The clients are processes of uid 65534.
 *
 * This kernel may have no udmabuf, so the homid here takes, besides real dma-bufs, a MEMFD STAND-IN: a sealed
 * memfd named "homi-dmabuf-stand-in" (its opener is below and says so); every other descriptor goes through the
 * production check (openDmaBuf) and is refused. The real udmabuf lease runs in the guest suite
 * (test-guest/dmabuf.test.ts).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Homid } from '../../src/daemon/homid.js';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import { memfdOpener } from '../../src/daemon/registry.js';
import { memfdRegions } from '../../src/daemon/shared-region.js';
import { HomidErrorCode } from '../../src/ipc/errors.js';
import { memfdStandIn, openDmaBuf, type DmaBufHandle } from '../../src/mem/dmabuf.js';
import { createShm } from '../../src/sys/shm.js';
import { config, haveTool, NOBODY_PEER, pattern, refused, silent } from './fixtures.js';
import { asNobody, ext4TreeFixture, hostileSkipReason, NOBODY_UID } from './hostile.js';
import { nextJson, until } from './procs.js';

const skip = hostileSkipReason() ?? (!haveTool('mkfs.ext4') ? 'mkfs.ext4 is not installed' : null);

/** TESTS ONLY: real dma-bufs as in production, plus sealed memfds named homi-dmabuf-stand-in as stand-ins. */
function standInOpener(fd: number): DmaBufHandle {
  let link = '';
  try {
    link = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    // openDmaBuf reports it
  }
  if (link.startsWith('/memfd:homi-dmabuf-stand-in')) return memfdStandIn(fd, { ownFd: true });
  return openDmaBuf(fd, { ownFd: true });
}

describe('dma-buf data buffers of mediated leases, clients of uid 65534', { skip: skip ?? false }, () => {
  let dir: string;
  let mine: string;
  let srv: HomidServer;
  let sock: string;

  before(async () => {
    const f = ext4TreeFixture('homid-dmabuf-', { 'mine.bin': { bytes: pattern(32 * 1024, 5), mode: 0o644 } });
    dir = f.dir;
    mine = f.files['mine.bin']!;
    const { tree, image } = f;
    sock = path.join(dir, 'homid.sock');
    srv = await startHomidServer(
      config({
        socket: sock,
        socket_mode: '0666',
        device: [{ name: 'img', uri: `emu://${image}?size=16MiB`, extents: 'decoder:ext4', extent_root: tree }],
        class: { default: { queue_pairs: 8, per_client: 4, write: false } },
      }),
      { logger: silent(), dmaBufOpener: standInOpener },
    );
  });
  after(async () => {
    await srv?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const leaseAs = async (kind: string): Promise<Record<string, unknown>> => {
    const child = asNobody([sock, 'dmabuf-lease', 'img', mine, kind]);
    const r = await nextJson(child);
    await child.exited;
    return r;
  };

  test('MEMFD STAND-IN: reads land in the client buffer; a data offset past it is denied; the lease goes with the client', { timeout: 60_000 }, async () => {
    const before = srv.homid.counters.reclaimedQueuePairs;
    const r = await leaseAs('stand-in');
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.dataDmaBuf, true, 'the grant says the data buffer is the client dma-buf');
    assert.equal(r.dataBytes, 64 * 1024);
    assert.equal(r.status, 0);
    assert.equal(r.match, true, 'the file bytes arrived in the client memfd');
    assert.notEqual(r.outside, 0, 'a transfer past the end of the dma-buf is refused by the mediated checks');
    assert.equal(r.untouchedTail, true, 'nothing past the read (and nothing of the refused one) was written');
    await until(() => srv.homid.counters.reclaimedQueuePairs === before + 1, 20_000, 'the lease released when the client disconnected');
    await until(() => srv.homid.status().clients.every((c) => c.uid !== NOBODY_UID), 20_000, 'the session gone');
  });

  test('a regular file, a memfd and a size lie are each refused with one bad-request, and nothing is held', { timeout: 60_000 }, async () => {
    const regular = await leaseAs('regular');
    assert.equal(regular.ok, false);
    assert.equal(regular.code, HomidErrorCode.BadRequest);
    assert.match(String(regular.message), /the data buffer descriptor is refused: fd \d+ is not a dma-buf \(it is .*mine\.bin\)/);
    const memfd = await leaseAs('memfd-other');
    assert.equal(memfd.code, HomidErrorCode.BadRequest);
    assert.match(String(memfd.message), /is not a dma-buf \(it is \/memfd:other/);
    const lie = await leaseAs('size-lie');
    assert.equal(lie.code, HomidErrorCode.BadRequest);
    assert.match(String(lie.message), /dataBytes 131072 is more than the 65536 bytes of the memfd-stand-in dma-buf/);
    await until(() => srv.homid.status().clients.every((c) => c.uid !== NOBODY_UID), 20_000, 'no session left');
  });
});

describe('dma-buf data buffers: what homid refuses before it imports', () => {
  test('raw or several queue pairs, a closed descriptor, a non-dma-buf: refused; the descriptor is homid duplicate, the caller keeps its own', async () => {
    const h = await Homid.start(config({ device: [{ name: 'm', uri: 'emu://?size=8MiB' }], raw: { users: [0] } }), { logger: silent(), opener: memfdOpener, regions: memfdRegions });
    const shm = createShm('not-a-dmabuf', 65536);
    try {
      const s = h.connect(NOBODY_PEER);
      const raw = await refused(h.openQueuePairs(s, { device: 'm', depth: 8, mode: 'raw', dataDmaBuf: shm.fd }), HomidErrorCode.BadRequest);
      assert.match(raw.message, /a dma-buf data buffer is for one mediated queue pair \(asked for 1 raw\)/);
      await refused(h.openQueuePairs(s, { device: 'm', depth: 8, mode: 'mediated', count: 2, dataDmaBuf: shm.fd }), HomidErrorCode.BadRequest);
      const closed = await refused(h.openQueuePairs(s, { device: 'm', depth: 8, mode: 'mediated', dataDmaBuf: 999_999 }), HomidErrorCode.BadRequest);
      assert.match(closed.message, /the data buffer descriptor is refused: fcntl\(999999, F_DUPFD_CLOEXEC\) failed: EBADF/);
      const memfd = await refused(h.openQueuePairs(s, { device: 'm', depth: 8, mode: 'mediated', dataDmaBuf: shm.fd }), HomidErrorCode.BadRequest);
      assert.match(memfd.message, /is not a dma-buf \(it is \/memfd:not-a-dmabuf/);
      assert.ok(fs.fstatSync(shm.fd).size === 65536, 'the caller still holds its descriptor');
      assert.equal(h.status().clients[0]!.queuePairs.length, 0);
    } finally {
      shm.close();
      await h.stop();
    }
  });
});
