import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fillPattern, checkPattern, describeMismatch } from '../../src/bench/pattern.js';
import { Rng } from '../../src/bench/workload.js';

test('a filled block checks clean and carries LBA, generation and namespace', () => {
  const w = new Uint32Array((4096 * 3) / 4);
  fillPattern(w, 0, 2 ** 33 + 5, 3, 4096, 7, 2);
  assert.equal(checkPattern(w, 0, 2 ** 33 + 5, 3, 4096, 7, 2), -1);
  assert.equal(w[0], 5);
  assert.equal(w[1], 2);
  assert.equal(w[2], 7);
  assert.equal(w[1024], 6); // second block's LBA
});

test('stale generation, wrong LBA, wrong namespace and a flipped bit are all caught', () => {
  const w = new Uint32Array((512 / 4) * 4);
  fillPattern(w, 0, 100, 4, 512, 3, 1);
  assert.equal(checkPattern(w, 0, 100, 4, 512, 4, 1), 0, 'stale generation');
  assert.equal(checkPattern(w, 0, 101, 4, 512, 3, 1), 0, 'misplaced block');
  assert.equal(checkPattern(w, 0, 100, 4, 512, 3, 2), 0, 'other namespace');
  w[128 * 2 + 77]! ^= 1 << 9;
  assert.equal(checkPattern(w, 0, 100, 4, 512, 3, 1), 2, 'bit flip in third block body');
  const m = describeMismatch(w, 0, 100, 2, 512, 3);
  assert.equal(m.lba, 102);
  assert.equal(m.foundLba, 102);
  assert.equal(m.foundGeneration, 3);
});

test('rng is deterministic and in range', () => {
  const a = new Rng(42);
  const b = new Rng(42);
  for (let i = 0; i < 1000; i++) {
    const x = a.below(1000);
    assert.equal(x, b.below(1000));
    assert.ok(x >= 0 && x < 1000);
  }
});
