/** The struct layouts of src/gpu/layout.ts against the CUDA headers' own (HOMI_LAYOUT markers, offset comments). */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { KERNEL_DIR } from '../../src/gpu/kernels.js';
import { HomiGpuJob, LAYOUTS, encode, field, type Field } from '../../src/gpu/layout.js';

interface CStruct {
  bytes: number;
  fields: Map<string, { offset: number; type: string; count: number }>;
}

/** Parse every struct marked `// HOMI_LAYOUT <name> <bytes>` in a CUDA source. */
function parseStructs(text: string): Map<string, CStruct> {
  const out = new Map<string, CStruct>();
  const re = /\/\/ HOMI_LAYOUT (\w+) (\d+)\s*\nstruct (\w+) \{([\s\S]*?)\n\};/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    assert.equal(m[1], m[3], `marker ${m[1]} sits on struct ${m[3]}`);
    const fields = new Map<string, { offset: number; type: string; count: number }>();
    for (const line of m[4]!.split('\n')) {
      const f = /^\s*(uint32_t|uint64_t|unsigned long long)\s+(\w+)(?:\[(\w+)\])?;\s*\/\/\s*(\d+)/.exec(line);
      if (f !== null) fields.set(f[2]!, { type: f[1]!, offset: Number(f[4]), count: f[3] === undefined ? 1 : Number.isNaN(Number(f[3])) ? -1 : Number(f[3]) });
    }
    out.set(m[1]!, { bytes: Number(m[2]), fields });
  }
  return out;
}

const structs = new Map<string, CStruct>();
for (const f of ['nvme_queue.cuh', 'gpu_controller.cu']) for (const [k, v] of parseStructs(readFileSync(`${KERNEL_DIR}${f}`, 'utf8'))) structs.set(k, v);

test('every layout of layout.ts is a struct of the CUDA sources with the same size and field offsets', () => {
  for (const l of LAYOUTS) {
    const c = structs.get(l.name);
    assert.ok(c !== undefined, `no HOMI_LAYOUT ${l.name} in the CUDA sources`);
    assert.equal(l.bytes, c.bytes, `${l.name}: size`);
    for (const [name, f] of Object.entries(l.fields as Record<string, Field>)) {
      const cf = c.fields.get(name);
      assert.ok(cf !== undefined, `${l.name}.${name} is not in the CUDA struct`);
      assert.equal(f.offset, cf.offset, `${l.name}.${name}: offset`);
      assert.equal(f.type === 'u64' ? 'u64' : 'u32', cf.type === 'uint32_t' ? 'u32' : 'u64', `${l.name}.${name}: type`);
    }
    // fields of the C struct the TypeScript side does not name must be padding
    for (const name of c.fields.keys()) assert.ok(name in l.fields || name === 'pad', `${l.name}.${name} exists in CUDA only`);
  }
  assert.deepEqual([...structs.keys()].sort(), LAYOUTS.map((l) => l.name).sort(), 'structs marked in CUDA vs layouts in TypeScript');
});

test('the C offsets are consistent: each field starts where the one before ends, and the last ends at the size', () => {
  for (const [name, c] of structs) {
    let at = 0;
    for (const [fname, f] of c.fields) {
      const size = f.type === 'uint32_t' ? 4 : 8;
      assert.equal(f.offset, at, `${name}.${fname} offset`);
      at += size * (f.count < 0 ? 1024 : f.count);
    }
    assert.equal(at, c.bytes, `${name} size`);
  }
});

test('encode writes little-endian fields, refuses unknown fields and values that do not fit', () => {
  const b = encode(HomiGpuJob, { queues: 0x7f12_3456_7000, nqueues: 3, flags: 2 });
  assert.equal(field(HomiGpuJob, b, 'queues'), 0x7f12_3456_7000);
  assert.equal(field(HomiGpuJob, b, 'nqueues'), 3);
  assert.equal(b[64], 2);
  assert.throws(() => encode(HomiGpuJob, { nope: 1 } as never), /has no field nope/);
  assert.throws(() => encode(HomiGpuJob, { nqueues: 2 ** 32 }), /does not fit 32 bits/);
  assert.throws(() => encode(HomiGpuJob, { seed: -1 }), /not a non-negative integer/);
});
