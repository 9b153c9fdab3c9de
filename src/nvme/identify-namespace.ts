/**
 * Identify Namespace data structure for the NVM command set (CNS 00h), 4096 bytes
 * (NVM Command Set 1.0 Figure 97). Exposes the active LBA format as blockSize / blocks.
 */
import { checkBuffer, checkUint, readU64, readU32, writeBytes, writeU32, writeU64, writeU8 } from './bytes.js';
import { IDENTIFY_DATA_SIZE } from './identify-controller.js';

export const IdNsOffset = {
  NSZE: 0, // 8
  NCAP: 8, // 8
  NUSE: 16, // 8
  NSFEAT: 24,
  NLBAF: 25, // 0's based
  FLBAS: 26,
  MC: 27,
  DPC: 28,
  DPS: 29,
  NMIC: 30,
  NGUID: 104, // 16
  EUI64: 120, // 8
  LBAF: 128, // 64 x 4 bytes
} as const;

export const ID_NS_NGUID_LEN = 16;
export const ID_NS_EUI64_LEN = 8;
export const LBAF_ENTRY_SIZE = 4;
/** Maximum number of LBA formats (NLBAF is 0's based, so at most 63). */
export const MAX_LBA_FORMATS = 64;

/** LBA format dword fields. */
export const LBAF_MS_MASK = 0xffff; // bits 15:0 metadata size
export const LBAF_LBADS_SHIFT = 16; // bits 23:16 log2 data size
export const LBAF_RP_SHIFT = 24; // bits 25:24 relative performance
export const LBAF_RP_MASK = 0x3;
/** Smallest / largest supported LBA data size (log2): 512 B .. 1 GiB. */
export const LBADS_MIN = 9;
export const LBADS_MAX = 30;

/** FLBAS fields. */
export const FLBAS_INDEX_LO_MASK = 0xf; // bits 3:0
export const FLBAS_EXTENDED_BIT = 1 << 4; // metadata transferred at end of LBA
export const FLBAS_INDEX_HI_SHIFT = 5; // bits 6:5 = index bits 5:4
export const FLBAS_INDEX_HI_MASK = 0x3;
const FLBAS_INDEX_LO_BITS = 4;

export interface LbaFormat {
  /** Metadata size in bytes. */
  ms: number;
  /** log2 of the LBA data size (0 = format not available). */
  lbads: number;
  /** Relative performance (0 best .. 3 degraded). */
  rp: number;
}

export interface IdentifyNamespace {
  nsze: number;
  ncap: number;
  nuse: number;
  nsfeat: number;
  /** Number of LBA formats, 0's based (as in the data structure). */
  nlbaf: number;
  /** Raw FLBAS byte. */
  flbas: number;
  mc: number;
  dpc: number;
  dps: number;
  nmic: number;
  nguid: Uint8Array;
  eui64: Uint8Array;
  /** The nlbaf + 1 LBA formats. */
  lbaFormats: LbaFormat[];
  /** Index of the active LBA format (from FLBAS). */
  formatIndex: number;
  activeFormat: LbaFormat;
  /** Metadata is transferred at the end of each LBA (FLBAS bit 4). */
  extendedLba: boolean;
  /** Logical block size in bytes (2^LBADS of the active format). */
  blockSize: number;
  /** Namespace size in logical blocks (NSZE). */
  blocks: number;
}

export interface IdentifyNamespaceInit {
  nsze: number;
  /** Defaults to nsze. */
  ncap?: number;
  /** Defaults to nsze. */
  nuse?: number;
  nsfeat?: number;
  mc?: number;
  dpc?: number;
  dps?: number;
  nmic?: number;
  nguid?: Uint8Array;
  eui64?: Uint8Array;
  /** 1 to 64 LBA formats; NLBAF is derived as length - 1. */
  lbaFormats: readonly LbaFormat[];
  /** Active format index; defaults to 0. */
  formatIndex?: number;
  extendedLba?: boolean;
}

/** FLBAS byte for an active format index. */
export function encodeFlbas(formatIndex: number, extendedLba = false): number {
  checkUint('FLBAS format index', formatIndex, MAX_LBA_FORMATS - 1);
  return (formatIndex & FLBAS_INDEX_LO_MASK) | (extendedLba ? FLBAS_EXTENDED_BIT : 0) | ((formatIndex >>> FLBAS_INDEX_LO_BITS) << FLBAS_INDEX_HI_SHIFT);
}

/** Active format index encoded in FLBAS (bits 6:5 are index bits 5:4, bits 3:0 index bits 3:0). */
export function flbasFormatIndex(flbas: number): number {
  return (flbas & FLBAS_INDEX_LO_MASK) | (((flbas >>> FLBAS_INDEX_HI_SHIFT) & FLBAS_INDEX_HI_MASK) << FLBAS_INDEX_LO_BITS);
}

export function encodeLbaFormat(f: LbaFormat, index = 0): number {
  const p = `LBAF[${index}]`;
  checkUint(`${p}.MS`, f.ms, LBAF_MS_MASK);
  checkUint(`${p}.LBADS`, f.lbads, 0xff);
  checkUint(`${p}.RP`, f.rp, LBAF_RP_MASK);
  return (f.ms | (f.lbads << LBAF_LBADS_SHIFT) | (f.rp << LBAF_RP_SHIFT)) >>> 0;
}

