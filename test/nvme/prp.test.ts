import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { PrpError, PrpErrorReason, buildPrps, prpListPagesNeeded, walkPrps, type DmaChunk, type PrpListPage } from '../../src/nvme/prp.js';
import { statusFieldName } from '../../src/nvme/status.js';

const LIST_BASE = 0x7000_0000_0000;

/** Host memory holding PRP list pages, addressed by IOVA. */
class ListMemory {
  readonly pages = new Map<number, Uint8Array>();
  private next = LIST_BASE;
  constructor(readonly pageSize: number) {}
  alloc = (): PrpListPage => {
    const view = new Uint8Array(this.pageSize).fill(0xee);
    const iova = this.next;
    this.next += this.pageSize;
    this.pages.set(iova, view);
    return { iova, view };
  };
  /** Place raw entries at an arbitrary (possibly offset) address. */
  put(iova: number, entries: number[]): void {
    const base = iova - (iova % this.pageSize);
    let view = this.pages.get(base);
    if (!view) this.pages.set(base, (view = new Uint8Array(this.pageSize)));
    const dv = new DataView(view.buffer);
    entries.forEach((e, i) => dv.setBigUint64(iova - base + 8 * i, BigInt(e), true));
  }
  read = (list: number, index: number): number => {
    const addr = list + 8 * index;
    const base = addr - (addr % this.pageSize);
    const view = this.pages.get(base);
    assert.ok(view, `read of unmapped list page 0x${base.toString(16)}`);
    return Number(new DataView(view.buffer).getBigUint64(addr - base, true));
  };
}

function coalesce(ranges: Array<[number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const [a, n] of ranges) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === a) last[1] += n;
    else out.push([a, n]);
  }
  return out;
}

function walkAll(prp1: number, prp2: number, length: number, pageSize: number, mem: ListMemory): Array<[number, number]> {
  const seen: Array<[number, number]> = [];
  walkPrps(prp1, prp2, length, pageSize, mem.read, (a, n) => seen.push([a, n]));
  return seen;
}

test('PRP: transfer within one page leaves PRP2 zero', () => {
  const mem = new ListMemory(4096);
  const r = buildPrps({ iova: 0x10_0200, length: 0xe00 }, 4096, mem.alloc);
  assert.deepEqual(r, { prp1: 0x10_0200, prp2: 0, listPages: [] });
  assert.deepEqual(walkAll(r.prp1, r.prp2, 0xe00, 4096, mem), [[0x10_0200, 0xe00]]);
});

test('PRP: transfer ending in the second page uses PRP2 as a page pointer', () => {
  const mem = new ListMemory(4096);
  const r = buildPrps({ iova: 0x10_0000, length: 8192 }, 4096, mem.alloc);
  assert.equal(r.prp2, 0x10_1000);
  assert.equal(r.listPages.length, 0);
  const r2 = buildPrps({ iova: 0x10_0ffc, length: 8 }, 4096, mem.alloc);
  assert.deepEqual([r2.prp1, r2.prp2], [0x10_0ffc, 0x10_1000]);
});

test('PRP: three pages use a PRP list with the expected bytes', () => {
  const mem = new ListMemory(4096);
  const r = buildPrps({ iova: 0x1_2345_6000, length: 3 * 4096 }, 4096, mem.alloc);
  assert.equal(r.prp1, 0x1_2345_6000);
  assert.equal(r.prp2, LIST_BASE);
  assert.equal(r.listPages.length, 1);
  const v = r.listPages[0]!.view;
  assert.deepEqual([...v.subarray(0, 16)], [0x00, 0x70, 0x45, 0x23, 0x01, 0, 0, 0, 0x00, 0x80, 0x45, 0x23, 0x01, 0, 0, 0]);
  assert.equal(v[16], 0xee); // untouched beyond the entries
});

