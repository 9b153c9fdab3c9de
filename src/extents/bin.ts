/**
 * Bounds-checked field access over one on-disk structure. Every out-of-range access becomes a
 * CorruptImageError naming the structure, never a RangeError from the typed array.
 */
import { CorruptImageError } from './types.js';

const TWO32 = 0x1_0000_0000;

export class Bin {
  readonly dv: DataView;
  constructor(
    readonly buf: Uint8Array,
    readonly structure: string,
    /** Image byte offset of buf[0], for messages. */
    readonly base: number,
  ) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  get length(): number {
    return this.buf.length;
  }
  fail(detail: string, at = 0): never {
    throw new CorruptImageError(this.structure, this.base + at, detail);
  }
  check(o: number, n: number): void {
    if (o < 0 || o + n > this.buf.length) this.fail(`field at +${o} (${n} bytes) runs past the end (${this.buf.length} bytes)`, 0);
  }
  u8(o: number): number {
    this.check(o, 1);
    return this.buf[o]!;
  }
  u16be(o: number): number {
    this.check(o, 2);
    return this.dv.getUint16(o, false);
  }
  u32be(o: number): number {
    this.check(o, 4);
    return this.dv.getUint32(o, false);
  }
  /** A 64-bit big-endian value that must fit in a safe integer. */
  u64be(o: number, what = 'field'): number {
    this.check(o, 8);
    const hi = this.dv.getUint32(o, false);
    const lo = this.dv.getUint32(o + 4, false);
    if (hi >= 0x20_0000) this.fail(`${what} ${hi.toString(16)}${lo.toString(16).padStart(8, '0')}h is too large`, o);
    return hi * TWO32 + lo;
  }
  u16le(o: number): number {
    this.check(o, 2);
    return this.dv.getUint16(o, true);
  }
  u32le(o: number): number {
    this.check(o, 4);
    return this.dv.getUint32(o, true);
  }
  bytes(o: number, n: number): Uint8Array {
    this.check(o, n);
    return this.buf.subarray(o, o + n);
  }
  sub(o: number, n: number, structure = this.structure): Bin {
    this.check(o, n);
    return new Bin(this.buf.subarray(o, o + n), structure, this.base + o);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: false });
/** Names on disk are bytes; decode as UTF-8 (invalid sequences become U+FFFD). */
export function decodeName(b: Uint8Array): string {
  let ascii = true;
  for (let i = 0; i < b.length; i++)
    if (b[i]! >= 0x80) {
      ascii = false;
      break;
    }
  if (ascii) return String.fromCharCode.apply(null, b as unknown as number[]);
  return utf8.decode(b);
}
