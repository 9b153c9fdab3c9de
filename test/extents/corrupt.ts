/**
 * Self-consistent corruption for tests: edit a mapping record in an image buffer, then recompute the checksum of
 * the structure holding it, so the decoder's checksum verification passes and only its geometry checks stand
 * between the edit and a wrong extent.
 */
import { crc32cRaw, crc32cSkipField } from '../../src/extents/crc32c.js';

const EXT4_SB = 1024;
// ext4 superblock fields
const S_INODE_SIZE = 0x58;
const S_INCOMPAT = 0x60;
const S_RO_COMPAT = 0x64;
const S_UUID = 0x68;
const S_CSUM_SEED = 0x270;
const RO_METADATA_CSUM = 0x400;
const INCOMPAT_CSUM_SEED = 0x2000;
// ext4 inode fields
const I_GENERATION = 100;
const I_CSUM_LO = 0x7c;
const I_EXTRA_ISIZE = 0x80;
const I_CSUM_HI = 0x82;
/** i_block: the extent tree root or the block pointers. */
export const EXT4_I_BLOCK = 40;

const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** Recompute the metadata_csum checksum of the ext4 inode `ino` at byte `at` of `img` (no-op without metadata_csum). */
export function ext4FixInodeCsum(img: Uint8Array, at: number, ino: number): void {
  const sb = dv(img.subarray(EXT4_SB, EXT4_SB + 1024));
  if (!(sb.getUint32(S_RO_COMPAT, true) & RO_METADATA_CSUM)) return;
  const fsSeed = sb.getUint32(S_INCOMPAT, true) & INCOMPAT_CSUM_SEED ? sb.getUint32(S_CSUM_SEED, true) : crc32cRaw(0xffffffff, img.subarray(EXT4_SB + S_UUID, EXT4_SB + S_UUID + 16));
  const size = sb.getUint16(S_INODE_SIZE, true);
  const inode = img.subarray(at, at + size);
  const v = dv(inode);
  const hasHi = size > 128 && v.getUint16(I_EXTRA_ISIZE, true) >= 4;
  const copy = inode.slice();
  const cv = dv(copy);
  cv.setUint16(I_CSUM_LO, 0, true);
  if (hasHi) cv.setUint16(I_CSUM_HI, 0, true);
  const nums = new Uint8Array(8);
  dv(nums).setUint32(0, ino, true);
  dv(nums).setUint32(4, v.getUint32(I_GENERATION, true), true);
  const c = crc32cRaw(crc32cRaw(fsSeed, nums), copy);
  v.setUint16(I_CSUM_LO, c & 0xffff, true);
  if (hasHi) v.setUint16(I_CSUM_HI, c >>> 16, true);
}

/** Offset of the 12-byte entry `i` of the extent node at `node` (header then entries). */
export function ext4Entry(node: number, i: number): number {
  return node + 12 + 12 * i;
}

/** Write an ext4 leaf extent (ee_block, ee_len, ee_start) at `at`. */
export function ext4SetLeaf(img: Uint8Array, at: number, e: { lblk?: number; len?: number; pblk?: number }): void {
  const v = dv(img);
  if (e.lblk !== undefined) v.setUint32(at, e.lblk, true);
  if (e.len !== undefined) v.setUint16(at + 4, e.len, true);
  if (e.pblk !== undefined) {
    v.setUint16(at + 6, Math.floor(e.pblk / 2 ** 32), true);
    v.setUint32(at + 8, e.pblk % 2 ** 32, true);
  }
}

/** Point the ext4 index entry at `at` (ei_block, ei_leaf) at block `pblk`. */
export function ext4SetIndexLeaf(img: Uint8Array, at: number, pblk: number): void {
  const v = dv(img);
  v.setUint32(at + 4, pblk % 2 ** 32, true);
  v.setUint16(at + 8, Math.floor(pblk / 2 ** 32), true);
}

const XFS_DINODE_CRC = 100;
const XFS_SB_CRC = 224;

/** Recompute the CRC of the XFS inode of `size` bytes at byte `at` of `img`. */
export function xfsFixInodeCrc(img: Uint8Array, at: number, size: number): void {
  const inode = img.subarray(at, at + size);
  dv(inode).setUint32(XFS_DINODE_CRC, crc32cSkipField(inode, XFS_DINODE_CRC), true);
}

/** Recompute the CRC of the XFS primary superblock (one sector of `sectSize` bytes). */
export function xfsFixSbCrc(img: Uint8Array, sectSize: number): void {
  const sb = img.subarray(0, sectSize);
  dv(sb).setUint32(XFS_SB_CRC, crc32cSkipField(sb, XFS_SB_CRC), true);
}
