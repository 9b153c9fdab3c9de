/**
 * Emulated P2P's CUDA copier (src/emu/cuda-copier.ts) against a fake libcuda (test/emu/fake-libcuda.c, a test
 * double built here with the C compiler; skipped without one, and where a real driver is present, whose
 * machines run the real thing). "Device memory" is host memory the fake hands out from cuMemAlloc; streams run
 * their copies when a later event is queried (the first query answers NOT_READY) or synchronized. This checks
 * the whole path a GPU machine takes: the worker's dynamic import of the copier, primary context, registration
 * of the shadow mapping, async copies, one event per polling round, copies from the device, release, errors.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import { dataPointer, type DataPointer } from '../../src/driver/dptr.js';
import type { DmaBuffer } from '../../src/mem/dma.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { cuInit, cuMemAlloc, cuMemcpyDtoH, cuMemcpyHtoD, cuMemFree } from '../../src/sys/cuda.js';
import type { DeviceWindow, EmuTransport } from '../../src/transport/emu.js';
import { firstDiff, waitFor } from '../driver/helpers.js';
import { BS, KiB, P2pRig, ep2p, isTransferError, pattern } from './p2p-rig.js';
import { buildFakeCuda, realCudaDriverPresent } from './fake-cuda.js';

const dir = mkdtempSync(join(tmpdir(), 'homi-fake-cuda-'));
const skip = realCudaDriverPresent() ? 'a real CUDA driver is present' : false;
const lib = skip === false ? buildFakeCuda(dir) : null;
// Before src/sys/cuda.ts first loads the driver, here and in the controller worker (which inherits the environment).
if (lib !== null) process.env['HOMI_LIBCUDA'] = lib;

describe('emulated P2P: the CUDA copier against a fake libcuda', { skip: skip !== false ? skip : lib === null ? 'no C compiler' : false }, () => {
  let emu: EmuTransport;
  let host: DmaBuffer;
  let dptr = 0;
  let fake: { stat: (which: number) => number; setFailCopies: (on: number) => void };
  const logs: string[] = [];
  const DEVICE_BYTES = 1 << 20;
  const [HTOD_ASYNC, DTOH_ASYNC, BYTES_HTOD, EVENTS_RECORDED, NOT_READY, CTX_REFS, REGISTERED, STREAMS, EVENTS] = [0, 1, 2, 3, 4, 5, 6, 7, 8];

  let rig: P2pRig;
  const batch = async (cmds: Array<{ opcode: number; slba: number; nlb: number; dp: DataPointer }>): Promise<number[]> => (await rig.batch(cmds)).map((d) => d.status);
  async function hostIo(opcode: number, slba: number, len: number): Promise<void> {
    const dp = dataPointer(emu.dma, host, 0, len);
    try {
      assert.deepEqual(await batch([{ opcode, slba, nlb: len / BS, dp }]), [0]);
    } finally {
      dp.release();
    }
  }
  const windowIo = async (opcode: number, w: DeviceWindow, off: number, slba: number, len: number): Promise<number> => (await rig.windowIo(opcode, w, off, slba, len)).status;
  function device(off: number, len: number): Uint8Array {
    const b = new Uint8Array(len);
    cuMemcpyDtoH(b, dptr + off);
    return b;
  }

  before(async () => {
    const l = koffi.load(lib!);
    fake = { stat: l.func('long fake_stat(int which)') as (which: number) => number, setFailCopies: l.func('void fake_set_fail_copies(int on)') as (on: number) => void };
    cuInit();
    dptr = cuMemAlloc(DEVICE_BYTES);
    rig = await P2pRig.open((m) => logs.push(m));
    ({ emu, host } = rig);
  });
  after(async () => {
    try {
      await rig?.close();
    } finally {
      if (dptr !== 0) cuMemFree(dptr);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads into a cuda window reach device memory by async copies, one event per polling round, completions after the event', async () => {
    const w = emu.addDeviceWindow(DEVICE_BYTES, { kind: 'cuda', ordinal: 0, dptr });
    try {
      assert.equal(fake.stat(CTX_REFS), 1, 'the worker retained the primary context');
      assert.equal(fake.stat(REGISTERED), 1, 'the shadow mapping is registered');
      assert.equal(fake.stat(STREAMS), 1);
      const data = pattern(128 * KiB, 1);
      host.bytes.set(data);
      await hostIo(NvmOpcode.Write, 0, 128 * KiB);
      const f0 = [fake.stat(HTOD_ASYNC), fake.stat(EVENTS_RECORDED), fake.stat(NOT_READY), fake.stat(BYTES_HTOD)];
      assert.equal(await windowIo(NvmOpcode.Read, w, 0, 0, BS), 0);
      assert.equal(await windowIo(NvmOpcode.Read, w, 512 * KiB, 0, 128 * KiB), 0);
      assert.equal(firstDiff(device(0, BS), data.subarray(0, BS)), -1);
      assert.equal(firstDiff(device(512 * KiB, 128 * KiB), data), -1);
      assert.ok(device(BS, 508 * KiB).every((b) => b === 0));
      // Eight reads rung together: eight copies, one event.
      const dps = Array.from({ length: 8 }, (_, i) => dataPointer(emu.dma, { iova: w.iova + 256 * KiB + i * 2 * BS, size: BS, bytes: new Uint8Array(0) }, 0, BS));
      try {
        assert.deepEqual(await batch(dps.map((dp, i) => ({ opcode: NvmOpcode.Read, slba: i, nlb: 1, dp }))), new Array(8).fill(0));
      } finally {
        for (const dp of dps) dp.release();
      }
      for (let i = 0; i < 8; i++) assert.equal(firstDiff(device(256 * KiB + i * 2 * BS, BS), data.subarray(i * BS, (i + 1) * BS)), -1);
      assert.equal(fake.stat(HTOD_ASYNC) - f0[0]!, 10);
      assert.equal(fake.stat(EVENTS_RECORDED) - f0[1]!, 3);
      assert.ok(fake.stat(NOT_READY) - f0[2]! >= 3, 'each completion waited for its event');
      assert.equal(fake.stat(BYTES_HTOD) - f0[3]!, 4 * KiB + 128 * KiB + 8 * BS);
      const s = ep2p(emu);
      assert.equal(s.bytesToDevice, 4 * KiB + 128 * KiB + 8 * BS);
      assert.equal(s.fences, 3);
    } finally {
      w.release();
    }
    assert.equal(fake.stat(CTX_REFS), 0, 'context released');
    assert.equal(fake.stat(REGISTERED), 0, 'shadow unregistered');
    assert.equal(fake.stat(STREAMS), 0);
    assert.equal(fake.stat(EVENTS), 0);
  });

  it('writes from a cuda window take their data from device memory', async () => {
    const w = emu.addDeviceWindow(DEVICE_BYTES, { kind: 'cuda', ordinal: 0, dptr });
    try {
      const data = pattern(64 * KiB, 2);
      cuMemcpyHtoD(dptr + 128 * KiB, data);
      const d0 = fake.stat(DTOH_ASYNC);
      assert.equal(await windowIo(NvmOpcode.Write, w, 128 * KiB, 1000, 64 * KiB), 0);
      assert.equal(fake.stat(DTOH_ASYNC) - d0, 1);
      host.bytes.fill(0);
      await hostIo(NvmOpcode.Read, 1000, 64 * KiB);
      assert.equal(firstDiff(host.bytes.subarray(0, 64 * KiB), data), -1);
    } finally {
      w.release();
    }
  });

  it('a window past the end of its allocation, or on a device that does not exist, is refused cleanly', async () => {
    assert.throws(() => emu.addDeviceWindow(DEVICE_BYTES, { kind: 'cuda', ordinal: 0, dptr: dptr + BS }), /run past the end of its allocation/);
    assert.throws(() => emu.addDeviceWindow(BS, { kind: 'cuda', ordinal: 1, dptr }), /cuDeviceGet failed/);
    assert.equal(fake.stat(CTX_REFS), 0);
    assert.equal(fake.stat(REGISTERED), 0);
    assert.equal(emu.failure, null);
    host.bytes.set(pattern(BS, 3));
    await hostIo(NvmOpcode.Write, 2000, BS);
  });

  it('a failed copy completes the command with Data Transfer Error and is logged with the driver error', async () => {
    const w = emu.addDeviceWindow(DEVICE_BYTES, { kind: 'cuda', ordinal: 0, dptr });
    const logged = logs.length;
    try {
      fake.setFailCopies(1);
      assert.ok(isTransferError(await windowIo(NvmOpcode.Read, w, 0, 0, BS)));
      assert.ok(isTransferError(await windowIo(NvmOpcode.Read, w, 0, 0, BS)), 'the window stays failed');
      await waitFor(() => logs.length > logged, 2000, 'the log message (it comes through the event loop)');
      await new Promise((r) => setTimeout(r, 20));
      const lines = logs.slice(logged);
      assert.equal(lines.length, 1, JSON.stringify(lines));
      assert.match(lines[0]!, /^emulated P2P: a copy failed in the device window at IOVA 0x[0-9a-f]+ \(cuda device 0\): cuEventQuery failed: CUDA_ERROR_ILLEGAL_ADDRESS/);
    } finally {
      w.release();
      fake.setFailCopies(0);
    }
    assert.equal(fake.stat(CTX_REFS), 0);
    assert.equal(fake.stat(STREAMS), 0);
    // The controller runs on; a new window works.
    const w2 = emu.addDeviceWindow(BS, { kind: 'cuda', ordinal: 0, dptr });
    try {
      host.bytes.set(pattern(BS, 4));
      await hostIo(NvmOpcode.Write, 3000, BS);
      assert.equal(await windowIo(NvmOpcode.Read, w2, 0, 3000, BS), 0);
      assert.equal(firstDiff(device(0, BS), pattern(BS, 4)), -1);
    } finally {
      w2.release();
    }
  });
});
