/**
 * Robustness: corrupt real images (bit flips, byte runs, redirected pointers, zeroed runs, truncation) in the
 * metadata the decoders read, then look up paths and walk the whole tree. Every outcome must be the clean
 * result or an ExtentError (never a TypeError/RangeError, never a read outside the image, never a hang).
 *
 * Safety: every map a decoder returns, for any corrupted image, must keep every extent inside the data area
 * and off the fixed metadata, by the test's own geometry (geometry-oracle.ts, read from the corrupted image's
 * superblock and group descriptors). A second round makes self-consistent corruptions: extent records and
 * tree pointers redirected at metadata, past the end, or to extreme logical offsets, with the inode checksum
 * recomputed so only the decoders' geometry checks can refuse them.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ext4Image } from '../../src/extents/ext4/index.js';
import type { FsImage } from '../../src/extents/fsimage.js';
import type { BlockSource } from '../../src/extents/source.js';
import { BadExtentError, CorruptImageError, ExtentError, ImageRangeError, type FileMap } from '../../src/extents/types.js';
import { decodeBmbtRec, encodeBmbtRec, XfsImage } from '../../src/extents/xfs/index.js';
import { Bin } from '../../src/extents/bin.js';
import { EXT4_I_BLOCK, ext4Entry, ext4FixInodeCsum, ext4SetIndexLeaf, ext4SetLeaf, xfsFixInodeCrc } from './corrupt.js';
import { buildTree, haveTool, mkExt4, mkXfs, Rng, rmTree, tmpDir } from './fixtures.js';
import { ext4Oracle, violation, xfsOracle, type Geometry } from './geometry-oracle.js';

const CASES_PER_FS = Number(process.env['HOMI_FUZZ_CASES'] ?? 150);
/** Self-consistent (checksum-correct) extent corruptions per file system. */
const SC_CASES_PER_FS = Number(process.env['HOMI_FUZZ_SC_CASES'] ?? 120);

/** An image in memory with byte patches and an optional shorter size; counts out-of-range requests. */
class PatchedSource implements BlockSource {
  outOfRange = 0;
  constructor(
    private readonly base: Uint8Array,
    readonly size: number,
    private readonly patches: Map<number, number>,
    private readonly record?: [number, number][],
  ) {}
  read(offset: number, length: number): Uint8Array {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      this.outOfRange++;
      throw new ImageRangeError(offset, length, this.size);
    }
    this.record?.push([offset, length]);
    let out = this.base.subarray(offset, offset + length);
    let copied = false;
    for (const [o, v] of this.patches) {
      if (o >= offset && o < offset + length) {
        if (!copied) {
          out = out.slice();
          copied = true;
        }
        out[o - offset] = v;
      }
    }
    return out;
  }
}

let LOOKUPS = ['/large.bin', '/sparse.bin', '/deep/level0/level1/level2/level3', '/link-dir/level2', '/link-long', '/some/entry-7', `/long/${'n'.repeat(255)}`, '/few/f1'];

/** Outcomes of a fixed list of operations: a JSON result or the error's class name. Every map made goes to `maps`. */
function runOps(open: () => FsImage, budgetMs: number, maps: FileMap[] = []): string[] {
  const out: string[] = [];
  const t0 = Date.now();
  const guard = (what: string, f: () => unknown): void => {
    try {
      out.push(`${what}\tOK\t${JSON.stringify(f())}`);
    } catch (e) {
      if (!(e instanceof ExtentError) || e instanceof ImageRangeError) throw e;
      if (e instanceof CorruptImageError) assert.ok(e.structure.length > 0 && e.message.includes(e.structure), `structure named in '${e.message}'`);
      out.push(`${what}\tERR\t${e.name}`);
    }
    assert.ok(Date.now() - t0 < budgetMs, `operations took more than ${budgetMs} ms`);
  };
  let img: FsImage | null = null;
  guard('open', () => {
    img = open();
    return img.fsType;
  });
  if (img === null) return out;
  const image: FsImage = img;
  guard('walk', () => {
    const all: unknown[] = [];
    for (const e of image.walk()) {
      all.push([e.path, e.ino, e.type, e.size, e.map?.extents]);
      if (e.map) maps.push(e.map);
    }
    return all;
  });
  for (const p of LOOKUPS) {
    guard(`map ${p}`, () => {
      const m = image.mapPath(p);
      maps.push(m);
      return m;
    });
  }
  guard('readdir /big', () => image.readDir(image.lookup('/big')).length);
  return out;
}

