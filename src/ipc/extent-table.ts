/**
 * The published form of one file's extent map: a shared-memory table read by clients without locks, by a
 * generation counter (a seqlock): homid makes the generation odd, rewrites the table, then makes it even.
 * A reader takes the generation (retrying while odd), copies the table, and re-reads the generation: equal
 * means the copy is consistent. A client sees the generation move when the map was rebuilt and re-reads.
 *
 * Layout (little endian; the names below are the constants of this file):
 *   Int32 [I_GEN 0] generation   [I_COUNT 1] extent count   [I_MAGIC 2] magic 'HEXT'   [I_VERSION 3] version
 *         [I_CAPACITY 4] capacity (extents)   [I_STATE 5] state (EXTENT_TABLE_STATE_VALID, or _ERROR: the file
 *         could not be mapped)
 *   Float64 [F_SIZE 3] file size   [F_INO 4] inode   [F_DEV 5] device number
 *   from byte EXTENT_TABLE_HEADER (64): per extent one EXTENT_RECORD (32 bytes) of 4 float64: logical, physical,
 *         length (bytes), flags (bit set, EXTENT_FLAG_BITS)
 *
 * The table is read-only memory to clients (a sealed memfd); a reader checks magic and version once per read
 * and clamps the count to the capacity.
 */
/** Flag names in bit order: bit i of an extent's flags word is EXTENT_FLAG_BITS[i]. */
export const EXTENT_FLAG_BITS = ['unwritten', 'last', 'shared', 'inline', 'delalloc', 'encoded', 'unknown'] as const;
/** One extent flag (the same names as the extents layer's ExtentFlag; extent-service.ts publishes those). */
export type ExtentTableFlag = (typeof EXTENT_FLAG_BITS)[number];

/** One extent as the table carries it (bytes; see extents/types.ts for the meaning of each field). */
export interface TableExtent {
  logical: number;
  physical: number;
  length: number;
  flags: ExtentTableFlag[];
}

/** What the writer publishes: a file map (extents/types.ts FileMap fits). */
export interface PublishedMap {
  size: number;
  ino: number;
  extents: ReadonlyArray<{ logical: number; physical: number; length: number; flags: readonly ExtentTableFlag[] }>;
}

export const EXTENT_TABLE_MAGIC = 0x54584548; // 'HEXT'
export const EXTENT_TABLE_VERSION = 1;
/** Bytes of the header; the records follow. */
export const EXTENT_TABLE_HEADER = 64;
/** Bytes of one record: four float64 fields. */
export const EXTENT_RECORD = 32;
/** Int32 indices into the header. */
const I_GEN = 0;
const I_COUNT = 1;
const I_MAGIC = 2;
const I_VERSION = 3;
const I_CAPACITY = 4;
const I_STATE = 5;
/** Float64 indices into the header. */
const F_SIZE = 3;
const F_INO = 4;
const F_DEV = 5;
/** I_STATE values. */
export const EXTENT_TABLE_STATE_VALID = 0;
export const EXTENT_TABLE_STATE_ERROR = 1;
/** Float64 fields of a record, and the header's size in float64s (where record 0 starts). */
const R_LOGICAL = 0;
const R_PHYSICAL = 1;
const R_LENGTH = 2;
const R_FLAGS = 3;
const F64_BYTES = 8;
const RECORD_F64 = EXTENT_RECORD / F64_BYTES;
const HEADER_F64 = EXTENT_TABLE_HEADER / F64_BYTES;
/** Attempts of tryReadExtentTable before it reports the table busy. */
const TRY_READS = 64;

/** The table stayed odd (homid was rebuilding it) through every attempt of a read. */
export class ExtentTableBusyError extends Error {
  constructor(readonly tries: number) {
    super('extent table stayed busy (homid is rebuilding it)');
    this.name = 'ExtentTableBusyError';
  }
}

export function extentTableBytes(capacity: number): number {
  return EXTENT_TABLE_HEADER + capacity * EXTENT_RECORD;
}

function views(bytes: Uint8Array): { i32: Int32Array; f64: Float64Array } {
  if (bytes.byteOffset % F64_BYTES !== 0) throw new RangeError(`extent table must be ${F64_BYTES}-byte aligned`);
  return {
    i32: new Int32Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / Int32Array.BYTES_PER_ELEMENT)),
    f64: new Float64Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / F64_BYTES)),
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
  publish(map: PublishedMap, dev: number): number {
    this.begin();
    if (map.extents.length > this.capacity) throw new RangeError(`${map.extents.length} extents exceed the table capacity ${this.capacity}`);
    const f = this.f64;
    f[F_SIZE] = map.size;
    f[F_INO] = map.ino;
    f[F_DEV] = dev;
    let o = HEADER_F64;
    for (const e of map.extents) {
      let flags = 0;
      for (const fl of e.flags) flags |= 1 << EXTENT_FLAG_BITS.indexOf(fl);
      f[o + R_LOGICAL] = e.logical;
      f[o + R_PHYSICAL] = e.physical;
      f[o + R_LENGTH] = e.length;
      f[o + R_FLAGS] = flags;
      o += RECORD_F64;
    }
    Atomics.store(this.i32, I_COUNT, map.extents.length);
    Atomics.store(this.i32, I_STATE, EXTENT_TABLE_STATE_VALID);
    const g = Atomics.load(this.i32, I_GEN) + 1;
    Atomics.store(this.i32, I_GEN, g);
    return g;
  }
  /** Publish "this file cannot be mapped now" (empty map, state 1). */
  publishError(): number {
    this.begin();
    Atomics.store(this.i32, I_COUNT, 0);
    Atomics.store(this.i32, I_STATE, EXTENT_TABLE_STATE_ERROR);
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
  extents: TableExtent[];
}

/** Current generation (odd while homid rebuilds the map). */
export function extentTableGeneration(bytes: Uint8Array): number {
  return Atomics.load(views(bytes).i32, I_GEN);
}

/** A consistent snapshot, or null while homid is rebuilding the map. */
export function tryReadExtentTable(bytes: Uint8Array): ExtentSnapshot | null {
  try {
    return readExtentTable(bytes, TRY_READS);
  } catch (e) {
    if (e instanceof ExtentTableBusyError) return null;
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
    const valid = Atomics.load(i32, I_STATE) === EXTENT_TABLE_STATE_VALID;
    const size = f64[F_SIZE]!;
    const ino = f64[F_INO]!;
    const dev = f64[F_DEV]!;
    const extents: TableExtent[] = [];
    let o = HEADER_F64;
    for (let i = 0; i < count; i++, o += RECORD_F64) {
      const bits = f64[o + R_FLAGS]!;
      const flags: ExtentTableFlag[] = [];
      for (let b = 0; b < EXTENT_FLAG_BITS.length; b++) if (bits & (1 << b)) flags.push(EXTENT_FLAG_BITS[b]!);
      extents.push({ logical: f64[o + R_LOGICAL]!, physical: f64[o + R_PHYSICAL]!, length: f64[o + R_LENGTH]!, flags });
    }
    if (Atomics.load(i32, I_GEN) === g1) return { generation: g1, valid, size, ino, dev, extents };
  }
  throw new ExtentTableBusyError(maxTries);
}
