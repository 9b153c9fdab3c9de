/** ext4 on-disk decoder: group descriptors, inodes, extent trees, block maps, inline data, directories, symlinks. */
import { Bin, decodeName } from '../bin.js';
import { crc32cRaw, crc32cRawSkipField } from '../crc32c.js';
import { FsImage, typeFromDirent, typeFromMode, type DirEntry, type InodeInfo } from '../fsimage.js';
import type { BlockSource } from '../source.js';
import { blockBytes, blockSpan, isExact, plural, type ExtentSite } from '../bounds.js';
import { BadExtentError, CorruptImageError, INODE_CACHE_ENTRIES, PathLookupError, type Extent, type ExtentFlag, type ExtentRule, type FileMap, type FileType } from '../types.js';
import { BG_INODE_UNINIT, Ext4Geometry, GD } from './geometry.js';
import { groupDescOffset, INCOMPAT, readExt4Superblock, type Ext4Superblock } from './superblock.js';
import { LruCache } from '../../util/lru.js';

export { readExt4Superblock, groupDescOffset, groupHasSuper, groupBaseMetadata, groupFirstBlock, type Ext4Superblock } from './superblock.js';
export { Ext4Geometry } from './geometry.js';

export const EXT4_ROOT_INO = 2;
const EXTENT_MAGIC = 0xf30a;
const EXT_INIT_MAX_LEN = 32768;
const MAX_EXTENT_DEPTH = 5;
/**
 * Logical block numbers are 32 bits and 0xffffffff is the kernel's "no block" sentinel (EXT_MAX_BLOCKS), so a
 * run must end at or below it; the largest file is this many blocks (s_maxbytes).
 */
export const EXT4_MAX_LOGICAL_BLOCKS = 0xffff_ffff;
export const EXT4_FL = {
  ENCRYPT: 0x800,
  INDEX: 0x1000,
  EXTENTS: 0x80000,
  EA_INODE: 0x200000,
  INLINE_DATA: 0x10000000,
} as const;
const I_BLOCK = 40;
const I_BLOCK_LEN = 60;
const XATTR_MAGIC = 0xea020000;

/** One run of blocks: logical block, physical block, count. */
export interface BlockRun {
  lblk: number;
  pblk: number;
  len: number;
  unwritten: boolean;
  /** Image byte offset of the record that maps it (-1 when unknown). */
  at?: number;
}

export interface Ext4Inode {
  ino: number;
  mode: number;
  type: FileType;
  size: number;
  nlink: number;
  flags: number;
  generation: number;
  /** Image byte offset of the inode. */
  offset: number;
  raw: Bin;
}

export interface Ext4Options {
  /** Verify metadata_csum checksums where the file system has them (default true). */
  verifyCsum?: boolean;
}

export class Ext4Image extends FsImage {
  readonly fsType = 'ext4' as const;
  readonly sb: Ext4Superblock;
  readonly blockSize: number;
  readonly rootIno = EXT4_ROOT_INO;
  readonly verifyCsum: boolean;
  private geo: Ext4Geometry | undefined;
  private readonly inodeCache = new LruCache<number, Ext4Inode>(INODE_CACHE_ENTRIES);

  constructor(
    readonly source: BlockSource,
    opts: Ext4Options = {},
  ) {
    super();
    this.verifyCsum = opts.verifyCsum ?? true;
    this.sb = readExt4Superblock(source, this.verifyCsum);
    this.blockSize = this.sb.blockSize;
  }

  private get csum(): boolean {
    return this.sb.metadataCsum && this.verifyCsum;
  }

  /** Group descriptors and the fixed metadata they place (read and validated on first use, then kept). */
  geometry(): Ext4Geometry {
    this.geo ??= new Ext4Geometry(this.source, this.sb, this.verifyCsum);
    return this.geo;
  }

