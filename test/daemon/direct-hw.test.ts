/**
 * Direct-completion mediated queues without a controller: homid's side writes checked SQEs with the client's
 * CID and only passes on CQ heads it can verify; the client reaps the hardware CQ itself. The "controller"
 * here is the test, posting CQEs by hand, so every claim a client could make can be tried.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MediatedQueuePair } from '../../src/client/mediated-queue.js';
import type { RemoteQueuePair } from '../../src/driver/controller.js';
import { DirectHwQueue } from '../../src/daemon/direct-hw.js';
import { LbaSet, MediatedQueue, STATUS_ACCESS_DENIED, STATUS_INVALID_FIELD } from '../../src/daemon/mediated.js';
import { H_HWCQ_HEAD, ringBytes } from '../../src/ipc/mediated-ring.js';
import type { DmaAllocator, DmaBuffer } from '../../src/mem/dma.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { REG_DOORBELL_BASE, cqHeadDoorbellOffset, sqTailDoorbellOffset } from '../../src/nvme/registers.js';
import { doorbellNotifier } from '../../src/transport/doorbell.js';

const PAGE = 4096;
const ENTRIES = 8;
const QID = 3;

function buffer(bytes: number, iova: number): DmaBuffer {
  return { iova, size: bytes, bytes: new Uint8Array(new SharedArrayBuffer(bytes)) };
}

function setup() {
  const doorbells = new Int32Array(new SharedArrayBuffer(4096));
  const remote: RemoteQueuePair = { qid: QID, entries: ENTRIES, sq: buffer(ENTRIES * 64, 0x10000), cq: buffer(PAGE, 0x20000), doorbellStride: 4, state: 'live' };
  const hw = new DirectHwQueue({ notifier: (qid) => doorbellNotifier(doorbells, qid, 4, null) }, remote);
  const sqTailDb = (sqTailDoorbellOffset(QID, 4) - REG_DOORBELL_BASE) >>> 2;
  const cqHeadDb = (cqHeadDoorbellOffset(QID, 4) - REG_DOORBELL_BASE) >>> 2;
  const sq = new Uint32Array(remote.sq.bytes.buffer);
  const cq = new Uint32Array(remote.cq.bytes.buffer);
  let cqTail = 0;
  let phase = 0x10000; // CQE DW3 bit 16
  /** The "controller": complete the command in SQ slot `slot` (its CID) with `status`. */
  const complete = (slot: number, status = 0, sqid = QID): void => {
    const cid = sq[slot * 16]! >>> 16;
    const at = cqTail * 4;
    cq[at] = 0;
    cq[at + 2] = ((sqid << 16) | ((slot + 1) % ENTRIES)) >>> 0;
    Atomics.store(cq, at + 3, (cid | phase | (status << 17)) >>> 0);
    if (++cqTail === ENTRIES) {
      cqTail = 0;
      phase ^= 0x10000;
    }
  };
  return { doorbells, remote, hw, sq, cq, sqTailDb, cqHeadDb, complete };
}

describe('direct hardware queue (homid side)', () => {
  test('a claimed CQ head is passed on only when it is posted and no more than what is in flight', () => {
    const { hw, doorbells, cqHeadDb, sqTailDb, complete } = setup();
    for (let i = 0; i < 3; i++) hw.submit((NvmOpcode.Read | (i << 16)) >>> 0, 1, i, 1, 0x30000, 0);
    hw.ring();
    assert.equal(Atomics.load(doorbells, sqTailDb), 3);
    assert.equal(hw.outstanding, 3);
    complete(0);
    complete(1);
    assert.equal(hw.acknowledge(3), 0, 'entry 2 is not posted yet');
    assert.equal(hw.acknowledge(5), 0, 'more than in flight');
    assert.equal(hw.acknowledge(-1), 0);
    assert.equal(hw.acknowledge(ENTRIES), 0);
    assert.equal(hw.stats.badHeads, 4);
    assert.equal(Atomics.load(doorbells, cqHeadDb), 0, 'no bad claim reached the doorbell');
    assert.equal(hw.acknowledge(2), 2);
    assert.equal(Atomics.load(doorbells, cqHeadDb), 2);
    assert.equal(hw.outstanding, 1);
    // wrap the CQ: the phase of the next lap is checked
    for (let i = 3; i < 9; i++) hw.submit((NvmOpcode.Read | ((i % 7) << 16)) >>> 0, 1, i, 1, 0x30000, 0);
    assert.equal(hw.full, true, '7 in flight on an 8-entry queue');
    hw.ring();
    for (let s = 2; s < 8; s++) complete(s);
    assert.equal(hw.acknowledge(0), 6, 'up to the end of the first lap');
    assert.equal(hw.acknowledge(1), 0, 'slot 0 of the second lap is not posted');
    complete(0);
    assert.equal(hw.acknowledge(1), 1);
    assert.equal(hw.outstanding, 0);
  });
});

