/**
 * Little-endian field access and input validation shared by the NVMe data-structure codecs.
 * Every helper takes the spec field name so errors say which field is wrong.
 * 64-bit and 128-bit quantities are JavaScript numbers and must stay below 2^53.
 */

import { TWO_POW_32 } from './sqe.js';

export { TWO_POW_32 };
/** Largest high dword of a 64-bit value that is still a safe integer (2^53 - 1 >> 32). */
const SAFE_HI_MAX = 0x1f_ffff;

/** Throw a TypeError/RangeError unless `v` is an integer in [0, max]. */
export function checkUint(field: string, v: unknown, max: number): number {
  if (typeof v !== 'number' || Number.isNaN(v)) {
    throw new TypeError(`${field} must be a number, got ${typeof v === 'number' ? 'NaN' : typeof v}`);
  }
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new RangeError(`${field} must be an integer in [0, ${max}], got ${v}`);
  }
  return v;
}

export const checkU8 = (field: string, v: unknown): number => checkUint(field, v, 0xff);
export const checkU16 = (field: string, v: unknown): number => checkUint(field, v, 0xffff);
export const checkU32 = (field: string, v: unknown): number => checkUint(field, v, 0xffff_ffff);
/** Any non-negative safe integer (the representable part of a 64/128-bit field). */
export const checkSafe = (field: string, v: unknown): number => checkUint(field, v, Number.MAX_SAFE_INTEGER);

/** Throw unless `bytes` is a Uint8Array of at least `min` bytes. */
export function checkBuffer(field: string, bytes: unknown, min: number): Uint8Array {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${field} must be a Uint8Array`);
  if (bytes.length < min) throw new RangeError(`${field} must be at least ${min} bytes, got ${bytes.length}`);
  return bytes;
}

export function readU16(b: Uint8Array, off: number): number {
  return b[off]! | (b[off + 1]! << 8);
}
export function readU32(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}
export function readU24(b: Uint8Array, off: number): number {
  return b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16);
}
/** Read a 64-bit little-endian value; throws RangeError naming `field` if it is 2^53 or more. */
export function readU64(b: Uint8Array, off: number, field: string): number {
  const lo = readU32(b, off);
  const hi = readU32(b, off + 4);
  if (hi > SAFE_HI_MAX) throw new RangeError(`${field} exceeds 2^53 - 1 and cannot be represented`);
  return hi * TWO_POW_32 + lo;
}
/** Read a 128-bit little-endian value; throws RangeError naming `field` if it is 2^53 or more. */
export function readU128(b: Uint8Array, off: number, field: string): number {
  for (let i = 8; i < 16; i++) {
    if (b[off + i] !== 0) throw new RangeError(`${field} exceeds 2^53 - 1 and cannot be represented`);
  }
  return readU64(b, off, field);
}

export function writeU8(b: Uint8Array, off: number, field: string, v: number): void {
  b[off] = checkU8(field, v);
}
export function writeU16(b: Uint8Array, off: number, field: string, v: number): void {
  checkU16(field, v);
  b[off] = v & 0xff;
  b[off + 1] = v >>> 8;
}
export function writeU24(b: Uint8Array, off: number, field: string, v: number): void {
  checkUint(field, v, 0xff_ffff);
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = v >>> 16;
}
export function writeU32(b: Uint8Array, off: number, field: string, v: number): void {
  checkU32(field, v);
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = (v >>> 16) & 0xff;
  b[off + 3] = v >>> 24;
}
export function writeU64(b: Uint8Array, off: number, field: string, v: number): void {
  checkSafe(field, v);
  writeU32(b, off, field, v % TWO_POW_32);
  writeU32(b, off + 4, field, Math.floor(v / TWO_POW_32));
}
export function writeU128(b: Uint8Array, off: number, field: string, v: number): void {
  writeU64(b, off, field, v);
  b.fill(0, off + 8, off + 16);
}

const ASCII_SPACE = 0x20;
const ASCII_PRINTABLE_MAX = 0x7e;

/** Write `s` as printable ASCII into a `len`-byte field, padded with spaces. */
export function writeAscii(b: Uint8Array, off: number, len: number, field: string, s: string): void {
  if (typeof s !== 'string') throw new TypeError(`${field} must be a string, got ${typeof s}`);
  if (s.length > len) throw new RangeError(`${field} must be at most ${len} characters, got ${s.length}`);
  for (let i = 0; i < len; i++) {
    if (i < s.length) {
      const c = s.charCodeAt(i);
      if (c < ASCII_SPACE || c > ASCII_PRINTABLE_MAX) {
        throw new RangeError(`${field} must be printable ASCII; character ${i} is 0x${c.toString(16)}`);
      }
      b[off + i] = c;
    } else {
      b[off + i] = ASCII_SPACE;
    }
  }
}

/** Write `s` as a NUL-padded UTF-8 string (e.g. an NQN) into a `len`-byte field. */
export function writeUtf8Z(b: Uint8Array, off: number, len: number, field: string, s: string): void {
  if (typeof s !== 'string') throw new TypeError(`${field} must be a string, got ${typeof s}`);
  const enc = new TextEncoder().encode(s);
  if (enc.length > len) throw new RangeError(`${field} must be at most ${len} bytes, got ${enc.length}`);
  b.set(enc, off);
  b.fill(0, off + enc.length, off + len);
}

/** Read a fixed-length text field, trimming trailing spaces and NULs. */
export function readText(b: Uint8Array, off: number, len: number): string {
  let end = off + len;
  while (end > off && (b[end - 1] === ASCII_SPACE || b[end - 1] === 0)) end--;
  return new TextDecoder('utf-8').decode(b.subarray(off, end));
}

/** Copy `len` bytes of a binary identifier, validating the source length. */
export function writeBytes(b: Uint8Array, off: number, len: number, field: string, v: Uint8Array | undefined): void {
  if (v === undefined) {
    b.fill(0, off, off + len);
    return;
  }
  if (!(v instanceof Uint8Array)) throw new TypeError(`${field} must be a Uint8Array`);
  if (v.length !== len) throw new RangeError(`${field} must be exactly ${len} bytes, got ${v.length}`);
  b.set(v, off);
}

export function isPowerOfTwo(v: number): boolean {
  return Number.isInteger(v) && v > 0 && 2 ** Math.round(Math.log2(v)) === v;
}
