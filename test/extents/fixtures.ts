/** Test fixtures: deterministic source trees and real XFS / ext4 images built from them with mkfs. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { FsImage } from '../../src/extents/fsimage.js';
import type { BlockSource } from '../../src/extents/source.js';
import { fiemapPath } from '../../src/extents/fiemap.js';
import { FiemapError, type FileMap } from '../../src/extents/types.js';

/** xorshift32: a small deterministic PRNG. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return this.next() % n;
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.next();
      b[i] = v;
      if (i + 1 < n) b[i + 1] = v >>> 8;
      if (i + 2 < n) b[i + 2] = v >>> 16;
      if (i + 3 < n) b[i + 3] = v >>> 24;
    }
    return b;
  }
}

export interface TreeSpec {
  /** Entries in the big directory. */
  bigDir: number;
  /** Bytes of the large file. */
  large: number;
}

/** Entry kinds recorded for verification. */
export interface SourceEntry {
  rel: string;
  kind: 'file' | 'dir' | 'symlink';
  target?: string;
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * A new temporary directory on a file system that answers FIEMAP, for the tests that need real extents: the OS
 * temporary directory when its file system does (tmpfs does not), else /var/tmp, else one in the current
 * directory. `dir` is null and `skip` says why when none of them does.
 */
export function fiemapTmpDir(prefix: string): { dir: string; skip: false } | { dir: null; skip: string } {
  const tried: string[] = [];
  for (const parent of [os.tmpdir(), '/var/tmp', process.cwd()]) {
    let dir: string;
    try {
      dir = fs.mkdtempSync(path.join(parent, prefix));
    } catch (e) {
      tried.push(`${parent}: ${(e as Error).message}`);
      continue;
    }
    const probe = path.join(dir, 'probe');
    try {
      fs.writeFileSync(probe, new Uint8Array(65536).fill(1));
      if (fiemapPath(probe, { sync: true }).extents.length > 0) {
        fs.rmSync(probe);
        return { dir, skip: false };
      }
      tried.push(`${parent}: FIEMAP gave no extent for a written file`);
    } catch (e) {
      if (!(e instanceof FiemapError && e.unsupported)) throw e;
      tried.push(`${parent}: ${e.message}`);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { dir: null, skip: `no file system here answers FIEMAP (${tried.join('; ')})` };
}

/** Build the standard test tree under `root`. Returns every entry (relative paths, '/'-rooted). */
export function buildTree(root: string, spec: TreeSpec, seed = 1234): SourceEntry[] {
  const rng = new Rng(seed);
  const out: SourceEntry[] = [];
  const file = (rel: string, data: Uint8Array): void => {
    fs.writeFileSync(path.join(root, rel), data);
    out.push({ rel: '/' + rel, kind: 'file' });
  };
  const dir = (rel: string): void => {
    fs.mkdirSync(path.join(root, rel), { recursive: true });
    out.push({ rel: '/' + rel, kind: 'dir' });
  };
  const link = (rel: string, target: string): void => {
    fs.symlinkSync(target, path.join(root, rel));
    out.push({ rel: '/' + rel, kind: 'symlink', target });
  };
  file('empty', new Uint8Array(0));
  file('tiny', new Uint8Array([0x42]));
  file('small.txt', new TextEncoder().encode('hello, extents\n'.repeat(7)));
  file('exact4k', rng.bytes(4096));
  file('odd4097', rng.bytes(4097));
  file('large.bin', rng.bytes(spec.large));
  file('medium.bin', rng.bytes(300_000));
  // sparse: holes at the start, middle and end
  {
    const p = path.join(root, 'sparse.bin');
    const fd = fs.openSync(p, 'w');
    fs.ftruncateSync(fd, 9 * 1024 * 1024);
    fs.writeSync(fd, rng.bytes(10_000), 0, 10_000, 1024 * 1024 + 123);
    fs.writeSync(fd, rng.bytes(70_000), 0, 70_000, 5 * 1024 * 1024);
    fs.closeSync(fd);
    out.push({ rel: '/sparse.bin', kind: 'file' });
  }
  // deep directories
  let d = 'deep';
  dir(d);
  for (let i = 0; i < 24; i++) {
    d += `/level${i}`;
    dir(d);
  }
  file(`${d}/bottom.txt`, new TextEncoder().encode('at the bottom\n'));
  // long names (255 bytes)
  dir('long');
  file(`long/${'n'.repeat(255)}`, rng.bytes(777));
  file(`long/${'é'.repeat(127)}x`, rng.bytes(10)); // 255 bytes of UTF-8
  dir(`long/${'d'.repeat(255)}`);
  file(`long/${'d'.repeat(255)}/${'f'.repeat(255)}`, rng.bytes(5000));
  // small directories (XFS shortform, block form)
  dir('few');
  for (let i = 0; i < 3; i++) file(`few/f${i}`, rng.bytes(rng.int(100)));
  dir('some');
  for (let i = 0; i < 60; i++) file(`some/entry-${i}`, rng.bytes(rng.int(3000)));
  // the big directory: data with every file so directory blocks interleave with file blocks
  dir('big');
  for (let i = 0; i < spec.bigDir; i++) {
    const nameLen = 8 + (i % 7 === 0 ? 200 : rng.int(40));
    const name = `e${i}-` + 'x'.repeat(nameLen);
    file(`big/${name}`, rng.bytes(i % 5 === 0 ? 0 : 1 + rng.int(6000)));
  }
  // symbolic links: short (inline), long (XFS remote block / ext4 slow), through directories
  link('link-short', 'large.bin');
  link('link-long', './'.repeat(300) + 'medium.bin');
  link('link-dir', 'deep/level0/level1');
  link('link-abs', '/small.txt');
  return out;
}

/** mkfs.xfs protofile for a tree. Names must not contain white space or ':'. */
export function protofile(root: string): string {
  const lines: string[] = ['homi-proto', '0 0', 'd--755 0 0'];
  const walk = (dir: string, indent: string): void => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink()) lines.push(`${indent}${name} l--777 0 0 ${fs.readlinkSync(p)}`);
      else if (st.isDirectory()) {
        lines.push(`${indent}${name} d--755 0 0`);
        walk(p, indent + ' ');
        lines.push(`${indent}$`);
      } else lines.push(`${indent}${name} ---644 0 0 ${p}`);
    }
  };
  walk(root, ' ');
  lines.push('$');
  return lines.join('\n') + '\n';
}

