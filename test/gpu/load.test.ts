/**
 * `homi load` into GPU memory on a real GPU (the GPU machine; skipped with the reason elsewhere). Files of an ext4
 * image served by homid (an embedded controller over the image, extents decoded from it) are loaded by the gpu
 * path (GPU threads submit the reads and copy the bytes) into GPU memory and into pinned host memory, and the same
 * files on this machine's own file system by the CPU paths into GPU memory through the copy engine; every file is
 * read back from where it landed and compared with a normal read (--verify), and the CLI prints the same.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { configFromObject } from '../../src/daemon/config.js';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import { cudaDriverPresent } from '../../src/gpu/device.js';
import { loadFiles, type LoadPath, type LoadTarget } from '../../src/load/index.js';
import { haveTool, mkExt4, tmpDir } from '../extents/fixtures.js';

const NO_DRIVER = cudaDriverPresent() ? false : 'no CUDA driver: libcuda.so.1 not found';
const SKIP = NO_DRIVER || (!haveTool('mkfs.ext4') && 'no mkfs.ext4 (e2fsprogs) to build the image homid serves') || false;
const root = fileURLToPath(new URL('../../../', import.meta.url));
const KiB = 1024;
const MiB = 1024 * KiB;

/** The tree: edge sizes, 64 FIL-like small files, two medium ones. */
const SIZES: Record<string, number> = { 'empty.bin': 0, 'one.bin': 1, 'page-1.bin': 4095, 'big.bin': MiB + 123, 'm0.bin': 7.5 * MiB, 'm1.bin': 7 * MiB + 4097 };
for (let i = 0; i < 64; i++) SIZES[`small/s${String(i).padStart(3, '0')}.bin`] = 110 * KiB + i * 37;

/** Deterministic bytes (a 32-bit LCG, one byte per step). */
function fill(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

describe('homi load into GPU memory', { skip: SKIP }, () => {
  let dir = '';
  let tree = '';
  let srv: HomidServer;
  let sock = '';
  const total = Object.keys(SIZES).length;
  before(async () => {
    dir = tmpDir('homi-gpu-load-');
    tree = path.join(dir, 'tree');
    let seed = 1;
    for (const [rel, n] of Object.entries(SIZES)) {
      fs.mkdirSync(path.dirname(path.join(tree, rel)), { recursive: true });
      fs.writeFileSync(path.join(tree, rel), fill(n, seed++));
    }
    const image = path.join(dir, 'fs.img');
    mkExt4(image, tree, 64);
    sock = path.join(dir, 'homid.sock');
    srv = await startHomidServer(
      configFromObject(
        {
          socket: sock,
          device: [{ name: 'img', uri: `emu://${image}?size=64MiB&queues=16`, extents: 'decoder:ext4', extent_root: tree }],
          raw: { users: [process.getuid!()] },
          class: { default: { queue_pairs: 12, per_client: 12, gpu_queues: 8 } },
        },
        'test',
      ),
      {},
    );
  });
  after(async () => {
    await srv?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const cases: [LoadPath, LoadTarget][] = [
    ['gpu', 'gpu'],
    ['gpu', 'host'],
    ['io_uring', 'gpu'],
    ['posix', 'gpu'],
    ['driver', 'gpu'],
  ];
  for (const [p, to] of cases) {
    test(`--path ${p} --to ${to}: every file lands and equals a normal read`, { timeout: 120_000 }, async () => {
      const r = await loadFiles([tree], { path: p, to, verify: true, device: 'img', socket: sock });
      try {
        assert.deepEqual(r.report.errors, []);
        assert.equal(r.report.files, total);
        assert.equal(
          r.report.bytes,
          Object.values(SIZES).reduce((s, n) => s + n, 0),
        );
        assert.equal(r.report.verified, true);
        assert.equal(r.report.target, to);
        if (p === 'gpu') assert.match(r.report.describe, /GPU-initiated \(homi_list_io/);
        if (to === 'gpu') assert.match(r.report.sink, /GPU memory on/);
        process.stdout.write(
          `# ${p}->${to}: ${r.report.files} files ${(r.report.bytes / MiB).toFixed(1)} MiB in ${r.report.seconds.toFixed(3)} s (${r.report.mibPerSec.toFixed(0)} MiB/s, p50 ${r.report.latency.p50.toFixed(3)} ms) | ${r.report.describe} | ${r.report.sink}\n`,
        );
      } finally {
        r.close();
      }
    });
  }

  test('the CLI: homi load --path gpu --to gpu --verify --json prints one report and exits 0', { timeout: 120_000 }, async () => {
    // asynchronously: homid runs in this process and must keep serving while the command runs
    const out = await promisify(execFile)(
      process.execPath,
      [path.join(root, 'dist/src/cli/main.js'), 'load', tree, '--path', 'gpu', '--to', 'gpu', '--device', 'img', '--socket', sock, '--verify', '--json'],
      {
        encoding: 'utf8',
        timeout: 110_000,
      },
    );
    const j = JSON.parse(out.stdout.trim()) as { files: number; verified: boolean; path: string; target: string; setupSeconds: number; errors: unknown[] };
    assert.deepEqual(j.errors, []);
    assert.equal(j.files, total);
    assert.equal(j.verified, true);
    assert.equal(j.path, 'gpu');
    assert.equal(j.target, 'gpu');
    assert.ok(j.setupSeconds > 0, 'the GPU queue pairs were set up before the clock');
  });
});
