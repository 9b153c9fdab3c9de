/** `homi perf`'s figures, through the real command line: percentiles within [min, max], reads and writes apart, --percentiles, the run's metadata, fio's option names. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertUsageErrors, runHomi, type HomiRun } from './run.js';

const homi = (...args: string[]): HomiRun => runHomi(args, 120_000);
const PKG = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

interface Latency {
  min: number;
  max: number;
  mean: number;
  stddev: number;
  p50: number;
  p99: number;
  p999: number;
  percentiles: Record<string, number>;
}
interface FioNs {
  min: number;
  max: number;
  mean: number;
  stddev: number;
  N: number;
  percentile: Record<string, number>;
}
interface Direction {
  ios: number;
  iops: number;
  bw: number;
  bw_bytes: number;
  io_bytes: number;
  total_ios: number;
  latencyUs: Latency;
  clat_ns: FioNs;
  lat_ns: FioNs;
}

function perfJson(...args: string[]): Record<string, unknown> & { read: Direction; write: Direction; latencyUs: Latency } {
  const r = homi('perf', ...args);
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Every percentile of a summary lies in [min, max], min <= mean <= max, and the list is the one asked for. */
function checkLatency(what: string, l: Latency, asked: number[]): void {
  assert.ok(l.min > 0 && l.min <= l.max, `${what}: min ${l.min} max ${l.max}`);
  assert.ok(l.mean >= l.min && l.mean <= l.max, `${what}: mean ${l.mean}`);
  assert.ok(l.stddev >= 0, `${what}: stddev ${l.stddev}`);
  assert.deepEqual(
    Object.keys(l.percentiles),
    asked.map((p) => `p${p}`),
    what,
  );
  const all = [l.p50, l.p99, l.p999, ...Object.values(l.percentiles)];
  for (const v of all) assert.ok(v >= l.min && v <= l.max, `${what}: ${v} outside [${l.min}, ${l.max}]`);
  const ps = Object.values(l.percentiles);
  for (let i = 1; i < ps.length; i++) assert.ok(ps[i]! >= ps[i - 1]!, `${what}: percentiles in order`);
}

/** fio's view of a direction: the same figures in ns, counts that match, bw in KiB/s. */
function checkFio(what: string, d: Direction, asked: number[], elapsedSec: number, bs: number): void {
  assert.equal(d.clat_ns.N, d.ios, `${what}: one latency per I/O`);
  assert.equal(d.total_ios, d.ios);
  assert.equal(d.io_bytes, d.ios * bs);
  assert.deepEqual(d.clat_ns, d.lat_ns);
  assert.deepEqual(
    Object.keys(d.clat_ns.percentile),
    asked.map((p) => p.toFixed(6)),
  );
  for (const v of Object.values(d.clat_ns.percentile)) assert.ok(v >= d.clat_ns.min && v <= d.clat_ns.max, `${what}: ${v} ns outside [min, max]`);
  assert.equal(d.clat_ns.min / 1000, d.latencyUs.min);
  assert.equal(d.clat_ns.max / 1000, d.latencyUs.max);
  assert.ok(Math.abs(d.iops - d.ios / elapsedSec) < 1e-6 * d.iops + 1e-9);
  assert.ok(Math.abs(d.bw - (d.ios * bs) / elapsedSec / 1024) <= 0.5 + 1e-9, `${what}: bw ${d.bw} KiB/s`);
}

const ASKED = [1, 50, 90, 99, 99.9, 99.99, 100];