  /**
   * Refuse `count` physical blocks at `pblk` unless they are exact, non-empty, inside the data area
   * [s_first_data_block, s_blocks_count) and clear of every group's fixed metadata; their byte offset.
   */
  dataBlocks(pblk: number, count: number, site: ExtentSite): number {
    const sb = this.sb;
    const bad = (rule: ExtentRule, detail: string): never => {
      throw new BadExtentError(site.structure, site.at, site.ino, site.what, rule, detail);
    };
    if (!isExact(pblk) || !isExact(count) || !isExact(pblk + count)) bad('not an exact integer', `physical block ${pblk}, ${count} blocks`);
    if (count === 0) bad('zero length', `no blocks at physical block ${pblk}`);
    if (pblk < sb.firstDataBlock || pblk + count > sb.blocksCount) {
      bad('outside the data area', `${blockSpan(pblk, count)} not all inside the data area (blocks ${sb.firstDataBlock}..${sb.blocksCount - 1})`);
    }
    const m = this.geometry().metadata.overlap(pblk, count);
    if (m !== undefined) bad('overlaps metadata', `${m.label} (${blockSpan(m.start, m.count)})`);
    return blockBytes(pblk, this.blockSize, site);
  }

  /** Validate a run of data blocks and return its byte offset (dataBlocks without an inode to name). */
  blockToByte(pblk: number, count: number, structure: string): number {
    return this.dataBlocks(pblk, count, { structure, at: -1, ino: -1, what: `${plural(count)} at block ${pblk}` });
  }

  /** One data-area block (an extent tree, indirect or directory block). */
  readBlock(pblk: number, structure: string, site?: ExtentSite): Bin {
    const off = this.dataBlocks(pblk, 1, site ?? { structure, at: -1, ino: -1, what: `block ${pblk}` });
    return new Bin(this.source.read(off, this.blockSize), structure, off);
  }

  /** First block of group `g`'s inode table (validated with the rest of the geometry). */
  inodeTable(g: number): number {
    const geo = this.geometry();
    if (!Number.isSafeInteger(g) || g < 0 || g >= this.sb.groupCount) throw new CorruptImageError('ext4 group descriptor', -1, `group ${g} out of range 0..${this.sb.groupCount - 1}`);
    if (geo.flags[g]! & BG_INODE_UNINIT) {
      throw new CorruptImageError('ext4 group descriptor', groupDescOffset(this.sb, g) + GD.FLAGS, `group ${g}: inode table is uninitialised but an inode in it is in use`);
    }
    return geo.inodeTables[g]!;
  }

  readInode(ino: number): Ext4Inode {
    const cached = this.inodeCache.get(ino);
    if (cached !== undefined) return cached;
    if (!Number.isSafeInteger(ino) || ino < 1 || ino > this.sb.inodesCount) {
      throw new CorruptImageError('ext4 inode', -1, `inode number ${ino} out of range 1..${this.sb.inodesCount}`);
    }
    const g = Math.floor((ino - 1) / this.sb.inodesPerGroup);
    const idx = (ino - 1) % this.sb.inodesPerGroup;
    const offset = blockBytes(this.inodeTable(g), this.blockSize, { structure: 'ext4 inode', at: -1, ino, what: `inode table of group ${g}` }) + idx * this.sb.inodeSize;
    const b = new Bin(this.source.read(offset, this.sb.inodeSize), 'ext4 inode', offset);
    const extra = this.sb.inodeSize > 128 ? b.u16le(128) : 0;
    if (this.sb.inodeSize > 128 && ((extra < 4 && extra !== 0) || 128 + extra > this.sb.inodeSize || extra % 4 !== 0)) b.fail(`inode ${ino}: i_extra_isize ${extra} out of range`, 128);
    const generation = b.u32le(100);
    if (this.csum) {
      const hiField = this.sb.inodeSize > 128 && extra >= 4;
      const nb = new Uint8Array(8);
      const dv = new DataView(nb.buffer);
      dv.setUint32(0, ino, true);
      dv.setUint32(4, generation, true);
      const seed = crc32cRaw(this.sb.csumSeed, nb);
      let c = crc32cRawSkipField(seed, b.buf, 0x7c, 2, 128);
      if (this.sb.inodeSize > 128) {
        if (hiField) {
          c = crc32cRaw(c, b.buf, 128, 0x82);
          c = crc32cRaw(c, new Uint8Array(2));
          c = crc32cRaw(c, b.buf, 0x84, this.sb.inodeSize);
        } else c = crc32cRaw(c, b.buf, 128, this.sb.inodeSize);
      }
      const want = b.u16le(0x7c) + (hiField ? b.u16le(0x82) * 0x10000 : 0);
      const got = hiField ? c >>> 0 : c & 0xffff;
      if (want !== got) b.fail(`inode ${ino}: checksum mismatch (stored ${want.toString(16)}, computed ${got.toString(16)})`, 0x7c);
    }
    const mode = b.u16le(0);
    if (mode === 0) b.fail(`inode ${ino} is free (mode 0) but referenced`);
    if (b.u16le(26) === 0) b.fail(`inode ${ino} has no links but is referenced`, 26);
    const type = typeFromMode(mode);
    if (type === 'unknown') b.fail(`inode ${ino}: bad mode 0${mode.toString(8)}`);
    const size = b.u32le(4) + b.u32le(108) * 0x1_0000_0000;
    if (!Number.isSafeInteger(size) || size > EXT4_MAX_LOGICAL_BLOCKS * this.blockSize) b.fail(`inode ${ino}: size ${size} exceeds the format limit of ${EXT4_MAX_LOGICAL_BLOCKS} blocks`, 108);
    const flags = b.u32le(32);
    if (flags & EXT4_FL.INLINE_DATA && !(this.sb.featureIncompat & INCOMPAT.INLINE_DATA)) b.fail(`inode ${ino}: inline data flag without the feature`, 32);
    const inode: Ext4Inode = { ino, mode, type, size, nlink: b.u16le(26), flags, generation, offset, raw: b };
    this.inodeCache.set(ino, inode);
    return inode;
  }

