import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PerformanceObserver } from 'node:perf_hooks';
import { emptyMoments, LatencyRecorder, latencyBucket, latencyBucketValue, mergeMoments, momentsMean, momentsStddev, newLatencyHistogram } from '../../src/bench/latency.js';
import { latencyNs, latencySummary, parsePercentiles } from '../../src/bench/figures.js';
import { runEngine, type EngineBuffer } from '../../src/bench/engine.js';
import { InstantQueue } from '../../src/bench/engine-cost.js';
import { Rng } from '../../src/bench/workload.js';

test('latency buckets: each value falls in the bucket whose range holds it, buckets are ordered', () => {
  const rng = new Rng(3);
  for (let i = 0; i < 200_000; i++) {
    const v = i < 5000 ? i : rng.next() >>> (rng.next() % 32);
    if (v >= 2 ** 31) continue;
    const b = latencyBucket(v);
    assert.ok(latencyBucketValue(b) <= v, `bucket ${b} of ${v} starts at ${latencyBucketValue(b)}`);
    assert.ok(latencyBucketValue(b + 1) > v, `bucket ${b + 1} starts at ${latencyBucketValue(b + 1)}, not above ${v}`);
  }
  assert.equal(latencyBucket(2 ** 31 - 1) < 2 ** 16, true);
});

test('the recorder gives the HDR histogram that recording every value gives, with the exact min, max, mean and stddev', () => {
  const rng = new Rng(11);
  const direct = newLatencyHistogram();
  const rec = new LatencyRecorder();
  const starts = new Float64Array(1);
  const tags = new Int32Array(1);
  const clock = new Float64Array(1);
  const values: number[] = [];
  for (let i = 0; i < 100_000; i++) {
    // log-uniform latencies from 100 ns to ~4 s, in ms as the engine's clock gives them, a few far outliers
    const ns = i % 10_000 === 0 ? 3e9 + i : Math.exp(4.6 + (rng.next() / 2 ** 32) * 17.5);
    values.push(Math.max(1, Math.round(ns)));
    direct.recordValue(values[i]!);
    if (i % 2 === 0) rec.record(ns);
    else {
      clock[0] = 1000 + ns / 1e6;
      starts[0] = 1000;
      rec.recordBatch(clock, 0, starts, tags, 1);
      // The clock goes through ms and back: the value the recorder saw may differ from ns in the last ulp.
      values[i] = Math.max(1, Math.round((clock[0] - starts[0]) * 1e6));
    }
  }
  const viaRecorder = newLatencyHistogram();
  rec.addTo(viaRecorder);
  assert.equal(viaRecorder.totalCount, direct.totalCount);
  for (const p of [1, 10, 50, 90, 99, 99.9, 99.99]) assert.equal(viaRecorder.getValueAtPercentile(p), direct.getValueAtPercentile(p), `p${p}`);
  const m = rec.moments();
  const mean = values.reduce((a, v) => a + v, 0) / values.length;
  const sd = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1));
  assert.equal(m.count, values.length);
  assert.equal(m.min, Math.min(...values));
  assert.equal(m.max, Math.max(...values));
  assert.equal(viaRecorder.minNonZeroValue, m.min, 'the histogram holds the exact minimum');
  assert.equal(viaRecorder.maxValue, m.max, 'and the exact maximum');
  assert.ok(Math.abs(momentsMean(m) - mean) / mean < 1e-12, `mean ${momentsMean(m)} vs ${mean}`);
  assert.ok(Math.abs(momentsStddev(m) - sd) / sd < 1e-9, `stddev ${momentsStddev(m)} vs ${sd}`);
});

test('percentiles never leave [min, max]: the top of the bucket of the maximum is not reported', () => {
  // 1000 values in one 8 ns wide bucket above 8 us: HDR's p99.9 is the bucket's top, above every value.
  const rec = new LatencyRecorder();
  for (let i = 0; i < 1000; i++) rec.record(10_001 + (i % 3));
  const h = newLatencyHistogram();
  rec.addTo(h);
  const m = rec.moments();
  assert.ok(h.getValueAtPercentile(99.9) > m.max, `HDR says ${h.getValueAtPercentile(99.9)}, the max is ${m.max}`);
  const s = latencySummary(h, m, [0.001, 50, 99.9, 100]);
  for (const v of [s.p50, s.p99, s.p999, ...Object.values(s.percentiles)]) assert.ok(v >= s.min && v <= s.max, `${v} outside [${s.min}, ${s.max}]`);
  assert.equal(s.min, 10.001);
  assert.equal(s.max, 10.003);
  assert.equal(s.percentiles['p100'], s.max);
  assert.ok(Math.abs(s.mean - 10.002) < 1e-9);
  assert.deepEqual(Object.keys(s.percentiles), ['p0.001', 'p50', 'p99.9', 'p100']);
  const ns = latencyNs(h, m, [99.9]);
  assert.deepEqual(Object.keys(ns.percentile), ['99.900000']);
  assert.equal(ns.percentile['99.900000'], 10_003);
  assert.equal(ns.N, 1000);
});

