import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  SGL_DESCRIPTOR_SIZE,
  SglError,
  SglType,
  SglWalkFlags,
  buildSgl,
  decodeSglDescriptor,
  decodeSglDescriptorDwords,
  encodeSglDescriptor,
  sglDescriptorDwords,
  walkSgl,
  type DmaChunk,
  type SglDescriptor,
  type SglSegmentPage,
} from '../../src/nvme/sgl.js';
import { PSDT_SGL_MPTR_CONTIG, SQE_DW_DPTR0, decodeSqe, encodeSqe } from '../../src/nvme/sqe.js';
import { statusFieldName } from '../../src/nvme/status.js';

const SEG_BASE = 0x7000_0000_0000;
const SEG_STRIDE = 0x1_0000;

/** Host memory holding SGL segments. */
class SegMemory {
  readonly segs: Uint8Array[] = [];
  constructor(private readonly descriptorsPerSegment: () => number) {}
  alloc = (): SglSegmentPage => {
    const view = new Uint8Array(this.descriptorsPerSegment() * SGL_DESCRIPTOR_SIZE).fill(0xee);
    this.segs.push(view);
    return { iova: SEG_BASE + (this.segs.length - 1) * SEG_STRIDE, view };
  };
  /** Place descriptors at a given address (creates the segment). */
  put(iova: number, descs: SglDescriptor[]): void {
    const idx = (iova - SEG_BASE) / SEG_STRIDE;
    const view = new Uint8Array(descs.length * SGL_DESCRIPTOR_SIZE);
    descs.forEach((d, i) => encodeSglDescriptor(d, view, i * SGL_DESCRIPTOR_SIZE));
    this.segs[idx] = view;
  }
  read = (iova: number, into: Uint8Array): void => {
    const idx = Math.floor((iova - SEG_BASE) / SEG_STRIDE);
    const off = iova - SEG_BASE - idx * SEG_STRIDE;
    const view = this.segs[idx];
    assert.ok(view && off + 16 <= view.length, `read outside a segment at 0x${iova.toString(16)}`);
    into.set(view.subarray(off, off + 16));
  };
}

function walkAll(dptr: number[], length: number, mem: SegMemory, flags = 0): Array<[number, number, boolean]> {
  const seen: Array<[number, number, boolean]> = [];
  walkSgl(dptr, 0, length, mem.read, (a, n, d) => seen.push([a, n, d]), flags);
  return seen;
}

const dblk = (address: number, length: number): SglDescriptor => ({ type: SglType.DataBlock, subtype: 0, address, length });

test('SGL descriptor: byte layout (type in identifier bits 7:4)', () => {
  const out = new Uint8Array(16);
  encodeSglDescriptor({ type: SglType.LastSegment, subtype: 0, address: 0x1_0203_0405, length: 0x30 }, out);
  assert.deepEqual([...out], [0x05, 0x04, 0x03, 0x02, 0x01, 0, 0, 0, 0x30, 0, 0, 0, 0, 0, 0, 0x30]);
  assert.deepEqual(decodeSglDescriptor(out), { type: 3, subtype: 0, address: 0x1_0203_0405, length: 0x30 });
  const dws = sglDescriptorDwords(dblk(0xdead_b000, 4096));
  assert.deepEqual(dws, [0xdead_b000, 0, 4096, 0]);
  const bb = sglDescriptorDwords({ type: SglType.BitBucket, subtype: 0, address: 0, length: 512 });
  assert.equal(bb[3], 0x1000_0000);
  assert.deepEqual(decodeSglDescriptorDwords(sglDescriptorDwords({ type: 2, subtype: 1, address: 2 ** 40, length: 7 })), {
    type: 2,
    subtype: 1,
    address: 2 ** 40,
    length: 7,
  });
  assert.throws(() => encodeSglDescriptor({ type: 16, subtype: 0, address: 0, length: 0 }, out), /type/);
  assert.throws(() => encodeSglDescriptor(dblk(0, 2 ** 32), out), /length/);
});

