/** XFS (v5, CRC-enabled) on-disk decoder: inodes, data forks, directories, symlinks, path lookup. */
import { Bin, decodeName } from '../bin.js';
import { crc32cSkipField } from '../crc32c.js';
import { FsImage, typeFromDirent, typeFromMode, type DirEntry, type InodeInfo } from '../fsimage.js';
import type { BlockSource } from '../source.js';
import { blockBytes, blockSpan, isExact, plural, type ExtentSite } from '../bounds.js';
import { BadExtentError, CorruptImageError, INODE_CACHE_ENTRIES, PathLookupError, UnsupportedFeatureError, type Extent, type ExtentRule, type FileMap, type FileType } from '../types.js';
import { BMBT_REC_LEN, bmbtStartoffExact, readBmbtTree, readExtentList, XFS_MAX_FILEOFF, type BmapContext, type BmbtRec } from './bmap.js';
import { readXfsSuperblock, type XfsSuperblock } from './superblock.js';
import { LruCache } from '../../util/lru.js';

export { readXfsSuperblock, XFS_AGFL_SECTOR, XFS_SB, type XfsSuperblock } from './superblock.js';
export { bmbtStartoffExact, decodeBmbtRec, encodeBmbtRec, readBmbtTree, readExtentList, XFS_MAX_FILEOFF, type BmbtRec, type BmapContext } from './bmap.js';

const INODE_MAGIC = 0x494e; // 'IN'
const DINODE_CORE_V3 = 176;
const DINODE_CRC_OFF = 100;
const DIR3_DATA_MAGIC = 0x58444433; // 'XDD3'
const DIR3_BLOCK_MAGIC = 0x58444233; // 'XDB3'
const DIR3_DATA_HDR = 64;
const DIR3_CRC_OFF = 4;
const SYMLINK_MAGIC = 0x58534c4d; // 'XSLM'
const SYMLINK_HDR = 56;
const SYMLINK_MAXLEN = 1024;
const LEAF_OFFSET_BYTES = 2 ** 35; // 32 GiB: data blocks live below this offset in a directory
const DIFLAG_REALTIME = 0x1;
const DIFLAG2_NREXT64 = 1 << 4;

export const XFS_FORMAT = { DEV: 0, LOCAL: 1, EXTENTS: 2, BTREE: 3 } as const;

export interface XfsInode {
  ino: number;
  mode: number;
  type: FileType;
  format: number;
  size: number;
  nlink: number;
  nextents: number;
  flags: number;
  flags2: number;
  /** The data fork area inside the inode. */
  fork: Bin;
  /** Image byte offset of the inode. */
  offset: number;
}

