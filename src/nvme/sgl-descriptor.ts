/**
 * SGL descriptor format (16 bytes; NVMe Base 2.0 section 4.1.2): bytes 7:0 address, 11:8 length,
 * 14:12 reserved, 15 SGL identifier (descriptor type in bits 7:4, subtype in bits 3:0).
 */
import { checkBuffer, checkSafe, checkU32, checkUint, readU32, readU64, TWO_POW_32, writeU32, writeU64 } from './bytes.js';

export const SGL_DESCRIPTOR_SIZE = 16;
export const SGL_DESC_ADDRESS_OFFSET = 0;
export const SGL_DESC_LENGTH_OFFSET = 8;
export const SGL_DESC_ID_OFFSET = 15;
export const SGL_TYPE_SHIFT = 4;
export const SGL_SUBTYPE_MASK = 0xf;
/** Within the fourth dword (bytes 15:12), the identifier is the top byte. */
export const SGL_DW3_ID_SHIFT = 24;
/** SGL segments must be qword aligned. */
export const SGL_SEGMENT_ALIGN_MASK = 0x7;

export const SglType = {
  DataBlock: 0x0,
  BitBucket: 0x1,
  Segment: 0x2,
  LastSegment: 0x3,
  KeyedDataBlock: 0x4,
  TransportDataBlock: 0x5,
  VendorSpecific: 0xf,
} as const;

export const SglSubtype = {
  Address: 0x0,
  Offset: 0x1,
} as const;

export interface SglDescriptor {
  type: number;
  subtype: number;
  /** Address (Data Block, Segment, Last Segment); 0 for Bit Bucket. */
  address: number;
  /** Length in bytes (32 bits). */
  length: number;
}

export function sglIdentifier(type: number, subtype: number): number {
  checkUint('SGL descriptor type', type, 0xf);
  checkUint('SGL descriptor subtype', subtype, SGL_SUBTYPE_MASK);
  return (type << SGL_TYPE_SHIFT) | subtype;
}

/** Write a descriptor at `offset` in `out`. */
export function encodeSglDescriptor(d: SglDescriptor, out: Uint8Array, offset = 0): void {
  checkBuffer('out', out, offset + SGL_DESCRIPTOR_SIZE);
  const id = sglIdentifier(d.type, d.subtype);
  writeU64(out, offset + SGL_DESC_ADDRESS_OFFSET, 'SGL descriptor address', d.address);
  writeU32(out, offset + SGL_DESC_LENGTH_OFFSET, 'SGL descriptor length', d.length);
  out[offset + 12] = 0;
  out[offset + 13] = 0;
  out[offset + 14] = 0;
  out[offset + SGL_DESC_ID_OFFSET] = id;
}

export function decodeSglDescriptor(bytes: Uint8Array, offset = 0): SglDescriptor {
  checkBuffer('bytes', bytes, offset + SGL_DESCRIPTOR_SIZE);
  const id = bytes[offset + SGL_DESC_ID_OFFSET]!;
  return {
    type: id >>> SGL_TYPE_SHIFT,
    subtype: id & SGL_SUBTYPE_MASK,
    address: readU64(bytes, offset + SGL_DESC_ADDRESS_OFFSET, 'SGL descriptor address'),
    length: readU32(bytes, offset + SGL_DESC_LENGTH_OFFSET),
  };
}

/** The descriptor as the four little-endian dwords of an SQE data pointer (`Sqe.dptr`). */
export function sglDescriptorDwords(d: SglDescriptor): [number, number, number, number] {
  const id = sglIdentifier(d.type, d.subtype);
  checkSafe('SGL descriptor address', d.address);
  checkU32('SGL descriptor length', d.length);
  return [d.address >>> 0, Math.floor(d.address / TWO_POW_32) >>> 0, d.length >>> 0, (id << SGL_DW3_ID_SHIFT) >>> 0];
}

/** Decode a descriptor held as four dwords starting at `dw[at]` (e.g. SQE dwords 6..9). */
export function decodeSglDescriptorDwords(dw: ArrayLike<number>, at = 0): SglDescriptor {
  const id = (dw[at + 3]! >>> SGL_DW3_ID_SHIFT) & 0xff;
  return {
    type: id >>> SGL_TYPE_SHIFT,
    subtype: id & SGL_SUBTYPE_MASK,
    address: (dw[at + 1]! >>> 0) * TWO_POW_32 + (dw[at]! >>> 0),
    length: dw[at + 2]! >>> 0,
  };
}
