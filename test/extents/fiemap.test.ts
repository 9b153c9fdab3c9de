import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fiemapFd, fiemapFlags, fiemapPath, FIEMAP_EXTENT } from '../../src/extents/fiemap.js';
import { FiemapError, holes, mappedBytes, toLbaRanges } from '../../src/extents/types.js';
import { fiemapTmpDir, Rng, rmTree } from './fixtures.js';

describe("FIEMAP on the machine's own file system", () => {
  // The tests of real extents run on a file system that answers FIEMAP (tmpfs does not: fiemapTmpDir looks for
  // one); where none does, they are skipped, saying so. The error of a file system without FIEMAP is tested below.
  let dir = '';
  let needsFiemap: string | false = false;
  before(() => {
    const fm = fiemapTmpDir('homi-fiemap-');
    dir = fm.dir ?? '';
    needsFiemap = fm.skip;
  });
  after(() => {
    if (dir) rmTree(dir);
  });

  /** Skip (visibly, with the reason) when no file system here answers FIEMAP. */
  const noFiemap = (t: { skip: (why: string) => void }): boolean => {
    if (needsFiemap) t.skip(needsFiemap);
    return needsFiemap !== false;
  };

  test('a written file is covered by its extents; the final extent is flagged last', (t) => {
    if (noFiemap(t)) return;
    const p = path.join(dir, 'data.bin');
    fs.writeFileSync(p, new Rng(5).bytes(3 * 1024 * 1024 + 17));
    const m = fiemapPath(p, { sync: true });
    assert.equal(m.size, 3 * 1024 * 1024 + 17);
    assert.ok(m.extents.length >= 1);
    assert.ok(mappedBytes(m) >= m.size);
    assert.ok(m.extents.at(-1)!.flags.includes('last'));
    assert.equal(holes(m).length, 0);
    const lbas = toLbaRanges(m, 512);
    assert.ok(lbas.reduce((n, r) => n + r.count, 0) * 512 >= m.size);
  });

  test('many extents: the continuation loop with one extent per call gives the same map', (t) => {
    if (noFiemap(t)) return;
    const p = path.join(dir, 'holes.bin');
    const fd = fs.openSync(p, 'w');
    const rng = new Rng(9);
    for (let i = 0; i < 40; i++) fs.writeSync(fd, rng.bytes(4096), 0, 4096, i * 65536);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
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

  test('an empty file has no extents', (t) => {
    if (noFiemap(t)) return;
    const p = path.join(dir, 'empty');
    fs.writeFileSync(p, '');
    assert.deepEqual(fiemapPath(p).extents, []);
  });

  test('a file system without FIEMAP gives one clear error', () => {
    assert.ok(fs.existsSync('/proc/self/status'), 'procfs (no FIEMAP) is mounted at /proc');
    assert.throws(
      () => fiemapPath('/proc/self/status'),
      (e) => e instanceof FiemapError && e.unsupported && /does not support FIEMAP/.test(e.message),
    );
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
