/**
 * The device-backed metadata source (extents/device-source.ts) on the embedded controller: ext4 and XFS images
 * written onto a memory-backed namespace through the driver core, decoded through homid's metadata queue pair,
 * must give exactly what the file-backed decoder gives on the image file (every inode, every map, every byte,
 * and the bytes the source tree holds). Then through homid: decoder devices on memory-backed emu:// resolve
 * clients' files from the device, mediated reads return the files' bytes, and a read error or a timeout on
 * the metadata queue refuses with one clear 'device-io' error.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MediatedQueuePair } from '../../src/client/mediated-queue.js';
import { Homid } from '../../src/daemon/homid.js';
import { Controller } from '../../src/driver/controller.js';
import { DeviceBlockSource, DeviceReader, METADATA_QUEUE_ENTRIES } from '../../src/extents/device-source.js';
import { openImage, openSource } from '../../src/extents/open.js';
import type { FsImage, WalkEntry } from '../../src/extents/fsimage.js';
import { toLbaRanges, type FileMap } from '../../src/extents/types.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { MediaStatus, Sct } from '../../src/nvme/status.js';
import { openEmu, type EmuTransport } from '../../src/transport/emu.js';
import { buildTree, mkExt4, mkXfs, readByExtents, rmTree } from '../extents/fixtures.js';
import { NOBODY_PEER, ROOT_PEER, config, refused, haveTool, silent, tmpDir, writeImage } from './fixtures.js';

const MiB = 1024 * 1024;
const EXT4_MIB = 48;
const XFS_MIB = 48;
const SHORT_TIMEOUT_MS = 300;

const skip = (!haveTool('mkfs.ext4') && 'no mkfs.ext4') || (!haveTool('mkfs.xfs') && 'no mkfs.xfs') || false;

/** Every inode of an image with its map, in walk order. */
function walkAll(img: FsImage): WalkEntry[] {
  return [...img.walk({ maps: true })];
}

