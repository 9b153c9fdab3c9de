/**
 * The guards of homid's file grants: the new config keys; where a FIEMAP map may land (placement.ts, over a
 * fabricated sysfs, and over real loop mounts with a file-backed device and a configured block_device); access
 * decided per descriptor even when clients share a cached entry; one resolver job for concurrent resolves of a
 * file; the file grant limits; and another client served while one client's resolve flushes hundreds of MiB.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HomidClient, type MediatedLease } from '../../src/client/index.js';
import { MediatedQueuePair } from '../../src/client/mediated-queue.js';
import { ConfigError, DEFAULT_FILE_GRANTS_PER_CLIENT, DEFAULT_FILE_GRANTS_PER_UID, parseConfig } from '../../src/daemon/config.js';
import { HomidError } from '../../src/daemon/errors.js';
import { Homid, type ClientSession, type FileGrant } from '../../src/daemon/homid.js';
import { STATUS_ACCESS_DENIED } from '../../src/daemon/mediated.js';
import { devNumber, fiemapPlacement, SYSFS_SECTOR_BYTES, type PlacementTarget } from '../../src/daemon/placement.js';
import { startHomidServer } from '../../src/daemon/server.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import type { EmuTransport } from '../../src/transport/emu.js';
import { O_PATH } from '../../src/sys/fileio.js';
import { toLbaRanges } from '../../src/extents/types.js';
import { NOBODY_PEER, ROOT_PEER, config, refused, ext4Fixture, haveTool, silent, tmpDir, writeImage, type ImageFixture } from './fixtures.js';
import { fsTypeOf, loopExt4 } from './loop.js';
import { until } from './procs.js';

const LBA = 4096;
const MiB = 1024 * 1024;

/** A dev_t as glibc's makedev builds it. */
function makedev(major: number, minor: number): bigint {
  const M = BigInt(major);
  const m = BigInt(minor);
  return (m & 0xffn) | ((M & 0xfffn) << 8n) | ((m & ~0xffn) << 12n) | ((M & ~0xfffn) << 32n);
}

/** Statuses of single-block commands on a mediated queue, one after the other. */
/** Run [opcode, lba, data offset (default 0)] one by one; their statuses. */
async function statuses(mq: MediatedQueuePair, ops: [number, number, number?][]): Promise<number[]> {
  const out: number[] = [];
  for (const [op, lba, off] of ops) {
    let st = -1;
    assert.ok(mq.submitIo(op, 1, lba, 1, off ?? 0, 0, 1) >= 0);
    mq.ring();
    const t0 = Date.now();
    while (mq.poll((_t, s) => (st = s)) === 0) {
      if (Date.now() - t0 > 10_000) assert.fail('mediated I/O did not complete');
      await new Promise((r) => setTimeout(r, 1));
    }
    out.push(st);
  }
  return out;
}

