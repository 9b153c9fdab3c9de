/**
 * The test's own view of where an image's data area and fixed metadata are, computed from the raw superblock
 * and group descriptor bytes without the decoders (cross-checked against dumpe2fs and xfs_db in
 * bounds.test.ts), and a check that a decoded map stays inside the data area and off the metadata.
 */
import { execFileSync } from 'node:child_process';
import type { FileMap } from '../../src/extents/types.js';

export type ReadFn = (offset: number, length: number) => Uint8Array;

/** A block range [start, end) with what lives there. */
export type Range = [start: number, end: number, label: string];

export interface Geometry {
  fs: 'ext4' | 'xfs';
  blockSize: number;
  /** Data area in blocks: [dataStart, dataEnd). */
  dataStart: number;
  dataEnd: number;
  /** Fixed metadata, in blocks. */
  meta: Range[];
  /** XFS: blocks per AG (an extent must stay inside one); 0 for ext4. */
  agBlocks: number;
  /** Largest end of a file's mapping in bytes. */
  maxLogicalEnd: number;
  /** ext4: the inode tables (inline data lives there). */
  inodeTables: Range[];
}

const le = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

// ext4 superblock (at byte 1024) and group descriptor field offsets, as the on-disk layout documents them
const E = {
  BLOCKS_LO: 0x4,
  FIRST_DATA: 0x14,
  LOG_BS: 0x18,
  BPG: 0x20,
  IPG: 0x28,
  REV: 0x4c,
  INODE_SIZE: 0x58,
  COMPAT: 0x5c,
  INCOMPAT: 0x60,
  RO: 0x64,
  RESERVED_GDT: 0xce,
  DESC_SIZE: 0xfe,
  FIRST_META_BG: 0x104,
  BLOCKS_HI: 0x150,
  MMP: 0x168,
  BACKUP_BGS: 0x24c,
} as const;
const GDF = { BB_LO: 0x0, IB_LO: 0x4, IT_LO: 0x8, BB_HI: 0x20, IB_HI: 0x24, IT_HI: 0x28 } as const;

