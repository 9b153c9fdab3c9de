/**
 * The PTX / launcher contract: every committed PTX was built from the CUDA source beside it (manifest hashes),
 * nobody edited the PTX by hand, every kernel the TypeScript side launches exists in its PTX with exactly the
 * parameter list its launcher passes, and (where nvcc is installed) rebuilding gives the committed PTX.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { KERNELS, KERNEL_DIR, MODULES, PTX_ARCH, loadPtx, paramBytes, ptxEntries, readManifest, sha256, sourceHash, type ModuleName } from '../../src/gpu/kernels.js';

const names = Object.keys(MODULES) as ModuleName[];

test('each PTX was built from the source and headers beside it (manifest hashes)', () => {
  const m = readManifest();
  assert.equal(m.arch, PTX_ARCH);
  for (const n of names) {
    assert.equal(m.modules[n].sourceSha256, sourceHash(n), `${MODULES[n].source} changed since its PTX was built: run npm run build:gpu`);
    assert.equal(sha256(readFileSync(`${KERNEL_DIR}${MODULES[n].ptx}`)), m.modules[n].ptxSha256, `${MODULES[n].ptx} differs from what the manifest recorded`);
    assert.ok(loadPtx(n).includes(`.target sm_90`), `${MODULES[n].ptx} targets sm_90`);
  }
});

test('a PTX edited after the build is refused at load', () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-ptx-'));
  try {
    cpSync(KERNEL_DIR, dir, { recursive: true });
    const p = join(dir, MODULES.initiator.ptx);
    cpSync(p, `${p}.orig`);
    const text = readFileSync(p, 'utf8').replace('.entry homi_block_io', '.entry homi_block_io ');
    execFileSync('sh', ['-c', `cat > '${p}'`], { input: text });
    assert.throws(() => loadPtx('initiator', `${dir}/`), /does not match manifest\.json/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("every kernel's parameter list in the PTX matches its TypeScript launcher", () => {
  const entries = new Map<string, Array<{ bytes: number; align: number }>>();
  for (const n of names) for (const [k, v] of ptxEntries(loadPtx(n))) entries.set(`${n}/${k}`, v);
  const launched = new Set<string>();
  for (const [key, spec] of Object.entries(KERNELS)) {
    const id = `${spec.module}/${spec.name}`;
    launched.add(id);
    const params = entries.get(id);
    assert.ok(params !== undefined, `${key}: no .entry ${spec.name} in ${MODULES[spec.module].ptx}`);
    assert.deepEqual(
      params.map((p) => p.bytes),
      spec.params.map((p) => paramBytes(p)),
      `${spec.name}: parameter sizes in the PTX vs the launcher`,
    );
    for (const p of params) assert.ok(p.align === 8 || p.bytes <= p.align, `${spec.name}: parameter alignment ${p.align}`);
  }
  assert.deepEqual(
    [...entries.keys()].filter((k) => !launched.has(k)),
    [],
    'kernels in the PTX that no launcher declares',
  );
});

test('the PTX parameter parser reads aggregates and scalars, and refuses what it cannot read', () => {
  const ptx = '.visible .entry k(\n\t.param .align 8 .b8 k_param_0[80],\n\t.param .u32 k_param_1,\n\t.param .u64 k_param_2\n)\n{ ret; }\n.visible .entry z()\n{ ret; }';
  assert.deepEqual(Object.fromEntries(ptxEntries(ptx)), {
    k: [
      { bytes: 80, align: 8 },
      { bytes: 4, align: 4 },
      { bytes: 8, align: 8 },
    ],
    z: [],
  });
  assert.throws(() => ptxEntries('.entry w(\n .param .f32 w_param_0\n)'), /unparsed PTX parameter of w/);
});

function nvccAvailable(): string | null {
  try {
    return execFileSync(process.env['NVCC'] ?? 'nvcc', ['--version'], { encoding: 'utf8' });
  } catch {
    return null;
  }
}

test('rebuilding with nvcc reproduces the committed PTX', { skip: nvccAvailable() === null ? 'nvcc not installed here: the hash check above still ran' : false }, () => {
  const m = readManifest();
  const v = /V([\d.]+)/.exec(nvccAvailable()!)?.[1];
  if (`nvcc ${v}` !== m.compiler) {
    // another compiler version emits other PTX; the hashes above still tie the PTX to its source
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'homi-nvcc-'));
  try {
    for (const n of names) {
      const out = join(dir, MODULES[n].ptx);
      execFileSync(process.env['NVCC'] ?? 'nvcc', ['-ptx', `-arch=${PTX_ARCH}`, '-o', out, `${KERNEL_DIR}${MODULES[n].source}`]);
      assert.equal(sha256(readFileSync(out)), m.modules[n].ptxSha256, `nvcc output for ${MODULES[n].source} differs from the committed ${MODULES[n].ptx}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