describe('config: block_device and [limits]', () => {
  test('defaults, overrides and errors', () => {
    const d = parseConfig('');
    assert.deepEqual(d.limits, { fileGrantsPerClient: DEFAULT_FILE_GRANTS_PER_CLIENT, fileGrantsPerUid: DEFAULT_FILE_GRANTS_PER_UID });
    assert.equal(DEFAULT_FILE_GRANTS_PER_CLIENT, 4096);
    assert.equal(DEFAULT_FILE_GRANTS_PER_UID, 16384);
    const c = parseConfig('[[device]]\nuri = "emu:///tmp/x.img?size=16MiB"\nblock_device = "/dev/loop7"\n[limits]\nfile_grants_per_client = 2\nfile_grants_per_uid = 9\n');
    assert.equal(c.devices[0]!.blockDevice, '/dev/loop7');
    assert.deepEqual(c.limits, { fileGrantsPerClient: 2, fileGrantsPerUid: 9 });
    assert.deepEqual(parseConfig('[limits]\nfile_grants_per_uid = 3\n').limits, { fileGrantsPerClient: DEFAULT_FILE_GRANTS_PER_CLIENT, fileGrantsPerUid: 3 });
    // the socket's limits: snake_case keys onto IpcLimits fields; 0 only where it means "none"
    assert.deepEqual(parseConfig('[limits]\nconnections_per_uid = 8\nframe_timeout_ms = 500\nfd_reserve = 0\n').limits.ipc, { maxConnectionsPerUid: 8, frameTimeoutMs: 500, fdReserve: 0 });
    assert.throws(() => parseConfig('[limits]\nconnections_per_uid = 0\n'), /limits\.connections_per_uid/);
    assert.throws(() => parseConfig('[limits]\nheld_fds = 2.5\n'), /limits\.held_fds/);
    const bad: [string, RegExp][] = [
      ['[[device]]\nuri = "emu://?size=1MiB"\nextents = "decoder:ext4"\nextent_root = "/t"\nblock_device = "/dev/sdb"', /device\[0\]\.block_device: only used with extents = "fiemap"/],
      ['[[device]]\nuri = "emu://?size=1MiB"\nblock_device = "sdb"', /device\[0\]\.block_device/],
      ['[limits]\nfile_grants_per_client = -1', /limits\.file_grants_per_client/],
      ['[limits]\nfile_grants_per_uid = 1.5', /limits\.file_grants_per_uid/],
      ['[limits]\nfiles = 3', /unrecognized|files/i],
    ];
    for (const [text, re] of bad)
      assert.throws(
        () => parseConfig(text, 'x.toml'),
        (e: unknown) => e instanceof ConfigError && re.test(e.message),
        text,
      );
  });
});

