import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dataPointer, type DataPointer } from '../../src/driver/dptr.js';
import type { QueuePair } from '../../src/driver/queue-pair.js';
import type { DmaBuffer } from '../../src/mem/dma.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { firstDiff, fillPattern, openRig, pollUntil, type Rig } from './helpers.js';

/** Write `len` bytes of a pattern from buf[off..] to (nsid, slba), read them back into a second buffer, compare. */
async function roundTrip(rig: Rig, qp: QueuePair, nsid: number, slba: number, len: number, off: number, seed: number): Promise<void> {
  const dma = rig.emu.dma;
  const bs = rig.ctrl.namespace(nsid).blockSize;
  const nlb = len / bs;
  const wbuf = dma.alloc(off + len);
  const rbuf = dma.alloc(off + len);
  const wdp = dataPointer(dma, wbuf, off, len);
  const rdp = dataPointer(dma, rbuf, off, len);
  try {
    const src = wbuf.bytes.subarray(off, off + len);
    fillPattern(src, seed);
    const statuses: number[] = [];
    const onDone = (_tag: number, status: number): void => void statuses.push(status);
    assert.ok(qp.submitIo(NvmOpcode.Write, nsid, slba, nlb, wdp.prp1, wdp.prp2, 1) >= 0);
    qp.ring();
    await pollUntil(qp, onDone, () => statuses.length === 1);
    assert.ok(qp.submitIo(NvmOpcode.Read, nsid, slba, nlb, rdp.prp1, rdp.prp2, 2) >= 0);
    qp.ring();
    await pollUntil(qp, onDone, () => statuses.length === 2);
    assert.deepEqual(statuses, [0, 0]);
    const got = rbuf.bytes.subarray(off, off + len);
    assert.equal(firstDiff(got, src), -1, `data mismatch (nsid ${nsid}, slba ${slba}, ${len} bytes at offset ${off})`);
    // bytes around the transfer untouched
    assert.ok(
      rbuf.bytes.subarray(0, off).every((b) => b === 0),
      'read wrote before the buffer range',
    );
  } finally {
    wdp.release();
    rdp.release();
    dma.free(wbuf);
    dma.free(rbuf);
  }
}

test('read-after-write, byte for byte: 512 B and 4 KiB blocks, 128 KiB via PRP lists, unaligned buffers', async () => {
  const rig = await openRig();
  try {
    const qp = await rig.ctrl.createQueuePair({ entries: 64 });
    await roundTrip(rig, qp, 1, 10, 4096, 0, 1); // one 4 KiB block, PRP1 only
    await roundTrip(rig, qp, 2, 3, 512, 0, 2); // one 512 B block
    await roundTrip(rig, qp, 2, 100, 8192, 0, 3); // 16 x 512 B, PRP1 + PRP2
    await roundTrip(rig, qp, 1, 200, 128 * 1024, 0, 4); // 32 pages: PRP list
    await roundTrip(rig, qp, 2, 1000, 128 * 1024 - 4096, 0x204, 5); // unaligned start: list, first page partial
    await roundTrip(rig, qp, 2, 7, 4096, 0x804, 6); // unaligned 4 KiB spanning two pages: PRP2 direct
    await roundTrip(rig, qp, 1, NS1Blocks(rig) - 1, 4096, 0x10, 7); // last block of the namespace
    // exec() path on an I/O queue
    const buf = rig.emu.dma.alloc(4096);
    const dp = dataPointer(rig.emu.dma, buf);
    try {
      fillPattern(buf.bytes, 9);
      const want = buf.bytes.slice();
      await qp.exec({ opcode: NvmOpcode.Write, cid: 0, nsid: 1, prp1: dp.prp1, prp2: dp.prp2, cdw10: 55, cdw12: 0 });
      buf.bytes.fill(0);
      const c = await qp.exec({ opcode: NvmOpcode.Read, cid: 0, nsid: 1, prp1: dp.prp1, prp2: dp.prp2, cdw10: 55, cdw12: 0 });
      assert.equal(c.status, 0);
      assert.equal(firstDiff(buf.bytes, want), -1);
    } finally {
      dp.release();
      rig.emu.dma.free(buf);
    }
  } finally {
    await rig.close();
  }
});

