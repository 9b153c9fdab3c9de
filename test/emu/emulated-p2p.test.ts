/**
 * Emulated P2P: device windows of the embedded controller, driven by the driver core's queue pairs. The device
 * here is the 'memory' test double (a SharedArrayBuffer playing device memory, copies by TypedArray.set); the
 * CUDA copier is checked only for its clean refusal on a machine without a driver.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Controller } from '../../src/driver/controller.js';
import { dataPointer, type DataPointer } from '../../src/driver/dptr.js';
import type { QueuePair } from '../../src/driver/queue-pair.js';
import type { DmaBuffer } from '../../src/mem/dma.js';
import { statusSc, statusSct } from '../../src/nvme/cqe.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { GenericStatus, Sct } from '../../src/nvme/status.js';
import { NoCudaDriverError, cudaDriverPresent } from '../../src/sys/cuda.js';
import { openEmu, type DeviceWindow, type EmuTransport } from '../../src/transport/emu.js';
import { firstDiff, pollUntil, waitFor } from '../driver/helpers.js';
import { BS, KiB, P2pRig, ep2p, isTransferError, pattern, windowRange, type Done } from './p2p-rig.js';

describe('emulated P2P: device windows (memory test double, memfd mode)', () => {
  let emu: EmuTransport;
  let ctrl: Controller;
  let qp: QueuePair;
  let host: DmaBuffer;
  const logs: string[] = [];
  let rig: P2pRig;
  /** Tags of the commands a test submits itself (apart from the rig's). */
  let tag = 1_000_000;
  const batch = (cmds: Array<{ opcode: number; slba: number; nlb: number; dp: DataPointer }>): Promise<Done[]> => rig.batch(cmds);
  const io = (opcode: number, slba: number, len: number, dp: DataPointer): Promise<Done> => rig.io(opcode, slba, len, dp);
  const windowIo = (opcode: number, w: DeviceWindow, off: number, slba: number, len: number): Promise<Done> => rig.windowIo(opcode, w, off, slba, len);

  /** Write `data` to LBA `slba` through ordinary DMA memory. */
  async function writeHost(slba: number, data: Uint8Array): Promise<void> {
    host.bytes.set(data);
    const dp = dataPointer(emu.dma, host, 0, data.length);
    try {
      assert.equal((await io(NvmOpcode.Write, slba, data.length, dp)).status, 0);
    } finally {
      dp.release();
    }
  }

  /** Read `len` bytes at LBA `slba` through ordinary DMA memory. */
  async function readHost(slba: number, len: number): Promise<Uint8Array> {
    host.bytes.fill(0);
    const dp = dataPointer(emu.dma, host, 0, len);
    try {
      assert.equal((await io(NvmOpcode.Read, slba, len, dp)).status, 0);
    } finally {
      dp.release();
    }
    return host.bytes.slice(0, len);
  }

  before(async () => {
    rig = await P2pRig.open((m) => logs.push(m));
    ({ emu, ctrl, qp, host } = rig);
  });
  after(async () => {
    await rig?.close();
  });

  it('reads whose PRPs point into the window land in device memory (through the copy engine), not only in the shadow', async () => {
    const device = new SharedArrayBuffer(1 << 20);
    const dev = new Uint8Array(device);
    const w = emu.addDeviceWindow(1 << 20, { kind: 'memory', memory: device });
    try {
      assert.equal(w.bytes, 1 << 20);
      assert.ok(w.iova > 0 && w.iova % 4096 === 0);
      const data = pattern(128 * KiB, 1);
      await writeHost(0, data);
      const s0 = ep2p(emu);
      // 1 page (PRP1), 2 pages (PRP2), 32 pages (a PRP list), at page offsets inside the window.
      for (const [off, len] of [
        [0, 4 * KiB],
        [64 * KiB, 8 * KiB],
        [256 * KiB, 128 * KiB],
      ] as const) {
        const d = await windowIo(NvmOpcode.Read, w, off, 0, len);
        assert.equal(d.status, 0);
        assert.equal(firstDiff(dev.subarray(off, off + len), data.subarray(0, len)), -1, `device bytes at ${off}`);
      }
      // Nothing outside the ranges read.
      assert.ok(dev.subarray(4 * KiB, 64 * KiB).every((b) => b === 0));
      assert.ok(dev.subarray(384 * KiB).every((b) => b === 0));
      const s1 = ep2p(emu);
      assert.equal(s1.bytesToDevice - s0.bytesToDevice, (4 + 8 + 128) * KiB);
      assert.ok(s1.copiesToDevice - s0.copiesToDevice >= 3);
      assert.equal(s1.fences - s0.fences, 3, 'one fence per polling round');
      assert.equal(s1.errors, 0);
    } finally {
      w.release();
    }
  });

  it('one fence per polling round: eight reads rung together share one', async () => {
    const device = new SharedArrayBuffer(64 * KiB);
    const dev = new Uint8Array(device);
    const w = emu.addDeviceWindow(64 * KiB, { kind: 'memory', memory: device });
    const dps: DataPointer[] = [];
    try {
      const data = pattern(32 * KiB, 2);
      await writeHost(100, data);
      const s0 = ep2p(emu);
      const cmds = [];
      for (let i = 0; i < 8; i++) {
        const dp = dataPointer(emu.dma, windowRange(w, i * 8 * KiB, 4 * KiB), 0, 4 * KiB);
        dps.push(dp);
        cmds.push({ opcode: NvmOpcode.Read, slba: 100 + (i % 8), nlb: 1, dp });
      }
      const done = await batch(cmds);
      assert.deepEqual(
        done.map((d) => d.status),
        new Array(8).fill(0),
      );
      for (let i = 0; i < 8; i++) assert.equal(firstDiff(dev.subarray(i * 8 * KiB, i * 8 * KiB + 4 * KiB), data.subarray(i * 4 * KiB, (i + 1) * 4 * KiB)), -1);
      const s1 = ep2p(emu);
      assert.equal(s1.copiesToDevice - s0.copiesToDevice, 8);
      assert.equal(s1.fences - s0.fences, 1);
    } finally {
      for (const dp of dps) dp.release();
      w.release();
    }
  });

  it('copyDelayMs = 50: the completion waits for the copy (no earlier than the delay), device memory changes only then', async () => {
    const device = new SharedArrayBuffer(64 * KiB);
    const dev = new Uint8Array(device);
    const w = emu.addDeviceWindow(64 * KiB, { kind: 'memory', memory: device, copyDelayMs: 50 });
    const dp = dataPointer(emu.dma, windowRange(w, 0, 16 * KiB), 0, 16 * KiB);
    try {
      const data = pattern(16 * KiB, 3);
      await writeHost(200, data);
      const t0 = performance.now();
      assert.ok(qp.submitIo(NvmOpcode.Read, 1, 200, 4, dp.prp1, dp.prp2, ++tag) >= 0);
      qp.ring();
      let done: Done | null = null;
      const onDone = (_t: number, status: number): void => void (done = { status, at: performance.now() });
      // Half-way: no completion, device memory untouched (checked only while the 50 ms are not over, which a
      // stalled test process could miss).
      await pollUntil(qp, onDone, () => performance.now() - t0 >= 25);
      const early = dev.slice(0, 16 * KiB);
      if (performance.now() - t0 < 50) {
        assert.equal(done, null, 'completed before its copy was done');
        assert.ok(
          early.every((b) => b === 0),
          'device memory changed before the copy was done',
        );
      }
      await pollUntil(qp, onDone, () => done !== null);
      const d = done as unknown as Done;
      assert.equal(d.status, 0);
      assert.ok(d.at - t0 >= 50, `completed after ${(d.at - t0).toFixed(1)} ms, before the 50 ms copy`);
      assert.equal(firstDiff(dev.subarray(0, 16 * KiB), data), -1);
    } finally {
      dp.release();
      w.release();
    }
  });

  it('writes from the window take their data from device memory; it reads back through a normal buffer', async () => {
    const device = new SharedArrayBuffer(256 * KiB);
    const dev = new Uint8Array(device);
    const w = emu.addDeviceWindow(256 * KiB, { kind: 'memory', memory: device });
    try {
      const data = pattern(128 * KiB, 4);
      dev.set(data, 64 * KiB);
      const s0 = ep2p(emu);
      assert.equal((await windowIo(NvmOpcode.Write, w, 64 * KiB, 300, 128 * KiB)).status, 0);
      assert.equal(firstDiff(await readHost(300, 128 * KiB), data), -1);
      // A single page, too (PRP1 only).
      dev.set(pattern(4 * KiB, 5), 0);
      assert.equal((await windowIo(NvmOpcode.Write, w, 0, 400, 4 * KiB)).status, 0);
      assert.equal(firstDiff(await readHost(400, 4 * KiB), pattern(4 * KiB, 5)), -1);
      const s1 = ep2p(emu);
      assert.equal(s1.bytesFromDevice - s0.bytesFromDevice, 132 * KiB);
      assert.equal(s1.copiesFromDevice - s0.copiesFromDevice, 2);
      assert.equal(s1.bytesToDevice, s0.bytesToDevice, 'a write copies nothing to the device');
    } finally {
      w.release();
    }
  });

  it('a PRP that straddles the window end is refused with Data Transfer Error; device memory untouched, the controller runs on', async () => {
    // 3.5 pages: the shadow is 4 pages (page rounding), the window stops half-way into the last one.
    const bytes = 3 * BS + 2048;
    const device = new SharedArrayBuffer(bytes);
    const dev = new Uint8Array(device);
    const w = emu.addDeviceWindow(bytes, { kind: 'memory', memory: device });
    try {
      await writeHost(500, pattern(8 * KiB, 6));
      const errors0 = emu.stats().errors;
      // A page starting in the window's last (partial) page: runs 2048 bytes past the end.
      assert.ok(isTransferError((await windowIo(NvmOpcode.Read, w, 3 * BS, 500, BS)).status));
      // Two pages whose second lies wholly past the end.
      assert.ok(isTransferError((await windowIo(NvmOpcode.Read, w, 2 * BS + 2048, 500, 2 * BS)).status));
      // A write from beyond the end, too.
      assert.ok(isTransferError((await windowIo(NvmOpcode.Write, w, 3 * BS, 600, BS)).status));
      assert.ok(
        dev.every((b) => b === 0),
        'nothing reached device memory',
      );
      assert.ok(emu.stats().errors >= errors0 + 3);
      // Inside the window all is well.
      assert.equal((await windowIo(NvmOpcode.Read, w, 2 * BS, 500, BS)).status, 0);
      assert.equal(firstDiff(dev.subarray(2 * BS, 3 * BS), pattern(8 * KiB, 6).subarray(0, BS)), -1);
    } finally {
      w.release();
    }
  });

  it('release() of an idle window: later PRPs into its range fail as a transfer error; release is idempotent', async () => {
    const device = new SharedArrayBuffer(16 * KiB);
    const w = emu.addDeviceWindow(16 * KiB, { kind: 'memory', memory: device });
    assert.equal((await windowIo(NvmOpcode.Read, w, 0, 0, BS)).status, 0);
    w.release();
    w.release();
    assert.ok(isTransferError((await windowIo(NvmOpcode.Read, w, 0, 0, BS)).status));
    assert.ok(isTransferError((await windowIo(NvmOpcode.Write, w, 0, 0, BS)).status));
    assert.ok(new Uint8Array(device).subarray(BS).every((b) => b === 0));
    // Ordinary I/O is unaffected.
    await writeHost(700, pattern(BS, 7));
    assert.equal(firstDiff(await readHost(700, BS), pattern(BS, 7)), -1);
  });

  it('release() while a copy is outstanding settles it first: the read completes with its data in device memory', async () => {
    const device = new SharedArrayBuffer(16 * KiB);
    const dev = new Uint8Array(device);
    const w = emu.addDeviceWindow(16 * KiB, { kind: 'memory', memory: device, copyDelayMs: 40 });
    const dp = dataPointer(emu.dma, windowRange(w, 0, 8 * KiB), 0, 8 * KiB);
    const data = pattern(8 * KiB, 8);
    await writeHost(800, data);
    let done: Done | null = null;
    assert.ok(qp.submitIo(NvmOpcode.Read, 1, 800, 2, dp.prp1, dp.prp2, ++tag) >= 0);
    qp.ring();
    const t0 = performance.now();
    await pollUntil(
      qp,
      (_t, status) => void (done = { status, at: performance.now() }),
      () => performance.now() - t0 >= 5,
    );
    w.release(); // waits for the copy engine
    await pollUntil(
      qp,
      (_t, status) => void (done = { status, at: performance.now() }),
      () => done !== null,
    );
    dp.release();
    assert.equal((done as unknown as Done).status, 0);
    assert.equal(firstDiff(dev.subarray(0, 8 * KiB), data), -1);
  });

  it('a command waiting for its copy, aborted or its queue deleted, completes so; nobody waits for the copy any more', async () => {
    const device = new SharedArrayBuffer(16 * KiB);
    const w = emu.addDeviceWindow(16 * KiB, { kind: 'memory', memory: device, copyDelayMs: 300 });
    const dp = dataPointer(emu.dma, windowRange(w, 0, BS), 0, BS);
    try {
      for (const abort of [true, false]) {
        const q = await ctrl.createQueuePair({ entries: 8 });
        const statuses: number[] = [];
        const cid = q.submitIo(NvmOpcode.Read, 1, 0, 1, dp.prp1, dp.prp2, 1);
        assert.ok(cid >= 0);
        q.ring();
        const t0 = performance.now();
        await pollUntil(
          q,
          (_t, status) => void statuses.push(status),
          () => performance.now() - t0 >= 20,
        );
        assert.equal(statuses.length, 0, 'held for its copy');
        await ctrl.deleteQueuePair(q, abort ? { abortCids: [cid] } : {});
        q.poll((_t, status) => void statuses.push(status));
        assert.equal(statuses.length, 1);
        assert.equal(statusSct(statuses[0]!), Sct.Generic);
        assert.equal(statusSc(statuses[0]!), abort ? GenericStatus.AbortRequested : GenericStatus.AbortedSqDeletion);
        // The copy still runs, but no completion waits for it: the idle controller sleeps again.
        const sleeps = emu.stats().sleeps;
        await new Promise((r) => setTimeout(r, 100));
        assert.ok(emu.stats().sleeps > sleeps, 'the controller went back to sleep');
      }
    } finally {
      dp.release();
      w.release();
    }
  });

  it('a failed copy completes its command with Data Transfer Error and is logged; never a hang', async () => {
    const device = new SharedArrayBuffer(16 * KiB);
    const w = emu.addDeviceWindow(16 * KiB, { kind: 'memory', memory: device, failCopies: true });
    try {
      const logged = logs.length;
      const errors0 = ep2p(emu).errors;
      assert.ok(isTransferError((await windowIo(NvmOpcode.Read, w, 0, 0, BS)).status));
      assert.ok(isTransferError((await windowIo(NvmOpcode.Write, w, 0, 0, BS)).status));
      assert.ok(ep2p(emu).errors > errors0);
      await waitFor(() => logs.length > logged, 2000, 'the log message (it comes through the event loop)');
      await new Promise((r) => setTimeout(r, 20));
      const lines = logs.slice(logged);
      assert.equal(lines.length, 1, `logged once: ${JSON.stringify(lines)}`);
      assert.match(lines[0]!, /^emulated P2P: a copy failed in the device window at IOVA 0x[0-9a-f]+ \(memory test double\): .*Data Transfer Error/);
    } finally {
      w.release();
    }
    await writeHost(900, pattern(BS, 9));
    assert.equal(firstDiff(await readHost(900, BS), pattern(BS, 9)), -1);
  });

  it('refuses bad arguments before touching the controller', async () => {
    const device = new SharedArrayBuffer(BS);
    assert.throws(() => emu.addDeviceWindow(0, { kind: 'memory', memory: device }), RangeError);
    assert.throws(() => emu.addDeviceWindow(2 * BS, { kind: 'memory', memory: device }), /do not fit/);
    assert.throws(() => emu.addDeviceWindow(BS, { kind: 'memory', memory: device, copyDelayMs: -1 }), /copyDelayMs/);
    assert.throws(() => emu.addDeviceWindow(BS, { kind: 'cuda', ordinal: -1, dptr: 1 }), /ordinal/);
  });

  it('a cuda window without a CUDA driver fails with NoCudaDriverError, cleanly; the controller runs on', { skip: cudaDriverPresent() ? 'a CUDA driver is present' : false }, async () => {
    const segments = emu.shmDma.segmentInfos().length;
    assert.throws(
      () => emu.addDeviceWindow(1 << 20, { kind: 'cuda', ordinal: 0, dptr: 0x7f00_0000_0000 }),
      (e: unknown) => {
        assert.ok(e instanceof NoCudaDriverError, `not a NoCudaDriverError: ${String(e)}`);
        assert.match(e.message, /^no CUDA driver: libcuda\.so\.1 not found/);
        return true;
      },
    );
    assert.equal(emu.shmDma.segmentInfos().length, segments, 'the shadow segment was released');
    assert.equal(emu.failure, null);
    await writeHost(1000, pattern(BS, 10));
    assert.equal(firstDiff(await readHost(1000, BS), pattern(BS, 10)), -1);
    // And windows still work after it.
    const device = new SharedArrayBuffer(BS);
    const w = emu.addDeviceWindow(BS, { kind: 'memory', memory: device });
    assert.equal((await windowIo(NvmOpcode.Read, w, 0, 1000, BS)).status, 0);
    assert.equal(firstDiff(new Uint8Array(device), pattern(BS, 10)), -1);
    w.release();
  });
});

