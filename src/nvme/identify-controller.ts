/**
 * Identify Controller data structure (CNS 01h), 4096 bytes (NVMe Base 2.0 Figure 275).
 * Fields are named by their spec mnemonics. Multi-byte fields are little-endian.
 */
import { checkBuffer, readText, readU128, readU16, readU24, readU32, writeAscii, writeU128, writeU16, writeU24, writeU32, writeU8, writeUtf8Z } from './bytes.js';

export const IDENTIFY_DATA_SIZE = 4096;

/** Byte offsets and lengths of Identify Controller fields. */
export const IdCtrlOffset = {
  VID: 0, // 2
  SSVID: 2, // 2
  SN: 4, // 20 ASCII
  MN: 24, // 40 ASCII
  FR: 64, // 8 ASCII
  RAB: 72,
  IEEE: 73, // 3
  CMIC: 76,
  MDTS: 77,
  CNTLID: 78, // 2
  VER: 80, // 4
  RTD3R: 84, // 4
  RTD3E: 88, // 4
  OAES: 92, // 4
  CTRATT: 96, // 4
  CNTRLTYPE: 111,
  OACS: 256, // 2
  ACL: 258,
  AERL: 259,
  FRMW: 260,
  LPA: 261,
  ELPE: 262,
  NPSS: 263,
  AVSCC: 264,
  APSTA: 265,
  WCTEMP: 266, // 2
  CCTEMP: 268, // 2
  TNVMCAP: 280, // 16
  UNVMCAP: 296, // 16
  KAS: 320, // 2
  SQES: 512,
  CQES: 513,
  MAXCMD: 514, // 2
  NN: 516, // 4
  ONCS: 520, // 2
  FUSES: 522, // 2
  FNA: 524,
  VWC: 525,
  AWUN: 526, // 2
  AWUPF: 528, // 2
  ACWU: 532, // 2
  SGLS: 536, // 4
  MNAN: 540, // 4
  SUBNQN: 768, // 256
} as const;

export const ID_CTRL_SN_LEN = 20;
export const ID_CTRL_MN_LEN = 40;
export const ID_CTRL_FR_LEN = 8;
export const ID_CTRL_SUBNQN_LEN = 256;

/** ONCS bits (Optional NVM Command Support). */
export const ONCS_COMPARE = 1 << 0;
export const ONCS_WRITE_UNCORRECTABLE = 1 << 1;
export const ONCS_DSM = 1 << 2;
export const ONCS_WRITE_ZEROES = 1 << 3;
export const ONCS_SAVE_FEATURES = 1 << 4;
export const ONCS_RESERVATIONS = 1 << 5;
export const ONCS_TIMESTAMP = 1 << 6;
export const ONCS_VERIFY = 1 << 7;
export const ONCS_COPY = 1 << 8;
/** VWC bit 0: volatile write cache present. */
export const VWC_PRESENT = 1 << 0;
/** SGLS bits 1:0: 01b = SGLs supported (no alignment), 10b = supported with dword alignment. */
export const SGLS_SUPPORT_MASK = 0x3;
export const SGLS_SUPPORTED = 0x1;
export const SGLS_SUPPORTED_DWORD_ALIGNED = 0x2;
/** SQES/CQES: bits 3:0 required (minimum) entry size log2, bits 7:4 maximum. */
export const QES_MAX_SHIFT = 4;
export const QES_MASK = 0xf;