function NS1Blocks(rig: Rig): number {
  return rig.ctrl.namespace(1).blocks;
}

test('dataPointer builds PRP lists with chaining and validates its arguments', async () => {
  const rig = await openRig();
  try {
    const dma = rig.emu.dma;
    const big = dma.alloc(4 << 20);
    try {
      const one = dataPointer(dma, big, 0, 4096);
      assert.equal(one.prp1, big.iova);
      assert.equal(one.prp2, 0);
      assert.equal(one.list, null);
      const two = dataPointer(dma, big, 8, 4096);
      assert.equal(two.prp2, big.iova + 4096);
      const many = dataPointer(dma, big, 0, 4 << 20); // 1024 pages: 1023 entries -> two chained list pages
      assert.ok(many.list !== null && many.list.size === 2 * 4096);
      assert.equal(many.prp2, many.list.iova);
      const before = dma.allocatedBytes;
      many.release();
      many.release();
      assert.equal(dma.allocatedBytes, before - 2 * 4096);
      assert.throws(() => dataPointer(dma, big, 2, 16), /dword aligned/);
      assert.throws(() => dataPointer(dma, big, 0, (4 << 20) + 1), /exceeds/);
      assert.throws(() => dataPointer(dma, big, 0, 0), /positive/);
    } finally {
      dma.free(big);
    }
  } finally {
    await rig.close();
  }
});

test('depth-8 queue: thousands of I/Os with the queue kept full, phase wrap-around, data verified', async () => {
  const rig = await openRig();
  try {
    const dma = rig.emu.dma;
    const qp = await rig.ctrl.createQueuePair({ entries: 8 });
    assert.equal(qp.capacity, 7);
    const nsid = 2;
    const bs = 512;
    const total = 3000;
    const slots = qp.capacity;
    const bufs: DmaBuffer[] = [];
    const dps: DataPointer[] = [];
    for (let i = 0; i < slots; i++) {
      bufs.push(dma.alloc(bs));
      dps.push(dataPointer(dma, bufs[i]!));
    }
    const slotLba = new Int32Array(slots);
    const freeSlots: number[] = [...Array(slots).keys()];
    const expect = new Uint8Array(bs);
    let errors = 0;
    let done = 0;
    let mismatches = 0;
    try {
      for (const phase of ['write', 'read'] as const) {
        let next = 0;
        done = 0;
        const onComplete = (slot: number, status: number): void => {
          if (status !== 0) errors++;
          if (phase === 'read') {
            fillPattern(expect, slotLba[slot]! + 1);
            if (firstDiff(bufs[slot]!.bytes, expect) !== -1) mismatches++;
          }
          freeSlots.push(slot);
          done++;
        };
        const start = performance.now();
        while (done < total) {
          while (next < total && freeSlots.length > 0) {
            const slot = freeSlots.pop()!;
            slotLba[slot] = next;
            if (phase === 'write') fillPattern(bufs[slot]!.bytes, next + 1);
            const op = phase === 'write' ? NvmOpcode.Write : NvmOpcode.Read;
            const cid = qp.submitIo(op, nsid, next, 1, dps[slot]!.prp1, dps[slot]!.prp2, slot);
            assert.ok(cid >= 0 && cid < qp.cidCount);
            next++;
          }
          qp.ring();
          qp.poll(onComplete);
          if ((done & 255) === 0) await new Promise((r) => setImmediate(r));
          assert.ok(performance.now() - start < 20000, 'I/O stalled');
        }
        assert.equal(qp.outstanding, 0);
      }
      assert.equal(errors, 0);
      assert.equal(mismatches, 0);
      assert.equal(qp.stats.submitted, 2 * total);
      assert.equal(qp.stats.completed, 2 * total);
      assert.equal(qp.stats.malformed, 0);
    } finally {
      dps.forEach((d) => d.release());
      bufs.forEach((b) => dma.free(b));
    }
  } finally {
    await rig.close();
  }
});