describe('FIEMAP placement over a fabricated sysfs', () => {
  let root = '';
  let sys = '';
  let image = '';
  let other = '';
  let blockNode = '';
  const nsBytes = 64 * MiB;
  const target = (t: Partial<PlacementTarget>): PlacementTarget => ({ device: 'd', imageFile: image, blockDevice: null, namespaceBytes: nsBytes, lbaSize: LBA, ...t });
  /** A block device directory: devices/<rel> with `dev`, linked from dev/block/MAJ:MIN. */
  const blockDir = (rel: string, major: number, minor: number, attrs: Record<string, string>): string => {
    const dir = path.join(root, 'devices', rel);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'dev'), `${major}:${minor}\n`);
    for (const [k, v] of Object.entries(attrs)) {
      fs.mkdirSync(path.dirname(path.join(dir, k)), { recursive: true });
      fs.writeFileSync(path.join(dir, k), v);
    }
    fs.symlinkSync(path.relative(sys, dir), path.join(sys, `${major}:${minor}`));
    return dir;
  };

  before(() => {
    root = tmpDir('homid-sysfs-');
    sys = path.join(root, 'dev', 'block');
    fs.mkdirSync(sys, { recursive: true });
    image = path.join(root, 'ns.img');
    other = path.join(root, 'other.img');
    fs.writeFileSync(image, '');
    fs.writeFileSync(other, '');
    // loop3 over the image, with a partition; loop4 over another file; loop5 over the image at an unaligned offset
    blockDir('virtual/block/loop3', 7, 3, { 'loop/backing_file': `${image}\n`, 'loop/offset': '1048576\n' });
    blockDir('virtual/block/loop3/loop3p1', 259, 0, { partition: '1\n', start: '2048\n' });
    blockDir('virtual/block/loop4', 7, 4, { 'loop/backing_file': `${other}\n`, 'loop/offset': '0\n' });
    blockDir('virtual/block/loop5', 7, 5, { 'loop/backing_file': `${image}\n`, 'loop/offset': '512\n' });
    blockDir('virtual/block/loop6', 7, 6, { 'loop/backing_file': `${image} (deleted)\n`, 'loop/offset': '0\n' });
    blockDir('virtual/block/loop7', 7, 7, { 'loop/backing_file': `${image}\n`, 'loop/offset': '0\n' });
    blockDir('virtual/block/loop7/loop7p1', 259, 1, { partition: '1\n', start: '12abc\n' });
    // a disk sdb (8:16) with partition sdb2 (8:18), and a device node for it
    blockDir('pci/block/sdb', 8, 16, {});
    blockDir('pci/block/sdb/sdb2', 8, 18, { partition: '2\n', start: '4096\n' });
    blockNode = path.join(root, 'sdb'); // made by the block_device test (mknod)
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  test('dev_t decoding follows glibc makedev', () => {
    for (const [M, m] of [
      [0, 0],
      [7, 3],
      [259, 1],
      [8, 18],
      [4095, 255],
      [4096, 256],
      [0xfffff, 0xfffff],
      [1234, 1048575],
    ] as const) {
      assert.deepEqual(devNumber(makedev(M, m)), { major: M, minor: m });
    }
    assert.deepEqual(devNumber(fs.statSync('/').dev), devNumber(BigInt(fs.statSync('/').dev)));
  });

  test('a loop device over the image, or a partition of one: the loop offset and the partition start are added', () => {
    const whole = fiemapPlacement(makedev(7, 3), target({}), sys);
    assert.equal(whole.offset, 1048576);
    assert.match(whole.via, /loop device loop3 over /);
    const part = fiemapPlacement(makedev(259, 0), target({}), sys);
    assert.equal(part.offset, 1048576 + 2048 * SYSFS_SECTOR_BYTES);
    assert.match(part.via, /partition loop3p1 of loop device loop3/);
    assert.equal(fiemapPlacement(makedev(7, 7), target({}), sys).offset, 0);
  });

  test('everything else is refused with wrong-device and says where the file lives', async () => {
    const cases: [bigint, Partial<PlacementTarget>, RegExp][] = [
      [makedev(7, 4), {}, /^the file lives on block device 7:4 \(loop4\), not on namespace 1 of device 'd': loop device loop4 is backed by .*other\.img, not by the image/],
      [makedev(7, 6), {}, /loop6 is backed by .*\(deleted\), not by the image/],
      [makedev(7, 5), {}, /offset 512 on the namespace is not a multiple of the LBA size 4096/],
      [makedev(0, 45), {}, /^the file lives on device 0:45, which is no block device/],
      [makedev(9, 9), {}, /device 9:9, which is no block device/],
      [makedev(8, 16), {}, /sdb is no loop device over the image/],
      [makedev(7, 3), { imageFile: null }, /neither a file-backed emu:\/\/ device nor configured with a block_device/],
      [makedev(259, 1), {}, /start: not a non-negative integer/],
      [makedev(7, 3), { imageFile: null, blockDevice: path.join(root, 'missing') }, /block_device .*missing: ENOENT/],
      [makedev(7, 3), { imageFile: null, blockDevice: image }, /block_device .*ns\.img is not a block device/],
    ];
    for (const [dev, t, re] of cases) {
      await refused(() => fiemapPlacement(dev, target(t), sys), 'wrong-device').then((e) => assert.match(e.message, re));
    }
  });

  test('a configured block_device: the device itself at offset 0, a partition of it at its start', async (t) => {
    if (process.getuid?.() !== 0 || !haveTool('mknod')) {
      t.skip('making a block device node needs root and mknod');
      return;
    }
    fs.rmSync(blockNode, { force: true });
    execFileSync('mknod', [blockNode, 'b', '8', '16']);
    const tb = { imageFile: null, blockDevice: blockNode };
    const whole = fiemapPlacement(makedev(8, 16), target(tb), sys);
    assert.deepEqual(whole, { offset: 0, via: `block_device ${blockNode}` });
    const part = fiemapPlacement(makedev(8, 18), target(tb), sys);
    assert.equal(part.offset, 4096 * SYSFS_SECTOR_BYTES);
    assert.match(part.via, /partition sdb2 of block_device/);
    const e = await refused(() => fiemapPlacement(makedev(7, 4), target(tb), sys), 'wrong-device');
    assert.match(e.message, /block_device .* is 8:16/);
  });
});