export interface IdentifyController {
  vid: number;
  ssvid: number;
  /** Serial number, up to 20 ASCII characters. */
  sn: string;
  /** Model number, up to 40 ASCII characters. */
  mn: string;
  /** Firmware revision, up to 8 ASCII characters. */
  fr: string;
  rab: number;
  /** IEEE OUI (24 bits; stored least significant byte first). */
  ieee: number;
  cmic: number;
  /** Maximum data transfer size, log2 in units of CAP.MPSMIN; 0 = no limit. */
  mdts: number;
  cntlid: number;
  ver: number;
  rtd3r: number;
  rtd3e: number;
  oaes: number;
  ctratt: number;
  cntrltype: number;
  oacs: number;
  /** Abort Command Limit (0's based). */
  acl: number;
  /** Asynchronous Event Request Limit (0's based). */
  aerl: number;
  frmw: number;
  lpa: number;
  /** Error Log Page Entries (0's based). */
  elpe: number;
  /** Number of Power States Support (0's based). */
  npss: number;
  avscc: number;
  apsta: number;
  /** Warning / critical composite temperature thresholds, Kelvin. */
  wctemp: number;
  cctemp: number;
  /** Total / unallocated NVM capacity in bytes (128-bit fields, must be < 2^53). */
  tnvmcap: number;
  unvmcap: number;
  kas: number;
  sqes: number;
  cqes: number;
  maxcmd: number;
  /** Number of Namespaces (maximum NSID). */
  nn: number;
  oncs: number;
  fuses: number;
  fna: number;
  vwc: number;
  /** Atomic Write Unit Normal / Power Fail (0's based, in logical blocks). */
  awun: number;
  awupf: number;
  acwu: number;
  sgls: number;
  mnan: number;
  /** NVM Subsystem NVMe Qualified Name (NUL padded UTF-8). */
  subnqn: string;
}

type NumericField = Exclude<keyof IdentifyController, 'sn' | 'mn' | 'fr' | 'subnqn'>;

/** Fields of fixed width, encoded identically: [field, offset, width in bytes]. */
const SCALARS: ReadonlyArray<readonly [NumericField, number, 1 | 2 | 3 | 4 | 16]> = [
  ['vid', IdCtrlOffset.VID, 2],
  ['ssvid', IdCtrlOffset.SSVID, 2],
  ['rab', IdCtrlOffset.RAB, 1],
  ['ieee', IdCtrlOffset.IEEE, 3],
  ['cmic', IdCtrlOffset.CMIC, 1],
  ['mdts', IdCtrlOffset.MDTS, 1],
  ['cntlid', IdCtrlOffset.CNTLID, 2],
  ['ver', IdCtrlOffset.VER, 4],
  ['rtd3r', IdCtrlOffset.RTD3R, 4],
  ['rtd3e', IdCtrlOffset.RTD3E, 4],
  ['oaes', IdCtrlOffset.OAES, 4],
  ['ctratt', IdCtrlOffset.CTRATT, 4],
  ['cntrltype', IdCtrlOffset.CNTRLTYPE, 1],
  ['oacs', IdCtrlOffset.OACS, 2],
  ['acl', IdCtrlOffset.ACL, 1],
  ['aerl', IdCtrlOffset.AERL, 1],
  ['frmw', IdCtrlOffset.FRMW, 1],
  ['lpa', IdCtrlOffset.LPA, 1],
  ['elpe', IdCtrlOffset.ELPE, 1],
  ['npss', IdCtrlOffset.NPSS, 1],
  ['avscc', IdCtrlOffset.AVSCC, 1],
  ['apsta', IdCtrlOffset.APSTA, 1],
  ['wctemp', IdCtrlOffset.WCTEMP, 2],
  ['cctemp', IdCtrlOffset.CCTEMP, 2],
  ['tnvmcap', IdCtrlOffset.TNVMCAP, 16],
  ['unvmcap', IdCtrlOffset.UNVMCAP, 16],
  ['kas', IdCtrlOffset.KAS, 2],
  ['sqes', IdCtrlOffset.SQES, 1],
  ['cqes', IdCtrlOffset.CQES, 1],
  ['maxcmd', IdCtrlOffset.MAXCMD, 2],
  ['nn', IdCtrlOffset.NN, 4],
  ['oncs', IdCtrlOffset.ONCS, 2],
  ['fuses', IdCtrlOffset.FUSES, 2],
  ['fna', IdCtrlOffset.FNA, 1],
  ['vwc', IdCtrlOffset.VWC, 1],
  ['awun', IdCtrlOffset.AWUN, 2],
  ['awupf', IdCtrlOffset.AWUPF, 2],
  ['acwu', IdCtrlOffset.ACWU, 2],
  ['sgls', IdCtrlOffset.SGLS, 4],
  ['mnan', IdCtrlOffset.MNAN, 4],
];

