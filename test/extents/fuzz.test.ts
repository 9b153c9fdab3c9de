/**
 * Robustness: corrupt real images (bit flips, byte runs, redirected pointers, zeroed runs, truncation) in the
 * metadata the decoders read, then look up paths and walk the whole tree. Every outcome must be the clean
 * result or an ExtentError (never a TypeError/RangeError, never a read outside the image, never a hang).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ext4Image } from '../../src/extents/ext4/index.js';
import type { FsImage } from '../../src/extents/fsimage.js';
import type { BlockSource } from '../../src/extents/source.js';
import { CorruptImageError, ExtentError, ImageRangeError } from '../../src/extents/types.js';
import { XfsImage } from '../../src/extents/xfs/index.js';
import { buildTree, haveTool, mkExt4, mkXfs, Rng, rmTree, tmpDir } from './fixtures.js';

const CASES_PER_FS = Number(process.env['HOMI_FUZZ_CASES'] ?? 150);

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

/** Outcomes of a fixed list of operations: a JSON result or the error's class name. */
function runOps(open: () => FsImage, budgetMs: number): string[] {
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
    for (const e of image.walk()) all.push([e.path, e.ino, e.type, e.size, e.map?.extents]);
    return all;
  });
  for (const p of LOOKUPS) guard(`map ${p}`, () => image.mapPath(p));
  guard('readdir /big', () => image.readDir(image.lookup('/big')).length);
  return out;
}

function fuzz(kind: 'xfs' | 'ext4', imgPath: string, seed: number): { cases: number; errors: Map<string, number>; identical: number } {
  const base = new Uint8Array(fs.readFileSync(imgPath));
  const make = (src: BlockSource, verify: boolean): FsImage =>
    kind === 'xfs' ? new XfsImage(src, { verifyCrc: verify }) : new Ext4Image(src, { verifyCsum: verify });
  // where the metadata is: every range the decoder reads during a clean run
  const record: [number, number][] = [];
  const clean = runOps(() => make(new PatchedSource(base, base.length, new Map(), record), true), 10_000);
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
      const o = ro + (rng.int(Math.max(1, Math.floor(rl / width))) * width);
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
    const got = runOps(() => make(src, verify), 5_000);
    assert.equal(src.outOfRange, 0, `case ${c}: read outside the image`);
    for (let i = 0; i < got.length; i++) {
      const g = got[i]!;
      const [, status, detail] = g.split('\t');
      if (status === 'ERR') {
        const name = detail!;
        errors.set(name, (errors.get(name) ?? 0) + 1);
      } else if (verify && size === base.length) {
        // with checksums on, a success must be the clean result
        assert.equal(g, clean[i], `case ${c}: op ${i} succeeded with a different result`);
      }
    }
    if (got.join('\n') === clean.join('\n')) identical++;
  }
  return { cases: CASES_PER_FS, errors, identical };
}

describe('fuzzed images: typed errors or correct results, never crashes or hangs', () => {
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

  test(`XFS: ${CASES_PER_FS} corrupted images`, { skip: !haveTool('mkfs.xfs') && 'mkfs.xfs not installed', timeout: 120_000 }, (t) => {
    const img = path.join(work, 'f.xfs');
    mkXfs(img, src, 48);
    const r = fuzz('xfs', img, Number(process.env['HOMI_FUZZ_SEED'] ?? 0xc0ffee));
    t.diagnostic(`identical ${r.identical}/${r.cases}; errors ${JSON.stringify([...r.errors])}`);
    assert.ok((r.errors.get('CorruptImageError') ?? 0) > 20, `corruption detected: ${JSON.stringify([...r.errors])}`);
  });

  test(`ext4: ${CASES_PER_FS} corrupted images`, { skip: !haveTool('mkfs.ext4') && 'mkfs.ext4 not installed', timeout: 120_000 }, (t) => {
    const img = path.join(work, 'f.ext4');
    mkExt4(img, src, 48, [], { htree: true });
    const r = fuzz('ext4', img, Number(process.env['HOMI_FUZZ_SEED'] ?? 0xbadf00d));
    t.diagnostic(`identical ${r.identical}/${r.cases}; errors ${JSON.stringify([...r.errors])}`);
    assert.ok((r.errors.get('CorruptImageError') ?? 0) > 20, `corruption detected: ${JSON.stringify([...r.errors])}`);
  });
});