export function haveTool(name: string): boolean {
  for (const dir of ['/usr/sbin', '/sbin', '/usr/bin', '/bin']) if (fs.existsSync(path.join(dir, name))) return true;
  return false;
}

/** Build an ext4 image from `srcdir` with mkfs.ext4 -d. */
export function mkExt4(img: string, srcdir: string, sizeMiB: number, extra: string[] = [], opts: { htree?: boolean; blockSize?: number } = {}): void {
  fs.rmSync(img, { force: true });
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', srcdir, '-b', String(opts.blockSize ?? 4096), ...extra, img, `${sizeMiB}M`], { stdio: 'pipe' });
  if (opts.htree) {
    // mkfs.ext4 -d writes linear directories; e2fsck -D re-indexes them into htrees.
    try {
      execFileSync('e2fsck', ['-f', '-y', '-D', img], { stdio: 'pipe' });
    } catch (e) {
      const status = (e as { status?: number }).status ?? 8;
      if (status > 2) throw e;
    }
  }
}

/** Build an XFS image from `srcdir` with mkfs.xfs -p (small images allowed through the fstests variables). */
/** `mkfs.xfs -V`'s version line, for skip reasons. */
export function mkfsXfsVersion(): string {
  try {
    return execFileSync('mkfs.xfs', ['-V'], { stdio: 'pipe' }).toString().trim();
  } catch (e) {
    return `mkfs.xfs -V failed: ${(e as Error).message}`;
  }
}

export function mkXfs(img: string, srcdir: string, sizeMiB: number, extra: string[] = []): void {
  const proto = img + '.proto';
  fs.writeFileSync(proto, protofile(srcdir));
  const make = (mib: number): void => {
    fs.rmSync(img, { force: true });
    const fd = fs.openSync(img, 'w');
    fs.ftruncateSync(fd, mib * 1024 * 1024);
    fs.closeSync(fd);
    execFileSync('mkfs.xfs', ['-q', '-f', ...extra, '-p', proto, img], {
      stdio: 'pipe',
      env: { ...process.env, TEST_DIR: '/tmp', TEST_DEV: img, QA_CHECK_FS: '1' },
    });
  };
  try {
    make(sizeMiB);
  } catch {
    make(Math.max(sizeMiB, 320));
  }
  fs.rmSync(proto, { force: true });
}

