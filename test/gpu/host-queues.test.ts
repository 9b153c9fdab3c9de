/**
 * The host side of GPU queue pairs, checked on the CPU against the embedded controller (CI has no GPU).
 *
 * GpuQueueSet is given a CPU stand-in for the GPU's memory operations (device memory as ArrayBuffers at made-up
 * device addresses; host registration returning the host address as the device pointer, which is what the H200
 * does). A CPU executor then runs the protocol of homi_block_io (initiator.cu) on exactly what a kernel would
 * get: the HomiGpuQueue table read back from "device memory", SQEs stored at `sq`, the tail stored to `sq_db`,
 * phase tags polled at `cq`, the head stored to `cq_db`, PRPs from `data_bus` and the `prp2` table. It only
 * stores doorbells (never wakes the controller), as a GPU. Bytes written are read back through the driver
 * core's own queue pair and checked against the pattern of src/gpu/pattern.ts (the kernels' pattern).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openController, type OpenedController } from '../../src/device/controller.js';
import { provisionQueuePair, type ProvisionedQueuePair } from '../../src/driver/attach.js';
import { dataPointer } from '../../src/driver/dptr.js';
import { HomiGpuQueue, HomiGpuResult, LAT_BUCKETS, LAT_SUB_BITS, field } from '../../src/gpu/layout.js';
import { checkPattern, fillPattern } from '../../src/gpu/pattern.js';
import { decodeResult, defaultEntries, latBucketCycles, launchShape } from '../../src/gpu/perf.js';
import { GpuQueueSet, dataBytesFor, planQueue, stateLayout, type GpuMemoryOps, type GpuQueue } from '../../src/gpu/queues.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import type { EmuTransport } from '../../src/transport/emu.js';

/** Device memory of the stand-in starts here (far from any host address). */
const FAKE_DEVICE_BASE = 0x7000_0000_0000;

class CpuStandIn implements GpuMemoryOps {
  readonly device = new Map<number, Uint8Array>();
  readonly host = new Map<number, number>();
  private next = FAKE_DEVICE_BASE;
  registered = 0;
  registerHost(address: number, bytes: number): { dptr: number; unregister: () => void } {
    this.host.set(address, bytes);
    this.registered++;
    return { dptr: address, unregister: () => void this.host.delete(address) };
  }
  alloc(bytes: number): { dptr: number; bytes: number; free: () => void } {
    const dptr = this.next;
    this.next += Math.ceil(bytes / 4096) * 4096 + 4096;
    this.device.set(dptr, new Uint8Array(bytes));
    return { dptr, bytes, free: () => void this.device.delete(dptr) };
  }
  /** The device buffer holding [dptr, dptr + n). */
  at(dptr: number, n: number): Uint8Array {
    for (const [base, b] of this.device) if (dptr >= base && dptr + n <= base + b.byteLength) return b.subarray(dptr - base, dptr - base + n);
    throw new RangeError(`device address 0x${dptr.toString(16)} (+${n}) is not allocated`);
  }
  copyToDevice(dptr: number, bytes: Uint8Array): void {
    this.at(dptr, bytes.byteLength).set(bytes);
  }
  copyFromDevice(dptr: number, bytes: number): Uint8Array {
    return this.at(dptr, bytes).slice();
  }
}

/** A CPU view of host memory registered through the stand-in: the queue's own mappings. */
function hostView(q: GpuQueue, address: number, n: number): DataView {
  for (const h of q.host) if (address >= h.dptr && address + n <= h.dptr + h.buffer.byteLength) return new DataView(h.buffer, address - h.dptr, n);
  throw new RangeError(`0x${address.toString(16)} is not in a registered host mapping`);
}

/**
 * homi_block_io on the CPU, one block of `n` threads, `rounds` rounds: slot (tail + i) for thread i, one tail
 * doorbell store per round, CQ positions (head + i), completions matched by command id. Returns the statuses.
 */
