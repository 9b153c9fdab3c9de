/**
 * The kernel-file load paths (posix, io_uring) against real files: every byte lands in a HostSink, every file gets
 * one fileStart and one fileDone, bytes() adds up, small files overlap on the one ring, and files that cannot be
 * loaded fail alone with a clear reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostSink } from '../../src/load/host-sink.js';
import { openPosixPath } from '../../src/load/paths/posix.js';
import { openUringPath } from '../../src/load/paths/io-uring.js';
import { DEFAULT_CHUNK_BYTES, DEFAULT_DEPTH } from '../../src/load/defaults.js';
import type { LoadEvents, LoadFile, LoadPathEngine, LoadPathOptions } from '../../src/load/types.js';

const KiB = 1024;
const MiB = 1024 * 1024;
const SIZES = [0, 1, 4095, 4096, 110 * KiB, MiB + 123, 3 * MiB + 7];

type Opener = (o: LoadPathOptions) => Promise<LoadPathEngine>;
const PATHS: Array<{ name: string; open: Opener; direct: boolean }> = [
  { name: 'io_uring O_DIRECT', open: openUringPath, direct: true },
  { name: 'io_uring buffered', open: openUringPath, direct: false },
  { name: 'posix buffered', open: openPosixPath, direct: false },
  { name: 'posix O_DIRECT', open: openPosixPath, direct: true },
];

/** A directory on a file system with O_DIRECT (the system temp dir unless it is tmpfs), or why there is none. */
function directDir(): { dir: string; reason: null } | { dir: string; reason: string } {
  for (const base of [tmpdir(), '/var/tmp', process.cwd()]) {
    let dir: string;
    try {
      dir = fs.mkdtempSync(join(base, 'homi-load-paths-'));
    } catch {
      continue;
    }
    const probe = join(dir, 'probe');
    fs.writeFileSync(probe, Buffer.alloc(4096));
    try {
      fs.closeSync(fs.openSync(probe, fs.constants.O_RDONLY | fs.constants.O_DIRECT));
      fs.rmSync(probe);
      return { dir, reason: null };
    } catch {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const dir = fs.mkdtempSync(join(tmpdir(), 'homi-load-paths-'));
  return { dir, reason: `no O_DIRECT-capable file system among ${tmpdir()}, /var/tmp, ${process.cwd()}` };
}

const where = directDir();
const ROOT = where.dir;
const NO_DIRECT = where.reason;
process.on('exit', () => fs.rmSync(ROOT, { recursive: true, force: true }));

function plan(paths: string[]): LoadFile[] {
  return paths.map((p, index) => {
    const st = fs.statSync(p);
    return { index, path: p, size: st.isFile() ? st.size : 0, dev: st.dev, ino: st.ino, mtimeMs: st.mtimeMs };
  });
}

function makeFiles(dir: string, sizes: number[]): string[] {
  fs.mkdirSync(dir, { recursive: true });
  return sizes.map((size, i) => {
    const p = join(dir, `f${i}-${size}`);
    fs.writeFileSync(p, randomBytes(size));
    return p;
  });
}

class Recorder implements LoadEvents {
  readonly starts: number[] = [];
  readonly dones = new Map<number, Array<Error | null>>();
  total = 0;
  inProgress = 0;
  maxInProgress = 0;
  readonly order: string[] = [];
  fileStart(file: number): void {
    this.starts[file] = (this.starts[file] ?? 0) + 1;
    this.order.push(`start ${file}`);
    this.maxInProgress = Math.max(this.maxInProgress, ++this.inProgress);
  }
  fileDone(file: number, error: Error | null): void {
    const list = this.dones.get(file) ?? [];
    list.push(error);
    this.dones.set(file, list);
    this.order.push(`done ${file}`);
    this.inProgress--;
  }
  bytes(n: number): void {
    this.total += n;
  }
}

/** A HostSink that records adoptStaging() calls and that one happened before the first deliver(). */
class RecordingSink extends HostSink {
  adopted = 0;
  deliveredBeforeAdopt = false;
  /** staged: hide hostAddress, so that a path must stage and deliver (as into GPU memory). */
  constructor(files: LoadFile[], opts: { pin?: boolean }, staged = false) {
    super(files, opts);
    if (staged) (this as { hostAddress?: unknown }).hostAddress = undefined;
  }
  override adoptStaging(): void {
    this.adopted++;
  }
  override deliver(file: number, offset: number, data: Uint8Array): void {
    if (this.adopted === 0) this.deliveredBeforeAdopt = true;
    super.deliver(file, offset, data);
  }
}

async function load(open: Opener, opts: Partial<LoadPathOptions>, files: LoadFile[], staged = false): Promise<{ sink: RecordingSink; ev: Recorder; describe: string }> {
  const engine = await open({ depth: DEFAULT_DEPTH, chunkBytes: DEFAULT_CHUNK_BYTES, direct: false, ...opts });
  const sink = new RecordingSink(files, { pin: false }, staged);
  const ev = new Recorder();
  try {
    await engine.run(files, sink, ev);
  } finally {
    await engine.close();
  }
  return { sink, ev, describe: engine.describe };
}

/** Every file of `files` except those in `failed` loaded byte for byte, one start and one done each. */
function assertLoaded(files: LoadFile[], sink: RecordingSink, ev: Recorder, failed: Set<number> = new Set()): void {
  let total = 0;
  for (const f of files) {
    assert.equal(ev.starts[f.index], 1, `${f.path}: one fileStart`);
    const d = ev.dones.get(f.index);
    assert.equal(d?.length, 1, `${f.path}: one fileDone`);
    assert.ok(ev.order.indexOf(`start ${f.index}`) < ev.order.indexOf(`done ${f.index}`), `${f.path}: start before done`);
    if (failed.has(f.index)) {
      assert.ok(d![0] instanceof Error, `${f.path}: failed`);
      continue;
    }
    assert.equal(d![0], null, `${f.path}: ${d![0]?.message}`);
    const want = fs.readFileSync(f.path);
    assert.ok(Buffer.from(sink.view(f.index)).equals(want), `${f.path}: bytes differ`);
    total += f.size;
  }
  assert.equal(ev.total, total, 'bytes() adds up to the loaded bytes');
  assert.equal(sink.adopted, 1, 'adoptStaging once');
  assert.equal(sink.deliveredBeforeAdopt, false, 'adoptStaging before the first deliver');
}

for (const p of PATHS) {
  const skip = p.direct && NO_DIRECT !== null ? NO_DIRECT : false;

  for (const staged of p.open === openUringPath ? [true, false] : [false])
    test(`${p.name}: files of varied sizes, 1 MiB reads, depth 8${p.open === openUringPath ? (staged ? ', through staging buffers' : ', straight into the host arena') : ''}`, { skip }, async () => {
      const files = plan(makeFiles(join(ROOT, `${p.name}-varied${staged ? '-staged' : ''}`), SIZES));
      const { sink, ev, describe } = await load(p.open, { direct: p.direct, depth: 8, chunkBytes: MiB }, files, staged);
      assertLoaded(files, sink, ev);
      sink.close();
      if (p.open === openUringPath) {
        const buffers = staged
          ? '(registered buffers \\(READ_FIXED\\)|unregistered buffers \\(READ; IORING_REGISTER_BUFFERS failed: .*\\))'
          : 'straight into the destination \\(READ, no staging copy\\)';
        assert.match(describe, new RegExp(`^io_uring, ${p.direct ? 'O_DIRECT' : 'buffered \\(page cache\\)'}, ${buffers}, 8 in flight, 1 MiB reads$`));
      } else {
        assert.match(describe, new RegExp(`^pread \\(node:fs/promises on libuv's \\d+ threads\\), ${p.direct ? 'O_DIRECT \\(page-aligned buffers\\)' : 'buffered'}, 8 files at a time, 1 MiB reads$`));
      }
    });

  test(`${p.name}: small reads (16 KiB, depth 5): many reads per file in flight at once`, { skip }, async () => {
    const files = plan(makeFiles(join(ROOT, `${p.name}-small-reads`), SIZES));
    const { sink, ev } = await load(p.open, { direct: p.direct, depth: 5, chunkBytes: 16 * KiB }, files);
    assertLoaded(files, sink, ev);
    sink.close();
  });

  test(`${p.name}: 300 files of 110 KiB, depth 32`, { skip }, async () => {
    const files = plan(makeFiles(join(ROOT, `${p.name}-many`), new Array<number>(300).fill(110 * KiB)));
    const { sink, ev } = await load(p.open, { direct: p.direct, depth: 32, chunkBytes: MiB }, files);
    assertLoaded(files, sink, ev);
    // The small files overlap: up to `depth` of them are in flight together (one read each).
    assert.equal(ev.maxInProgress, 32);
    sink.close();
  });

  test(`${p.name}: a FIFO, a directory, a deleted file and a file changed after planning fail alone`, { skip }, async () => {
    const dir = join(ROOT, `${p.name}-bad`);
    const good = makeFiles(dir, [5000, 2 * MiB + 1, 0]);
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const sub = join(dir, 'subdir');
    fs.mkdirSync(sub);
    const [gone, grown] = makeFiles(join(dir, 'later'), [8192, 3000]);
    const files = plan([good[0]!, fifo, good[1]!, sub, gone!, grown!, good[2]!]);
    fs.rmSync(gone!);
    fs.appendFileSync(grown!, 'more');
    const { sink, ev } = await load(p.open, { direct: p.direct, depth: 4, chunkBytes: MiB }, files);
    assertLoaded(files, sink, ev, new Set([1, 3, 4, 5]));
    const msg = (i: number): string => ev.dones.get(i)![0]!.message;
    assert.equal(msg(1), `${fifo}: not a regular file (a FIFO)`);
    assert.equal(msg(3), `${sub}: not a regular file (a directory)`);
    assert.equal(msg(4), `${gone}: open: ENOENT`);
    assert.equal(msg(5), `${grown}: changed since it was planned: 3004 bytes now, 3000 planned`);
    sink.close();
  });
}

/** Whether `dir` is on tmpfs (from /proc/self/mounts: the longest mount point that contains it). */
function isTmpfs(dir: string): boolean {
  let best = '';
  let type = '';
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mnt, fstype] = line.split(' ');
    if (mnt === undefined || fstype === undefined) continue;
    if ((dir === mnt || dir.startsWith(mnt.endsWith('/') ? mnt : `${mnt}/`)) && mnt.length >= best.length) {
      best = mnt;
      type = fstype;
    }
  }
  return type === 'tmpfs';
}

