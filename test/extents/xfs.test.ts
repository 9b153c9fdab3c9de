import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Bin } from '../../src/extents/bin.js';
import { crc32cSkipField } from '../../src/extents/crc32c.js';
import { BufferBlockSource, FileBlockSource } from '../../src/extents/source.js';
import { CorruptImageError, NotThisFileSystemError, PathLookupError } from '../../src/extents/types.js';
import { decodeBmbtRec, encodeBmbtRec, readBmbtTree, XfsImage, type BmapContext, type BmbtRec } from '../../src/extents/xfs/index.js';
import { buildTree, haveTool, mkfsXfsVersion, mkXfs, rmTree, tmpDir, verifyAgainstSource, type SourceEntry } from './fixtures.js';

const LEAF_FSB = 2 ** 35 / 4096;

describe('XFS decoder on a real mkfs.xfs -p image', { skip: !haveTool('mkfs.xfs') && 'mkfs.xfs (xfsprogs) not installed' }, () => {
  let work = '';
  let src = '';
  let img = '';
  let entries: SourceEntry[] = [];
  let x: XfsImage;
  /** mkfs.xfs 6.1 -p writes remote symlink blocks without the v5 'XSLM' header (xfs_repair flags them). */
  let headerlessSymlink = false;

  before(() => {
    work = tmpDir('homi-xfs-');
    src = path.join(work, 'src');
    fs.mkdirSync(src);
    entries = buildTree(src, { bigDir: 3000, large: 6 * 1024 * 1024 });
    img = path.join(work, 'fs.xfs');
    mkXfs(img, src, 96);
    x = new XfsImage(new FileBlockSource(img));
    const m = x.mapPath('/link-long', { follow: false });
    headerlessSymlink = new TextDecoder().decode(x.source.read(m.extents[0]!.physical, 4)) !== 'XSLM';
  });
  after(() => {
    x?.close();
    rmTree(work);
  });

  test('superblock geometry is decoded and validated', () => {
    assert.equal(x.sb.blockSize, 4096);
    assert.equal(x.sb.inodeSize, 512);
    assert.ok(x.sb.agCount >= 1);
    assert.equal(x.sb.dblocks * x.sb.blockSize, fs.statSync(img).size);
    assert.equal(x.stat(x.rootIno).type, 'dir');
  });

  test('every file reads back byte for byte through its extents; dirs and symlinks match', () => {
    const n = verifyAgainstSource(x, src, entries, { skip: (rel) => rel === '/link-long' && headerlessSymlink });
    assert.ok(n > 3000);
  });

  test('directory formats: shortform, block, node (leaf blocks and free index) with a btree data fork', () => {
    assert.equal(x.readInode(x.lookup('/few')).format, 1);
    const some = x.readInode(x.lookup('/some'));
    assert.equal(some.format, 2);
    assert.deepEqual(x.blockMap(some).length, 1);
    const big = x.readInode(x.lookup('/big'));
    assert.equal(big.format, 3, 'big directory data fork is a B+tree');
    const recs = x.blockMap(big);
    assert.ok(recs.length > 21);
    assert.ok(
      recs.some((r) => r.startoff >= LEAF_FSB && r.startoff < 2 * LEAF_FSB),
      'leaf blocks',
    );
    assert.ok(
      recs.some((r) => r.startoff >= 2 * LEAF_FSB),
      'free index (node format)',
    );
    assert.equal(x.readDir(big.ino).length, 3000);
    assert.equal(x.mapInode(big.ino).type, 'dir');
  });

  test('symlinks: inline target, remote block target, followed in lookups', () => {
    assert.equal(x.readInode(x.lookup('/link-short', { follow: false })).format, 1);
    const remote = x.readInode(x.lookup('/link-long', { follow: false }));
    assert.equal(remote.format, 2);
    const target = './'.repeat(300) + 'medium.bin';
    let fixed = x;
    if (headerlessSymlink) {
      // what mkfs.xfs 6.1 wrote is not a valid v5 symlink block: the decoder must say so...
      assert.throws(
        () => x.readLink(remote.ino),
        (e) => e instanceof CorruptImageError && e.structure === 'xfs symlink block',
      );
      // ...and decode the block once it carries a proper header
      const buf = new Uint8Array(fs.readFileSync(img));
      const at = x.mapInode(remote.ino).extents[0]!.physical;
      const blk = buf.subarray(at, at + 4096);
      blk.fill(0);
      const dv = new DataView(blk.buffer, blk.byteOffset, 4096);
      dv.setUint32(0, 0x58534c4d);
      dv.setUint32(4, 0);
      dv.setUint32(8, target.length);
      blk.set(x.sb.metaUuid, 16);
      dv.setBigUint64(32, BigInt(remote.ino));
      dv.setBigUint64(40, BigInt(at / 512));
      blk.set(new TextEncoder().encode(target), 56);
      dv.setUint32(12, crc32cSkipField(blk, 12), true);
      fixed = new XfsImage(new BufferBlockSource(buf));
    }
    assert.equal(fixed.readLink(remote.ino), target);
    assert.equal(fixed.lookup('/link-long'), x.lookup('/medium.bin'));
    assert.equal(x.lookup('/link-dir/level2/../level2'), x.lookup('/deep/level0/level1/level2'));
    assert.equal(x.lookup('/link-abs'), x.lookup('/small.txt'));
    const inline = x.mapPath('/link-short', { follow: false });
    assert.deepEqual(inline.extents[0]!.flags, ['inline', 'last']);
  });

  test('lookup by inode number and path errors', () => {
    const ino = x.lookup('/large.bin');
    assert.deepEqual(x.mapInode(ino, '/large.bin'), x.mapPath('/large.bin'));
    assert.throws(
      () => x.lookup('/nope'),
      (e) => e instanceof PathLookupError && e.problem === 'not found',
    );
    assert.throws(
      () => x.lookup('/tiny/x'),
      (e) => e instanceof PathLookupError && e.problem === 'not a directory',
    );
    assert.throws(() => x.mapInode(3), CorruptImageError);
  });

  for (const extra of [
    ['-i', 'nrext64=1'],
    ['-n', 'size=16384'],
    ['-b', 'size=1024'],
    ['-m', 'reflink=0,finobt=0', '-i', 'sparse=0'],
  ]) {
    test(`mkfs.xfs ${extra.join(' ')}: every file matches the source`, (t) => {
      const v = path.join(work, 'variant.xfs');
      try {
        mkXfs(v, src, 96, extra);
      } catch (e) {
        // An older mkfs.xfs that does not know the option: skipped, saying which and why.
        const why = String((e as { stderr?: Buffer }).stderr ?? e)
          .split('\n')
          .find((l) => l.trim() !== '');
        t.skip(`this mkfs.xfs (${mkfsXfsVersion()}) refuses ${extra.join(' ')}: ${why ?? 'no message'}`);
        return;
      }
      const y = new XfsImage(new FileBlockSource(v));
      try {
        assert.ok(verifyAgainstSource(y, src, entries, { skip: (rel) => rel === '/link-long' }) > 3000);
        assert.equal(y.readDir(y.lookup('/big')).length, 3000);
      } finally {
        y.close();
      }
    });
  }

  test('corruption names the structure', () => {
    const buf = new Uint8Array(fs.readFileSync(img));
    const flipped = buf.slice();
    flipped[8]! ^= 1;
    assert.throws(
      () => new XfsImage(new BufferBlockSource(flipped)),
      (e) => e instanceof CorruptImageError && e.structure === 'xfs superblock' && /CRC/.test(e.message),
    );
    const nomagic = buf.slice();
    nomagic[0] = 0;
    assert.throws(() => new XfsImage(new BufferBlockSource(nomagic)), NotThisFileSystemError);
    const ino = x.lookup('/large.bin');
    const at = x.inodeLocation(ino).offset;
    const badInode = buf.slice();
    badInode[at + 60]! ^= 0x80;
    const y = new XfsImage(new BufferBlockSource(badInode));
    assert.throws(
      () => y.mapPath('/large.bin'),
      (e) => e instanceof CorruptImageError && e.structure === 'xfs inode' && e.offset === at + 100,
    );
    const z = new XfsImage(new BufferBlockSource(badInode), { verifyCrc: false });
    assert.equal(z.mapPath('/large.bin').size, 6 * 1024 * 1024 + 2 ** 31, 'without CRC checks the flipped size bit shows');
  });
});

