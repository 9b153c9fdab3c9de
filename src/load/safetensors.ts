/**
 * The safetensors file format, as far as `homi load` and its datasets need it: write a header for a list of
 * tensors, and read and check one.
 *
 * A file is: 8 bytes, the header length N as a little-endian u64; N bytes of UTF-8 JSON, an object that maps each
 * tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the byte buffer after the
 * header) plus an optional `"__metadata__"` object of string values; then the byte buffer. The reference
 * implementation pads the JSON with spaces so that the buffer starts at a multiple of 8, lays the tensors end to
 * end with no holes (together they cover the buffer exactly), and orders them so that each tensor begins at a
 * multiple of its element size. The check here insists on all of that.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** Element size in bytes of every dtype the format names. */
export const SAFETENSORS_DTYPES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
} as const;
export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPES;

/** The reference parser refuses headers above 100 MB. */
export const SAFETENSORS_MAX_HEADER = 100_000_000;
/** The byte buffer starts at a multiple of this (the header is padded with spaces to reach it). */
export const SAFETENSORS_ALIGN = 8;

export interface TensorSpec {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
}

export interface TensorEntry extends TensorSpec {
  /** Byte range in the buffer (relative to dataStart). */
  readonly begin: number;
  readonly end: number;
}

export interface SafetensorsLayout {
  /** The header as written: 8-byte length, then the JSON padded with spaces. */
  readonly header: Buffer;
  /** Offset of the byte buffer in the file (header.length). */
  readonly dataStart: number;
  /** Bytes of the buffer (sum of the tensors' sizes). */
  readonly dataBytes: number;
  /** The tensors in buffer order. */
  readonly tensors: readonly TensorEntry[];
  readonly metadata: Readonly<Record<string, string>>;
}

export class SafetensorsError extends Error {
  constructor(
    readonly filePath: string,
    reason: string,
  ) {
    super(`${filePath}: not a valid safetensors file: ${reason}`);
    this.name = 'SafetensorsError';
  }
}

/** Bytes of a tensor of this dtype and shape. */
export function tensorBytes(dtype: SafetensorsDtype, shape: readonly number[]): number {
  let n = SAFETENSORS_DTYPES[dtype] as number;
  for (const d of shape) n *= d;
  return n;
}

/**
 * The header for `tensors` and `metadata`: tensors are laid out in the order the reference writer uses (larger
 * elements first, then by name), so each begins at a multiple of its element size.
 */
export function safetensorsLayout(tensors: readonly TensorSpec[], metadata: Readonly<Record<string, string>> = {}): SafetensorsLayout {
  const ordered = [...tensors].sort((a, b) => SAFETENSORS_DTYPES[b.dtype] - SAFETENSORS_DTYPES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const names = new Set<string>();
  const json: Record<string, unknown> = { __metadata__: { ...metadata } };
  const entries: TensorEntry[] = [];
  let off = 0;
  for (const t of ordered) {
    if (t.name === '__metadata__' || names.has(t.name)) throw new RangeError(`safetensorsLayout: duplicate or reserved tensor name ${JSON.stringify(t.name)}`);
    names.add(t.name);
    for (const d of t.shape) if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`safetensorsLayout: ${t.name}: bad dimension ${d}`);
    const n = tensorBytes(t.dtype, t.shape);
    entries.push({ ...t, shape: [...t.shape], begin: off, end: off + n });
    json[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + n] };
    off += n;
  }
  const text = Buffer.from(JSON.stringify(json), 'utf8');
  const padded = Math.ceil((8 + text.length) / SAFETENSORS_ALIGN) * SAFETENSORS_ALIGN - 8;
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  text.copy(header, 8);
  return { header, dataStart: header.length, dataBytes: off, tensors: entries, metadata: { ...metadata } };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Check a safetensors header. `head` holds at least the file's first 8 + N bytes; `fileSize` is the whole file's
 * size. Throws SafetensorsError naming what is wrong.
 */
