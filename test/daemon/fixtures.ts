/**
 * Shared fixtures of the homid tests: an ext4 image built from a host directory, an image written onto a
 * namespace, configs, silent loggers.
 */
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pino } from 'pino';
import { configFromObject, type HomidConfig } from '../../src/daemon/config.js';
import { HomidError } from '../../src/daemon/errors.js';
import { dataPointer } from '../../src/driver/dptr.js';
import type { QueuePair } from '../../src/driver/queue-pair.js';
import type { DmaAllocator } from '../../src/mem/dma.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { mkExt4, tmpDir } from '../extents/fixtures.js';

export { haveTool, tmpDir } from '../extents/fixtures.js';

export const silent = () => pino({ level: 'silent' });

/** Deterministic file contents. */
export function pattern(bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let off = 0;
  let i = 0;
  while (off < bytes) {
    const h = crypto.createHash('sha256').update(`${seed}:${i++}`).digest();
    out.set(h.subarray(0, Math.min(h.length, bytes - off)), off);
    off += h.length;
  }
  return out;
}

export interface ImageFixture {
  dir: string;
  tree: string;
  image: string;
  files: Record<string, Uint8Array>;
  sizeMiB: number;
  rebuild(): void;
}

/** A tree of files and an ext4 image of it (mkfs.ext4 -d), for a file-backed emu namespace. */
export function ext4Fixture(files: Record<string, number>, sizeMiB = 16): ImageFixture {
  const dir = tmpDir('homid-');
  const tree = path.join(dir, 'tree');
  fs.mkdirSync(tree);
  const data: Record<string, Uint8Array> = {};
  let seed = 1;
  for (const [name, size] of Object.entries(files)) {
    data[name] = pattern(size, seed++);
    fs.writeFileSync(path.join(tree, name), data[name]!);
  }
  const image = path.join(dir, 'disk.img');
  mkExt4(image, tree, sizeMiB);
  return {
    dir,
    tree,
    image,
    files: data,
    sizeMiB,
    /** Rebuild the image from the tree, rewriting the image file in place (same inode). */
    rebuild(): void {
      const tmp = path.join(dir, 'next.img');
      mkExt4(tmp, tree, sizeMiB);
      fs.writeFileSync(image, fs.readFileSync(tmp));
      fs.rmSync(tmp);
    },
  };
}

export function config(doc: Record<string, unknown>): HomidConfig {
  return configFromObject(doc, 'test');
}

export const ROOT_PEER = { pid: process.pid, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
/** A peer that matches no raw user or group (nobody). */
export const NOBODY_PEER = { pid: process.pid, uid: 65534, gid: 65534 };

/** Bytes written per Write command when putting an image on a namespace (the emulator's default MDTS). */
const WRITE_CHUNK = 128 * 1024;

/** Write `image` at LBA 0 of `nsid` through `qp` (all-zero chunks skipped: a fresh namespace reads zeros). */
export async function writeImage(qp: QueuePair, dma: DmaAllocator, nsid: number, lbaSize: number, image: Uint8Array): Promise<void> {
  const buf = dma.alloc(WRITE_CHUNK, dma.pageSize);
  try {
    for (let off = 0; off < image.length; off += WRITE_CHUNK) {
      const n = Math.min(WRITE_CHUNK, image.length - off);
      const part = image.subarray(off, off + n);
      if (part.every((b) => b === 0)) continue;
      buf.bytes.fill(0);
      buf.bytes.set(part);
      const dp = dataPointer(dma, buf, 0, Math.ceil(n / lbaSize) * lbaSize);
      try {
        const lba = off / lbaSize;
        await qp.exec({ opcode: NvmOpcode.Write, nsid, cdw10: lba >>> 0, cdw11: Math.floor(lba / 2 ** 32), cdw12: Math.ceil(n / lbaSize) - 1, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
      } finally {
        dp.release();
      }
    }
  } finally {
    dma.free(buf);
  }
}

/** Await `p` (or call it and await the result) and assert that it is refused with HomidError `code`. */
export async function refused(p: Promise<unknown> | (() => unknown), code: string): Promise<HomidError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    assert.ok(e instanceof HomidError, `expected HomidError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected refusal ${code}`);
}
