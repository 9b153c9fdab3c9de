// ublk-bench's pure parts: device arguments, the rows and their interleaved order, timeout counting, medians and
// ratios against the native rows. No VM here (the guest run is recorded in docs/BENCHMARKS.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { countIoTimeouts } from '../../src/bench/vm-bench.js';
import { benchRows, homidToml, parseDev, parseOptions, phasePlan, runOrder, summarizeRows, type BenchDevice, type RowRecord } from '../../src/bench/ublk-bench.js';

const devs: BenchDevice[] = [
  { id: 'native', label: 'native /dev/nvme0n1', path: '/dev/nvme0n1' },
  { id: 'ublk', label: 'ublk', path: '/dev/ublkb0' },
];

test('--dev LABEL=PATH: labels and /dev paths only, native reserved, no duplicates', () => {
  assert.deepEqual(parseDev('ublk=/dev/ublkb0'), { id: 'ublk', label: 'ublk', path: '/dev/ublkb0' });
  assert.throws(() => parseDev('/dev/ublkb0'), /LABEL=\/dev\/PATH/);
  assert.throws(() => parseDev('x=/tmp/file'), /LABEL=\/dev\/PATH/);
  assert.throws(() => parseDev('x=/dev/../etc/passwd'), /LABEL=\/dev\/PATH/);
  assert.throws(() => parseDev('a b=/dev/x'), /LABEL=\/dev\/PATH/);
  assert.throws(() => parseDev('native=/dev/x'), /native/);
  assert.throws(() => parseOptions(['--dev', 'a=/dev/x', '--dev', 'a=/dev/y']), /used twice/);
  const o = parseOptions(['--in-guest', '--time', '2', '--reps', '1', '--dev', 'ublk=/dev/ublkb0', '--loop', '64', '--modules', 'ublk_drv,null_blk']);
  assert.equal(o.inGuest, true);
  assert.equal(o.timeSec, 2);
  assert.equal(o.loopMiB, 64);
  assert.deepEqual(o.modules, ['ublk_drv', 'null_blk']);
  assert.throws(() => parseOptions(['--time', '0']), /positive/);
  assert.throws(() => parseOptions(['--bogus']), /unknown option/);
});

test('rows: every device x fio/homi x qd 1/32, io_uring O_DIRECT, devices alternating fastest', () => {
  const rows = benchRows(devs);
  assert.equal(rows.length, 8);
  assert.deepEqual(
    rows.slice(0, 4).map((r) => r.id),
    ['native/fio/qd1', 'ublk/fio/qd1', 'native/homi/qd1', 'ublk/homi/qd1'],
  );
  const fio = rows.find((r) => r.id === 'ublk/fio/qd32')!;
  assert.ok(fio.spec.args.includes('--filename=/dev/ublkb0') && fio.spec.args.includes('--ioengine=io_uring') && fio.spec.args.includes('--direct=1'));
  assert.equal(fio.qd, 32);
  const homi = rows.find((r) => r.id === 'native/homi/qd32')!;
  assert.deepEqual(homi.spec.args.slice(1, 3), ['perf', '/dev/nvme0n1']);
  assert.ok(homi.spec.args.join(' ').endsWith('--backend io_uring --direct'));
  // interleaved: every rep runs every row once, each rep starting one row later
  const order = runOrder(rows, 3);
  assert.equal(order.length, 24);
  for (let rep = 0; rep < 3; rep++) {
    const ids = order.filter((x) => x.rep === rep).map((x) => x.row.id);
    assert.equal(new Set(ids).size, 8);
    assert.equal(ids[0], rows[rep]!.id);
  }
});

test('kernel timeout lines: nvme and ublk timeouts count, the command line does not', () => {
  const log = [
    '[    0.000000] Command line: console=ttyS0 nvme_core.io_timeout=4',
    '[   34.5] nvme nvme0: I/O tag 320 (d140) opcode 0x2 (I/O Cmd) QID 1 timeout, aborting req_op:READ(0) size:4096',
    '[   34.6] nvme nvme0: Abort status: 0x0',
    '[   39.6] nvme nvme0: I/O tag 320 (d140) opcode 0x2 (I/O Cmd) QID 1 timeout, reset controller',
    '[   50.0] ublk_drv: ublkb0: request timed out',
  ].join('\n');
  assert.equal(countIoTimeouts(log), 3);
  assert.equal(countIoTimeouts(''), 0);
});

