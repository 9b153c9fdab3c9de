/**
 * The ring module (src/nvme/ring.ts): slot claims and tail publishes, reaping by phase and head publishes,
 * CQE posting, and the producer and consumer of each ring kept in step over many laps.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CQE_DWORDS, CQE_DW_RESULT, CQE_DW_RESULT_HI, CQE_DW_SQ, CQE_DW_STATUS, CQE_PHASE_BIT, decodeCqe } from '../../src/nvme/cqe.js';
import { CqReader, CqWriter, SqReader, SqWriter } from '../../src/nvme/ring.js';
import { SQE_DWORDS, SQE_DW_CDW0, SQE_DW_NSID, decodeSqe, sqeCdw0, writeCmdSqe, writeIoSqe } from '../../src/nvme/sqe.js';

const sqMem = (entries: number): Uint32Array => new Uint32Array(new SharedArrayBuffer(entries * SQE_DWORDS * 4));
const cqMem = (entries: number): Uint32Array => new Uint32Array(new SharedArrayBuffer(entries * CQE_DWORDS * 4));

test('SqWriter: claims up to entries - 1 slots, publishes the tail once per batch, gives a slot back', () => {
  const sq = new SqWriter(sqMem(4), 4);
  const cells = new Int32Array(4);
  assert.equal(sq.space, 3);
  assert.deepEqual([sq.claim(), sq.claim(), sq.claim()], [0, 16, 32]);
  assert.equal(sq.claim(), -1, 'full: one slot always stays free');
  assert.equal(sq.unpublished, 3);
  assert.equal(cells[2], 0, 'claiming publishes nothing');
  assert.equal(sq.publishTo(cells, 2), true);
  assert.equal(cells[2], 3);
  assert.equal(sq.publishTo(cells, 2), false, 'nothing new: no store');
  sq.head = 2; // the consumer took two
  assert.equal(sq.space, 2);
  assert.equal(sq.claim(), 48);
  assert.equal(sq.claim(), 0, 'wraps to slot 0');
  sq.unclaim();
  assert.equal(sq.tail, 0);
  assert.equal(sq.claim(), 0);
  assert.equal(sq.publishTo(cells, 2), true);
  assert.equal(cells[2], 1);
  assert.equal(sq.publish(), -1, 'publish() for a notifier: nothing new');
  sq.reset();
  assert.deepEqual([sq.tail, sq.head, sq.published], [0, 0, 0]);
  assert.equal(sq.claim(), 0);
  assert.equal(sq.claim(), 16);
  assert.equal(sq.publish(), 2, 'the tail to hand to the doorbell');
  assert.equal(sq.publish(), -1);
  assert.throws(() => new SqWriter(sqMem(4), 5), /too small/);
  assert.throws(() => new SqWriter(sqMem(1), 1), /entries/);
});

test('SqWriter.claimBatch: slots filled out of order (as a thread block would) become visible with one publish', () => {
  const entries = 8;
  const ring = sqMem(entries);
  const sq = new SqWriter(ring, entries);
  const reader = new SqReader(ring, entries);
  const cells = new Int32Array([5, 5]);
  sq.head = 5;
  sq.tail = 5;
  sq.published = 5;
  reader.head = reader.tail = reader.published = 5;
  assert.equal(sq.claimBatch(8), -1, 'more than the ring holds');
  const first = sq.claimBatch(6);
  assert.equal(first, 5);
  assert.equal(sq.tail, 3, 'the batch wraps');
  assert.equal(sq.claimBatch(2), -1, 'only one slot is left');
  for (const i of [4, 0, 5, 2, 1, 3]) writeIoSqe(ring, sq.slotOffset(first + i), sqeCdw0(0x02, 100 + i), 1, 1000 + i, 1, 0x1000, 0);
  reader.tail = Atomics.load(cells, 0);
  assert.equal(reader.take(), -1, 'nothing published yet');
  sq.publishTo(cells, 0);
  reader.tail = Atomics.load(cells, 0);
  assert.equal(reader.pending, 6);
  const cids: number[] = [];
  for (let at = reader.take(); at >= 0; at = reader.take()) cids.push(decodeSqe(ring, at).cid);
  assert.deepEqual(cids, [100, 101, 102, 103, 104, 105]);
  assert.equal(reader.publishTo(cells, 1), true);
  assert.equal(cells[1], 3);
  assert.equal(reader.publishTo(cells, 1), false);
});

test('writeIoSqe / writeCmdSqe write every dword of the slot', () => {
  const dw = new Uint32Array(32).fill(0xdeadbeef);
  writeIoSqe(dw, 16, sqeCdw0(0x01, 0xabcd), 7, 2 ** 40 + 5, 8, 2 ** 33 + 0x200, 0x3000);
  const e = decodeSqe(dw, 16);
  assert.deepEqual([e.opcode, e.cid, e.nsid, e.prp1, e.prp2, e.cdw10, e.cdw11, e.cdw12, e.cdw13, e.cdw2, e.mptr], [0x01, 0xabcd, 7, 2 ** 33 + 0x200, 0x3000, 5, 256, 7, 0, 0, 0]);
  assert.equal(dw[0], 0xdeadbeef, 'the slot before is untouched');
  writeCmdSqe(dw, 0, sqeCdw0(0x09, 3), 1, 0x5000, 0, 0, 4, 0);
  const c = decodeSqe(dw, 0);
  assert.deepEqual([c.opcode, c.cid, c.nsid, c.prp1, c.cdw10, c.cdw11, c.cdw15], [0x09, 3, 1, 0x5000, 0, 4, 0]);
  assert.equal(dw[SQE_DW_CDW0], sqeCdw0(0x09, 3));
  assert.equal(dw[16 + SQE_DW_NSID], 7);
});

test('CqWriter posts, CqReader reaps by phase over many laps; the head is published once per batch', () => {
  const entries = 4;
  const ring = cqMem(entries);
  const w = new CqWriter(ring, entries);
  const r = new CqReader(ring, entries);
  const cells = new Int32Array(1);
  let next = 0;
  let expect = 0;
  for (let lap = 0; lap < 10; lap++) {
    while (w.hasRoom()) {
      w.post(0x1000 + next, next % entries, 5, next & 0xffff, next % 3 === 0 ? 0x4002 : 0, 0x77);
      next++;
    }
    assert.equal(w.used, entries - 1);
    let at: number;
    let batch = 0;
    while ((at = r.take()) >= 0) {
      const e = decodeCqe(ring, at);
      assert.equal(e.cid, expect & 0xffff);
      assert.equal(e.result, 0x1000 + expect);
      assert.equal(e.resultHi, 0x77);
      assert.equal(e.sqId, 5);
      assert.equal(e.status, expect % 3 === 0 ? 0x4002 : 0);
      expect++;
      batch++;
    }
    assert.equal(batch, entries - 1);
    assert.equal(r.unpublished, batch);
    if (lap % 2 === 1) {
      const h = r.publish();
      assert.equal(h, r.head, 'publish() hands the head to a notifier');
      Atomics.store(cells, 0, h);
    } else assert.equal(r.publishTo(cells, 0), true);
    assert.equal(r.publishTo(cells, 0), false);
    w.head = Atomics.load(cells, 0);
  }
  assert.equal(expect, next);
});

test('CqWriter keeps only the 15-bit status field and 16-bit ids; the phase tag lands in DW3 last', () => {
  const ring = cqMem(2);
  const w = new CqWriter(ring, 2);
  w.post(-1, 0x1_0003, 0x1_0002, 0x1_0001, 0x7_8005);
  assert.equal(ring[CQE_DW_RESULT], 0xffffffff);
  assert.equal(ring[CQE_DW_RESULT_HI], 0);
  assert.equal(ring[CQE_DW_SQ], 0x0002_0003);
  assert.equal(ring[CQE_DW_STATUS], (1 | CQE_PHASE_BIT | (0x0005 << 17)) >>> 0);
  assert.equal(w.tail, 1);
  w.post(0, 0, 0, 2, 0);
  assert.equal(w.tail, 0);
  assert.equal(w.phase, 0, 'the second lap writes phase 0');
  w.reset();
  assert.deepEqual([w.tail, w.phase, w.head], [0, CQE_PHASE_BIT, 0]);
});

test('CqReader.isPosted / advanceTo follow a head claimed by someone else (direct completions)', () => {
  const entries = 4;
  const ring = cqMem(entries);
  const w = new CqWriter(ring, entries);
  const r = new CqReader(ring, entries);
  w.post(0, 0, 1, 1, 0);
  w.post(0, 0, 1, 2, 0);
  assert.equal(r.isPosted(0), true);
  assert.equal(r.isPosted(1), true);
  assert.equal(r.isPosted(2), false);
  r.advanceTo(2);
  assert.deepEqual([r.head, r.phase, r.unpublished], [2, CQE_PHASE_BIT, 2]);
  w.head = 2;
  w.post(0, 0, 1, 3, 0);
  w.post(0, 0, 1, 4, 0); // slot 3
  w.post(0, 0, 1, 5, 0); // slot 0 of the second lap
  assert.equal(r.distanceTo(1), 3);
  assert.equal(r.isPosted(0), true, "slot 0 carries the next lap's phase");
  assert.equal(r.isPosted(1), false, "slot 1 still has the first lap's entry");
  r.advanceTo(1);
  assert.deepEqual([r.head, r.phase], [1, 0]);
  assert.equal(r.take(), -1);
  r.advanceTo(1);
  assert.equal(r.unpublished, 5, 'advancing to the head itself consumes nothing');
  r.reset();
  assert.deepEqual([r.head, r.phase, r.unpublished], [0, CQE_PHASE_BIT, 0]);
});

test('property: any interleaving of posts and reaps delivers every CQE once, in order, never overrunning the consumer', () => {
  fc.assert(
    fc.property(fc.integer({ min: 2, max: 9 }), fc.array(fc.integer({ min: 0, max: 12 }), { maxLength: 60 }), (entries, steps) => {
      const ring = cqMem(entries);
      const w = new CqWriter(ring, entries);
      const r = new CqReader(ring, entries);
      const cells = new Int32Array(1);
      let posted = 0;
      let reaped = 0;
      for (const [i, k] of steps.entries()) {
        if (i % 2 === 0) {
          for (let j = 0; j < k && w.hasRoom(); j++) {
            w.post(posted, 0, 0, posted & 0xffff, 0);
            posted++;
          }
        } else {
          for (let j = 0; j < k; j++) {
            const at = r.take();
            if (at < 0) break;
            if (ring[at + CQE_DW_RESULT] !== reaped) return false;
            reaped++;
          }
          r.publishTo(cells, 0);
          w.head = cells[0]!;
        }
        if (posted - reaped > entries - 1) return false;
      }
      while (r.take() >= 0) reaped++;
      return reaped === posted;
    }),
  );
});
