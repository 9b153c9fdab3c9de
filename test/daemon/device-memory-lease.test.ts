/**
 * Mediated leases whose data buffers are in device memory (openQueuePair dataMemory 'device'; homid config
 * device_memory): homid carves each lease's buffer from the device's pool, the mediated checks keep PRPs inside it,
 * only root and listed uids get any, the pool serves one uid at a time, buffers are zeroed when granted and given back, limits per client, and
 * everything goes with the client.
 *
 * There is no peer PCI function on this machine, so the device memory here is a DEVICE-MEMORY STAND-IN: a dedicated
 * memfd segment of the embedded controller's DMA memory posing as the peer BAR the config names (standInSupplier
 * below says so in its `what`). The pool, the lease, the grant, the client and the checks are the production code;
 * only the source of the memory differs. The real peer BAR (ivshmem-plain, uio and VFIO) is in the guest suite,
 * test-guest/p2p.test.ts.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { DeviceMemorySupplier } from '../../src/daemon/device-memory-pool.js';
import { Homid } from '../../src/daemon/homid.js';
import { STATUS_INVALID_FIELD } from '../../src/daemon/mediated.js';
import type { MediatedLease } from '../../src/daemon/leases/mediated.js';
import { memfdOpener } from '../../src/daemon/registry.js';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import { memfdRegions } from '../../src/daemon/shared-region.js';
import { HomidErrorCode } from '../../src/ipc/errors.js';
import { MEDIATED_FD_DEVICE_MEMORY } from '../../src/ipc/mediated-grant.js';
import { openDeviceMemory } from '../../src/mem/device-memory.js';
import { openReadOnly } from '../../src/sys/shm.js';
import { dupCloexec } from '../../src/sys/socket.js';
import { EmuTransport } from '../../src/transport/emu.js';
import { config, haveTool, NOBODY_PEER, pattern, refused, ROOT_PEER, silent } from './fixtures.js';
import { asNobody, ext4TreeFixture, hostileSkipReason, NOBODY_UID } from './hostile.js';
import { nextJson, until } from './procs.js';

const KIB = 1024;
const PEER = '0000:00:04.0';

/**
 * TESTS ONLY: a DEVICE-MEMORY STAND-IN. A dedicated memfd segment of the embedded controller (reachable by it at
 * its IOVA, mappable by a client through its fd) posing as the configured peer BAR; `cfg.bytes` (default 256 KiB).
 */
const standInSupplier: DeviceMemorySupplier = (_device, t, cfg) => {
  if (!(t instanceof EmuTransport)) throw new Error('the stand-in needs the embedded controller');
  const bytes = cfg.bytes ?? 256 * KIB;
  const seg = t.shmDma.createDedicated(bytes, 'homi-device-memory-stand-in');
  const what = `DEVICE-MEMORY STAND-IN (a memfd posing as BAR${cfg.bar} of ${cfg.address})`;
  const allocator = openDeviceMemory(
    { what, bytes: new Uint8Array(seg.region.buffer, 0, seg.size), cpuAddress: seg.region.mapping.address, busAddress: seg.iovaBase, release: () => seg.release() },
    { kind: 'bus' },
    bytes,
  );
  return {
    what,
    allocator,
    clientFd: (write) => (write ? dupCloexec(seg.fd) : openReadOnly(seg.fd)),
    fdOffsetOf: (iova) => iova - seg.iovaBase,
    close: () => allocator.close(),
  };
};

/** The access mode (O_ACCMODE of the fdinfo flags) of this process's descriptor `fd`. */
function accessMode(fd: number): number {
  const m = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  assert.ok(m, 'fdinfo has flags');
  return parseInt(m[1]!, 8) & 3;
}

const OTHER_UID = 65533;
const OTHER_PEER = { pid: process.pid, uid: OTHER_UID, gid: OTHER_UID };
/** A uid device_memory_users does not list. */
const STRANGER_PEER = { pid: process.pid, uid: 65532, gid: 65532 };

