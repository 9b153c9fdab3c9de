/**
 * `homi perf` on a file starts from a cold page cache, as fio does (invalidate=1), unless --invalidate 0: the
 * file's pages are counted with mincore(2) on a mapping of it (src/sys/mman.ts) at the moment the measured run
 * starts (the beforeRun hook), after an earlier run and a full read have left every page resident.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runPerf, BUFFERED_NOTE, type PerfOptions } from '../../src/bench/perf.js';
import { residentPages } from '../../src/sys/mman.js';

const SIZE = 8 << 20;
const TMPFS_MAGIC = 0x01021994;

function resident(path: string): { resident: number; pages: number } {
  const fd = openSync(path, 'r');
  try {
    return residentPages(fd, SIZE);
  } finally {
    closeSync(fd);
  }
}

function opts(path: string, extra: Partial<PerfOptions>): PerfOptions {
  // posix is synchronous: a depth above 1 is refused
  return {
    uri: path,
    rw: 'randread',
    bs: 4096,
    qd: extra.backend === 'posix' ? 1 : 4,
    nqueues: 1,
    timeSec: null,
    ios: 200,
    warmupSec: 0,
    rwmixread: 50,
    nsid: 1,
    verify: false,
    verifySpan: 1 << 20,
    seed: 1,
    ...extra,
  };
}

const dir = mkdtempSync(join(tmpdir(), 'homi-pagecache-'));
const onTmpfs = statfsSync(dir).type === TMPFS_MAGIC;

test(
  'a file run drops the page cache before it starts; --invalidate 0 keeps it; buffered runs say so',
  { skip: onTmpfs ? `${dir} is on tmpfs: its page cache cannot be dropped` : false },
  async () => {
    try {
      const path = join(dir, 'warm.img');
      writeFileSync(path, Buffer.alloc(SIZE, 0x5a));
      for (const backend of ['posix', 'io_uring'] as const) {
        for (const invalidate of [true, false]) {
          // A first run, then a full read: every page of the file is in the page cache.
          await runPerf(opts(path, { backend, invalidate: false }));
          readFileSync(path);
          const warm = resident(path);
          assert.equal(warm.resident, warm.pages, `${backend}: warm before the run`);
          let atStart = { resident: -1, pages: 0 };
          const r = await runPerf(opts(path, { backend, invalidate, beforeRun: () => void (atStart = resident(path)) }));
          assert.equal(r.errors, 0);
          if (invalidate) {
            assert.equal(atStart.resident, 0, `${backend}: ${atStart.resident} of ${atStart.pages} pages still cached when the run started`);
            assert.equal(r.invalidated, true);
            assert.ok(r.notes.some((n) => /page cache of the target dropped before the run/.test(n)));
          } else {
            assert.equal(atStart.resident, atStart.pages, `${backend}: --invalidate 0 keeps every page`);
            assert.equal(r.invalidated, false);
            assert.ok(r.notes.some((n) => /page cache kept \(--invalidate 0\)/.test(n)));
          }
          assert.equal(r.buffered, true);
          assert.ok(r.notes.includes(BUFFERED_NOTE), JSON.stringify(r.notes));
          assert.equal(r.options.invalidate, invalidate);
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test('an O_DIRECT file run is not labelled buffered, and is invalidated too; the --verify prefill leaves nothing cached', { skip: onTmpfs ? 'tmpfs' : false }, async () => {
  const d = mkdtempSync(join(tmpdir(), 'homi-pagecache-'));
  try {
    const path = join(d, 'direct.img');
    writeFileSync(path, Buffer.alloc(SIZE, 1));
    readFileSync(path);
    const direct = await runPerf(opts(path, { backend: 'io_uring', direct: true }));
    assert.equal(direct.buffered, false);
    assert.equal(direct.invalidated, true);
    assert.ok(!direct.notes.includes(BUFFERED_NOTE));
    // Buffered --verify: the prefill writes 1 MiB through the page cache; it is dropped again before the reads.
    let atStart = { resident: -1, pages: 0 };
    const r = await runPerf(opts(path, { backend: 'posix', rw: 'read', verify: true, ios: 1, beforeRun: () => void (atStart = resident(path)) }));
    assert.equal(atStart.resident, 0);
    assert.equal(r.prefilledBlocks, (1 << 20) / 512);
    assert.equal(r.verifyErrors, 0);
    const after = resident(path);
    assert.ok(after.resident <= 64, `${after.resident} pages cached after one 4 KiB read: the prefill was dropped`);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test("random runs tell the kernel (fio's fadvise_hint): after invalidation, n random 4 KiB reads leave at most n pages cached", { skip: onTmpfs ? 'tmpfs' : false }, async () => {
  const d = mkdtempSync(join(tmpdir(), 'homi-pagecache-'));
  try {
    const path = join(d, 'random.img');
    writeFileSync(path, Buffer.alloc(SIZE, 2));
    const reads = 100;
    for (const backend of ['posix', 'io_uring'] as const) {
      const r = await runPerf(opts(path, { backend, qd: 1, ios: reads }));
      const after = resident(path);
      assert.ok(after.resident > 0 && after.resident <= reads, `${backend}: ${after.resident} pages cached after ${reads} random reads (readahead?)`);
      assert.ok(
        r.notes.some((n) => /POSIX_FADV_RANDOM, no readahead/.test(n)),
        JSON.stringify(r.notes),
      );
      const off = await runPerf(opts(path, { backend, qd: 1, ios: reads, fadviseHint: false }));
      assert.equal(off.options.fadviseHint, false);
      assert.ok(!off.notes.some((n) => /POSIX_FADV/.test(n)));
    }
    const seq = await runPerf(opts(path, { backend: 'posix', rw: 'read' }));
    assert.ok(
      seq.notes.some((n) => /POSIX_FADV_SEQUENTIAL/.test(n)),
      JSON.stringify(seq.notes),
    );
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

/** A loop device over `file` (root and losetup needed), or the reason there is none. */
function loopDevice(file: string): { dev: string } | { skip: string } {
  if (process.getuid?.() !== 0) return { skip: 'needs root for a loop device' };
  const r = spawnSync('losetup', ['-f', '--show', file], { encoding: 'utf8' });
  if (r.status !== 0) return { skip: `no loop device: ${(r.stderr || String(r.error)).trim()}` };
  return { dev: r.stdout.trim() };
}

