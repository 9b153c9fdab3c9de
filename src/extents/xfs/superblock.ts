/** The XFS v5 superblock (big-endian, at byte 0 of AG 0). */
import { Bin } from '../bin.js';
import { crc32cSkipField } from '../crc32c.js';
import type { BlockSource } from '../source.js';
import { CorruptImageError, NotThisFileSystemError, UnsupportedFeatureError } from '../types.js';

export const XFS_SB_MAGIC = 0x58465342; // 'XFSB'
export const XFS_SB_CRC_OFF = 224;

export const XFS_INCOMPAT = {
  FTYPE: 0x1,
  SPINODES: 0x2,
  META_UUID: 0x4,
  BIGTIME: 0x8,
  NEEDSREPAIR: 0x10,
  NREXT64: 0x20,
  EXCHRANGE: 0x40,
  PARENT: 0x80,
} as const;
const KNOWN_INCOMPAT = 0xff;

/** Superblock field offsets used by the geometry checks. */
export const XFS_SB = {
  /** sb_logstart (u64): first block of the internal log, 0 when the log is external. */
  LOGSTART: 48,
  /** sb_logblocks (u32). */
  LOGBLOCKS: 96,
} as const;
/** Sector of the AGFL in every AG (superblock 0, AGF 1, AGI 2, AGFL 3); the blocks up to it hold the AG headers. */
export const XFS_AGFL_SECTOR = 3;

export interface XfsSuperblock {
  blockSize: number;
  blockLog: number;
  dblocks: number;
  rootIno: number;
  agBlocks: number;
  agCount: number;
  sectSize: number;
  inodeSize: number;
  inodeLog: number;
  inoPerBlock: number;
  inoPerBlockLog: number;
  agBlockLog: number;
  dirBlockLog: number;
  incompat: number;
  roCompat: number;
  ftype: boolean;
  nrext64: boolean;
  /** Blocks at the start of every AG holding its headers (superblock, AGF, AGI, AGFL sectors). */
  agHeaderBlocks: number;
  /** First block (agno << agblklog | agbno) of the internal log; 0 when the log is external. */
  logStart: number;
  /** Blocks of the internal log (0 when external). */
  logBlocks: number;
  /** UUID stamped in metadata (sb_meta_uuid with META_UUID, else sb_uuid). */
  metaUuid: Uint8Array;
}

function isPow2(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}
function log2(n: number): number {
  return 31 - Math.clz32(n);
}

