// Real-kernel agreement suite for the extents decoders (issue 5), run INSIDE the VM harness's guest: XFS and
// ext4 images are built with mkfs from the host tests' source tree, aged through the guest kernel (a rw mount
// that preallocates, punches, fragments and reuses space), then every file is decoded by HOMI from the
// UNMOUNTED image, the image is attached read-only to a loop device and mounted read-only, and the decoder's
// map must equal the kernel's FIEMAP (and its bytes the bytes read through the mount) for every file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { openImage } from '../src/extents/open.js';
import { fiemapPath } from '../src/extents/fiemap.js';
import { FiemapError, type FileMap } from '../src/extents/types.js';
import type { FsImage } from '../src/extents/fsimage.js';
import { XFS_FORMAT, XfsImage } from '../src/extents/xfs/index.js';
import { EXT4_FL, Ext4Image } from '../src/extents/ext4/index.js';
import { buildTree, mkExt4, mkXfs, readByExtents, Rng, rmTree, type SourceEntry } from '../test/extents/fixtures.js';
import { assertInGuest } from './helpers.js';

assertInGuest();

const KiB = 1024;
const MiB = 1024 * KiB;

/** Runs a tool from the host root; its stderr goes into the error message. */
function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${err.stderr ?? ''}`);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function mountedAt(mnt: string): boolean {
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === mnt);
}

function loopsOf(img: string): string[] {
  return sh('losetup', ['-n', '-O', 'NAME', '-j', img])
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/**
 * Attaches `img` to a free loop device, mounts it at `mnt`, runs `fn`, and in every case (an assertion failed,
 * the mount failed) unmounts and detaches again. A cleanup failure is reported unless `fn` already failed.
 */
async function withMount<T>(img: string, fsType: string, mnt: string, opts: { readOnly: boolean; options: string }, fn: () => T | Promise<T>): Promise<T> {
  fs.mkdirSync(mnt, { recursive: true });
  const dev = sh('losetup', ['--find', '--show', ...(opts.readOnly ? ['--read-only'] : []), img]).trim();
  let failed = false;
  try {
    sh('mount', ['-t', fsType, '-o', opts.options, dev, mnt]);
    return await fn();
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    const problems: string[] = [];
    for (let i = 0; mountedAt(mnt); i++) {
      try {
        sh('umount', [mnt]);
      } catch (e) {
        if (i >= 10) {
          problems.push(String(e));
          sh('umount', ['-l', mnt]);
          break;
        }
        await sleep(200);
      }
    }
    for (let i = 0; loopsOf(img).includes(dev); i++) {
      try {
        sh('losetup', ['-d', dev]);
      } catch (e) {
        if (i >= 10) {
          problems.push(String(e));
          break;
        }
      }
      await sleep(100);
    }
    // Only when the body itself did not throw (failed), so no error of the body is swallowed.
    // eslint-disable-next-line no-unsafe-finally
    if (problems.length > 0 && !failed) throw new Error(`cleanup of ${img}: ${problems.join('\n')}`);
  }
}

/**
 * Ages a freshly made file system through the kernel: fully and partly written preallocations (unwritten
 * extents), preallocation past EOF, a punched hole, a file of many single-block extents (XFS btree data fork,
 * ext4 extent tree with index nodes), two interleaved appenders, and a file written into space freed by
 * deleting part of the big directory.
 */
function ageThroughKernel(mnt: string): void {
  const k = join(mnt, 'kernel');
  fs.mkdirSync(k);
  const rng = new Rng(77);
  sh('fallocate', ['-l', String(2 * MiB), join(k, 'prealloc')]);
  sh('fallocate', ['-l', String(1 * MiB), join(k, 'mixed')]);
  {
    const fd = fs.openSync(join(k, 'mixed'), 'r+');
    fs.writeSync(fd, rng.bytes(64 * KiB), 0, 64 * KiB, 256 * KiB);
    fs.writeSync(fd, rng.bytes(5000), 0, 5000, 700 * KiB + 3);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
  fs.writeFileSync(join(k, 'keep-size'), rng.bytes(100));
  sh('fallocate', ['-n', '-o', '0', '-l', String(512 * KiB), join(k, 'keep-size')]);
  fs.writeFileSync(join(k, 'punched'), rng.bytes(1 * MiB));
  sh('fallocate', ['-p', '-o', String(128 * KiB), '-l', String(256 * KiB), join(k, 'punched')]);
  {
    // every other 4 KiB block, highest first (so no EOF-driven preallocation fills the holes)
    const fd = fs.openSync(join(k, 'frag'), 'w');
    const blk = rng.bytes(4096);
    for (let i = 1499; i >= 0; i--) fs.writeSync(fd, blk, 0, 4096, i * 8192);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
  {
    const a = fs.openSync(join(k, 'interleaved-a'), 'w');
    const b = fs.openSync(join(k, 'interleaved-b'), 'w');
    for (let i = 0; i < 24; i++) {
      fs.writeSync(a, rng.bytes(32 * KiB));
      fs.fsyncSync(a);
      fs.writeSync(b, rng.bytes(32 * KiB + 1000));
      fs.fsyncSync(b);
    }
    fs.closeSync(a);
    fs.closeSync(b);
  }
  const big = join(mnt, 'big');
  const names = fs.readdirSync(big).sort();
  for (let i = 0; i < names.length; i += 3) fs.unlinkSync(join(big, names[i]!));
  fs.writeFileSync(join(k, 'reuse.bin'), rng.bytes(3 * MiB));
  sh('sync', []);
}

interface Norm {
  logical: number;
  physical: number;
  length: number;
  flags: string;
}

/** Extents clipped to the file size, 'last' dropped, physically and logically adjacent ones with the same flags merged. */
function normalize(map: FileMap): Norm[] {
  const out: Norm[] = [];
  for (const e of map.extents) {
    if (e.logical >= map.size) continue;
    const length = Math.min(e.length, map.size - e.logical);
    const flags = e.flags
      .filter((f) => f !== 'last')
      .sort()
      .join(',');
    const prev = out.at(-1);
    if (prev && prev.flags === flags && prev.logical + prev.length === e.logical && prev.physical + prev.length === e.physical) prev.length += length;
    else out.push({ logical: e.logical, physical: e.physical, length, flags });
  }
  return out;
}

function show(n: Norm[]): string {
  const s = n
    .slice(0, 12)
    .map((e) => `[${e.logical}+${e.length} @${e.physical}${e.flags ? ' ' + e.flags : ''}]`)
    .join(' ');
  return n.length > 12 ? `${s} ... (${n.length} extents)` : s;
}

/** Every regular file and directory under `root` on the mounted file system, as '/'-rooted paths. */
function walkMounted(root: string): { files: Map<string, fs.Stats>; dirs: Map<string, fs.Stats> } {
  const files = new Map<string, fs.Stats>();
  const dirs = new Map<string, fs.Stats>();
  const stack = ['/'];
  while (stack.length > 0) {
    const rel = stack.pop()!;
    const st = fs.lstatSync(join(root, rel));
    if (st.isDirectory()) {
      dirs.set(rel, st);
      for (const n of fs.readdirSync(join(root, rel))) stack.push(rel === '/' ? `/${n}` : `${rel}/${n}`);
    } else if (st.isFile()) files.set(rel, st);
  }
  return { files, dirs };
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

const work = fs.mkdtempSync('/tmp/homi-extents-vm-');
const src = join(work, 'src');
let entries: SourceEntry[] = [];

before(() => {
  fs.mkdirSync(src);
  const t0 = Date.now();
  entries = buildTree(src, { bigDir: 1500, large: 6 * MiB });
  console.log(`# source tree: ${entries.length} entries in ${Date.now() - t0} ms`);
});