async function cpuBlockIo(gpu: CpuStandIn, table: number, qi: number, q: GpuQueue, n: number, cmds: Array<{ opcode: number; slba: number }>, ring: { tail: number; head: number }): Promise<number[]> {
  const tb = gpu.copyFromDevice(table + qi * HomiGpuQueue.bytes, HomiGpuQueue.bytes);
  const v = (k: keyof (typeof HomiGpuQueue)['fields'] & string): number => field(HomiGpuQueue, tb, k);
  const E = v('entries');
  const lbaShift = v('lba_shift');
  const slotBytes = v('slot_bytes');
  const page = v('page_bytes');
  const statuses: number[] = [];
  let { tail, head } = ring;
  for (let base = 0; base < cmds.length; base += n) {
    const round = cmds.slice(base, base + n);
    round.forEach((c, i) => {
      const slot = (tail + i) % E;
      const nlb = slotBytes >> lbaShift;
      const bytes = nlb << lbaShift;
      const prp1 = v('data_bus') + slot * slotBytes;
      let prp2 = 0;
      if (bytes > page) prp2 = bytes <= 2 * page ? prp1 + page : Number(new DataView(gpu.copyFromDevice(v('prp2') + 8 * slot, 8).buffer).getBigUint64(0, true));
      const e = hostView(q, v('sq') + slot * 64, 64);
      for (let o = 0; o < 64; o += 4) e.setUint32(o, 0, true);
      e.setUint32(0, c.opcode | (slot << 16), true);
      e.setUint32(4, v('nsid'), true);
      e.setBigUint64(24, BigInt(prp1), true);
      e.setBigUint64(32, BigInt(prp2), true);
      e.setBigUint64(40, BigInt(c.slba), true);
      e.setUint32(48, nlb - 1, true);
    });
    const sqDb = new Int32Array(hostView(q, v('sq_db'), 4).buffer, hostView(q, v('sq_db'), 4).byteOffset, 1);
    Atomics.store(sqDb, 0, (tail + round.length) % E);
    const got: number[] = new Array<number>(round.length).fill(-1);
    const deadline = performance.now() + 5000;
    for (let i = 0; i < round.length; i++) {
      const pos = head + i;
      const want = (Math.floor(pos / E) & 1) ^ 1;
      const dv = hostView(q, v('cq') + (pos % E) * 16, 16);
      const w = new Int32Array(dv.buffer, dv.byteOffset, 4);
      for (;;) {
        const dw3 = Atomics.load(w, 3) >>> 0;
        if (((dw3 >>> 16) & 1) === want) {
          const owner = ((dw3 & 0xffff) + E - (tail % E)) % E;
          assert.ok(owner < round.length, `completion for command id ${dw3 & 0xffff}, not one of this round`);
          got[owner] = dw3 >>> 17;
          break;
        }
        if (performance.now() > deadline) throw new Error(`no completion at CQ position ${pos} within 5 s (the controller does not see doorbell stores alone?)`);
        await new Promise((r) => setImmediate(r));
      }
    }
    head += round.length;
    tail += round.length;
    const cqDb = hostView(q, v('cq_db'), 4);
    Atomics.store(new Int32Array(cqDb.buffer, cqDb.byteOffset, 1), 0, head % E);
    statuses.push(...got);
  }
  ring.tail = tail;
  ring.head = head;
  return statuses;
}