/** Input for encoding: every field optional (numbers default to 0, strings to empty). */
export type IdentifyControllerInit = Partial<IdentifyController>;

/** All fields zero / empty. */
export function emptyIdentifyController(): IdentifyController {
  const c = { sn: '', mn: '', fr: '', subnqn: '' } as IdentifyController;
  for (const [name] of SCALARS) c[name] = 0;
  return c;
}

function checkQes(field: string, v: number): void {
  const min = v & QES_MASK;
  const max = v >>> QES_MAX_SHIFT;
  if (min > max) throw new RangeError(`${field}: required entry size 2^${min} exceeds maximum 2^${max}`);
}

/** Encode into `out` (at least 4096 bytes; the first 4096 are overwritten, unused bytes zeroed). */
export function encodeIdentifyController(c: IdentifyControllerInit, out: Uint8Array): void {
  checkBuffer('out', out, IDENTIFY_DATA_SIZE);
  out.fill(0, 0, IDENTIFY_DATA_SIZE);
  for (const [name, off, width] of SCALARS) {
    const v = c[name] ?? 0;
    const field = name.toUpperCase();
    switch (width) {
      case 1:
        writeU8(out, off, field, v);
        break;
      case 2:
        writeU16(out, off, field, v);
        break;
      case 3:
        writeU24(out, off, field, v);
        break;
      case 4:
        writeU32(out, off, field, v);
        break;
      case 16:
        writeU128(out, off, field, v);
        break;
    }
  }
  checkQes('SQES', out[IdCtrlOffset.SQES]!);
  checkQes('CQES', out[IdCtrlOffset.CQES]!);
  writeAscii(out, IdCtrlOffset.SN, ID_CTRL_SN_LEN, 'SN', c.sn ?? '');
  writeAscii(out, IdCtrlOffset.MN, ID_CTRL_MN_LEN, 'MN', c.mn ?? '');
  writeAscii(out, IdCtrlOffset.FR, ID_CTRL_FR_LEN, 'FR', c.fr ?? '');
  writeUtf8Z(out, IdCtrlOffset.SUBNQN, ID_CTRL_SUBNQN_LEN, 'SUBNQN', c.subnqn ?? '');
}

/** Decode the first 4096 bytes of `bytes`. Strings are trimmed of trailing spaces and NULs. */
export function decodeIdentifyController(bytes: Uint8Array): IdentifyController {
  checkBuffer('Identify Controller data', bytes, IDENTIFY_DATA_SIZE);
  const c = emptyIdentifyController();
  for (const [name, off, width] of SCALARS) {
    switch (width) {
      case 1:
        c[name] = bytes[off]!;
        break;
      case 2:
        c[name] = readU16(bytes, off);
        break;
      case 3:
        c[name] = readU24(bytes, off);
        break;
      case 4:
        c[name] = readU32(bytes, off);
        break;
      case 16:
        c[name] = readU128(bytes, off, name.toUpperCase());
        break;
    }
  }
  checkQes('SQES', c.sqes);
  checkQes('CQES', c.cqes);
  c.sn = readText(bytes, IdCtrlOffset.SN, ID_CTRL_SN_LEN);
  c.mn = readText(bytes, IdCtrlOffset.MN, ID_CTRL_MN_LEN);
  c.fr = readText(bytes, IdCtrlOffset.FR, ID_CTRL_FR_LEN);
  c.subnqn = readText(bytes, IdCtrlOffset.SUBNQN, ID_CTRL_SUBNQN_LEN);
  return c;
}

/** Maximum data transfer size in bytes given MDTS and the minimum page size; Infinity when MDTS is 0. */
export function maxTransferBytes(mdts: number, minPageSize: number): number {
  return mdts === 0 ? Infinity : minPageSize * 2 ** mdts;
}
