/**
 * Datasets for `homi load` and its comparison with PyTorch (`homi load gen`), modelled on the file-loading (FIL)
 * benchmark of the paper: many small files, medium files, a few very large files, and model checkpoint shards.
 *
 * EVERY FILE OF EVERY DATASET IS A VALID SAFETENSORS FILE, so `safetensors.torch.load_file` runs on all of them:
 * - `small`, `medium`, `large` ('blob' layout): one uint8 tensor named "data" holding the file's payload; the
 *   file is the safetensors header (8-byte length + JSON padded to a multiple of 8, about 130 bytes) plus the
 *   payload, so a "110 KiB file" is 110 KiB of payload plus that header.
 * - `safetensors` ('shards' layout): checkpoint-shaped shards, each with several 2-D float16 / bfloat16 / float32
 *   tensors (and a 1-D float32 tensor taking the remainder), laid out as the reference writer does: every tensor
 *   begins at a multiple of 8 bytes, the tensors cover the buffer exactly. Their values are finite and below 2
 *   in magnitude (the top exponent bit of each element is cleared): no NaN or Inf.
 *
 * Bytes come from a fast non-cryptographic generator (xorshift32 plus a Weyl sequence), seeded per file from the
 * dataset seed and the file's index: the same seed always gives the same files, byte for byte. Files are written
 * in chunks (no whole-file buffer; multi-GiB files stream), hashed (sha256) as they are written, fsync'ed (so
 * that a later cold run can drop them from the page cache: dirty pages cannot be dropped), and listed in
 * `manifest.json` beside them.
 */
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { SAFETENSORS_DTYPES, safetensorsLayout, type SafetensorsDtype, type SafetensorsLayout, type TensorSpec } from './safetensors.js';

export const DATASET_NAMES = ['small', 'medium', 'large', 'safetensors'] as const;
export type DatasetName = (typeof DATASET_NAMES)[number];

export interface DatasetSpec {
  /** Preset name (or any name for a custom set); recorded in the manifest. */
  readonly name: string;
  /** 'blob': one uint8 tensor "data" per file; 'shards': several float tensors per file. */
  readonly layout: 'blob' | 'shards';
  /** Number of files. */
  readonly files: number;
  /** Payload bytes per file before jitter (tensor bytes; the file adds a small header). */
  readonly bytes: number;
  /** Each file's payload is drawn uniformly from bytes × [1 − jitter, 1 + jitter]; 0: all the same size. */
  readonly jitter: number;
  /** What `scale` multiplies in datasetSpec(): the number of files or the bytes per file. */
  readonly scales: 'files' | 'bytes';
  /** One line for reports. */
  readonly describe: string;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** The presets, at their default sizes (see datasetSpec() to scale them). */
export const DATASETS: Readonly<Record<DatasetName, DatasetSpec>> = {
  small: { name: 'small', layout: 'blob', files: 4096, bytes: 110 * KiB, jitter: 0.2, scales: 'files', describe: 'many small files (~110 KiB, ±20%), as an image training set' },
  medium: { name: 'medium', layout: 'blob', files: 128, bytes: 7.5 * MiB, jitter: 1 / 15, scales: 'files', describe: 'medium files (7-8 MiB)' },
  large: { name: 'large', layout: 'blob', files: 2, bytes: 2 * GiB, jitter: 0, scales: 'bytes', describe: 'a few multi-GiB files' },
  safetensors: { name: 'safetensors', layout: 'shards', files: 8, bytes: 512 * MiB, jitter: 0, scales: 'bytes', describe: 'checkpoint shards (float16/bfloat16/float32 tensors)' },
};

export interface DatasetSizeOptions {
  /** Multiplies the preset's scaling dimension (small/medium: the file count; large/safetensors: bytes per file). */
  scale?: number;
  /** Explicit file count (wins over scale for the count). */
  files?: number;
  /** Explicit payload bytes per file (wins over scale for the size). */
  bytes?: number;
  jitter?: number;
}

/** A preset, resized: e.g. datasetSpec('small', { scale: 1 / 64 }) or datasetSpec('large', { files: 1, bytes: 64 << 20 }). */
export function datasetSpec(name: DatasetName, o: DatasetSizeOptions = {}): DatasetSpec {
  const base = DATASETS[name];
  if (base === undefined) throw new RangeError(`unknown dataset '${String(name)}' (one of ${DATASET_NAMES.join(', ')})`);
  const scale = o.scale ?? 1;
  if (!(scale > 0) || !Number.isFinite(scale)) throw new RangeError(`dataset scale ${scale}: must be a positive number`);
  const files = o.files ?? (base.scales === 'files' ? Math.max(1, Math.round(base.files * scale)) : base.files);
  const bytes = o.bytes ?? (base.scales === 'bytes' ? Math.max(1, Math.round(base.bytes * scale)) : base.bytes);
  const spec: DatasetSpec = { ...base, files, bytes, jitter: o.jitter ?? base.jitter };
  checkSpec(spec);
  return spec;
}

function checkSpec(s: DatasetSpec): void {
  if (!Number.isSafeInteger(s.files) || s.files < 1) throw new RangeError(`dataset ${s.name}: file count ${s.files} must be a positive integer`);
  if (!Number.isSafeInteger(s.bytes) || s.bytes < 1) throw new RangeError(`dataset ${s.name}: bytes per file ${s.bytes} must be a positive integer`);
  if (!(s.jitter >= 0 && s.jitter < 1)) throw new RangeError(`dataset ${s.name}: jitter ${s.jitter} must be in [0, 1)`);
  if (s.layout === 'shards' && s.bytes < 64) throw new RangeError(`dataset ${s.name}: shards need at least 64 bytes each`);
}

export const ManifestSchema = z.object({
  version: z.literal(1),
  name: z.string(),
  describe: z.string(),
  layout: z.enum(['blob', 'shards']),
  seed: z.number().int(),
  files: z.array(z.object({ path: z.string().min(1), size: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) })),
  totalBytes: z.number().int().nonnegative(),
});
export type DatasetManifest = z.infer<typeof ManifestSchema>;