  stat(ino: number): InodeInfo {
    const i = this.readInode(ino);
    return { ino, type: i.type, mode: i.mode, size: i.size, nlink: i.nlink };
  }

  private inodeSeed(inode: Ext4Inode): number {
    const nb = new Uint8Array(8);
    const dv = new DataView(nb.buffer);
    dv.setUint32(0, inode.ino, true);
    dv.setUint32(4, inode.generation, true);
    return crc32cRaw(this.sb.csumSeed, nb);
  }

  /** Symlinks whose target sits in i_block. */
  private isFastSymlink(inode: Ext4Inode): boolean {
    return inode.type === 'symlink' && !(inode.flags & EXT4_FL.INLINE_DATA) && inode.size < I_BLOCK_LEN;
  }

  /**
   * The block runs of an inode (extent tree or indirect block map), sorted, each checked against the geometry:
   * logical blocks below EXT4_MAX_LOGICAL_BLOCKS, physical blocks in the data area clear of metadata.
   */
  blockRuns(inode: Ext4Inode): BlockRun[] {
    const extents = (inode.flags & EXT4_FL.EXTENTS) !== 0;
    const runs = extents ? this.extentTree(inode) : this.indirectMap(inode);
    const S = extents ? 'ext4 extent' : 'ext4 block map';
    let end = 0;
    for (const [i, r] of runs.entries()) {
      const site: ExtentSite = {
        structure: S,
        at: r.at ?? inode.offset,
        ino: inode.ino,
        what: `${extents ? 'extent' : 'block run'} ${i} (logical block ${r.lblk}, physical block ${r.pblk}, ${plural(r.len)})`,
      };
      if (!isExact(r.lblk) || !isExact(r.len)) throw new BadExtentError(S, site.at, inode.ino, site.what, 'not an exact integer', `logical block ${r.lblk}, ${r.len} blocks`);
      if (r.lblk + r.len > EXT4_MAX_LOGICAL_BLOCKS) {
        throw new BadExtentError(S, site.at, inode.ino, site.what, 'beyond the format limit', `ends at logical block ${r.lblk + r.len}, past the 32-bit limit of ${EXT4_MAX_LOGICAL_BLOCKS}`);
      }
      if (r.lblk < end) throw new CorruptImageError(S, site.at, `inode ${inode.ino}: extents overlap or are out of order at block ${r.lblk}`);
      end = r.lblk + r.len;
      this.dataBlocks(r.pblk, r.len, site);
    }
    return runs;
  }

