// homid's mediated queues and its ext4 decoder on QEMU's NVMe controller, run INSIDE the VM harness's guest.
// An ext4 image is built from a directory tree (mkfs.ext4 -d) and written onto namespace 1 through the
// kernel's block device; then homid takes the controller (pci:...?mode=uio without an IOMMU, mode=vfio with
// one), with extents = "decoder:ext4" reading the file system from the device through its metadata queue
// pair, and a client in this process works through mediated queues. What reached the device is checked from
// outside homid: the controller's own SMART counters (host read / write commands), and the kernel's block
// device and debugfs once the controller is back on nvme. Every test gives the controller back to nvme, also
// when it fails.
//
//   node dist/src/vm/cli.js run --nvme serial=HOMIA,ns=64M,qpairs=8 --modules nvme,uio_pci_generic \
//     --hugepages 64 -- node --test dist/test-guest/homid-mediated.test.js
//   node dist/src/vm/cli.js run --iommu --nvme serial=HOMIA,ns=64M:4096,qpairs=8 --modules nvme,vfio-pci \
//     --hugepages 64 -- node --test dist/test-guest/homid-mediated.test.js
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MediatedQueuePair } from '../src/client/mediated-queue.js';
import type { HomidConfig } from '../src/daemon/config.js';
import { HomidError } from '../src/daemon/errors.js';
import { waitExtentTable, readExtentTable } from '../src/ipc/extent-table.js';
import { Homid, type ClientSession, type HomidLogger } from '../src/daemon/homid.js';
import { startHomidServer, type HomidServer } from '../src/daemon/server.js';
import { nextJson, spawnNode } from '../test/daemon/procs.js';
import { STATUS_ACCESS_DENIED } from '../src/daemon/mediated.js';
import type { Controller } from '../src/driver/controller.js';
import { dataPointer } from '../src/driver/dptr.js';
import { openImage } from '../src/extents/open.js';
import { toLbaRanges, type FileMap } from '../src/extents/types.js';
import { decodeSmartLog } from '../src/nvme/logpages.js';
import { LogPageId, NvmOpcode, SMART_LOG_SIZE } from '../src/nvme/opcodes.js';
import { haveTool, mkExt4 } from '../test/extents/fixtures.js';
import { assertInGuest, controllerBySerial, expectedNvme, namespacesOf, pciDriver, rebind, sys, waitFor } from './helpers.js';

assertInGuest();

const IOMMU = process.env.HOMI_GUEST_IOMMU === '1';
const MODE: 'uio' | 'vfio' = IOMMU ? 'vfio' : 'uio';
const USER_DRIVER = MODE === 'uio' ? 'uio_pci_generic' : 'vfio-pci';
const KiB = 1024;
const MiB = 1024 * KiB;
/** The ext4 image; only this much of the namespace is written (and zeroed again at the end). */
const IMAGE_MIB = 8;
/** ext4 block size of the image. */
const FS_BLOCK = 4096;
/** Mediated data buffer per lease. */
const DATA_BYTES = 256 * KiB;
const DEPTH = 16;
/** Bytes per Write when homid's controller rewrites the image. */
const WRITE_CHUNK = 128 * KiB;
const IO_TIMEOUT_MS = 20_000;
const DEVICE = 'nvme';
/** uid/gid of a client that may not hold raw queues. */
const NOBODY = { pid: process.pid, uid: 65534, gid: 65534 };

const spec = expectedNvme()[0]!;
const kctrl = await waitFor(`controller ${spec.serial}`, () => controllerBySerial(spec.serial));
const BDF = kctrl.bdf;

/** The namespace's block device as the kernel has it now (names may change across rebinds). */
async function blockDevice(): Promise<string> {
  const c = await waitFor(`kernel controller ${spec.serial}`, () => controllerBySerial(spec.serial));
  await waitFor(`${c.name} live`, () => sys(`/sys/class/nvme/${c.name}/state`) === 'live');
  const n = await waitFor('namespace 1 block device', () => {
    const d = namespacesOf(c).get(1);
    return d && fs.existsSync(`/dev/${d}`) ? d : undefined;
  });
  return `/dev/${n}`;
}

