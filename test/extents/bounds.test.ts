/**
 * Geometry checks: hand-corrupted but self-consistent images (checksums recomputed after the edit) whose
 * extents point at metadata, past the end of the device or past the logical limits must be refused with a
 * BadExtentError naming the inode, the extent and the rule; the metadata the decoders protect matches what
 * dumpe2fs and xfs_db report.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { blockBytes, RangeSet } from '../../src/extents/bounds.js';
import { EXT4_MAX_LOGICAL_BLOCKS, Ext4Image } from '../../src/extents/ext4/index.js';
import { BufferBlockSource } from '../../src/extents/source.js';
import { BadExtentError, CorruptImageError, toLbaRanges, type ExtentRule, type FileMap } from '../../src/extents/types.js';
import { encodeBmbtRec, XFS_MAX_FILEOFF, XfsImage } from '../../src/extents/xfs/index.js';
import { EXT4_I_BLOCK, ext4Entry, ext4FixInodeCsum, ext4SetIndexLeaf, ext4SetLeaf, xfsFixInodeCrc, xfsFixSbCrc } from './corrupt.js';
import { buildTree, haveTool, mkExt4, mkXfs, Rng, rmTree, tmpDir } from './fixtures.js';
import { dumpe2fsRanges, ext4Oracle, merged, violation, xfsDbGeometry, xfsOracle, type Geometry } from './geometry-oracle.js';

/** Assert that `f` throws a BadExtentError for `rule` whose message matches every pattern. */
function refused(f: () => unknown, rule: ExtentRule, ...patterns: RegExp[]): BadExtentError {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof BadExtentError, `expected a BadExtentError (${rule}), got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  assert.equal(err.rule, rule, err.message);
  assert.ok(err instanceof CorruptImageError && err.message.includes(err.structure), err.message);
  assert.ok(err.message.includes(rule), `rule named in '${err.message}'`);
  for (const p of patterns) assert.match(err.message, p);
  return err;
}

/** Every extent of every map is inside the data area and off the metadata, by the test's own geometry. */
function assertInside(geo: Geometry, maps: FileMap[]): void {
  for (const m of maps) assert.equal(violation(geo, m), null);
}

describe('geometry helpers', () => {
  test('RangeSet: binary search finds the overlapping range; adjacent is not overlapping; overlapping input merges', () => {
    const set = new RangeSet([
      { start: 100, count: 10, label: 'c' },
      { start: 0, count: 1, label: 'a' },
      { start: 10, count: 5, label: 'b' },
      { start: 12, count: 10, label: 'b2' },
      { start: 200, count: 0, label: 'empty' },
    ]);
    assert.deepEqual(set.list(), [
      { start: 0, count: 1, label: 'a' },
      { start: 10, count: 12, label: 'b and more' },
      { start: 100, count: 10, label: 'c' },
    ]);
    assert.equal(set.overlap(0, 1)?.label, 'a');
    assert.equal(set.overlap(1, 9), undefined, 'between a and b');
    assert.equal(set.overlap(5, 6)?.label, 'b and more', 'runs into b');
    assert.equal(set.overlap(21, 1)?.label, 'b and more', 'last block of the merged range');
    assert.equal(set.overlap(22, 78), undefined, 'up to c exactly');
    assert.equal(set.overlap(50, 1000)?.label, 'c', 'spans c');
    assert.equal(set.overlap(110, 2 ** 40), undefined);
    assert.equal(new RangeSet([]).overlap(0, 10), undefined);
    // many ranges: the search agrees with a linear scan
    const rng = new Rng(5);
    const ranges = Array.from({ length: 500 }, (_, i) => ({ start: i * 100 + rng.int(50), count: 1 + rng.int(40), label: `r${i}` }));
    const big = new RangeSet(ranges);
    for (let k = 0; k < 2000; k++) {
      const s = rng.int(51000);
      const n = 1 + rng.int(300);
      const linear = ranges.find((r) => s < r.start + r.count && s + n > r.start);
      assert.equal(big.overlap(s, n)?.label, linear?.label, `${s}+${n}`);
    }
  });

  test('blockBytes refuses byte values that are not exact integers; toLbaRanges refuses inexact extents', () => {
    const site = { structure: 'xfs extent', at: 640, ino: 131, what: 'extent 0' };
    assert.equal(blockBytes(2 ** 40, 4096, site), 2 ** 52);
    refused(() => blockBytes(2 ** 41, 4096, site), 'not an exact integer', /inode 131, extent 0/, /xfs extent at byte 640/);
    refused(() => blockBytes(-1, 4096, site), 'not an exact integer');
    refused(() => blockBytes(1.5, 4096, site), 'not an exact integer');
    const map = (e: { logical: number; physical: number; length: number }): FileMap => ({ path: '/f', ino: 1, size: 0, extents: [{ ...e, flags: [] }] });
    assert.deepEqual(toLbaRanges(map({ logical: 0, physical: 4096, length: 4096 }), 512), [{ lba: 8, count: 8, logical: 0, flags: [] }]);
    assert.throws(() => toLbaRanges(map({ logical: 2 ** 53, physical: 4096, length: 4096 }), 512), RangeError);
    assert.throws(() => toLbaRanges(map({ logical: 0, physical: 2 ** 53 - 4096, length: 8192 }), 512), RangeError);
    assert.throws(() => toLbaRanges(map({ logical: 0, physical: -4096, length: 4096 }), 512), RangeError);
  });

  test('BadExtentError is a CorruptImageError naming inode, extent and rule', () => {
    const e = new BadExtentError('ext4 extent', 8192, 12, 'extent 3 (logical block 0, physical block 0, 1 block)', 'overlaps metadata', 'superblock of group 0 (block 0)');
    assert.ok(e instanceof CorruptImageError);
    assert.equal(e.name, 'BadExtentError');
    assert.equal(e.message, 'corrupt ext4 extent at byte 8192: inode 12, extent 3 (logical block 0, physical block 0, 1 block): overlaps metadata: superblock of group 0 (block 0)');
    assert.equal(e.ino, 12);
    assert.equal(e.structure, 'ext4 extent');
  });
});

// ---------------------------------------------------------------------------------------------------------

const EXT4_VARIANTS: { name: string; args: string[]; mib: number }[] = [
  { name: '4 KiB blocks, 4096-block groups, flex_bg, resize_inode', args: ['-b', '4096', '-g', '4096'], mib: 96 },
  { name: '1 KiB blocks, meta_bg over 40 groups', args: ['-b', '1024', '-g', '1024', '-O', 'meta_bg,^resize_inode'], mib: 40 },
  { name: '1 KiB blocks, 32-byte descriptors, meta_bg', args: ['-b', '1024', '-g', '1024', '-O', 'meta_bg,^resize_inode,^64bit,^metadata_csum'], mib: 48 },
  { name: 'sparse_super2 with two backups, mmp, no flex_bg', args: ['-b', '1024', '-O', 'sparse_super2,mmp,^flex_bg', '-E', 'num_backup_sb=2'], mib: 40 },
  { name: 'no sparse_super (a copy in every group), no 64bit', args: ['-b', '4096', '-g', '2048', '-O', '^sparse_super,^resize_inode,^64bit'], mib: 40 },
];

describe('ext4 fixed metadata: decoder, test oracle and dumpe2fs agree', { skip: (!haveTool('mkfs.ext4') || !haveTool('dumpe2fs')) && 'mkfs.ext4 / dumpe2fs (e2fsprogs) not installed' }, () => {
  let work = '';
  before(() => {
    work = tmpDir('homi-geo-');
  });
  after(() => rmTree(work));
  for (const v of EXT4_VARIANTS) {
    test(v.name, () => {
      const img = path.join(work, 'g.ext4');
      fs.rmSync(img, { force: true });
      execFileSync('mkfs.ext4', ['-q', '-F', ...v.args, img, `${v.mib}M`], { stdio: 'pipe' });
      const want = merged(dumpe2fsRanges(img));
      const buf = new Uint8Array(fs.readFileSync(img));
      const x = new Ext4Image(new BufferBlockSource(buf));
      const geo = x.geometry();
      assert.ok(x.sb.groupCount >= 5, `${x.sb.groupCount} groups`);
      assert.deepEqual(merged(geo.metadata.list().map((r) => [r.start, r.start + r.count] as const)), want, 'decoder geometry = dumpe2fs');
      const oracle = ext4Oracle((o, n) => buf.subarray(o, o + n));
      assert.deepEqual(merged(oracle.meta), want, 'test oracle = dumpe2fs');
      // and the lost+found directory and root map inside the data area
      assertInside(oracle, [x.mapPath('/'), x.mapPath('/lost+found')]);
    });
  }
});

// ---------------------------------------------------------------------------------------------------------

describe('ext4: self-consistent corrupted extents are refused', { skip: !haveTool('mkfs.ext4') && 'mkfs.ext4 (e2fsprogs) not installed' }, () => {
  let work = '';
  let buf = new Uint8Array(0);
  let x: Ext4Image;
  let geo: Geometry;
  before(() => {
    work = tmpDir('homi-bounds-');
    const src = path.join(work, 'src');
    fs.mkdirSync(src);
    buildTree(src, { bigDir: 300, large: 512 * 1024 }, 4321);
    // 400 blocks with holes between them: an extent tree with an index root
    const rng = new Rng(8);
    const fd = fs.openSync(path.join(src, 'frag.bin'), 'w');
    for (let i = 0; i < 400; i++) fs.writeSync(fd, rng.bytes(4096), 0, 4096, i * 8192);
    fs.closeSync(fd);
    const img = path.join(work, 'b.ext4');
    mkExt4(img, src, 64, ['-g', '4096']);
    buf = new Uint8Array(fs.readFileSync(img));
    x = new Ext4Image(new BufferBlockSource(buf));
    geo = ext4Oracle((o, n) => buf.subarray(o, o + n));
  });
  after(() => rmTree(work));

  /** A copy of the image with the root leaf entry `i` of `file` edited and the inode checksum recomputed. */
  const withLeaf = (file: string, i: number, e: { lblk?: number; len?: number; pblk?: number }): { img: Ext4Image; ino: number } => {
    const inode = x.readInode(x.lookup(file));
    assert.equal(inode.raw.u16le(EXT4_I_BLOCK + 6), 0, `${file}: extent root is a leaf`);
    const b = buf.slice();
    ext4SetLeaf(b, ext4Entry(inode.offset + EXT4_I_BLOCK, i), e);
    ext4FixInodeCsum(b, inode.offset, inode.ino);
    return { img: new Ext4Image(new BufferBlockSource(b)), ino: inode.ino };
  };
  const firstItable = (g: number): number => x.geometry().inodeTables[g]!;

  test('the clean image decodes and every extent lies inside the data area (test oracle)', () => {
    assert.ok(x.sb.groupCount >= 4);
    const maps: FileMap[] = [];
    for (const w of x.walk()) if (w.map) maps.push(w.map);
    assert.ok(maps.length > 300);
    assertInside(geo, maps);
  });

  test('the checksum fix-up is sound: a redirect to another data block decodes', () => {
    const other = x.mapPath('/medium.bin').extents[0]!.physical / 4096;
    const { img } = withLeaf('/large.bin', 0, { pblk: other });
    const m = img.mapPath('/large.bin');
    assert.equal(m.extents[0]!.physical, other * 4096);
    assertInside(geo, [m]);
  });

  test('an extent at block 0 (the primary superblock)', () => {
    const { img, ino } = withLeaf('/large.bin', 0, { pblk: 0 });
    refused(() => img.mapPath('/large.bin'), 'overlaps metadata', new RegExp(`inode ${ino}, extent 0 \\(logical block 0, physical block 0`), /superblock of group 0/);
  });

  test('an extent in a group descriptor block, a backup descriptor block, reserved GDT blocks', () => {
    refused(() => withLeaf('/large.bin', 0, { pblk: 1 }).img.mapPath('/large.bin'), 'overlaps metadata', /group descriptors of group 0 \(block 1\)/);
    refused(() => withLeaf('/large.bin', 0, { pblk: 4096 + 1 }).img.mapPath('/large.bin'), 'overlaps metadata', /group descriptors of group 1/);
    refused(() => withLeaf('/large.bin', 0, { pblk: 3 }).img.mapPath('/large.bin'), 'overlaps metadata', /reserved GDT blocks of group 0/);
    // an extent that starts in the data area and runs into a superblock backup
    refused(() => withLeaf('/large.bin', 0, { pblk: 4096 - 2 }).img.mapPath('/large.bin'), 'overlaps metadata', /superblock backup of group 1 \(block 4096\)/);
  });

  test('an extent in an inode table, a block bitmap, an inode bitmap', () => {
    refused(() => withLeaf('/large.bin', 0, { pblk: firstItable(2) + 5 }).img.mapPath('/large.bin'), 'overlaps metadata', /inode table of group 2/);
    refused(() => withLeaf('/large.bin', 0, { pblk: firstItable(0) }).img.mapPath('/large.bin'), 'overlaps metadata', /inode table of group 0/);
    const bb = geo.meta.find((r) => r[2] === 'block bitmap 3')![0];
    const ib = geo.meta.find((r) => r[2] === 'inode bitmap 1')![0];
    refused(() => withLeaf('/large.bin', 0, { pblk: bb }).img.mapPath('/large.bin'), 'overlaps metadata', /block bitmap of group 3/);
    refused(() => withLeaf('/large.bin', 0, { pblk: ib }).img.mapPath('/large.bin'), 'overlaps metadata', /inode bitmap of group 1/);
  });

  test('an extent beyond the end of the device', () => {
    const n = x.sb.blocksCount;
    refused(() => withLeaf('/large.bin', 0, { pblk: n + 10 }).img.mapPath('/large.bin'), 'outside the data area', new RegExp(`not all inside the data area \\(blocks 0\\.\\.${n - 1}\\)`));
    refused(() => withLeaf('/large.bin', 0, { pblk: n - 1 }).img.mapPath('/large.bin'), 'outside the data area', new RegExp(`physical block ${n - 1}, `));
    refused(() => withLeaf('/large.bin', 0, { pblk: 2 ** 47 + 5 }).img.mapPath('/large.bin'), 'outside the data area', /physical block 140737488355333/);
  });

  test('logical blocks past the 32-bit limit, and a zero-length extent', () => {
    // /tiny has one block: move it to the end of the logical range
    refused(() => withLeaf('/tiny', 0, { lblk: EXT4_MAX_LOGICAL_BLOCKS }).img.mapPath('/tiny'), 'beyond the format limit', /logical block 4294967295/, /32-bit limit/);
    refused(() => withLeaf('/large.bin', 0, { lblk: EXT4_MAX_LOGICAL_BLOCKS - 10 }).img.mapPath('/large.bin'), 'beyond the format limit');
    refused(() => withLeaf('/large.bin', 0, { len: 0 }).img.mapPath('/large.bin'), 'zero length', /ee_len is 0/);
    // the last block below the limit is a valid place for data
    const ok = withLeaf('/tiny', 0, { lblk: EXT4_MAX_LOGICAL_BLOCKS - 1 }).img.mapPath('/tiny');
    assert.equal(ok.extents[0]!.logical, (EXT4_MAX_LOGICAL_BLOCKS - 1) * 4096);
  });

  test('an extent tree index pointing into metadata is refused before the block is read', () => {
    const inode = x.readInode(x.lookup('/frag.bin'));
    assert.ok(inode.raw.u16le(EXT4_I_BLOCK + 6) >= 1, 'frag.bin has an index root');
    for (const [pblk, label] of [
      [firstItable(1), /inode table of group 1/],
      [0, /superblock of group 0/],
      [x.sb.blocksCount, /outside|not inside/],
    ] as const) {
      const b = buf.slice();
      ext4SetIndexLeaf(b, ext4Entry(inode.offset + EXT4_I_BLOCK, 0), pblk);
      ext4FixInodeCsum(b, inode.offset, inode.ino);
      for (const verifyCsum of [true, false]) {
        const e = refused(() => new Ext4Image(new BufferBlockSource(b), { verifyCsum }).mapPath('/frag.bin'), pblk === x.sb.blocksCount ? 'outside the data area' : 'overlaps metadata', label);
        assert.equal(e.structure, 'ext4 extent index');
        assert.match(e.what, /extent tree block/);
        assert.equal(e.offset, ext4Entry(inode.offset + EXT4_I_BLOCK, 0));
      }
    }
  });

  test('i_size past the format limit is refused', () => {
    const inode = x.readInode(x.lookup('/tiny'));
    const b = buf.slice();
    new DataView(b.buffer).setUint32(inode.offset + 108, 0x1000, true); // size 2^44 + 1 > (2^32 - 1) * 4096
    ext4FixInodeCsum(b, inode.offset, inode.ino);
    assert.throws(
      () => new Ext4Image(new BufferBlockSource(b)).stat(inode.ino),
      (e) => e instanceof CorruptImageError && /format limit/.test(e.message),
    );
  });
});

describe('ext4 block maps (no extents feature): indirect pointers are checked', { skip: !haveTool('mkfs.ext4') && 'mkfs.ext4 (e2fsprogs) not installed' }, () => {
  test('direct and indirect pointers into metadata or past the end are refused', () => {
    const work = tmpDir('homi-bmap-');
    try {
      const src = path.join(work, 'src');
      fs.mkdirSync(src);
      const rng = new Rng(3);
      fs.writeFileSync(path.join(src, 'f.bin'), rng.bytes(200 * 1024)); // 50 blocks: 12 direct + an indirect block
      const img = path.join(work, 'i.ext4');
      mkExt4(img, src, 16, ['-O', '^extent,^64bit,^flex_bg,^huge_file']);
      const buf = new Uint8Array(fs.readFileSync(img));
      const x = new Ext4Image(new BufferBlockSource(buf));
      const inode = x.readInode(x.lookup('/f.bin'));
      assert.equal(inode.flags & 0x80000, 0, 'block-mapped');
      const geo = ext4Oracle((o, n) => buf.subarray(o, o + n));
      assertInside(geo, [x.mapPath('/f.bin')]);
      const patch = (slot: number, value: number): Ext4Image => {
        const b = buf.slice();
        new DataView(b.buffer).setUint32(inode.offset + EXT4_I_BLOCK + slot * 4, value, true);
        ext4FixInodeCsum(b, inode.offset, inode.ino);
        return new Ext4Image(new BufferBlockSource(b));
      };
      const itable = x.geometry().inodeTables[0]!;
      refused(() => patch(0, itable).mapPath('/f.bin'), 'overlaps metadata', /block run 0/, /inode table of group 0/);
      refused(() => patch(5, x.sb.blocksCount).mapPath('/f.bin'), 'outside the data area', /block run \d+ \(logical block 5, physical block \d+, 1 block\)/);
      refused(() => patch(12, 1).mapPath('/f.bin'), 'overlaps metadata', /level-1 indirect block 1/, /group descriptors of group 0/);
      refused(() => patch(12, x.sb.blocksCount + 3).mapPath('/f.bin'), 'outside the data area', /indirect block/);
    } finally {
      rmTree(work);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('XFS: self-consistent corrupted extents are refused', { skip: !haveTool('mkfs.xfs') && 'mkfs.xfs (xfsprogs) not installed' }, () => {
  let work = '';
  let buf = new Uint8Array(0);
  let img = '';
  let x: XfsImage;
  let geo: Geometry;
  before(() => {
    work = tmpDir('homi-xbounds-');
    const src = path.join(work, 'src');
    fs.mkdirSync(src);
    buildTree(src, { bigDir: 3000, large: 512 * 1024 }, 4321);
    img = path.join(work, 'b.xfs');
    mkXfs(img, src, 48);
    buf = new Uint8Array(fs.readFileSync(img));
    x = new XfsImage(new BufferBlockSource(buf));
    geo = xfsOracle((o, n) => buf.subarray(o, o + n));
  });
  after(() => rmTree(work));

  const fsb = (agno: number, agbno: number): number => agno * 2 ** x.sb.agBlockLog + agbno;
  /** A copy of the image with record `i` of `file`'s extent list replaced and the inode CRC recomputed. */
  const withRec = (file: string, i: number, r: { startoff?: number; startblock?: number; blockcount?: number }): XfsImage => {
    const inode = x.readInode(x.lookup(file));
    assert.equal(inode.format, 2, `${file}: extent list`);
    const cur = x.blockMap(inode)[i]!;
    const b = buf.slice();
    encodeBmbtRec({ ...cur, ...r }, b, inode.fork.base + i * 16);
    xfsFixInodeCrc(b, inode.offset, x.sb.inodeSize);
    return new XfsImage(new BufferBlockSource(b));
  };

  test('superblock geometry matches xfs_db; the clean image maps inside the data area', { skip: !haveTool('xfs_db') && 'xfs_db not installed' }, () => {
    const d = xfsDbGeometry(img);
    assert.equal(d['agcount'], x.sb.agCount);
    assert.equal(d['agblocks'], x.sb.agBlocks);
    assert.equal(d['logstart'], x.sb.logStart);
    assert.equal(d['logblocks'], x.sb.logBlocks);
    assert.equal(d['dblocks'], geo.dataEnd);
    assert.ok(x.sb.agCount >= 2 && x.sb.logStart > 0, 'several AGs and an internal log');
    const maps: FileMap[] = [];
    for (const w of x.walk()) if (w.map) maps.push(w.map);
    assert.ok(maps.length > 3000);
    assertInside(geo, maps);
  });

  test('the CRC fix-up is sound: a redirect to another data block decodes', () => {
    const to = x.readInode(x.lookup('/medium.bin'));
    const target = x.blockMap(to)[0]!.startblock;
    const m = withRec('/large.bin', 0, { startblock: target }).mapPath('/large.bin');
    assert.equal(m.extents[0]!.physical, x.fsbToByte(target, 1, 't'));
    assertInside(geo, [m]);
  });

  test('an extent at block 0 and in the headers of another AG', () => {
    const ino = x.lookup('/large.bin');
    refused(() => withRec('/large.bin', 0, { startblock: 0 }).mapPath('/large.bin'), 'overlaps metadata', new RegExp(`inode ${ino}, extent 0`), /headers of AG 0 \(superblock, AGF, AGI, AGFL/);
    refused(() => withRec('/large.bin', 0, { startblock: fsb(1, 0) }).mapPath('/large.bin'), 'overlaps metadata', /headers of AG 1 \(superblock, AGF, AGI, AGFL/);
  });

  test('an extent in the internal log', () => {
    const logAg = Math.floor(x.sb.logStart / 2 ** x.sb.agBlockLog);
    const logAgbno = x.sb.logStart - logAg * 2 ** x.sb.agBlockLog;
    refused(() => withRec('/large.bin', 0, { startblock: fsb(logAg, logAgbno + 7) }).mapPath('/large.bin'), 'overlaps metadata', /internal log/);
    // starts before the log and runs into it
    refused(() => withRec('/large.bin', 0, { startblock: fsb(logAg, logAgbno - 1), blockcount: 2 }).mapPath('/large.bin'), 'overlaps metadata', /internal log/);
  });

  test('an extent beyond the end of the device, past an AG, in a missing AG', () => {
    const last = x.sb.agCount - 1;
    const lastLen = x.sb.dblocks - last * x.sb.agBlocks;
    refused(() => withRec('/large.bin', 0, { startblock: fsb(last, lastLen - 1), blockcount: 4 }).mapPath('/large.bin'), 'outside the data area', /past the end of the file system/);
    refused(() => withRec('/large.bin', 0, { startblock: fsb(0, x.sb.agBlocks - 1), blockcount: 2 }).mapPath('/large.bin'), 'outside the data area', /never spans AGs/);
    refused(() => withRec('/large.bin', 0, { startblock: fsb(0, x.sb.agBlocks + 3) }).mapPath('/large.bin'), 'outside the data area', /past the \d+ blocks of an AG/);
    refused(() => withRec('/large.bin', 0, { startblock: fsb(x.sb.agCount + 2, 100) }).mapPath('/large.bin'), 'outside the data area', /AG \d+ does not exist/);
  });

  test('logical offsets above 2^53 bytes and past 2^54 - 1 blocks; zero length', () => {
    const count = BigInt(x.blockMap(x.readInode(x.lookup('/large.bin')))[0]!.blockcount);
    refused(() => withRec('/large.bin', 0, { startoff: 2 ** 41 }).mapPath('/large.bin'), 'not an exact integer', new RegExp(`ends at file byte ${(2n ** 41n + count) * 4096n}, past 2\\^53`));
    // 2^53 + 8 blocks: the offset itself has no exact number; the message gives the end exactly
    refused(() => withRec('/large.bin', 0, { startoff: 2 ** 53 + 8 }).mapPath('/large.bin'), 'not an exact integer', new RegExp(`ends at file block ${2n ** 53n + 8n + count},`));
    // the last file blocks: 2^54 - 2 (exact as a number) plus 4 blocks ends past 2^54 - 1
    assert.equal(XFS_MAX_FILEOFF, 2n ** 54n - 1n);
    refused(() => withRec('/tiny', 0, { startoff: 2 ** 54 - 2, blockcount: 4 }).mapPath('/tiny'), 'beyond the format limit', new RegExp(`file block ${2n ** 54n + 2n}, past the limit of 2\\^54 - 1`));
    refused(() => withRec('/large.bin', 0, { blockcount: 0 }).mapPath('/large.bin'), 'zero length');
    // the last whole block below 2^53 bytes is exact and allowed; the one ending at 2^53 is not (2^53 is not a safe integer)
    const ok = withRec('/tiny', 0, { startoff: 2 ** 41 - 2 }).mapPath('/tiny');
    assert.equal(ok.extents[0]!.logical + ok.extents[0]!.length, 2 ** 53 - 4096);
    refused(() => withRec('/tiny', 0, { startoff: 2 ** 41 - 1 }).mapPath('/tiny'), 'not an exact integer');
  });

  test('a bmap btree pointer into the AG headers or the log is refused before the block is read', () => {
    const big = x.readInode(x.lookup('/big'));
    assert.equal(big.format, 3, '/big has a btree data fork');
    const rootMax = Math.floor((big.fork.length - 4) / 16);
    const ptr = big.fork.base + 4 + rootMax * 8; // first pointer of the root
    for (const [target, re] of [
      [fsb(1, x.sb.agHeaderBlocks - 1), /headers of AG 1/],
      [x.sb.logStart + 1, /internal log/],
    ] as const) {
      const b = buf.slice();
      new DataView(b.buffer).setBigUint64(ptr, BigInt(target), false);
      xfsFixInodeCrc(b, big.offset, x.sb.inodeSize);
      const e = refused(() => new XfsImage(new BufferBlockSource(b)).readDir(big.ino), 'overlaps metadata', re, /bmap btree block/);
      assert.equal(e.structure, 'xfs bmbt pointer');
      assert.equal(e.offset, ptr);
    }
  });

  test('a superblock whose internal log overlaps the AG headers or leaves its AG is refused at open', () => {
    for (const start of [fsb(1, x.sb.agHeaderBlocks - 1), fsb(0, x.sb.agBlocks - 10)]) {
      const b = buf.slice();
      new DataView(b.buffer).setBigUint64(48, BigInt(start), false);
      xfsFixSbCrc(b, x.sb.sectSize);
      assert.throws(
        () => new XfsImage(new BufferBlockSource(b)),
        (e) => e instanceof CorruptImageError && e.structure === 'xfs superblock' && /internal log/.test(e.message),
      );
    }
  });
});
