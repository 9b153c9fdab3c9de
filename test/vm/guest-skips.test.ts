/**
 * The VM suite's skip accounting (guest-skips.ts) and a static check of the guest suite: a guest test never
 * ends early without saying so (a bare `return;` that no t.skip(...) announces would pass without checking).
 * These run on the host, without a VM.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseGuestSkips, unexpectedSkips, type ExpectedSkip } from './guest-skips.js';

const SAMPLE = [
  '▶ guest conformance: driver',
  '  ✔ geometry (3.1ms)',
  '﹣ with an IOMMU: the function has its own group and binds to vfio-pci (0.2ms) # no IOMMU in this run',
  '  ﹣ nested (0.1ms) # SKIP',
  '✔ todo one (0.1ms) # later',
  'ℹ tests 5',
  'ℹ pass 2',
  'ℹ fail 0',
  'ℹ skipped 2',
  'ℹ todo 1',
].join('\n');

test('the spec output of a guest run gives its skipped tests and their reasons', () => {
  assert.deepEqual(parseGuestSkips(SAMPLE), {
    skips: [
      { name: 'with an IOMMU: the function has its own group and binds to vfio-pci', reason: 'no IOMMU in this run' },
      { name: 'nested', reason: 'SKIP' },
    ],
    reported: 2,
  });
});

test('skips are checked against the expected ones, both ways, and against the reported count', () => {
  const iommu: ExpectedSkip = { name: /^with an IOMMU/, reason: /^no IOMMU in this run$/, why: 'no IOMMU' };
  const nested: ExpectedSkip = { name: /^nested$/, reason: /^SKIP$/, why: 'test' };
  assert.deepEqual(unexpectedSkips(SAMPLE, [iommu, nested]), []);
  assert.deepEqual(unexpectedSkips(SAMPLE, [iommu]), ["unexpected skip: 'nested' (SKIP)"]);
  const other: ExpectedSkip = { name: /^hugepages/, reason: /./, why: 'x' };
  assert.deepEqual(unexpectedSkips(SAMPLE, [iommu, nested, other]), ['expected skip did not happen: /^hugepages/ (x)']);
  assert.match(unexpectedSkips(SAMPLE.replace('ℹ skipped 2', 'ℹ skipped 3'), [iommu, nested]).join(), /reports 3 skipped test\(s\) but 2 skip line/);
  assert.match(unexpectedSkips('no summary', []).join(), /printed no skip count/);
});

test('no guest test returns early without announcing a skip', () => {
  const dir = fileURLToPath(new URL('../../../test-guest/', import.meta.url));
  const bad: string[] = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.test.ts'))) {
    const lines = readFileSync(dir + f, 'utf8').split('\n');
    lines.forEach((l, i) => {
      if (!/^\s*(if \(.*\) )?return;/.test(l)) return;
      // every bare return in a guest test file follows a t.skip (helpers that return early live in helpers.ts)
      const prev = lines.slice(Math.max(0, i - 3), i).join('\n');
      if (!/\bt\.skip\(/.test(prev)) bad.push(`${f}:${i + 1}: ${l.trim()}`);
    });
  }
  assert.deepEqual(bad, [], `guest tests that end early without t.skip(reason):\n  ${bad.join('\n  ')}`);
});