test('submitIo returns -1 when the queue is full; ring is batched', async () => {
  const rig = await openRig();
  try {
    const qp = await rig.ctrl.createQueuePair({ entries: 4 });
    const buf = rig.emu.dma.alloc(4096);
    const dp = dataPointer(rig.emu.dma, buf);
    try {
      const cids = [0, 1, 2].map((i) => qp.submitIo(NvmOpcode.Read, 1, i, 1, dp.prp1, dp.prp2, i));
      assert.ok(cids.every((c) => c >= 0));
      assert.equal(new Set(cids).size, 3);
      assert.equal(qp.free, 0);
      assert.equal(qp.submitIo(NvmOpcode.Read, 1, 0, 1, dp.prp1, dp.prp2, 9), -1);
      assert.equal(qp.outstanding, 3);
      qp.ring();
      const tags: number[] = [];
      await pollUntil(
        qp,
        (t) => void tags.push(t),
        () => tags.length === 3,
      );
      assert.deepEqual(tags.sort(), [0, 1, 2]);
      assert.equal(qp.free, 3);
      assert.throws(() => qp.submitIo(NvmOpcode.Read, 1, 0, 0, dp.prp1, dp.prp2, 0), /nlb must be 1\.\.65536/);
    } finally {
      dp.release();
      rig.emu.dma.free(buf);
    }
  } finally {
    await rig.close();
  }
});

test('several queue pairs at once, each on its own region, data verified', async () => {
  const rig = await openRig({ ioQueues: 4 });
  try {
    const dma = rig.emu.dma;
    const qps = await Promise.all([0, 1, 2, 3].map(() => rig.ctrl.createQueuePair({ entries: 32 })));
    assert.deepEqual(qps.map((q) => q.qid).sort(), [1, 2, 3, 4]);
    const perQueue = 200;
    const bs = 4096;
    const wbufs = qps.map(() => dma.alloc(perQueue * bs));
    const rbufs = qps.map(() => dma.alloc(perQueue * bs));
    const dps: DataPointer[][] = [];
    try {
      wbufs.forEach((b, i) => fillPattern(b.bytes, 100 + i));
      for (const [phase, bufs] of [
        ['write', wbufs],
        ['read', rbufs],
      ] as const) {
        const done = qps.map(() => 0);
        const next = qps.map(() => 0);
        const errs: number[] = [];
        const handlers = qps.map((_, qi) => (_tag: number, status: number) => {
          if (status !== 0) errs.push(status);
          done[qi]!++;
        });
        const ptrs = bufs.map((b) => Array.from({ length: perQueue }, (_, k) => dataPointer(dma, b, k * bs, bs)));
        dps.push(...ptrs);
        const start = performance.now();
        while (done.some((d) => d < perQueue)) {
          qps.forEach((qp, qi) => {
            while (next[qi]! < perQueue && qp.free > 0) {
              const k = next[qi]!;
              const p = ptrs[qi]![k]!;
              const op = phase === 'write' ? NvmOpcode.Write : NvmOpcode.Read;
              qp.submitIo(op, 1, qi * 1000 + k, 1, p.prp1, p.prp2, k);
              next[qi]!++;
            }
            qp.ring();
            qp.poll(handlers[qi]!);
          });
          await new Promise((r) => setImmediate(r));
          assert.ok(performance.now() - start < 20000, 'stalled');
        }
        assert.deepEqual(errs, []);
      }
      qps.forEach((_, i) => assert.equal(firstDiff(rbufs[i]!.bytes, wbufs[i]!.bytes), -1, `queue ${i + 1} data`));
    } finally {
      dps.flat().forEach((d) => d.release());
      [...wbufs, ...rbufs].forEach((b) => dma.free(b));
    }
  } finally {
    await rig.close();
  }
});