function run(cmd: string, args: string[], input?: Buffer): Buffer {
  try {
    return execFileSync(cmd, args, { input, maxBuffer: 64 * MiB, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${err.stderr?.toString() ?? ''}`);
  }
}

/** `bytes` bytes at byte `offset` of the namespace, read by the kernel (O_DIRECT). */
async function kernelRead(offset: number, bytes: number): Promise<Buffer> {
  assert.equal(offset % FS_BLOCK, 0);
  return run('dd', [`if=${await blockDevice()}`, `bs=${FS_BLOCK}`, `skip=${offset / FS_BLOCK}`, `count=${Math.ceil(bytes / FS_BLOCK)}`, 'iflag=direct', 'status=none']).subarray(0, bytes);
}

/** Write `data` at byte 0 of the namespace through the kernel (O_DIRECT, flushed). */
async function kernelWrite(data: Buffer): Promise<void> {
  run('dd', [`of=${await blockDevice()}`, `bs=${MiB}`, 'iflag=fullblock', 'oflag=direct', 'conv=fsync,notrunc', 'status=none'], data);
}

// ------------------------------------------------------------------------------------------ the image

const work = fs.mkdtempSync('/tmp/homi-mediated-vm-');
const tree = join(work, 'tree');
const image = join(work, 'fs.ext4');
const files: Record<string, Buffer> = {
  'a.bin': randomBytes(40_000),
  'b.bin': randomBytes(20_000),
  'secret.bin': randomBytes(12_288),
  'dir/c.bin': randomBytes(9_000),
};
let imageBytes: Buffer = Buffer.alloc(0);
/** Decoded from the image FILE (an independent path from homid's device reads). */
const fileMaps = new Map<string, FileMap>();

function mkImage(img: string, src: string): Buffer {
  // no journal: a smaller image to write, nothing for the kernel to replay
  mkExt4(img, src, IMAGE_MIB, ['-O', '^has_journal']);
  return fs.readFileSync(img);
}

function mapsOf(img: string): Map<string, FileMap> {
  const im = openImage(img, { fs: 'ext4' });
  try {
    return new Map(Object.keys(files).map((rel) => [rel, im.mapPath('/' + rel)]));
  } finally {
    im.close();
  }
}

before(async () => {
  let t = Date.now();
  fs.mkdirSync(join(tree, 'dir'), { recursive: true });
  for (const [rel, data] of Object.entries(files)) fs.writeFileSync(join(tree, rel), data);
  imageBytes = mkImage(image, tree);
  for (const [k, v] of mapsOf(image)) fileMaps.set(k, v);
  const mkfsMs = Date.now() - t;
  t = Date.now();
  await kernelWrite(imageBytes);
  console.log(`# ${MODE}: mkfs.ext4 -d ${mkfsMs} ms, image (${imageBytes.length / MiB} MiB) written through the kernel in ${Date.now() - t} ms`);
});

after(async () => {
  // other guest files expect a zeroed namespace
  try {
    if (pciDriver(BDF) !== 'nvme') await rebind(BDF, null);
    await kernelWrite(Buffer.alloc(IMAGE_MIB * MiB));
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

// ------------------------------------------------------------------------------------------ homid

/** The controller is back on nvme (no override), live, with its namespace block device. */
async function assertRestored(): Promise<void> {
  assert.equal(pciDriver(BDF), 'nvme', `${BDF} is not back on nvme`);
  assert.equal(sys(`/sys/bus/pci/devices/${BDF}/driver_override`), '(null)');
  await blockDevice();
}

/**
 * homid's configuration, as config.ts would produce it from
 *   [[device]] name = "nvme", uri = "pci:<BDF>?mode=<MODE>", extents = "decoder:ext4", extent_root = <tree>,
 *   io_queues = 4; [class.default] queue_pairs = 4, per_client = 4, max_depth = 64, write = true
 * built directly: loading the TOML and zod validators costs seconds under TCG.
 */
const CONFIG: HomidConfig = {
  socket: join(work, 'homid.sock'),
  socketMode: 0o600,
  logLevel: 'info',
  devices: [{ name: DEVICE, uri: `pci:${BDF}?mode=${MODE}`, extents: 'decoder:ext4', extentRoot: tree, ioQueues: 4 }],
  sriov: [],
  classes: new Map([['default', { name: 'default', queuePairs: 4, perClient: 4, gpuQueues: 0, vfs: 0, maxDepth: 64, users: [], groups: [], write: true }]]),
  raw: { users: [0], groups: [] },
  limits: { fileGrantsPerClient: 4096, fileGrantsPerUid: 16384 }, // config.ts's defaults (importing it would load zod)
};

function logger(lines: string[]): HomidLogger {
  const rec =
    (lvl: string) =>
    (o: object, m: string): void =>
      void lines.push(`${lvl} ${m} ${JSON.stringify(o)}`);
  return { debug: () => undefined, info: rec('info'), warn: rec('warn'), error: rec('error') };
}

/**
 * Start homid on the controller (decoder:ext4 over `tree`), run fn, stop homid; in every case the controller
 * goes back to nvme afterwards (rebound here if homid could not give it back), and that is checked.
 */
async function withHomid<T>(fn: (h: Homid) => Promise<T>, opts: { serve?: boolean } = {}): Promise<T> {
  const log: string[] = [];
  let h: Homid | undefined;
  let srv: HomidServer | undefined;
  let failed = false;
  const t0 = Date.now();
  try {
    if (opts.serve) {
      // homid on its socket, for client processes
      srv = await startHomidServer(CONFIG, { logger: logger(log) });
      h = srv.homid;
    } else h = await Homid.start(CONFIG, { logger: logger(log) });
    const d = h.listDevices()[0]!;
    assert.equal(d.state, 'live', `homid could not bring up ${BDF}: ${d.error}\n${log.join('\n')}`);
    assert.equal(pciDriver(BDF), USER_DRIVER);
    assert.equal(controllerBySerial(spec.serial), undefined, 'the kernel still has the controller');
    assert.ok(h.registry.live(DEVICE).metadata, 'no metadata reader on the pci device');
    console.log(`# ${MODE}: homid up on ${BDF} in ${Date.now() - t0} ms`);
    return await fn(h);
  } catch (e) {
    failed = true;
    if (log.length > 0) console.log(`# homid log:\n# ${log.slice(-30).join('\n# ')}`);
    throw e;
  } finally {
    const problems: string[] = [];
    if (srv) await srv.close().catch((e: unknown) => problems.push(`homid server close: ${(e as Error).message}`));
    else if (h) await h.stop().catch((e: unknown) => problems.push(`homid stop: ${(e as Error).message}`));
    if (pciDriver(BDF) !== 'nvme') {
      problems.push(`${BDF} was left on ${pciDriver(BDF)}`);
      await rebind(BDF, null).catch((e: unknown) => problems.push(`rebind: ${(e as Error).message}`));
    }
    try {
      await assertRestored();
    } catch (e) {
      problems.push((e as Error).message);
    }
    // Only when the body itself did not throw (failed), so no error of the body is swallowed.
    // eslint-disable-next-line no-unsafe-finally
    if (problems.length > 0 && !failed) throw new Error(problems.join('; '));
  }
}

/** The controller's SMART / Health counters of commands it executed (read through homid's admin queue). */
async function hostCommands(c: Controller): Promise<{ reads: number; writes: number }> {
  const s = decodeSmartLog(await c.getLogPage(LogPageId.SmartHealth, SMART_LOG_SIZE));
  return { reads: s.hostReadCommands, writes: s.hostWriteCommands };
}

/** Pass `rel` (under the tree) to homid as an open descriptor; returns the grant. */
async function grantFile(h: Homid, s: ClientSession, rel: string, flags: 'r' | 'r+' = 'r') {
  const fd = fs.openSync(join(tree, rel), flags);
  try {
    return await h.resolveExtents(s, DEVICE, fd);
  } finally {
    fs.closeSync(fd);
  }
}

type Op = [opcode: number, slba: number, nlb: number, dataOffset: number];

/** Submit `ops` on a mediated queue and wait for all of them; returns their statuses. */
async function submit(mq: MediatedQueuePair, ops: Op[]): Promise<number[]> {
  const st = new Array<number>(ops.length).fill(-1);
  ops.forEach(([op, slba, nlb, off], i) => assert.ok(mq.submitIo(op, 1, slba, nlb, off, 0, i) >= 0, `mediated queue full at op ${i}`));
  mq.ring();
  const t0 = Date.now();
  let done = 0;
  while (done < ops.length) {
    done += mq.poll((tag, s) => void (st[tag] = s));
    if (Date.now() - t0 > IO_TIMEOUT_MS) assert.fail(`mediated I/O did not complete within ${IO_TIMEOUT_MS} ms (${done}/${ops.length})`);
    await new Promise((r) => setImmediate(r));
  }
  return st;
}

/** Reads covering a whole map, into the data buffer from offset 0 (file order). */
function readOps(map: FileMap, lbs: number): Op[] {
  const ops: Op[] = [];
  for (const r of toLbaRanges(map, lbs)) ops.push([NvmOpcode.Read, r.lba, r.count, r.logical]);
  return ops;
}

/** A mediated lease and the client's view of it; `forwarded()` counts what homid submitted to its hardware queue. */
async function mediated(h: Homid, s: ClientSession, write: boolean): Promise<{ mq: MediatedQueuePair; forwarded: () => number }> {
  const [lease] = await h.openQueuePairs(s, { device: DEVICE, depth: DEPTH, mode: 'mediated', write, dataBytes: DATA_BYTES });
  const l = lease!;
  // pci: transports export memory, so completions come straight from the hardware CQ (direct mode)
  assert.ok(l.hwCq !== null, 'a PCIe mediated lease completes directly');
  const stats = l.mediated!.stats;
  return { mq: new MediatedQueuePair(l.ring!.bytes, l.data!.bytes, l.id, l.hwCq.bytes), forwarded: () => stats.forwarded };
}

const lbaSize = (h: Homid): number => h.registry.live(DEVICE).controller.namespace(1).blockSize;

// ------------------------------------------------------------------------------------------ tests

test(`${MODE}: reads inside a granted file return its bytes; other LBAs, writes without a grant and other opcodes are denied and never reach the device`, async () => {
  await withHomid(async (h) => {
    const c = h.registry.live(DEVICE).controller;
    const lbs = lbaSize(h);
    const s = h.connect(NOBODY);
    const { grant, region } = await grantFile(h, s, 'a.bin');
    // homid decoded the map from the device: it equals the decode of the image file
    assert.deepEqual(grant.entry.map, fileMaps.get('a.bin'));
    assert.equal(readExtentTable(region.bytes).size, files['a.bin']!.length);
    const { mq, forwarded } = await mediated(h, s, false);
    const ops = readOps(grant.entry.map, lbs);
    const before = await hostCommands(c);
    const st = await submit(mq, ops);
    assert.deepEqual(
      st,
      ops.map(() => 0),
    );
    assert.ok(Buffer.from(mq.data.subarray(0, files['a.bin']!.length)).equals(files['a.bin']!), "the mediated read is not the file's bytes");
    const mid = await hostCommands(c);
    assert.equal(mid.reads - before.reads, ops.length, 'the device executed another number of reads than were granted');

    const a = toLbaRanges(grant.entry.map, lbs)[0]!;
    const secret = toLbaRanges(fileMaps.get('secret.bin')!, lbs)[0]!;
    const sent = forwarded();
    assert.equal(sent, ops.length);
    const denied = await submit(mq, [
      [NvmOpcode.Read, secret.lba, 1, 0], // another file's block
      [NvmOpcode.Read, 0, 1, 0], // the superblock area: no file's
      [NvmOpcode.Read, a.lba, a.count + FS_BLOCK / lbs, 0], // runs past the file
      [NvmOpcode.Write, a.lba, 1, 0], // the client's own file, but no write grant
      [NvmOpcode.DatasetManagement, a.lba, 1, 0], // not a read or write
      [NvmOpcode.WriteZeroes, a.lba, 1, 0],
    ]);
    assert.deepEqual(
      denied,
      denied.map(() => STATUS_ACCESS_DENIED),
    );
    const afterDenied = await hostCommands(c);
    assert.deepEqual(afterDenied, mid, 'a denied command reached the controller (SMART host read/write commands moved)');
    assert.equal(forwarded(), sent, 'homid forwarded a denied command');
    assert.ok(h.denied.length >= 6);

    // a forged grant: a path string, a descriptor number homid does not hold, a file outside the extent root
    const refusal = async (f: () => unknown): Promise<string> => {
      try {
        await f();
      } catch (e) {
        assert.ok(e instanceof HomidError, String(e));
        return e.code;
      }
      return 'granted';
    };
    assert.equal(await refusal(() => h.resolveExtents(s, DEVICE, join(tree, 'secret.bin'))), 'needs-fd');
    assert.equal(await refusal(() => h.resolveExtents(s, DEVICE, 99_999)), 'needs-fd');
    const outside = join(work, 'outside.bin');
    fs.writeFileSync(outside, 'x');
    const ofd = fs.openSync(outside, 'r');
    try {
      assert.equal(await refusal(() => h.resolveExtents(s, DEVICE, ofd)), 'outside-root');
    } finally {
      fs.closeSync(ofd);
    }
    // still denied after the refusals
    assert.deepEqual(await submit(mq, [[NvmOpcode.Read, secret.lba, 1, 0]]), [STATUS_ACCESS_DENIED]);
    assert.deepEqual(await hostCommands(c), mid);
    await h.disconnect(s);
  });
  // from outside: the kernel reads exactly the image that was written (nothing denied changed a byte)
  assert.ok((await kernelRead(0, imageBytes.length)).equals(imageBytes), 'the namespace no longer holds the image');
});

test(`${MODE}: a write with a write grant reaches the device and reads back (through homid, the kernel and debugfs)`, async () => {
  const w = randomBytes(FS_BLOCK);
  const b = fileMaps.get('b.bin')!;
  const target = b.extents[0]!.physical;
  await withHomid(async (h) => {
    const c = h.registry.live(DEVICE).controller;
    const lbs = lbaSize(h);
    let s = h.connect(NOBODY);
    if (MODE === 'uio') {
      // uio's hugetlb data memory could be released under the device by a client that punches a hole in it:
      // homid grants mediated write leases there to root only
      await assert.rejects(mediated(h, s, true), (e: Error) => e instanceof HomidError && e.code === 'write-denied');
      await h.disconnect(s);
      s = h.connect({ pid: process.pid, uid: 0, gid: 0 });
    }
    const { grant } = await grantFile(h, s, 'b.bin', 'r+');
    assert.equal(grant.writable, true);
    assert.equal(grant.entry.map.extents[0]!.physical, target);
    const { mq } = await mediated(h, s, true);
    const before = await hostCommands(c);
    mq.data.set(w, 0);
    assert.deepEqual(
      await submit(mq, [
        [NvmOpcode.Write, target / lbs, FS_BLOCK / lbs, 0],
        [NvmOpcode.Flush, 0, 1, 0],
      ]),
      [0, 0],
    );
    assert.equal((await hostCommands(c)).writes - before.writes, 1, 'the device did not execute the write');
    mq.data.fill(0, 0, FS_BLOCK);
    assert.deepEqual(await submit(mq, [[NvmOpcode.Read, target / lbs, FS_BLOCK / lbs, 0]]), [0]);
    assert.ok(Buffer.from(mq.data.subarray(0, FS_BLOCK)).equals(w), 'the block read back through homid differs');
    // a write outside the file is still denied with the write grant
    const secret = fileMaps.get('secret.bin')!.extents[0]!.physical;
    assert.deepEqual(await submit(mq, [[NvmOpcode.Write, secret / lbs, 1, 0]]), [STATUS_ACCESS_DENIED]);
    await h.disconnect(s);
  });
  assert.ok((await kernelRead(target, FS_BLOCK)).equals(w), 'the kernel reads another block than homid wrote');
  const want = Buffer.concat([w, files['b.bin']!.subarray(FS_BLOCK)]);
  if (haveTool('debugfs')) {
    const got = run('debugfs', ['-R', 'cat /b.bin', await blockDevice()]);
    assert.ok(got.equals(want), 'ext4 (debugfs) reads another b.bin than written');
  }
  // the secret file is untouched
  const sec = fileMaps.get('secret.bin')!.extents[0]!;
  assert.ok((await kernelRead(sec.physical, files['secret.bin']!.length)).equals(files['secret.bin']!));
});

test(`${MODE}: a file rewritten while cached is re-resolved from the device and its reader sees the new content`, async () => {
  // the next image: a.bin has new content and another size; everything else as before
  const tree2 = join(work, 'tree2');
  fs.cpSync(tree, tree2, { recursive: true });
  const next = randomBytes(70_000);
  fs.writeFileSync(join(tree2, 'a.bin'), next);
  const img2 = join(work, 'next.ext4');
  const nextImage = mkImage(img2, tree2);
  const nextMap = mapsOf(img2).get('a.bin')!;
  await withHomid(async (h) => {
    const d = h.registry.live(DEVICE);
    const lbs = lbaSize(h);
    const s = h.connect(NOBODY);
    const { grant, region } = await grantFile(h, s, 'a.bin');
    const g0 = readExtentTable(region.bytes);
    assert.equal(g0.size, files['a.bin']!.length);
    const { mq } = await mediated(h, s, false);
    // homid rewrites the image on its device (its own queue pair), only the blocks that differ
    const qp = await d.controller.createQueuePair({ entries: DEPTH });
    const buf = d.transport.dma.alloc(WRITE_CHUNK, d.transport.dma.pageSize);
    const dp = dataPointer(d.transport.dma, buf);
    let written = 0;
    try {
      for (let off = 0; off < nextImage.length; off += WRITE_CHUNK) {
        const part = nextImage.subarray(off, off + WRITE_CHUNK);
        if (part.equals(imageBytes.subarray(off, off + WRITE_CHUNK))) continue;
        buf.bytes.set(part);
        const lba = off / lbs;
        await qp.exec({ opcode: NvmOpcode.Write, nsid: 1, cdw10: lba >>> 0, cdw11: 0, cdw12: part.length / lbs - 1, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
        written += part.length;
      }
      await qp.exec({ opcode: NvmOpcode.Flush, nsid: 1, cid: 0 });
    } finally {
      dp.release();
      d.transport.dma.free(buf);
      await d.controller.deleteQueuePair(qp);
    }
    // the tree file changes: the watch fires and homid re-resolves a.bin from the device
    fs.writeFileSync(join(tree, 'a.bin'), next);
    const g1 = await waitExtentTable(region.bytes, { notGeneration: g0.generation, timeoutMs: IO_TIMEOUT_MS });
    assert.ok(g1.generation > g0.generation && g1.generation % 2 === 0, `generation ${g0.generation} -> ${g1.generation}`);
    assert.equal(g1.valid, true, String(h.status().extents[0]?.error));
    assert.equal(g1.size, next.length);
    assert.deepEqual(grant.entry.map, nextMap);
    const ops = readOps(grant.entry.map, lbs);
    assert.deepEqual(
      await submit(mq, ops),
      ops.map(() => 0),
    );
    assert.ok(Buffer.from(mq.data.subarray(0, next.length)).equals(next), 'the reader does not see the new content');
    console.log(`# ${MODE}: rewrote ${written / KiB} KiB of the image; generation ${g0.generation} -> ${g1.generation}`);
    await h.disconnect(s);
  });
  imageBytes = nextImage;
  files['a.bin'] = next;
  assert.ok((await kernelRead(0, nextImage.length)).equals(nextImage), 'the kernel reads another image than homid wrote');
});

test(`${MODE}: a mediated client in another process reads a granted file, its completions straight from the hardware CQ`, async () => {
  const client = join(import.meta.dirname, 'homid-mediated-client.js');
  await withHomid(
    async (h) => {
      const t0 = Date.now();
      const p = spawnNode([client, CONFIG.socket, DEVICE, join(tree, 'a.bin')], { HOMI_MED_CHILD: '1' });
      const r = await nextJson(p, 120_000);
      await p.exited;
      assert.equal(r.ok, true, String(r.error));
      assert.deepEqual(Buffer.from(r.bytes as string, 'base64'), files['a.bin'], 'the bytes the client read are the file');
      assert.equal(r.hwCq, true, 'the lease carried the hardware CQ');
      assert.ok((r.direct as number) > 0, `completions reaped from the hardware CQ: ${String(r.direct)}`);
      assert.equal(r.relayed, 0, 'nothing was denied, so nothing came through the ring CQ');
      await waitFor('the client session gone and its queue reclaimed', () => (h.sessions.size === 0 ? true : undefined));
      console.log(`# ${MODE}: mediated client process: ${files['a.bin']!.length} bytes in ${Date.now() - t0} ms (process start included)`);
    },
    { serve: true },
  );
});