export const MANIFEST_FILE = 'manifest.json';

export interface GenerateOptions {
  /** Seed of every byte (default 1). */
  seed?: number;
  /** Called after each chunk written: bytes done so far and the dataset's total bytes. */
  onProgress?: (done: number, total: number) => void;
  /** fsync each file before closing it (default true: a cold run can then drop its pages). */
  sync?: boolean;
  /** Bytes generated and written per write (default 8 MiB; rounded up to a multiple of 8). */
  chunkBytes?: number;
}

/** One file of a dataset, planned before anything is written. */
export interface PlannedFile {
  readonly path: string;
  readonly layout: SafetensorsLayout;
  /** Seed of this file's byte stream. */
  readonly seed: number;
}

/** A 32-bit mix of two integers (murmur3's finaliser over a combination); seeds per file. */
export function mixSeed(a: number, b: number): number {
  let h = (Math.imul(a | 0, 0x9e3779b1) ^ Math.imul((b | 0) + 0x7f4a7c15, 0x85ebca6b)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The generator's state: xorshift32 (never zero) and a Weyl counter added to its output. */
interface Stream {
  x: number;
  w: number;
}

function stream(seed: number): Stream {
  const x = mixSeed(seed, 0x51ed270b);
  return { x: x === 0 ? 0x2545f491 : x, w: mixSeed(seed, 0x3c6ef372) };
}

/** Fill words[from, to) with the next words of `s`, ANDed with `mask`. */
function fillWords(s: Stream, words: Uint32Array, from: number, to: number, mask: number): void {
  let x = s.x;
  let w = s.w;
  for (let i = from; i < to; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w = (w + 0x9e3779b9) | 0;
    words[i] = (x + w) & mask; // a typed-array store wraps to uint32
  }
  s.x = x;
  s.w = w;
}

/** A uniform number in [0, 1) from a seed and an index. */
function unit(seed: number, i: number): number {
  return mixSeed(seed ^ 0x6a09e667, i) / 2 ** 32;
}

/** Per-word mask that clears the top exponent bit of every element of a float dtype (values finite, |x| < 2). */
function wordMask(dtype: SafetensorsDtype): number {
  switch (dtype) {
    case 'F16':
    case 'BF16':
      return 0xbfffbfff;
    case 'F32':
      return 0xbfffffff;
    default:
      return 0xffffffff;
  }
}

const SHARD_DTYPES: readonly SafetensorsDtype[] = ['BF16', 'F16', 'F32'];
const SHARD_PARTS = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'];

/** The tensors of shard `index` holding exactly `bytes` bytes (a multiple of 8). */
export function shardTensors(index: number, bytes: number): TensorSpec[] {
  // Several tensors per shard: one per 64 MiB, at least 3 and at most 12.
  const k = Math.min(12, Math.max(3, Math.round(bytes / (64 * MiB))));
  const out: TensorSpec[] = [];
  let left = bytes;
  for (let i = 0; i < k && left >= 8; i++) {
    const dtype = SHARD_DTYPES[i % SHARD_DTYPES.length]!;
    const el = SAFETENSORS_DTYPES[dtype];
    const share = Math.floor(left / (k - i));
    // Columns: a power of two from 4 to 4096 elements (rows of 8-byte multiples), as wide as the share allows.
    let cols = 4096;
    while (cols > 4 && cols * el > share) cols >>= 1;
    const rows = Math.floor(share / (cols * el));
    if (rows === 0) continue;
    const layer = index * k + i;
    out.push({ name: `model.layers.${Math.floor(layer / SHARD_PARTS.length)}.${SHARD_PARTS[layer % SHARD_PARTS.length]}.weight`, dtype, shape: [rows, cols] });
    left -= rows * cols * el;
  }
  // The remainder (a multiple of 8 bytes) as one 1-D float32 tensor.
  if (left > 0) out.push({ name: `model.layers.${index}.norm.weight`, dtype: 'F32', shape: [left / 4] });
  return out;
}

function payloadBytes(spec: DatasetSpec, seed: number, i: number): number {
  const j = spec.jitter === 0 ? 1 : 1 + spec.jitter * (2 * unit(seed, i) - 1);
  const n = Math.max(1, Math.round(spec.bytes * j));
  return spec.layout === 'shards' ? Math.max(64, Math.round(n / 8) * 8) : n;
}

/** File names and headers of a dataset (nothing written). */
export function planDataset(spec: DatasetSpec, seed = 1): PlannedFile[] {
  checkSpec(spec);
  const out: PlannedFile[] = [];
  const width = Math.max(5, String(spec.files).length);
  for (let i = 0; i < spec.files; i++) {
    const payload = payloadBytes(spec, seed, i);
    const meta = { 'homi.dataset': spec.name, 'homi.seed': String(seed), 'homi.file': String(i) };
    if (spec.layout === 'shards') {
      const name = `model-${String(i + 1).padStart(width, '0')}-of-${String(spec.files).padStart(width, '0')}.safetensors`;
      out.push({ path: name, layout: safetensorsLayout(shardTensors(i, payload), { format: 'pt', ...meta }), seed: mixSeed(seed, i) });
    } else {
      const name = `${spec.name}-${String(i).padStart(width, '0')}.safetensors`;
      out.push({ path: name, layout: safetensorsLayout([{ name: 'data', dtype: 'U8', shape: [payload] }], meta), seed: mixSeed(seed, i) });
    }
  }
  return out;
}

/** Write one planned file into `dir`; returns its sha256. Streams in chunks of `chunk` bytes. */
function writeFile(dir: string, f: PlannedFile, chunk: Uint32Array, sync: boolean, progress: (n: number) => void): string {
  const hash = createHash('sha256');
  const fd = openSync(join(dir, f.path), 'w', 0o644);
  try {
    const header = f.layout.header;
    writeAll(fd, header);
    hash.update(header);
    progress(header.length);
    const s = stream(f.seed);
    const bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const chunkBytes = chunk.byteLength;
    const total = f.layout.dataBytes;
    for (let at = 0; at < total; at += chunkBytes) {
      const n = Math.min(chunkBytes, total - at);
      // Tensors begin at multiples of 8 (shards) or at 0 (blob): each word belongs to one tensor.
      for (const t of f.layout.tensors) {
        const a = Math.max(t.begin, at);
        const b = Math.min(t.end, at + n);
        if (a >= b) continue;
        fillWords(s, chunk, (a - at) >>> 2, Math.ceil((b - at) / 4), wordMask(t.dtype));
      }
      const view = bytes.subarray(0, n);
      writeAll(fd, view);
      hash.update(view);
      progress(n);
    }
    if (sync) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}

/**
 * Write the dataset `spec` into `dir` (created if missing; files of the same names are replaced, nothing else
 * is touched) and its manifest.json; returns the manifest. Deterministic in `seed`.
 */
export function generateDataset(dir: string, spec: DatasetSpec, opts: GenerateOptions = {}): DatasetManifest {
  if (endianness() !== 'LE') throw new Error('generateDataset: a little-endian host is needed (safetensors is little-endian)');
  const seed = opts.seed ?? 1;
  if (!Number.isSafeInteger(seed)) throw new RangeError(`dataset seed ${seed}: must be an integer`);
  const plan = planDataset(spec, seed);
  mkdirSync(dir, { recursive: true });
  const total = plan.reduce((a, f) => a + f.layout.dataStart + f.layout.dataBytes, 0);
  const chunkBytes = Math.max(8, Math.ceil((opts.chunkBytes ?? 8 * MiB) / 8) * 8);
  const chunk = new Uint32Array(chunkBytes / 4);
  let done = 0;
  const progress = (n: number): void => {
    done += n;
    opts.onProgress?.(done, total);
  };
  const files = plan.map((f) => ({ path: f.path, size: f.layout.dataStart + f.layout.dataBytes, sha256: writeFile(dir, f, chunk, opts.sync ?? true, progress) }));
  const manifest: DatasetManifest = { version: 1, name: spec.name, describe: spec.describe, layout: spec.layout, seed, files, totalBytes: total };
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 1) + '\n');
  return manifest;
}

/** Read and check `dir`/manifest.json (or a manifest file's path). */
export function readManifest(dirOrFile: string): DatasetManifest {
  const path = dirOrFile.endsWith('.json') ? dirOrFile : join(dirOrFile, MANIFEST_FILE);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
  const r = ManifestSchema.safeParse(json);
  if (!r.success) throw new Error(`${path}: not a dataset manifest: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return r.data;
}

/** sha256 of a file, read in chunks. */
export function sha256File(path: string, chunkBytes = 8 * MiB): string {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(chunkBytes);
  const fd = openSync(path, 'r');
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/** Files of `dir` whose size or sha256 differ from its manifest (empty: the dataset is intact). */
export function checkDataset(dir: string): string[] {
  const m = readManifest(dir);
  const bad: string[] = [];
  for (const f of m.files) {
    try {
      const sha = sha256File(join(dir, f.path));
      if (sha !== f.sha256) bad.push(`${f.path}: sha256 ${sha}, manifest ${f.sha256}`);
    } catch (e) {
      bad.push(`${f.path}: ${(e as Error).message}`);
    }
  }
  return bad;
}