  private extentTree(inode: Ext4Inode): BlockRun[] {
    const out: BlockRun[] = [];
    const visited = new Set<number>();
    const seed = this.csum ? this.inodeSeed(inode) : 0;
    const node = (b: Bin, wantDepth: number, isRoot: boolean, minLblk: number): void => {
      const S = isRoot ? 'ext4 extent header' : 'ext4 extent block';
      const h = new Bin(b.buf, S, b.base);
      if (h.u16le(0) !== EXTENT_MAGIC) h.fail(`inode ${inode.ino}: bad extent magic 0x${h.u16le(0).toString(16)}`);
      const entries = h.u16le(2);
      const max = h.u16le(4);
      const depth = h.u16le(6);
      const cap = Math.floor((h.length - 12) / 12);
      if (max > cap || max === 0) h.fail(`inode ${inode.ino}: eh_max ${max} exceeds ${cap}`, 4);
      if (entries > max) h.fail(`inode ${inode.ino}: eh_entries ${entries} exceeds eh_max ${max}`, 2);
      if (depth > MAX_EXTENT_DEPTH || (wantDepth >= 0 && depth !== wantDepth)) h.fail(`inode ${inode.ino}: depth ${depth}${wantDepth >= 0 ? `, expected ${wantDepth}` : ''}`, 6);
      if (!isRoot && this.csum) {
        const tail = 12 + 12 * max;
        const want = h.u32le(tail);
        const got = crc32cRaw(seed, h.buf, 0, tail);
        if (want !== got) h.fail(`inode ${inode.ino}: checksum mismatch (stored ${want.toString(16)}, computed ${got.toString(16)})`, tail);
      }
      let prev = minLblk;
      for (let i = 0; i < entries; i++) {
        const o = 12 + i * 12;
        const lblk = h.u32le(o);
        if (lblk < prev) h.fail(`inode ${inode.ino}: entry ${i} starts at block ${lblk}, before ${prev}`, o);
        if (depth === 0) {
          let len = h.u16le(o + 4);
          let unwritten = false;
          if (len > EXT_INIT_MAX_LEN) {
            len -= EXT_INIT_MAX_LEN;
            unwritten = true;
          }
          const pblk = h.u16le(o + 6) * 0x1_0000_0000 + h.u32le(o + 8);
          if (len === 0) {
            throw new BadExtentError(S, h.base + o, inode.ino, `extent ${out.length} (logical block ${lblk}, physical block ${pblk})`, 'zero length', 'ee_len is 0');
          }
          out.push({ lblk, pblk, len, unwritten, at: h.base + o });
          prev = lblk + len;
        } else {
          const child = h.u16le(o + 8) * 0x1_0000_0000 + h.u32le(o + 4);
          if (visited.has(child)) h.fail(`inode ${inode.ino}: extent block ${child} reached twice (cycle)`, o + 4);
          visited.add(child);
          const site: ExtentSite = { structure: 'ext4 extent index', at: h.base + o, ino: inode.ino, what: `extent tree block ${child} (index entry ${i} at depth ${depth}, logical block ${lblk})` };
          node(this.readBlock(child, 'ext4 extent block', site), depth - 1, false, lblk);
          prev = lblk;
        }
      }
    };
    node(inode.raw.sub(I_BLOCK, I_BLOCK_LEN, 'ext4 extent header'), -1, true, 0);
    return out;
  }

