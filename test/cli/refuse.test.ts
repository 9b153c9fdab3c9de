/**
 * Issue 16, "refuse nonsense up front": options the chosen mode or backend would ignore, --verify where nothing
 * can be verified, missing devices, repeated URI keys, sweep grids with points the device cannot run. Each is
 * refused before anything runs: exit 2, one line that says why.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { assertUsageErrors, runHomi, type HomiRun } from './run.js';

const homi = (...args: string[]): HomiRun => runHomi(args, 60_000);
const scratch = mkdtempSync(join(tmpdir(), 'homi-refuse-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const IMG = `file:${join(scratch, 'f.img')}?size=16MiB`;

test('a missing device under /dev is said not to exist; no file under /dev is suggested or created', () => {
  assertUsageErrors(homi, [
    [['perf', '/dev/nvme9n9'], /^homi: '\/dev\/nvme9n9' does not exist: no such device on this machine/],
    [['perf', 'file:/dev/homi-test-missing?size=1GiB', '--backend', 'posix'], /'\/dev\/homi-test-missing' does not exist: no such device/],
  ]);
  const r = homi('perf', '/dev/nvme9n9');
  assert.doesNotMatch(r.stderr, /file:|give a size/);
  assert.equal(existsSync('/dev/homi-test-missing'), false);
});

test('--verify on a null namespace is refused with the reason, on the CPU and the GPU paths (before any GPU is touched)', () => {
  assertUsageErrors(homi, [
    [['perf', 'emu://?size=64MiB&null=1', '--verify'], /--verify: 'emu:\/\/\?size=64MiB&null=1' is a null namespace .*keeps no data/],
    [['perf', 'emu://?size=64MiB&null=1', '--verify', '--threads', '2'], /is a null namespace/],
    [['perf', 'sweep', 'emu://?size=64MiB&null=1', '--verify', '--qd', '1'], /is a null namespace/],
    [['perf', 'emu://?size=64MiB&null=1', '--initiator', 'gpu', '--verify'], /--verify: 'emu:\/\/\?size=64MiB&null=1' is a null namespace/],
    [['perf', 'gpuctl://?null=1', '--initiator', 'gpu', '--verify'], /is a null namespace.*null=0 gives a namespace in GPU memory/],
    [['perf', 'gpuctl://', '--initiator', 'gpu', '--verify'], /'gpuctl:\/\/' is a null namespace/],
    [['perf', 'sweep', 'gpuctl://?size=1GiB', '--initiator', 'gpu', '--verify', '--qd', '32'], /is a null namespace/],
  ]);
});

test('options the mode, backend or initiator would ignore are refused when given, never at their defaults', () => {
  const img = IMG;
  assertUsageErrors(homi, [
    [['perf', 'emu://?size=64MiB', '--rwmixread', '30'], /--rwmixread would be ignored: .*--rw randread only reads/],
    [['perf', 'emu://?size=64MiB', '--rw', 'write', '--rwmixread', '30'], /--rw write only writes/],
    [['perf', 'emu://?size=64MiB', '--verify-span', '1MiB'], /--verify-span would be ignored: .*add --verify/],
    [['perf', 'emu://?size=64MiB', '--rw', 'read', '--seed', '7'], /--seed would be ignored: .*--rw read is sequential/],
    [['perf', img, '--backend', 'posix', '--qd', '32'], /--qd 32: the posix backend is synchronous/],
    [['perf', img, '--backend', 'posix', '--nqueues', '2'], /--nqueues 2: the posix backend is synchronous.*--threads 2/],
    [['perf', img, '--backend', 'io_uring', '--direct', '--hipri', '--rw', 'read', '--seed', '2'], /--seed would be ignored/],
    [['perf', 'emu://?size=64MiB', '--direct'], /--direct \(O_DIRECT\) applies to the posix and io_uring backends/],
    [['perf', 'emu://?size=64MiB', '--hipri'], /--hipri .*the driver always polls/],
    [['perf', img, '--backend', 'posix', '--fixed-buffers'], /--fixed-buffers .* not posix/],
    ...(['--mode ticket', '--placement device', '--gpu 1', '--entries 128', '--block-threads 64', '--gpu-timeout-ms 100'].map((o) => [
      ['perf', 'emu://?size=64MiB', ...o.split(' ')],
      new RegExp(`${o.split(' ')[0]} would be ignored: it applies to --initiator gpu`),
    ]) as Array<[string[], RegExp]>),
    [['perf', 'sweep', 'emu://?size=64MiB', '--qd', '1', '--mode', 'ticket'], /--mode would be ignored/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--warmup', '1'], /--warmup would be ignored: a GPU run has no warm-up/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--direct'], /--direct would be ignored: GPU threads drive the NVMe queues themselves/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--fixed-buffers'], /--fixed-buffers would be ignored/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--hipri'], /--hipri would be ignored/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--block-threads', '64'], /--block-threads would be ignored: .*--mode ticket/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--rwmixread', '10'], /--rwmixread would be ignored/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--verify-span', '1MiB'], /--verify-span would be ignored/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--rw', 'read', '--seed', '2'], /--seed would be ignored/],
    [['perf', 'gpuctl://?null=1', '--initiator', 'gpu', '--placement', 'host'], /--placement would be ignored: .*GPU memory only/],
    [['perf', 'gpuctl://?null=1', '--initiator', 'gpu', '--nsid', '2'], /--nsid 2: .* has one namespace/],
    [['perf', 'homid:nvme0', '--initiator', 'gpu', '--placement', 'device'], /homid: GPU leases carry payloads in host memory/],
    [['perf', 'sweep', 'emu://?size=64MiB', '--initiator', 'gpu', '--backends', 'driver'], /--backends would be ignored/],
    [['perf', 'emu://?size=64MiB', '--invalidate', '0'], /--invalidate would be ignored: .*page cache .*the driver backend bypasses it/],
    [['perf', 'sweep', 'emu://?size=64MiB', '--fadvise_hint', '0', '--qd', '1'], /--fadvise_hint would be ignored/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--percentiles', '50,90'], /--percentiles would be ignored/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--size', '1MiB'], /--size would be ignored/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--offset', '4096'], /--offset would be ignored/],
    // fio's names count as given too
    [['perf', img, '--backend', 'posix', '--iodepth', '8'], /--qd 8: the posix backend is synchronous/],
    [['perf', 'emu://?size=64MiB', '--initiator', 'gpu', '--ramp_time', '1'], /--warmup would be ignored/],
  ]);
});

test('what the options mean at their defaults, or where they take effect, runs', () => {
  // --rwmixread with a mixed mode, --seed with a random one, --verify-span with --verify: each takes effect.
  const r = homi('perf', 'emu://?size=64MiB', '--rw', 'randrw', '--rwmixread', '30', '--seed', '5', '--verify', '--verify-span', '8MiB', '--ios', '2000', '--warmup', '0', '--json');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.verifyErrors, 0);
  assert.equal(j.prefilledBlocks, (8 << 20) / 4096);
  // posix at its default depth runs at depth 1.
  const p = homi('perf', IMG, '--backend', 'posix', '--ios', '500', '--warmup', '0', '--json');
  assert.equal(p.code, 0, p.stderr);
  assert.equal(JSON.parse(p.stdout).qd, 1);
});

test('a sweep grid with a point the device cannot run is refused before anything runs (no output directory)', () => {
  const out = join(mkdtempSync(join(tmpdir(), 'homi-refuse-sweep-')), 'out');
  try {
    const img = `file:${join(dirname(out), 's.img')}?size=16MiB`;
    // (a GPU sweep has no warm-up to set)
    const sweep = (...args: string[]): string[] => ['perf', 'sweep', ...args, '--ios', '100', ...(args.includes('gpu') ? [] : ['--warmup', '0']), '--out', out];
    assertUsageErrors(homi, [
      [sweep('emu://?size=64MiB', '--qd', '1,2048'), /sweep point driver bs 4 KiB qd 2048: --qd 2048 needs 2049 queue entries; the controller allows 1024/],
      [sweep('emu://?size=64MiB', '--bs', '4096,256k', '--qd', '1'), /sweep point driver bs 256 KiB qd 1: --bs 262144 exceeds the controller's maximum transfer size of 131072 bytes/],
      [sweep('emu://?size=64MiB&lbads=12', '--bs', '512,4096', '--qd', '1'), /sweep point driver bs 512 B qd 1: --bs 512 is not a multiple of the 4096-byte block size/],
      [sweep(img, '--backends', 'io_uring,posix', '--qd', '1,4'), /sweep point posix bs 4 KiB qd 4: the posix backend is synchronous.*leave --qd out/],
      [sweep(img, '--backends', 'io_uring,driver', '--qd', '1'), /the driver backend .* needs an emu:\/\/ or pci: URI/],
      [
        sweep('emu://?size=64MiB', '--qd', '1,8', '--verify', '--verify-span', '32KiB'),
        /sweep point driver bs 4 KiB qd 8: --verify needs at least 16 distinct 4096-byte units in its span; have 8 \(raise --verify-span\)/,
      ],
      // with threads, each verifies its own region: 2 x 16 blocks of this 128 KiB namespace
      [sweep('emu://?size=128KiB', '--qd', '1,16', '--threads', '2', '--verify'), /sweep point driver bs 4 KiB qd 16: --verify needs at least 32 distinct 4096-byte units in its span; have 16/],
      [sweep('emu://?size=64MiB&queues=4', '--qd', '1', '--threads', '3', '--nqueues', '2'), /--threads 3 --nqueues 2: needs 6 I\/O queue pairs; the controller grants only 4/],
      [sweep('emu://?size=64MiB', '--initiator', 'gpu', '--mode', 'ticket', '--qd', '32,48'), /sweep point 4 KiB 1 q x qd 48: ticket mode: --qd 48 must be below 32 or a multiple of 32/],
      [sweep('emu://?size=64MiB', '--initiator', 'gpu', '--bs', '4096,256k', '--qd', '32'), /sweep point 256 KiB 1 q x qd 32: --bs 262144 exceeds the controller's maximum transfer size/],
      [sweep('emu://?size=64MiB', '--initiator', 'gpu', '--nqueues', '1,65', '--qd', '32'), /sweep point 4 KiB 65 q x qd 32: --nqueues 65: the controller offers 64 I\/O queue pairs/],
    ]);
    assert.equal(existsSync(out), false, 'nothing ran, nothing was written');
  } finally {
    rmSync(dirname(out), { recursive: true, force: true });
  }
});

test('a sweep with posix and --qd left out runs posix at depth 1 beside the deeper backends', () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-refuse-sweep-'));
  try {
    const out = join(dir, 'out');
    const r = homi('perf', 'sweep', `file:${join(dir, 's.img')}?size=16MiB`, '--backends', 'posix,io_uring', '--ios', '200', '--warmup', '0', '--out', out, '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { points: Array<{ backend: string; qd: number; iops: number }> };
    assert.deepEqual(
      j.points.filter((p) => p.backend === 'posix').map((p) => p.qd),
      [1],
    );
    assert.deepEqual(
      j.points.filter((p) => p.backend === 'io_uring').map((p) => p.qd),
      [1, 2, 4, 8, 16, 32, 64, 128],
    );
    for (const p of j.points) assert.ok(p.iops > 0, JSON.stringify(p));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a repeated or unknown URI key is refused, whichever scheme', () => {
  assertUsageErrors(homi, [
    [['identify', 'emu://?size=16MiB&size=32MiB'], /invalid device URI 'emu:\/\/\?size=16MiB&size=32MiB': parameter 'size' is given more than once/],
    [['identify', 'pci:0000:01:00.0?mode=vfio&mode=uio'], /parameter 'mode' is given more than once/],
    [['perf', 'file:/tmp/homi-refuse-dup.img?size=1MiB&size=2MiB'], /parameter 'size' is given more than once/],
    [['perf', 'gpuctl://?null=0&null=1', '--initiator', 'gpu'], /gpuctl:\/\/: parameter 'null' is given more than once/],
    [['perf', 'gpuctl://?nul=0', '--initiator', 'gpu'], /gpuctl:\/\/: unknown parameter 'nul'/],
    [['perf', 'homid:nvme0?socket=/a&socket=/b', '--initiator', 'gpu'], /homid: URI: parameter 'socket' is given more than once/],
    [['perf', 'homid:nvme0?sock=/a', '--initiator', 'gpu'], /homid: URI: unknown parameter 'sock' \(known: socket\)/],
  ]);
});

test('identify of 64 namespaces of 1 TiB each (memory, sparse) answers within seconds', () => {
  const t0 = performance.now();
  const r = runHomi(['identify', 'emu://?size=1TiB&namespaces=64', '--json'], 30_000);
  const ms = performance.now() - t0;
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { namespaces: Array<{ blocks: number; blockSize: number }> };
  assert.equal(j.namespaces.length, 64);
  for (const n of j.namespaces) assert.equal(n.blocks * n.blockSize, 2 ** 40);
  assert.ok(ms < 5000, `identify took ${Math.round(ms)} ms`);
});