export function parseSafetensorsHeader(head: Uint8Array, fileSize: number, filePath = '<buffer>'): Omit<SafetensorsLayout, 'header'> {
  const bad = (why: string): never => {
    throw new SafetensorsError(filePath, why);
  };
  if (fileSize < 8 || head.length < 8) bad(`${fileSize} bytes: shorter than the 8-byte header length`);
  const n64 = Buffer.from(head.buffer, head.byteOffset, head.byteLength).readBigUInt64LE(0);
  if (n64 > BigInt(SAFETENSORS_MAX_HEADER)) bad(`header length ${n64} above ${SAFETENSORS_MAX_HEADER}`);
  const n = Number(n64);
  if (n < 2) bad(`header length ${n}`);
  if (8 + n > fileSize) bad(`header length ${n} runs past the end of the file (${fileSize} bytes)`);
  if (head.length < 8 + n) bad(`only ${head.length} bytes given for a ${8 + n}-byte header`);
  const dataStart = 8 + n;
  if (dataStart % SAFETENSORS_ALIGN !== 0) bad(`the byte buffer starts at ${dataStart}, not a multiple of ${SAFETENSORS_ALIGN}`);
  const text = Buffer.from(head.buffer, head.byteOffset + 8, n).toString('utf8');
  if (!text.startsWith('{')) bad('the header does not start with "{"');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return bad(`header JSON: ${(e as Error).message}`);
  }
  if (!isRecord(json)) return bad('the header is not a JSON object');
  let metadata: Record<string, string> = {};
  const tensors: TensorEntry[] = [];
  for (const [name, v] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isRecord(v)) bad('"__metadata__" is not an object');
      for (const [k, s] of Object.entries(v as Record<string, unknown>)) if (typeof s !== 'string') bad(`"__metadata__".${k} is not a string`);
      metadata = v as Record<string, string>;
      continue;
    }
    if (!isRecord(v)) return bad(`tensor ${name}: not an object`);
    const { dtype, shape, data_offsets: offs } = v;
    if (typeof dtype !== 'string' || !(dtype in SAFETENSORS_DTYPES)) bad(`tensor ${name}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) bad(`tensor ${name}: bad shape ${JSON.stringify(shape)}`);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) bad(`tensor ${name}: bad data_offsets ${JSON.stringify(offs)}`);
    const [begin, end] = offs as [number, number];
    const dt = dtype as SafetensorsDtype;
    const want = tensorBytes(dt, shape as number[]);
    if (end - begin !== want) bad(`tensor ${name}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes, ${dt}${JSON.stringify(shape)} needs ${want}`);
    if (begin % SAFETENSORS_DTYPES[dt] !== 0) bad(`tensor ${name}: begins at ${begin}, not a multiple of its ${SAFETENSORS_DTYPES[dt]}-byte elements`);
    tensors.push({ name, dtype: dt, shape: shape as number[], begin, end });
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let off = 0;
  for (const t of tensors) {
    if (t.begin !== off) bad(`tensor ${t.name}: begins at ${t.begin}, expected ${off} (tensors must cover the buffer with no hole or overlap)`);
    off = t.end;
  }
  if (dataStart + off !== fileSize) bad(`the tensors cover ${off} bytes, the buffer after the header is ${fileSize - dataStart}`);
  return { dataStart, dataBytes: off, tensors, metadata };
}

/** Read and check the header of a safetensors file on disk (reads only the header). */
export function readSafetensorsHeader(path: string): Omit<SafetensorsLayout, 'header'> {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const len = Buffer.alloc(8);
    if (readSync(fd, len, 0, 8, 0) !== 8) throw new SafetensorsError(path, `${size} bytes: shorter than the 8-byte header length`);
    const n = len.readBigUInt64LE(0);
    if (n > BigInt(SAFETENSORS_MAX_HEADER) || 8n + n > BigInt(size)) return parseSafetensorsHeader(len, size, path);
    const head = Buffer.alloc(8 + Number(n));
    let got = 0;
    while (got < head.length) {
      const r = readSync(fd, head, got, head.length - got, got);
      if (r === 0) break;
      got += r;
    }
    return parseSafetensorsHeader(head.subarray(0, got), size, path);
  } finally {
    closeSync(fd);
  }
}