/** ext4 geometry from the superblock and every group descriptor. */
export function ext4Oracle(read: ReadFn): Geometry {
  const s = le(read(1024, 1024));
  const u32 = (o: number): number => s.getUint32(o, true);
  const u16 = (o: number): number => s.getUint16(o, true);
  const incompat = u32(E.INCOMPAT);
  const compat = u32(E.COMPAT);
  const ro = u32(E.RO);
  const bs = 1024 * 2 ** u32(E.LOG_BS);
  const is64 = (incompat & 0x80) !== 0;
  const blocks = u32(E.BLOCKS_LO) + (is64 ? u32(E.BLOCKS_HI) * 2 ** 32 : 0);
  const first = u32(E.FIRST_DATA);
  const bpg = u32(E.BPG);
  const ipg = u32(E.IPG);
  const isz = u32(E.REV) === 0 ? 128 : u16(E.INODE_SIZE);
  const dsz = is64 ? u16(E.DESC_SIZE) : 32;
  const groups = Math.ceil((blocks - first) / bpg);
  const perBlock = bs / dsz;
  const metaBg = (incompat & 0x10) !== 0;
  const firstMetaBg = u32(E.FIRST_META_BG);
  const reserved = u16(E.RESERVED_GDT);
  const backups = compat & 0x200 ? [u32(E.BACKUP_BGS), u32(E.BACKUP_BGS + 4)] : null;
  // groups with a superblock copy: 0, then 1 and the powers of 3, 5 and 7 (sparse_super), the listed two
  // (sparse_super2), or all of them
  const supers = new Set<number>([0]);
  if (backups !== null) for (const g of backups) supers.add(g);
  else if (!(ro & 0x1)) for (let g = 1; g < groups; g++) supers.add(g);
  else {
    supers.add(1);
    for (const base of [3, 5, 7]) for (let p = base; p < groups; p *= base) supers.add(p);
  }
  const start = (g: number): number => first + g * bpg;
  const meta: Range[] = [];
  const itables: Range[] = [];
  const itBlocks = Math.ceil((ipg * isz) / bs);
  if (incompat & 0x100) {
    const mmp = s.getUint32(E.MMP, true) + s.getUint32(E.MMP + 4, true) * 2 ** 32;
    meta.push([mmp, mmp + 1, 'mmp']);
  }
  for (let g = 0; g < groups; g++) {
    const sup = supers.has(g) ? 1 : 0;
    if (sup) meta.push([start(g), start(g) + 1, `sb ${g}`]);
    if (!metaBg || g < firstMetaBg * perBlock) {
      if (sup) {
        const gdt = metaBg ? firstMetaBg : Math.ceil(groups / perBlock);
        meta.push([start(g) + 1, start(g) + 1 + gdt + reserved, `gdt+reserved ${g}`]);
      }
    } else if ([0, 1, perBlock - 1].includes(g % perBlock)) {
      meta.push([start(g) + sup, start(g) + sup + 1, `meta_bg gdt ${g}`]);
    }
    // where this group's descriptor is
    const gdtIndex = Math.floor(g / perBlock);
    let off: number;
    if (metaBg && gdtIndex >= firstMetaBg) {
      const mf = gdtIndex * perBlock;
      off = (start(mf) + (supers.has(mf) ? 1 : 0)) * bs + (g % perBlock) * dsz;
    } else off = (first + 1) * bs + g * dsz;
    const d = le(read(off, dsz));
    const f = (lo: number, hi: number): number => d.getUint32(lo, true) + (dsz >= 64 ? d.getUint32(hi, true) * 2 ** 32 : 0);
    meta.push([f(GDF.BB_LO, GDF.BB_HI), f(GDF.BB_LO, GDF.BB_HI) + 1, `block bitmap ${g}`]);
    meta.push([f(GDF.IB_LO, GDF.IB_HI), f(GDF.IB_LO, GDF.IB_HI) + 1, `inode bitmap ${g}`]);
    const it = f(GDF.IT_LO, GDF.IT_HI);
    meta.push([it, it + itBlocks, `inode table ${g}`]);
    itables.push([it, it + itBlocks, `inode table ${g}`]);
  }
  return { fs: 'ext4', blockSize: bs, dataStart: first, dataEnd: blocks, meta, agBlocks: 0, maxLogicalEnd: (2 ** 32 - 1) * bs, inodeTables: itables };
}

/** XFS geometry from the primary superblock: AG headers of every AG and the internal log. */
export function xfsOracle(read: ReadFn): Geometry {
  const v = le(read(0, 512));
  const u64 = (o: number): number => v.getUint32(o, false) * 2 ** 32 + v.getUint32(o + 4, false);
  const bs = v.getUint32(4, false);
  const dblocks = u64(8);
  const logstart = u64(48);
  const agblocks = v.getUint32(84, false);
  const agcount = v.getUint32(88, false);
  const logblocks = v.getUint32(96, false);
  const sect = v.getUint16(102, false);
  const agblklog = v.getUint8(124);
  // superblock, AGF, AGI and AGFL take the first four sectors of every AG
  const hdr = Math.ceil((4 * sect) / bs);
  const meta: Range[] = [];
  for (let ag = 0; ag < agcount; ag++) meta.push([ag * agblocks, ag * agblocks + hdr, `AG ${ag} headers`]);
  if (logstart !== 0) {
    const ag = Math.floor(logstart / 2 ** agblklog);
    const lin = ag * agblocks + (logstart % 2 ** agblklog);
    meta.push([lin, lin + logblocks, 'log']);
  }
  return { fs: 'xfs', blockSize: bs, dataStart: 0, dataEnd: dblocks, meta, agBlocks: agblocks, maxLogicalEnd: Number.MAX_SAFE_INTEGER, inodeTables: [] };
}

