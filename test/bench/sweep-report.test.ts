/** Sweep summaries and the latency charts of the sweep reports (CPU and GPU), on results built here. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderSweepHtml, sweepCharts } from '../../src/bench/report-html.js';
import { sweepSummary, type SweepPoint, type SweepResult } from '../../src/bench/sweep.js';
import { gpuSweepCharts, gpuSweepSummary, renderGpuSweepHtml, runGpuSweep } from '../../src/bench/gpu-sweep.js';
import { renderLineChart } from '../../src/bench/report-svg.js';
import type { GpuPerfOptions, GpuPerfReport } from '../../src/gpu/perf.js';

function point(backend: string, qd: number, p50: number, p99: number, extra: Partial<SweepPoint> = {}): SweepPoint {
  return {
    backend,
    bs: 4096,
    qd,
    iops: 1000 * qd,
    bandwidthMiBps: (1000 * qd) / 256,
    latencyUs: { min: p50 / 2, p50, p99, p999: p99 * 2, max: p99 * 3, mean: p50, stddev: p50 / 4, percentiles: { p50, p99, 'p99.9': p99 * 2 } },
    cpuNsPerIo: 100,
    processCpuNsPerIo: 120,
    errors: 0,
    errorsByStatus: {},
    verifyErrors: 0,
    transport: 't',
    ...extra,
  };
}

function result(points: SweepPoint[], backends: string[], qd: number[]): SweepResult {
  return {
    kind: 'homi-perf-sweep',
    version: 1,
    createdAt: '2025-01-01T00:00:00Z',
    uri: 'emu://',
    rw: 'randread',
    timeSec: 1,
    ios: null,
    nqueues: 1,
    threads: 1,
    options: { direct: false, fixedBuffers: false, hipri: false, verify: false },
    grid: { backends, bs: [4096], qd },
    machine: { hostname: 'h', cpus: 2, cpuModel: 'cpu', kernel: 'Linux', node: 'v20' },
    model: 'm',
    points,
  };
}

/** The `<title>` of every data point of a chart's series: `name: x -> y`. */
function pointTitles(svg: string): string[] {
  return [...svg.matchAll(/<circle [^>]*><title>([^<]*)<\/title><\/circle>/g)].map((m) => m[1]!.replace(/&gt;/g, '>'));
}

test('sweep summary: the number of points, how many failed or saw errors, and each of them by name', () => {
  const ok = result([point('posix', 1, 10, 20), point('posix', 4, 12, 30)], ['posix'], [1, 4]);
  assert.deepEqual(sweepSummary(ok), ['2 points (all ok): posix x bs 4 KiB x qd 1,4']);
  const mixed = result(
    [
      point('posix', 1, 10, 20),
      point('posix', 4, NaN, NaN, { failure: 'boom', latencyUs: null }),
      point('io_uring', 1, 9, 18, { errors: 3, verifyErrors: 1 }),
      point('io_uring', 4, NaN, NaN, { failure: 'no ring', latencyUs: null }),
    ],
    ['posix', 'io_uring'],
    [1, 4],
  );
  assert.deepEqual(sweepSummary(mixed), [
    '4 points (1 ok, 2 failed, 1 with errors): posix, io_uring x bs 4 KiB x qd 1,4',
    'failed: posix bs 4 KiB qd 4: boom',
    'failed: io_uring bs 4 KiB qd 4: no ring',
    'errors: io_uring bs 4 KiB qd 1: 3 I/O errors, 1 verify mismatches',
  ]);
});

test('sweep report: p50 and p99 latency vs queue depth, one colour per backend, p99 dashed, failed points left out', () => {
  const r = result(
    [
      point('posix', 1, 10, 20),
      point('posix', 4, 12, 30),
      point('posix', 16, 15, 45),
      point('io_uring', 1, 8, 16),
      point('io_uring', 4, 9, 25),
      point('io_uring', 16, NaN, NaN, { failure: 'x', latencyUs: null }),
    ],
    ['posix', 'io_uring'],
    [1, 4, 16],
  );
  const charts = sweepCharts(r);
  assert.deepEqual(
    charts.map((c) => c.title),
    ['IOPS vs queue depth (randread, 4 KiB)', 'Bandwidth vs queue depth (randread, 4 KiB)', 'Latency vs queue depth (randread, 4 KiB)'],
  );
  const svg = charts[2]!.svg;
  assert.deepEqual(pointTitles(svg), [
    'posix p50: 1 -> 10',
    'posix p50: 4 -> 12',
    'posix p50: 16 -> 15',
    'posix p99: 1 -> 20',
    'posix p99: 4 -> 30',
    'posix p99: 16 -> 45',
    'io_uring p50: 1 -> 8',
    'io_uring p50: 4 -> 9',
    'io_uring p99: 1 -> 16',
    'io_uring p99: 4 -> 25',
  ]);
  const lines = [...svg.matchAll(/<g class="series" data-name="([^"]+)">\n<polyline fill="none" stroke="([^"]+)" stroke-width="2"( stroke-dasharray="[^"]+")?/g)].map((m) => ({
    name: m[1],
    color: m[2],
    dashed: m[3] !== undefined,
  }));
  assert.deepEqual(
    lines.map((l) => [l.name, l.dashed]),
    [
      ['posix p50', false],
      ['posix p99', true],
      ['io_uring p50', false],
      ['io_uring p99', true],
    ],
  );
  assert.equal(lines[0]!.color, lines[1]!.color, 'p50 and p99 of one backend share its colour');
  assert.notEqual(lines[0]!.color, lines[2]!.color, 'backends differ');
  assert.match(svg, /class="y-label"[^>]*>latency \(us\), p50 solid, p99 dashed</);
  assert.equal((renderSweepHtml(r).match(/<svg /g) ?? []).length, 3);
});

