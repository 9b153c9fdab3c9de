/**
 * `homi load gen`'s datasets (src/load/dataset.ts): deterministic in the seed, of the sizes asked, every file a
 * valid safetensors file (src/load/safetensors.ts checks the header, the offsets and the alignment), and the
 * manifest true to the files.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DATASETS, DATASET_NAMES, checkDataset, datasetSpec, generateDataset, readManifest, sha256File, type DatasetSpec } from '../../src/load/dataset.js';
import { SAFETENSORS_DTYPES, SafetensorsError, parseSafetensorsHeader, readSafetensorsHeader, safetensorsLayout } from '../../src/load/safetensors.js';

const root = mkdtempSync(join(tmpdir(), 'homi-dataset-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

const KiB = 1024;
const MiB = 1024 * KiB;

/** Tiny versions of every preset (odd sizes on purpose: tails that are not multiples of 4 or 8). */
const TINY: Record<string, DatasetSpec> = {
  small: datasetSpec('small', { files: 6, bytes: 11 * KiB + 3 }),
  medium: datasetSpec('medium', { files: 3, bytes: 75 * KiB }),
  large: datasetSpec('large', { files: 2, bytes: MiB + 5 }),
  safetensors: datasetSpec('safetensors', { files: 2, bytes: 300 * KiB }),
};

function gen(name: string, spec: DatasetSpec, seed: number, extra: { chunkBytes?: number } = {}): { dir: string; m: ReturnType<typeof generateDataset> } {
  const dir = join(root, `${name}-${seed}-${extra.chunkBytes ?? 'd'}`);
  return { dir, m: generateDataset(dir, spec, { seed, sync: false, ...extra }) };
}

test('the presets are the FIL benchmark sizes, and scale', () => {
  assert.deepEqual(
    DATASET_NAMES.map((n) => [n, DATASETS[n].files, DATASETS[n].bytes]),
    [
      ['small', 4096, 110 * KiB],
      ['medium', 128, 7.5 * MiB],
      ['large', 2, 2 * 1024 * MiB],
      ['safetensors', 8, 512 * MiB],
    ],
  );
  // medium: 7-8 MiB files
  assert.equal(DATASETS.medium.bytes * (1 - DATASETS.medium.jitter), 7 * MiB);
  assert.equal(DATASETS.medium.bytes * (1 + DATASETS.medium.jitter), 8 * MiB);
  assert.equal(datasetSpec('small', { scale: 1 / 64 }).files, 64);
  assert.equal(datasetSpec('small', { scale: 1 / 64 }).bytes, 110 * KiB);
  assert.equal(datasetSpec('large', { scale: 1 / 1024 }).bytes, 2 * MiB);
  assert.equal(datasetSpec('large', { scale: 1 / 1024 }).files, 2);
  assert.equal(datasetSpec('safetensors', { scale: 0.5, files: 3 }).bytes, 256 * MiB);
  assert.equal(datasetSpec('safetensors', { scale: 0.5, files: 3 }).files, 3);
  assert.throws(() => datasetSpec('small', { scale: 0 }), /scale/);
  assert.throws(() => datasetSpec('small', { files: 0 }), /file count/);
  assert.throws(() => datasetSpec('large', { jitter: 1 }), /jitter/);
  assert.throws(() => datasetSpec('nope' as 'small'), /unknown dataset/);
});

test('same seed, same bytes (whatever the chunk size); another seed, other bytes', () => {
  for (const [name, spec] of Object.entries(TINY)) {
    const a = gen(name, spec, 7);
    const b = gen(name, spec, 7, { chunkBytes: 4 * KiB + 8 });
    const c = gen(name, spec, 8);
    assert.deepEqual(b.m.files, a.m.files, `${name}: seed 7 twice`);
    for (const f of a.m.files) assert.deepEqual(readFileSync(join(b.dir, f.path)), readFileSync(join(a.dir, f.path)), `${name}/${f.path}`);
    assert.equal(c.m.files.length, a.m.files.length);
    for (let i = 0; i < a.m.files.length; i++) assert.notEqual(c.m.files[i]!.sha256, a.m.files[i]!.sha256, `${name}: file ${i} differs with seed 8`);
    // Within one dataset no two files are alike.
    assert.equal(new Set(a.m.files.map((f) => f.sha256)).size, a.m.files.length, `${name}: files differ from one another`);
  }
});

