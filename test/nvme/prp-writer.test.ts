/**
 * writePrps (src/nvme/prp.ts), the allocation-free PRP writer of the driver and homid's mediated path: what it
 * writes is what the general builder (buildPrps) writes, and walking it gives back exactly the transfer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { buildPrps, prpListPagesNeeded, walkPrps, writePrps, type PrpListPage } from '../../src/nvme/prp.js';

const LIST_IOVA = 0x7000_0000_0000;

test('writePrps: PRP2 is 0, the second page, or the list; chained list pages; same result as buildPrps', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(4096, 8192),
      fc.integer({ min: 0, max: 2 ** 20 }),
      fc.integer({ min: 0, max: 1023 }),
      fc.integer({ min: 1, max: 3 * 2 ** 20 }),
      (pageSize, page, dwordOffset, length) => {
        const addr = 0x1_0000_0000 + page * pageSize + ((dwordOffset * 4) % pageSize);
        const pages = prpListPagesNeeded(addr % pageSize, length, pageSize);
        const words = new Uint32Array(Math.max(1, pages) * (pageSize / 4)).fill(0xeeeeeeee);
        const prp2 = writePrps(addr, length, pageSize, words, 0, LIST_IOVA);
        // the general builder, list pages one after another at the same IOVAs
        const views: Uint8Array[] = [];
        const built = buildPrps({ iova: addr, length }, pageSize, (): PrpListPage => {
          const view = new Uint8Array(pageSize).fill(0xee);
          views.push(view);
          return { iova: LIST_IOVA + (views.length - 1) * pageSize, view };
        });
        assert.equal(prp2, built.prp2);
        assert.equal(views.length, pages);
        const mine = new Uint8Array(words.buffer, 0, pages * pageSize);
        for (let i = 0; i < pages; i++) assert.deepEqual(mine.subarray(i * pageSize, (i + 1) * pageSize), views[i]);
        // walking the PRPs gives back [addr, addr + length)
        const read = (list: number, index: number): number => {
          const w = (list - LIST_IOVA) / 4 + index * 2;
          return words[w]! + words[w + 1]! * 2 ** 32;
        };
        let next = addr;
        walkPrps(addr, prp2, length, pageSize, read, (a, n) => {
          assert.equal(a, next);
          next += n;
        });
        assert.equal(next, addr + length);
      },
    ),
    { numRuns: 300 },
  );
});

test('writePrps writes the list from the word it is given, and nothing when two pages suffice', () => {
  const words = new Uint32Array(4096 / 2).fill(7); // two list pages' worth of words
  assert.equal(writePrps(0x10000, 4096, 4096, words, 0, 0), 0);
  assert.equal(writePrps(0x10200, 4096, 4096, words, 0, 0), 0x11000);
  assert.ok(
    words.every((w) => w === 7),
    'no list written',
  );
  assert.equal(writePrps(0x10000, 3 * 4096, 4096, words, 1024, 0x9000), 0x9000);
  assert.deepEqual([...words.subarray(1024, 1028)], [0x11000, 0, 0x12000, 0]);
  assert.equal(words[0], 7);
});