test('summary: medians over ok runs, ratios against the native row of the same tool and qd, timeouts summed', () => {
  const rows = benchRows(devs);
  const rec = (row: string, rep: number, iops: number, extra: Partial<RowRecord> = {}): RowRecord => ({
    row,
    rep,
    ok: true,
    iops,
    mibps: iops / 256,
    p50us: 100,
    p99us: 200,
    guestBusy: 0.5,
    toolCpu: '',
    ioTimeouts: 0,
    wallSec: 6,
    ...extra,
  });
  const records = [
    rec('native/fio/qd32', 0, 1000),
    rec('native/fio/qd32', 1, 3000),
    rec('native/fio/qd32', 2, 2000, { ioTimeouts: 2 }),
    rec('ublk/fio/qd32', 0, 1500),
    rec('ublk/fio/qd32', 1, 1700),
    { ...rec('ublk/fio/qd32', 2, NaN), ok: false, error: 'exit 1' },
    rec('native/homi/qd32', 0, 4000),
  ];
  const s = summarizeRows(rows, devs, records);
  const n = s.find((x) => x.row === 'native/fio/qd32')!;
  assert.equal(n.iops, 2000);
  assert.equal(n.ioTimeouts, 2);
  assert.equal(n.vsNative, 1);
  const u = s.find((x) => x.row === 'ublk/fio/qd32')!;
  assert.equal(u.iops, 1600);
  assert.equal(u.vsNative, 0.8);
  assert.equal(u.failed, 1);
  assert.deepEqual(u.errors, ['exit 1']);
  assert.ok(Number.isNaN(s.find((x) => x.row === 'ublk/homi/qd32')!.vsNative));
});

test('--homid-ublk: options, the ublk label reserved, depth enough for qd 32', () => {
  const o = parseOptions(['--homid-ublk', '--ublk-depth', '32', '--ublk-max-io-kib', '8']);
  assert.equal(o.homidUblk, true);
  assert.equal(o.ublkDepth, 32);
  assert.equal(o.ublkMaxIoKib, 8);
  const d = parseOptions([]);
  assert.equal(d.homidUblk, false);
  assert.equal(d.ublkDepth, 64);
  assert.throws(() => parseOptions(['--homid-ublk', '--ublk-depth', '16']), /at least 32/);
  assert.throws(() => parseOptions(['--homid-ublk', '--dev', 'ublk=/dev/ublkb0']), /homid's ublk device/);
  assert.throws(() => parseOptions(['--ublk-depth', '0']), /positive/);
  assert.equal(d.ublkSwitch, 'rep');
  assert.equal(parseOptions(['--ublk-switch', 'block']).ublkSwitch, 'block');
  assert.throws(() => parseOptions(['--ublk-switch', 'sometimes']), /rep or block/);
});

test('phases: every rep has a native and a ublk phase, ABBA, each row once per rep, rotated inside its phase', () => {
  const rows = benchRows([...devs, { id: 'loop', label: 'loop', path: '/dev/loop0' }]);
  const plan = phasePlan(rows, 4, 'ublk');
  assert.deepEqual(
    plan.map((p) => `${p.rep}${p.phase}`),
    ['0native', '0ublk', '1ublk', '1native', '2native', '2ublk', '3ublk', '3native'],
  );
  for (const p of plan) {
    // the ublk rows run only while homid serves ublk; everything else only while nvme owns the controller
    for (const r of p.rows) assert.equal(r.device === 'ublk', p.phase === 'ublk', `${r.id} in ${p.phase}`);
    assert.equal(p.rows.length, p.phase === 'ublk' ? 4 : 8);
  }
  for (let rep = 0; rep < 4; rep++) {
    const ids = plan.filter((p) => p.rep === rep).flatMap((p) => p.rows.map((r) => r.id));
    assert.equal(ids.length, rows.length);
    assert.equal(new Set(ids).size, rows.length);
  }
  const u0 = plan.find((p) => p.rep === 0 && p.phase === 'ublk')!.rows.map((r) => r.id);
  const u1 = plan.find((p) => p.rep === 1 && p.phase === 'ublk')!.rows.map((r) => r.id);
  assert.deepEqual(u1, [...u0.slice(1), u0[0]]);
  // block: one homid session for every ublk rep, native rep 1 before it and the others after
  const block = phasePlan(rows, 3, 'ublk', 'block');
  assert.deepEqual(
    block.map((p) => `${p.rep}${p.phase}`),
    ['0native', '0ublk', '1ublk', '2ublk', '1native', '2native'],
  );
  for (let rep = 0; rep < 3; rep++) assert.equal(new Set(block.filter((p) => p.rep === rep).flatMap((p) => p.rows.map((r) => r.id))).size, rows.length);
  // no ublk device: native phases only
  assert.deepEqual(
    phasePlan(benchRows([devs[0]!]), 2, 'ublk').map((p) => p.phase),
    ['native', 'native'],
  );
});

test("homid's TOML: the controller by PCI address in uio mode, no [[ublk]] (homi ublk add serves it)", () => {
  const t = homidToml('/tmp/x/homid.sock', '0000:00:04.0');
  assert.match(t, /uri = "pci:0000:00:04\.0\?mode=uio"/);
  assert.match(t, /socket = "\/tmp\/x\/homid.sock"/);
  assert.doesNotMatch(t, /\[\[ublk\]\]/);
  assert.throws(() => homidToml('/tmp/s', '0000:00:04.0"\nx = 1'), /PCI address/);
});