describe('FIEMAP on real loop mounts', () => {
  test('a loop device over another image is refused; a configured block_device maps onto the namespace', async (t) => {
    const lm = loopExt4(32);
    if (typeof lm === 'string') {
      t.skip(lm);
      return;
    }
    const other = path.join(lm.dir, 'other.img');
    fs.writeFileSync(other, '');
    fs.truncateSync(other, 32 * MiB);
    const p = path.join(lm.mnt, 'g.bin');
    const want = crypto.randomBytes(3 * LBA + 100);
    fs.writeFileSync(p, want);
    const d = devNumber(fs.statSync(p, { bigint: true }).dev);
    const uevent = fs.readFileSync(`/sys/dev/block/${d.major}:${d.minor}/uevent`, 'utf8');
    const loopDev = `/dev/${/^DEVNAME=(.+)$/m.exec(uevent)![1]}`;
    const h = await Homid.start(
      config({
        device: [
          { name: 'other', uri: `emu://${other}?size=32MiB` },
          { name: 'bd', uri: `emu://${lm.image}?size=${lm.sizeMiB}MiB`, block_device: loopDev },
        ],
      }),
      { logger: silent() },
    );
    const s = h.connect(ROOT_PEER);
    const fd = fs.openSync(p, 'r');
    try {
      const e = await refused(h.resolveExtents(s, 'other', fd), 'wrong-device');
      assert.match(e.message, new RegExp(`not on namespace 1 of device 'other': loop device loop\\d+ is backed by ${lm.image.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, not by the image`));
      const { grant } = await h.resolveExtents(s, 'bd', fd);
      assert.equal(grant.entry.map.size, want.length);
      const got = Buffer.alloc(want.length);
      const ifd = fs.openSync(lm.image, 'r');
      try {
        for (const x of grant.entry.map.extents) fs.readSync(ifd, got, x.logical, Math.min(x.length, want.length - x.logical), x.physical);
      } finally {
        fs.closeSync(ifd);
      }
      assert.deepEqual(got, want, 'the namespace holds the file at the published offsets');
    } finally {
      fs.closeSync(fd);
      await h.disconnect(s);
      await h.stop();
      lm.unmount();
    }
  });
});

