/** Shared helpers for the IPC tests: socket paths, descriptor counts, a seeded PRNG, waiting. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

let n = 0;
/** A fresh socket path in the temp directory (short enough for sun_path). */
export function socketPath(tag: string): string {
  return path.join(os.tmpdir(), `homi-ipc-${tag}-${process.pid}-${n++}.sock`);
}

/** A temp file with `content`; returns its path. */
export function tempFile(tag: string, content: string | Uint8Array): string {
  const p = path.join(os.tmpdir(), `homi-ipc-${tag}-${process.pid}-${n++}.txt`);
  fs.writeFileSync(p, content);
  return p;
}

/** Open descriptors of this process. */
export function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** What descriptor `fd` refers to (readlink of /proc/self/fd/N), or null when it is closed. */
export function fdTarget(fd: number): string | null {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
}

/** mulberry32: a small seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Poll `cond` until true or throw after `timeoutMs`. */
export async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Race a promise against a (generous) timeout. */
export function within<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)), timeoutMs);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