test('moments merge exactly: two recorders merged equal one recorder that saw every value', () => {
  const rng = new Rng(5);
  const a = new LatencyRecorder(2);
  const one = new LatencyRecorder();
  for (let i = 0; i < 50_000; i++) {
    const v = 20_000 + (rng.next() % 5000);
    a.record(v, i % 2);
    one.record(v);
  }
  const m = mergeMoments(a.moments(0), a.moments(1));
  const o = one.moments();
  assert.equal(m.count, o.count);
  assert.equal(m.min, o.min);
  assert.equal(m.max, o.max);
  assert.ok(Math.abs(momentsMean(m) - momentsMean(o)) < 1e-9);
  assert.ok(Math.abs(momentsStddev(m) - momentsStddev(o)) < 1e-9);
  assert.deepEqual(mergeMoments(emptyMoments(), o), o);
});

test('recordBatch over two lanes (reads, writes) gives what recording value by value gives, big values included', () => {
  const rng = new Rng(9);
  const batch = new LatencyRecorder(2);
  const single = [new LatencyRecorder(), new LatencyRecorder()];
  const slots = 64;
  const starts = new Float64Array(slots);
  const laneOf = new Uint8Array(slots);
  const tags = new Int32Array(slots);
  const clock = new Float64Array([5000]);
  for (let round = 0; round < 2000; round++) {
    const n = 1 + (rng.next() % slots);
    for (let i = 0; i < n; i++) {
      tags[i] = i;
      laneOf[i] = rng.next() % 3 === 0 ? 1 : 0;
      // ms before the clock: mostly 1..200 us, now and then above 2^31 ns
      starts[i] = clock[0]! - (round % 500 === 7 && i === 0 ? 2300 : (1 + (rng.next() % 200_000)) / 1e6);
    }
    batch.recordBatch(clock, 0, starts, tags, n, laneOf);
    for (let i = 0; i < n; i++) single[laneOf[i]!]!.record((clock[0]! - starts[i]!) * 1e6);
  }
  for (const lane of [0, 1]) {
    const a = batch.moments(lane);
    const b = single[lane]!.moments();
    assert.equal(a.count, b.count);
    assert.equal(a.min, b.min);
    assert.equal(a.max, b.max);
    assert.ok(a.max > 2 ** 31, 'a big value was seen');
    assert.ok(Math.abs(momentsMean(a) - momentsMean(b)) < 1e-6, `lane ${lane} mean`);
    assert.ok(Math.abs(momentsStddev(a) - momentsStddev(b)) / momentsStddev(b) < 1e-9, `lane ${lane} stddev`);
    const ha = newLatencyHistogram();
    const hb = newLatencyHistogram();
    batch.addTo(ha, lane);
    single[lane]!.addTo(hb);
    for (const p of [50, 99, 99.9]) assert.equal(ha.getValueAtPercentile(p), hb.getValueAtPercentile(p));
  }
});

test('percentile lists: commas or colons (fio), sorted, each in (0, 100], at most 20', () => {
  assert.deepEqual(parsePercentiles('99.9,50,90'), [50, 90, 99.9]);
  assert.deepEqual(parsePercentiles('99.5:99.9:99.99'), [99.5, 99.9, 99.99]);
  for (const bad of ['', '50,,99', '0', '101', 'abc', '-5', Array.from({ length: 21 }, (_, i) => i + 1).join(',')]) assert.throws(() => parsePercentiles(bad), RangeError, bad);
});

test('the engine allocates nothing per I/O (no young-generation GC over 2 M I/Os on an instant queue)', async () => {
  const qd = 128;
  const bufs: EngineBuffer[] = [];
  for (let i = 0; i < qd; i++) bufs.push({ words: new Uint32Array(1024), prp1: 0x1_0000_0000 + i * 4096, prp2: 0 });
  const cfg = { rw: 'randread' as const, bs: 4096, qd, rwmixread: 100, nsid: 1, blockSize: 4096, blocks: 1 << 20, timeSec: null, warmupSec: 0, verify: false, verifySpan: 0, seed: 5 };
  await runEngine([new InstantQueue(qd)], [bufs], { ...cfg, ios: 500_000 }); // warm-up: the JIT's own allocation
  let scavenges = 0;
  const obs = new PerformanceObserver((l) => {
    for (const e of l.getEntries()) if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === 1) scavenges++;
  });
  obs.observe({ entryTypes: ['gc'] });
  const r = await runEngine([new InstantQueue(qd)], [bufs], { ...cfg, ios: 2_000_000 });
  await new Promise((res) => setTimeout(res, 50)); // the observer's entries arrive asynchronously
  obs.disconnect();
  assert.equal(r.ios, 2_000_000);
  // One 16-byte object per I/O would be 32 MB: several young-generation collections. The engine's per-run
  // allocations (result, histogram summary) fit in one.
  assert.ok(scavenges <= 1, `${scavenges} young-generation collections during 2 M I/Os`);
});