const oracle = (kind: 'xfs' | 'ext4', src: BlockSource): Geometry => (kind === 'xfs' ? xfsOracle : ext4Oracle)((o, n) => src.read(o, n));

/** Every extent of every map inside the data area and off the metadata of the image `src` describes. */
function assertSafeMaps(kind: 'xfs' | 'ext4', src: BlockSource, maps: FileMap[], what: string): void {
  if (maps.length === 0) return;
  const geo = oracle(kind, src);
  for (const m of maps) {
    const v = violation(geo, m);
    assert.equal(v, null, `${what}: a decoded extent breaks the geometry: ${v}`);
  }
}

const make = (kind: 'xfs' | 'ext4', src: BlockSource, verify: boolean): FsImage => (kind === 'xfs' ? new XfsImage(src, { verifyCrc: verify }) : new Ext4Image(src, { verifyCsum: verify }));

function fuzz(kind: 'xfs' | 'ext4', imgPath: string, seed: number): { cases: number; errors: Map<string, number>; corrupt: number; identical: number } {
  const base = new Uint8Array(fs.readFileSync(imgPath));
  // where the metadata is: every range the decoder reads during a clean run
  const record: [number, number][] = [];
  const clean = runOps(() => make(kind, new PatchedSource(base, base.length, new Map(), record), true), 10_000);
  assert.ok(clean.length > 5 && clean[1]!.startsWith('walk\tOK\t'), 'clean run walks the tree');
  const seen = new Set<string>();
  const ranges = record.filter(([o, l]) => {
    const k = `${o}:${l}`;
    if (seen.has(k) || l > 65536) return false;
    seen.add(k);
    return true;
  });
  const blockSize = kind === 'xfs' ? 4096 : 4096;
  const rng = new Rng(seed);
  const errors = new Map<string, number>();
  let identical = 0;
  let corrupt = 0;
  for (let c = 0; c < CASES_PER_FS; c++) {
    const patches = new Map<number, number>();
    let size = base.length;
    const verify = c % 2 === 0;
    const [ro, rl] = ranges[rng.int(ranges.length)]!;
    const m = rng.int(100);
    if (m < 30) {
      for (let k = 1 + rng.int(4); k > 0; k--) {
        const o = ro + rng.int(rl);
        patches.set(o, (patches.get(o) ?? base[o]!) ^ (1 << rng.int(8)));
      }
    } else if (m < 50) {
      const o = ro + rng.int(rl);
      for (let k = 0; k < 1 + rng.int(8) && o + k < ro + rl; k++) patches.set(o + k, rng.int(256));
    } else if (m < 75) {
      // redirect a pointer-sized field at another metadata block (cycles, misdirected reads)
      const [to] = ranges[rng.int(ranges.length)]!;
      const blk = Math.floor(to / blockSize);
      const width = rng.int(2) === 0 ? 4 : 8;
      const o = ro + rng.int(Math.max(1, Math.floor(rl / width))) * width;
      const bytes = new Uint8Array(8);
      const dv = new DataView(bytes.buffer);
      if (kind === 'xfs') dv.setBigUint64(0, BigInt(blk), false);
      else dv.setUint32(0, blk, true);
      const val = kind === 'xfs' ? bytes.subarray(8 - width) : bytes.subarray(0, width);
      for (let k = 0; k < width && o + k < base.length; k++) patches.set(o + k, val[k]!);
    } else if (m < 85) {
      const o = ro + rng.int(rl);
      for (let k = 0; k < 64 && o + k < ro + rl; k++) patches.set(o + k, 0);
    } else {
      size = rng.int(base.length);
    }
    const src = new PatchedSource(base, size, patches);
    const maps: FileMap[] = [];
    const got = runOps(() => make(kind, src, verify), 5_000, maps);
    assert.equal(src.outOfRange, 0, `case ${c}: read outside the image`);
    assertSafeMaps(kind, new PatchedSource(base, size, patches), maps, `case ${c}`);
    for (let i = 0; i < got.length; i++) {
      const g = got[i]!;
      const [, status, detail] = g.split('\t');
      if (status === 'ERR') {
        const name = detail!;
        errors.set(name, (errors.get(name) ?? 0) + 1);
        if (name === 'CorruptImageError' || name === 'BadExtentError') corrupt++;
      } else if (verify && size === base.length) {
        // with checksums on, a success must be the clean result
        assert.equal(g, clean[i], `case ${c}: op ${i} succeeded with a different result`);
      }
    }
    if (got.join('\n') === clean.join('\n')) identical++;
  }
  return { cases: CASES_PER_FS, errors, corrupt, identical };
}