  /** ext2/3-style direct and indirect block pointers (only the blocks below the file size are visited). */
  private indirectMap(inode: Ext4Inode): BlockRun[] {
    if (inode.flags & EXT4_FL.INLINE_DATA || this.isFastSymlink(inode) || !(inode.type === 'file' || inode.type === 'dir' || inode.type === 'symlink')) return [];
    const bs = this.blockSize;
    const per = bs / 4;
    const nblocks = Math.ceil(inode.size / bs);
    const out: BlockRun[] = [];
    // runs are merged pointer by pointer and checked against the geometry once each, in blockRuns
    const add = (lblk: number, pblk: number, at: number): void => {
      const last = out[out.length - 1];
      if (last !== undefined && last.lblk + last.len === lblk && last.pblk + last.len === pblk) last.len++;
      else out.push({ lblk, pblk, len: 1, unwritten: false, at });
    };
    const visited = new Set<number>();
    const walk = (pblk: number, level: number, base: number, at: number): void => {
      if (visited.has(pblk)) throw new CorruptImageError('ext4 indirect block', at, `inode ${inode.ino}: block ${pblk} reached twice (cycle)`);
      visited.add(pblk);
      const site: ExtentSite = { structure: 'ext4 block map', at, ino: inode.ino, what: `level-${level} indirect block ${pblk} (for logical block ${base})` };
      const b = this.readBlock(pblk, 'ext4 indirect block', site);
      const span = per ** (level - 1);
      for (let i = 0; i < per; i++) {
        const lblk = base + i * span;
        if (lblk >= nblocks) break;
        const p = b.u32le(i * 4);
        if (p === 0) continue;
        if (level === 1) add(lblk, p, b.base + i * 4);
        else walk(p, level - 1, lblk, b.base + i * 4);
      }
    };
    const ib = inode.raw.sub(I_BLOCK, I_BLOCK_LEN, 'ext4 inode block map');
    for (let i = 0; i < 12 && i < nblocks; i++) {
      const p = ib.u32le(i * 4);
      if (p !== 0) add(i, p, ib.base + i * 4);
    }
    let base = 12;
    for (let level = 1; level <= 3 && base < nblocks; level++) {
      const p = ib.u32le((11 + level) * 4);
      if (p !== 0) walk(p, level, base, ib.base + (11 + level) * 4);
      base += per ** level;
    }
    return out;
  }

  /** Where the inline data of an inode lives: i_block, then the system.data extended attribute. */
  private inlineParts(inode: Ext4Inode): { physical: number; length: number }[] {
    const parts: { physical: number; length: number }[] = [];
    const first = Math.min(inode.size, I_BLOCK_LEN);
    if (first > 0) parts.push({ physical: inode.offset + I_BLOCK, length: first });
    if (inode.size <= I_BLOCK_LEN) return parts;
    const S = 'ext4 inline data xattr';
    const b = new Bin(inode.raw.buf, S, inode.offset);
    if (this.sb.inodeSize <= 128) b.fail(`inode ${inode.ino}: inline data beyond i_block needs in-inode attributes`);
    const start = 128 + b.u16le(128);
    if (b.u32le(start) !== XATTR_MAGIC) b.fail(`inode ${inode.ino}: no in-inode attribute header`, start);
    const entries = start + 4;
    let pos = entries;
    for (let k = 0; k < 256; k++) {
      if (pos + 4 > b.length || b.u32le(pos) === 0) break;
      const nameLen = b.u8(pos);
      const index = b.u8(pos + 1);
      const valueOff = b.u16le(pos + 2);
      const valueInum = b.u32le(pos + 4);
      const valueSize = b.u32le(pos + 8);
      const name = b.bytes(pos + 16, nameLen);
      if (index === 7 && nameLen === 4 && decodeName(name) === 'data') {
        if (valueInum !== 0) b.fail(`inode ${inode.ino}: inline data in an EA inode`, pos + 4);
        if (valueSize !== inode.size - I_BLOCK_LEN) b.fail(`inode ${inode.ino}: system.data holds ${valueSize} bytes, expected ${inode.size - I_BLOCK_LEN}`, pos + 8);
        b.check(entries + valueOff, valueSize);
        parts.push({ physical: inode.offset + entries + valueOff, length: valueSize });
        return parts;
      }
      pos += (16 + nameLen + 3) & ~3;
    }
    return b.fail(`inode ${inode.ino}: no system.data attribute for ${inode.size} bytes of inline data`, start);
  }

