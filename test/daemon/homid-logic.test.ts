/** homid's logic in one process (no socket): config, devices, budgets, qid reuse, mediated checks, extents. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError, parseConfig } from '../../src/daemon/config.js';
import { readExtentTable, waitExtentTable } from '../../src/ipc/extent-table.js';
import { Homid } from '../../src/daemon/homid.js';
import { STATUS_ACCESS_DENIED } from '../../src/daemon/mediated.js';
import { MediatedQueuePair } from '../../src/client/mediated-queue.js';
import type { EmuTransport } from '../../src/transport/emu.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { memfdOpener } from '../../src/daemon/registry.js';
import { memfdRegions } from '../../src/daemon/shared-region.js';
import { toLbaRanges } from '../../src/extents/types.js';
import { NOBODY_PEER, ROOT_PEER, config, refused, ext4Fixture, haveTool, silent, tmpDir, type ImageFixture } from './fixtures.js';
import { loopExt4 } from './loop.js';

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

describe('homid config', () => {
  test('defaults', () => {
    const c = parseConfig('');
    assert.equal(c.socket, '/run/homi/homid.sock');
    assert.equal(c.socketMode, 0o660);
    assert.deepEqual(c.devices, []);
    assert.equal(c.classes.get('default')!.perClient, 4);
    assert.deepEqual(c.raw.users, ['root']);
  });
  test('a full file', () => {
    const c = parseConfig(`
socket = "/tmp/h.sock"
socket_mode = "0600"
[[device]]
name = "a"
uri = "emu://?size=64MiB"
[[device]]
uri = "emu:///tmp/disk.img?size=16MiB"
extents = "decoder:ext4"
extent_root = "/tmp/tree"
[class.batch]
queue_pairs = 4
per_client = 1
groups = ["users", 100]
[raw]
users = ["root", 1000]
`);
    assert.equal(c.socketMode, 0o600);
    assert.deepEqual(
      c.devices.map((d) => d.name),
      ['a', 'dev1'],
    );
    assert.equal(c.devices[1]!.extentRoot, '/tmp/tree');
    assert.equal(c.classes.get('batch')!.perClient, 1);
  });
  test('errors name the bad key', () => {
    const cases: [string, RegExp][] = [
      ['[[device]]\nuri = "nvme://x"', /device\[0\]\.uri/],
      ['[[device]]\nuri = "emu://?size=1MiB"\nextents = "decoder:ext4"', /device\[0\]\.extent_root: required/],
      ['socket_mode = "999"', /socket_mode/],
      ['[class.x]\nqueue_pairs = 1\nper_client = 2', /class\.x\.per_client/],
      ['sockett = "/x"', /unrecognized|sockett/i],
      ['[[device]]\nuri = "emu://"\nname = "a"\n[[device]]\nuri = "emu://"\nname = "a"', /device\[1\]\.name: duplicate/],
      ['socket = ', /not valid TOML/],
    ];
    for (const [text, re] of cases) {
      assert.throws(
        () => parseConfig(text, 'x.toml'),
        (e: unknown) => e instanceof ConfigError && re.test(e.message) && e.message.startsWith('x.toml'),
        text,
      );
    }
  });
});

describe('homid devices, budgets and leases', () => {
  let h: Homid;
  before(async () => {
    h = await Homid.start(
      config({
        device: [
          { name: 'good', uri: 'emu://?size=16MiB&queues=6' },
          { name: 'bad', uri: 'pci:0000:ff:1f.7' },
        ],
        class: { default: { queue_pairs: 3, per_client: 2, max_depth: 64 } },
        raw: { users: [ROOT_PEER.uid], groups: [] },
      }),
      { logger: silent() },
    );
  });
  after(async () => h.stop());

  test('a device that fails to come up is reported; the other is served', () => {
    const d = h.listDevices();
    assert.equal(d.find((x) => x.name === 'good')!.state, 'live');
    const bad = d.find((x) => x.name === 'bad')!;
    assert.equal(bad.state, 'failed');
    assert.ok(bad.error && bad.error.length > 0);
    assert.equal(h.status().devices.length, 2);
  });

  test('refusals: budgets, depth, raw permission, unknown or failed device, namespace', async () => {
    const a = h.connect(ROOT_PEER);
    const b = h.connect(ROOT_PEER);
    const nobody = h.connect(NOBODY_PEER);
    try {
      await refused(h.openQueuePairs(a, { device: 'good', depth: 65 }), 'bad-depth');
      await refused(h.openQueuePairs(a, { device: 'nope', depth: 8 }), 'no-device');
      await refused(h.openQueuePairs(a, { device: 'bad', depth: 8 }), 'device-down');
      await refused(h.openQueuePairs(a, { device: 'good', depth: 8, nsid: 2 }), 'bad-namespace');
      await refused(h.openQueuePairs(nobody, { device: 'good', depth: 8, mode: 'raw' }), 'raw-denied');
      const la = await h.openQueuePairs(a, { device: 'good', depth: 8, count: 2 });
      assert.equal(la.length, 2);
      const e = await refused(h.openQueuePairs(a, { device: 'good', depth: 8 }), 'budget-client');
      assert.match(e.message, /holds 2 of 2/);
      await h.openQueuePairs(b, { device: 'good', depth: 8 });
      const e2 = await refused(h.openQueuePairs(b, { device: 'good', depth: 8 }), 'budget-class');
      assert.match(e2.message, /class 'default' holds 3 of 3/);
      assert.ok(h.counters.refusals >= 7);
    } finally {
      await h.disconnect(a);
      await h.disconnect(b);
      await h.disconnect(nobody);
    }
  });

  test('leases are reclaimed on disconnect; queue ids and memory are reused', async () => {
    const dev = h.registry.live('good');
    const dmaBefore = dev.transport.dma.allocatedBytes;
    const a = h.connect(ROOT_PEER);
    const la = await h.openQueuePairs(a, { device: 'good', depth: 32, count: 2 });
    const qids = la.map((l) => l.qid).sort();
    assert.deepEqual(
      dev.controller.queuePairs.map((q) => q.qid),
      qids,
    );
    // I/O in flight on the raw queue when the client vanishes
    const buf = dev.transport.dma.alloc(4096);
    const qp = la[0]!.qp!;
    for (let i = 0; i < 8; i++) qp.submitIo(NvmOpcode.Read, 1, i, 1, buf.iova, 0, i);
    qp.ring();
    await h.disconnect(a);
    dev.transport.dma.free(buf);
    assert.equal(dev.controller.queuePairs.length, 0, 'queues deleted on the controller');
    assert.equal(dev.transport.dma.allocatedBytes, dmaBefore, 'queue memory freed');
    const b = h.connect(ROOT_PEER);
    const lb = await h.openQueuePairs(b, { device: 'good', depth: 32, count: 2 });
    assert.deepEqual(lb.map((l) => l.qid).sort(), qids, 'the same qids are granted again');
    assert.equal(h.status().clients.find((c) => c.id === b.id)!.queuePairs.length, 2);
    await h.disconnect(b);
    assert.ok(h.counters.reclaimedQueuePairs >= 4);
  });

  test('the device queue budget refuses cleanly', async () => {
    const big = await Homid.start(config({ device: [{ name: 'g', uri: 'emu://?size=16MiB&queues=2' }], class: { default: { queue_pairs: 10, per_client: 10 } }, raw: { users: [ROOT_PEER.uid] } }), {
      logger: silent(),
    });
    try {
      const s = big.connect(ROOT_PEER);
      await big.openQueuePairs(s, { device: 'g', depth: 8, count: 2 });
      await refused(big.openQueuePairs(s, { device: 'g', depth: 8 }), 'device-queues');
    } finally {
      await big.stop();
    }
  });
});

describe('mediated queues and the extent service', { skip: !haveTool('mkfs.ext4') && 'no mkfs.ext4' }, () => {
  let fx: ImageFixture;
  let h: Homid;
  let emu: EmuTransport;
  const LBA = 4096;
  before(async () => {
    fx = ext4Fixture({ 'a.bin': 40_000, 'b.bin': 20_000, 'secret.bin': 12_288 });
    h = await Homid.start(
      config({
        device: [{ name: 'img', uri: `emu://${fx.image}?size=${fx.sizeMiB}MiB`, extents: 'decoder:ext4', extent_root: fx.tree }],
        class: { default: { queue_pairs: 8, per_client: 4, write: true } },
      }),
      { logger: silent() },
    );
    emu = h.registry.live('img').transport as EmuTransport;
  });
  after(async () => {
    await h.stop();
    fs.rmSync(fx.dir, { recursive: true, force: true });
  });

  async function run(mq: MediatedQueuePair, ops: [number, number, number, number][]): Promise<number[]> {
    const st = new Array<number>(ops.length).fill(-1);
    ops.forEach(([op, slba, nlb, off], i) => assert.ok(mq.submitIo(op, 1, slba, nlb, off, 0, i) >= 0));
    mq.ring();
    const t0 = Date.now();
    let done = 0;
    while (done < ops.length) {
      done += mq.poll((tag, s) => (st[tag] = s));
      if (Date.now() - t0 > 10_000) assert.fail('mediated I/O did not complete');
      await sleep(1);
    }
    return st;
  }

  test('reads inside a granted file succeed; outside it, writes without grant and other opcodes are denied and never reach the device', async () => {
    const s = h.connect(NOBODY_PEER);
    try {
      const fd = fs.openSync(path.join(fx.tree, 'a.bin'), 'r');
      const { grant, region } = await h.resolveExtents(s, 'img', fd);
      fs.closeSync(fd);
      const snap = readExtentTable(region.bytes);
      assert.equal(snap.size, 40_000);
      const [lease] = await h.openQueuePairs(s, { device: 'img', depth: 16, mode: 'mediated' });
      const mq = new MediatedQueuePair(lease!.ring!.bytes, lease!.data!.bytes, lease!.id);
      const ranges = toLbaRanges(grant.entry.map, LBA);
      assert.ok(ranges.length >= 1);
      // read the whole file through the mediated queue
      const ops: [number, number, number, number][] = [];
      let off = 0;
      for (const r of ranges) for (let i = 0; i < r.count; i++, off += LBA) ops.push([NvmOpcode.Read, r.lba + i, 1, off]);
      const st = await run(mq, ops);
      assert.ok(
        st.every((x) => x === 0),
        `statuses ${st}`,
      );
      assert.deepEqual(mq.data.subarray(0, 40_000), fx.files['a.bin']);
      // the secret file's LBAs: not granted
      const other = h.extents; // resolve secret.bin in homid to learn its LBAs without granting it
      const sfd = fs.openSync(path.join(fx.tree, 'secret.bin'), 'r');
      const probe = h.connect(NOBODY_PEER);
      const sec = (await h.resolveExtents(probe, 'img', sfd)).grant.entry.map;
      fs.closeSync(sfd);
      const secretLba = toLbaRanges(sec, LBA)[0]!.lba;
      void other;
      const before = emu.stats();
      const denied = await run(mq, [
        [NvmOpcode.Read, secretLba, 1, 0],
        [NvmOpcode.Read, 0, 1, 0], // the superblock
        [NvmOpcode.Read, ranges[0]!.lba, ranges[0]!.count + 1000, 0], // runs past the file
        [NvmOpcode.Write, ranges[0]!.lba, 1, 0], // no write grant
        [0x09, ranges[0]!.lba, 1, 0], // dataset management
      ]);
      assert.deepEqual(denied.slice(0, 4), [STATUS_ACCESS_DENIED, STATUS_ACCESS_DENIED, STATUS_ACCESS_DENIED, STATUS_ACCESS_DENIED]);
      assert.equal(denied[4], STATUS_ACCESS_DENIED);
      const afterStats = emu.stats();
      assert.equal(afterStats.ioCommands, before.ioCommands, 'no denied command reached the controller');
      assert.ok(h.denied.length >= 5);
      assert.match(h.denied.at(-1)!.reason, /opcode 0x09/);
      await h.disconnect(probe);
    } finally {
      await h.disconnect(s);
    }
  });

  test("releaseFile: another client cannot give back a file grant that is not its own; the owner's release takes the file's LBAs out of its mediated grant", async () => {
    const owner = h.connect(NOBODY_PEER);
    const hostile = h.connect({ ...NOBODY_PEER, uid: 65533, gid: 65533 });
    try {
      const fd = fs.openSync(path.join(fx.tree, 'a.bin'), 'r');
      const { grant } = await h.resolveExtents(owner, 'img', fd);
      fs.closeSync(fd);
      const [lease] = await h.openQueuePairs(owner, { device: 'img', depth: 16, mode: 'mediated' });
      const mq = new MediatedQueuePair(lease!.ring!.bytes, lease!.data!.bytes, lease!.id);
      const first = toLbaRanges(grant.entry.map, LBA)[0]!.lba;
      assert.deepEqual(await run(mq, [[NvmOpcode.Read, first, 1, 0]]), [0], 'the owner reads its file');
      // another client (another uid), naming the owner's grant id: refused, and the grant stays
      await refused(() => h.releaseFile(hostile, grant.id), 'bad-request');
      assert.ok(owner.files.has(grant.id), "the owner's grant is untouched");
      assert.deepEqual(await run(mq, [[NvmOpcode.Read, first, 1, 0]]), [0], 'the owner still reads its file');
      // the owner's own release: the file's blocks leave its mediated grant at once; a second release is refused
      h.releaseFile(owner, grant.id);
      assert.equal(owner.files.has(grant.id), false);
      assert.deepEqual(await run(mq, [[NvmOpcode.Read, first, 1, 0]]), [STATUS_ACCESS_DENIED], 'a released file is no longer readable');
      await refused(() => h.releaseFile(owner, grant.id), 'bad-request');
    } finally {
      await h.disconnect(hostile);
      await h.disconnect(owner);
    }
  });

  test('a forged grant (a path string) is refused; files outside the extent root are refused', async () => {
    const s = h.connect(NOBODY_PEER);
    try {
      await refused(() => h.resolveExtents(s, 'img', path.join(fx.tree, 'a.bin')), 'needs-fd');
      await refused(() => h.resolveExtents(s, 'img', 99_999), 'needs-fd');
      const outside = path.join(fx.dir, 'outside.bin');
      fs.writeFileSync(outside, 'x');
      const fd = fs.openSync(outside, 'r');
      try {
        await refused(() => h.resolveExtents(s, 'img', fd), 'outside-root');
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      await h.disconnect(s);
    }
  });

  test('writes are forwarded only with a write grant and a writable descriptor', async () => {
    const s = h.connect(NOBODY_PEER);
    try {
      const fd = fs.openSync(path.join(fx.tree, 'b.bin'), 'r+');
      const { grant } = await h.resolveExtents(s, 'img', fd);
      fs.closeSync(fd);
      const [lease] = await h.openQueuePairs(s, { device: 'img', depth: 8, mode: 'mediated', write: true });
      const mq = new MediatedQueuePair(lease!.ring!.bytes, lease!.data!.bytes, lease!.id);
      const lba = toLbaRanges(grant.entry.map, LBA)[0]!.lba;
      mq.data.fill(0xab, 0, LBA);
      const w = await run(mq, [
        [NvmOpcode.Write, lba, 1, 0],
        [NvmOpcode.Flush, 0, 1, 0],
      ]);
      assert.deepEqual(w, [0, 0]);
      mq.data.fill(0, 0, LBA);
      const r = await run(mq, [[NvmOpcode.Read, lba, 1, 0]]);
      assert.deepEqual(r, [0]);
      assert.ok(mq.data.subarray(0, LBA).every((x) => x === 0xab));
    } finally {
      await h.disconnect(s);
    }
  });

  test('a file rewritten while cached is re-resolved: the generation moves and the reader sees new content', async () => {
    const s = h.connect(NOBODY_PEER);
    try {
      const p = path.join(fx.tree, 'a.bin');
      const fd = fs.openSync(p, 'r');
      const { region } = await h.resolveExtents(s, 'img', fd);
      fs.closeSync(fd);
      const g0 = readExtentTable(region.bytes).generation;
      // new content: rebuild the image first, then the watched file changes
      const next = new Uint8Array(70_000).fill(0x5a);
      const tmp = tmpDir('homid-next-');
      fs.cpSync(fx.tree, tmp, { recursive: true });
      fs.writeFileSync(path.join(tmp, 'a.bin'), next);
      const tmpImg = path.join(tmp, '..', path.basename(tmp) + '.img');
      const { mkExt4 } = await import('../extents/fixtures.js');
      mkExt4(tmpImg, tmp, fx.sizeMiB);
      fs.writeFileSync(fx.image, fs.readFileSync(tmpImg));
      fs.rmSync(tmpImg);
      fs.rmSync(tmp, { recursive: true });
      fs.writeFileSync(p, next);
      const snap = await waitExtentTable(region.bytes, { notGeneration: g0 });
      assert.ok(snap.generation > g0 && snap.generation % 2 === 0);
      assert.equal(snap.size, 70_000);
      const [lease] = await h.openQueuePairs(s, { device: 'img', depth: 32, mode: 'mediated' });
      const mq = new MediatedQueuePair(lease!.ring!.bytes, lease!.data!.bytes, lease!.id);
      const ops: [number, number, number, number][] = [];
      let off = 0;
      for (const e of snap.extents) for (let b = 0; b < Math.ceil(e.length / LBA) && off < snap.size; b++, off += LBA) ops.push([NvmOpcode.Read, e.physical / LBA + b, 1, off]);
      const st = await run(mq, ops);
      assert.ok(st.every((x) => x === 0));
      assert.deepEqual(mq.data.subarray(0, 70_000), next);
      assert.equal(h.status().extents.find((e) => e.path === fs.realpathSync(p))!.generation, snap.generation);
    } finally {
      await h.disconnect(s);
    }
  });
});

describe('controller resets under leases', () => {
  test('a reset destroys leased queue pairs: the leases are marked lost, a mediated ring is revoked, new leases work', async () => {
    const h = await Homid.start(config({ device: [{ name: 'r', uri: 'emu://?size=16MiB' }], raw: { users: [0] } }), { logger: silent(), opener: memfdOpener, regions: memfdRegions });
    try {
      const s = h.connect(ROOT_PEER);
      const [raw] = await h.openQueuePairs(s, { device: 'r', depth: 16, mode: 'raw' });
      const [med] = await h.openQueuePairs(s, { device: 'r', depth: 16, mode: 'mediated' });
      assert.ok(raw!.qp === null && med!.hwCq !== null, 'a remote raw queue and a direct mediated queue');
      const mq = new MediatedQueuePair(med!.ring!.bytes, med!.data!.bytes, med!.id, med!.hwCq!.bytes);
      const ctrl = h.registry.live('r').controller;
      await ctrl.reset('test: controller reset under leases');
      const st = h.status();
      const pairs = st.clients[0]!.queuePairs;
      assert.equal(pairs.length, 2);
      for (const p of pairs) assert.match(p.lost ?? '', /controller reset/, `lease ${p.lease} not marked lost`);
      assert.equal(st.counters.lostQueuePairs, 2);
      // the mediated ring is revoked on the poller's next pass
      const t0 = Date.now();
      while (!mq.revoked && Date.now() - t0 < 5000) await sleep(5);
      assert.ok(mq.revoked, 'the mediated ring was revoked');
      assert.equal(mq.submitIo(NvmOpcode.Read, 1, 0, 1, 0, 0, 0), -1);
      // closing the lost leases deletes nothing on the controller (the queues are gone) and frees the budget
      await h.closeQueuePair(s, raw!.id);
      await h.closeQueuePair(s, med!.id);
      const [again] = await h.openQueuePairs(s, { device: 'r', depth: 16, mode: 'raw' });
      assert.equal(again!.lost, null);
      assert.ok(ctrl.remoteQueuePairs.some((q) => q.qid === again!.qid && q.state === 'live'));
      await h.disconnect(s);
      assert.equal(ctrl.remoteQueuePairs.length, 0);
    } finally {
      await h.stop();
    }
  });
});

describe('extent service over FIEMAP', () => {
  test('a file on another file system is refused: its FIEMAP offsets are no LBAs of the device', async () => {
    const h = await Homid.start(config({ device: [{ name: 'm', uri: 'emu://?size=16MiB' }] }), { logger: silent() });
    const dir = tmpDir('homid-fiemap-');
    try {
      const s = h.connect(ROOT_PEER);
      const p = path.join(dir, 'f.bin');
      fs.writeFileSync(p, new Uint8Array(8192).fill(1));
      const fd = fs.openSync(p, 'r');
      try {
        const e = await refused(h.resolveExtents(s, 'm', fd), 'wrong-device');
        assert.match(e.message, /^the file lives on .*device \d+:\d+.*, not on namespace 1 of device 'm'/);
      } finally {
        fs.closeSync(fd);
      }
      assert.equal(s.files.size, 0, 'no file grant was made');
      assert.equal(h.extents.entries.size, 0);
      await h.disconnect(s);
    } finally {
      await h.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('publishes a file of a loop-mounted image that backs the device, and refreshes it when it changes', async (t) => {
    const lm = loopExt4(32);
    if (typeof lm === 'string') {
      t.skip(lm);
      return;
    }
    const h = await Homid.start(config({ device: [{ name: 'm', uri: `emu://${lm.image}?size=${lm.sizeMiB}MiB` }] }), { logger: silent() });
    try {
      const s = h.connect(ROOT_PEER);
      const p = path.join(lm.mnt, 'f.bin');
      fs.writeFileSync(p, new Uint8Array(8192).fill(1));
      const fd = fs.openSync(p, 'r');
      const { region } = await h.resolveExtents(s, 'm', fd);
      const g0 = readExtentTable(region.bytes);
      assert.equal(g0.size, 8192);
      // the offsets are offsets of the namespace: the device holds the file's bytes there
      const onDevice = Buffer.alloc(8192);
      const ifd = fs.openSync(lm.image, 'r');
      try {
        for (const e of g0.extents) fs.readSync(ifd, onDevice, e.logical, Math.min(e.length, 8192 - e.logical), e.physical);
      } finally {
        fs.closeSync(ifd);
      }
      assert.ok(
        onDevice.every((b) => b === 1),
        'the namespace holds the file at the published offsets',
      );
      const jobs = h.extents.pool.stats.jobs;
      fs.writeFileSync(p, new Uint8Array(65536).fill(2));
      const g1 = await waitExtentTable(region.bytes, { notGeneration: g0.generation });
      assert.equal(g1.size, 65536);
      assert.ok(h.extents.pool.stats.jobs > jobs, 'the refresh ran on a resolver thread');
      fs.closeSync(fd);
      await h.disconnect(s);
      assert.equal(h.extents.entries.size, 0, 'entry dropped with its last holder');
    } finally {
      await h.stop();
      lm.unmount();
    }
  });
});