describe('device-backed metadata source', { skip }, () => {
  let work = '';
  let tree = '';
  const images = { ext4: '', xfs: '' };
  before(() => {
    work = tmpDir('homi-devsrc-');
    tree = path.join(work, 'tree');
    fs.mkdirSync(tree);
    buildTree(tree, { bigDir: 400, large: 2 * MiB }, 99);
    images.ext4 = path.join(work, 'fs.ext4');
    images.xfs = path.join(work, 'fs.xfs');
    mkExt4(images.ext4, tree, EXT4_MIB, [], { htree: true });
    mkXfs(images.xfs, tree, XFS_MIB);
  });
  after(() => rmTree(work));

  test('ext4 and XFS decoded from a namespace through the metadata queue equal the file-backed decode', async () => {
    const ext4 = new Uint8Array(fs.readFileSync(images.ext4));
    const xfs = new Uint8Array(fs.readFileSync(images.xfs));
    const nsMiB = Math.max(ext4.length, xfs.length) / MiB;
    const t = await openEmu({
      namespaces: [
        { sizeBytes: nsMiB * MiB, lbads: 12 },
        { sizeBytes: nsMiB * MiB, lbads: 9 },
      ],
    });
    const c = await Controller.open(t, { ioQueues: 4 });
    const readers: DeviceReader[] = [];
    try {
      const qp = await c.createQueuePair({ entries: 32 });
      await writeImage(qp, t.dma, 1, c.namespace(1).blockSize, ext4);
      await writeImage(qp, t.dma, 2, c.namespace(2).blockSize, xfs);
      await c.deleteQueuePair(qp);
      for (const [nsid, kind, file] of [
        [1, 'ext4', images.ext4],
        [2, 'xfs', images.xfs],
      ] as const) {
        const reader = await DeviceReader.open(c, { nsid, label: `emu ns${nsid}` });
        readers.push(reader);
        assert.equal(reader.size, nsMiB * MiB);
        assert.equal(reader.qp.entries, METADATA_QUEUE_ENTRIES);
        const fromFile = openImage(file, { fs: kind });
        const fromDevice = openSource(new DeviceBlockSource(reader), { fs: kind });
        try {
          const t0 = performance.now();
          const want = walkAll(fromFile);
          const t1 = performance.now();
          const got = walkAll(fromDevice);
          const t2 = performance.now();
          assert.ok(want.length > 400, `only ${want.length} inodes`);
          assert.deepEqual(got, want, `${kind}: the device decode differs from the file decode`);
          let files = 0;
          for (const w of want) {
            if (w.type !== 'file') continue;
            const bytes = readByExtents(fromDevice.source, w.map!);
            assert.deepEqual(bytes, readByExtents(fromFile.source, w.map!), `${kind} ${w.path}: bytes differ`);
            assert.deepEqual(bytes, new Uint8Array(fs.readFileSync(path.join(tree, w.path))), `${kind} ${w.path}: not the source tree's bytes`);
            files++;
          }
          assert.ok(reader.stats.reads > 0 && reader.stats.errors === 0);
          console.log(`# ${kind}: ${want.length} inodes, ${files} files; walk from the file ${(t1 - t0).toFixed(0)} ms, from the device ${(t2 - t1).toFixed(0)} ms (${reader.stats.reads} reads)`);
        } finally {
          fromFile.close();
          fromDevice.close();
        }
      }
      // out of range is the extents layer's range error, never a device read
      const src = new DeviceBlockSource(readers[0]!);
      assert.throws(() => src.read(readers[0]!.size - 1, 2), /outside the image/);
    } finally {
      for (const r of readers) await r.close();
      assert.equal(c.queuePairs.length, 0, 'the metadata queue pairs are deleted');
      await c.close();
      await t.close();
    }
  });

  describe('homid: decoder devices on memory-backed emu://', () => {
    let h: Homid;
    before(async () => {
      h = await Homid.start(
        config({
          device: [
            { name: 'e4', uri: `emu://?size=${EXT4_MIB}MiB`, extents: 'decoder:ext4', extent_root: tree },
            { name: 'xf', uri: `emu://?size=${Math.max(XFS_MIB, fs.statSync(images.xfs).size / MiB)}MiB&lbads=9`, extents: 'decoder:xfs', extent_root: tree },
          ],
          class: { default: { queue_pairs: 8, per_client: 4 } },
          raw: { users: [ROOT_PEER.uid] },
        }),
        { logger: silent() },
      );
      // put each image on its device through a raw lease (homid's own queue in this process)
      const s = h.connect(ROOT_PEER);
      try {
        // before: the devices are up, but a file cannot resolve from an empty namespace
        const fd = fs.openSync(path.join(tree, 'tiny'), 'r');
        try {
          const e = await refused(() => h.resolveExtents(s, 'e4', fd), 'extent-source');
          assert.match(e.message, /not an ext4 file system/);
        } finally {
          fs.closeSync(fd);
        }
        for (const [dev, file] of [
          ['e4', images.ext4],
          ['xf', images.xfs],
        ] as const) {
          const d = h.registry.live(dev);
          assert.ok(d.metadata, `${dev}: no metadata reader`);
          assert.equal(d.imagePath, null);
          const [lease] = await h.openQueuePairs(s, { device: dev, depth: 16, mode: 'raw' });
          await writeImage(lease!.qp!, d.transport.dma, 1, d.controller.namespace(1).blockSize, new Uint8Array(fs.readFileSync(file)));
        }
      } finally {
        await h.disconnect(s);
      }
    });
    after(async () => h?.stop());

    test("a client's files resolve from the device as from the image file; mediated reads return their bytes", async () => {
      for (const [dev, file, kind] of [
        ['e4', images.ext4, 'ext4'],
        ['xf', images.xfs, 'xfs'],
      ] as const) {
        assert.equal(h.listDevices().find((d) => d.name === dev)!.queuePairsInUse, 1, 'the metadata queue pair');
        const s = h.connect(NOBODY_PEER);
        const img = openImage(file, { fs: kind });
        try {
          const bigName = fs.readdirSync(path.join(tree, 'big')).sort()[7]!;
          for (const rel of ['/medium.bin', '/odd4097', `/big/${bigName}`, '/some/entry-5']) {
            const fd = fs.openSync(path.join(tree, rel), 'r');
            let map: FileMap;
            try {
              map = (await h.resolveExtents(s, dev, fd)).grant.entry.map;
            } finally {
              fs.closeSync(fd);
            }
            assert.deepEqual(map, img.mapPath(rel), `${dev} ${rel}`);
          }
          // read medium.bin through a mediated queue, with the LBAs homid resolved from the device
          const fd = fs.openSync(path.join(tree, 'medium.bin'), 'r');
          const { grant } = await h.resolveExtents(s, dev, fd);
          fs.closeSync(fd);
          const [lease] = await h.openQueuePairs(s, { device: dev, depth: 16, mode: 'mediated' });
          const mq = new MediatedQueuePair(lease!.ring!.bytes, lease!.data!.bytes, lease!.id);
          const lbs = h.registry.live(dev).controller.namespace(1).blockSize;
          const want = new Uint8Array(fs.readFileSync(path.join(tree, 'medium.bin')));
          const statuses: number[] = [];
          let off = 0;
          const CHUNK_LBAS = 32768 / lbs;
          for (const r of toLbaRanges(grant.entry.map, lbs)) {
            for (let i = 0; i < r.count; i += CHUNK_LBAS) {
              const n = Math.min(CHUNK_LBAS, r.count - i);
              assert.ok(mq.submitIo(NvmOpcode.Read, 1, r.lba + i, n, off, 0, statuses.length) >= 0);
              statuses.push(-1);
              off += n * lbs;
            }
          }
          mq.ring();
          const t0 = Date.now();
          while (statuses.includes(-1)) {
            mq.poll((tag, st) => (statuses[tag] = st));
            if (Date.now() - t0 > 10_000) assert.fail('mediated reads did not complete');
            await new Promise((r) => setTimeout(r, 1));
          }
          assert.ok(
            statuses.every((x) => x === 0),
            `statuses ${statuses}`,
          );
          assert.deepEqual(mq.data.subarray(0, want.length), want, `${dev}: mediated read of medium.bin`);
        } finally {
          img.close();
          await h.disconnect(s);
        }
      }
    });

    test('a read error and a timeout on the metadata queue refuse with one clear device-io error; reads work again after', async () => {
      const d = h.registry.live('e4');
      const emu = d.transport as EmuTransport;
      const reader = d.metadata!;
      const s = h.connect(NOBODY_PEER);
      const p = path.join(tree, 'odd4097');
      const resolve = async (): Promise<FileMap> => {
        const fd = fs.openSync(p, 'r');
        try {
          const { grant } = await h.resolveExtents(s, 'e4', fd);
          const m = grant.entry.map;
          h.releaseFile(s, grant.id);
          return m;
        } finally {
          fs.closeSync(fd);
        }
      };
      const good = await resolve();
      try {
        emu.inject({ qid: reader.qp.qid, opcode: NvmOpcode.Read, count: Infinity, action: { kind: 'status', sct: Sct.MediaDataIntegrity, sc: MediaStatus.UnrecoveredReadError } });
        const e1 = await refused(resolve, 'device-io');
        assert.match(e1.message, /^device 'e4': metadata read of \d+ bytes at byte \d+ of 'e4' namespace 1 \(queue \d+\) failed: Unrecovered Read Error/);
        assert.doesNotMatch(e1.message, /\n/);
        emu.clearFaults();
        emu.inject({ qid: reader.qp.qid, opcode: NvmOpcode.Read, count: 1, action: { kind: 'drop' } });
        reader.timeoutMs = SHORT_TIMEOUT_MS;
        const t0 = performance.now();
        const e2 = await refused(resolve, 'device-io');
        const took = performance.now() - t0;
        assert.match(e2.message, new RegExp(`^device 'e4': metadata read of \\d+ bytes at byte \\d+ of 'e4' namespace 1 \\(queue \\d+\\) timed out after ${SHORT_TIMEOUT_MS} ms$`));
        assert.ok(took >= SHORT_TIMEOUT_MS && took < SHORT_TIMEOUT_MS + 2000, `the timeout took ${took} ms`);
        assert.equal(reader.stats.timeouts, 1);
        assert.ok(h.counters.refusals >= 2);
        emu.clearFaults();
        assert.deepEqual(await resolve(), good, 'the map after the errors');
      } finally {
        emu.clearFaults();
        await h.disconnect(s);
      }
    });

    test('the source reads the device afresh on every resolve: an image rewritten on the device is seen', async () => {
      // a second tree whose medium.bin differs in size; its image goes onto the device through a raw lease
      const tree2 = path.join(work, 'tree2');
      fs.cpSync(tree, tree2, { recursive: true });
      const next = new Uint8Array(123_457).fill(0x6b);
      fs.writeFileSync(path.join(tree2, 'medium.bin'), next);
      const img2 = path.join(work, 'next.ext4');
      mkExt4(img2, tree2, EXT4_MIB);
      const root = h.connect(ROOT_PEER);
      const s = h.connect(NOBODY_PEER);
      try {
        const fd = fs.openSync(path.join(tree, 'medium.bin'), 'r');
        const { grant } = await h.resolveExtents(s, 'e4', fd);
        fs.closeSync(fd);
        assert.equal(grant.entry.map.size, 300_000);
        const d = h.registry.live('e4');
        const [lease] = await h.openQueuePairs(root, { device: 'e4', depth: 16, mode: 'raw' });
        await writeImage(lease!.qp!, d.transport.dma, 1, d.controller.namespace(1).blockSize, new Uint8Array(fs.readFileSync(img2)));
        await h.extents.refresh(grant.entry, d);
        assert.equal(grant.entry.lastError, null);
        assert.equal(grant.entry.map.size, next.length);
        const want = openImage(img2, { fs: 'ext4' });
        try {
          assert.deepEqual(grant.entry.map, want.mapPath('/medium.bin'));
        } finally {
          want.close();
        }
      } finally {
        await h.disconnect(s);
        await h.disconnect(root);
        rmTree(tree2);
      }
    });
  });
});