test('PRP: chained list pages', () => {
  const mem = new ListMemory(4096);
  // 1 + 512 + 1 pages: the list needs 513 entries > 512 per page: first page holds 511 + chain pointer.
  const len = 514 * 4096;
  const r = buildPrps({ iova: 0x4000_0000, length: len }, 4096, mem.alloc);
  assert.equal(r.listPages.length, 2);
  assert.equal(prpListPagesNeeded(0, len, 4096), 2);
  assert.equal(mem.read(r.prp2, 511), r.listPages[1]!.iova);
  assert.equal(mem.read(r.listPages[1]!.iova, 1), 0x4000_0000 + 513 * 4096);
  assert.deepEqual(walkAll(r.prp1, r.prp2, len, 4096, mem), [[0x4000_0000, len]]);
  // exactly 512 list entries fit one page
  assert.equal(prpListPagesNeeded(0, 513 * 4096, 4096), 1);
  assert.equal(prpListPagesNeeded(0, 2 * 4096, 4096), 0);
  assert.equal(prpListPagesNeeded(4092, 8, 4096), 0);
  assert.equal(prpListPagesNeeded(4092, 4100, 4096), 0);
  assert.equal(prpListPagesNeeded(4092, 4101, 4096), 1);
  assert.equal(prpListPagesNeeded(0, (1 + 511 + 511 + 512) * 4096, 4096), 3);
});

test('PRP walker: PRP2 list pointer with a qword-aligned offset, chaining at the end of its page', () => {
  const mem = new ListMemory(4096);
  const list = 0x9000 + 4096 - 16; // two slots left in this page
  mem.put(list, [0x20_0000, 0xa000]); // data entry, then chain pointer
  mem.put(0xa000, [0x30_0000, 0x40_0000]);
  const seen = walkAll(0x10_0800, list, 2048 + 3 * 4096, 4096, mem);
  assert.deepEqual(seen, [
    [0x10_0800, 2048],
    [0x20_0000, 4096],
    [0x30_0000, 4096],
    [0x40_0000, 4096],
  ]);
});

test('PRP walker: malformed pointers raise PrpError with PRP Offset Invalid', () => {
  const mem = new ListMemory(4096);
  const expectErr = (reason: PrpErrorReason, f: () => void) =>
    assert.throws(f, (e: unknown) => {
      assert.ok(e instanceof PrpError);
      assert.equal(e.reason, reason);
      assert.equal(statusFieldName(e.status), 'PRP Offset Invalid');
      assert.ok(e.status & (1 << 14), 'DNR set');
      return true;
    });
  expectErr(PrpErrorReason.Prp1Misaligned, () => walkAll(0x1002, 0, 16, 4096, mem));
  expectErr(PrpErrorReason.Prp2Offset, () => walkAll(0x1000, 0x2200, 8192, 4096, mem));
  expectErr(PrpErrorReason.ListPointerMisaligned, () => walkAll(0x1000, 0x2204, 3 * 4096, 4096, mem));
  mem.put(0x5000, [0x6000, 0x7010]);
  expectErr(PrpErrorReason.ListEntryOffset, () => walkAll(0x1000, 0x5000, 3 * 4096, 4096, mem));
  mem.put(0x8ff8, [0xb008]);
  expectErr(PrpErrorReason.ChainPointerOffset, () => walkAll(0x1000, 0x8ff8, 3 * 4096, 4096, mem));
});

test('PRP builder: input validation', () => {
  const mem = new ListMemory(4096);
  assert.throws(() => buildPrps({ iova: 0x1002, length: 10 }, 4096, mem.alloc), /chunks\[0\]\.iova.*dword/);
  assert.throws(() => buildPrps({ iova: 0x1000, length: 10 }, 3000, mem.alloc), /pageSize/);
  assert.throws(() => buildPrps({ iova: 0x1000, length: 10 }, 2 ** 28, mem.alloc), /pageSize/);
  assert.throws(() => buildPrps({ iova: 0x1000, length: 0 }, 4096, mem.alloc), /chunks\[0\]\.length/);
  assert.throws(() => buildPrps([], 4096, mem.alloc), /at least one/);
  assert.throws(
    () =>
      buildPrps(
        [
          { iova: 0x1000, length: 100 },
          { iova: 0x8000, length: 4096 },
        ],
        4096,
        mem.alloc,
      ),
    /chunks\[0\] must end on a page boundary/,
  );
  assert.throws(
    () =>
      buildPrps(
        [
          { iova: 0x1000, length: 4096 },
          { iova: 0x8100, length: 4096 },
        ],
        4096,
        mem.alloc,
      ),
    /chunks\[1\]\.iova must be page aligned/,
  );
  assert.throws(() => buildPrps({ iova: 0x1000, length: 3 * 4096 }, 4096, () => ({ iova: 0x123, view: new Uint8Array(4096) })), /list page iova/);
  assert.throws(() => prpListPagesNeeded(4096, 1, 4096), /firstOffset/);
});

