/** NVM I/O: data paths (PRP, SGL), formats, namespaces, backings, errors, queue mechanics. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QueuePair, TestHost, sctSc, sleep } from './helper.js';
import { DSM_ATTR_DEALLOCATE, NvmOpcode } from '../../src/nvme/opcodes.js';
import { GenericStatus as G, Sct } from '../../src/nvme/status.js';
import { statusDnr } from '../../src/nvme/cqe.js';
import { PSDT_SGL_MPTR_CONTIG } from '../../src/nvme/sqe.js';
import { SglType, SglSubtype, encodeSglDescriptor, sglDescriptorDwords } from '../../src/nvme/sgl.js';

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

const rw = (opcode: number, nsid: number, slba: number, nlb: number, prp1: number, prp2 = 0) => ({
  opcode,
  nsid,
  prp1,
  prp2,
  cdw10: slba >>> 0,
  cdw11: Math.floor(slba / 2 ** 32),
  cdw12: nlb - 1,
});

describe('emu I/O, memory backing', () => {
  let h: TestHost;
  let qp: QueuePair;
  before(async () => {
    h = await TestHost.open({
      namespaces: [
        { sizeBytes: 8 << 20, lbads: 9 },
        { sizeBytes: 16 << 20, lbads: 12 },
      ],
    });
    qp = await h.createQueuePair(1, 32);
  });
  after(async () => {
    await h.close();
  });

  it('read-after-write through PRP1 only, both formats', async () => {
    for (const [nsid, bs] of [
      [1, 512],
      [2, 4096],
    ] as const) {
      const w = h.t.dma.alloc(4096);
      w.bytes.set(pattern(4096, nsid));
      assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Write, nsid, 3, 4096 / bs, w.iova))), [0, 0]);
      const r = h.t.dma.alloc(4096);
      assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Read, nsid, 3, 4096 / bs, r.iova))), [0, 0]);
      assert.deepEqual(r.bytes, w.bytes);
    }
  });

  it('namespaces are independent', async () => {
    const a = h.t.dma.alloc(4096);
    a.bytes.set(pattern(4096, 77));
    await qp.run(rw(NvmOpcode.Write, 1, 0, 8, a.iova));
    const b = h.t.dma.alloc(4096);
    b.bytes.set(pattern(4096, 78));
    await qp.run(rw(NvmOpcode.Write, 2, 0, 1, b.iova));
    const r = h.t.dma.alloc(4096);
    await qp.run(rw(NvmOpcode.Read, 1, 0, 8, r.iova));
    assert.deepEqual(r.bytes, a.bytes);
    await qp.run(rw(NvmOpcode.Read, 2, 0, 1, r.iova));
    assert.deepEqual(r.bytes, b.bytes);
  });

  it('PRP1 with an unaligned first-page offset and PRP2 as second page', async () => {
    const w = h.t.dma.alloc(3 * 4096);
    const data = pattern(4096, 5);
    w.bytes.set(data, 1024); // 3 KiB in page 0 (offset 1024), 1 KiB in page 1
    assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Write, 1, 100, 8, w.iova + 1024, w.iova + 4096))), [0, 0]);
    const r = h.t.dma.alloc(4096);
    await qp.run(rw(NvmOpcode.Read, 1, 100, 8, r.iova));
    assert.deepEqual(r.bytes, data);
  });

  it('PRP lists: scattered pages, unaligned start, read back through a different list', async () => {
    const pages = Array.from({ length: 9 }, () => h.t.dma.alloc(4096));
    const list = h.t.dma.alloc(4096);
    const off = 512;
    const len = 8 * 4096; // 3.5 KiB in page 0, 7 full pages, 0.5 KiB in page 8
    const data = pattern(len, 9);
    // Fill scattered pages in reverse allocation order to make them non-contiguous.
    const order = [0, 5, 2, 7, 1, 8, 3, 6, 4].map((i) => pages[i]!);
    let pos = 0;
    order[0]!.bytes.set(data.subarray(0, 4096 - off), off);
    pos = 4096 - off;
    const lv = new DataView(list.bytes.buffer, list.bytes.byteOffset, 4096);
    for (let i = 1; i < order.length; i++) {
      const n = Math.min(4096, len - pos);
      order[i]!.bytes.set(data.subarray(pos, pos + n), 0);
      lv.setBigUint64((i - 1) * 8, BigInt(order[i]!.iova), true);
      pos += n;
    }
    assert.equal(pos, len);
    const c = await qp.run(rw(NvmOpcode.Write, 1, 2048, len / 512, order[0]!.iova + off, list.iova));
    assert.deepEqual(sctSc(c), [0, 0]);
    // Read back into one contiguous buffer via a list.
    const r = h.t.dma.alloc(8 * 4096);
    const list2 = h.t.dma.alloc(4096);
    const lv2 = new DataView(list2.bytes.buffer, list2.bytes.byteOffset, 4096);
    for (let i = 1; i < 8; i++) lv2.setBigUint64((i - 1) * 8, BigInt(r.iova + i * 4096), true);
    assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Read, 1, 2048, len / 512, r.iova, list2.iova))), [0, 0]);
    assert.deepEqual(r.bytes, data);
  });

  it('SGL: data block in the SQE, and segment chains with a bit bucket', async () => {
    const w = h.t.dma.alloc(8192);
    const data = pattern(8192, 11);
    w.bytes.set(data);
    const sgl1 = sglDescriptorDwords({ type: SglType.DataBlock, subtype: SglSubtype.Address, address: w.iova, length: 8192 });
    let c = await qp.run({ opcode: NvmOpcode.Write, nsid: 2, psdt: PSDT_SGL_MPTR_CONTIG, dptr: sgl1, cdw10: 40, cdw12: 1 });
    assert.deepEqual(sctSc(c), [0, 0]);
    // Read back through Segment → [DataBlock 3000, DataBlock 1096, LastSegment] → [BitBucket 100, DataBlock 3996].
    const a = h.t.dma.alloc(3000);
    const b = h.t.dma.alloc(1096);
    const d = h.t.dma.alloc(4096);
    const seg1 = h.t.dma.alloc(48);
    const seg2 = h.t.dma.alloc(32);
    encodeSglDescriptor({ type: SglType.DataBlock, subtype: 0, address: a.iova, length: 3000 }, seg1.bytes, 0);
    encodeSglDescriptor({ type: SglType.DataBlock, subtype: 0, address: b.iova, length: 1096 }, seg1.bytes, 16);
    encodeSglDescriptor({ type: SglType.LastSegment, subtype: 0, address: seg2.iova, length: 32 }, seg1.bytes, 32);
    encodeSglDescriptor({ type: SglType.BitBucket, subtype: 0, address: 0, length: 100 }, seg2.bytes, 0);
    encodeSglDescriptor({ type: SglType.DataBlock, subtype: 0, address: d.iova, length: 3996 }, seg2.bytes, 16);
    const head = sglDescriptorDwords({ type: SglType.Segment, subtype: 0, address: seg1.iova, length: 48 });
    c = await qp.run({ opcode: NvmOpcode.Read, nsid: 2, psdt: PSDT_SGL_MPTR_CONTIG, dptr: head, cdw10: 40, cdw12: 1 });
    assert.deepEqual(sctSc(c), [0, 0]);
    assert.deepEqual(a.bytes, data.subarray(0, 3000));
    assert.deepEqual(b.bytes, data.subarray(3000, 4096));
    assert.deepEqual(d.bytes.subarray(0, 3996), data.subarray(4196, 8192));
    // An SGL shorter than the transfer is Data SGL Length Invalid.
    const short = sglDescriptorDwords({ type: SglType.DataBlock, subtype: 0, address: w.iova, length: 4096 });
    c = await qp.run({ opcode: NvmOpcode.Read, nsid: 2, psdt: PSDT_SGL_MPTR_CONTIG, dptr: short, cdw10: 40, cdw12: 1 });
    assert.deepEqual(sctSc(c), [Sct.Generic, G.DataSglLengthInvalid]);
    // A bit bucket in a write is SGL Descriptor Type Invalid.
    const bucket = sglDescriptorDwords({ type: SglType.BitBucket, subtype: 0, address: 0, length: 8192 });
    c = await qp.run({ opcode: NvmOpcode.Write, nsid: 2, psdt: PSDT_SGL_MPTR_CONTIG, dptr: bucket, cdw10: 40, cdw12: 1 });
    assert.deepEqual(sctSc(c), [Sct.Generic, G.SglDescriptorTypeInvalid]);
  });

  it('Write Zeroes and Dataset Management deallocate read back as zeros', async () => {
    const w = h.t.dma.alloc(16 * 4096);
    w.bytes.set(pattern(w.size, 3));
    const list = h.t.dma.alloc(4096);
    const lv = new DataView(list.bytes.buffer, list.bytes.byteOffset, 4096);
    for (let i = 1; i < 16; i++) lv.setBigUint64((i - 1) * 8, BigInt(w.iova + i * 4096), true);
    assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Write, 2, 200, 16, w.iova, list.iova))), [0, 0]);
    // Write Zeroes LBAs 202..203, deallocate 205 and 210..211.
    assert.deepEqual(sctSc(await qp.run({ opcode: NvmOpcode.WriteZeroes, nsid: 2, cdw10: 202, cdw12: 1 })), [0, 0]);
    const ranges = h.t.dma.alloc(32);
    const rv = new DataView(ranges.bytes.buffer, ranges.bytes.byteOffset, 32);
    rv.setUint32(4, 1, true);
    rv.setBigUint64(8, 205n, true);
    rv.setUint32(16 + 4, 2, true);
    rv.setBigUint64(16 + 8, 210n, true);
    const c = await qp.run({ opcode: NvmOpcode.DatasetManagement, nsid: 2, prp1: ranges.iova, cdw10: 1, cdw11: DSM_ATTR_DEALLOCATE });
    assert.deepEqual(sctSc(c), [0, 0]);
    const r = h.t.dma.alloc(16 * 4096);
    const list2 = h.t.dma.alloc(4096);
    const lv2 = new DataView(list2.bytes.buffer, list2.bytes.byteOffset, 4096);
    for (let i = 1; i < 16; i++) lv2.setBigUint64((i - 1) * 8, BigInt(r.iova + i * 4096), true);
    assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Read, 2, 200, 16, r.iova, list2.iova))), [0, 0]);
    for (let blk = 0; blk < 16; blk++) {
      const got = r.bytes.subarray(blk * 4096, (blk + 1) * 4096);
      const zero = [2, 3, 5, 10, 11].includes(blk);
      if (zero)
        assert.ok(
          got.every((x) => x === 0),
          `block ${200 + blk} zeroed`,
        );
      else assert.deepEqual(got, w.bytes.subarray(blk * 4096, (blk + 1) * 4096), `block ${200 + blk} kept`);
    }
    // A DSM range beyond the namespace is LBA Out of Range and deallocates nothing.
    rv.setBigUint64(8, 4096n - 1n, true);
    rv.setUint32(4, 2, true);
    const bad = await qp.run({ opcode: NvmOpcode.DatasetManagement, nsid: 2, prp1: ranges.iova, cdw10: 0, cdw11: DSM_ATTR_DEALLOCATE });
    assert.deepEqual(sctSc(bad), [Sct.Generic, G.LbaOutOfRange]);
  });

  it('errors: LBA out of range (DNR), invalid nsid, invalid opcode, MDTS, PRP offset, DMA fault', async () => {
    const buf = h.t.dma.alloc(4096);
    let c = await qp.run(rw(NvmOpcode.Read, 1, (8 << 20) / 512 - 1, 2, buf.iova));
    assert.deepEqual(sctSc(c), [Sct.Generic, G.LbaOutOfRange]);
    assert.equal(statusDnr(c.status), true);
    c = await qp.run(rw(NvmOpcode.Write, 2, 2 ** 40, 1, buf.iova));
    assert.deepEqual(sctSc(c), [Sct.Generic, G.LbaOutOfRange]);
    c = await qp.run({ opcode: NvmOpcode.WriteZeroes, nsid: 1, cdw10: (8 << 20) / 512, cdw12: 0 });
    assert.deepEqual(sctSc(c), [Sct.Generic, G.LbaOutOfRange]);
    for (const nsid of [0, 3, 0xffffffff]) {
      c = await qp.run(rw(NvmOpcode.Read, nsid, 0, 1, buf.iova));
      assert.deepEqual(sctSc(c), [Sct.Generic, G.InvalidNamespaceOrFormat], `nsid ${nsid}`);
    }
    c = await qp.run({ opcode: NvmOpcode.Flush, nsid: 9 });
    assert.deepEqual(sctSc(c), [Sct.Generic, G.InvalidNamespaceOrFormat]);
    c = await qp.run({ opcode: NvmOpcode.Flush, nsid: 1 });
    assert.deepEqual(sctSc(c), [0, 0]);
    c = await qp.run({ opcode: 0x7f, nsid: 1 });
    assert.deepEqual(sctSc(c), [Sct.Generic, G.InvalidOpcode]);
    c = await qp.run(rw(NvmOpcode.Read, 2, 0, 33, buf.iova, buf.iova)); // 132 KiB > MDTS 128 KiB
    assert.deepEqual(sctSc(c), [Sct.Generic, G.InvalidField]);
    c = await qp.run(rw(NvmOpcode.Read, 1, 0, 1, buf.iova + 2)); // PRP1 not dword aligned
    assert.deepEqual(sctSc(c), [Sct.Generic, G.PrpOffsetInvalid]);
    c = await qp.run(rw(NvmOpcode.Read, 2, 0, 2, buf.iova, buf.iova + 4096 + 8)); // PRP2 with offset
    assert.deepEqual(sctSc(c), [Sct.Generic, G.PrpOffsetInvalid]);
    c = await qp.run(rw(NvmOpcode.Read, 1, 0, 1, 0)); // null pointer
    assert.deepEqual(sctSc(c), [Sct.Generic, G.DataTransferError]);
    c = await qp.run(rw(NvmOpcode.Write, 1, 0, 1, 9 * 2 ** 32)); // unknown segment
    assert.deepEqual(sctSc(c), [Sct.Generic, G.DataTransferError]);
    const list = h.t.dma.alloc(4096);
    new DataView(list.bytes.buffer, list.bytes.byteOffset).setBigUint64(0, 0x2000n, true); // list entry outside memory
    c = await qp.run(rw(NvmOpcode.Read, 2, 0, 3, buf.iova, list.iova));
    assert.deepEqual(sctSc(c), [Sct.Generic, G.DataTransferError]);
    // The queue still works.
    c = await qp.run(rw(NvmOpcode.Read, 1, 0, 1, buf.iova));
    assert.deepEqual(sctSc(c), [0, 0]);
  });

  it('phase tags wrap correctly over many laps of a small queue; SQ head advances', async () => {
    const q = await h.createQueuePair(2, 3);
    const buf = h.t.dma.alloc(512);
    for (let i = 0; i < 20; i++) {
      buf.bytes.fill(i);
      const c = await q.run(rw(i % 2 === 0 ? NvmOpcode.Write : NvmOpcode.Read, 1, 7, 1, buf.iova));
      assert.deepEqual(sctSc(c), [0, 0]);
      assert.equal(c.sqId, 2);
      assert.equal(c.sqHead, (i + 1) % 3);
    }
  });

  it('CQ full: the controller never overwrites unreleased entries and resumes when the host frees space', async () => {
    const q = await h.createQueuePair(3, 16, 4); // CQ of 4 entries holds at most 3 completions
    const buf = h.t.dma.alloc(512);
    const cids: number[] = [];
    for (let i = 0; i < 10; i++) cids.push(q.put(rw(NvmOpcode.Read, 1, i, 1, buf.iova)));
    q.ring();
    await sleep(30);
    // Exactly 3 completions visible; slot 3 untouched (still phase 0).
    const seen = [];
    for (let i = 0; i < 3; i++) {
      const c = q.poll(false);
      assert.ok(c, `completion ${i}`);
      seen.push(c.cid);
    }
    assert.equal(q.peek(), null);
    assert.equal(q.cqDw[3 * 4 + 3]! & 0x10000, 0);
    // Release the three entries: the rest complete.
    q.releaseCq();
    while (seen.length < 10) seen.push((await q.next()).cid);
    assert.deepEqual(seen, cids);
  });
});

describe('emu I/O, other backings', () => {
  it('file backing persists across close and reopen; namespaces laid out back to back', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'homi-emu-'));
    const file = path.join(dir, 'disk.img');
    const namespaces = [
      { sizeBytes: 1 << 20, lbads: 9 as const },
      { sizeBytes: 2 << 20, lbads: 12 as const },
    ];
    const data = pattern(8192, 21);
    try {
      let h = await TestHost.open({ namespaces, backing: { file } });
      try {
        const qp = await h.createQueuePair(1, 8);
        const w = h.t.dma.alloc(8192);
        w.bytes.set(data);
        assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Write, 2, 10, 2, w.iova, w.iova + 4096))), [0, 0]);
        assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Write, 1, 1, 1, w.iova))), [0, 0]);
        assert.deepEqual(sctSc(await qp.run({ opcode: NvmOpcode.Flush, nsid: 0xffffffff })), [0, 0]);
      } finally {
        await h.close();
      }
      const raw = fs.readFileSync(file);
      assert.equal(raw.length, 3 << 20);
      assert.deepEqual(new Uint8Array(raw.subarray((1 << 20) + 10 * 4096, (1 << 20) + 12 * 4096)), data);
      assert.deepEqual(new Uint8Array(raw.subarray(512, 1024)), data.subarray(0, 512));
      h = await TestHost.open({ namespaces, backing: { file } });
      try {
        const qp = await h.createQueuePair(1, 8);
        const r = h.t.dma.alloc(8192);
        assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Read, 2, 10, 2, r.iova, r.iova + 4096))), [0, 0]);
        assert.deepEqual(r.bytes, data);
        // Deallocate in a file reads back as zeros.
        assert.deepEqual(sctSc(await qp.run({ opcode: NvmOpcode.WriteZeroes, nsid: 2, cdw10: 11, cdw12: 0 })), [0, 0]);
        assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Read, 2, 10, 2, r.iova, r.iova + 4096))), [0, 0]);
        assert.deepEqual(r.bytes.subarray(0, 4096), data.subarray(0, 4096));
        assert.ok(r.bytes.subarray(4096).every((x) => x === 0));
      } finally {
        await h.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a backing file that cannot be opened fails openEmu with a clear error', async () => {
    await assert.rejects(TestHost.open({ namespaces: [{ sizeBytes: 4096, lbads: 12 }], backing: { file: '/nonexistent-dir/x/disk.img' } }), /failed to start.*ENOENT/);
  });

  it('null backing completes without touching data but still checks LBA ranges', async () => {
    const h = await TestHost.open({ namespaces: [{ sizeBytes: 1 << 30, lbads: 12 }], backing: 'null' });
    try {
      const qp = await h.createQueuePair(1, 8);
      const buf = h.t.dma.alloc(4096);
      buf.bytes.fill(0x5a);
      assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Write, 1, 5, 1, buf.iova))), [0, 0]);
      assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Read, 1, 5, 1, buf.iova))), [0, 0]);
      assert.ok(
        buf.bytes.every((x) => x === 0x5a),
        'null reads leave the buffer untouched',
      );
      const c = await qp.run(rw(NvmOpcode.Read, 1, (1 << 30) / 4096, 1, buf.iova));
      assert.deepEqual(sctSc(c), [Sct.Generic, G.LbaOutOfRange]);
      assert.ok(h.t.stats().reads >= 1);
    } finally {
      await h.close();
    }
  });

  it('MDTS 0 (unlimited) allows transfers through chained PRP lists', async () => {
    const h = await TestHost.open({ namespaces: [{ sizeBytes: 8 << 20, lbads: 12 }], mdts: 0 });
    try {
      const qp = await h.createQueuePair(1, 4);
      const pages = 600; // 2.3 MiB: 599 list entries need a second list page
      const w = h.t.dma.alloc(pages * 4096);
      w.bytes.set(pattern(w.size, 31));
      const mkList = (base: number) => {
        const l1 = h.t.dma.alloc(4096);
        const l2 = h.t.dma.alloc(4096);
        const v1 = new DataView(l1.bytes.buffer, l1.bytes.byteOffset, 4096);
        const v2 = new DataView(l2.bytes.buffer, l2.bytes.byteOffset, 4096);
        for (let i = 1; i < pages; i++) {
          const e = BigInt(base + i * 4096);
          if (i - 1 < 511) v1.setBigUint64((i - 1) * 8, e, true);
          else v2.setBigUint64((i - 1 - 511) * 8, e, true);
        }
        v1.setBigUint64(511 * 8, BigInt(l2.iova), true);
        return l1.iova;
      };
      assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Write, 1, 100, pages, w.iova, mkList(w.iova)))), [0, 0]);
      const r = h.t.dma.alloc(pages * 4096);
      assert.deepEqual(sctSc(await qp.run(rw(NvmOpcode.Read, 1, 100, pages, r.iova, mkList(r.iova)))), [0, 0]);
      assert.ok(Buffer.from(r.bytes).equals(Buffer.from(w.bytes)));
    } finally {
      await h.close();
    }
  });
});