// ---------------------------------------------------------------------------------------------------------
// Synthetic B+tree: hand-built BMA3 blocks

const UUID = new Uint8Array(16).map((_, i) => i * 17);
const BS = 4096;

function makeBlock(fsb: number, level: number, owner: number, body: (b: Uint8Array, dv: DataView) => number): Uint8Array {
  const b = new Uint8Array(BS);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 0x424d4133);
  dv.setUint16(4, level);
  dv.setUint16(6, body(b, dv));
  dv.setBigUint64(8, 0xffffffffffffffffn);
  dv.setBigUint64(16, 0xffffffffffffffffn);
  dv.setBigUint64(24, BigInt((fsb * BS) / 512));
  b.set(UUID, 40);
  dv.setBigUint64(56, BigInt(owner));
  dv.setUint32(64, crc32cSkipField(b, 64), true);
  return b;
}

function synthetic(): { ctx: BmapContext; blocks: Map<number, Uint8Array>; root: Bin; want: BmbtRec[] } {
  const owner = 4242;
  const blocks = new Map<number, Uint8Array>();
  const want: BmbtRec[] = [];
  let off = 0;
  // 4 leaves of 50 records, 2 level-1 nodes of 2 leaves each, a level-2 root in a 336-byte fork
  const leaves: number[] = [];
  for (let l = 0; l < 4; l++) {
    const fsb = 100 + l;
    leaves.push(fsb);
    blocks.set(
      fsb,
      makeBlock(fsb, 0, owner, (b) => {
        for (let i = 0; i < 50; i++) {
          const r: BmbtRec = { startoff: off, startblock: 1000 + off * 2, blockcount: 1 + (i % 3), unwritten: i % 7 === 3 };
          encodeBmbtRec(r, b, 72 + i * 16);
          want.push(r);
          off += r.blockcount + 1; // leave holes
        }
        return 50;
      }),
    );
  }
  const firstKey = (fsb: number): number => decodeBmbtRec(new Bin(blocks.get(fsb)!, 't', 0), 72).startoff;
  const nodeMax = Math.floor((BS - 72) / 16);
  for (let n = 0; n < 2; n++) {
    const fsb = 200 + n;
    blocks.set(
      fsb,
      makeBlock(fsb, 1, owner, (_b, dv) => {
        for (let i = 0; i < 2; i++) {
          const leaf = leaves[n * 2 + i]!;
          dv.setBigUint64(72 + i * 8, BigInt(firstKey(leaf)));
          dv.setBigUint64(72 + nodeMax * 8 + i * 8, BigInt(leaf));
        }
        return 2;
      }),
    );
  }
  const fork = new Uint8Array(336);
  const fdv = new DataView(fork.buffer);
  const rootMax = Math.floor((336 - 4) / 16);
  fdv.setUint16(0, 2);
  fdv.setUint16(2, 2);
  for (let i = 0; i < 2; i++) {
    fdv.setBigUint64(4 + i * 8, BigInt(firstKey(leaves[i * 2]!)));
    fdv.setBigUint64(4 + rootMax * 8 + i * 8, BigInt(200 + i));
  }
  const ctx: BmapContext = {
    blockSize: BS,
    metaUuid: UUID,
    verifyCrc: true,
    readFsBlock: (fsb, structure) => {
      const b = blocks.get(fsb);
      if (b === undefined) throw new CorruptImageError(structure, -1, `block ${fsb} unmapped`);
      return new Bin(b, structure, fsb * BS);
    },
  };
  return { ctx, blocks, root: new Bin(fork, 'xfs bmbt root', 0), want };
}