describe('GPU queue pairs on the embedded controller, driven by a CPU stand-in', () => {
  let opened: OpenedController;
  let release: () => void;
  before(async () => {
    opened = await openController('emu://?size=64MiB', { sharedMemory: 'memfd' });
    release = (opened.transport as EmuTransport).holdAwake();
  });
  after(async () => {
    release?.();
    await opened?.close();
  });

  for (const bs of [4096, 8192, 16384, 65536]) {
    test(`${bs}-byte commands: pattern written through the GPU queue layout reads back through the driver core`, { timeout: 60_000 }, async () => {
      const entries = 64;
      const n = 16;
      const gpu = new CpuStandIn();
      const provisioned: ProvisionedQueuePair[] = [];
      const set = new GpuQueueSet(gpu, { slotBytes: bs, closeFds: false });
      try {
        for (let i = 0; i < 2; i++) {
          const p = await provisionQueuePair(opened.controller, opened.transport, { entries, dataBytes: dataBytesFor(entries, bs), nsid: 1 });
          provisioned.push(p);
          set.add(p.grant, p.fds);
        }
        const table = set.publish();
        assert.equal(gpu.registered, 4, 'doorbell window and queue memory of each grant registered');
        const seed = 77 + bs;
        const blockSize = set.queues[0]!.grant.blockSize;
        const nlb = bs / blockSize;
        // 80 commands per queue over 64 entries: the SQ and CQ wrap, the phase flips
        const rings = [
          { tail: 0, head: 0 },
          { tail: 0, head: 0 },
        ];
        for (let qi = 0; qi < 2; qi++) {
          const q = set.queues[qi]!;
          const lbas = Array.from({ length: 80 }, (_, k) => (qi * 80 + k) * nlb);
          // every round uses slots (tail + i): fill each round's buffers just before it
          for (let r = 0; r < 80; r += n) {
            const round = lbas.slice(r, r + n);
            round.forEach((lba, i) => {
              const slot = (r + i) % entries;
              fillPattern(q.hostData.subarray(slot * q.plan.slotBytes, slot * q.plan.slotBytes + bs), seed, lba, blockSize);
            });
            const st = await cpuBlockIo(
              gpu,
              table,
              qi,
              q,
              n,
              round.map((slba) => ({ opcode: NvmOpcode.Write, slba })),
              rings[qi]!,
            );
            assert.deepEqual(st, new Array<number>(round.length).fill(0), 'write statuses');
          }
        }
        // read back through the driver core (a CPU queue pair of its own)
        const qp = await opened.controller.createQueuePair({ entries: 32 });
        try {
          const buf = opened.transport.dma.alloc(bs);
          for (const lba of [0, 7 * nlb, 79 * nlb, 80 * nlb, 159 * nlb]) {
            const dp = dataPointer(opened.transport.dma, buf);
            try {
              await qp.exec({ opcode: NvmOpcode.Read, nsid: 1, cdw10: lba, cdw11: 0, cdw12: nlb - 1, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
            } finally {
              dp.release();
            }
            assert.equal(checkPattern(buf.bytes.subarray(0, bs), seed, lba, blockSize), -1, `LBA ${lba}: the bytes the GPU layout wrote`);
          }
          opened.transport.dma.free(buf);
        } finally {
          await opened.controller.deleteQueuePair(qp);
        }
        // and read back through the GPU layout itself: data lands in the slot buffers the kernels would read
        const q = set.queues[1]!;
        q.hostData.fill(0, 0, q.plan.slotsBytes);
        const st = await cpuBlockIo(gpu, table, 1, q, n, [{ opcode: NvmOpcode.Read, slba: 95 * nlb }], rings[1]!);
        assert.deepEqual(st, [0]);
        const slot = (80 % entries) % entries;
        assert.equal(checkPattern(q.hostData.subarray(slot * q.plan.slotBytes, slot * q.plan.slotBytes + bs), seed, 95 * nlb, blockSize), -1, 'read into the slot buffer');
      } finally {
        set.close();
        for (const p of provisioned) await p.reclaim();
      }
    });
  }

  test('a command the controller refuses reports its status through the same path', { timeout: 30_000 }, async () => {
    const gpu = new CpuStandIn();
    const set = new GpuQueueSet(gpu, { slotBytes: 4096, closeFds: false });
    const p = await provisionQueuePair(opened.controller, opened.transport, { entries: 64, dataBytes: dataBytesFor(64, 4096), nsid: 1 });
    try {
      set.add(p.grant, p.fds);
      const table = set.publish();
      const blocks = p.grant.blocks;
      const st = await cpuBlockIo(
        gpu,
        table,
        0,
        set.queues[0]!,
        2,
        [
          { opcode: NvmOpcode.Read, slba: blocks },
          { opcode: 0x7f, slba: 0 },
        ],
        { tail: 0, head: 0 },
      );
      assert.equal(st[0]! & 0x7ff, 0x80, 'LBA Out of Range');
      assert.equal(st[1]! & 0x7ff, 0x01, 'Invalid Command Opcode');
    } finally {
      set.close();
      await p.reclaim();
    }
  });
});

test('planQueue: power-of-two entries, whole LBAs, the transfer limit, the data region size', () => {
  const g = { entries: 64, pageSize: 4096, blockSize: 512, maxTransferBytes: 131072, data: { offset: 0, bytes: dataBytesFor(64, 16384), iova: 0 } };
  const p = planQueue(g, 16384);
  assert.deepEqual(p, { entries: 64, slotBytes: 16384, pageBytes: 4096, slotsBytes: 64 * 16384, prpListOffset: 64 * 16384, usedBytes: 64 * 16384 + 64 * 4096 });
  assert.equal(planQueue({ ...g, data: { ...g.data, bytes: dataBytesFor(64, 8192) } }, 8192).prpListOffset, null, 'two pages need no list');
  assert.throws(() => planQueue({ ...g, entries: 48 }, 4096), /power-of-two/);
  assert.throws(() => planQueue(g, 1000), /multiple of the 512-byte LBA size/);
  assert.throws(() => planQueue(g, 262144), /largest transfer/);
  assert.throws(() => planQueue({ ...g, data: { ...g.data, bytes: 4096 } }, 4096), /the grant has 4096/);
  const sl = stateLayout(64);
  assert.equal(sl.prp2 % 8, 0);
  assert.equal(sl.bytes, sl.prp2 + 8 * 64);
});

test('launch shapes: a block per queue, or whole warps per queue in ticket mode', () => {
  assert.deepEqual(launchShape({ mode: 'block', qd: 128, nqueues: 4 }), { grid: 4, block: 128, threads: 512 });
  assert.deepEqual(launchShape({ mode: 'ticket', qd: 1, nqueues: 8 }), { grid: 8, block: 1, threads: 8 });
  assert.deepEqual(launchShape({ mode: 'ticket', qd: 512, nqueues: 8 }), { grid: 16, block: 256, threads: 4096 });
  assert.throws(() => launchShape({ mode: 'ticket', qd: 48, nqueues: 2 }), /multiple of 32/);
  assert.throws(() => launchShape({ mode: 'block', qd: 2048, nqueues: 1 }), /exceeds 1024/);
  assert.equal(defaultEntries(1), 64);
  assert.equal(defaultEntries(64), 128);
  assert.equal(defaultEntries(1023), 1024);
});

/** homi_lat_bucket of nvme_queue.cuh, for checking the host's inverse. */
function latBucket(c: number): number {
  if (c < 1 << LAT_SUB_BITS) return c;
  const msb = 31 - Math.clz32(c);
  const sub = (c >>> (msb - LAT_SUB_BITS)) & ((1 << LAT_SUB_BITS) - 1);
  return Math.min(((msb - LAT_SUB_BITS + 1) << LAT_SUB_BITS) + sub, LAT_BUCKETS - 1);
}

test('latency buckets: the host reads each bucket back within its range, and percentiles from the histogram', () => {
  for (const c of [0, 1, 15, 16, 17, 100, 1000, 4321, 65535, 1_000_000, 2 ** 30]) {
    const b = latBucket(c);
    const mid = latBucketCycles(b);
    assert.equal(latBucket(Math.floor(mid)), b, `cycles ${c}: bucket ${b} maps back to ${mid}`);
    assert.ok(Math.abs(mid - c) <= Math.max(1, c / 16), `cycles ${c} vs bucket middle ${mid}`);
  }
  const r = new Uint8Array(HomiGpuResult.bytes);
  const dv = new DataView(r.buffer);
  dv.setBigUint64(0, 100n, true);
  dv.setBigUint64(40, 100n * 2000n, true);
  dv.setBigUint64(48, 9000n, true);
  dv.setUint32(64 + 4 * latBucket(2000), 98, true);
  dv.setUint32(64 + 4 * latBucket(9000), 2, true);
  const d = decodeResult(r, 2_000_000);
  assert.equal(d.ios, 100);
  assert.ok(Math.abs(d.latency.meanUs - 1) < 1e-9, 'mean: 2000 cycles at 2 GHz = 1 us');
  assert.ok(Math.abs(d.latency.p50Us - 1) < 0.07);
  assert.ok(Math.abs(d.latency.p99Us - 4.5) < 0.3);
  assert.equal(d.latency.maxUs, 4.5);
  // The maximum at the bottom of its bucket: the bucket's middle lies above it, and p99 is clamped to it.
  dv.setUint32(64 + 4 * latBucket(9000), 0, true);
  dv.setUint32(64 + 4 * latBucket(8193), 2, true);
  dv.setBigUint64(48, 8193n, true);
  assert.ok(latBucketCycles(latBucket(8193)) > 8193);
  const low = decodeResult(r, 2_000_000);
  assert.ok(Math.abs(low.latency.maxUs - 8193 / 2000) < 1e-12);
  assert.equal(low.latency.p99Us, low.latency.maxUs);
});
