/** `homi perf` with backends and `homi perf sweep`, through the real command line. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertUsageErrors, runHomi, type HomiRun } from '../cli/run.js';

const homi = (...args: string[]): HomiRun => runHomi(args, 120_000);

test('perf on a file with each kernel backend: --json keeps its fields and adds backend, threads, cpuNsPerIo', () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-io-cli-'));
  try {
    const img = `file:${join(dir, 'd.img')}?size=32MiB`;
    for (const extra of [
      ['--backend', 'posix'],
      ['--backend', 'posix', '--direct'],
      ['--backend', 'io_uring'],
      ['--backend', 'io_uring', '--direct', '--fixed-buffers'],
      ['--backend', 'io_uring', '--threads', '2'],
    ]) {
      // posix is synchronous: it runs at depth 1 (its default), and an explicit --qd above 1 is refused.
      const qd = extra[1] === 'posix' ? [] : ['--qd', '8'];
      const r = homi('perf', img, ...extra, '--rw', 'randrw', ...qd, '--ios', '2000', '--warmup', '0', '--verify', '--verify-span', '4MiB', '--json');
      assert.equal(r.code, 0, `${extra.join(' ')}: ${r.stderr}`);
      const j = JSON.parse(r.stdout);
      for (const k of ['iops', 'bandwidthMiBps', 'ios', 'errors', 'verified', 'cpuNsPerIo', 'processCpuNsPerIo', 'backend', 'threads', 'latencyUs', 'transport', 'model']) assert.ok(k in j, k);
      assert.equal(j.backend, extra[1]);
      assert.equal(j.threads, extra.includes('--threads') ? 2 : 1);
      assert.equal(j.qd, extra[1] === 'posix' ? 1 : 8);
      assert.equal(j.errors, 0);
      assert.equal(j.verifyErrors, 0);
      assert.ok(j.verified > 0);
      if (extra.includes('--direct')) assert.match(j.transport, /O_DIRECT/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('perf refuses what a backend cannot honour before the run: one line, exit 2', () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-io-cli-'));
  try {
    const img = `file:${join(dir, 'd.img')}?size=4MiB`;
    const cases: Array<[string[], RegExp]> = [
      [['perf', 'emu://?size=16MiB', '--backend', 'nope'], /--backend: 'nope' is not one of/],
      [['perf', 'emu://?size=16MiB', '--backend', 'io_uring'], /needs a file or device path/],
      [['perf', img, '--backend', 'driver'], /needs an emu:\/\/ or pci: URI/],
      [['perf', 'emu://?size=16MiB', '--direct'], /--direct \(O_DIRECT\) applies to the posix and io_uring backends/],
      [['perf', img, '--backend', 'posix', '--fixed-buffers'], /--fixed-buffers/],
      [['perf', img, '--backend', 'io_uring', '--hipri'], /--hipri needs --direct/],
      [['perf', img, '--backend', 'io_uring', '--direct', '--hipri', '--ios', '10'], /cannot do polled I\/O/],
      [['perf', 'pci:0000:01:00.0', '--threads', '2'], /--threads 2: the driver backend on a pci: URI .*PCIe queue memory cannot be handed/],
      [['perf', '/dev/ng0n1', '--ios', '10'], /\/dev\/ng0n1/],
      [['perf', join(dir, 'missing.img')], /does not exist; give a size/],
      [['perf', 'sweep', img, '--backends', 'posix,driver', '--qd', '1'], /needs an emu:\/\/ or pci: URI/],
    ];
    assertUsageErrors(homi, cases);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('perf --backend driver --threads 2 on emu://: each thread drives its own provisioned queue pairs, --verify on disjoint regions', () => {
  const r = homi('perf', 'emu://?size=32MiB', '--backend', 'driver', '--threads', '2', '--nqueues', '1', '--qd', '8', '--ios', '4000', '--verify', '--json');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.threads, 2);
  assert.equal(j.backend, 'driver');
  // --ios applies per thread, as for the kernel backends.
  assert.equal(j.ios, 8000);
  assert.equal(j.perThread.length, 2);
  for (const t of j.perThread) assert.equal(t.ios, 4000);
  assert.equal(j.errors, 0);
  assert.equal(j.verifyErrors, 0);
  assert.ok(j.verified > 0);
});

test('I/O errors during a run are counted with their errno, and the run completes', async () => {
  const { runPerf } = await import('../../src/bench/perf.js');
  const { truncateSync } = await import('node:fs');
  const dir = mkdtempSync(join(tmpdir(), 'homi-io-err-'));
  try {
    const path = join(dir, 'shrinks.img');
    for (const backend of ['posix', 'io_uring'] as const) {
      const r = await runPerf({
        uri: `file:${path}?size=8MiB`,
        backend,
        rw: 'randread',
        bs: 4096,
        qd: backend === 'posix' ? 1 : 4,
        nqueues: 1,
        timeSec: null,
        ios: 400,
        warmupSec: 0,
        rwmixread: 50,
        nsid: 1,
        verify: false,
        verifySpan: 1 << 20,
        seed: 1,
        // The file loses its second half after the device was opened: reads there come back short.
        beforeRun: () => truncateSync(path, 4 << 20),
      });
      assert.equal(r.ios, 400);
      assert.ok(r.errors > 0 && r.errors < 400, `${backend}: ${r.errors}`);
      assert.deepEqual(Object.keys(r.errorsByStatus), ['EIO (errno 5)']);
      truncateSync(path, 8 << 20);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('perf sweep writes results.json and a self-contained report.html and prints their paths', () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-io-sweep-'));
  try {
    const out = join(dir, 'out');
    const r = homi('perf', 'sweep', `file:${join(dir, 's.img')}?size=16MiB`, '--backends', 'io_uring', '--qd', '1,4', '--bs', '4096,16384', '--ios', '500', '--warmup', '0', '--out', out);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /results: .*results\.json/);
    assert.match(r.stdout, /report: .*report\.html/);
    const j = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    assert.equal(j.kind, 'homi-perf-sweep');
    assert.equal(j.points.length, 4);
    for (const p of j.points) {
      assert.ok(p.iops > 0, JSON.stringify(p));
      assert.equal(p.backend, 'io_uring');
    }
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.equal((html.match(/<svg /g) ?? []).length, 10, 'IOPS + bandwidth + latency vs qd for 2 sizes, IOPS + bandwidth vs bs for 2 depths');
    assert.doesNotMatch(html, /<script|src=|href=/);
    assert.ok(existsSync(out));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('perf sweep with stderr not a terminal: one progress line per point; a point the device cannot run is refused before any runs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-io-sweep-'));
  try {
    const r = homi('perf', 'sweep', 'emu://?size=16MiB&null=1', '--bs', '4096,8192', '--qd', '1,4', '--ios', '200', '--warmup', '0', '--out', join(dir, 'out'));
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stderr.includes('\r') && !r.stderr.includes('\x1b['), `no live line when stderr is a pipe: ${JSON.stringify(r.stderr)}`);
    const progress = r.stderr.trim().split('\n');
    assert.equal(progress.length, 4, r.stderr);
    assert.match(progress[0]!, /^\[1\/4\] driver bs 4 KiB qd 1: [\d.]+[kM]? IOPS, [\d.]+ MiB\/s, p50 [\d.]+ us, p99 [\d.]+ us, \d+ ns\/IO$/);
    assert.match(progress[1]!, /^\[2\/4\] driver bs 4 KiB qd 4: .* IOPS/);
    assert.match(progress[3]!, /^\[4\/4\] driver bs 8 KiB qd 4: .* IOPS/);
    const out = r.stdout.trim().split('\n');
    assert.equal(out[0], '4 points (all ok): driver x bs 4 KiB,8 KiB x qd 1,4');
    assert.match(out[1]!, /^results: /);
    // 1 MiB exceeds the embedded controller's maximum transfer size: refused before the first point runs.
    const big = homi('perf', 'sweep', 'emu://?size=16MiB&null=1', '--bs', '4096,1MiB', '--qd', '1,4', '--ios', '200', '--warmup', '0', '--out', join(dir, 'big'));
    assert.equal(big.code, 2, big.stderr);
    assert.match(big.stderr, /^homi: sweep point driver bs 1 MiB qd 1: --bs 1048576 exceeds the controller's maximum transfer size/);
    assert.equal(existsSync(join(dir, 'big')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a sweep point that fails while running is recorded, and the summary names it (runSweep without checkSweep)', async () => {
  const { runSweep, sweepSummary, sweepPointName } = await import('../../src/bench/sweep.js');
  const r = await runSweep({
    base: { uri: 'emu://?size=16MiB&null=1', rw: 'randread', nqueues: 1, timeSec: null, ios: 100, warmupSec: 0, rwmixread: 50, nsid: 1, verify: false, verifySpan: 1 << 20, seed: 1 },
    qds: [1],
    bss: [4096, 1 << 20],
    backends: ['driver'],
  });
  assert.deepEqual(
    r.points.map((p) => p.failure === undefined),
    [true, false],
  );
  const lines = sweepSummary(r);
  assert.equal(lines[0], '2 points (1 ok, 1 failed): driver x bs 4 KiB,1 MiB x qd 1');
  assert.match(lines[1]!, /^failed: driver bs 1 MiB qd 1: --bs 1048576 exceeds the controller's maximum transfer size/);
  assert.deepEqual(r.points.filter((p) => p.failure !== undefined).map(sweepPointName), ['driver bs 1 MiB qd 1']);
});
