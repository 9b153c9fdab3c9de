import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertUsageErrors, runHomi, type HomiRun } from './run.js';

const homi = (...args: string[]): HomiRun => runHomi(args, 60_000);

test('identify --json prints the documented object', () => {
  const r = homi('identify', 'emu://?size=64MiB&namespaces=2&lbads=9&model=Test%20Model&serial=SN42', '--json');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(typeof j.controller.vid, 'number');
  assert.equal(j.controller.model, 'Test Model');
  assert.equal(j.controller.serial, 'SN42');
  assert.equal(typeof j.controller.firmware, 'string');
  assert.ok(j.controller.maxQueuePairs >= 1);
  assert.deepEqual(
    j.namespaces.map((n: { nsid: number; blockSize: number; blocks: number }) => [n.nsid, n.blockSize, n.blocks]),
    [
      [1, 512, (64 << 20) / 512],
      [2, 512, (64 << 20) / 512],
    ],
  );
});

test('identify without --json prints a table', () => {
  const r = homi('identify', 'emu://?size=16MiB');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /nsid\s+block size\s+blocks\s+capacity/);
  assert.match(r.stdout, /1\s+4096\s+4096\s+16 MiB/);
});

test('perf --json with --verify on a memory namespace checks every read', () => {
  const r = homi('perf', 'emu://?size=32MiB', '--rw', 'randrw', '--bs', '8192', '--qd', '16', '--nqueues', '2', '--ios', '4000', '--warmup', '0', '--verify', '--json');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  for (const k of ['iops', 'bandwidthMiBps', 'ios', 'errors', 'verified', 'cpuNsPerIo', 'backend', 'threads']) assert.ok(k in j, k);
  for (const k of ['p50', 'p99', 'p999', 'max']) assert.equal(typeof j.latencyUs[k], 'number', k);
  assert.equal(j.ios, 4000);
  assert.equal(j.errors, 0);
  assert.equal(j.verifyErrors, 0);
  assert.ok(j.reads > 0 && j.writes > 0);
  assert.ok(j.verified > 0, 'some reads were checked');
  assert.equal(j.prefilledBlocks, (32 << 20) / 4096);
});

test('perf on a file-backed device writes the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-cli-'));
  try {
    const img = join(dir, 'disk.img');
    const r = homi('perf', `emu://${img}?size=8MiB`, '--rw', 'write', '--bs', '64k', '--qd', '4', '--ios', '128', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).writes, 128);
    assert.ok(statSync(img).size >= 8 << 20);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad input: one line naming the bad part, exit status 2', () => {
  const cases: Array<[string[], RegExp]> = [
    [['identify', 'emu://?size=lots'], /size: 'lots' is not a byte size/],
    [['identify', 'nvme://x'], /unknown scheme/],
    [['perf', 'emu://?size=16MiB', '--rw', 'sideways'], /--rw: 'sideways' is not one of/],
    [['perf', 'emu://?size=16MiB', '--bs', '100'], /--bs: 100 must be a positive multiple of 512/],
    [['perf', 'emu://?size=16MiB', '--qd', '0'], /--qd: .*out of range/],
    [['perf', 'emu://?size=16MiB', '--time', '1', '--ios', '5'], /cannot be combined/],
    [['perf', 'emu://?size=16MiB', '--nsid', '7', '--ios', '1'], /namespace 7 is not active/],
    [['perf', 'emu://?size=16MiB', '--bs', '1MiB', '--ios', '1'], /exceeds the controller's maximum transfer size/],
    [['frobnicate'], /unknown command 'frobnicate'/],
  ];
  assertUsageErrors(homi, cases);
});

test('extents --image decodes a real ext4 image made by mkfs.ext4 -d; the bytes at the extents are the file', async () => {
  const { writeFileSync, mkdirSync, openSync, readSync, closeSync } = await import('node:fs');
  const dir = mkdtempSync(join(tmpdir(), 'homi-cli-ext4-'));
  try {
    const src = join(dir, 'src');
    mkdirSync(join(src, 'a', 'b'), { recursive: true });
    const content = Buffer.alloc(300_000);
    for (let i = 0; i < content.length; i++) content[i] = (i * 7 + 3) & 0xff;
    writeFileSync(join(src, 'a', 'b', 'data.bin'), content);
    const img = join(dir, 'fs.img');
    const mk = spawnSync('mkfs.ext4', ['-q', '-F', '-d', src, '-b', '4096', img, '16M'], { encoding: 'utf8' });
    assert.equal(mk.status, 0, mk.stderr);
    const r = homi('extents', '--image', img, '--fs', 'ext4', '/a/b/data.bin', '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { path: string; size: number; extents: Array<{ logical: number; physical: number; length: number; flags: string[] }> };
    assert.equal(j.size, content.length);
    const fd = openSync(img, 'r');
    try {
      const back = Buffer.alloc(content.length);
      for (const e of j.extents) {
        const n = Math.min(e.length, content.length - e.logical);
        readSync(fd, back, e.logical, n, e.physical);
      }
      assert.ok(back.equals(content), 'bytes at the decoded extents equal the source file');
    } finally {
      closeSync(fd);
    }
    const bad = homi('extents', '--image', img, '--fs', 'ext4', '/a/missing');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr + bad.stdout, /missing/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
