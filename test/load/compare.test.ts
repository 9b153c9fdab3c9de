/**
 * The homi-vs-PyTorch load comparison (src/bench/load-compare.ts) with stand-ins that really read the files:
 * fake-homi.ts for `homi load --json`, fake-python.ts for bench/load/torch_baselines.py. The numbers in the
 * table and the JSON report are the medians of what the fakes measured and logged, and the ratios are computed
 * from them. Then the real Python script: with torch, on the CPU; without torch, the one-line refusal and
 * skipped baselines.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { datasetSpec, generateDataset } from '../../src/load/dataset.js';
import { LoadResultSchema, fmtRate, fmtRatio, median, type CompareReport, type LoadResult } from '../../src/bench/load-compare.js';

const COMPARE = fileURLToPath(new URL('../../src/bench/load-compare.js', import.meta.url));
const FAKE_HOMI = fileURLToPath(new URL('./fake-homi.js', import.meta.url));
const FAKE_PY = fileURLToPath(new URL('./fake-python.js', import.meta.url));
const SCRIPT = fileURLToPath(new URL('../../../bench/load/torch_baselines.py', import.meta.url));

const root = mkdtempSync(join(tmpdir(), 'homi-compare-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
const dataset = join(root, 'small');
const manifest = generateDataset(dataset, datasetSpec('small', { files: 24, bytes: 64 * 1024 }), { seed: 5, sync: true });
const onTmpfs = statfsSync(root).type === 0x01021994;

const python = spawnSync('python3', ['-c', 'import sys; print(sys.version_info[0])'], { encoding: 'utf8' });
const hasPython = python.error === undefined && python.status === 0;
const torchCheck = hasPython ? spawnSync('python3', ['-c', 'import torch'], { encoding: 'utf8' }) : null;
const hasTorch = torchCheck !== null && torchCheck.status === 0;

function compare(args: string[], env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [COMPARE, '--dataset', dataset, '--homi-cmd', `${process.execPath} ${FAKE_HOMI}`, ...args], {
    encoding: 'utf8',
    timeout: 240_000,
    env: { ...process.env, ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function logged(path: string): LoadResult[] {
  return readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => LoadResultSchema.parse(JSON.parse(l)));
}

test('fake homi and fake torch: interleaved rounds, medians of what they measured, ratios from those', () => {
  const log = join(root, 'runs.log');
  const out = join(root, 'report.json');
  const r = compare(['--paths', 'io_uring,posix', '--python', `${process.execPath} ${FAKE_PY}`, '--rounds', '3', '--cold', '--out', out], { FAKE_HOMI_LOG: log, FAKE_PY_LOG: log });
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(readFileSync(out, 'utf8')) as CompareReport;
  const runs = logged(log);

  // Each round runs every contender once; the order rotates: round 1 homi io_uring, homi posix, python; round 2
  // starts at posix; round 3 at python (which prints its two measured baselines in one run).
  assert.deepEqual(
    runs.map((x) => x.path),
    ['io_uring', 'posix', 'torch:safetensors', 'numpy:fromfile', 'posix', 'torch:safetensors', 'numpy:fromfile', 'io_uring', 'torch:safetensors', 'numpy:fromfile', 'io_uring', 'posix'],
  );
  assert.equal(report.files, 24);
  assert.equal(report.bytes, manifest.totalBytes);
  assert.equal(report.rounds, 3);

  const name = (p: string): string => (p.includes(':') ? p : `homi:${p}`);
  const measured = new Map<string, LoadResult[]>();
  for (const x of runs) measured.set(name(x.path), [...(measured.get(name(x.path)) ?? []), x]);
  const med = new Map(
    [...measured].map(([k, v]) => [
      k,
      { mib: median(v.map((x) => x.mibPerSec)), fps: median(v.map((x) => x.filesPerSec)), s: median(v.map((x) => x.seconds)), p99: median(v.map((x) => x.latency.p99)) },
    ]),
  );
  const bestTorch = ['torch:safetensors', 'numpy:fromfile'].reduce((a, b) => (med.get(a)!.mib >= med.get(b)!.mib ? a : b));
  assert.equal(report.bestTorch, bestTorch);

  for (const [k, m] of med) {
    const c = report.contenders.find((x) => x.name === k)!;
    assert.ok(c !== undefined, k);
    assert.equal(c.rounds.length, 3, k);
    assert.ok(m.mib > 0 && m.s > 0, `${k}: real measurements`);
    assert.equal(c.median!.mibPerSec, m.mib, k);
    assert.equal(c.median!.filesPerSec, m.fps, k);
    assert.equal(c.median!.seconds, m.s, k);
    assert.equal(c.median!.p99, m.p99, k);
    assert.equal(c.median!.files, 24);
    assert.equal(c.median!.bytes, manifest.totalBytes);
    assert.equal(c.vsTorch, m.mib / med.get(bestTorch)!.mib, k);
    assert.equal(c.vsIoUring, m.mib / med.get('homi:io_uring')!.mib, k);
    // The table's row shows the same numbers.
    const row = r.stdout.split('\n').find((l) => l.startsWith(k + ' '));
    assert.ok(row !== undefined, `${k} row in\n${r.stdout}`);
    const cells = row.trim().split(/\s+/);
    assert.equal(cells[1], '24');
    assert.equal(cells[5], fmtRate(m.mib), `${k} MiB/s`);
    assert.equal(cells[4], fmtRate(m.fps), `${k} files/s`);
    assert.equal(cells[8], fmtRatio(m.mib / med.get(bestTorch)!.mib), `${k} x torch`);
    assert.equal(cells[9], fmtRatio(m.mib / med.get('homi:io_uring')!.mib), `${k} x io_uring`);
  }
  assert.equal(report.contenders.find((c) => c.name === 'homi:io_uring')!.vsIoUring, 1);
  assert.equal(report.contenders.find((c) => c.name === bestTorch)!.vsTorch, 1);
  // Baselines the fake python skipped: in the table as skipped, with the reason below it.
  for (const b of ['torch:load-mmap', 'python:read', 'torch:gds']) {
    const c = report.contenders.find((x) => x.name === b)!;
    assert.equal(c.median, null);
    assert.equal(c.skipped, 'fake: not measured');
    assert.match(r.stdout, new RegExp(`^${b}\\s+skipped`, 'm'));
  }
  assert.match(r.stdout, /^ {2}homi:posix: fake homi --path posix: readFileSync per file; cache: (page cache dropped|not dropped)/m);
  assert.ok(report.contenders.find((c) => c.name === 'homi:posix')!.cold.every((l) => l.endsWith('; homi load says: fake: cold asked')));
  // --cold: before each homi run the files left the page cache (or it says why they could not).
  const pages = manifest.files.reduce((a, f) => a + Math.ceil(f.size / 4096), 0);
  for (const k of ['homi:io_uring', 'homi:posix']) {
    const c = report.contenders.find((x) => x.name === k)!;
    assert.equal(c.cold.length, 3);
    for (const line of c.cold) {
      assert.match(line, onTmpfs ? /^not dropped: .* tmpfs/ : /^page cache dropped \(posix_fadvise DONTNEED\): 0\.0% of \d+ pages resident after; homi load says: fake: cold asked$/);
      if (!onTmpfs) assert.equal(Number(/of (\d+) pages/.exec(line)![1]), pages);
    }
  }
  assert.match(r.stdout, /cold \(page cache dropped before each run\)/);
});

test('a homi path that fails, or fails a file, is shown failed with its reason; the others still run', () => {
  const out = join(root, 'fail.json');
  const r = compare(['--paths', 'io_uring,posix,driver', '--python', 'none', '--rounds', '1', '--out', out, '--verify'], { FAKE_HOMI_FAIL: 'posix', FAKE_HOMI_FILE_ERROR: 'driver' });
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(readFileSync(out, 'utf8')) as CompareReport;
  const posix = report.contenders.find((c) => c.name === 'homi:posix')!;
  assert.equal(posix.median, null);
  assert.match(posix.error!, /^round 1: exit 1, no result line: homi: load --path posix: fake failure$/);
  assert.match(r.stdout, /^homi:posix\s+failed/m);
  const io = report.contenders.find((c) => c.name === 'homi:io_uring')!;
  assert.ok(io.median!.mibPerSec > 0);
  assert.equal(io.vsIoUring, 1);
  assert.equal(io.vsTorch, null);
  assert.equal(io.rounds[0]!.verified, true);
  assert.match(io.cold[0]!, /homi load says: fake: warm asked/);
  const driver = report.contenders.find((c) => c.name === 'homi:driver')!;
  assert.equal(driver.median, null);
  assert.match(driver.error!, /^round 1: 1 file\(s\) failed, the first: \{"path":".*small-00000\.safetensors","reason":"fake: unreadable"\}$/);
  assert.match(r.stdout, /^homi:driver\s+failed/m);
  assert.deepEqual(
    report.contenders.map((c) => c.name),
    ['homi:io_uring', 'homi:posix', 'homi:driver'],
  );
  assert.match(r.stdout, /note: PyTorch baselines not run \(--python none\)/);
});

test('load-compare refuses bad arguments with one line', () => {
  for (const [args, re] of [
    [['--to', 'disk'], /^load-compare: --to disk: one of host, gpu$/],
    [['--rounds', '0'], /^load-compare: --rounds 0/],
    [['--baselines', 'torch:nope'], /^load-compare: --baselines: unknown torch:nope/],
    [['--homi-args', '--qd'], /^load-compare: .*--homi-args.* ambiguous.*attach a value/],
  ] as Array<[string[], RegExp]>) {
    const r = compare(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr.trim(), re);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
  const r = spawnSync(process.execPath, [COMPARE], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--dataset <dir> is required/);
});

test(
  'torch_baselines.py without torch: one line on stderr, every baseline printed as skipped',
  { skip: !hasPython ? 'python3 not found' : hasTorch ? 'torch is installed here (the CPU run below covers the script)' : false },
  () => {
    const r = spawnSync('python3', [SCRIPT, '--device', 'cpu', dataset], { encoding: 'utf8' });
    assert.equal(r.status, 3, r.stderr);
    assert.deepEqual(r.stderr.trim().split('\n'), ['torch_baselines: torch is not installed (import torch failed): every baseline skipped']);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => LoadResultSchema.parse(JSON.parse(l)));
    assert.deepEqual(
      lines.map((l) => [l.path, l.target, l.files, l.skipped]),
      ['torch:safetensors', 'torch:load-mmap', 'numpy:fromfile', 'python:read', 'torch:gds'].map((b) => [b, 'host', 0, 'torch is not installed (import torch failed): every baseline skipped']),
    );
    // Through load-compare: the baselines are listed as skipped and the reason is a note.
    const c = compare(['--paths', 'io_uring', '--python', 'python3', '--rounds', '2', '--json']);
    assert.equal(c.code, 0, c.stderr);
    const report = JSON.parse(c.stdout) as CompareReport;
    for (const b of report.contenders.filter((x) => x.side === 'torch')) {
      assert.equal(b.median, null);
      assert.match(b.skipped!, /torch is not installed/);
      assert.equal(b.rounds.length, 2);
    }
    assert.equal(report.bestTorch, null);
    assert.ok(report.notes.some((n) => /torch is not installed/.test(n)));
    assert.ok(report.notes.some((n) => /no PyTorch baseline measured/.test(n)));
    assert.match(report.table, /^torch:safetensors\s+skipped/m);
    // bad arguments: exit 2
    assert.equal(spawnSync('python3', [SCRIPT, '--baselines', 'nope', dataset], { encoding: 'utf8' }).status, 2);
  },
);

test(
  'torch_baselines.py on the CPU: every baseline but cuFile measures and verifies',
  { skip: !hasPython ? 'python3 not found' : !hasTorch ? `torch not installed here (python3 -c 'import torch' fails): the CPU run of the PyTorch baselines is skipped` : false },
  () => {
    const r = spawnSync('python3', [SCRIPT, '--device', 'cpu', '--verify', '--cold', '--pt-dir', join(root, 'pt'), dataset], { encoding: 'utf8', timeout: 300_000 });
    assert.equal(r.status, 0, r.stderr);
    const lines = new Map(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => LoadResultSchema.parse(JSON.parse(l)))
        .map((l) => [l.path, l]),
    );
    for (const b of ['numpy:fromfile', 'python:read', 'torch:load-mmap']) {
      const l = lines.get(b)!;
      assert.equal(l.error, undefined, `${b}: ${l.error}`);
      if (l.skipped !== undefined) continue; // numpy (say) missing: skipped with its reason
      assert.equal(l.files, 24);
      assert.equal(l.verified, 24);
      assert.ok(l.seconds > 0 && l.mibPerSec > 0);
      assert.ok(l.cold !== undefined);
      if (b !== 'torch:load-mmap') assert.equal(l.bytes, manifest.totalBytes);
      else assert.ok(l.bytes > manifest.totalBytes, '.pt twins are larger than the files');
    }
    const st = lines.get('torch:safetensors')!;
    if (st.skipped === undefined) {
      assert.equal(st.error, undefined, st.error);
      assert.equal(st.verified, 24);
      assert.ok(st.bytes < manifest.totalBytes, 'the tensors bytes, without headers');
    }
    assert.match(lines.get('torch:gds')!.skipped!, /--device cuda/);
  },
);