export interface XfsOptions {
  /** Verify metadata CRCs (default true). */
  verifyCrc?: boolean;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class XfsImage extends FsImage {
  readonly fsType = 'xfs' as const;
  readonly sb: XfsSuperblock;
  readonly blockSize: number;
  readonly rootIno: number;
  readonly verifyCrc: boolean;
  private readonly inoShift: number;
  private readonly bmapCtx: BmapContext;
  private readonly dirBlockSize: number;
  private readonly inodeCache = new LruCache<number, XfsInode>(INODE_CACHE_ENTRIES);
  /** First block of the internal log counted linearly (agno * agblocks + agbno), or -1 when the log is external. */
  private readonly logLinear: number;

  constructor(
    readonly source: BlockSource,
    opts: XfsOptions = {},
  ) {
    super();
    this.verifyCrc = opts.verifyCrc ?? true;
    this.sb = readXfsSuperblock(source, this.verifyCrc);
    this.blockSize = this.sb.blockSize;
    this.inoShift = this.sb.agBlockLog + this.sb.inoPerBlockLog;
    this.dirBlockSize = this.sb.blockSize << this.sb.dirBlockLog;
    this.bmapCtx = {
      blockSize: this.blockSize,
      metaUuid: this.sb.metaUuid,
      verifyCrc: this.verifyCrc,
      readFsBlock: (fsb, structure, site) => this.readFsBlock(fsb, structure, 1, site),
    };
    this.rootIno = this.sb.rootIno;
    if (this.sb.logStart === 0) this.logLinear = -1;
    else {
      const agno = Math.floor(this.sb.logStart / 2 ** this.sb.agBlockLog);
      this.logLinear = agno * this.sb.agBlocks + (this.sb.logStart - agno * 2 ** this.sb.agBlockLog);
    }
    this.checkIno(this.rootIno, 'xfs superblock');
  }

  /** Blocks in AG `agno` (the last AG may be short). */
  agSize(agno: number): number {
    return agno === this.sb.agCount - 1 ? this.sb.dblocks - agno * this.sb.agBlocks : this.sb.agBlocks;
  }

  /**
   * Refuse `count` blocks at file system block `fsb` (agno << agblklog | agbno) unless they are exact and
   * non-empty, lie inside one existing AG and inside sb_dblocks, and overlap neither the AG headers nor the
   * internal log; their byte offset.
   */
  dataBlocks(fsb: number, count: number, site: ExtentSite): number {
    const sb = this.sb;
    const bad = (rule: ExtentRule, detail: string): never => {
      throw new BadExtentError(site.structure, site.at, site.ino, site.what, rule, detail);
    };
    if (!isExact(fsb) || !isExact(count)) bad('not an exact integer', `block ${fsb}, ${count} blocks`);
    if (count === 0) bad('zero length', `no blocks at block ${fsb}`);
    const agno = Math.floor(fsb / 2 ** sb.agBlockLog);
    const agbno = fsb - agno * 2 ** sb.agBlockLog;
    if (agno >= sb.agCount) bad('outside the data area', `AG ${agno} does not exist (sb_agcount ${sb.agCount})`);
    if (agbno >= sb.agBlocks) bad('outside the data area', `AG block ${agbno} is past the ${sb.agBlocks} blocks of an AG`);
    const agLen = this.agSize(agno);
    if (agbno + count > agLen) {
      bad(
        'outside the data area',
        agno === sb.agCount - 1
          ? `AG ${agno} block ${agbno} + ${plural(count)} ends past the end of the file system (${sb.dblocks} blocks)`
          : `AG ${agno} block ${agbno} + ${plural(count)} ends past the end of the AG (${agLen} blocks; an extent never spans AGs)`,
      );
    }
    const linear = agno * sb.agBlocks + agbno;
    if (linear + count > sb.dblocks) bad('outside the data area', `blocks ${linear}..${linear + count - 1} end past sb_dblocks ${sb.dblocks}`);
    if (agbno < sb.agHeaderBlocks) {
      bad('overlaps metadata', `headers of AG ${agno} (superblock, AGF, AGI, AGFL: AG ${blockSpan(0, sb.agHeaderBlocks)})`);
    }
    if (this.logLinear >= 0 && linear < this.logLinear + sb.logBlocks && linear + count > this.logLinear) {
      bad('overlaps metadata', `internal log (${plural(sb.logBlocks)} from block ${sb.logStart}; this extent is at AG ${agno} block ${agbno})`);
    }
    return blockBytes(linear, this.blockSize, site);
  }

  /** Byte offset of file system block `fsb`; validates it as dataBlocks does (without an inode to name). */
  fsbToByte(fsb: number, count: number, structure: string): number {
    return this.dataBlocks(fsb, count, { structure, at: -1, ino: -1, what: `${plural(count)} at block ${fsb}` });
  }

  readFsBlock(fsb: number, structure: string, count = 1, site?: ExtentSite): Bin {
    const off = this.dataBlocks(fsb, count, site ?? { structure, at: -1, ino: -1, what: `${plural(count)} at block ${fsb}` });
    return new Bin(this.source.read(off, count * this.blockSize), structure, off);
  }

  /**
   * Refuse a mapping record unless its file range stays within XFS_MAX_FILEOFF blocks with exact byte values,
   * and its blocks pass dataBlocks. `index` and `at` (the record's byte offset) are for the message.
   */
  checkRecord(ino: number, r: BmbtRec, index: number, at: number, structure: string): void {
    const bs = this.blockSize;
    // a number has rounded offsets of 2^53 blocks and more: those are read exactly from the record's bytes
    const exactStart = (): bigint => bmbtStartoffExact(this.source.read(at, BMBT_REC_LEN));
    const what = `extent ${index} (file block ${isExact(r.startoff) ? r.startoff : exactStart()}, block ${r.startblock}, ${plural(r.blockcount)})`;
    const bad = (rule: ExtentRule, detail: string): never => {
      throw new BadExtentError(structure, at, ino, what, rule, detail);
    };
    if (r.blockcount === 0) bad('zero length', 'br_blockcount is 0');
    const end = r.startoff + r.blockcount;
    if (!isExact(r.startoff) || !isExact(end)) {
      const exactEnd = exactStart() + BigInt(r.blockcount);
      if (exactEnd > XFS_MAX_FILEOFF) bad('beyond the format limit', `ends at file block ${exactEnd}, past the limit of 2^54 - 1`);
      bad('not an exact integer', `ends at file block ${exactEnd}, file byte ${exactEnd * BigInt(bs)}, past 2^53`);
    }
    if (!isExact(end * bs)) bad('not an exact integer', `ends at file byte ${BigInt(end) * BigInt(bs)}, past 2^53`);
    this.dataBlocks(r.startblock, r.blockcount, { structure, at, ino, what });
  }

  /** Where inode `ino` lives (AG, AG block, index in block, byte offset). */
  inodeLocation(ino: number): { agno: number; agbno: number; index: number; offset: number } {
    const agno = Math.floor(ino / 2 ** this.inoShift);
    const agino = ino - agno * 2 ** this.inoShift;
    const agbno = Math.floor(agino / this.sb.inoPerBlock);
    const index = agino - agbno * this.sb.inoPerBlock;
    const offset = blockBytes(agno * this.sb.agBlocks + agbno, this.blockSize, { structure: 'xfs inode', at: -1, ino, what: `inode ${ino}'s block` }) + index * this.sb.inodeSize;
    return { agno, agbno, index, offset };
  }

  private checkIno(ino: number, structure: string): void {
    if (!Number.isSafeInteger(ino) || ino <= 0) throw new CorruptImageError(structure, -1, `bad inode number ${ino}`);
    const agno = Math.floor(ino / 2 ** this.inoShift);
    const agbno = Math.floor((ino - agno * 2 ** this.inoShift) / this.sb.inoPerBlock);
    if (agno >= this.sb.agCount || agbno >= this.agSize(agno)) {
      throw new CorruptImageError(structure, -1, `inode number ${ino} lies outside the file system`);
    }
    const linear = agno * this.sb.agBlocks + agbno;
    if (agbno < this.sb.agHeaderBlocks || (this.logLinear >= 0 && linear >= this.logLinear && linear < this.logLinear + this.sb.logBlocks)) {
      throw new CorruptImageError(structure, -1, `inode number ${ino} lies in the ${agbno < this.sb.agHeaderBlocks ? `headers of AG ${agno}` : 'internal log'}`);
    }
  }

  readInode(ino: number): XfsInode {
    const cached = this.inodeCache.get(ino);
    if (cached !== undefined) return cached;
    this.checkIno(ino, 'xfs inode');
    const { offset } = this.inodeLocation(ino);
    const S = 'xfs inode';
    const b = new Bin(this.source.read(offset, this.sb.inodeSize), S, offset);
    if (b.u16be(0) !== INODE_MAGIC) b.fail(`inode ${ino}: bad magic 0x${b.u16be(0).toString(16)}`);
    const version = b.u8(4);
    if (version !== 3) b.fail(`inode ${ino}: version ${version} is not 3`, 4);
    if (this.verifyCrc) {
      const want = b.u32le(DINODE_CRC_OFF);
      const got = crc32cSkipField(b.buf, DINODE_CRC_OFF);
      if (want !== got) b.fail(`inode ${ino}: CRC mismatch (stored ${want.toString(16)}, computed ${got.toString(16)})`, DINODE_CRC_OFF);
    }
    if (b.u64be(152, 'di_ino') !== ino) b.fail(`inode ${ino}: di_ino is ${b.u64be(152)}`, 152);
    if (!sameBytes(b.bytes(160, 16), this.sb.metaUuid)) b.fail(`inode ${ino}: UUID does not match the file system`, 160);
    const mode = b.u16be(2);
    if (mode === 0) b.fail(`inode ${ino} is free (mode 0) but referenced`, 2);
    const type = typeFromMode(mode);
    if (type === 'unknown') b.fail(`inode ${ino}: bad mode 0${mode.toString(8)}`, 2);
    const format = b.u8(5);
    const size = b.u64be(56, 'di_size');
    const flags = b.u16be(90);
    const flags2 = b.u64be(120, 'di_flags2');
    const nextents = this.sb.nrext64 && flags2 & DIFLAG2_NREXT64 ? b.u64be(24, 'di_big_nextents') : b.u32be(76);
    const forkoff = b.u8(82);
    const litSize = this.sb.inodeSize - DINODE_CORE_V3;
    const forkSize = forkoff === 0 ? litSize : forkoff * 8;
    if (forkSize > litSize) b.fail(`inode ${ino}: di_forkoff ${forkoff} beyond the inode`, 82);
    const fork = b.sub(DINODE_CORE_V3, forkSize, 'xfs inode data fork');
    switch (type) {
      case 'file':
        if (format !== XFS_FORMAT.EXTENTS && format !== XFS_FORMAT.BTREE) b.fail(`inode ${ino}: regular file in format ${format}`, 5);
        break;
      case 'dir':
      case 'symlink':
        if (format !== XFS_FORMAT.LOCAL && format !== XFS_FORMAT.EXTENTS && format !== XFS_FORMAT.BTREE) b.fail(`inode ${ino}: ${type} in format ${format}`, 5);
        if (format === XFS_FORMAT.LOCAL && size > forkSize) b.fail(`inode ${ino}: local ${type} of ${size} bytes exceeds the ${forkSize}-byte fork`, 56);
        break;
      default:
        if (format !== XFS_FORMAT.DEV) b.fail(`inode ${ino}: ${type} in format ${format}`, 5);
    }
    if (type === 'symlink' && (size === 0 || size > SYMLINK_MAXLEN)) b.fail(`inode ${ino}: symlink length ${size}`, 56);
    const inode: XfsInode = { ino, mode, type, format, size, nlink: b.u32be(16), nextents, flags, flags2, fork, offset };
    this.inodeCache.set(ino, inode);
    return inode;
  }

  stat(ino: number): InodeInfo {
    const i = this.readInode(ino);
    return { ino, type: i.type, mode: i.mode, size: i.size, nlink: i.nlink };
  }

  /** The validated block map of the data fork (sorted, non-overlapping, inside the file system). */
  blockMap(inode: XfsInode): BmbtRec[] {
    let recs: BmbtRec[];
    if (inode.format === XFS_FORMAT.EXTENTS) {
      const S = 'xfs inode extent list';
      recs = readExtentList(new Bin(inode.fork.buf, S, inode.fork.base), inode.nextents);
      for (const [i, r] of recs.entries()) this.checkRecord(inode.ino, r, i, inode.fork.base + i * BMBT_REC_LEN, S);
    } else if (inode.format === XFS_FORMAT.BTREE) {
      const maxInFork = Math.floor(inode.fork.length / 16);
      if (inode.nextents <= maxInFork) {
        throw new CorruptImageError('xfs bmbt root', inode.fork.base, `btree format with only ${inode.nextents} extents`);
      }
      const ctx: BmapContext = { ...this.bmapCtx, checkRecord: (r, i, at) => this.checkRecord(inode.ino, r, i, at, 'xfs bmbt block') };
      recs = readBmbtTree(new Bin(inode.fork.buf, 'xfs bmbt root', inode.fork.base), inode.ino, ctx, inode.nextents);
    } else {
      return [];
    }
    let end = 0;
    const S = inode.format === XFS_FORMAT.BTREE ? 'xfs bmbt block' : 'xfs inode extent list';
    for (const r of recs) {
      if (r.startoff < end) throw new CorruptImageError(S, inode.offset, `inode ${inode.ino}: extents overlap or are out of order at ${r.startoff}`);
      end = r.startoff + r.blockcount;
    }
    return recs;
  }

  mapInode(ino: number, path = `inode ${ino}`): FileMap {
    const inode = this.readInode(ino);
    if (inode.type === 'file' && inode.flags & DIFLAG_REALTIME) throw new UnsupportedFeatureError('XFS realtime file', path);
    const extents: Extent[] = [];
    if (inode.format === XFS_FORMAT.LOCAL) {
      if (inode.size > 0) extents.push({ logical: 0, physical: inode.fork.base, length: inode.size, flags: ['inline', 'last'] });
    } else if (inode.format === XFS_FORMAT.EXTENTS || inode.format === XFS_FORMAT.BTREE) {
      const bs = this.blockSize;
      for (const [i, r] of this.blockMap(inode).entries()) {
        const site: ExtentSite = { structure: 'xfs extent', at: -1, ino, what: `extent ${i}` };
        extents.push({
          logical: blockBytes(r.startoff, bs, site),
          physical: this.dataBlocks(r.startblock, r.blockcount, site),
          length: blockBytes(r.blockcount, bs, site),
          flags: r.unwritten ? ['unwritten'] : [],
        });
      }
      if (extents.length > 0) extents[extents.length - 1]!.flags.push('last');
    }
    return { path, ino, size: inode.size, type: inode.type, extents };
  }

  readDir(ino: number): DirEntry[] {
    const inode = this.readInode(ino);
    if (inode.type !== 'dir') throw new PathLookupError(`inode ${ino}`, 'not a directory');
    if (inode.format === XFS_FORMAT.LOCAL) return this.readShortformDir(inode);
    const out: DirEntry[] = [];
    const bs = this.blockSize;
    const fsbPerDirBlock = 1 << this.sb.dirBlockLog;
    const leafFsb = LEAF_OFFSET_BYTES / bs;
    const recs = this.blockMap(inode);
    // logical fs block -> fs block number, for the data segment only
    const blocks: { lblk: number; fsb: number }[] = [];
    for (const r of recs) {
      if (r.startoff >= leafFsb) break;
      if (r.unwritten) throw new CorruptImageError('xfs dir2 data', inode.offset, `directory ${ino} has an unwritten extent`);
      const n = Math.min(r.blockcount, leafFsb - r.startoff);
      for (let i = 0; i < n; i++) blocks.push({ lblk: r.startoff + i, fsb: r.startblock + i });
    }
    const single = blocks.length === fsbPerDirBlock && !recs.some((r) => r.startoff >= leafFsb);
    let i = 0;
    while (i < blocks.length) {
      const first = blocks[i]!;
      if (first.lblk % fsbPerDirBlock !== 0) throw new CorruptImageError('xfs dir2 data', -1, `directory ${ino}: block ${first.lblk} is not at a directory block boundary`);
      let db: Bin;
      if (fsbPerDirBlock === 1) {
        db = this.readFsBlock(first.fsb, 'xfs dir2 data');
      } else {
        const buf = new Uint8Array(this.dirBlockSize);
        for (let k = 0; k < fsbPerDirBlock; k++) {
          const part = blocks[i + k];
          if (part === undefined || part.lblk !== first.lblk + k) throw new CorruptImageError('xfs dir2 data', -1, `directory ${ino}: directory block at ${first.lblk} is partly unmapped`);
          buf.set(this.readFsBlock(part.fsb, 'xfs dir2 data').buf, k * bs);
        }
        db = new Bin(buf, 'xfs dir2 data', this.fsbToByte(first.fsb, 1, 'xfs dir2 data'));
      }
      this.parseDataBlock(db, ino, single && first.lblk === 0, out);
      i += fsbPerDirBlock;
    }
    return out;
  }

  private parseDataBlock(db: Bin, ino: number, blockForm: boolean, out: DirEntry[]): void {
    const magic = db.u32be(0);
    const isBlock = magic === DIR3_BLOCK_MAGIC;
    if (!isBlock && magic !== DIR3_DATA_MAGIC) db.fail(`directory ${ino}: bad magic 0x${magic.toString(16)}`);
    if (isBlock !== blockForm) db = new Bin(db.buf, isBlock ? 'xfs dir2 block' : 'xfs dir2 data', db.base);
    if (isBlock && !blockForm) db.fail(`directory ${ino}: block-format header in a multi-block directory`);
    if (!isBlock && blockForm) db.fail(`directory ${ino}: data header in a single-block directory`);
    if (this.verifyCrc) {
      const want = db.u32le(DIR3_CRC_OFF);
      const got = crc32cSkipField(db.buf, DIR3_CRC_OFF);
      if (want !== got) db.fail(`CRC mismatch (stored ${want.toString(16)}, computed ${got.toString(16)})`, DIR3_CRC_OFF);
    }
    if (db.u64be(8, 'blkno') !== db.base / 512) db.fail(`blkno ${db.u64be(8)} does not match its location`, 8);
    if (!sameBytes(db.bytes(24, 16), this.sb.metaUuid)) db.fail('UUID does not match the file system', 24);
    if (db.u64be(40, 'owner') !== ino) db.fail(`owner ${db.u64be(40)} is not directory ${ino}`, 40);
    let end = db.length;
    if (isBlock) {
      const count = db.u32be(db.length - 8);
      const stale = db.u32be(db.length - 4);
      end = db.length - 8 - count * 8;
      if (stale > count || end < DIR3_DATA_HDR) db.fail(`leaf count ${count} (stale ${stale}) does not fit the block`, db.length - 8);
    }
    const ftype = this.sb.ftype;
    let pos = DIR3_DATA_HDR;
    while (pos < end) {
      if (db.u16be(pos) === 0xffff) {
        const len = db.u16be(pos + 2);
        if (len < 8 || len % 8 !== 0 || pos + len > end) db.fail(`free space of ${len} bytes at +${pos}`, pos);
        if (db.u16be(pos + len - 2) !== pos) db.fail(`free space tag mismatch at +${pos}`, pos);
        pos += len;
        continue;
      }
      const entIno = db.u64be(pos, 'entry inode');
      const namelen = db.u8(pos + 8);
      if (namelen === 0) db.fail(`zero-length name at +${pos}`, pos);
      const entsize = (8 + 1 + namelen + (ftype ? 1 : 0) + 2 + 7) & ~7;
      if (pos + entsize > end) db.fail(`entry at +${pos} runs past the data area`, pos);
      if (db.u16be(pos + entsize - 2) !== pos) db.fail(`entry tag mismatch at +${pos}`, pos);
      const nameBytes = db.bytes(pos + 9, namelen);
      const t = ftype ? db.u8(pos + 9 + namelen) : 0;
      pos += entsize;
      if ((namelen === 1 && nameBytes[0] === 0x2e) || (namelen === 2 && nameBytes[0] === 0x2e && nameBytes[1] === 0x2e)) continue;
      for (const c of nameBytes) if (c === 0x2f || c === 0) db.fail(`name contains '/' or NUL`, pos - entsize);
      this.checkIno(entIno, db.structure);
      out.push({ name: decodeName(nameBytes), ino: entIno, type: typeFromDirent(t) });
    }
  }

  private readShortformDir(inode: XfsInode): DirEntry[] {
    const S = 'xfs dir2 shortform';
    const size = inode.size;
    const b = new Bin(inode.fork.buf.subarray(0, Math.min(size, inode.fork.length)), S, inode.fork.base);
    const count = b.u8(0);
    const i8 = b.u8(1);
    const inoLen = i8 ? 8 : 4;
    if (i8 > count) b.fail(`i8count ${i8} exceeds count ${count}`, 1);
    const readIno = (o: number): number => (i8 ? b.u64be(o, 'inode number') : b.u32be(o));
    this.checkIno(readIno(2), S);
    let pos = 2 + inoLen;
    const out: DirEntry[] = [];
    const ftype = this.sb.ftype;
    let lastOff = 0;
    for (let k = 0; k < count; k++) {
      const namelen = b.u8(pos);
      if (namelen === 0) b.fail(`entry ${k}: zero-length name`, pos);
      const off = b.u16be(pos + 1);
      if (off < lastOff) b.fail(`entry ${k}: offsets out of order`, pos + 1);
      lastOff = off;
      const nameBytes = b.bytes(pos + 3, namelen);
      const t = ftype ? b.u8(pos + 3 + namelen) : 0;
      const entIno = readIno(pos + 3 + namelen + (ftype ? 1 : 0));
      pos += 3 + namelen + (ftype ? 1 : 0) + inoLen;
      for (const c of nameBytes) if (c === 0x2f || c === 0) b.fail(`entry ${k}: name contains '/' or NUL`, pos);
      this.checkIno(entIno, S);
      out.push({ name: decodeName(nameBytes), ino: entIno, type: typeFromDirent(t) });
    }
    if (pos !== size) b.fail(`entries end at ${pos}, directory size is ${size}`);
    return out;
  }

  readLink(ino: number): string {
    const inode = this.readInode(ino);
    if (inode.type !== 'symlink') throw new PathLookupError(`inode ${ino}`, 'bad path');
    if (inode.format === XFS_FORMAT.LOCAL) return decodeName(inode.fork.bytes(0, inode.size));
    const parts: Uint8Array[] = [];
    let got = 0;
    for (const r of this.blockMap(inode)) {
      for (let k = 0; k < r.blockcount && got < inode.size; k++) {
        const b = this.readFsBlock(r.startblock + k, 'xfs symlink block');
        if (b.u32be(0) !== SYMLINK_MAGIC) b.fail(`bad magic 0x${b.u32be(0).toString(16)}`);
        if (this.verifyCrc) {
          const want = b.u32le(12);
          const got2 = crc32cSkipField(b.buf, 12);
          if (want !== got2) b.fail(`CRC mismatch (stored ${want.toString(16)}, computed ${got2.toString(16)})`, 12);
        }
        if (b.u64be(32, 'owner') !== ino) b.fail(`owner is not inode ${ino}`, 32);
        const off = b.u32be(4);
        const n = b.u32be(8);
        if (off !== got || n === 0 || n > this.blockSize - SYMLINK_HDR || got + n > inode.size) b.fail(`bad offset ${off} / length ${n}`, 4);
        parts.push(b.bytes(SYMLINK_HDR, n));
        got += n;
      }
    }
    if (got !== inode.size) throw new CorruptImageError('xfs symlink block', inode.offset, `symlink ${ino}: found ${got} of ${inode.size} bytes`);
    const all = new Uint8Array(got);
    let p = 0;
    for (const x of parts) {
      all.set(x, p);
      p += x.length;
    }
    return decodeName(all);
  }
}
