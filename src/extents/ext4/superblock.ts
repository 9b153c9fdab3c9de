/** The ext4 superblock (little-endian, 1024 bytes at byte 1024) and group descriptors. */
import { Bin } from '../bin.js';
import { crc32cRaw } from '../crc32c.js';
import type { BlockSource } from '../source.js';
import { CorruptImageError, NotThisFileSystemError, UnsupportedFeatureError } from '../types.js';

export const EXT4_MAGIC = 0xef53;
export const EXT4_SB_OFFSET = 1024;

export const INCOMPAT = {
  COMPRESSION: 0x1,
  FILETYPE: 0x2,
  RECOVER: 0x4,
  JOURNAL_DEV: 0x8,
  META_BG: 0x10,
  EXTENTS: 0x40,
  BIT64: 0x80,
  MMP: 0x100,
  FLEX_BG: 0x200,
  EA_INODE: 0x400,
  DIRDATA: 0x1000,
  CSUM_SEED: 0x2000,
  LARGEDIR: 0x4000,
  INLINE_DATA: 0x8000,
  ENCRYPT: 0x10000,
  CASEFOLD: 0x20000,
} as const;
export const COMPAT = { RESIZE_INODE: 0x10, SPARSE_SUPER2: 0x200 } as const;
export const RO_COMPAT = { SPARSE_SUPER: 0x1, LARGE_FILE: 0x2, HUGE_FILE: 0x8, GDT_CSUM: 0x10, METADATA_CSUM: 0x400 } as const;

export interface Ext4Superblock {
  inodesCount: number;
  blocksCount: number;
  firstDataBlock: number;
  blockSize: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  inodeSize: number;
  groupCount: number;
  descSize: number;
  /** Group descriptors per block. */
  descPerBlock: number;
  /** Blocks of one full group descriptor table (ceil(groups / descPerBlock)). */
  gdtBlocks: number;
  firstMetaBg: number;
  /** s_reserved_gdt_blocks. */
  reservedGdtBlocks: number;
  /** With sparse_super2: the (up to two, 0 = none) groups that hold backups besides group 0; else null. */
  backupGroups: [number, number] | null;
  /** The MMP block with the mmp feature, else -1. */
  mmpBlock: number;
  featureCompat: number;
  featureIncompat: number;
  featureRoCompat: number;
  metadataCsum: boolean;
  /** Raw CRC-32C seed for metadata checksums. */
  csumSeed: number;
  uuid: Uint8Array;
}

/** Superblock field offsets (bytes from the start of the superblock). */
export const SB = {
  /** s_reserved_gdt_blocks (u16): GDT blocks kept after each GDT copy for online resize. */
  RESERVED_GDT_BLOCKS: 0xce,
  /** s_first_meta_bg (u32). */
  FIRST_META_BG: 0x104,
  /** s_mmp_block (u64). */
  MMP_BLOCK: 0x168,
  /** s_backup_bgs[2] (u32 each): the only backup groups with sparse_super2. */
  BACKUP_BGS: 0x24c,
} as const;

const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