export function decodeLbaFormat(dw: number): LbaFormat {
  return { ms: dw & LBAF_MS_MASK, lbads: (dw >>> LBAF_LBADS_SHIFT) & 0xff, rp: (dw >>> LBAF_RP_SHIFT) & LBAF_RP_MASK };
}

function checkLbads(index: number, lbads: number, active: boolean): void {
  if (!active && lbads === 0) return; // format not currently available
  if (lbads < LBADS_MIN || lbads > LBADS_MAX) {
    throw new RangeError(`LBAF[${index}].LBADS must be in [${LBADS_MIN}, ${LBADS_MAX}]${active ? '' : ' or 0'}, got ${lbads}`);
  }
}

/** Encode into `out` (at least 4096 bytes; the first 4096 are overwritten). */
export function encodeIdentifyNamespace(ns: IdentifyNamespaceInit, out: Uint8Array): void {
  checkBuffer('out', out, IDENTIFY_DATA_SIZE);
  const fmts = ns.lbaFormats;
  if (!Array.isArray(fmts)) throw new TypeError('lbaFormats must be an array');
  if (fmts.length < 1 || fmts.length > MAX_LBA_FORMATS) {
    throw new RangeError(`lbaFormats must hold 1 to ${MAX_LBA_FORMATS} formats (NLBAF 0..63), got ${fmts.length}`);
  }
  const index = ns.formatIndex ?? 0;
  checkUint('formatIndex', index, fmts.length - 1);
  fmts.forEach((f, i) => checkLbads(i, f.lbads, i === index));
  out.fill(0, 0, IDENTIFY_DATA_SIZE);
  writeU64(out, IdNsOffset.NSZE, 'NSZE', ns.nsze);
  writeU64(out, IdNsOffset.NCAP, 'NCAP', ns.ncap ?? ns.nsze);
  writeU64(out, IdNsOffset.NUSE, 'NUSE', ns.nuse ?? ns.nsze);
  writeU8(out, IdNsOffset.NSFEAT, 'NSFEAT', ns.nsfeat ?? 0);
  out[IdNsOffset.NLBAF] = fmts.length - 1;
  out[IdNsOffset.FLBAS] = encodeFlbas(index, ns.extendedLba ?? false);
  writeU8(out, IdNsOffset.MC, 'MC', ns.mc ?? 0);
  writeU8(out, IdNsOffset.DPC, 'DPC', ns.dpc ?? 0);
  writeU8(out, IdNsOffset.DPS, 'DPS', ns.dps ?? 0);
  writeU8(out, IdNsOffset.NMIC, 'NMIC', ns.nmic ?? 0);
  writeBytes(out, IdNsOffset.NGUID, ID_NS_NGUID_LEN, 'NGUID', ns.nguid);
  writeBytes(out, IdNsOffset.EUI64, ID_NS_EUI64_LEN, 'EUI64', ns.eui64);
  fmts.forEach((f, i) => writeU32(out, IdNsOffset.LBAF + LBAF_ENTRY_SIZE * i, `LBAF[${i}]`, encodeLbaFormat(f, i)));
}

/** Decode and validate an Identify Namespace structure. */
export function decodeIdentifyNamespace(bytes: Uint8Array): IdentifyNamespace {
  checkBuffer('Identify Namespace data', bytes, IDENTIFY_DATA_SIZE);
  const nlbaf = bytes[IdNsOffset.NLBAF]!;
  if (nlbaf > MAX_LBA_FORMATS - 1) throw new RangeError(`NLBAF must be at most ${MAX_LBA_FORMATS - 1}, got ${nlbaf}`);
  const flbas = bytes[IdNsOffset.FLBAS]!;
  const formatIndex = flbasFormatIndex(flbas);
  if (formatIndex > nlbaf) {
    throw new RangeError(`FLBAS selects LBA format ${formatIndex}, but NLBAF is ${nlbaf} (formats 0..${nlbaf})`);
  }
  const lbaFormats: LbaFormat[] = [];
  for (let i = 0; i <= nlbaf; i++) {
    const f = decodeLbaFormat(readU32(bytes, IdNsOffset.LBAF + LBAF_ENTRY_SIZE * i));
    checkLbads(i, f.lbads, i === formatIndex);
    lbaFormats.push(f);
  }
  const activeFormat = lbaFormats[formatIndex]!;
  const nsze = readU64(bytes, IdNsOffset.NSZE, 'NSZE');
  return {
    nsze,
    ncap: readU64(bytes, IdNsOffset.NCAP, 'NCAP'),
    nuse: readU64(bytes, IdNsOffset.NUSE, 'NUSE'),
    nsfeat: bytes[IdNsOffset.NSFEAT]!,
    nlbaf,
    flbas,
    mc: bytes[IdNsOffset.MC]!,
    dpc: bytes[IdNsOffset.DPC]!,
    dps: bytes[IdNsOffset.DPS]!,
    nmic: bytes[IdNsOffset.NMIC]!,
    nguid: bytes.slice(IdNsOffset.NGUID, IdNsOffset.NGUID + ID_NS_NGUID_LEN),
    eui64: bytes.slice(IdNsOffset.EUI64, IdNsOffset.EUI64 + ID_NS_EUI64_LEN),
    lbaFormats,
    formatIndex,
    activeFormat,
    extendedLba: (flbas & FLBAS_EXTENDED_BIT) !== 0,
    blockSize: 2 ** activeFormat.lbads,
    blocks: nsze,
  };
}
