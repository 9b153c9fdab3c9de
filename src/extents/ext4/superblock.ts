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
  firstMetaBg: number;
  featureCompat: number;
  featureIncompat: number;
  featureRoCompat: number;
  metadataCsum: boolean;
  /** Raw CRC-32C seed for metadata checksums. */
  csumSeed: number;
  uuid: Uint8Array;
}

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
  const uuid = b.bytes(104, 16).slice();
  const csumSeed = incompat & INCOMPAT.CSUM_SEED ? b.u32le(0x270) : crc32cRaw(0xffffffff, uuid);
  return {
    inodesCount, blocksCount, firstDataBlock, blockSize, blocksPerGroup, inodesPerGroup, inodeSize, groupCount, descSize,
    firstMetaBg: b.u32le(260),
    featureCompat: compat, featureIncompat: incompat, featureRoCompat: roCompat,
    metadataCsum, csumSeed, uuid,
  };
}

function isPowerOf(n: number, base: number): boolean {
  while (n > 1 && n % base === 0) n /= base;
  return n === 1;
}

/** Does group `g` hold a superblock backup (and so a GDT copy)? */
export function groupHasSuper(sb: Ext4Superblock, g: number): boolean {
  if (g <= 1) return true;
  if (!(sb.featureRoCompat & RO_COMPAT.SPARSE_SUPER)) return true;
  return isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7);
}

/** Image byte offset of group descriptor `g`. */
export function groupDescOffset(sb: Ext4Superblock, g: number): number {
  const perBlock = sb.blockSize / sb.descSize;
  const gdtBlock = Math.floor(g / perBlock);
  if (sb.featureIncompat & INCOMPAT.META_BG && gdtBlock >= sb.firstMetaBg) {
    const first = gdtBlock * perBlock;
    const blk = sb.firstDataBlock + first * sb.blocksPerGroup + (groupHasSuper(sb, first) ? 1 : 0);
    return blk * sb.blockSize + (g % perBlock) * sb.descSize;
  }
  return (sb.firstDataBlock + 1) * sb.blockSize + g * sb.descSize;
}