export function readExt4Superblock(src: BlockSource, verifyCsum: boolean): Ext4Superblock {
  if (src.size < 2048) throw new NotThisFileSystemError('ext4', `image of ${src.size} bytes is too small`);
  const b = new Bin(src.read(EXT4_SB_OFFSET, 1024), 'ext4 superblock', EXT4_SB_OFFSET);
  if (b.u16le(56) !== EXT4_MAGIC) throw new NotThisFileSystemError('ext4', 'no 0xEF53 magic at byte 1080');
  const incompat = b.u32le(96);
  const roCompat = b.u32le(100);
  const compat = b.u32le(92);
  const metadataCsum = (roCompat & RO_COMPAT.METADATA_CSUM) !== 0;
  if (metadataCsum && verifyCsum) {
    if (b.u8(0x175) !== 1) b.fail(`unknown checksum type ${b.u8(0x175)}`, 0x175);
    const want = b.u32le(0x3fc);
    const got = crc32cRaw(0xffffffff, b.buf, 0, 0x3fc);
    if (want !== got) b.fail(`checksum mismatch (stored ${want.toString(16)}, computed ${got.toString(16)})`, 0x3fc);
  }
  if (incompat & INCOMPAT.JOURNAL_DEV) throw new UnsupportedFeatureError('ext4 external journal device');
  if (incompat & (INCOMPAT.COMPRESSION | INCOMPAT.DIRDATA)) throw new UnsupportedFeatureError('ext4 incompatible feature', `0x${incompat.toString(16)}`);
  const logBs = b.u32le(24);
  if (logBs > 6) b.fail(`s_log_block_size ${logBs} out of range`, 24);
  const blockSize = 1024 << logBs;
  const firstDataBlock = b.u32le(20);
  if (firstDataBlock !== (blockSize === 1024 ? 1 : 0)) b.fail(`s_first_data_block ${firstDataBlock} does not match block size ${blockSize}`, 20);
  const bit64 = (incompat & INCOMPAT.BIT64) !== 0;
  const blocksCount = b.u32le(4) + (bit64 ? b.u32le(0x150) * 0x1_0000_0000 : 0);
  if (!Number.isSafeInteger(blocksCount * blockSize)) b.fail('block count too large', 4);
  const blocksPerGroup = b.u32le(32);
  const inodesPerGroup = b.u32le(40);
  if (blocksPerGroup < 8 || blocksPerGroup > 8 * blockSize) b.fail(`s_blocks_per_group ${blocksPerGroup} out of range`, 32);
  if (inodesPerGroup < 1 || inodesPerGroup > 8 * blockSize) b.fail(`s_inodes_per_group ${inodesPerGroup} out of range`, 40);
  const rev = b.u32le(76);
  const inodeSize = rev === 0 ? 128 : b.u16le(88);
  if (!isPow2(inodeSize) || inodeSize < 128 || inodeSize > blockSize) b.fail(`bad inode size ${inodeSize}`, 88);
  if (blocksCount <= firstDataBlock) b.fail(`block count ${blocksCount} too small`, 4);
  const groupCount = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
  const inodesCount = b.u32le(0);
  if (inodesCount > groupCount * inodesPerGroup || inodesCount < 11) b.fail(`s_inodes_count ${inodesCount} inconsistent with ${groupCount} groups`, 0);
  let descSize = 32;
  if (bit64) {
    descSize = b.u16le(254);
    if (descSize < 64 || descSize > 1024 || !isPow2(descSize)) b.fail(`s_desc_size ${descSize} out of range`, 254);
  }
  if (blocksCount * blockSize > src.size) {
    throw new CorruptImageError('ext4 superblock', EXT4_SB_OFFSET + 4, `file system of ${blocksCount * blockSize} bytes is larger than the image (${src.size} bytes)`);
  }
  const descPerBlock = blockSize / descSize;
  const gdtBlocks = Math.ceil(groupCount / descPerBlock);
  const firstMetaBg = b.u32le(SB.FIRST_META_BG);
  if (incompat & INCOMPAT.META_BG && firstMetaBg > gdtBlocks) b.fail(`s_first_meta_bg ${firstMetaBg} exceeds the ${gdtBlocks} group descriptor blocks`, SB.FIRST_META_BG);
  const reservedGdtBlocks = b.u16le(SB.RESERVED_GDT_BLOCKS);
  if (reservedGdtBlocks > blockSize / 4) b.fail(`s_reserved_gdt_blocks ${reservedGdtBlocks} exceeds ${blockSize / 4}`, SB.RESERVED_GDT_BLOCKS);
  const metaBg = (incompat & INCOMPAT.META_BG) !== 0;
  if (1 + (metaBg ? firstMetaBg : gdtBlocks) + reservedGdtBlocks >= blocksPerGroup)
    b.fail(`a superblock, ${metaBg ? firstMetaBg : gdtBlocks} descriptor blocks and ${reservedGdtBlocks} reserved GDT blocks do not fit a group of ${blocksPerGroup} blocks`, SB.RESERVED_GDT_BLOCKS);
  const backupGroups: [number, number] | null = compat & COMPAT.SPARSE_SUPER2 ? [b.u32le(SB.BACKUP_BGS), b.u32le(SB.BACKUP_BGS + 4)] : null;
  let mmpBlock = -1;
  if (incompat & INCOMPAT.MMP) {
    mmpBlock = b.u32le(SB.MMP_BLOCK) + b.u32le(SB.MMP_BLOCK + 4) * 0x1_0000_0000;
    if (mmpBlock < firstDataBlock || mmpBlock >= blocksCount) b.fail(`s_mmp_block ${mmpBlock} lies outside the file system`, SB.MMP_BLOCK);
  }
  const uuid = b.bytes(104, 16).slice();
  const csumSeed = incompat & INCOMPAT.CSUM_SEED ? b.u32le(0x270) : crc32cRaw(0xffffffff, uuid);
  return {
    inodesCount,
    blocksCount,
    firstDataBlock,
    blockSize,
    blocksPerGroup,
    inodesPerGroup,
    inodeSize,
    groupCount,
    descSize,
    descPerBlock,
    gdtBlocks,
    firstMetaBg,
    reservedGdtBlocks,
    backupGroups,
    mmpBlock,
    featureCompat: compat,
    featureIncompat: incompat,
    featureRoCompat: roCompat,
    metadataCsum,
    csumSeed,
    uuid,
  };
}