test('a block device is dropped from the page cache too (a loop device; its cache lives while a descriptor holds it open)', async (t) => {
  const d = mkdtempSync(join(tmpdir(), 'homi-pagecache-'));
  const file = join(d, 'backing.img');
  writeFileSync(file, Buffer.alloc(SIZE, 4));
  const loop = loopDevice(file);
  try {
    if ('skip' in loop) {
      t.skip(loop.skip);
      return;
    }
    // The kernel drops a block device's page cache when its last descriptor closes: hold one for the whole test.
    const hold = openSync(loop.dev, 'r');
    try {
      for (const invalidate of [true, false]) {
        readSync(hold, Buffer.alloc(SIZE), 0, SIZE, 0);
        assert.equal(residentPages(hold, SIZE).resident, SIZE / 4096, 'warm');
        let atStart = -1;
        const r = await runPerf(opts(loop.dev, { invalidate, beforeRun: () => void (atStart = residentPages(hold, SIZE).resident) }));
        assert.match(r.model, /^block device /);
        assert.equal(atStart, invalidate ? 0 : SIZE / 4096, `invalidate ${invalidate}`);
        assert.ok(r.notes.includes(BUFFERED_NOTE));
      }
    } finally {
      closeSync(hold);
    }
  } finally {
    if ('dev' in loop) spawnSync('losetup', ['-d', loop.dev]);
    rmSync(d, { recursive: true, force: true });
  }
});

test('emu:// runs are neither buffered nor invalidated', async () => {
  const r = await runPerf(opts('emu://?size=16MiB&null=1', {}));
  assert.equal(r.buffered, false);
  assert.equal(r.invalidated, false);
  assert.deepEqual(r.notes, []);
});