after(() => rmTree(work));

const kinds = [
  {
    fs: 'xfs' as const,
    make: (img: string): void => mkXfs(img, src, 96),
    rwOptions: 'rw',
  },
  {
    fs: 'ext4' as const,
    make: (img: string): void => mkExt4(img, src, 96, [], { htree: true }),
    // no background inode-table zeroing while the aging mount is up
    rwOptions: 'rw,noinit_itable',
  },
];

for (const kind of kinds) {
  describe(`${kind.fs}: HOMI's decoder agrees with the guest kernel`, () => {
    const img = join(work, `${kind.fs}.img`);
    const mnt = join(work, `${kind.fs}-mnt`);
    const decoded = new Map<string, FileMap>();
    const decodedDirs = new Map<string, FileMap>();
    let image: FsImage | undefined;

    before(async () => {
      let t = Date.now();
      kind.make(img);
      console.log(`# ${kind.fs}: mkfs ${Date.now() - t} ms, image ${fs.statSync(img).size / MiB} MiB`);
      t = Date.now();
      await withMount(img, kind.fs, mnt, { readOnly: false, options: kind.rwOptions }, () => ageThroughKernel(mnt));
      console.log(`# ${kind.fs}: aged through the kernel in ${Date.now() - t} ms`);
    });

    after(() => {
      image?.close();
      fs.rmSync(img, { force: true });
    });

    test('decode every inode from the unmounted image', () => {
      assert.ok(!mountedAt(mnt), 'the image is still mounted');
      assert.deepEqual(loopsOf(img), [], 'the image is still attached to a loop device');
      const t = Date.now();
      image = openImage(img, { fs: kind.fs });
      for (const w of image.walk()) {
        if (w.type === 'file') {
          assert.ok(w.map, `${w.path}: no map`);
          decoded.set(w.path, w.map);
        } else if (w.type === 'dir' && w.map) decodedDirs.set(w.path, w.map);
      }
      console.log(`# ${kind.fs}: decoded ${decoded.size} files, ${decodedDirs.size} directories in ${Date.now() - t} ms`);
      // the aging produced what it is meant to cover
      const unwritten = [...decoded.values()].filter((m) => m.extents.some((e) => e.flags.includes('unwritten')));
      assert.ok(unwritten.length >= 3, `only ${unwritten.length} files with unwritten extents`);
      assert.ok(decoded.get('/kernel/frag')!.extents.length >= 1500, 'the fragmented file has too few extents');
      assert.ok(decoded.size > 1000, `only ${decoded.size} files`);
      // ... and the on-disk shapes the agreement is meant to exercise
      const frag = image.lookup('/kernel/frag');
      const big = image.lookup('/big');
      if (image instanceof XfsImage) {
        assert.equal(image.readInode(frag).format, XFS_FORMAT.BTREE, '/kernel/frag: data fork is not a B+tree');
        assert.equal(image.readInode(big).format, XFS_FORMAT.BTREE, '/big: directory data fork is not a B+tree');
      } else if (image instanceof Ext4Image) {
        assert.ok(image.readInode(frag).raw.u16le(40 + 6) >= 1, '/kernel/frag: extent tree has no index level');
        assert.ok(image.readInode(big).flags & EXT4_FL.INDEX, '/big: not an htree directory');
      }
    });

    test("mounted read-only: every file's extents, size, inode and bytes match FIEMAP, stat and the mount", async () => {
      assert.ok(image, 'the decode step did not run');
      const im = image;
      const t = Date.now();
      let compared = 0;
      let bytes = 0;
      let extents = 0;
      let dirsCompared = 0;
      let dirsUnsupported = 0;
      await withMount(img, kind.fs, mnt, { readOnly: true, options: 'ro' }, () => {
        const { files, dirs } = walkMounted(mnt);
        // the decoder's walk finds exactly the regular files the kernel's tree has
        assert.deepEqual([...decoded.keys()].sort(), [...files.keys()].sort(), 'the decoded and mounted file sets differ');
        assert.equal(decoded.size, files.size);
        const bad: string[] = [];
        for (const [rel, map] of decoded) {
          const st = files.get(rel)!;
          const p = join(mnt, rel);
          if (map.size !== st.size) bad.push(`${rel}: decoded size ${map.size}, stat size ${st.size}`);
          if (map.ino !== Number(st.ino)) bad.push(`${rel}: decoded inode ${map.ino}, stat inode ${st.ino}`);
          const fm = fiemapPath(p);
          const want = normalize({ ...fm, size: st.size });
          const got = normalize(map);
          if (JSON.stringify(got) !== JSON.stringify(want)) bad.push(`${rel}: decoder ${show(got)}\n    FIEMAP  ${show(want)}`);
          const viaMount = fs.readFileSync(p);
          const viaImage = readByExtents(im.source, map);
          if (!viaMount.equals(viaImage)) {
            bad.push(`${rel}: bytes differ at ${firstDifference(viaMount, viaImage)} (mount ${viaMount.length} bytes, image ${viaImage.length})`);
          }
          compared++;
          bytes += viaMount.length;
          extents += got.length;
          if (bad.length >= 20) break;
        }
        // directories, where the kernel has FIEMAP for them (ext4; XFS has none)
        for (const [rel, map] of decodedDirs) {
          if (bad.length >= 20) break;
          const st = dirs.get(rel);
          if (!st) {
            bad.push(`${rel}: decoded directory not in the mounted tree`);
            continue;
          }
          let fm: FileMap;
          try {
            fm = fiemapPath(join(mnt, rel));
          } catch (e) {
            if (e instanceof FiemapError && e.unsupported) {
              dirsUnsupported++;
              continue;
            }
            throw e;
          }
          const want = normalize({ ...fm, size: st.size });
          const got = normalize({ ...map, size: st.size });
          if (JSON.stringify(got) !== JSON.stringify(want)) bad.push(`${rel}/ (dir): decoder ${show(got)}\n    FIEMAP  ${show(want)}`);
          dirsCompared++;
        }
        assert.deepEqual(bad, [], `${bad.length} disagreement(s) (stopped at 20):\n${bad.join('\n')}`);
        // ext4 answers FIEMAP for directories: their comparison must not have been skipped wholesale.
        if (kind.fs === 'ext4') assert.ok(dirsCompared > 0, `no ext4 directory compared (${dirsUnsupported} without FIEMAP)`);
      });
      console.log(
        `# ${kind.fs}: ${compared} files compared (${extents} merged extents, ${(bytes / MiB).toFixed(1)} MiB), ` +
          `${dirsCompared} directories compared, ${dirsUnsupported} without FIEMAP, in ${Date.now() - t} ms`,
      );
      assert.ok(compared > 1000);
    });

    test('nothing is left mounted or attached', () => {
      assert.ok(!mountedAt(mnt), `${mnt} is still mounted`);
      assert.deepEqual(loopsOf(img), []);
    });
  });
}
