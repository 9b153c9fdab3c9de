/**
 * The published form of one file's extent map: a shared-memory table read by clients without locks, by a
 * generation counter (a seqlock): homid makes the generation odd, rewrites the table, then makes it even.
 * A reader takes the generation (retrying while odd), copies the table, and re-reads the generation: equal
 * means the copy is consistent. A client sees the generation move when the map was rebuilt and re-reads.
 *
 * Layout (little endian):
 *   Int32 [0] generation   [1] extent count   [2] magic 'HEXT'   [3] version   [4] capacity (extents)
 *         [5] state (0 valid, 1 error: the file could not be mapped)
 *   Float64 [3] file size   [4] inode   [5] device number
 *   from byte 64: per extent 4 float64: logical, physical, length (bytes), flags (bit set, EXTENT_FLAG_BITS)
 */
import type { Extent, ExtentFlag, FileMap } from '../extents/types.js';

export const EXTENT_TABLE_MAGIC = 0x54584548; // 'HEXT'
export const EXTENT_TABLE_VERSION = 1;
export const EXTENT_TABLE_HEADER = 64;
export const EXTENT_RECORD = 32;
const I_GEN = 0;
const I_COUNT = 1;
const I_MAGIC = 2;
const I_VERSION = 3;
const I_CAPACITY = 4;
const I_STATE = 5;
const F_SIZE = 3;
const F_INO = 4;
const F_DEV = 5;

const FLAG_BITS: readonly ExtentFlag[] = ['unwritten', 'last', 'shared', 'inline', 'delalloc', 'encoded', 'unknown'];

export function extentTableBytes(capacity: number): number {
  return EXTENT_TABLE_HEADER + capacity * EXTENT_RECORD;
}

function views(bytes: Uint8Array): { i32: Int32Array; f64: Float64Array } {
  if (bytes.byteOffset % 8 !== 0) throw new RangeError('extent table must be 8-byte aligned');
  return {
    i32: new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2),
    f64: new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 3),
  };
}

/** Writer side (homid). */
export class ExtentTableWriter {
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;
  readonly capacity: number;
  constructor(bytes: Uint8Array) {
    const v = views(bytes);
    this.i32 = v.i32;
    this.f64 = v.f64;
    this.capacity = Math.floor((bytes.byteLength - EXTENT_TABLE_HEADER) / EXTENT_RECORD);
    this.i32[I_MAGIC] = EXTENT_TABLE_MAGIC;
    this.i32[I_VERSION] = EXTENT_TABLE_VERSION;
    this.i32[I_CAPACITY] = this.capacity;
  }
  get generation(): number {
    return Atomics.load(this.i32, I_GEN);
  }
  /** Mark the table as being rebuilt (odd generation). */
  begin(): void {
    const g = Atomics.load(this.i32, I_GEN);
    if ((g & 1) === 0) Atomics.store(this.i32, I_GEN, g + 1);
  }
  /** Write the map and publish it (even generation). Throws if it does not fit (the caller grows the table). */
  publish(map: FileMap, dev: number): number {
    this.begin();
    if (map.extents.length > this.capacity) throw new RangeError(`${map.extents.length} extents exceed the table capacity ${this.capacity}`);
    const f = this.f64;
    f[F_SIZE] = map.size;
    f[F_INO] = map.ino;
    f[F_DEV] = dev;
    let o = EXTENT_TABLE_HEADER / 8;
    for (const e of map.extents) {
      let flags = 0;
      for (const fl of e.flags) flags |= 1 << FLAG_BITS.indexOf(fl);
      f[o] = e.logical;
      f[o + 1] = e.physical;
      f[o + 2] = e.length;
      f[o + 3] = flags;
      o += 4;
    }
    Atomics.store(this.i32, I_COUNT, map.extents.length);
    Atomics.store(this.i32, I_STATE, 0);
    const g = Atomics.load(this.i32, I_GEN) + 1;
    Atomics.store(this.i32, I_GEN, g);
    return g;
  }
  /** Publish "this file cannot be mapped now" (empty map, state 1). */
  publishError(): number {
    this.begin();
    Atomics.store(this.i32, I_COUNT, 0);
    Atomics.store(this.i32, I_STATE, 1);
    const g = Atomics.load(this.i32, I_GEN) + 1;
    Atomics.store(this.i32, I_GEN, g);
    return g;
  }
}

export interface ExtentSnapshot {
  generation: number;
  valid: boolean;
  size: number;
  ino: number;
  dev: number;
  extents: Extent[];
}

/** Current generation (odd while homid rebuilds the map). */
export function extentTableGeneration(bytes: Uint8Array): number {
  return Atomics.load(views(bytes).i32, I_GEN);
}

/** A consistent snapshot, or null while homid is rebuilding the map. */
export function tryReadExtentTable(bytes: Uint8Array): ExtentSnapshot | null {
  try {
    return readExtentTable(bytes, 64);
  } catch (e) {
    if ((e as Error).message.startsWith('extent table stayed busy')) return null;
    throw e;
  }
}

/** Wait (polling every `intervalMs`) until the table is stable, optionally at a generation other than `notGeneration`. */
export async function waitExtentTable(bytes: Uint8Array, opts: { timeoutMs?: number; notGeneration?: number; intervalMs?: number } = {}): Promise<ExtentSnapshot> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    const s = tryReadExtentTable(bytes);
    if (s && s.generation !== opts.notGeneration) return s;
    if (Date.now() > deadline) throw new Error(`extent table did not settle${opts.notGeneration !== undefined ? ` past generation ${opts.notGeneration}` : ''}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 5));
  }
}

/** Read a consistent snapshot (spins while the table is being rebuilt; throws after `maxTries`). */
export function readExtentTable(bytes: Uint8Array, maxTries = 1_000_000): ExtentSnapshot {
  const { i32, f64 } = views(bytes);
  if (i32[I_MAGIC] !== EXTENT_TABLE_MAGIC || i32[I_VERSION] !== EXTENT_TABLE_VERSION) throw new Error('not a homid extent table (bad magic or version)');
  for (let tries = 0; tries < maxTries; tries++) {
    const g1 = Atomics.load(i32, I_GEN);
    if ((g1 & 1) === 1 || g1 === 0) continue;
    const count = Math.min(Atomics.load(i32, I_COUNT), i32[I_CAPACITY]!);
    const valid = Atomics.load(i32, I_STATE) === 0;
    const size = f64[F_SIZE]!;
    const ino = f64[F_INO]!;
    const dev = f64[F_DEV]!;
    const extents: Extent[] = [];
    let o = EXTENT_TABLE_HEADER / 8;
    for (let i = 0; i < count; i++, o += 4) {
      const bits = f64[o + 3]!;
      const flags: ExtentFlag[] = [];
      for (let b = 0; b < FLAG_BITS.length; b++) if (bits & (1 << b)) flags.push(FLAG_BITS[b]!);
      extents.push({ logical: f64[o]!, physical: f64[o + 1]!, length: f64[o + 2]!, flags });
    }
    if (Atomics.load(i32, I_GEN) === g1) return { generation: g1, valid, size, ino, dev, extents };
  }
  throw new Error('extent table stayed busy (homid is rebuilding it)');
}
