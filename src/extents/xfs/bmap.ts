/**
 * XFS block mapping: packed 128-bit extent records and the long-form BMAP B+tree (root in the inode fork,
 * 'BMA3' blocks below it).
 */
import { Bin } from '../bin.js';
import type { ExtentSite } from '../bounds.js';
import { crc32cSkipField } from '../crc32c.js';
import { CorruptImageError } from '../types.js';

export const XFS_BMAP_CRC_MAGIC = 0x424d4133; // 'BMA3'
export const BMBT_REC_LEN = 16;
/** Header of a v5 long-form btree block. */
export const LBLOCK_CRC_LEN = 72;
const LBLOCK_CRC_OFF = 64;
/** No real bmap btree is this deep (the maximum for 2^64 records in 4 KiB blocks is 9). */
export const MAX_BMBT_LEVELS = 10;
/**
 * The largest file offset in blocks a mapping may reach (XFS_MAX_FILEOFF: the 54-bit startoff field all ones).
 * A bigint: 2^54 - 1 has no exact JavaScript number.
 */
export const XFS_MAX_FILEOFF = (1n << 54n) - 1n;

export interface BmbtRec {
  /** Logical offset in file system blocks. */
  startoff: number;
  /** File system block number (agno << agblklog | agbno). */
  startblock: number;
  blockcount: number;
  unwritten: boolean;
}

/** Decode one record: bit 127 unwritten, 126..73 startoff, 72..21 startblock, 20..0 blockcount. */
export function decodeBmbtRec(b: Bin, o: number): BmbtRec {
  b.check(o, 16);
  const w0 = b.dv.getUint32(o, false);
  const w1 = b.dv.getUint32(o + 4, false);
  const w2 = b.dv.getUint32(o + 8, false);
  const w3 = b.dv.getUint32(o + 12, false);
  return {
    unwritten: w0 >>> 31 === 1,
    startoff: (w0 & 0x7fffffff) * 0x80_0000 + (w1 >>> 9),
    startblock: (w1 & 0x1ff) * 2 ** 43 + w2 * 2048 + (w3 >>> 21),
    blockcount: w3 & 0x1fffff,
  };
}

/** The startoff of the record in `rec` (16 bytes) exactly, for values a number would round (2^53 and above). */
export function bmbtStartoffExact(rec: Uint8Array): bigint {
  const dv = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
  return (BigInt(dv.getUint32(0, false) & 0x7fffffff) << 23n) | BigInt(dv.getUint32(4, false) >>> 9);
}

/** Encode one record (for tests and synthetic images). */
export function encodeBmbtRec(r: BmbtRec, out: Uint8Array, o: number): void {
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const so = r.startoff;
  const sb = r.startblock;
  const w0 = ((r.unwritten ? 0x80000000 : 0) | Math.floor(so / 0x80_0000)) >>> 0;
  const w1 = (((so % 0x80_0000) << 9) | Math.floor(sb / 2 ** 43)) >>> 0;
  const w2 = (Math.floor(sb / 2048) % 0x1_0000_0000) >>> 0;
  const w3 = (((sb % 2048) << 21) | (r.blockcount & 0x1fffff)) >>> 0;
  dv.setUint32(o, w0, false);
  dv.setUint32(o + 4, w1, false);
  dv.setUint32(o + 8, w2, false);
  dv.setUint32(o + 12, w3, false);
}

/** What the btree walker needs from the file system. */
export interface BmapContext {
  blockSize: number;
  metaUuid: Uint8Array;
  verifyCrc: boolean;
  /** Validate `fsb` and read that block; the Bin's base is its image byte offset. `site` says who points at it. */
  readFsBlock(fsb: number, structure: string, site?: ExtentSite): Bin;
  /** Called for every leaf record as it is read (`at`: its image byte offset); throws to refuse it. */
  checkRecord?(rec: BmbtRec, index: number, at: number): void;
}

