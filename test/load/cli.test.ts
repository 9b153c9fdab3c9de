/**
 * `homi load` end to end: each path through the command line with --verify on the same files (posix and io_uring
 * on files of this machine's file system; driver, raw and mediated, through homid with extents from an ext4
 * image), the JSON line per path, the table naming what really read the files, and bad input: missing files, a
 * FIFO, an empty directory (per-argument errors, the rest loaded, exit 1), nothing loadable or a bad option (exit 2).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runHomi, runHomiAsync } from '../cli/run.js';
import { skipNoMkfs, startRig, type Rig } from '../client/homid-rig.js';
import type { LoadReport } from '../../src/load/runner.js';

/** One `homi load --json` line: the runner's report. */
type Report = LoadReport;

function reports(stdout: string): Report[] {
  return stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Report);
}

let dir = '';
let total = 0;
let count = 0;
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'homi-load-cli-'));
  const sizes = [0, 1, 4095, 4096, 110 * 1024, 1024 * 1024 + 123, 3 * 1024 * 1024 + 7];
  for (let i = 0; i < 40; i++) sizes.push(110 * 1024 + i * 511);
  sizes.forEach((n, i) => {
    const b = Buffer.alloc(n);
    for (let k = 0; k < n; k++) b[k] = (k * 13 + i * 101) & 0xff;
    fs.mkdirSync(path.join(dir, 'set', i % 2 ? 'odd' : 'even'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'set', i % 2 ? 'odd' : 'even', `f${i}.bin`), b);
    total += n;
  });
  count = sizes.length;
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('homi load on files', () => {
  test('posix and io_uring in one run: every file verified, one JSON line per path with the fields of the contract', () => {
    const r = runHomi(['load', path.join(dir, 'set'), '--path', 'io_uring,posix', '--verify', '--json', '--qd', '16'], 120_000);
    assert.equal(r.code, 0, r.stderr);
    const [u, p] = reports(r.stdout);
    for (const [rep, name] of [
      [u!, 'io_uring'],
      [p!, 'posix'],
    ] as const) {
      assert.equal(rep.path, name);
      assert.equal(rep.target, 'host');
      assert.equal(rep.files, count);
      assert.equal(rep.bytes, total);
      assert.equal(rep.verified, true);
      assert.deepEqual(rep.errors, []);
      assert.ok(rep.seconds > 0 && rep.mibPerSec > 0 && rep.filesPerSec > 0);
      assert.ok(rep.latency.p50 > 0 && rep.latency.p50 <= rep.latency.p99 && rep.latency.p99 <= rep.latency.max);
    }
    assert.match(u!.describe, /^io_uring, O_DIRECT, straight into the destination \(READ, no staging copy\), 16 in flight/);
    assert.match(u!.cache!, /O_DIRECT: the page cache is bypassed/);
    assert.match(p!.describe, /^pread .*buffered/);
    assert.match(p!.cache!, /^cold: the page cache of \d+ file\(s\) was dropped/);
  });

  test('the table names the path that read, where the bytes went, and the cache; progress lines go to stderr', () => {
    const r = runHomi(['load', path.join(dir, 'set/odd/*.bin'), '--path', 'io_uring', '--verify', '--interval', '0.05'], 120_000);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /path\s+to\s+files\s+MiB\s+seconds\s+files\/s\s+MiB\/s\s+p50 ms\s+p99 ms\s+max ms\s+errors/);
    assert.match(r.stdout, /io_uring: read by io_uring, O_DIRECT/);
    assert.match(r.stdout, /into host memory, (pinned|pageable)/);
    assert.match(r.stdout, /verified: all \d+ loaded file\(s\) equal a normal read/);
    assert.match(r.stderr, /homi load io_uring [\d.]+ s: \d+\/\d+ files/);
  });

  test('a missing file, a FIFO and an empty directory are reported one by one, the rest is loaded, exit 1', () => {
    const fifo = path.join(dir, 'pipe');
    execFileSync('mkfifo', [fifo]);
    fs.mkdirSync(path.join(dir, 'nothing'));
    const r = runHomi(['load', path.join(dir, 'set/even'), path.join(dir, 'missing.bin'), fifo, path.join(dir, 'nothing'), '--path', 'posix', '--verify', '--json'], 120_000);
    assert.equal(r.code, 1, r.stderr);
    const [rep] = reports(r.stdout);
    assert.equal(rep!.files, Math.ceil(count / 2));
    assert.equal(rep!.verified, true);
    assert.deepEqual(
      rep!.errors.map((e) => [path.basename(e.path), e.reason]),
      [
        ['missing.bin', 'no such file or directory'],
        ['pipe', 'a FIFO, not a regular file'],
        ['nothing', 'the directory holds no regular file'],
      ],
    );
  });

  test('nothing loadable, an unknown path, a bad target and a bad chunk are usage errors (exit 2, one line)', () => {
    for (const [args, re] of [
      [['load', path.join(dir, 'missing.bin')], /nothing to load/],
      [['load', path.join(dir, 'set'), '--path', 'nvme'], /--path nvme: not a read path/],
      [['load', path.join(dir, 'set'), '--to', 'tpu'], /--to tpu: host or gpu/],
      [['load', path.join(dir, 'set'), '--chunk', '1000'], /--chunk 1000: a multiple of 4 KiB/],
      [['load', path.join(dir, 'set'), '--path', 'gpu'], /--path gpu reads through homid: name its device \(--device\)/],
    ] as const) {
      const r = runHomi([...args], 60_000);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
    }
  });

  test(
    '--to gpu without a CUDA driver is one clear line, exit 2',
    { skip: fs.existsSync('/dev/nvidiactl') ? 'this machine has an NVIDIA driver (the GPU suite loads into GPU memory)' : false },
    () => {
      const r = runHomi(['load', path.join(dir, 'set'), '--to', 'gpu'], 60_000);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^homi: no CUDA driver: libcuda\.so\.1 not found/);
    },
  );
});

describe('homi load --path driver through homid', { skip: skipNoMkfs }, () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => rig?.close());

  for (const mode of ['raw', 'mediated'] as const) {
    test(`${mode}: every file of the image's tree loads and verifies; the report names the lease`, async () => {
      const r = await runHomiAsync(['load', rig.tree, '--path', 'driver', '--mode', mode, '--socket', rig.sock, '--device', rig.device, '--verify', '--json'], 120_000);
      assert.equal(r.code, 0, r.stderr);
      const [rep] = reports(r.stdout);
      assert.equal(rep!.files, rig.names.length);
      assert.equal(rep!.verified, true);
      assert.deepEqual(rep!.errors, []);
      assert.match(rep!.describe, new RegExp(`^user-space driver via homid \\(${mode} queue pair \\d+ on img, extents decoder:ext4[,)]`));
      assert.match(rep!.cache!, /the host page cache is not in the path/);
    });
  }
});
