/**
 * The parts of `homi load` every path shares: discovery of files, directories and globs with per-argument errors;
 * extents turned into device reads; the runner's per-file outcomes (latency, a file changed during the load, a
 * verify mismatch, a file the path never finished); the host arena; cold-cache drops; and the GPU sink's clear
 * refusal where there is no CUDA driver.
 */
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { changedSince, discover } from '../../src/load/discover.js';
import { planReads } from '../../src/load/extent-plan.js';
import { HostSink, arenaLayout } from '../../src/load/host-sink.js';
import { percentile, runLoad } from '../../src/load/runner.js';
import { dropCaches } from '../../src/load/cache.js';
import { cacheNote } from '../../src/load/index.js';
import { GpuSink } from '../../src/load/gpu-sink.js';
import { cudaDriverPresent } from '../../src/sys/cuda.js';
import type { LoadEvents, LoadFile, LoadPathEngine, LoadSink } from '../../src/load/types.js';

let dir = '';
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'homi-load-core-'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function write(rel: string, bytes: number, seed = 1): string {
  const p = path.join(dir, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  fs.writeFileSync(p, b);
  return p;
}

/** A path that reads each file with readFileSync and delivers it in 4 KiB pieces (or corrupts / skips some). */
function fakeEngine(o: { corrupt?: number; skip?: number; fail?: number; touch?: number } = {}): LoadPathEngine {
  return {
    path: 'posix',
    describe: 'a test path (readFileSync in 4 KiB pieces)',
    async run(files: readonly LoadFile[], sink: LoadSink, ev: LoadEvents) {
      for (const f of files) {
        if (f.index === o.skip) continue;
        ev.fileStart(f.index);
        if (f.index === o.fail) {
          ev.fileDone(f.index, new Error('read at offset 0: EIO'));
          continue;
        }
        const b = new Uint8Array(fs.readFileSync(f.path));
        if (f.index === o.corrupt && b.length > 10) b[10] ^= 0xff;
        for (let off = 0; off < b.length; off += 4096) {
          const part = b.subarray(off, Math.min(b.length, off + 4096));
          sink.deliver(f.index, off, part);
          ev.bytes(part.length);
        }
        if (f.index === o.touch) fs.appendFileSync(f.path, 'x');
        await new Promise((r) => setImmediate(r));
        ev.fileDone(f.index, null);
      }
    },
    async close() {},
  };
}

describe('discovery', () => {
  test('files, directories (recursively, sorted) and globs; each file once', () => {
    const a = write('d/a.bin', 100);
    write('d/sub/b.bin', 200);
    write('d/sub/c.txt', 300);
    const { files, errors } = discover([path.join(dir, 'd'), a, path.join(dir, 'd/sub/*.txt')]);
    assert.deepEqual(errors, []);
    assert.deepEqual(
      files.map((f) => [path.relative(dir, f.path), f.size, f.index]),
      [
        ['d/a.bin', 100, 0],
        ['d/sub/b.bin', 200, 1],
        ['d/sub/c.txt', 300, 2],
      ],
    );
  });

  test('a missing file, an empty directory, a FIFO and a pattern with no match are per-argument errors; the rest is planned', () => {
    const ok = write('e/ok.bin', 10);
    fs.mkdirSync(path.join(dir, 'empty'));
    const fifo = path.join(dir, 'e/pipe');
    execFileSync('mkfifo', [fifo]);
    const { files, errors } = discover([ok, path.join(dir, 'missing.bin'), path.join(dir, 'empty'), fifo, path.join(dir, 'nothing-*.zzz')]);
    assert.deepEqual(
      files.map((f) => f.path),
      [ok],
    );
    assert.deepEqual(
      errors.map((e) => e.reason),
      ['no such file or directory', 'the directory holds no regular file', 'a FIFO, not a regular file', 'the pattern matches no file'],
    );
  });

  test('changedSince notices a rewrite, a resize and a removal', () => {
    const p = write('chg.bin', 1000);
    const [f] = discover([p]).files;
    assert.equal(changedSince(f!), null);
    fs.appendFileSync(p, 'more');
    assert.match(changedSince(f!)!, /size 1000 -> 1004/);
    fs.rmSync(p);
    assert.match(changedSince(f!)!, /went away/);
  });
});

describe('extents as device reads', () => {
  const ext = (logical: number, physical: number, length: number, flags: string[] = []) => ({ logical, physical, length, flags }) as never;
  test('adjacent extents merge, runs split at the largest read, the tail is cut to the file size', () => {
    const reads = planReads(10_000 + 300_000, [ext(0, 4096 * 10, 4096), ext(4096, 4096 * 11, 8192), ext(12288, 4096 * 100, 300_000)], 4096, 131072);
    assert.deepEqual(reads[0], { slba: 10, nlb: 3, fileOffset: 0, bytes: 12288 });
    assert.deepEqual(reads[1], { slba: 100, nlb: 32, fileOffset: 12288, bytes: 131072 });
    const last = reads[reads.length - 1]!;
    assert.equal(last.fileOffset + last.bytes, 310_000, 'the last read ends at the file size');
    assert.equal(last.nlb, Math.ceil(last.bytes / 4096));
    assert.equal(
      reads.reduce((s, r) => s + r.bytes, 0),
      310_000,
    );
  });
  test('holes and unwritten extents need no read; inline and delalloc extents refuse with the reason', () => {
    assert.deepEqual(planReads(8192, [ext(4096, 8192, 4096, ['unwritten'])], 4096, 131072), []);
    assert.deepEqual(planReads(8192, [ext(4096, 8192, 4096)], 4096, 131072), [{ slba: 2, nlb: 1, fileOffset: 4096, bytes: 4096 }]);
    assert.throws(() => planReads(100, [ext(0, 0, 100, ['inline'])], 4096, 131072), /is inline/);
    assert.throws(() => planReads(100, [ext(0, 0, 4096, ['delalloc'])], 4096, 131072), /is delalloc/);
    assert.throws(() => planReads(100, [ext(0, 100, 4096)], 4096, 131072), /not aligned/);
  });
});

describe('the runner', () => {
  test('every byte lands, latency per file, verify passes; a corrupted, a failed, a changed and an unfinished file are each reported', async () => {
    const paths = [0, 1, 2, 3, 4, 5].map((i) => write(`r/f${i}.bin`, 5000 + i * 3000, i + 1));
    const { files } = discover(paths);
    const sink = new HostSink(files);
    try {
      const good = await runLoad(files, fakeEngine(), sink, { verify: true });
      assert.equal(good.files, 6);
      assert.equal(
        good.bytes,
        files.reduce((s, f) => s + f.size, 0),
      );
      assert.equal(good.verified, true);
      assert.deepEqual(good.errors, []);
      assert.ok(good.latency.p50 > 0 && good.latency.max >= good.latency.p99);
      for (const f of files) assert.deepEqual(Buffer.from(sink.view(f.index)), fs.readFileSync(f.path));

      const bad = await runLoad(files, fakeEngine({ corrupt: 1, fail: 2, skip: 3, touch: 4 }), sink, { verify: true });
      assert.equal(bad.files, 2);
      const why = Object.fromEntries(bad.errors.map((e) => [path.basename(e.path), e.reason]));
      assert.match(why['f1.bin']!, /verify: the loaded bytes differ from a normal read \(first difference at byte 10\)/);
      assert.equal(why['f2.bin'], 'read at offset 0: EIO');
      assert.match(why['f3.bin']!, /never finished/);
      assert.match(why['f4.bin']!, /changed during the load/);
    } finally {
      sink.close();
    }
  });

  test('percentile is nearest-rank', () => {
    const v = Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(percentile(v, 50), 5);
    assert.equal(percentile(v, 99), 10);
    assert.equal(percentile(new Float64Array(0), 50), 0);
  });
});

describe('sinks and the cache', () => {
  test('the host arena gives each file a page-aligned slot and refuses bytes outside it', () => {
    const files = [{ size: 1 }, { size: 4096 }, { size: 4097 }, { size: 0 }];
    assert.deepEqual(arenaLayout(files), { offsets: [0, 4096, 8192, 16384], bytes: 20480 });
    const lf = files.map((f, index) => ({ ...f, index, path: `/x${index}`, dev: 0, ino: 0, mtimeMs: 0 }));
    const s = new HostSink(lf);
    try {
      s.deliver(2, 4096, Uint8Array.of(7));
      assert.equal(s.view(2)[4096], 7);
      assert.throws(() => s.deliver(1, 1, new Uint8Array(4096)), /outside file 1/);
      assert.match(s.describe, /host memory, (pinned|pageable)/);
    } finally {
      s.close();
    }
  });

  test('dropCaches empties the page cache of files on a disk file system (mincore says so), and notes tmpfs', () => {
    const p = write('cache/a.bin', 1 << 20);
    fs.readFileSync(p);
    const r = dropCaches([p]);
    assert.equal(r.dropped, 1);
    assert.equal(r.pages, 256);
    assert.equal(r.residentPages, 0, `${r.residentPages} pages stayed resident`);
    assert.equal(r.note, null);
    assert.match(cacheNote('posix', false, r), /^cold: the page cache of 1 file\(s\) was dropped/);
    assert.match(cacheNote('io_uring', true, null), /O_DIRECT/);
    if (fs.existsSync('/dev/shm') && fs.statfsSync('/dev/shm').type === 0x01021994) {
      const shm = fs.mkdtempSync('/dev/shm/homi-load-');
      try {
        fs.writeFileSync(path.join(shm, 'x'), crypto.randomBytes(8192));
        const t = dropCaches([path.join(shm, 'x')]);
        assert.equal(t.dropped, 0);
        assert.match(t.note!, /tmpfs: the page cache is the file itself/);
        assert.match(cacheNote('posix', false, t), /^not entirely cold: 1 file\(s\): tmpfs/);
      } finally {
        fs.rmSync(shm, { recursive: true, force: true });
      }
    }
  });

  test('the GPU sink fails with one clear error where there is no CUDA driver', { skip: cudaDriverPresent() ? 'a CUDA driver is present (the GPU suite covers the GPU sink)' : false }, () => {
    assert.throws(() => new GpuSink([{ index: 0, path: '/x', size: 10, dev: 0, ino: 0, mtimeMs: 0 }]), /no CUDA driver: libcuda\.so\.1 not found/);
  });
});

describe('the library call', () => {
  test("loadFiles into pinned host memory, and into the caller's own buffers (io_uring stages and delivers there)", async () => {
    const { loadFiles, loadPlanned, CallerSink, discover: disc } = await import('../../src/index.js');
    const paths = [0, 1, 2].map((i) => write(`lib/f${i}.bin`, 70_000 + i * 4096 + 5, i + 9));
    const r = await loadFiles([path.join(dir, 'lib')], { path: 'io_uring', verify: true });
    try {
      assert.equal(r.report.files, 3);
      assert.equal(r.report.verified, true);
      paths.forEach((p, i) => assert.ok(Buffer.from(r.view(i)).equals(fs.readFileSync(p))));
      assert.throws(() => r.deviceAddress(0), /for the gpu target/);
    } finally {
      r.close();
    }
    const { files, errors } = disc(paths);
    const mine = files.map((f) => new Uint8Array(f.size + 10).fill(0xee));
    const c = await loadPlanned(files, errors, { path: 'io_uring', sink: new CallerSink(files, mine), verify: true });
    assert.equal(c.report.files, 3);
    assert.equal(c.report.sink, "the caller's buffers");
    paths.forEach((p, i) => {
      assert.ok(Buffer.from(mine[i]!.subarray(0, files[i]!.size)).equals(fs.readFileSync(p)));
      assert.equal(mine[i]![files[i]!.size], 0xee, 'nothing written past the file');
    });
    assert.throws(() => new CallerSink(files, mine.slice(1)), /3 files need 3 buffers, got 2/);
  });
});