describe('device-memory data buffers: homid in process, DEVICE-MEMORY STAND-IN', () => {
  let h: Homid;
  before(async () => {
    h = await Homid.start(
      config({
        device: [
          // a small pool, a large per-client limit: the pool runs out first
          { name: 'small', uri: 'emu://?size=8MiB', device_memory: `peer:${PEER}`, device_memory_bytes: 128 * KIB, device_memory_per_client: 1024 * KIB, device_memory_users: [NOBODY_UID, OTHER_UID] },
          // a large pool, a small per-client limit
          { name: 'capped', uri: 'emu://?size=8MiB', device_memory: `peer:${PEER}`, device_memory_bytes: 512 * KIB, device_memory_per_client: 64 * KIB, device_memory_users: [NOBODY_UID] },
          { name: 'plain', uri: 'emu://?size=8MiB' },
        ],
        class: { default: { queue_pairs: 16, per_client: 8, write: true } },
        raw: { users: [0] },
      }),
      { logger: silent(), opener: memfdOpener, regions: memfdRegions, deviceMemorySupplier: standInSupplier },
    );
  });
  after(async () => {
    await h?.stop();
  });

  test('refusals: none configured, a uid not listed, raw mode, dma-buf and device memory at once, a bad dataMemory', async () => {
    const s = h.connect(ROOT_PEER);
    const x = h.connect(STRANGER_PEER);
    try {
      const denied = await refused(h.openQueuePairs(x, { device: 'small', depth: 8, mode: 'mediated', dataBytes: 64 * KIB, dataMemory: 'device' }), HomidErrorCode.DeviceMemoryDenied);
      assert.match(denied.message, /uid 65532 may not use the device memory of 'small' \(device_memory_users\)/);
      assert.equal(x.leases.size, 0);
      const none = await refused(h.openQueuePairs(s, { device: 'plain', depth: 8, mode: 'mediated', dataBytes: 64 * KIB, dataMemory: 'device' }), HomidErrorCode.NoDeviceMemory);
      assert.match(none.message, /device 'plain' has no device memory configured/);
      const raw = await refused(h.openQueuePairs(s, { device: 'small', depth: 8, mode: 'raw', dataMemory: 'device' }), HomidErrorCode.BadRequest);
      assert.match(raw.message, /device-memory data buffers are for mediated queue pairs \(asked for raw/);
      await refused(h.openQueuePairs(s, { device: 'small', depth: 8, mode: 'gpu', dataMemory: 'device' }), HomidErrorCode.BadRequest);
      const both = await refused(h.openQueuePairs(s, { device: 'small', depth: 8, mode: 'mediated', dataMemory: 'device', dataDmaBuf: 0 }), HomidErrorCode.BadRequest);
      assert.match(both.message, /either a dma-buf or device memory/);
      await refused(h.openQueuePairs(s, { device: 'small', depth: 8, mode: 'mediated', dataMemory: 'elsewhere' as 'device' }), HomidErrorCode.BadRequest);
      assert.equal(s.leases.size, 0);
    } finally {
      await h.disconnect(s);
      await h.disconnect(x);
    }
  });

  test('exhaustion of the pool and the per-client limit: refused, nothing held; all of it comes back on disconnect', async () => {
    const s = h.connect(NOBODY_PEER);
    const a = (await h.openQueuePairs(s, { device: 'small', depth: 8, mode: 'mediated', dataBytes: 64 * KIB, count: 2, dataMemory: 'device' })) as MediatedLease[];
    assert.equal(a.length, 2);
    assert.equal(a[1]!.data.iova - a[0]!.data.iova, 64 * KIB, 'two buffers side by side in the device memory');
    const full = await refused(h.openQueuePairs(s, { device: 'small', depth: 8, mode: 'mediated', dataBytes: 4 * KIB, dataMemory: 'device' }), HomidErrorCode.NoMemory);
    assert.match(full.message, /DEVICE-MEMORY STAND-IN .* is full/);
    assert.equal(s.leases.size, 2, 'the refused lease left nothing behind');
    const one = (await h.openQueuePairs(s, { device: 'capped', depth: 8, mode: 'mediated', dataBytes: 64 * KIB, dataMemory: 'device' })) as MediatedLease[];
    const cap = await refused(h.openQueuePairs(s, { device: 'capped', depth: 8, mode: 'mediated', dataBytes: 4 * KIB, dataMemory: 'device' }), HomidErrorCode.LimitDeviceMemory);
    assert.match(cap.message, /uid 65534 may hold 65536 bytes of device memory \(device_memory_per_client\); it holds 65536 and asked for 4096 more/);
    assert.equal(one.length, 1);
    await h.disconnect(s);
    // everything came back: another client gets the whole pool again
    const t = h.connect(OTHER_PEER);
    try {
      const again = await h.openQueuePairs(t, { device: 'small', depth: 8, mode: 'mediated', dataBytes: 128 * KIB, dataMemory: 'device' });
      assert.equal(again.length, 1);
    } finally {
      await h.disconnect(t);
    }
  });

  test('one uid at a time; the next one finds the buffers zeroed; a read-only lease gets a read-only descriptor', async () => {
    const s = h.connect(NOBODY_PEER);
    const t = h.connect(OTHER_PEER);
    try {
      const [l] = (await h.openQueuePairs(s, { device: 'small', depth: 8, mode: 'mediated', dataBytes: 64 * KIB, dataMemory: 'device' })) as MediatedLease[];
      assert.ok(
        l!.data.bytes.every((b) => b === 0),
        'granted zeroed',
      );
      const w = l!.wire()!;
      assert.equal(w.fds.length, 3, 'ring, hardware CQ, device memory');
      const g = w.grant.grant as { dataDevice?: { fd: number; offset: number; what: string }; write: boolean };
      assert.equal(g.dataDevice?.fd, MEDIATED_FD_DEVICE_MEMORY);
      assert.equal(g.write, false);
      assert.equal(accessMode(w.fds[MEDIATED_FD_DEVICE_MEMORY]!), fs.constants.O_RDONLY, 'a lease without writes gets an O_RDONLY descriptor');
      l!.data.bytes.fill(0xab); // what the controller would have written for this client
      const busy = await refused(h.openQueuePairs(t, { device: 'small', depth: 8, mode: 'mediated', dataBytes: 4 * KIB, dataMemory: 'device' }), HomidErrorCode.DeviceMemoryBusy);
      assert.match(busy.message, /lent to another user; device memory serves one uid at a time/);
      // host-memory leases of the same device are not affected
      assert.equal((await h.openQueuePairs(t, { device: 'small', depth: 8, mode: 'mediated', dataBytes: 4 * KIB })).length, 1);
      const [w2] = (await h.openQueuePairs(s, { device: 'small', depth: 8, mode: 'mediated', dataBytes: 4 * KIB, write: true, dataMemory: 'device' })) as MediatedLease[];
      assert.equal(accessMode(w2!.wire()!.fds[MEDIATED_FD_DEVICE_MEMORY]!), fs.constants.O_RDWR, 'a write grant gets a writable descriptor');
      await h.disconnect(s);
      const [n] = (await h.openQueuePairs(t, { device: 'small', depth: 8, mode: 'mediated', dataBytes: 128 * KIB, dataMemory: 'device' })) as MediatedLease[];
      assert.equal(n!.data.iova, l!.data.iova, 'the same device memory');
      assert.ok(
        n!.data.bytes.every((b) => b === 0),
        'nothing of the previous client is left in it',
      );
    } finally {
      await h.disconnect(s);
      await h.disconnect(t);
    }
  });
});

const skip = hostileSkipReason() ?? (!haveTool('mkfs.ext4') ? 'mkfs.ext4 is not installed' : null);

describe('device-memory data buffers over the socket, clients of uid 65534, DEVICE-MEMORY STAND-IN', { skip: skip ?? false }, () => {
  let dir: string;
  let mine: string;
  let srv: HomidServer;
  let sock: string;

  before(async () => {
    const f = ext4TreeFixture('homid-devmem-', { 'mine.bin': { bytes: pattern(32 * KIB, 9), mode: 0o644 } });
    dir = f.dir;
    mine = f.files['mine.bin']!;
    const { tree, image } = f;
    sock = path.join(dir, 'homid.sock');
    srv = await startHomidServer(
      config({
        socket: sock,
        socket_mode: '0666',
        device: [
          {
            name: 'img',
            uri: `emu://${image}?size=16MiB`,
            extents: 'decoder:ext4',
            extent_root: tree,
            device_memory: `peer:${PEER}`,
            device_memory_bytes: 256 * KIB,
            device_memory_users: [NOBODY_UID],
          },
        ],
        class: { default: { queue_pairs: 8, per_client: 4, write: false } },
      }),
      { logger: silent(), deviceMemorySupplier: standInSupplier },
    );
  });
  after(async () => {
    await srv?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('reads land in the client mapping of its device memory; a PRP aimed at its other buffer is denied; all goes with the client', { timeout: 90_000 }, async () => {
    const reclaimed = srv.homid.counters.reclaimedQueuePairs;
    const denied = srv.homid.counters.deniedCommands;
    const child = asNobody([sock, 'devmem-lease', 'img', mine], 'pipe');
    const r = await nextJson(child);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.zeroAtStart, true, 'both buffers granted zeroed');
    assert.equal(r.status, 0);
    assert.equal(r.match, true, 'the file bytes arrived in device memory, seen through the client mapping');
    assert.equal(r.outside, STATUS_INVALID_FIELD, 'a transfer past the lease buffer (into the next lease buffer) is refused by the mediated check (Invalid Field)');
    assert.equal(srv.homid.counters.deniedCommands, denied + 1);
    assert.equal(r.bUntouched, true, 'the other buffer kept its zeroes');
    const da = r.dataDevice as { fd: number; offset: number; what: string };
    const db = r.dataDeviceB as { fd: number; offset: number };
    assert.equal(da.fd, MEDIATED_FD_DEVICE_MEMORY);
    assert.match(da.what, /DEVICE-MEMORY STAND-IN/);
    assert.equal(db.offset - da.offset, 64 * KIB);
    // the holder goes away: its leases and device memory with it
    child.p.stdin!.end();
    await child.exited;
    await until(() => srv.homid.counters.reclaimedQueuePairs >= reclaimed + 2, 20_000, 'both leases released when the client disconnected');
    await until(() => srv.homid.status().clients.every((c) => c.uid !== NOBODY_UID), 20_000, 'the session gone');
    const next = asNobody([sock, 'devmem-one', 'img']);
    const n = await nextJson(next);
    await next.exited;
    assert.equal(n.ok, true, JSON.stringify(n));
    assert.equal(n.zero, true, 'the next client finds no byte of the previous one');
  });
});

describe('device-memory configuration', () => {
  test('device_memory names a peer BAR; the other keys need it; parsed into the device config', () => {
    const ok = config({ device: [{ name: 'a', uri: 'pci:0000:00:03.0', device_memory: 'peer:00:04.0:4', device_memory_bytes: 8192, device_memory_users: ['alice', 1000] }] });
    assert.deepEqual(ok.devices[0]!.deviceMemory, { address: '0000:00:04.0', bar: 4, perClient: 16 * 1024 * 1024, users: ['alice', 1000], bytes: 8192 });
    assert.equal(config({ device: [{ name: 'a', uri: 'emu://?size=8MiB' }] }).devices[0]!.deviceMemory, undefined);
    assert.throws(() => config({ device: [{ uri: 'pci:0000:00:03.0', device_memory: '0000:00:04.0' }] }), /device\[0\]\.device_memory: '0000:00:04\.0' is not peer:<bdf>\[:bar\]/);
    assert.throws(() => config({ device: [{ uri: 'pci:0000:00:03.0', device_memory: 'peer:0000:00:04.0:7' }] }), /device\[0\]\.device_memory: .*BAR 7 does not exist/);
    assert.throws(() => config({ device: [{ uri: 'pci:0000:00:03.0', device_memory_bytes: 8192 }] }), /device\[0\]\.device_memory_bytes: only used with device_memory/);
    assert.throws(() => config({ device: [{ uri: 'pci:0000:00:03.0', device_memory_users: [1000] }] }), /device\[0\]\.device_memory_users: only used with device_memory/);
    assert.throws(() => config({ device: [{ uri: 'pci:0000:00:03.0', device_memory: 'peer:0000:00:04.0', device_memory_bytes: 5000 }] }), /device_memory_bytes: a whole number of 4 KiB pages/);
  });
});