// ---------------------------------------------------------------------------------------------------------
// Self-consistent corruption: checksums recomputed after the edit

/** One editable mapping record: an extent (leaf) or a pointer to a mapping block (index). */
interface Slot {
  ino: number;
  /** Image byte offset of the inode (whose checksum covers the record). */
  inode: number;
  /** Image byte offset of the record. */
  at: number;
  leaf: boolean;
}

/** Records in inodes of the files the operations map (from the clean image). */
function findSlots(kind: 'xfs' | 'ext4', base: Uint8Array): Slot[] {
  const slots: Slot[] = [];
  const src = new PatchedSource(base, base.length, new Map());
  const inos = new Set<number>();
  const img = make(kind, src, true);
  for (const e of img.walk({ maps: false })) if (e.type === 'file' || e.type === 'dir') inos.add(e.ino);
  for (const ino of inos) {
    if (img instanceof Ext4Image) {
      const i = img.readInode(ino);
      if (!(i.flags & 0x80000)) continue;
      const root = i.offset + EXT4_I_BLOCK;
      const entries = i.raw.u16le(EXT4_I_BLOCK + 2);
      const depth = i.raw.u16le(EXT4_I_BLOCK + 6);
      for (let k = 0; k < entries; k++) slots.push({ ino, inode: i.offset, at: ext4Entry(root, k), leaf: depth === 0 });
    } else if (img instanceof XfsImage) {
      const i = img.readInode(ino);
      if (i.format === 2) for (let k = 0; k < i.nextents; k++) slots.push({ ino, inode: i.offset, at: i.fork.base + k * 16, leaf: true });
      if (i.format === 3) {
        const rootMax = Math.floor((i.fork.length - 4) / 16);
        const n = i.fork.u16be(2);
        for (let k = 0; k < n; k++) slots.push({ ino, inode: i.offset, at: i.fork.base + 4 + rootMax * 8 + k * 8, leaf: false });
      }
    }
  }
  return slots;
}

/** Physical targets: metadata edges, just before metadata (runs into it), the device end and beyond, huge values, random blocks. */
function physicalTargets(geo: Geometry, rng: Rng): number[] {
  const t: number[] = [0, 1, geo.dataEnd - 1, geo.dataEnd, geo.dataEnd + 1 + rng.int(1 << 20), 2 ** 32 - 1, 2 ** 32 + rng.int(1000), 2 ** 40 + rng.int(1 << 20)];
  for (const [a, b] of geo.meta) t.push(a, b - 1, Math.max(0, a - 1), b);
  for (let i = 0; i < 8; i++) t.push(rng.int(geo.dataEnd));
  return t;
}

/** XFS file system block (agno << agblklog | agbno) of a linear block. */
function xfsFsb(base: Uint8Array, linear: number): number {
  const v = new DataView(base.buffer, base.byteOffset, 512);
  const agblocks = v.getUint32(84, false);
  const agblklog = v.getUint8(124);
  const ag = Math.floor(linear / agblocks);
  return ag * 2 ** agblklog + (linear - ag * agblocks);
}

