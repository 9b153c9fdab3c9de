/**
 * homid's mediated relay carries the whole completion status (src/nvme/status.ts): a host outcome on homid's
 * hardware queue (a timeout, a reset, a removal) reaches the client as itself, not as Internal Error. The
 * hardware queue pair here is a stand-in that completes what it was given with the status the test picks.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MediatedQueuePair } from '../../src/client/mediated-queue.js';
import { LbaSet, MediatedQueue } from '../../src/daemon/mediated.js';
import { ringBytes } from '../../src/ipc/mediated-ring.js';
import type { QueuePair } from '../../src/driver/queue-pair.js';
import type { DmaAllocator, DmaBuffer } from '../../src/mem/dma.js';
import { makeStatus } from '../../src/nvme/cqe.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { GenericStatus, STATUS_ABORTED_BY_RESET, STATUS_DEVICE_REMOVED, STATUS_TIMEOUT, Sct, errnoStatus, statusName } from '../../src/nvme/status.js';

const PAGE = 4096;
const ENTRIES = 8;

function buffer(bytes: number, iova: number): DmaBuffer {
  return { iova, size: bytes, bytes: new Uint8Array(new SharedArrayBuffer(bytes)) };
}

test('relay: host outcomes and controller statuses reach the client whole', () => {
  const submitted: number[] = [];
  let complete: Array<[number, number, number]> = [];
  const hw = {
    capacity: ENTRIES - 1,
    submitIo: (_op: number, _nsid: number, _slba: number, _nlb: number, _p1: number, _p2: number, tag: number): number => (submitted.push(tag), tag),
    ring: (): void => undefined,
    poll: (h: (tag: number, status: number, result: number) => void): number => {
      const list = complete;
      complete = [];
      for (const [t, s, r] of list) h(t, s, r);
      return list.length;
    },
  } as unknown as QueuePair;
  const ringBuf = new Uint8Array(new SharedArrayBuffer(ringBytes(ENTRIES)));
  const data = buffer(8 * PAGE, 0x40000);
  const prp = buffer(ENTRIES * PAGE, 0x80000);
  const dma = { pageSize: PAGE, alloc: () => prp, free: () => undefined } as unknown as DmaAllocator;
  const mq = new MediatedQueue({
    id: 2,
    entries: ENTRIES,
    ring: { bytes: ringBuf, size: ringBuf.byteLength, fd: null, close: () => undefined } as never,
    data,
    hw,
    dma,
    grant: { nsid: 1, lbaSize: 512, maxTransfer: 1 << 20, write: false, readable: LbaSet.of([{ lba: 0, count: 1000 }]), writable: new LbaSet() },
    onDenied: () => undefined,
  });
  const client = new MediatedQueuePair(ringBuf, data.bytes, 2);
  const statuses = [STATUS_TIMEOUT, STATUS_ABORTED_BY_RESET, STATUS_DEVICE_REMOVED, errnoStatus(5), makeStatus(Sct.Generic, GenericStatus.LbaOutOfRange, true), 0];
  for (let i = 0; i < statuses.length; i++) assert.ok(client.submitIo(NvmOpcode.Read, 1, i, 1, 0, 0, 100 + i) >= 0);
  client.ring();
  mq.pump();
  assert.equal(submitted.length, statuses.length);
  complete = submitted.map((slot, i) => [slot, statuses[i]!, 40 + i]);
  mq.pump();
  const got: Array<[number, number, number]> = [];
  assert.equal(
    client.poll((t, s, r) => void got.push([t, s, r])),
    statuses.length,
  );
  assert.deepEqual(
    got.map(([t, s, r]) => [t, statusName(s), r]),
    statuses.map((s, i) => [100 + i, statusName(s), 40 + i]),
  );
  assert.deepEqual(
    got.map(([, s]) => s),
    statuses,
  );
});