const NO_DIRECT_MSG = 'open with O_DIRECT failed (EINVAL): this file system does not support O_DIRECT (e.g. sysfs, or tmpfs before Linux 6.6); load it without O_DIRECT';

/** Whether an O_DIRECT open of `file` succeeds. */
function directOpens(file: string): boolean {
  try {
    fs.closeSync(fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT));
    return true;
  } catch {
    return false;
  }
}

const shmIsTmpfs = fs.existsSync('/dev/shm') && isTmpfs('/dev/shm');
let shmDirect = false;
if (shmIsTmpfs) {
  const probe = join(fs.mkdtempSync('/dev/shm/homi-load-probe-'), 'p');
  fs.writeFileSync(probe, 'x');
  shmDirect = directOpens(probe);
  fs.rmSync(join(probe, '..'), { recursive: true, force: true });
}
const shmRefuses = !shmIsTmpfs ? '/dev/shm is not a tmpfs here' : shmDirect ? 'tmpfs accepts O_DIRECT on this kernel (Linux 6.6 and later)' : false;
const shmAccepts = !shmIsTmpfs ? '/dev/shm is not a tmpfs here' : !shmDirect ? 'tmpfs refuses O_DIRECT on this kernel (before Linux 6.6)' : false;
/** A sysfs file: no O_DIRECT there, and its stat size (a page) is more than reading it returns. */
const SYSFS_FILE = '/sys/devices/system/cpu/online';
const sysfsSkip = fs.existsSync(SYSFS_FILE) && !directOpens(SYSFS_FILE) ? false : `${SYSFS_FILE} is missing or opens with O_DIRECT`;