test('SGL builder: one chunk is a Data Block in SGL1; SQE round trip', () => {
  const mem = new SegMemory(() => 256);
  const r = buildSgl({ iova: 0x12_3456, length: 777 }, mem.alloc);
  assert.equal(r.psdt, PSDT_SGL_MPTR_CONTIG);
  assert.equal(r.segments.length, 0);
  const dw = new Uint32Array(16);
  encodeSqe({ opcode: 2, cid: 9, psdt: r.psdt, dptr: r.dptr }, dw);
  assert.equal((dw[0]! >>> 14) & 3, 1);
  assert.deepEqual(decodeSqe(dw).dptr, r.dptr);
  const seen: Array<[number, number]> = [];
  walkSgl(dw, SQE_DW_DPTR0, 777, mem.read, (a, n) => seen.push([a, n]));
  assert.deepEqual(seen, [[0x12_3456, 777]]);
});

test('SGL builder: several chunks give a Last Segment of Data Blocks, chained when needed', () => {
  const mem = new SegMemory(() => 2);
  const chunks = [
    { iova: 0x1001, length: 3 },
    { iova: 0x5000, length: 100 },
    { iova: 0x9000, length: 5 },
  ];
  const r = buildSgl(chunks, mem.alloc);
  assert.equal(r.segments.length, 2);
  const sgl1 = decodeSglDescriptorDwords(r.dptr);
  assert.deepEqual(sgl1, { type: SglType.Segment, subtype: 0, address: SEG_BASE, length: 32 });
  assert.deepEqual(decodeSglDescriptor(mem.segs[0]!, 0), dblk(0x1001, 3));
  assert.deepEqual(decodeSglDescriptor(mem.segs[0]!, 16), {
    type: SglType.LastSegment,
    subtype: 0,
    address: SEG_BASE + SEG_STRIDE,
    length: 32,
  });
  assert.deepEqual(walkAll(r.dptr, 108, mem), [
    [0x1001, 3, false],
    [0x5000, 100, false],
    [0x9000, 5, false],
  ]);
  const mem2 = new SegMemory(() => 256);
  const r2 = buildSgl(chunks, mem2.alloc);
  assert.deepEqual(decodeSglDescriptorDwords(r2.dptr), { type: SglType.LastSegment, subtype: 0, address: SEG_BASE, length: 48 });
});

test('SGL walker: bit buckets, excess, and validation errors', () => {
  const mem = new SegMemory(() => 4);
  mem.put(SEG_BASE, [dblk(0x1000, 10), { type: SglType.BitBucket, subtype: 0, address: 0, length: 6 }, dblk(0x3000, 4)]);
  const last = sglDescriptorDwords({ type: SglType.LastSegment, subtype: 0, address: SEG_BASE, length: 48 });
  assert.deepEqual(walkAll(last, 20, mem), [
    [0x1000, 10, false],
    [0, 6, true],
    [0x3000, 4, false],
  ]);
  const expectErr = (name: string, f: () => void) =>
    assert.throws(f, (e: unknown) => {
      assert.ok(e instanceof SglError, String(e));
      assert.equal(statusFieldName(e.status), name);
      return true;
    });
  expectErr('SGL Descriptor Type Invalid', () => walkAll(last, 20, mem, SglWalkFlags.HostToController));
  expectErr('Data SGL Length Invalid', () => walkAll(last, 21, mem));
  expectErr('Data SGL Length Invalid', () => walkAll(last, 19, mem));
  assert.deepEqual(walkAll(last, 12, mem, SglWalkFlags.AllowExcess), [
    [0x1000, 10, false],
    [0, 2, true],
  ]);
  expectErr('SGL Descriptor Type Invalid', () => walkAll(sglDescriptorDwords({ type: 0x4, subtype: 0, address: 0, length: 16 }), 16, mem));
  expectErr('SGL Descriptor Type Invalid', () => walkAll(sglDescriptorDwords({ type: 0, subtype: 1, address: 0, length: 16 }), 16, mem));
  expectErr('Invalid SGL Segment Descriptor', () => walkAll(sglDescriptorDwords({ type: SglType.LastSegment, subtype: 0, address: SEG_BASE, length: 40 }), 16, mem));
  expectErr('Invalid SGL Segment Descriptor', () => walkAll(sglDescriptorDwords({ type: SglType.LastSegment, subtype: 0, address: SEG_BASE + 4, length: 16 }), 16, mem));
  // segment descriptor inside a last segment
  mem.put(SEG_BASE + SEG_STRIDE, [dblk(0x1000, 8), { type: SglType.Segment, subtype: 0, address: SEG_BASE, length: 16 }]);
  expectErr('Invalid SGL Segment Descriptor', () => walkAll(sglDescriptorDwords({ type: SglType.LastSegment, subtype: 0, address: SEG_BASE + SEG_STRIDE, length: 32 }), 24, mem));
  // segment descriptor that is not last in its segment
  mem.put(SEG_BASE + 2 * SEG_STRIDE, [{ type: SglType.LastSegment, subtype: 0, address: SEG_BASE, length: 16 }, dblk(0x1000, 8)]);
  expectErr('Invalid SGL Segment Descriptor', () => walkAll(sglDescriptorDwords({ type: SglType.Segment, subtype: 0, address: SEG_BASE + 2 * SEG_STRIDE, length: 32 }), 18, mem));
  // a segment that chains to itself forever
  mem.put(SEG_BASE + 3 * SEG_STRIDE, [{ type: SglType.Segment, subtype: 0, address: SEG_BASE + 3 * SEG_STRIDE, length: 16 }]);
  expectErr('Invalid Number of SGL Descriptors', () => walkAll(sglDescriptorDwords({ type: SglType.Segment, subtype: 0, address: SEG_BASE + 3 * SEG_STRIDE, length: 16 }), 8, mem));
  expectErr('SGL Data Block Granularity Invalid', () => walkAll(sglDescriptorDwords(dblk(0x1002, 8)), 8, mem, SglWalkFlags.DwordAligned));
});