  mapInode(ino: number, path = `inode ${ino}`): FileMap {
    const inode = this.readInode(ino);
    const extents: Extent[] = [];
    if (inode.type === 'file' || inode.type === 'dir' || inode.type === 'symlink') {
      if (inode.flags & EXT4_FL.INLINE_DATA) {
        let logical = 0;
        for (const p of this.inlineParts(inode)) {
          extents.push({ logical, physical: p.physical, length: p.length, flags: ['inline'] });
          logical += p.length;
        }
      } else if (this.isFastSymlink(inode)) {
        extents.push({ logical: 0, physical: inode.offset + I_BLOCK, length: inode.size, flags: ['inline'] });
      } else {
        const bs = this.blockSize;
        const enc = (inode.flags & EXT4_FL.ENCRYPT) !== 0;
        for (const [i, r] of this.blockRuns(inode).entries()) {
          const flags: ExtentFlag[] = [];
          if (r.unwritten) flags.push('unwritten');
          if (enc) flags.push('encoded');
          const site: ExtentSite = { structure: 'ext4 extent', at: r.at ?? inode.offset, ino, what: `extent ${i}` };
          extents.push({ logical: blockBytes(r.lblk, bs, site), physical: blockBytes(r.pblk, bs, site), length: blockBytes(r.len, bs, site), flags });
        }
      }
      if (extents.length > 0) extents[extents.length - 1]!.flags.push('last');
    }
    return { path, ino, size: inode.size, type: inode.type, extents };
  }

  /** Read a whole (small) inode's data: inline bytes or mapped blocks; holes read as zeros. */
  private readData(inode: Ext4Inode, limit: number, structure: string): Uint8Array {
    if (inode.size > limit) throw new CorruptImageError(structure, inode.offset, `inode ${inode.ino}: ${inode.size} bytes is more than ${limit}`);
    const out = new Uint8Array(inode.size);
    for (const e of this.mapInode(inode.ino).extents) {
      if (e.logical >= inode.size) break;
      const n = Math.min(e.length, inode.size - e.logical);
      if (!e.flags.includes('unwritten')) out.set(this.source.read(e.physical, n), e.logical);
    }
    return out;
  }

  readDir(ino: number): DirEntry[] {
    const inode = this.readInode(ino);
    if (inode.type !== 'dir') throw new PathLookupError(`inode ${ino}`, 'not a directory');
    const out: DirEntry[] = [];
    if (inode.flags & EXT4_FL.INLINE_DATA) {
      const data = this.readData(inode, I_BLOCK_LEN + this.sb.inodeSize, 'ext4 inline directory');
      const b = new Bin(data, 'ext4 inline directory', inode.offset + I_BLOCK);
      this.checkIno(b.u32le(0), b, 0);
      this.parseDirents(b, 4, Math.min(I_BLOCK_LEN, data.length), inode, out, false);
      if (data.length > I_BLOCK_LEN) this.parseDirents(b, I_BLOCK_LEN, data.length, inode, out, false);
      return out;
    }
    const bs = this.blockSize;
    const nblocks = Math.ceil(inode.size / bs);
    const seed = this.csum ? this.inodeSeed(inode) : 0;
    for (const r of this.blockRuns(inode)) {
      for (let k = 0; k < r.len && r.lblk + k < nblocks; k++) {
        if (r.unwritten) throw new CorruptImageError('ext4 directory block', -1, `directory ${ino} has an unwritten extent`);
        const b = this.readBlock(r.pblk + k, 'ext4 directory block');
        let end = bs;
        // metadata_csum leaf blocks end with a 12-byte fake entry holding the checksum
        if (b.u32le(bs - 12) === 0 && b.u16le(bs - 8) === 12 && b.u8(bs - 6) === 0 && b.u8(bs - 5) === 0xde) {
          if (this.csum) {
            const want = b.u32le(bs - 4);
            const got = crc32cRaw(seed, b.buf, 0, bs - 12);
            if (want !== got) b.fail(`directory ${ino}: block checksum mismatch (stored ${want.toString(16)}, computed ${got.toString(16)})`, bs - 4);
          }
          end = bs - 12;
        }
        if (this.csum && inode.flags & EXT4_FL.INDEX) this.verifyDxBlock(b, inode, r.lblk + k, seed);
        this.parseDirents(b, 0, end, inode, out, true);
      }
    }
    return out;
  }