export function readXfsSuperblock(src: BlockSource, verifyCrc: boolean): XfsSuperblock {
  const S = 'xfs superblock';
  if (src.size < 512) throw new NotThisFileSystemError('XFS', `image of ${src.size} bytes is too small`);
  const head = new Bin(src.read(0, 512), S, 0);
  if (head.u32be(0) !== XFS_SB_MAGIC) throw new NotThisFileSystemError('XFS', 'no XFSB magic at byte 0');
  const version = head.u16be(100) & 0xf;
  if (version === 4) throw new UnsupportedFeatureError('XFS v4 file system (no metadata CRCs)');
  if (version !== 5) head.fail(`version ${version} is not 5`, 100);
  const sectSize = head.u16be(102);
  if (!isPow2(sectSize) || sectSize < 512 || sectSize > 32768 || log2(sectSize) !== head.u8(121)) head.fail(`bad sector size ${sectSize}`, 102);
  if (sectSize > src.size) head.fail(`sector size ${sectSize} exceeds the image`, 102);
  const b = new Bin(src.read(0, sectSize), S, 0);
  if (verifyCrc) {
    const want = b.u32le(XFS_SB_CRC_OFF);
    const got = crc32cSkipField(b.buf, XFS_SB_CRC_OFF);
    if (want !== got) b.fail(`CRC mismatch (stored ${want.toString(16)}, computed ${got.toString(16)})`, XFS_SB_CRC_OFF);
  }
  const blockSize = b.u32be(4);
  const blockLog = b.u8(120);
  if (!isPow2(blockSize) || blockSize < 1024 || blockSize > 65536 || log2(blockSize) !== blockLog) b.fail(`bad block size ${blockSize}`, 4);
  if (sectSize > blockSize) b.fail(`sector size ${sectSize} exceeds block size ${blockSize}`, 102);
  const dblocks = b.u64be(8, 'sb_dblocks');
  const agBlocks = b.u32be(84);
  const agCount = b.u32be(88);
  const agBlockLog = b.u8(124);
  if (agBlocks < 64) b.fail(`sb_agblocks ${agBlocks} too small`, 84);
  if (agBlockLog > 31 || Math.ceil(Math.log2(agBlocks)) !== agBlockLog) b.fail(`sb_agblklog ${agBlockLog} does not match sb_agblocks ${agBlocks}`, 124);
  if (agCount < 1) b.fail('sb_agcount is 0', 88);
  if (dblocks > agCount * agBlocks || dblocks <= (agCount - 1) * agBlocks) b.fail(`sb_dblocks ${dblocks} does not fit ${agCount} AGs of ${agBlocks} blocks`, 8);
  const inodeSize = b.u16be(104);
  const inodeLog = b.u8(122);
  if (!isPow2(inodeSize) || inodeSize < 512 || inodeSize > 2048 || log2(inodeSize) !== inodeLog) b.fail(`bad inode size ${inodeSize}`, 104);
  const inoPerBlock = b.u16be(106);
  const inoPerBlockLog = b.u8(123);
  if (inoPerBlock !== blockSize / inodeSize || log2(inoPerBlock) !== inoPerBlockLog) b.fail(`sb_inopblock ${inoPerBlock} does not match block and inode sizes`, 106);
  if (agBlockLog + inoPerBlockLog > 52) b.fail('inode numbers wider than 52 bits are not handled', 124);
  const dirBlockLog = b.u8(192);
  if (blockLog + dirBlockLog > 16) b.fail(`directory block size 2^${blockLog + dirBlockLog} exceeds 64 KiB`, 192);
  const incompat = b.u32be(216);
  const roCompat = b.u32be(212);
  if (incompat & ~KNOWN_INCOMPAT) throw new UnsupportedFeatureError('XFS incompatible feature', `0x${(incompat & ~KNOWN_INCOMPAT).toString(16)}`);
  if (dblocks * blockSize > src.size) {
    throw new CorruptImageError(S, 8, `file system of ${dblocks * blockSize} bytes is larger than the image (${src.size} bytes)`);
  }
  const agHeaderBlocks = Math.floor((XFS_AGFL_SECTOR * sectSize) / blockSize) + 1;
  const logStart = b.u64be(XFS_SB.LOGSTART, 'sb_logstart');
  let logBlocks = 0;
  if (logStart !== 0) {
    logBlocks = b.u32be(XFS_SB.LOGBLOCKS);
    const agno = Math.floor(logStart / 2 ** agBlockLog);
    const agbno = logStart - agno * 2 ** agBlockLog;
    const agLen = agno === agCount - 1 ? dblocks - agno * agBlocks : agBlocks;
    if (logBlocks === 0 || agno >= agCount || agbno < agHeaderBlocks || agbno + logBlocks > agLen) {
      b.fail(`internal log of ${logBlocks} blocks at AG ${agno} block ${agbno} does not lie inside one AG past its headers`, XFS_SB.LOGSTART);
    }
  }
  const rootIno = b.u64be(56, 'sb_rootino');
  const metaUuid = (incompat & XFS_INCOMPAT.META_UUID ? b.bytes(248, 16) : b.bytes(32, 16)).slice();
  return {
    blockSize,
    blockLog,
    dblocks,
    rootIno,
    agBlocks,
    agCount,
    sectSize,
    inodeSize,
    inodeLog,
    inoPerBlock,
    inoPerBlockLog,
    agBlockLog,
    dirBlockLog,
    incompat,
    roCompat,
    agHeaderBlocks,
    logStart,
    logBlocks,
    ftype: (incompat & XFS_INCOMPAT.FTYPE) !== 0,
    nrext64: (incompat & XFS_INCOMPAT.NREXT64) !== 0,
    metaUuid,
  };
}
