import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ext4Image } from '../../src/extents/ext4/index.js';
import { BufferBlockSource, FileBlockSource } from '../../src/extents/source.js';
import { CorruptImageError, holes, NotThisFileSystemError, PathLookupError, toLbaRanges } from '../../src/extents/types.js';
import { buildTree, haveTool, mkExt4, Rng, rmTree, tmpDir, verifyAgainstSource, type SourceEntry } from './fixtures.js';

const FRAG_CHUNKS = 1500;

/** The shared tree plus a file of 1500 data blocks separated by holes (an extent tree of depth 2). */
function buildExt4Tree(src: string): SourceEntry[] {
  const entries = buildTree(src, { bigDir: 3000, large: 6 * 1024 * 1024 });
  const rng = new Rng(99);
  const fd = fs.openSync(path.join(src, 'frag.bin'), 'w');
  for (let i = 0; i < FRAG_CHUNKS; i++) fs.writeSync(fd, rng.bytes(4096), 0, 4096, i * 8192);
  fs.closeSync(fd);
  entries.push({ rel: '/frag.bin', kind: 'file' });
  return entries;
}

const variants: { name: string; extra: string[]; htree: boolean; blockSize?: number; inline?: boolean }[] = [
  { name: 'default features (extents, 64bit, metadata_csum, flex_bg) + htree dirs', extra: [], htree: true },
  { name: 'inline_data', extra: ['-O', 'inline_data'], htree: false, inline: true },
  { name: 'no metadata_csum, no 64bit (32-byte group descriptors), linear dirs', extra: ['-O', '^metadata_csum,^64bit'], htree: false },
  { name: '1 KiB blocks, meta_bg', extra: ['-O', 'meta_bg,^resize_inode'], htree: true, blockSize: 1024 },
];

describe('ext4 decoder on real mkfs.ext4 -d images', { skip: !haveTool('mkfs.ext4') && 'mkfs.ext4 (e2fsprogs) not installed' }, () => {
  let work = '';
  let src = '';
  let entries: SourceEntry[] = [];
  before(() => {
    work = tmpDir('homi-ext4-');
    src = path.join(work, 'src');
    fs.mkdirSync(src);
    entries = buildExt4Tree(src);
  });
  after(() => rmTree(work));

  for (const v of variants) {
    test(`${v.name}: every file, directory and symlink matches the source`, () => {
      const img = path.join(work, 'fs.ext4');
      mkExt4(img, src, 96, v.extra, { htree: v.htree, blockSize: v.blockSize ?? 4096 });
      const x = new Ext4Image(new FileBlockSource(img));
      try {
        assert.equal(x.sb.blockSize, v.blockSize ?? 4096);
        const n = verifyAgainstSource(x, src, entries, v.inline ? { lenientSize: (rel) => rel === '/sparse.bin' || rel === '/frag.bin' } : {});
        assert.ok(n > 3000);
        const big = x.readInode(x.lookup('/big'));
        assert.equal((big.flags & 0x1000) !== 0, v.htree, 'htree index flag');
        const frag = x.mapPath('/frag.bin');
        if (!v.inline) {
          // holes preserved: one extent per data block, a depth-2 tree for 4 KiB blocks
          assert.ok(frag.extents.length >= FRAG_CHUNKS, `${frag.extents.length} extents`);
          assert.equal(holes(frag).length, FRAG_CHUNKS - 1 + (frag.size > frag.extents.at(-1)!.logical + 4096 ? 1 : 0));
          const depth = x.readInode(frag.ino).raw.u16le(40 + 6);
          assert.ok(depth >= 2, `extent tree depth ${depth}`);
          const sp = x.mapPath('/sparse.bin');
          assert.ok(sp.extents[0]!.logical >= 1024 * 1024, 'leading hole preserved');
          assert.ok(holes(sp).length >= 2);
        }
        if (v.inline) {
          const small = x.mapPath('/small.txt');
          assert.ok(small.extents.every((e) => e.flags.includes('inline')));
          assert.equal(toLbaRanges(small, 512).length, 0, 'inline data is not block addressable');
          assert.ok(x.readInode(x.lookup('/few')).flags & 0x10000000, 'inline directory');
        }
        const link = x.mapPath('/link-short', { follow: false });
        assert.deepEqual(link.extents[0]!.flags, ['inline', 'last'], 'fast symlink');
        assert.equal(x.lookup('/link-dir/level2/../level2'), x.lookup('/deep/level0/level1/level2'));
      } finally {
        x.close();
      }
    });
  }

  test('lookups, errors and corruption detection', () => {
    const img = path.join(work, 'fs2.ext4');
    mkExt4(img, src, 96, [], { htree: true });
    const buf = new Uint8Array(fs.readFileSync(img));
    const x = new Ext4Image(new BufferBlockSource(buf));
    assert.throws(
      () => x.lookup('/nope/x'),
      (e) => e instanceof PathLookupError && e.problem === 'not found',
    );
    assert.throws(
      () => x.lookup('/tiny/x'),
      (e) => e instanceof PathLookupError && e.problem === 'not a directory',
    );
    assert.throws(() => x.mapInode(x.sb.inodesCount + 1), CorruptImageError);
    // superblock checksum
    const sb = buf.slice();
    sb[1024 + 8]! ^= 1;
    assert.throws(
      () => new Ext4Image(new BufferBlockSource(sb)),
      (e) => e instanceof CorruptImageError && e.structure === 'ext4 superblock',
    );
    const nomagic = buf.slice();
    nomagic[1024 + 56] = 0;
    assert.throws(() => new Ext4Image(new BufferBlockSource(nomagic)), NotThisFileSystemError);
    // an extent block of frag.bin
    const frag = x.readInode(x.lookup('/frag.bin'));
    const child = frag.raw.u32le(40 + 12 + 4);
    const eb = buf.slice();
    eb[child * 4096 + 30]! ^= 0x10;
    assert.throws(
      () => new Ext4Image(new BufferBlockSource(eb)).mapPath('/frag.bin'),
      (e) => e instanceof CorruptImageError && e.structure === 'ext4 extent block',
    );
    const eb2 = buf.slice();
    eb2[child * 4096]! ^= 0xff; // magic
    assert.throws(
      () => new Ext4Image(new BufferBlockSource(eb2), { verifyCsum: false }).mapPath('/frag.bin'),
      (e) => e instanceof CorruptImageError && e.structure === 'ext4 extent block' && /magic/.test(e.message),
    );
    // the htree root of /big: dx checksum
    const big = x.mapPath('/big');
    const root = big.extents[0]!.physical;
    const hb = buf.slice();
    hb[root + 40]! ^= 1;
    assert.throws(
      () => new Ext4Image(new BufferBlockSource(hb)).readDir(big.ino),
      (e) => e instanceof CorruptImageError && e.structure === 'ext4 htree node',
    );
    // an inode
    const ib = buf.slice();
    ib[frag.offset + 4]! ^= 1;
    assert.throws(
      () => new Ext4Image(new BufferBlockSource(ib)).mapPath('/frag.bin'),
      (e) => e instanceof CorruptImageError && e.structure === 'ext4 inode',
    );
  });
});
