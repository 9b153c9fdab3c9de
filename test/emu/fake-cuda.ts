/**
 * The fake libcuda (test/emu/fake-libcuda.c, a test double: "device memory" is host memory, streams run their
 * copies when synchronized or when a later event is queried), built with the C compiler for the tests that check
 * host-side CUDA logic on machines without a GPU. Every function src/sys/cuda.ts binds that the fake does not
 * define becomes a stub answering CUDA_ERROR_NOT_SUPPORTED.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { LIBCUDA_PATHS } from '../../src/sys/cuda.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

/** Build the fake driver into `dir`; null when there is no C compiler. */
export function buildFakeCuda(dir: string): string | null {
  const source = readFileSync(join(root, 'test/emu/fake-libcuda.c'), 'utf8');
  const defined = new Set([...source.matchAll(/^int (cu\w+)\(/gm)].map((m) => m[1]!));
  const bound = new Set([...readFileSync(join(root, 'src/sys/cuda.ts'), 'utf8').matchAll(/'int (cu\w+)\(/g)].map((m) => m[1]!));
  const stubs = [...bound].filter((n) => !defined.has(n)).map((n) => `int ${n}(void) { return 801; }\n`);
  writeFileSync(join(dir, 'stubs.c'), stubs.join(''));
  const out = join(dir, 'libcuda-fake.so');
  try {
    execFileSync('cc', ['-shared', '-fPIC', '-O1', '-o', out, join(root, 'test/emu/fake-libcuda.c'), join(dir, 'stubs.c'), '-lpthread'], { stdio: 'pipe' });
  } catch {
    return null;
  }
  return out;
}

/** Whether this machine has a real CUDA driver (then the real thing is tested instead, on the GPU machine). */
export function realCudaDriverPresent(): boolean {
  for (const p of LIBCUDA_PATHS) {
    try {
      koffi.load(p);
      return true;
    } catch {
      // not there
    }
  }
  return false;
}