function isPowerOf(n: number, base: number): boolean {
  while (n > 1 && n % base === 0) n /= base;
  return n === 1;
}

/** Does group `g` hold a superblock (primary or backup, and so a GDT copy outside meta_bg)? */
export function groupHasSuper(sb: Ext4Superblock, g: number): boolean {
  if (g === 0) return true;
  if (sb.backupGroups !== null) return g === sb.backupGroups[0] || g === sb.backupGroups[1];
  if (g === 1) return true;
  if (!(sb.featureRoCompat & RO_COMPAT.SPARSE_SUPER)) return true;
  return isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7);
}

/** First block of group `g`. */
export function groupFirstBlock(sb: Ext4Superblock, g: number): number {
  return sb.firstDataBlock + g * sb.blocksPerGroup;
}

/**
 * The blocks at the start of group `g` that hold a superblock copy, group descriptor blocks and reserved GDT
 * blocks (the layout the kernel's ext4_num_base_meta_clusters describes): outside meta_bg, groups with a
 * superblock hold the whole table (s_first_meta_bg blocks of it with meta_bg) and the reserved blocks; in the
 * meta_bg part, the first, second and last group of each meta group hold that meta group's one descriptor block.
 */
export function groupBaseMetadata(sb: Ext4Superblock, g: number): { start: number; count: number; label: string }[] {
  const first = groupFirstBlock(sb, g);
  const hasSuper = groupHasSuper(sb, g);
  const out: { start: number; count: number; label: string }[] = [];
  if (hasSuper) out.push({ start: first, count: 1, label: `superblock ${g === 0 ? '' : 'backup '}of group ${g}` });
  const metaBg = (sb.featureIncompat & INCOMPAT.META_BG) !== 0;
  let at = first + (hasSuper ? 1 : 0);
  if (!metaBg || g < sb.firstMetaBg * sb.descPerBlock) {
    if (hasSuper) {
      const gdt = metaBg ? sb.firstMetaBg : sb.gdtBlocks;
      if (gdt > 0) out.push({ start: at, count: gdt, label: `group descriptors of group ${g}` });
      at += gdt;
      if (sb.reservedGdtBlocks > 0) out.push({ start: at, count: sb.reservedGdtBlocks, label: `reserved GDT blocks of group ${g}` });
    }
  } else {
    const metaFirst = g - (g % sb.descPerBlock);
    if (g === metaFirst || g === metaFirst + 1 || g === metaFirst + sb.descPerBlock - 1) {
      out.push({ start: at, count: 1, label: `meta_bg group descriptors in group ${g}` });
    }
  }
  return out;
}

/** Image byte offset of group descriptor `g`. */
export function groupDescOffset(sb: Ext4Superblock, g: number): number {
  const perBlock = sb.descPerBlock;
  const gdtBlock = Math.floor(g / perBlock);
  if (sb.featureIncompat & INCOMPAT.META_BG && gdtBlock >= sb.firstMetaBg) {
    const first = gdtBlock * perBlock;
    const blk = sb.firstDataBlock + first * sb.blocksPerGroup + (groupHasSuper(sb, first) ? 1 : 0);
    return blk * sb.blockSize + (g % perBlock) * sb.descSize;
  }
  return (sb.firstDataBlock + 1) * sb.blockSize + g * sb.descSize;
}