function fuzzSelfConsistent(kind: 'xfs' | 'ext4', imgPath: string, seed: number): { cases: number; refusedGeometry: number; decoded: number; errors: Map<string, number> } {
  const base = new Uint8Array(fs.readFileSync(imgPath));
  const scratch = base.slice();
  const slots = findSlots(kind, base);
  assert.ok(slots.length > 10, `${slots.length} mapping records found`);
  const geo = oracle(kind, new PatchedSource(base, base.length, new Map()));
  const inodeSize = kind === 'xfs' ? new DataView(base.buffer, base.byteOffset).getUint16(104, false) : new DataView(base.buffer, base.byteOffset + 1024).getUint16(0x58, true);
  const rng = new Rng(seed);
  const errors = new Map<string, number>();
  let refusedGeometry = 0;
  let decoded = 0;
  for (let c = 0; c < SC_CASES_PER_FS; c++) {
    const slot = slots[rng.int(slots.length)]!;
    const targets = physicalTargets(geo, rng);
    const phys = targets[rng.int(targets.length)]!;
    const field = rng.int(100);
    let edit: string;
    if (kind === 'ext4') {
      if (!slot.leaf) {
        ext4SetIndexLeaf(scratch, slot.at, phys % 2 ** 48);
        edit = `index -> ${phys % 2 ** 48}`;
      } else if (field < 70) {
        ext4SetLeaf(scratch, slot.at, { pblk: phys % 2 ** 48 });
        edit = `pblk ${phys % 2 ** 48}`;
      } else if (field < 85) {
        const lblk = [2 ** 32 - 1, 2 ** 32 - 2, 2 ** 32 - 1 - rng.int(40000), rng.int(2 ** 32)][rng.int(4)]!;
        ext4SetLeaf(scratch, slot.at, { lblk });
        edit = `lblk ${lblk}`;
      } else {
        const len = [0, 32768, 32769, 65535, 1 + rng.int(65535)][rng.int(5)]!;
        ext4SetLeaf(scratch, slot.at, { len });
        edit = `len ${len}`;
      }
      ext4FixInodeCsum(scratch, slot.inode, slot.ino);
    } else {
      const fsb = phys >= geo.dataEnd ? phys : xfsFsb(base, phys);
      if (!slot.leaf) {
        new DataView(scratch.buffer).setBigUint64(slot.at, BigInt(fsb), false);
        edit = `bmbt pointer -> ${fsb}`;
      } else {
        const r = decodeBmbtRec(new Bin(base.subarray(slot.at, slot.at + 16), 'rec', slot.at), 0);
        if (field < 70) {
          r.startblock = fsb % 2 ** 52;
          if (rng.int(3) === 0) r.blockcount = 1 + rng.int(8);
        } else if (field < 85) r.startoff = [2 ** 41 - 1, 2 ** 41, 2 ** 53 - 1, 2 ** 53 + 2, 2 ** 54 - 2, rng.int(2 ** 50)][rng.int(6)]!;
        else r.blockcount = [0, 2 ** 21 - 1, 1 + rng.int(2 ** 21 - 1)][rng.int(3)]!;
        encodeBmbtRec(r, scratch, slot.at);
        edit = `record ${JSON.stringify(r)}`;
      }
      xfsFixInodeCrc(scratch, slot.inode, inodeSize);
    }
    const patches = new Map<number, number>();
    for (let o = slot.inode; o < slot.inode + inodeSize; o++) if (scratch[o] !== base[o]) patches.set(o, scratch[o]!);
    scratch.set(base.subarray(slot.inode, slot.inode + inodeSize), slot.inode);
    const src = new PatchedSource(base, base.length, patches);
    const maps: FileMap[] = [];
    let geometryError = false;
    const got = runOps(
      () => {
        const img = make(kind, src, c % 4 !== 3);
        // every inode with an edited record is mapped directly too (the lookups may not reach it)
        try {
          maps.push(img.mapInode(slot.ino));
        } catch (e) {
          if (!(e instanceof ExtentError) || e instanceof ImageRangeError) throw e;
          if (e instanceof BadExtentError) geometryError = true;
          errors.set(e.name, (errors.get(e.name) ?? 0) + 1);
        }
        return img;
      },
      5_000,
      maps,
    );
    assert.equal(src.outOfRange, 0, `case ${c} (inode ${slot.ino}, ${edit}): read outside the image`);
    assertSafeMaps(kind, src, maps, `case ${c} (inode ${slot.ino}, ${edit})`);
    for (const g of got) {
      const [, status, detail] = g.split('\t');
      if (status === 'ERR') errors.set(detail!, (errors.get(detail!) ?? 0) + 1);
    }
    if (geometryError) refusedGeometry++;
    else decoded++;
  }
  return { cases: SC_CASES_PER_FS, refusedGeometry, decoded, errors };
}