/** Sort and merge ranges (labels dropped) for comparisons. */
export function merged(ranges: readonly (readonly [number, number, ...unknown[]])[]): [number, number][] {
  const out: [number, number][] = [];
  for (const [a, b] of [...ranges].filter((r) => r[1] > r[0]).sort((x, y) => x[0] - y[0])) {
    const last = out[out.length - 1];
    if (last !== undefined && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** The fixed metadata dumpe2fs lists for an image (superblocks, descriptors, reserved GDT, bitmaps, inode tables, MMP). */
export function dumpe2fsRanges(img: string): Range[] {
  const text = execFileSync('dumpe2fs', [img], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 * 1024 * 1024 }).toString();
  const out: Range[] = [];
  const re = /(superblock|Group descriptors?|Reserved GDT blocks|Block bitmap|Inode bitmap|Inode table) at (\d+)(?:-(\d+))?/g;
  for (const m of text.matchAll(re)) {
    const a = Number(m[2]);
    out.push([a, (m[3] === undefined ? a : Number(m[3])) + 1, m[1]!]);
  }
  const mmp = /MMP block number:\s+(\d+)/.exec(text);
  if (mmp) out.push([Number(mmp[1]), Number(mmp[1]) + 1, 'MMP']);
  return out;
}

/** xfs_db's view of the superblock fields the geometry uses. */
export function xfsDbGeometry(img: string): Record<string, number> {
  const text = execFileSync('xfs_db', ['-r', '-c', 'sb 0', '-c', 'print blocksize dblocks agcount agblocks logstart logblocks sectsize', img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^(\w+) = (\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/**
 * Why `map` breaks the geometry, or null: every block-mapped extent must be whole blocks of exact integers,
 * inside the data area (one AG for XFS), off every metadata range, within the logical limit; inline
 * extents must lie in an ext4 inode table or, for XFS, inside one data-area block.
 */
export function violation(geo: Geometry, map: FileMap): string | null {
  const bs = geo.blockSize;
  for (const [i, e] of map.extents.entries()) {
    const at = `${map.path}: extent ${i} ${JSON.stringify(e)}`;
    for (const v of [e.logical, e.physical, e.length, e.logical + e.length, e.physical + e.length]) {
      if (!Number.isSafeInteger(v) || v < 0) return `${at}: ${v} is not an exact non-negative integer`;
    }
    if (e.length === 0) return `${at}: empty`;
    if (e.logical + e.length > geo.maxLogicalEnd) return `${at}: logical end past ${geo.maxLogicalEnd}`;
    if (e.flags.includes('inline')) {
      if (geo.fs === 'ext4') {
        if (!geo.inodeTables.some(([a, b]) => e.physical >= a * bs && e.physical + e.length <= b * bs)) return `${at}: inline data outside every inode table`;
      } else {
        const blk = Math.floor(e.physical / bs);
        if (Math.floor((e.physical + e.length - 1) / bs) !== blk) return `${at}: inline data spans blocks`;
        const hit = geo.meta.find(([a, b]) => blk >= a && blk < b);
        if (blk < geo.dataStart || blk >= geo.dataEnd || hit) return `${at}: inline data in block ${blk}${hit ? ` (${hit[2]})` : ''}`;
      }
      continue;
    }
    if (e.physical % bs !== 0 || e.length % bs !== 0) return `${at}: not whole blocks`;
    const a = e.physical / bs;
    const b = a + e.length / bs;
    if (a < geo.dataStart || b > geo.dataEnd) return `${at}: blocks ${a}..${b - 1} outside the data area ${geo.dataStart}..${geo.dataEnd - 1}`;
    if (geo.agBlocks > 0 && Math.floor(a / geo.agBlocks) !== Math.floor((b - 1) / geo.agBlocks)) return `${at}: spans AGs`;
    const hit = geo.meta.find(([x, y]) => a < y && b > x);
    if (hit) return `${at}: blocks ${a}..${b - 1} overlap ${hit[2]} (${hit[0]}..${hit[1] - 1})`;
  }
  return null;
}
