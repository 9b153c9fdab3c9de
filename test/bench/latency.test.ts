import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PerformanceObserver } from 'node:perf_hooks';
import { LatencyRecorder, latencyBucket, latencyBucketValue, newLatencyHistogram } from '../../src/bench/latency.js';
import { latencySummary, runEngine, type EngineBuffer } from '../../src/bench/engine.js';
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

test('the recorder gives the HDR histogram that recording every value gives (same summary, same exported counts)', () => {
  const rng = new Rng(11);
  const direct = newLatencyHistogram();
  const rec = new LatencyRecorder();
  const starts = new Float64Array(1);
  const tags = new Int32Array(1);
  const clock = new Float64Array(1);
  for (let i = 0; i < 100_000; i++) {
    // log-uniform latencies from 100 ns to ~4 s, in ms as the engine's clock gives them, a few far outliers
    const ns = i % 10_000 === 0 ? 3e9 + i : Math.exp(4.6 + (rng.next() / 2 ** 32) * 17.5);
    direct.recordValue(Math.max(1, Math.round(ns)));
    if (i % 2 === 0) rec.record(ns);
    else {
      clock[0] = 1000 + ns / 1e6;
      starts[0] = 1000;
      rec.recordBatch(clock, 0, starts, tags, 1);
    }
  }
  const viaRecorder = newLatencyHistogram();
  rec.addTo(viaRecorder);
  assert.equal(viaRecorder.totalCount, direct.totalCount);
  assert.deepEqual(latencySummary(viaRecorder), latencySummary(direct));
  for (const p of [1, 10, 50, 90, 99, 99.9, 99.99]) assert.equal(viaRecorder.getValueAtPercentile(p), direct.getValueAtPercentile(p), `p${p}`);
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
