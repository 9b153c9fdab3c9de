// Where the VM harness keeps things on the host.
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import { existsSync } from 'node:fs';

/** The checkout's root: the folder holding package.json above this compiled file (dist/src/vm/). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'tsconfig.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

/** The git-ignored cache folder (kernel, modules, initramfs): $HOMI_VM_CACHE or <repo>/vm/cache. */
export function cacheDir(): string {
  const env = process.env.HOMI_VM_CACHE;
  return env && env.length > 0 ? resolve(env) : join(repoRoot(), 'vm', 'cache');
}

/** Progress lines go to stderr with a fixed prefix (silence with HOMI_VM_QUIET=1). */
export function progress(msg: string): void {
  if (process.env.HOMI_VM_QUIET === '1') return;
  process.stderr.write(`[homi-vm] ${msg}\n`);
}