test('sizes as specified, every file valid safetensors, values of float tensors finite', () => {
  for (const [name, spec] of Object.entries(TINY)) {
    const { dir, m } = gen(name, spec, 3);
    assert.equal(m.files.length, spec.files, name);
    for (const f of m.files) {
      const path = join(dir, f.path);
      assert.match(f.path, /\.safetensors$/);
      const h = readSafetensorsHeader(path);
      assert.equal(h.dataStart % 8, 0, `${name}: the buffer starts 8-aligned`);
      assert.equal(h.dataStart + h.dataBytes, statSync(path).size, `${name}: header + tensors = file`);
      assert.ok(h.dataStart < 1024, `${name}: a small header (${h.dataStart} bytes)`);
      assert.equal(h.metadata['homi.dataset'], spec.name);
      if (spec.layout === 'blob') {
        assert.equal(h.tensors.length, 1);
        const t = h.tensors[0]!;
        assert.deepEqual([t.name, t.dtype, t.shape], ['data', 'U8', [h.dataBytes]]);
        const lo = Math.round(spec.bytes * (1 - spec.jitter));
        const hi = Math.round(spec.bytes * (1 + spec.jitter));
        assert.ok(h.dataBytes >= lo && h.dataBytes <= hi, `${name}: payload ${h.dataBytes} in [${lo}, ${hi}]`);
        if (spec.jitter === 0) assert.equal(h.dataBytes, spec.bytes);
      } else {
        assert.equal(h.dataBytes, spec.bytes, `${name}: a shard holds exactly its bytes`);
        assert.ok(h.tensors.length >= 3, `${name}: several tensors`);
        assert.deepEqual(new Set(h.tensors.map((t) => t.dtype)), new Set(['F16', 'BF16', 'F32']));
        const bytes = readFileSync(path);
        for (const t of h.tensors) {
          assert.equal(t.shape.length === 2 || t.name.endsWith('norm.weight'), true, t.name);
          const el = SAFETENSORS_DTYPES[t.dtype];
          assert.equal(t.begin % 8, 0, `${t.name} 8-aligned`);
          // The high byte of each little-endian element has the top exponent bit clear: finite, |x| < 2.
          for (let o = h.dataStart + t.begin + el - 1; o < h.dataStart + t.end; o += el) if ((bytes[o]! & 0x40) !== 0) assert.fail(`${t.name}: element at ${o} may be Inf/NaN`);
        }
      }
    }
  }
  // jitter really varies the small files
  const { m } = gen('small-jitter', TINY.small!, 4);
  assert.ok(new Set(m.files.map((f) => f.size)).size > 1);
});

test('the manifest matches the files; progress streams to the total', () => {
  const spec = TINY.large!;
  const dir = join(root, 'manifest');
  const seen: Array<[number, number]> = [];
  const m = generateDataset(dir, spec, { seed: 11, sync: true, chunkBytes: 64 * KiB, onProgress: (d, t) => seen.push([d, t]) });
  const back = readManifest(dir);
  assert.deepEqual(back, m);
  assert.equal(m.name, 'large');
  assert.equal(m.seed, 11);
  assert.deepEqual(readdirSync(dir).sort(), [...m.files.map((f) => f.path), 'manifest.json'].sort());
  let total = 0;
  for (const f of m.files) {
    assert.equal(statSync(join(dir, f.path)).size, f.size);
    assert.equal(sha256File(join(dir, f.path)), f.sha256);
    total += f.size;
  }
  assert.equal(m.totalBytes, total);
  assert.deepEqual(checkDataset(dir), []);
  // one call per header and per chunk, monotone, ending at the total
  assert.ok(seen.length >= Math.ceil(spec.bytes / (64 * KiB)) * spec.files, `${seen.length} progress calls`);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]![0] > seen[i - 1]![0]);
  assert.deepEqual(seen[seen.length - 1], [total, total]);
  // a changed byte is caught
  const p = join(dir, m.files[0]!.path);
  const b = readFileSync(p);
  b[b.length - 1] ^= 1;
  writeFileSync(p, b);
  assert.equal(checkDataset(dir).length, 1);
  assert.throws(() => readManifest(join(root, 'nowhere')), /manifest\.json/);
});