for (const open of [openUringPath, openPosixPath]) {
  const name = open === openUringPath ? 'io_uring' : 'posix';

  test(`${name}: O_DIRECT on tmpfs (/dev/shm) fails the file, naming O_DIRECT; buffered loads it`, { skip: shmRefuses }, async () => {
    const dir = fs.mkdtempSync('/dev/shm/homi-load-paths-');
    try {
      const files = plan(makeFiles(dir, [10_000, 4096]));
      const direct = await load(open, { direct: true, depth: 4 }, files);
      for (const f of files) assert.equal(direct.ev.dones.get(f.index)![0]?.message, `${f.path}: ${NO_DIRECT_MSG}`);
      assertLoaded(files, direct.sink, direct.ev, new Set([0, 1]));
      direct.sink.close();
      const buffered = await load(open, { direct: false, depth: 4 }, files);
      assertLoaded(files, buffered.sink, buffered.ev);
      buffered.sink.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test(`${name}: O_DIRECT on tmpfs (/dev/shm), where the kernel accepts it, loads every byte`, { skip: shmAccepts }, async () => {
    const dir = fs.mkdtempSync('/dev/shm/homi-load-paths-');
    try {
      const files = plan(makeFiles(dir, SIZES));
      const { sink, ev } = await load(open, { direct: true, depth: 4 }, files);
      assertLoaded(files, sink, ev);
      sink.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test(`${name}: a sysfs file fails alone: O_DIRECT is refused (the message names it); buffered, it ends before its stat size`, { skip: sysfsSkip }, async () => {
    const dir = join(ROOT, `${name}-sysfs`);
    const files = plan([...makeFiles(dir, [70_000]), SYSFS_FILE]);
    const content = fs.readFileSync(SYSFS_FILE).length;
    assert.ok(content < files[1]!.size, `${SYSFS_FILE}: ${content} bytes read, ${files[1]!.size} in stat`);
    if (NO_DIRECT === null) {
      const direct = await load(open, { direct: true, depth: 4, chunkBytes: 64 * KiB }, files);
      assert.equal(direct.ev.dones.get(1)![0]?.message, `${SYSFS_FILE}: ${NO_DIRECT_MSG}`);
      assertLoaded(files, direct.sink, direct.ev, new Set([1]));
      direct.sink.close();
    }
    const buffered = await load(open, { direct: false, depth: 4, chunkBytes: 64 * KiB }, files);
    assert.equal(buffered.ev.dones.get(1)![0]?.message, `${SYSFS_FILE}: the file ended at byte ${content}; it had ${files[1]!.size} bytes when planned`);
    assertLoaded(files, buffered.sink, buffered.ev, new Set([1]));
    buffered.sink.close();
  });
}

test('io_uring and posix refuse, at open, an O_DIRECT read size that is not a multiple of 4096', async () => {
  await assert.rejects(openUringPath({ depth: 4, chunkBytes: 1000, direct: true }), /O_DIRECT reads must be a multiple of 4096 bytes, got 1000/);
  await assert.rejects(openPosixPath({ depth: 4, chunkBytes: 1000, direct: true }), /O_DIRECT reads must be a multiple of 4096 bytes, got 1000/);
  await assert.rejects(openUringPath({ depth: 0.5, chunkBytes: MiB, direct: true }), /depth must be 1\.\.4096/);
});

test('the defaults: io_uring is O_DIRECT, 128 in flight, 1 MiB reads unless told otherwise', { skip: NO_DIRECT ?? false }, async () => {
  assert.equal(DEFAULT_DEPTH, 128);
  assert.equal(DEFAULT_CHUNK_BYTES, MiB);
  const e = await openUringPath({ depth: 0, chunkBytes: 0, direct: undefined as unknown as boolean });
  try {
    assert.match(e.describe, /^io_uring, O_DIRECT, .*, 128 in flight, 1 MiB reads$/);
    assert.equal(e.path, 'io_uring');
  } finally {
    await e.close();
  }
});