describe('emulated P2P: SharedArrayBuffer mode', () => {
  it('refuses device windows (memfd mode required)', async () => {
    const emu = await openEmu({ namespaces: [{ sizeBytes: 1 << 20, lbads: 12 }] });
    try {
      assert.throws(() => emu.addDeviceWindow(BS, { kind: 'memory', memory: new SharedArrayBuffer(BS) }), /memfd mode/);
      assert.throws(() => emu.addDeviceWindow(BS, { kind: 'cuda', ordinal: 0, dptr: 0x1000 }), /memfd mode/);
    } finally {
      await emu.close();
    }
  });
});

describe('emulated P2P on a null namespace', () => {
  it('reads into a window still go through the copy engine (the cost measured), though no data is kept', async () => {
    const emu = await openEmu({ namespaces: [{ sizeBytes: 16 << 20, lbads: 12 }], backing: 'null', sharedMemory: 'memfd', log: () => undefined });
    const ctrl = await Controller.open(emu, { log: () => undefined });
    try {
      const qp = await ctrl.createQueuePair({ entries: 64 });
      const device = new SharedArrayBuffer(1 << 20);
      const dev = new Uint8Array(device);
      dev.fill(0xab);
      const w = emu.addDeviceWindow(1 << 20, { kind: 'memory', memory: device });
      const s0 = ep2p(emu);
      const len = 64 * KiB;
      const dp = dataPointer(emu.dma, windowRange(w, 128 * KiB, len), 0, len);
      let status = -1;
      assert.ok(qp.submitIo(NvmOpcode.Read, 1, 0, len / BS, dp.prp1, dp.prp2, 1) >= 0);
      qp.ring();
      await pollUntil(
        qp,
        (_t, s) => void (status = s),
        () => status !== -1,
      );
      dp.release();
      assert.equal(status, 0);
      const s1 = ep2p(emu);
      assert.equal(s1.bytesToDevice - s0.bytesToDevice, len, 'the 64 KiB went through the copier');
      assert.ok(
        dev.subarray(128 * KiB, 128 * KiB + len).every((b) => b === 0),
        'device memory now holds the shadow bytes',
      );
      assert.ok(
        dev.subarray(0, 128 * KiB).every((b) => b === 0xab),
        'nothing outside the command was touched',
      );
      w.release();
      await ctrl.deleteQueuePair(qp);
    } finally {
      await ctrl.close();
      await emu.close();
    }
  });
});