const chunkList = fc.array(fc.record({ iova: fc.integer({ min: 0, max: 2 ** 45 }), length: fc.integer({ min: 1, max: 4 * 1024 * 1024 }) }), { minLength: 1, maxLength: 40 });

test('SGL property: building then walking yields exactly the chunks, in order', () => {
  fc.assert(
    fc.property(chunkList, fc.integer({ min: 2, max: 8 }), fc.boolean(), (chunks: DmaChunk[], perSeg, big) => {
      const mem = new SegMemory(() => (big ? 256 : perSeg));
      const total = chunks.reduce((s, c) => s + c.length, 0);
      const r = buildSgl(chunks, mem.alloc);
      const seen = walkAll(r.dptr, total, mem);
      assert.deepEqual(
        seen,
        chunks.map((c) => [c.iova, c.length, false]),
      );
    }),
    { numRuns: 200 },
  );
});

test('SGL property: descriptor encode/decode round trip', () => {
  fc.assert(
    fc.property(
      fc.record({
        type: fc.integer({ min: 0, max: 15 }),
        subtype: fc.integer({ min: 0, max: 15 }),
        address: fc.maxSafeNat(),
        length: fc.integer({ min: 0, max: 0xffff_ffff }),
      }),
      (d) => {
        const b = new Uint8Array(40);
        encodeSglDescriptor(d, b, 7);
        assert.deepEqual(decodeSglDescriptor(b, 7), { ...d });
        assert.deepEqual(decodeSglDescriptorDwords(sglDescriptorDwords(d)), { ...d });
      },
    ),
    { numRuns: 200 },
  );
});

test('SGL builder: chunks longer than 2 GiB are split into several Data Blocks', () => {
  const mem = new SegMemory(() => 16);
  const len = 2 ** 31 + 5;
  const r = buildSgl({ iova: 0x1000, length: len }, mem.alloc);
  assert.equal(r.segments.length, 1);
  assert.deepEqual(decodeSglDescriptorDwords(r.dptr), { type: SglType.LastSegment, subtype: 0, address: SEG_BASE, length: 32 });
  assert.deepEqual(walkAll(r.dptr, len, mem), [
    [0x1000, 2 ** 31, false],
    [0x1000 + 2 ** 31, 5, false],
  ]);
});
