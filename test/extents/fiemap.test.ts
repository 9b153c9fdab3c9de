import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fiemapFd, fiemapFlags, fiemapPath, FIEMAP_EXTENT } from '../../src/extents/fiemap.js';
import { FiemapError, holes, mappedBytes, toLbaRanges } from '../../src/extents/types.js';
import { Rng, rmTree, tmpDir } from './fixtures.js';

describe('FIEMAP on the machine\'s own file system', () => {
  let dir = '';
  before(() => {
    dir = tmpDir('homi-fiemap-');
  });
  after(() => rmTree(dir));

  const supported = (f: () => void): void => {
    try {
      f();
    } catch (e) {
      // a file system without FIEMAP (tmpfs, some overlays) must give the one clear error
      assert.ok(e instanceof FiemapError && e.unsupported, String(e));
      assert.match(e.message, /file system does not support FIEMAP/);
    }
  };

  test('a written file is covered by its extents; the final extent is flagged last', () => {
    const p = path.join(dir, 'data.bin');
    fs.writeFileSync(p, new Rng(5).bytes(3 * 1024 * 1024 + 17));
    supported(() => {
      const m = fiemapPath(p, { sync: true });
      assert.equal(m.size, 3 * 1024 * 1024 + 17);
      assert.ok(m.extents.length >= 1);
      assert.ok(mappedBytes(m) >= m.size);
      assert.ok(m.extents.at(-1)!.flags.includes('last'));
      assert.equal(holes(m).length, 0);
      const lbas = toLbaRanges(m, 512);
      assert.ok(lbas.reduce((n, r) => n + r.count, 0) * 512 >= m.size);
    });
  });

  test('many extents: the continuation loop with one extent per call gives the same map', () => {
    const p = path.join(dir, 'holes.bin');
    const fd = fs.openSync(p, 'w');
    const rng = new Rng(9);
    for (let i = 0; i < 40; i++) fs.writeSync(fd, rng.bytes(4096), 0, 4096, i * 65536);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    supported(() => {
      const all = fiemapPath(p, { sync: true });
      const one = fiemapPath(p, { batch: 1 });
      assert.deepEqual(one.extents, all.extents);
      const rfd = fs.openSync(p, 'r');
      try {
        assert.deepEqual(fiemapFd(rfd, { batch: 3 }).extents, all.extents);
      } finally {
        fs.closeSync(rfd);
      }
      assert.ok(all.extents.at(-1)!.flags.includes('last'));
      let end = 0;
      for (const e of all.extents) {
        assert.ok(e.logical >= end);
        end = e.logical + e.length;
      }
      assert.ok(end >= all.size);
    });
  });

  test('an empty file has no extents', () => {
    const p = path.join(dir, 'empty');
    fs.writeFileSync(p, '');
    supported(() => assert.deepEqual(fiemapPath(p).extents, []));
  });

  test('a file system without FIEMAP gives one clear error', () => {
    if (!fs.existsSync('/proc/self/status')) return;
    assert.throws(() => fiemapPath('/proc/self/status'), (e) => e instanceof FiemapError && e.unsupported && /does not support FIEMAP/.test(e.message));
  });

  test('flag mapping', () => {
    assert.deepEqual(fiemapFlags(FIEMAP_EXTENT.LAST | FIEMAP_EXTENT.UNWRITTEN), ['unwritten', 'last']);
    assert.deepEqual(fiemapFlags(FIEMAP_EXTENT.SHARED), ['shared']);
    assert.deepEqual(fiemapFlags(FIEMAP_EXTENT.DATA_INLINE | FIEMAP_EXTENT.NOT_ALIGNED), ['inline']);
    assert.deepEqual(fiemapFlags(FIEMAP_EXTENT.DELALLOC | FIEMAP_EXTENT.UNKNOWN), ['delalloc', 'unknown']);
    assert.deepEqual(fiemapFlags(FIEMAP_EXTENT.ENCODED), ['encoded']);
    assert.deepEqual(fiemapFlags(FIEMAP_EXTENT.DATA_ENCRYPTED), ['encoded']);
    assert.deepEqual(fiemapFlags(FIEMAP_EXTENT.MERGED), []);
  });
});