/** Random PRP-compatible layouts: [chunks, pageSize]. */
const layout = fc
  .record({
    pageShift: fc.constantFrom(12, 16),
    single: fc.boolean(),
    firstDwords: fc.nat(),
    firstPages: fc.integer({ min: 1, max: 64 }),
    middle: fc.array(fc.integer({ min: 1, max: 48 }), { maxLength: 4 }),
    lastLen: fc.integer({ min: 1, max: 8 * 1024 * 1024 }),
    bases: fc.array(fc.integer({ min: 1, max: 2 ** 20 }), { minLength: 6, maxLength: 6 }),
    adjacent: fc.boolean(),
    high: fc.boolean(),
  })
  .map((r) => {
    const pageSize = 2 ** r.pageShift;
    const off = (r.firstDwords * 4) % pageSize;
    const hi = r.high ? 2 ** 40 : 0;
    const page = (i: number) => hi + r.bases[i]! * 64 * pageSize;
    if (r.single) return { pageSize, chunks: [{ iova: page(0) + off, length: r.lastLen }] as DmaChunk[] };
    const chunks: DmaChunk[] = [{ iova: page(0) + off, length: r.firstPages * pageSize - off }];
    let end = page(0) + r.firstPages * pageSize;
    r.middle.forEach((pages, i) => {
      const iova = r.adjacent ? end : page(i + 1);
      chunks.push({ iova, length: pages * pageSize });
      end = iova + pages * pageSize;
    });
    chunks.push({ iova: r.adjacent ? end : page(5), length: r.lastLen });
    return { pageSize, chunks };
  });

test('PRP property: building then walking yields exactly the buffer ranges', () => {
  fc.assert(
    fc.property(layout, ({ pageSize, chunks }) => {
      const mem = new ListMemory(pageSize);
      const total = chunks.reduce((s, c) => s + c.length, 0);
      const r = buildPrps(chunks, pageSize, mem.alloc);
      assert.equal(r.prp1, chunks[0]!.iova);
      assert.equal(r.listPages.length, prpListPagesNeeded(chunks[0]!.iova % pageSize, total, pageSize));
      const seen = walkAll(r.prp1, r.prp2, total, pageSize, mem);
      assert.deepEqual(seen, coalesce(chunks.map((c) => [c.iova, c.length])));
      assert.equal(
        seen.reduce((s, [, n]) => s + n, 0),
        total,
      );
    }),
    { numRuns: 200 },
  );
});

test('PRP property: walking a shorter length visits a prefix of the buffer', () => {
  fc.assert(
    fc.property(layout, fc.double({ min: 0, max: 1, noNaN: true }), ({ pageSize, chunks }, frac) => {
      const mem = new ListMemory(pageSize);
      const total = chunks.reduce((s, c) => s + c.length, 0);
      const r = buildPrps(chunks, pageSize, mem.alloc);
      const len = Math.max(1, Math.floor(total * frac));
      const seen = walkAll(r.prp1, r.prp2, len, pageSize, mem);
      assert.equal(
        seen.reduce((s, [, n]) => s + n, 0),
        len,
      );
      assert.equal(seen[0]![0], chunks[0]!.iova);
    }),
    { numRuns: 100 },
  );
});