describe('fuzzed images: typed errors or correct results, never crashes, hangs or extents outside the data area', () => {
  let work = '';
  let src = '';
  before(() => {
    work = tmpDir('homi-fuzz-');
    src = path.join(work, 'src');
    fs.mkdirSync(src);
    buildTree(src, { bigDir: 700, large: 512 * 1024 }, 77);
    const bigNames = fs.readdirSync(path.join(src, 'big')).sort();
    LOOKUPS = [...LOOKUPS, `/big/${bigNames[0]}`, `/big/${bigNames[350]}`, `/big/${bigNames[699]}`];
  });
  after(() => rmTree(work));

  test(
    `XFS: ${CASES_PER_FS} corrupted images, ${SC_CASES_PER_FS} self-consistent ones; decoded extents stay in the data area`,
    { skip: !haveTool('mkfs.xfs') && 'mkfs.xfs not installed', timeout: 120_000 },
    (t) => {
      const img = path.join(work, 'f.xfs');
      mkXfs(img, src, 48);
      const r = fuzz('xfs', img, Number(process.env['HOMI_FUZZ_SEED'] ?? 0xc0ffee));
      t.diagnostic(`identical ${r.identical}/${r.cases}; errors ${JSON.stringify([...r.errors])}`);
      assert.ok(r.corrupt > 20, `corruption detected: ${JSON.stringify([...r.errors])}`);
      const sc = fuzzSelfConsistent('xfs', img, Number(process.env['HOMI_FUZZ_SEED'] ?? 0x5eed));
      t.diagnostic(`self-consistent: ${sc.refusedGeometry}/${sc.cases} refused by the geometry checks, ${sc.decoded} decoded inside the data area; errors ${JSON.stringify([...sc.errors])}`);
      assert.ok(sc.refusedGeometry > sc.cases / 3, 'most redirected records break a geometry rule');
    },
  );

  test(
    `ext4: ${CASES_PER_FS} corrupted images, ${SC_CASES_PER_FS} self-consistent ones; decoded extents stay in the data area`,
    { skip: !haveTool('mkfs.ext4') && 'mkfs.ext4 not installed', timeout: 120_000 },
    (t) => {
      const img = path.join(work, 'f.ext4');
      // small groups: several groups, superblock backups and descriptors in group 1, flex_bg metadata in group 0
      mkExt4(img, src, 48, ['-g', '4096'], { htree: true });
      const r = fuzz('ext4', img, Number(process.env['HOMI_FUZZ_SEED'] ?? 0xbadf00d));
      t.diagnostic(`identical ${r.identical}/${r.cases}; errors ${JSON.stringify([...r.errors])}`);
      assert.ok(r.corrupt > 20, `corruption detected: ${JSON.stringify([...r.errors])}`);
      const sc = fuzzSelfConsistent('ext4', img, Number(process.env['HOMI_FUZZ_SEED'] ?? 0x5eed));
      t.diagnostic(`self-consistent: ${sc.refusedGeometry}/${sc.cases} refused by the geometry checks, ${sc.decoded} decoded inside the data area; errors ${JSON.stringify([...sc.errors])}`);
      assert.ok(sc.refusedGeometry > sc.cases / 3, 'most redirected records break a geometry rule');
    },
  );
});