describe('mediated queue in direct-completion mode', () => {
  function mediated() {
    const env = setup();
    const ringBuf = new Uint8Array(new SharedArrayBuffer(ringBytes(ENTRIES)));
    const data = buffer(8 * PAGE, 0x40000);
    const prp = buffer(ENTRIES * PAGE, 0x80000);
    const dma = { pageSize: PAGE, alloc: () => prp, free: () => undefined } as unknown as DmaAllocator;
    const denied: string[] = [];
    const mq = new MediatedQueue({
      id: 7,
      entries: ENTRIES,
      ring: { bytes: ringBuf, size: ringBuf.byteLength, fd: null, close: () => undefined } as never,
      data,
      hw: env.hw,
      dma,
      grant: { nsid: 1, lbaSize: 512, maxTransfer: 1 << 20, write: false, readable: LbaSet.of([{ lba: 100, count: 50 }]), writable: new LbaSet() },
      onDenied: (d) => denied.push(d.reason),
    });
    const client = new MediatedQueuePair(ringBuf, data.bytes, 7, env.remote.cq.bytes);
    return { ...env, mq, client, denied, ringBuf, prpBytes: prp.bytes };
  }

  test('the client CID goes to the device, the completion comes straight back, denials come from homid', () => {
    const { mq, client, sq, complete, denied, ringBuf, prpBytes } = mediated();
    const done: [number, number][] = [];
    const onDone = (tag: number, status: number): void => void done.push([tag, status]);
    assert.ok(client.submitIo(NvmOpcode.Read, 1, 100, 16, 512, 0, 11) >= 0); // 8 KiB at offset 512: three pages, a PRP list
    assert.ok(client.submitIo(NvmOpcode.Read, 1, 10, 1, 0, 0, 12) >= 0); // outside the grant
    client.ring();
    mq.pump();
    const cid = sq[0]! >>> 16;
    assert.equal(sq[0]! & 0xff, NvmOpcode.Read);
    assert.equal(sq[6], 0x40000 + 512, 'PRP1 is the data buffer IOVA plus the offset');
    assert.equal(sq[8], 0x80000 + cid * PAGE, 'PRP2 is the PRP list page of this CID');
    const list = new Uint32Array(prpBytes.buffer, cid * PAGE, 4);
    assert.deepEqual([...list], [0x41000, 0, 0x42000, 0]);
    assert.equal(sq[10], 100);
    assert.equal(mq.inFlight, 1);
    assert.equal(client.poll(onDone), 1, 'the denial is on the ring CQ');
    assert.deepEqual(done, [[12, STATUS_ACCESS_DENIED]]);
    assert.match(denied[0]!, /outside/);
    complete(0);
    assert.equal(client.poll(onDone), 1, 'the device completion is reaped from the hardware CQ');
    assert.deepEqual(done[1], [11, 0]);
    assert.equal(client.stats.direct, 1);
    assert.equal(new Int32Array(ringBuf.buffer)[H_HWCQ_HEAD], 1);
    mq.pump();
    assert.equal(mq.inFlight, 0, "homid took the client's head after checking it");
    assert.equal(mq.stats.completed, 1);
    void cid;
  });

  test('a CID outside the queue is refused; a completion for a CID not in flight is ignored by the client', () => {
    const env = mediated();
    const { mq, client, complete, ringBuf } = env;
    // a client that rewrites its SQE's CID to 300 after queueing it
    assert.ok(client.submitIo(NvmOpcode.Read, 1, 100, 1, 0, 0, 1) >= 0);
    const sqWords = new Uint32Array(ringBuf.buffer, 4096, ENTRIES * 16);
    sqWords[0] = (NvmOpcode.Read | (300 << 16)) >>> 0;
    client.ring();
    mq.pump();
    assert.equal(mq.inFlight, 0, 'nothing reached the device');
    const cq = new Uint32Array(ringBuf.buffer, 4096 + Math.ceil((ENTRIES * 64) / 4096) * 4096, ENTRIES * 4);
    assert.equal(cq[3]! & 0xffff, 300);
    assert.equal(cq[3]! >>> 17, STATUS_INVALID_FIELD);
    assert.equal(env.hw.stats.submitted, 0);
    // a real command, then a CQE with another queue's id and the real one
    const done: [number, number][] = [];
    assert.ok(client.submitIo(NvmOpcode.Read, 1, 120, 1, 0, 0, 5) >= 0);
    client.ring();
    mq.pump();
    assert.equal(env.hw.stats.submitted, 1);
    complete(0, 0, 9);
    complete(0);
    assert.equal(
      client.poll((t, st) => void done.push([t, st])),
      1,
    );
    assert.deepEqual(done, [[5, 0]]);
    assert.equal(client.stats.malformed, 2, 'the CID-300 denial (never submitted by this client) and the foreign-queue CQE');
  });
});