/** Records of an extents-format fork: `n` records packed from offset 0. */
export function readExtentList(fork: Bin, n: number): BmbtRec[] {
  if (n * BMBT_REC_LEN > fork.length) fork.fail(`${n} extents do not fit the ${fork.length}-byte fork`);
  const out: BmbtRec[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = decodeBmbtRec(fork, i * BMBT_REC_LEN);
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * All records of a btree-format fork. `root` is the fork area of the inode (an xfs_bmdr_block: level,
 * numrecs, keys[maxrecs], ptrs[maxrecs]); `expected` is the inode's extent count (the walk stops with an
 * error rather than read more).
 */
export function readBmbtTree(root: Bin, ino: number, ctx: BmapContext, expected: number): BmbtRec[] {
  const RS = 'xfs bmbt root';
  const level = root.u16be(0);
  const numrecs = root.u16be(2);
  const rootMax = Math.floor((root.length - 4) / 16);
  if (level < 1 || level >= MAX_BMBT_LEVELS) root.fail(`level ${level} out of range`);
  if (numrecs < 1 || numrecs > rootMax) root.fail(`numrecs ${numrecs} not in 1..${rootMax}`);
  const out: BmbtRec[] = [];
  const visited = new Set<number>();
  const blockMax = Math.floor((ctx.blockSize - LBLOCK_CRC_LEN) / 16);
  const leafMax = Math.floor((ctx.blockSize - LBLOCK_CRC_LEN) / BMBT_REC_LEN);

  const visit = (fsb: number, wantLevel: number, minKey: number, at: number): void => {
    if (visited.has(fsb)) throw new CorruptImageError('xfs bmbt block', at, `block ${fsb} visited twice (cycle)`);
    visited.add(fsb);
    const b = ctx.readFsBlock(fsb, 'xfs bmbt block', { structure: 'xfs bmbt pointer', at, ino, what: `bmap btree block ${fsb} (level ${wantLevel})` });
    if (b.u32be(0) !== XFS_BMAP_CRC_MAGIC) b.fail(`bad magic 0x${b.u32be(0).toString(16)}`);
    if (ctx.verifyCrc) {
      const want = b.u32le(LBLOCK_CRC_OFF);
      const got = crc32cSkipField(b.buf, LBLOCK_CRC_OFF);
      if (want !== got) b.fail(`CRC mismatch (stored ${want.toString(16)}, computed ${got.toString(16)})`, LBLOCK_CRC_OFF);
    }
    const lvl = b.u16be(4);
    const n = b.u16be(6);
    if (lvl !== wantLevel) b.fail(`level ${lvl}, expected ${wantLevel}`, 4);
    if (b.u64be(24, 'bb_blkno') !== b.base / 512) b.fail(`bb_blkno ${b.u64be(24)} does not match its location`, 24);
    if (!sameBytes(b.bytes(40, 16), ctx.metaUuid)) b.fail('UUID does not match the file system', 40);
    if (b.u64be(56, 'bb_owner') !== ino) b.fail(`owner ${b.u64be(56)} is not inode ${ino}`, 56);
    if (lvl === 0) {
      if (n < 1 || n > leafMax) b.fail(`numrecs ${n} not in 1..${leafMax}`, 6);
      if (out.length + n > expected) b.fail(`more records than the inode's ${expected} extents`, 6);
      for (let i = 0; i < n; i++) {
        const r = decodeBmbtRec(b, LBLOCK_CRC_LEN + i * BMBT_REC_LEN);
        if (i === 0 && r.startoff < minKey) b.fail(`first record offset ${r.startoff} below its key ${minKey}`, LBLOCK_CRC_LEN);
        ctx.checkRecord?.(r, out.length, b.base + LBLOCK_CRC_LEN + i * BMBT_REC_LEN);
        out.push(r);
      }
      return;
    }
    if (n < 1 || n > blockMax) b.fail(`numrecs ${n} not in 1..${blockMax}`, 6);
    const ptrOff = LBLOCK_CRC_LEN + blockMax * 8;
    for (let i = 0; i < n; i++) {
      const key = b.u64be(LBLOCK_CRC_LEN + i * 8, 'bmbt key');
      if (key < minKey) b.fail(`keys out of order at ${i}`, LBLOCK_CRC_LEN + i * 8);
      minKey = key;
      visit(b.u64be(ptrOff + i * 8, 'bmbt pointer'), lvl - 1, key, b.base + ptrOff + i * 8);
    }
  };

  const ptrOff = 4 + rootMax * 8;
  let minKey = 0;
  for (let i = 0; i < numrecs; i++) {
    const key = root.u64be(4 + i * 8, 'bmbt key');
    if (key < minKey) throw new CorruptImageError(RS, root.base + 4 + i * 8, `keys out of order at ${i}`);
    minKey = key;
    visit(root.u64be(ptrOff + i * 8, 'bmbt pointer'), level - 1, key, root.base + ptrOff + i * 8);
  }
  if (out.length !== expected) throw new CorruptImageError(RS, root.base, `btree holds ${out.length} records, inode says ${expected}`);
  return out;
}
