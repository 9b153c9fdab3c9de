import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DmaSegmentTable, SEGMENT_SPAN, SharedDmaMemory } from '../../src/mem/shared-dma.js';
import { DmaAllocationError } from '../../src/mem/dma.js';

describe('SharedDmaMemory', () => {
  it('allocates page-aligned, zeroed memory in segment 1 and above', () => {
    const m = new SharedDmaMemory({ segmentSize: 1 << 20 });
    const a = m.alloc(100);
    assert.equal(a.iova % 4096, 0);
    assert.ok(a.iova >= SEGMENT_SPAN);
    assert.equal(a.size, 100);
    assert.equal(a.bytes.length, 100);
    assert.ok(a.bytes.every((b) => b === 0));
    const b = m.alloc(64, 64);
    assert.equal(b.iova % 64, 0);
    assert.notEqual(a.iova, b.iova);
    const c = m.alloc(4096, 65536);
    assert.equal(c.iova % 65536, 0);
    assert.equal(m.allocatedBytes, 128 + 64 + 4096);
  });

  it('recycles freed memory zeroed and coalesces neighbours', () => {
    const m = new SharedDmaMemory({ segmentSize: 64 * 1024 });
    const bufs = Array.from({ length: 16 }, () => m.alloc(4096));
    assert.equal(m.segments().length, 1);
    for (const b of bufs) b.bytes.fill(0xaa);
    // Free all in an interleaved order; afterwards a full-segment allocation must fit again.
    for (let i = 0; i < 16; i += 2) m.free(bufs[i]!);
    for (let i = 1; i < 16; i += 2) m.free(bufs[i]!);
    assert.equal(m.allocatedBytes, 0);
    const big = m.alloc(64 * 1024);
    assert.equal(m.segments().length, 1);
    assert.ok(big.bytes.every((x) => x === 0));
  });

  it('grows by segments and announces each before alloc returns', () => {
    const seen: number[] = [];
    const m = new SharedDmaMemory({ segmentSize: 8192, onSegment: (i, sab) => seen.push(i, sab.byteLength) });
    const a = m.alloc(8192);
    assert.deepEqual(seen, [1, 8192]);
    const b = m.alloc(4096);
    assert.deepEqual(seen, [1, 8192, 2, 8192]);
    assert.equal(Math.floor(b.iova / SEGMENT_SPAN), 2);
    const c = m.alloc(100000); // bigger than a segment: a segment of its own
    assert.equal(seen[4], 3);
    assert.ok(seen[5]! >= 100000);
    assert.equal(Math.floor(c.iova / SEGMENT_SPAN), 3);
    void a;
  });

  it('rejects double and foreign frees and bad sizes', () => {
    const m = new SharedDmaMemory();
    const a = m.alloc(4096);
    m.free(a);
    assert.throws(() => m.free(a));
    assert.throws(() => m.free({ iova: 123, size: 1, bytes: new Uint8Array(1) }));
    assert.throws(() => m.alloc(0), DmaAllocationError);
    assert.throws(() => m.alloc(10, 3), DmaAllocationError);
    const lim = new SharedDmaMemory({ segmentSize: 8192, maxTotalBytes: 8192 });
    lim.alloc(8192);
    assert.throws(() => lim.alloc(4096), DmaAllocationError);
  });

  it('resolves IOVAs on the controller side with bounds checks', () => {
    const t = new DmaSegmentTable();
    const m = new SharedDmaMemory({ segmentSize: 8192, onSegment: (i, sab) => t.add(i, sab) });
    const a = m.alloc(4096);
    a.bytes[5] = 42;
    const r = t.resolve(a.iova, 4096);
    assert.ok(r);
    assert.equal(r.bytes[r.offset + 5], 42);
    assert.equal(t.resolve(0, 1), null); // null pointer
    assert.equal(t.resolve(4096, 16), null); // below segment 1
    assert.equal(t.resolve(SEGMENT_SPAN + 8192 - 8, 16), null); // crosses the segment end
    assert.equal(t.resolve(5 * SEGMENT_SPAN, 16), null); // unknown segment
    assert.ok(t.resolve(SEGMENT_SPAN + 8192 - 16, 16));
  });
});
