/** Unit tests of the I/O layer: ABI layouts, io_uring_cmd encoding, targets and backend refusals, SVG report. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeParams, encodeParams, Params, Sqe, Cqe, PARAMS_SIZE, IORING_SETUP_SQE128, IORING_SETUP_CQE32 } from '../../src/sys/uring.js';
import { encodeUringCmdSqe, nvmeCommandFor, NVME_URING_CMD_IO, NVME_URING_CMD_SIZE, parseTarget, resolveBackend, openIo, IoOp, IoOpenError, type IoOpcode } from '../../src/io/index.js';
import { UringRing } from '../../src/io/uring-ring.js';
import { renderLineChart, niceTicks } from '../../src/bench/report-svg.js';
import { renderSweepHtml } from '../../src/bench/report-html.js';
import type { SweepResult } from '../../src/bench/sweep.js';
import { checkPerfOptions, runPerf } from '../../src/bench/perf.js';

test('io_uring ABI offsets match the UAPI header', () => {
  assert.equal(PARAMS_SIZE, 120);
  assert.equal(Params.sqOff, 40);
  assert.equal(Params.cqOff, 80);
  assert.equal(Params.features, 20);
  assert.deepEqual([Sqe.opcode, Sqe.fd, Sqe.off, Sqe.addr, Sqe.len, Sqe.opFlags, Sqe.userData, Sqe.bufIndex, Sqe.cmd], [0, 4, 8, 16, 24, 28, 32, 40, 48]);
  assert.deepEqual([Cqe.userData, Cqe.res, Cqe.flags, Cqe.big], [0, 8, 12, 16]);
  const p = encodeParams(0x5, 64);
  const v = new DataView(p.buffer);
  assert.equal(v.getUint32(8, true), 5);
  assert.equal(v.getUint32(4, true), 64);
  // A synthetic kernel answer decodes field by field.
  v.setUint32(0, 128, true);
  v.setUint32(20, 0x1, true);
  v.setUint32(40 + 24, 0x1234, true);
  v.setUint32(80 + 20, 0x40, true);
  const d = decodeParams(p);
  assert.equal(d.sqEntries, 128);
  assert.equal(d.features, 1);
  assert.equal(d.sqOff.array, 0x1234);
  assert.equal(d.cqOff.cqes, 0x40);
});

test('a real ring: the kernel fills params; SQE128/CQE32 sizes', () => {
  const r = new UringRing({ entries: 8, flags: 0 });
  try {
    assert.equal(r.sqEntries, 8);
    assert.ok(r.cqEntries >= 16);
    assert.equal(r.sqeWords, 16);
    assert.equal(r.cqeWords, 4);
    assert.ok(r.nextSqe() >= 0);
  } finally {
    r.close();
  }
  const big = new UringRing({ entries: 4, flags: IORING_SETUP_SQE128 | IORING_SETUP_CQE32 });
  try {
    assert.equal(big.sqeWords, 32);
    assert.equal(big.cqeWords, 8);
  } finally {
    big.close();
  }
});

test('NVME_URING_CMD_IO is _IOWR(N, 0x80, 72 bytes)', () => {
  assert.equal(NVME_URING_CMD_SIZE, 72);
  assert.equal(NVME_URING_CMD_IO, 0xc0484e80);
});

test('io_uring_cmd SQE encoding: opcode 46, cmd_op, nvme_uring_cmd at offset 48', () => {
  const w = new Uint32Array(64);
  w.fill(0xdeadbeef);
  const addr = 0x7f12_3456_7000;
  const cmd = nvmeCommandFor(IoOp.Read, 3, 0x1_0000_0005, 8, addr, 4096);
  encodeUringCmdSqe(w, 32, 9, 0x77, cmd, 2);
  const b = new DataView(w.buffer, 32 * 4, 128);
  assert.equal(b.getUint8(0), 46, 'IORING_OP_URING_CMD');
  assert.equal(b.getInt32(4, true), 9, 'fd');
  assert.equal(b.getUint32(8, true), 0xc0484e80, 'cmd_op');
  assert.equal(b.getUint32(28, true), 1, 'IORING_URING_CMD_FIXED');
  assert.equal(b.getBigUint64(32, true), 0x77n, 'user_data');
  assert.equal(b.getUint16(40, true), 2, 'buf_index');
  const c = 48;
  assert.equal(b.getUint8(c), 0x02, 'opcode Read');
  assert.equal(b.getUint8(c + 1), 0, 'flags');
  assert.equal(b.getUint32(c + 4, true), 3, 'nsid');
  assert.equal(b.getBigUint64(c + 24, true), BigInt(addr), 'addr');
  assert.equal(b.getUint32(c + 36, true), 8 * 4096, 'data_len');
  assert.equal(b.getUint32(c + 40, true), 5, 'cdw10 = SLBA low');
  assert.equal(b.getUint32(c + 44, true), 1, 'cdw11 = SLBA high');
  assert.equal(b.getUint32(c + 48, true), 7, 'cdw12 = NLB - 1');
  assert.equal(b.getUint32(c + 64, true), 0, 'timeout_ms');
  assert.equal(w[0], 0xdeadbeef, 'nothing written before the SQE');
  const f = nvmeCommandFor(IoOp.Flush, 1, 0, 1, 0, 512);
  assert.deepEqual([f.opcode, f.dataLen, f.cdw10, f.cdw12], [0, 0, 0, 0]);
  const z = nvmeCommandFor(IoOp.WriteZeroes, 1, 10, 16, 0, 512);
  assert.deepEqual([z.opcode, z.cdw10, z.cdw12, z.dataLen], [0x08, 10, 15, 0]);
  const d = nvmeCommandFor(IoOp.Deallocate, 1, 10, 16, 0x1000, 512);
  assert.deepEqual([d.opcode, d.cdw10, d.cdw11, d.dataLen, d.addr], [0x09, 0, 4, 16, 0x1000]);
});

test('io_uring_cmd on a machine without /dev/ng* fails at open with one clear line', async () => {
  await assert.rejects(openIo('/dev/ng9n9'), (e: unknown) => e instanceof IoOpenError && /\/dev\/ng9n9/.test((e as Error).message) && !(e as Error).message.includes('\n'));
  await assert.rejects(openIo('/tmp/whatever', { backend: 'io_uring_cmd' }), /needs an NVMe generic char device/);
});

test('targets and backend refusals', () => {
  assert.deepEqual(parseTarget('file:/tmp/a.img?size=1MiB&bs=4096'), { kind: 'path', uri: 'file:/tmp/a.img?size=1MiB&bs=4096', path: '/tmp/a.img', size: 1 << 20, blockSize: 4096 });
  assert.equal(parseTarget('emu://?size=1MiB').kind, 'device');
  assert.throws(() => parseTarget('nvme://x'), /unknown scheme/);
  assert.throws(() => parseTarget('file:/tmp/a?frob=1'), /unknown parameter 'frob'/);
  assert.throws(() => parseTarget('file:/tmp/a?size=1MiB&size=2MiB'), /parameter 'size' is given more than once/);
  const file = parseTarget('/tmp/a.img');
  const emu = parseTarget('emu://?size=1MiB');
  assert.equal(resolveBackend(file, {}), 'io_uring');
  assert.equal(resolveBackend(emu, {}), 'driver');
  assert.equal(resolveBackend(parseTarget('/dev/ng0n1'), {}), 'io_uring_cmd');
  assert.throws(() => resolveBackend(file, { backend: 'driver' }), /needs an emu:\/\/ or pci: URI/);
  assert.throws(() => resolveBackend(emu, { backend: 'io_uring' }), /needs a file or device path/);
  assert.throws(() => resolveBackend(emu, { direct: true }), /--direct/);
  assert.throws(() => resolveBackend(file, { backend: 'posix', fixedBuffers: true }), /--fixed-buffers/);
  assert.throws(() => resolveBackend(file, { backend: 'posix', hipri: true }), /--hipri/);
  assert.throws(() => resolveBackend(file, { hipri: true }), /--hipri needs --direct/);
  assert.throws(() => resolveBackend(file, { backend: 'bogus' as never }), /unknown backend 'bogus'/);
});

test('--hipri on a regular file is refused at open with one clear line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-io-'));
  try {
    await assert.rejects(
      openIo(`file:${join(dir, 'p.img')}?size=1MiB`, { backend: 'io_uring', direct: true, hipri: true }),
      (e: unknown) => e instanceof IoOpenError && /--hipri: .* cannot do polled I\/O/.test((e as Error).message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('perf --threads merges per-thread results; --verify gives each thread its own region', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-io-'));
  try {
    for (const backend of ['posix', 'io_uring'] as const) {
      const r = await runPerf({
        uri: `file:${join(dir, `t-${backend}.img`)}?size=32MiB`,
        backend,
        threads: 2,
        rw: 'randrw',
        bs: 4096,
        // posix is synchronous: a depth above 1 is refused
        qd: backend === 'posix' ? 1 : 4,
        nqueues: 1,
        timeSec: null,
        ios: 2000,
        warmupSec: 0,
        rwmixread: 50,
        nsid: 1,
        verify: true,
        verifySpan: 4 << 20,
        seed: 1,
      });
      assert.equal(r.threads, 2);
      assert.equal(r.ios, 4000);
      assert.equal(r.perThread!.length, 2);
      assert.equal(r.errors, 0);
      assert.equal(r.verifyErrors, 0);
      assert.ok(r.verified > 0);
      assert.ok(Math.abs(r.iops - r.perThread!.reduce((a, t) => a + t.iops, 0)) < 1e-6);
      assert.ok(r.latencyUs.p50 > 0 && r.latencyUs.max >= r.latencyUs.p99);
      assert.equal('latencyExport' in r, false);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('perf --threads is refused for the driver backend on pci: before the run (emu:// is accepted)', async () => {
  await assert.rejects(
    runPerf({
      uri: 'pci:0000:01:00.0',
      threads: 2,
      rw: 'randread',
      bs: 4096,
      qd: 4,
      nqueues: 1,
      timeSec: null,
      ios: 10,
      warmupSec: 0,
      rwmixread: 50,
      nsid: 1,
      verify: false,
      verifySpan: 1 << 20,
      seed: 1,
    }),
    /--threads 2: the driver backend on a pci: URI/,
  );
  assert.equal(
    checkPerfOptions({
      uri: 'emu://?size=16MiB',
      threads: 2,
      rw: 'randread',
      bs: 4096,
      qd: 4,
      nqueues: 1,
      timeSec: null,
      ios: 10,
      warmupSec: 0,
      rwmixread: 50,
      nsid: 1,
      verify: false,
      verifySpan: 1 << 20,
      seed: 1,
    }),
    'driver',
  );
});

test('SVG line chart: axes, labels, one polyline per series, legend', () => {
  const svg = renderLineChart({
    title: 'IOPS vs queue depth',
    xLabel: 'queue depth',
    yLabel: 'IOPS',
    series: [
      {
        name: 'io_uring',
        points: [
          [1, 10],
          [2, 20],
          [4, 35],
          [8, 50],
        ],
      },
      {
        name: 'posix <&>',
        points: [
          [1, 9],
          [8, 12],
        ],
      },
    ],
  });
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>$/);
  assert.equal((svg.match(/<polyline /g) ?? []).length, 2);
  assert.equal((svg.match(/<circle /g) ?? []).length, 6);
  assert.match(svg, /class="x-label"[^>]*>queue depth \(log scale\)</);
  assert.match(svg, /class="y-label"[^>]*>IOPS</);
  assert.match(svg, /<g class="legend">[\s\S]*io_uring[\s\S]*posix &lt;&amp;&gt;/);
  // Balanced tags (a cheap well-formedness check).
  const open = (svg.match(/<(g|svg|text|title|circle)(\s[^>]*)?(?<!\/)>/g) ?? []).length;
  const close = (svg.match(/<\/(g|svg|text|title|circle)>/g) ?? []).length;
  assert.equal(open, close);
  assert.deepEqual(niceTicks(47), [0, 10, 20, 30, 40, 50]);
});

test('sweep HTML report is self-contained: inline SVG charts and a table of all points', () => {
  const pt = (backend: string, qd: number, iops: number) => ({
    backend,
    bs: 4096,
    qd,
    iops,
    bandwidthMiBps: iops / 256,
    latencyUs: { min: 0.5, p50: 1, p99: 2, p999: 3, max: 4, mean: 1, stddev: 0.5, percentiles: { p50: 1, p99: 2, 'p99.9': 3 } },
    cpuNsPerIo: 100,
    processCpuNsPerIo: 120,
    errors: 0,
    errorsByStatus: {},
    verifyErrors: 0,
    transport: 't',
  });
  const r: SweepResult = {
    kind: 'homi-perf-sweep',
    version: 1,
    createdAt: '2025-01-01T00:00:00Z',
    uri: '/tmp/x.img',
    rw: 'randread',
    timeSec: 1,
    ios: null,
    nqueues: 1,
    threads: 1,
    options: { direct: true, fixedBuffers: false, hipri: false, verify: false },
    grid: { backends: ['posix', 'io_uring'], bs: [4096], qd: [1, 4, 16] },
    machine: { hostname: 'h', cpus: 2, cpuModel: 'cpu', kernel: 'Linux', node: 'v20' },
    model: 'file',
    points: [pt('posix', 1, 100), pt('posix', 4, 120), pt('posix', 16, 130), pt('io_uring', 1, 90), pt('io_uring', 4, 300), { ...pt('io_uring', 16, NaN), failure: 'boom <x>' }],
  };
  const html = renderSweepHtml(r);
  assert.match(html, /^<!DOCTYPE html>/);
  assert.doesNotMatch(html, /<script|src=|href=/);
  assert.equal((html.match(/<svg /g) ?? []).length, 3, 'IOPS, bandwidth and latency vs queue depth');
  assert.equal((html.match(/<tr>/g) ?? []).length, 6 + 5 + 1, 'meta rows + point rows + header');
  assert.match(html, /boom &lt;x&gt;/);
});

test('io_uring: a batch larger than the submission batch (submitted early by submitIo) completes in full and in order of data', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-io-'));
  try {
    for (const extra of [{}, { direct: true, fixedBuffers: true }]) {
      const dev = await openIo(`file:${join(dir, 'b.img')}?size=1MiB&bs=4096`, { backend: 'io_uring', ...extra });
      const n = 23;
      const q = await dev.createQueue(32);
      const bufs = Array.from({ length: n }, () => dev.allocBuffer(4096));
      try {
        const run = (op: IoOpcode): number[] => {
          for (let i = 0; i < n; i++) assert.ok(q.submit(op, 3 * i, 1, bufs[i]!, i) >= 0);
          q.ring();
          const seen: number[] = [];
          const deadline = Date.now() + 10_000;
          while (seen.length < n && Date.now() < deadline) {
            q.ring();
            q.poll((tag, status) => {
              assert.equal(status, 0, `tag ${tag}: ${dev.statusName(status)}`);
              seen.push(tag);
            });
          }
          assert.equal(q.outstanding, 0);
          return seen.sort((a, b) => a - b);
        };
        bufs.forEach((b, i) => b.bytes.fill(i + 1));
        assert.deepEqual(run(IoOp.Write), [...Array(n).keys()]);
        bufs.forEach((b) => b.bytes.fill(0));
        assert.deepEqual(run(IoOp.Read), [...Array(n).keys()]);
        bufs.forEach((b, i) =>
          assert.ok(
            b.bytes.every((x) => x === i + 1),
            `block ${3 * i}`,
          ),
        );
      } finally {
        await q.close();
        for (const b of bufs) dev.freeBuffer(b);
        await dev.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