describe('file grants: access per descriptor, shared jobs, limits', { skip: !haveTool('mkfs.ext4') && 'no mkfs.ext4' }, () => {
  let fx: ImageFixture;
  let h: Homid;
  const names = ['f0', 'f1', 'f2', 'f3', 'f4', 'f5'].map((n) => `${n}.bin`);
  before(async () => {
    fx = ext4Fixture({ 'shared.bin': 12_288, ...Object.fromEntries(names.map((n, i) => [n, 4096 * (i + 1)])) });
    h = await Homid.start(
      config({
        device: [{ name: 'img', uri: `emu://${fx.image}?size=${fx.sizeMiB}MiB`, extents: 'decoder:ext4', extent_root: fx.tree }],
        class: { default: { queue_pairs: 8, per_client: 4, write: true } },
        limits: { file_grants_per_client: 3, file_grants_per_uid: 5 },
      }),
      { logger: silent() },
    );
  });
  after(async () => {
    await h?.stop();
    if (fx) fs.rmSync(fx.dir, { recursive: true, force: true });
  });

  const resolveWith = async (s: ClientSession, name: string, flags: number): Promise<FileGrant> => {
    const fd = fs.openSync(path.join(fx.tree, name), flags);
    try {
      return (await h.resolveExtents(s, 'img', fd)).grant;
    } finally {
      fs.closeSync(fd);
    }
  };

  test('clients sharing a cached entry each get what their own descriptor allows', async () => {
    const rw = h.connect(NOBODY_PEER);
    const ro = h.connect(ROOT_PEER);
    const wo = h.connect(ROOT_PEER);
    try {
      const g1 = await resolveWith(rw, 'shared.bin', fs.constants.O_RDWR);
      const g2 = await resolveWith(ro, 'shared.bin', fs.constants.O_RDONLY);
      const g3 = await resolveWith(wo, 'shared.bin', fs.constants.O_WRONLY);
      assert.equal(g1.entry, g2.entry, 'one cached entry');
      assert.equal(g2.entry, g3.entry);
      assert.equal(g1.entry.refs, 3);
      assert.deepEqual([g1.readable, g1.writable], [true, true]);
      assert.deepEqual([g2.readable, g2.writable], [true, false], 'O_RDONLY after an O_RDWR holder: no write grant');
      assert.deepEqual([g3.readable, g3.writable], [false, true], 'O_WRONLY: no read grant');
      const lba = toLbaRanges(g1.entry.map, LBA)[0]!.lba;
      for (const [s, want] of [
        [rw, [0, 0]],
        [ro, [0, STATUS_ACCESS_DENIED]],
        [wo, [STATUS_ACCESS_DENIED, 0]],
      ] as const) {
        const [l] = await h.openQueuePairs(s, { device: 'img', depth: 8, mode: 'mediated', write: true });
        const mq = new MediatedQueuePair(l!.ring!.bytes, l!.data!.bytes, l!.id);
        mq.data.set(fx.files['shared.bin']!.subarray(0, LBA)); // writes put back what is there
        assert.deepEqual(
          await statuses(mq, [
            [NvmOpcode.Read, lba],
            [NvmOpcode.Write, lba],
          ]),
          [...want],
          `client ${s.id}`,
        );
      }
      // descriptors that prove nothing
      const opath = fs.openSync(path.join(fx.tree, 'shared.bin'), O_PATH);
      const append = fs.openSync(path.join(fx.tree, 'shared.bin'), fs.constants.O_WRONLY | fs.constants.O_APPEND);
      try {
        assert.match((await refused(h.resolveExtents(ro, 'img', opath), 'fd-access')).message, /O_PATH/);
        assert.match((await refused(h.resolveExtents(ro, 'img', append), 'fd-access')).message, /neither reads nor writes in place/);
      } finally {
        fs.closeSync(opath);
        fs.closeSync(append);
      }
      assert.equal(g1.entry.refs, 3, 'refusals take no hold on the entry');
    } finally {
      await h.disconnect(rw);
      await h.disconnect(ro);
      await h.disconnect(wo);
    }
    assert.equal(h.extents.entries.size, 0);
  });

  test('concurrent resolves of one file share one resolver job', async () => {
    const ss = [h.connect(ROOT_PEER), h.connect(ROOT_PEER), h.connect(ROOT_PEER)];
    try {
      const jobs = h.extents.pool.stats.jobs;
      const gs = await Promise.all(ss.map((s) => resolveWith(s, 'f5.bin', fs.constants.O_RDONLY)));
      assert.equal(h.extents.pool.stats.jobs - jobs, 1, 'one job for three resolves');
      assert.ok(gs.every((g) => g.entry === gs[0]!.entry));
      assert.equal(gs[0]!.entry.refs, 3);
      assert.equal(gs[0]!.entry.map.size, 6 * 4096);
    } finally {
      for (const s of ss) await h.disconnect(s);
    }
    assert.equal(h.extents.entries.size, 0);
  });

  test('file grant limits: per client and per uid; a release or a disconnect gives the count back', async () => {
    const a = h.connect(NOBODY_PEER);
    const b = h.connect(NOBODY_PEER);
    const c = h.connect(ROOT_PEER);
    try {
      const ga = [];
      for (const n of names.slice(0, 3)) ga.push(await resolveWith(a, n, fs.constants.O_RDONLY));
      const e1 = await refused(resolveWith(a, names[3]!, fs.constants.O_RDONLY), 'limit-file-grants');
      assert.match(e1.message, /holds 3 of 3 file grants \(\[limits\] file_grants_per_client\)/);
      h.releaseFile(a, ga[0]!.id);
      await resolveWith(a, names[3]!, fs.constants.O_RDONLY); // the released grant's count came back
      // the same uid on another connection: 3 + 2 = 5 of 5
      await resolveWith(b, names[4]!, fs.constants.O_RDONLY);
      await resolveWith(b, names[5]!, fs.constants.O_RDONLY);
      const e2 = await refused(resolveWith(b, names[0]!, fs.constants.O_RDONLY), 'limit-file-grants');
      assert.match(e2.message, /uid 65534 holds 5 of 5 file grants over all its connections \(\[limits\] file_grants_per_uid\)/);
      // another uid is not affected; resolves in flight count against the limit
      const burst = await Promise.allSettled(names.slice(0, 4).map((n) => resolveWith(c, n, fs.constants.O_RDONLY)));
      assert.equal(burst.filter((r) => r.status === 'fulfilled').length, 3, 'three of four concurrent resolves');
      const rej = burst.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      assert.equal((rej.reason as HomidError).code, 'limit-file-grants');
      await h.disconnect(a); // its 3 grants return to uid 65534
      await resolveWith(b, names[0]!, fs.constants.O_RDONLY);
      assert.equal(b.files.size, 3);
    } finally {
      await h.disconnect(a);
      await h.disconnect(b);
      await h.disconnect(c);
    }
    assert.equal(h.extents.entries.size, 0);
  });
});

