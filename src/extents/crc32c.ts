/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table driven, slicing by 8. */

const POLY = 0x82f63b78;
const T = new Uint32Array(8 * 256);
for (let i = 0; i < 256; i++) {
  let c = i;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
  T[i] = c >>> 0;
}
for (let i = 0; i < 256; i++) {
  for (let t = 1; t < 8; t++) T[t * 256 + i] = (T[(t - 1) * 256 + i]! >>> 8) ^ T[T[(t - 1) * 256 + i]! & 0xff]!;
}

/**
 * Advance a raw CRC-32C register over `buf[start, end)` with no pre/post inversion.
 * (ext4 chains checksums this way; the standard CRC is `~crc32cRaw(~0, data)`.)
 */
export function crc32cRaw(crc: number, buf: Uint8Array, start = 0, end = buf.length): number {
  let c = crc >>> 0;
  let i = start;
  while (i + 8 <= end) {
    const a = (c ^ (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24))) >>> 0;
    c =
      T[7 * 256 + (a & 0xff)]! ^
      T[6 * 256 + ((a >>> 8) & 0xff)]! ^
      T[5 * 256 + ((a >>> 16) & 0xff)]! ^
      T[4 * 256 + (a >>> 24)]! ^
      T[3 * 256 + buf[i + 4]!]! ^
      T[2 * 256 + buf[i + 5]!]! ^
      T[256 + buf[i + 6]!]! ^
      T[buf[i + 7]!]!;
    i += 8;
  }
  for (; i < end; i++) c = T[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/** The standard CRC-32C of `buf[start, end)` (init ~0, final inversion). crc32c('123456789') = 0xE3069283. */
export function crc32c(buf: Uint8Array, start = 0, end = buf.length): number {
  return ~crc32cRaw(0xffffffff, buf, start, end) >>> 0;
}

/**
 * CRC-32C of a buffer whose 4-byte checksum field at `fieldOffset` counts as zero (how XFS and ext4 compute
 * checksums of structures that embed their own checksum). Returns the standard (inverted) CRC.
 */
export function crc32cSkipField(buf: Uint8Array, fieldOffset: number, seedRaw = 0xffffffff, end = buf.length, fieldLen = 4): number {
  let c = crc32cRaw(seedRaw, buf, 0, fieldOffset);
  c = crc32cRaw(c, ZEROS, 0, fieldLen);
  return ~crc32cRaw(c, buf, fieldOffset + fieldLen, end) >>> 0;
}

/** Like crc32cSkipField but returns the raw register (no final inversion), for ext4's chained checksums. */
export function crc32cRawSkipField(seedRaw: number, buf: Uint8Array, fieldOffset: number, fieldLen: number, end = buf.length): number {
  let c = crc32cRaw(seedRaw, buf, 0, fieldOffset);
  c = crc32cRaw(c, ZEROS, 0, fieldLen);
  return crc32cRaw(c, buf, fieldOffset + fieldLen, end);
}
const ZEROS = new Uint8Array(8);