// ---------------------------------------------------------------------------------------------------------
// Verification against the source tree

/** A file's bytes read from the image at its decoded extents (holes and unwritten extents read as zeros). */
export function readByExtents(src: BlockSource, map: FileMap): Uint8Array {
  const out = new Uint8Array(map.size);
  for (const e of map.extents) {
    if (e.logical >= map.size) continue;
    const n = Math.min(e.length, map.size - e.logical);
    if (e.flags.includes('unwritten') || e.flags.includes('delalloc')) continue;
    out.set(src.read(e.physical, n), e.logical);
  }
  return out;
}

export function checkMapShape(map: FileMap, imageSize: number): void {
  let end = 0;
  for (const [i, e] of map.extents.entries()) {
    assert.ok(e.logical >= end, `${map.path}: extent ${i} out of order`);
    assert.ok(e.length > 0, `${map.path}: empty extent`);
    assert.ok(e.physical >= 0 && e.physical + Math.min(e.length, Math.max(0, map.size - e.logical)) <= imageSize, `${map.path}: extent ${i} outside the image`);
    assert.equal(e.flags.includes('last'), i === map.extents.length - 1, `${map.path}: 'last' flag on extent ${i}`);
    end = e.logical + e.length;
  }
}

export interface VerifyOptions {
  /** Files whose trailing hole the tool may drop (mkfs.ext4 -O inline_data does). */
  lenientSize?: (rel: string) => boolean;
  /** Entries not to check (known tool defects). */
  skip?: (rel: string) => boolean;
}

/** Every source file's bytes, every directory's names, every symlink's target. Returns the number of files checked. */
export function verifyAgainstSource(image: FsImage, srcRoot: string, entries: SourceEntry[], opts: VerifyOptions = {}): number {
  let files = 0;
  for (const ent of entries) {
    if (opts.skip?.(ent.rel)) continue;
    const p = path.join(srcRoot, ent.rel);
    if (ent.kind === 'file') {
      const map = image.mapPath(ent.rel);
      const want = fs.readFileSync(p);
      checkMapShape(map, image.source.size);
      assert.equal(map.type, 'file', ent.rel);
      if (map.size !== want.length && opts.lenientSize?.(ent.rel)) {
        assert.ok(map.size < want.length, `${ent.rel}: size ${map.size} > ${want.length}`);
        assert.ok(
          want.subarray(map.size).every((x) => x === 0),
          `${ent.rel}: dropped tail is not a hole`,
        );
        assert.ok(Buffer.from(readByExtents(image.source, map)).equals(want.subarray(0, map.size)), `${ent.rel}: content`);
      } else {
        assert.equal(map.size, want.length, `${ent.rel}: size`);
        assert.ok(Buffer.from(readByExtents(image.source, map)).equals(want), `${ent.rel}: content differs`);
      }
      files++;
    } else if (ent.kind === 'dir') {
      const ino = image.lookup(ent.rel);
      assert.equal(image.stat(ino).type, 'dir', ent.rel);
      const got = image
        .readDir(ino)
        .map((e) => e.name)
        .sort();
      assert.deepEqual(got, fs.readdirSync(p).sort(), `${ent.rel}: names`);
    } else {
      const ino = image.lookup(ent.rel, { follow: false });
      assert.equal(image.stat(ino).type, 'symlink', ent.rel);
      assert.equal(image.readLink(ino), ent.target, `${ent.rel}: target`);
      const map = image.mapPath(ent.rel, { follow: false });
      assert.ok(Buffer.from(readByExtents(image.source, map)).toString('utf8') === ent.target, `${ent.rel}: target bytes at extents`);
    }
  }
  // the walk finds exactly the source entries
  const walked = new Set<string>();
  for (const w of image.walk()) walked.add(w.path);
  assert.deepEqual([...walked].filter((x) => x !== '/' && x !== '/lost+found').sort(), entries.map((e) => e.rel).sort());
  return files;
}

/** Remove a temp tree. */
export function rmTree(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
}
