/**
 * ext4 group descriptors and the fixed metadata they and the superblock place: superblock and descriptor
 * copies, reserved GDT blocks, block and inode bitmaps, inode tables, the MMP block. Built once per opened
 * image; extents and mapping blocks are checked against it.
 */
import { Bin } from '../bin.js';
import { blockSpan, RangeSet, type LabelledRange } from '../bounds.js';
import { crc32cRaw, crc32cRawSkipField } from '../crc32c.js';
import type { BlockSource } from '../source.js';
import { CorruptImageError } from '../types.js';
import { groupBaseMetadata, groupDescOffset, type Ext4Superblock } from './superblock.js';

/** Group descriptor field offsets (the _hi halves exist when the descriptor is 64 bytes or more). */
export const GD = {
  BLOCK_BITMAP_LO: 0x0,
  INODE_BITMAP_LO: 0x4,
  INODE_TABLE_LO: 0x8,
  FLAGS: 0x12,
  CHECKSUM: 0x1e,
  BLOCK_BITMAP_HI: 0x20,
  INODE_BITMAP_HI: 0x24,
  INODE_TABLE_HI: 0x28,
} as const;
/** Descriptors at least this long carry the _hi halves. */
const GD_64BIT_SIZE = 64;
/** bg_flags: the group's inode table is not initialised. */
export const BG_INODE_UNINIT = 0x1;

export class Ext4Geometry {
  /** First block of each group's inode table. */
  readonly inodeTables: Float64Array;
  /** bg_flags of each group. */
  readonly flags: Uint16Array;
  /** Blocks of one inode table. */
  readonly inodeTableBlocks: number;
  /** Every fixed-metadata block range inside [s_first_data_block, s_blocks_count). */
  readonly metadata: RangeSet;

  constructor(
    src: BlockSource,
    readonly sb: Ext4Superblock,
    verifyCsum: boolean,
  ) {
    const n = sb.groupCount;
    const bs = sb.blockSize;
    this.inodeTables = new Float64Array(n);
    this.flags = new Uint16Array(n);
    this.inodeTableBlocks = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / bs);
    const ranges: LabelledRange[] = [];
    if (sb.mmpBlock >= 0) ranges.push({ start: sb.mmpBlock, count: 1, label: 'MMP block' });
    const S = 'ext4 group descriptor';
    const wide = sb.descSize >= GD_64BIT_SIZE;
    const gbuf = new Uint8Array(4);
    const gview = new DataView(gbuf.buffer);
    // one read per descriptor block (they hold descPerBlock consecutive groups, wherever meta_bg puts them)
    for (let first = 0; first < n; first += sb.descPerBlock) {
      const count = Math.min(sb.descPerBlock, n - first);
      const off = groupDescOffset(sb, first);
      const len = count * sb.descSize;
      if (off + len > sb.blocksCount * bs || off + len > src.size) throw new CorruptImageError(S, off, `descriptors of groups ${first}..${first + count - 1} lie beyond the end of the file system`);
      const blk = new Bin(src.read(off, len), S, off);
      for (let i = 0; i < count; i++) {
        const g = first + i;
        const d = blk.sub(i * sb.descSize, sb.descSize);
        if (verifyCsum && sb.metadataCsum) {
          gview.setUint32(0, g, true);
          const c = crc32cRawSkipField(crc32cRaw(sb.csumSeed, gbuf), d.buf, GD.CHECKSUM, 2);
          const want = d.u16le(GD.CHECKSUM);
          if ((c & 0xffff) !== want) d.fail(`group ${g}: checksum mismatch (stored ${want.toString(16)}, computed ${(c & 0xffff).toString(16)})`, GD.CHECKSUM);
        }
        const field = (lo: number, hi: number): number => d.u32le(lo) + (wide ? d.u32le(hi) * 0x1_0000_0000 : 0);
        const place = (what: string, start: number, blocks: number, at: number): void => {
          if (start < sb.firstDataBlock || start + blocks > sb.blocksCount) {
            d.fail(`group ${g}: ${what} at ${blockSpan(start, blocks)} lies outside the file system (${sb.firstDataBlock}..${sb.blocksCount - 1})`, at);
          }
          ranges.push({ start, count: blocks, label: `${what} of group ${g}` });
        };
        place('block bitmap', field(GD.BLOCK_BITMAP_LO, GD.BLOCK_BITMAP_HI), 1, GD.BLOCK_BITMAP_LO);
        place('inode bitmap', field(GD.INODE_BITMAP_LO, GD.INODE_BITMAP_HI), 1, GD.INODE_BITMAP_LO);
        const itable = field(GD.INODE_TABLE_LO, GD.INODE_TABLE_HI);
        place('inode table', itable, this.inodeTableBlocks, GD.INODE_TABLE_LO);
        this.inodeTables[g] = itable;
        this.flags[g] = d.u16le(GD.FLAGS);
      }
    }
    for (let g = 0; g < n; g++) {
      for (const r of groupBaseMetadata(sb, g)) {
        // a short last group keeps what fits (blocks past the end are outside the data area anyway)
        if (r.start < sb.blocksCount) ranges.push({ ...r, count: Math.min(r.count, sb.blocksCount - r.start) });
      }
    }
    this.metadata = new RangeSet(ranges);
  }
}