test('the safetensors check refuses what the format forbids', () => {
  const good = safetensorsLayout([
    { name: 'a', dtype: 'F32', shape: [2, 2] },
    { name: 'b', dtype: 'U8', shape: [3] },
  ]);
  const file = (header: Buffer, data: number): Buffer => Buffer.concat([header, Buffer.alloc(data)]);
  const f = file(good.header, good.dataBytes);
  assert.equal(parseSafetensorsHeader(f, f.length).tensors.length, 2);
  const withJson = (json: object, data: number, pad = true): Buffer => {
    let text = JSON.stringify(json);
    if (pad) text = text.padEnd(Math.ceil((8 + text.length) / 8) * 8 - 8, ' ');
    const h = Buffer.alloc(8 + Buffer.byteLength(text));
    h.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
    h.write(text, 8);
    return file(h, data);
  };
  const cases: Array<[string, Buffer, RegExp]> = [
    ['short file', Buffer.alloc(4), /shorter than/],
    ['length past the end', Buffer.from([0xff, 0, 0, 0, 0, 0, 0, 0, 0x7b]), /runs past the end/],
    ['not JSON', withJson({}, 0).fill(0x41, 8, 9), /does not start with|JSON/],
    ['unaligned buffer', withJson({ a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, 1, false), /not a multiple of 8/],
    ['unknown dtype', withJson({ a: { dtype: 'F12', shape: [1], data_offsets: [0, 1] } }, 1), /unknown dtype/],
    ['size mismatch', withJson({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4), /needs 8/],
    ['hole', withJson({ a: { dtype: 'U8', shape: [1], data_offsets: [1, 2] } }, 2), /expected 0/],
    ['overlap', withJson({ a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] }, b: { dtype: 'U8', shape: [2], data_offsets: [1, 3] } }, 3), /expected 2/],
    ['trailing bytes', withJson({ a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] } }, 3), /cover 2 bytes/],
    ['misaligned element', withJson({ a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] }, b: { dtype: 'F32', shape: [1], data_offsets: [1, 5] } }, 5), /multiple of its 4-byte/],
    ['bad metadata', withJson({ __metadata__: { a: 1 } }, 0), /not a string/],
  ];
  for (const [what, buf, re] of cases) {
    assert.throws(
      () => parseSafetensorsHeader(buf, buf.length, what),
      (e: unknown) => e instanceof SafetensorsError && re.test(e.message),
      what,
    );
  }
});

test('a header written by Python parses as ours (when python3 is here)', async (t) => {
  // The reference writer pads with spaces and sorts by dtype size then name; a hand-written file in the
  // reference layout must pass our check unchanged.
  const { spawnSync } = await import('node:child_process');
  const py = spawnSync(
    'python3',
    [
      '-c',
      'import json,struct,sys; h=json.dumps({"__metadata__":{"k":"v"},"w":{"dtype":"BF16","shape":[3,4],"data_offsets":[0,24]},"x":{"dtype":"I64","shape":[2],"data_offsets":[24,40]}}).encode(); h+=b" "*((8-(len(h)+8)%8)%8); sys.stdout.buffer.write(struct.pack("<Q",len(h))+h+bytes(40))',
    ],
    { encoding: 'buffer' },
  );
  if (py.error !== undefined || py.status !== 0) {
    t.skip('python3 not available');
    return;
  }
  // x (I64) after w (BF16) is legal for the format: offsets are what count, 24 is a multiple of 8.
  const r = parseSafetensorsHeader(py.stdout, py.stdout.length);
  assert.deepEqual(
    r.tensors.map((x) => [x.name, x.begin, x.end]),
    [
      ['w', 0, 24],
      ['x', 24, 40],
    ],
  );
  assert.deepEqual(r.metadata, { k: 'v' });
});