test('a dashed series is dashed in its legend too', () => {
  const svg = renderLineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 'a p99', color: '#123456', dashed: true, points: [[1, 2]] }] });
  assert.match(svg, /<g class="legend">\n<line [^>]*stroke="#123456" stroke-width="3" stroke-dasharray="6 4"\/>/);
});

function gpuReport(o: GpuPerfOptions): GpuPerfReport {
  const threads = o.qd * o.nqueues;
  return {
    initiator: 'gpu',
    target: 'gpu-resident',
    device: 'd',
    gpu: { name: 'Fake GPU', computeCapability: '9.0', multiprocessors: 1, pciBusId: '0000:00:00.0', clockKhz: 1 } as GpuPerfReport['gpu'],
    mode: o.mode,
    rw: o.rw,
    bs: o.bs,
    qd: o.qd,
    nqueues: o.nqueues,
    entries: 64,
    grid: o.nqueues,
    block: o.qd,
    threads,
    placement: 'host',
    ios: 1000,
    seconds: 1,
    iops: 1000 * threads,
    mibPerSec: (1000 * threads * o.bs) / 2 ** 20,
    errors: o.qd === 64 && o.nqueues === 2 ? 5 : 0,
    timeouts: 0,
    mismatches: null,
    firstError: null,
    latency: { meanUs: o.qd, p50Us: o.qd, p99Us: 2 * o.qd + o.nqueues, maxUs: 4 * o.qd },
    controller: {},
    notes: [],
  };
}

test('GPU sweep: a live line before and a finished line after each point; the summary names failed points; latency charts', async () => {
  const events: string[] = [];
  const r = await runGpuSweep({
    base: { uri: 'gpuctl://?null=1', mode: 'block', rw: 'randread' },
    qds: [32, 64],
    nqueues: [1, 2],
    bss: [4096],
    run: async (o) => {
      if (o.qd === 32 && o.nqueues === 2) throw new Error('launch failed');
      return gpuReport(o);
    },
    onStart: (i, total, p) => events.push(`start ${i + 1}/${total} ${p.nqueues}x${p.qd}`),
    onPoint: (i, total, p) => events.push(`done ${i + 1}/${total} ${p.nqueues}x${p.qd}${p.failure ? ' failed' : ''}`),
  });
  assert.deepEqual(events, ['start 1/4 1x32', 'done 1/4 1x32', 'start 2/4 1x64', 'done 2/4 1x64', 'start 3/4 2x32', 'done 3/4 2x32 failed', 'start 4/4 2x64', 'done 4/4 2x64']);
  assert.deepEqual(gpuSweepSummary(r), ['4 points (2 ok, 1 failed, 1 with errors)', 'failed: 4 KiB 2 q x qd 32: launch failed', 'errors: 4 KiB 2 q x qd 64: 5 errors, 0 timeouts']);
  const charts = gpuSweepCharts(r);
  assert.deepEqual(
    charts.map((c) => c.title),
    ['IOPS by queue depth, 4 KiB randread', 'Latency by queue depth, 4 KiB randread'],
  );
  assert.deepEqual(pointTitles(charts[1]!.svg), [
    '1 queue p50: 32 -> 32',
    '1 queue p50: 64 -> 64',
    '1 queue p99: 32 -> 65',
    '1 queue p99: 64 -> 129',
    '2 queues p50: 64 -> 64',
    '2 queues p99: 64 -> 130',
  ]);
  assert.equal((renderGpuSweepHtml(r).match(/<svg /g) ?? []).length, 2);
});