  /**
   * htree index blocks (the root at block 0, interior nodes that look like one empty entry) carry a dx_tail
   * checksum after their `limit` entries; leaf blocks are left to the dirent tail check.
   */
  private verifyDxBlock(blk: Bin, dir: Ext4Inode, lblk: number, seed: number): void {
    const bs = this.blockSize;
    let countOff: number;
    if (lblk === 0 && blk.u16le(4) === 12 && blk.u16le(16) === bs - 12) {
      countOff = 24 + blk.u8(29);
    } else if (blk.u32le(0) === 0 && blk.u16le(4) === (bs >= 65536 ? 0 : bs) && blk.u8(6) === 0) {
      countOff = 8;
    } else return;
    const b = new Bin(blk.buf, 'ext4 htree node', blk.base);
    const limit = b.u16le(countOff);
    const count = b.u16le(countOff + 2);
    const tail = countOff + limit * 8;
    if (count > limit || tail + 8 > bs) b.fail(`directory ${dir.ino}: dx count ${count} / limit ${limit} do not fit`, countOff);
    let c = crc32cRaw(seed, b.buf, 0, countOff + count * 8);
    c = crc32cRaw(c, b.buf, tail, tail + 4);
    c = crc32cRaw(c, new Uint8Array(4));
    const want = b.u32le(tail + 4);
    if (want !== c) b.fail(`directory ${dir.ino}: checksum mismatch (stored ${want.toString(16)}, computed ${c.toString(16)})`, tail + 4);
  }

  private checkIno(ino: number, b: Bin, at: number): void {
    if (ino < 1 || ino > this.sb.inodesCount) b.fail(`entry inode ${ino} out of range`, at);
  }

  /** Linear directory entries in b[start, end). htree index blocks look like one empty entry and are skipped. */
  private parseDirents(b: Bin, start: number, end: number, dir: Ext4Inode, out: DirEntry[], blockDir: boolean): void {
    const filetype = (this.sb.featureIncompat & INCOMPAT.FILETYPE) !== 0;
    let pos = start;
    while (pos < end) {
      const ino = b.u32le(pos);
      let recLen = b.u16le(pos + 4);
      if (blockDir && this.blockSize >= 65536) {
        if (recLen === 65535 || recLen === 0) recLen = this.blockSize;
        else recLen = (recLen & 65532) | ((recLen & 3) << 16);
      }
      const nameLen = filetype ? b.u8(pos + 6) : b.u16le(pos + 6);
      const ft = filetype ? b.u8(pos + 7) : 0;
      if (recLen < 8 || recLen % 4 !== 0 || pos + recLen > end) b.fail(`directory ${dir.ino}: rec_len ${recLen} at +${pos}`, pos);
      if (ino !== 0) {
        if (nameLen === 0 || 8 + nameLen > recLen) b.fail(`directory ${dir.ino}: name_len ${nameLen} in a ${recLen}-byte entry`, pos);
        const name = b.bytes(pos + 8, nameLen);
        const dot = (nameLen === 1 && name[0] === 0x2e) || (nameLen === 2 && name[0] === 0x2e && name[1] === 0x2e);
        if (!dot) {
          for (const c of name) if (c === 0x2f || c === 0) b.fail(`directory ${dir.ino}: name contains '/' or NUL`, pos);
          this.checkIno(ino, b, pos);
          out.push({ name: decodeName(name), ino, type: typeFromDirent(ft) });
        }
      }
      pos += recLen;
    }
  }

  readLink(ino: number): string {
    const inode = this.readInode(ino);
    if (inode.type !== 'symlink') throw new PathLookupError(`inode ${ino}`, 'bad path');
    if (inode.size === 0 || inode.size > this.blockSize) throw new CorruptImageError('ext4 symlink', inode.offset, `symlink ${ino}: length ${inode.size}`);
    if (this.isFastSymlink(inode)) return decodeName(inode.raw.bytes(I_BLOCK, inode.size));
    return decodeName(this.readData(inode, this.blockSize, 'ext4 symlink'));
  }
}