describe('a resolve flushing hundreds of MiB does not hold up other clients', () => {
  const IMAGE_MIB = 768;
  const DIRTY_MIB = 384;

  test("while one client's resolve flushes, another client's status and mediated read are answered first", { timeout: 180_000 }, async (t) => {
    const tmpFs = fsTypeOf(os.tmpdir());
    if (tmpFs === 'tmpfs' || tmpFs === 'ramfs') {
      t.skip(`the temporary directory is on ${tmpFs}: flushing there is no slow disk work`);
      return;
    }
    const lm = loopExt4(IMAGE_MIB, 'homid-flush-');
    if (typeof lm === 'string') {
      t.skip(lm);
      return;
    }
    const sock = path.join(lm.dir, 'homid.sock');
    const srv = await startHomidServer(
      config({ socket: sock, device: [{ name: 'loop', uri: `emu://${lm.image}?size=${IMAGE_MIB}MiB` }], class: { default: { queue_pairs: 8, per_client: 4 } }, raw: { users: [0] } }),
      { logger: silent() },
    );
    const a = await HomidClient.connect(sock);
    const b = await HomidClient.connect(sock);
    let bigFd = -1;
    try {
      // b: a small file, resolved and readable through a mediated queue before anything else happens
      const small = path.join(lm.mnt, 'small.bin');
      fs.writeFileSync(small, new Uint8Array(LBA).fill(0x33));
      const sfd = fs.openSync(small, 'r');
      const smap = await b.resolveExtents(sfd, 'loop');
      fs.closeSync(sfd);
      const smallLba = smap.read()!.extents[0]!.physical / LBA;
      const [bl] = await b.openQueuePairs({ device: 'loop', depth: 8, mode: 'mediated', dataBytes: 1 << 16 });
      const mq = (bl as MediatedLease).qp;
      assert.deepEqual(await statuses(mq, [[NvmOpcode.Read, smallLba]]), [0]);
      // a: hundreds of MiB of dirty data, then its resolve (which flushes them first)
      const big = path.join(lm.mnt, 'big.bin');
      bigFd = fs.openSync(big, 'w+');
      const chunk = crypto.randomBytes(MiB);
      for (let i = 0; i < DIRTY_MIB; i++) fs.writeSync(bigFd, chunk, 0, MiB, i * MiB);
      const events: string[] = [];
      const t0 = performance.now();
      const at: Record<string, number> = {};
      const pa = a.resolveExtents(bigFd, 'loop').then((m) => {
        events.push('a resolved');
        at['a resolved'] = performance.now() - t0;
        return m;
      });
      pa.catch(() => undefined); // awaited below; a failure before that must not surface as an unhandled rejection
      await until(() => srv.homid.extents.pool.pending > 0 || events.length > 0, 30_000, "a's resolve on a resolver thread");
      assert.equal(events.length, 0, `a's resolve finished before b asked anything (${DIRTY_MIB} MiB flushed too fast to observe)`);
      const st = await b.status();
      assert.equal(st.ok, true);
      events.push('b status');
      at['b status'] = performance.now() - t0;
      // into a part of the buffer nothing was read into yet (the data memory of a lease without a write grant is
      // mapped read-only: the client cannot clear it)
      assert.ok(mq.data.subarray(LBA, 2 * LBA).every((x) => x === 0));
      assert.deepEqual(await statuses(mq, [[NvmOpcode.Read, smallLba, LBA]]), [0]);
      assert.ok(
        mq.data.subarray(LBA, 2 * LBA).every((x) => x === 0x33),
        "b's mediated read returns its file",
      );
      events.push('b read');
      at['b read'] = performance.now() - t0;
      const amap = await pa;
      console.log(
        `# ${DIRTY_MIB} MiB dirty: ${Object.entries(at)
          .map(([k, v]) => `${k} at ${v.toFixed(0)} ms`)
          .join(', ')}`,
      );
      assert.equal(amap.read()!.size, DIRTY_MIB * MiB);
      assert.deepEqual(events, ['b status', 'b read', 'a resolved'], "b was answered while a's resolve was flushing");
      amap.close();
      smap.close();
    } finally {
      if (bigFd >= 0) fs.closeSync(bigFd);
      a.close();
      b.close();
      await srv.close();
      lm.unmount();
    }
  });
});