test('perf --json: percentiles within [min, max], reads and writes apart and adding up, on emu null mode and on a file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-figures-'));
  try {
    for (const [uri, extra] of [
      ['emu://?size=64MiB&null=1', ['--qd', '8']],
      // posix is synchronous: it runs at depth 1
      [`file:${join(dir, 'f.img')}?size=16MiB`, ['--backend', 'posix']],
    ] as const) {
      const j = perfJson(uri, ...extra, '--rw', 'randrw', '--rwmixread', '70', '--ios', '6000', '--warmup', '0', '--percentiles', ASKED.join(','), '--json');
      const ios = j['ios'] as number;
      assert.equal(ios, 6000);
      assert.equal(j.read.ios + j.write.ios, ios, 'reads and writes add up to every I/O');
      assert.equal(j.read.ios, j['reads']);
      assert.equal(j.write.ios, j['writes']);
      assert.ok(j.read.ios > j.write.ios && j.write.ios > 0, `70% reads: ${j.read.ios} / ${j.write.ios}`);
      assert.ok(Math.abs(j.read.iops + j.write.iops - (j['iops'] as number)) < 1e-6 * (j['iops'] as number));
      checkLatency(`${uri} all`, j.latencyUs, ASKED);
      checkLatency(`${uri} read`, j.read.latencyUs, ASKED);
      checkLatency(`${uri} write`, j.write.latencyUs, ASKED);
      assert.equal(j.latencyUs.min, Math.min(j.read.latencyUs.min, j.write.latencyUs.min));
      assert.equal(j.latencyUs.max, Math.max(j.read.latencyUs.max, j.write.latencyUs.max));
      assert.equal(j.latencyUs.percentiles['p100'], j.latencyUs.max, 'p100 is the maximum itself');
      checkFio(`${uri} read`, j.read, ASKED, j['elapsedSec'] as number, 4096);
      checkFio(`${uri} write`, j.write, ASKED, j['elapsedSec'] as number, 4096);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('perf --json carries the version, a timestamp, the device and every option used; a one-direction run has an empty other direction', () => {
  const before = Date.now();
  const j = perfJson('emu://?size=64MiB&null=1', '--rw', 'randread', '--bs', '8k', '--qd', '4', '--nqueues', '2', '--ios', '1000', '--warmup', '0', '--seed', '7', '--json');
  assert.equal(j['version'], PKG.version);
  const ms = j['timestamp_ms'] as number;
  assert.ok(ms >= before && ms <= Date.now(), `timestamp_ms ${ms}`);
  assert.equal(j['timestamp'], Math.floor(ms / 1000));
  assert.equal(Date.parse(j['time'] as string), ms);
  assert.equal(j['device'], 'emu://?size=64MiB&null=1');
  assert.deepEqual(j['options'], {
    uri: 'emu://?size=64MiB&null=1',
    rw: 'randread',
    bs: 8192,
    qd: 4,
    nqueues: 2,
    threads: 1,
    timeSec: null,
    ios: 1000,
    warmupSec: 0,
    rwmixread: 50,
    nsid: 1,
    verify: false,
    verifySpan: 64 << 20,
    seed: 7,
    backend: 'driver',
    direct: false,
    fixedBuffers: false,
    hipri: false,
    percentiles: [50, 99, 99.9],
    invalidate: true,
    fadviseHint: true,
    offset: 0,
    size: null,
    buffers: 'host',
  });
  assert.equal(j['buffered'], false);
  assert.equal(j.read.ios, 1000);
  assert.equal(j.write.ios, 0);
  assert.equal(j.write.clat_ns.N, 0);
  assert.equal(j.write.iops, 0);
});

test('perf table: a row per direction in a mixed run, the --percentiles columns, min, max, mean and stddev', () => {
  const r = homi('perf', 'emu://?size=64MiB&null=1', '--rw', 'randrw', '--qd', '4', '--ios', '2000', '--warmup', '0', '--percentiles', '50,99.99');
  assert.equal(r.code, 0, r.stderr);
  const header = r.stdout.split('\n').find((l) => l.startsWith('path'))!;
  assert.match(header, /I\/O\s+IOPS\s+MiB\/s\s+min us\s+p50 us\s+p99\.99 us\s+max us\s+mean us\s+stddev us/);
  assert.doesNotMatch(header, /p99 us/);
  assert.match(r.stdout, /\n\S.*\s+read\s+\d/);
  assert.match(r.stdout, /\n\s+write\s+\d/);
  assert.match(r.stdout, /\n\s+all\s+\d/);
  const one = homi('perf', 'emu://?size=64MiB&null=1', '--rw', 'randwrite', '--qd', '4', '--ios', '500', '--warmup', '0');
  assert.equal(one.code, 0, one.stderr);
  assert.match(one.stdout, /\n\S.*\s+write\s+\d/);
  assert.doesNotMatch(one.stdout, /\s+all\s+\d/);
});

test("fio's option names parse to the same options as HOMI's own; --size and --offset pick the region", () => {
  const uri = 'emu://?size=64MiB&null=1';
  const common = ['--bs', '4k', '--rw', 'randread', '--size', '8MiB', '--offset', '1MiB'];
  const fio = perfJson(uri, ...common, '--iodepth=8', '--numjobs', '2', '--runtime', '300ms', '--ramp_time', '0', '--percentile_list', '99:50', '--output-format=json');
  const own = perfJson(uri, ...common, '--qd', '8', '--threads', '2', '--time', '0.3', '--warmup', '0', '--percentiles', '50,99', '--json');
  assert.deepEqual(fio['options'], own['options']);
  assert.equal((own['options'] as { qd: number }).qd, 8);
  assert.equal(own['threads'], 2);
  assert.deepEqual(own['region'], { offset: 1 << 20, size: 8 << 20 });
  assert.deepEqual(Object.keys(fio.latencyUs.percentiles), ['p50', 'p99']);
  // The later of an alias and its HOMI name wins, as a repeated option does.
  const later = perfJson(uri, '--qd', '2', '--iodepth', '3', '--ios', '50', '--warmup', '0', '--json');
  assert.equal((later['options'] as { qd: number }).qd, 3);
  const earlier = perfJson(uri, '--iodepth', '3', '--qd', '2', '--ios', '50', '--warmup', '0', '--json');
  assert.equal((earlier['options'] as { qd: number }).qd, 2);
  const table = homi('perf', uri, '--ios', '50', '--warmup', '0', '--output-format', 'normal');
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^randread 4 KiB/);
});

test('bad figures options: one line naming the bad part, exit status 2', () => {
  const uri = 'emu://?size=16MiB&null=1';
  assertUsageErrors(homi, [
    [['perf', uri, '--percentiles', '50,abc'], /--percentiles: 'abc' is not a percentile/],
    [['perf', uri, '--percentiles', '0'], /--percentiles: '0' is not a percentile in \(0, 100\]/],
    [['perf', uri, '--percentile_list', '99:101'], /--percentiles: '101' is not a percentile/],
    [['perf', uri, '--invalidate', '2'], /--invalidate: '2' must be 0 or 1/],
    [['perf', uri, '--fadvise_hint', 'yes'], /--fadvise_hint: 'yes' must be 0 or 1/],
    [['perf', uri, '--size', '0'], /--size: '0' must be more than 0 bytes/],
    [['perf', uri, '--offset', 'far'], /--offset: 'far' is not a byte size/],
    [['perf', uri, '--runtime', '5x'], /--time: '5x' is not a positive number of seconds/],
    [['perf', uri, '--output-format', 'xml'], /--output-format.*'xml' is invalid/],
    [['perf', uri, '--offset', '16MiB', '--ios', '1'], /--offset 16777216 is not inside/],
    [['perf', uri, '--offset', '8MiB', '--size', '12MiB', '--ios', '1'], /--offset 8388608 \+ --size 12582912 run past the end/],
    [['perf', uri, '--offset', '1000', '--ios', '1'], /--offset 1000 is not a multiple of the 4096-byte block size/],
  ]);
});