describe('XFS bmbt B+tree decoder on synthetic blocks', () => {
  test('record packing round-trips at the field limits', () => {
    const b = new Uint8Array(16);
    for (const r of [
      { startoff: 2 ** 53 - 1, startblock: 2 ** 52 - 1, blockcount: 2 ** 21 - 1, unwritten: true },
      { startoff: 0, startblock: 0, blockcount: 1, unwritten: false },
      { startoff: 123456789012, startblock: 987654321098, blockcount: 77777, unwritten: false },
    ]) {
      encodeBmbtRec(r, b, 0);
      assert.deepEqual(decodeBmbtRec(new Bin(b, 't', 0), 0), r);
    }
  });

  test('a depth-2 tree yields every record in order, unwritten flags intact', () => {
    const { ctx, root, want } = synthetic();
    assert.deepEqual(readBmbtTree(root, 4242, ctx, want.length), want);
  });

  test('bad CRC, wrong owner, wrong level, cycles and count mismatches are CorruptImageErrors', () => {
    const expectCorrupt = (mut: (s: ReturnType<typeof synthetic>) => void, structure: string, re: RegExp, verify = true): void => {
      const s = synthetic();
      s.ctx.verifyCrc = verify;
      mut(s);
      assert.throws(
        () => readBmbtTree(s.root, 4242, s.ctx, s.want.length),
        (e) => e instanceof CorruptImageError && e.structure === structure && re.test(e.message),
      );
    };
    expectCorrupt((s) => (s.blocks.get(101)![100]! ^= 4), 'xfs bmbt block', /CRC/);
    expectCorrupt((s) => new DataView(s.blocks.get(101)!.buffer).setBigUint64(56, 1n), 'xfs bmbt block', /owner/, false);
    expectCorrupt((s) => new DataView(s.blocks.get(200)!.buffer).setUint16(4, 3), 'xfs bmbt block', /level/, false);
    // a node pointing at itself
    expectCorrupt((s) => new DataView(s.blocks.get(200)!.buffer).setBigUint64(72 + Math.floor((BS - 72) / 16) * 8 + 8, 200n), 'xfs bmbt block', /twice|level/, false);
    // both root pointers at the same child: a cycle in a DAG sense
    expectCorrupt((s) => new DataView(s.root.buf.buffer).setBigUint64(4 + 20 * 8 + 8, 200n), 'xfs bmbt block', /twice/, false);
    expectCorrupt((s) => new DataView(s.root.buf.buffer).setUint16(2, 21), 'xfs bmbt root', /numrecs/);
    const s = synthetic();
    assert.throws(
      () => readBmbtTree(s.root, 4242, s.ctx, s.want.length - 1),
      (e) => e instanceof CorruptImageError,
    );
    assert.throws(
      () => readBmbtTree(s.root, 4242, s.ctx, s.want.length + 1),
      (e) => e instanceof CorruptImageError && /records/.test(e.message),
    );
  });
});