describe('a decode through the metadata queue pair does not hold up the main thread', { skip: !haveTool('mkfs.ext4') && 'no mkfs.ext4' }, () => {
  /** Each of the first metadata reads of the slow resolve is held this long by the controller. */
  const DELAY_MS = 150;
  const DELAYED_READS = 4;

  test("while a decode waits on slow metadata reads, another client's mediated reads complete", { timeout: 60_000 }, async () => {
    const fx = ext4Fixture({ 'a.bin': 40_000, 'b.bin': 8192 });
    const h = await Homid.start(
      config({
        device: [{ name: 'e4', uri: `emu://?size=${fx.sizeMiB}MiB`, extents: 'decoder:ext4', extent_root: fx.tree }],
        class: { default: { queue_pairs: 8, per_client: 4 } },
        raw: { users: [ROOT_PEER.uid] },
      }),
      { logger: silent() },
    );
    const root = h.connect(ROOT_PEER);
    const a = h.connect(NOBODY_PEER);
    const b = h.connect(NOBODY_PEER);
    try {
      const d = h.registry.live('e4');
      const [raw] = await h.openQueuePairs(root, { device: 'e4', depth: 16, mode: 'raw' });
      await writeImage(raw!.qp!, d.transport.dma, 1, LBA, new Uint8Array(fs.readFileSync(fx.image)));
      // b: a file resolved and readable before anything is slow
      const gb = await (async () => {
        const fd = fs.openSync(path.join(fx.tree, 'b.bin'), 'r');
        try {
          return (await h.resolveExtents(b, 'e4', fd)).grant;
        } finally {
          fs.closeSync(fd);
        }
      })();
      const lba = toLbaRanges(gb.entry.map, LBA)[0]!.lba;
      const [bl] = await h.openQueuePairs(b, { device: 'e4', depth: 8, mode: 'mediated' });
      const mq = new MediatedQueuePair(bl!.ring!.bytes, bl!.data!.bytes, bl!.id);
      assert.deepEqual(await statuses(mq, [[NvmOpcode.Read, lba]]), [0]);
      // a: a resolve whose metadata reads the controller holds back
      const emu = d.transport as EmuTransport;
      emu.inject({ qid: d.metadata!.qp.qid, opcode: NvmOpcode.Read, count: DELAYED_READS, action: { kind: 'delay', ms: DELAY_MS } });
      const events: string[] = [];
      const fd = fs.openSync(path.join(fx.tree, 'a.bin'), 'r');
      const pa = h.resolveExtents(a, 'e4', fd).then((r) => {
        events.push('a resolved');
        return r;
      });
      pa.catch(() => undefined); // awaited below; a failure before that must not surface as an unhandled rejection
      await until(() => h.extents.pool.stats.reads > 0 || events.length > 0, 10_000, "a's decoder reading the device");
      assert.equal(events.length, 0, "a's resolve finished before b read");
      for (let i = 0; i < 3; i++) {
        mq.data.fill(0);
        assert.deepEqual(await statuses(mq, [[NvmOpcode.Read, lba]]), [0]);
        assert.deepEqual(mq.data.subarray(0, LBA), fx.files['b.bin']!.subarray(0, LBA), "b's mediated read returns its file");
        events.push('b read');
      }
      const { grant } = await pa;
      fs.closeSync(fd);
      assert.equal(grant.entry.map.size, 40_000);
      assert.deepEqual(events, ['b read', 'b read', 'b read', 'a resolved'], "b's reads were served while a's decode waited on the device");
    } finally {
      await h.disconnect(a);
      await h.disconnect(b);
      await h.disconnect(root);
      await h.stop();
      fs.rmSync(fx.dir, { recursive: true, force: true });
    }
  });
});
