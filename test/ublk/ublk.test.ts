/**
 * The ublk server's logic that runs without the kernel's ublk driver: the command numbers and structure layouts
 * (byte fixtures), parameter and spec validation, the dispatcher that turns ublk I/O descriptors into NVMe
 * commands on a queue pair of the embedded controller (bytes read back through another queue pair), the NVMe
 * status -> errno mapping, the configuration and the errors when /dev/ublk-control is missing. The kernel half
 * (FETCH / COMMIT, START_DEV, recovery, mkfs and mount) runs in the VM suite: test-guest/ublk.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import {
  UBLK_U_CMD_ADD_DEV,
  UBLK_U_CMD_DEL_DEV,
  UBLK_U_CMD_END_USER_RECOVERY,
  UBLK_U_CMD_GET_DEV_INFO,
  UBLK_U_CMD_SET_PARAMS,
  UBLK_U_CMD_START_DEV,
  UBLK_U_CMD_START_USER_RECOVERY,
  UBLK_U_CMD_STOP_DEV,
  UBLK_U_IO_COMMIT_AND_FETCH_REQ,
  UBLK_U_IO_FETCH_REQ,
  UBLK_F_USER_RECOVERY,
  UBLK_F_CMD_IOCTL_ENCODE,
  UBLK_ATTR_VOLATILE_CACHE,
  UBLK_PARAM_TYPE_BASIC,
  UBLK_PARAM_TYPE_DISCARD,
  UBLK_PARAMS_SIZE,
  UBLK_MAX_CMD_BUF_BYTES,
  UblkIoOp,
  UblkState,
  decodeCtrlCmd,
  decodeDevInfo,
  decodeIoDesc,
  descArrayBytes,
  encodeCtrlCmd,
  encodeDevInfo,
  encodeParams,
  writeIoCmdWords,
} from '../../src/sys/ublk.js';
import { Errno, Refusal, UblkQueueDispatcher, errnoForStatus } from '../../src/ublk/dispatch.js';
import { UblkError, openUblkControl } from '../../src/ublk/control.js';
import { paramsFor, validateSpec, type UblkDeviceSpec } from '../../src/ublk/device.js';
import { Controller } from '../../src/driver/controller.js';
import { dataPointer } from '../../src/driver/dptr.js';
import { attachQueuePair, provisionQueuePair } from '../../src/driver/attach.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { makeStatus } from '../../src/nvme/cqe.js';
import { GenericStatus, MediaStatus, STATUS_TIMEOUT, Sct, errnoStatus } from '../../src/nvme/status.js';
import { openEmu, type EmuTransport } from '../../src/transport/emu.js';
import { parseConfig } from '../../src/daemon/config.js';
import { Homid } from '../../src/daemon/homid.js';
import { formatStatus } from '../../src/cli/status.js';
import { formatUblk } from '../../src/cli/ublk.js';
import { HomidError } from '../../src/daemon/errors.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('control and I/O command numbers are the ioctl encodings of include/uapi/linux/ublk_cmd.h', () => {
  // _IOWR('u', nr, 32-byte ublksrv_ctrl_cmd) = 0xc020_75nr, _IOR = 0x8020_75nr; I/O: 16-byte ublksrv_io_cmd
  assert.equal(UBLK_U_CMD_GET_DEV_INFO, 0x80207502);
  assert.equal(UBLK_U_CMD_ADD_DEV, 0xc0207504);
  assert.equal(UBLK_U_CMD_DEL_DEV, 0xc0207505);
  assert.equal(UBLK_U_CMD_START_DEV, 0xc0207506);
  assert.equal(UBLK_U_CMD_STOP_DEV, 0xc0207507);
  assert.equal(UBLK_U_CMD_SET_PARAMS, 0xc0207508);
  assert.equal(UBLK_U_CMD_START_USER_RECOVERY, 0xc0207510);
  assert.equal(UBLK_U_CMD_END_USER_RECOVERY, 0xc0207511);
  assert.equal(UBLK_U_IO_FETCH_REQ, 0xc0107520);
  assert.equal(UBLK_U_IO_COMMIT_AND_FETCH_REQ, 0xc0107521);
  assert.equal(UBLK_MAX_CMD_BUF_BYTES, 98304);
  assert.equal(descArrayBytes(16), 4096);
  assert.equal(descArrayBytes(200), 8192);
});

test('ublksrv_ctrl_cmd, ublksrv_ctrl_dev_info, ublk_params and ublksrv_io_cmd byte layouts', () => {
  const cmd = new Uint8Array(32);
  encodeCtrlCmd({ devId: 3, len: 64, addr: 0x7f00_1234_5000, data0: 4242n }, cmd);
  assert.equal(hex(cmd), '03000000' + 'ffff' + '4000' + '0050341200' + '7f0000' + '9210000000000000' + '0000000000000000');
  assert.deepEqual(decodeCtrlCmd(cmd), { devId: 3, queueId: 0xffff, len: 64, addr: 0x7f00_1234_5000, data0: 4242n });

  const info = new Uint8Array(64);
  encodeDevInfo({ nrHwQueues: 2, queueDepth: 16, maxIoBufBytes: 65536, devId: 0xffffffff, flags: UBLK_F_USER_RECOVERY | UBLK_F_CMD_IOCTL_ENCODE }, info);
  assert.equal(hex(info.subarray(0, 32)), '0200' + '1000' + '0000' + '0000' + '00000100' + 'ffffffff' + '00000000' + '00000000' + '4800000000000000');
  // as the kernel answers: state LIVE, pid, owner
  const v = new DataView(info.buffer);
  v.setUint16(4, UblkState.Live, true);
  v.setUint32(12, 7, true);
  v.setInt32(16, 1234, true);
  v.setUint32(40, 0, true);
  v.setUint32(44, 0, true);
  const d = decodeDevInfo(info);
  assert.equal(d.devId, 7);
  assert.equal(d.state, UblkState.Live);
  assert.equal(d.ublksrvPid, 1234);
  assert.equal(d.flags, UBLK_F_USER_RECOVERY | UBLK_F_CMD_IOCTL_ENCODE);
  assert.throws(() => decodeDevInfo(new Uint8Array(63)), RangeError);

  const p = new Uint8Array(UBLK_PARAMS_SIZE);
  encodeParams(
    {
      attrs: UBLK_ATTR_VOLATILE_CACHE,
      logicalBsShift: 12,
      physicalBsShift: 12,
      ioOptShift: 0,
      ioMinShift: 12,
      maxSectors: 128,
      chunkSectors: 0,
      devSectors: 131072,
      virtBoundaryMask: 0,
      discard: { alignment: 0, granularity: 4096, maxDiscardSectors: 8192, maxWriteZeroesSectors: 0, maxDiscardSegments: 1 },
    },
    p,
  );
  const pv = new DataView(p.buffer);
  assert.equal(pv.getUint32(0, true), UBLK_PARAMS_SIZE);
  assert.equal(pv.getUint32(4, true), UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD);
  assert.equal(hex(p.subarray(8, 40)), '04000000' + '0c0c000c' + '80000000' + '00000000' + '0000020000000000' + '0000000000000000');
  assert.equal(hex(p.subarray(40, 60)), '00000000' + '00100000' + '00200000' + '00000000' + '0100' + '0000');

  const w = new Uint32Array(4);
  writeIoCmdWords(w, 0, 1, 5, -5, 0x7f12_3456_7000);
  assert.equal(hex(new Uint8Array(w.buffer)), '0100' + '0500' + 'fbffffff' + '0070563412' + '7f0000');

  const desc = new Uint8Array(48);
  const dv = new DataView(desc.buffer);
  dv.setUint32(24, UblkIoOp.Write | (1 << 13), true);
  dv.setUint32(28, 16, true);
  dv.setBigUint64(32, 0x1_0000_0008n, true);
  dv.setBigUint64(40, 0x7f00_0000_1000n, true);
  assert.deepEqual(decodeIoDesc(desc, 1), { op: UblkIoOp.Write, flags: 1 << 5, nrSectors: 16, startSector: 0x1_0000_0008, addr: 0x7f00_0000_1000 });
});

test('NVMe completion status -> the negative errno the kernel gets', () => {
  assert.equal(errnoForStatus(0), 0);
  assert.equal(errnoForStatus(makeStatus(Sct.Generic, GenericStatus.InvalidOpcode)), -Errno.EOPNOTSUPP);
  assert.equal(errnoForStatus(makeStatus(Sct.Generic, GenericStatus.InvalidField)), -Errno.EOPNOTSUPP);
  assert.equal(errnoForStatus(makeStatus(Sct.Generic, GenericStatus.LbaOutOfRange)), -Errno.EREMOTEIO);
  assert.equal(errnoForStatus(makeStatus(Sct.Generic, GenericStatus.CapacityExceeded)), -Errno.ENOSPC);
  assert.equal(errnoForStatus(makeStatus(Sct.Generic, GenericStatus.NamespaceWriteProtected)), -Errno.EROFS);
  assert.equal(errnoForStatus(makeStatus(Sct.Generic, GenericStatus.InternalError)), -Errno.EIO);
  assert.equal(errnoForStatus(makeStatus(Sct.MediaDataIntegrity, MediaStatus.UnrecoveredReadError, true)), -Errno.ENODATA);
  assert.equal(errnoForStatus(STATUS_TIMEOUT), -Errno.ETIMEDOUT);
  assert.equal(errnoForStatus(errnoStatus(Errno.ENOMEM)), -Errno.ENOMEM);
});

function spec(over: Partial<UblkDeviceSpec> = {}): UblkDeviceSpec {
  return { devId: 0, target: { nsid: 1, blockSize: 4096, rangeStart: 256, rangeBlocks: 1024 }, queues: 1, depth: 8, bufBytes: 65536, discard: true, ...over };
}

test('spec validation names the bad field; parameters follow the namespace and the range', () => {
  validateSpec(spec());
  const bad: [Partial<UblkDeviceSpec>, RegExp][] = [
    [{ depth: 0 }, /depth must be 1\.\.4096/],
    [{ depth: 5000 }, /depth/],
    [{ queues: 0 }, /queues/],
    [{ bufBytes: 1000 }, /multiple of 4096/],
    [{ bufBytes: 4096, target: { nsid: 1, blockSize: 8192, rangeStart: 0, rangeBlocks: 8 } }, /smaller than one block/],
    [{ target: { nsid: 0, blockSize: 4096, rangeStart: 0, rangeBlocks: 8 } }, /nsid/],
    [{ target: { nsid: 1, blockSize: 1000, rangeStart: 0, rangeBlocks: 8 } }, /block size/],
    [{ target: { nsid: 1, blockSize: 4096, rangeStart: -1, rangeBlocks: 8 } }, /range start/],
    [{ target: { nsid: 1, blockSize: 4096, rangeStart: 0, rangeBlocks: 0 } }, /range count/],
    [{ devId: -2 }, /device id/],
  ];
  for (const [o, re] of bad) {
    assert.throws(
      () => validateSpec(spec(o)),
      (e: unknown) => e instanceof UblkError && e.code === 'bad-request' && re.test(e.message),
      JSON.stringify(o),
    );
  }
  const p = paramsFor(spec());
  assert.equal(p.logicalBsShift, 12);
  assert.equal(p.devSectors, 1024 * 8);
  assert.equal(p.maxSectors, 128);
  assert.equal(p.discard?.granularity, 4096);
  assert.equal(paramsFor(spec({ discard: false })).discard, null);
  const p512 = paramsFor(spec({ target: { nsid: 1, blockSize: 512, rangeStart: 0, rangeBlocks: 100 } }));
  assert.equal(p512.logicalBsShift, 9);
  assert.equal(p512.devSectors, 100);
});

interface Rig {
  emu: EmuTransport;
  ctrl: Controller;
  close(): Promise<void>;
}

async function rig(lbads: 9 | 12, sharedMemory: 'sab' | 'memfd' = 'sab'): Promise<Rig> {
  const emu = await openEmu({ namespaces: [{ sizeBytes: 16 << 20, lbads }], backing: 'memory', sharedMemory });
  const ctrl = await Controller.open(emu);
  return {
    emu,
    ctrl,
    close: async () => {
      await ctrl.close();
      await emu.close();
    },
  };
}

/** Drive the dispatcher until `n` requests finished; returns tag -> result. */
function drain(d: UblkQueueDispatcher, results: Map<number, number>, n: number): void {
  const deadline = Date.now() + 20_000;
  d.ring();
  while (results.size < n) {
    d.poll();
    if (Date.now() > deadline) throw new Error('dispatcher stalled');
  }
}

/** Read `nlb` LBAs at `lba` through a separate queue pair (not the dispatcher's). */
async function readDirect(r: Rig, lba: number, nlb: number, blockSize: number): Promise<Uint8Array> {
  const qp = await r.ctrl.createQueuePair({ entries: 4 });
  const buf = r.emu.dma.alloc(nlb * blockSize);
  const dp = dataPointer(r.emu.dma, buf);
  let st = -1;
  qp.submitIo(NvmOpcode.Read, 1, lba, nlb, dp.prp1, dp.prp2, 1);
  qp.ring();
  const deadline = Date.now() + 10_000;
  while (st < 0) {
    qp.poll((_t, s) => (st = s));
    if (Date.now() > deadline) throw new Error('direct read stalled');
  }
  assert.equal(st, 0);
  const out = buf.bytes.slice();
  dp.release();
  r.emu.dma.free(buf);
  await r.ctrl.deleteQueuePair(qp);
  return out;
}

for (const lbads of [12, 9] as const) {
  const bs = 1 << lbads;
  test(`dispatcher on the embedded controller (${bs}-byte LBAs): writes land at range start + offset / block size, reads, flush, discard come back`, async () => {
    const r = await rig(lbads);
    try {
      const qp = await r.ctrl.createQueuePair({ entries: 9 });
      const results = new Map<number, number>();
      const rangeStart = 64; // LBAs
      const target = { nsid: 1, blockSize: bs, rangeStart, rangeBlocks: 2048 };
      const d = new UblkQueueDispatcher(qp, r.emu.dma, target, 8, 65536, (tag, res) => results.set(tag, res));
      // the kernel's write copy: bio pages into tag 0's buffer
      const data = new Uint8Array(16384);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
      d.buffers[0]!.bytes.set(data);
      // ublk sectors 24..55 (12 KiB in): namespace LBA rangeStart + 12288 / bs
      assert.equal(d.start(0, UblkIoOp.Write, 32, 24), 0);
      drain(d, results, 1);
      assert.equal(results.get(0), 16384, 'a write commits its byte count');
      const lba = rangeStart + 12288 / bs;
      assert.equal(hex(await readDirect(r, lba, 16384 / bs, bs)), hex(data), 'the bytes are on the namespace at the mapped LBA');
      // read back through the dispatcher, into tag 3's buffer (what the kernel copies into the bio)
      results.clear();
      assert.equal(d.start(3, UblkIoOp.Read, 32, 24), 0);
      assert.equal(d.start(5, UblkIoOp.Flush, 0, 0), 0);
      drain(d, results, 2);
      assert.equal(results.get(3), 16384);
      assert.equal(results.get(5), 0, 'a flush commits 0');
      assert.equal(createHash('sha256').update(d.buffers[3]!.bytes.subarray(0, 16384)).digest('hex'), createHash('sha256').update(data).digest('hex'));
      // discard of the first 4 KiB: success, counted
      results.clear();
      assert.equal(d.start(1, UblkIoOp.Discard, 8, 24), 0);
      drain(d, results, 1);
      assert.equal(results.get(1), 0);
      assert.equal(d.counters.discards, 1);
      assert.equal(d.counters.writes, 1);
      assert.equal(d.counters.reads, 1);
      assert.equal(d.counters.flushes, 1);
      assert.equal(d.counters.bytesWritten, 16384);
      assert.equal(qp.outstanding, 0);
      d.release();
      await r.ctrl.deleteQueuePair(qp);
    } finally {
      await r.close();
    }
  });
}

test('dispatcher refuses, before the controller sees them: unaligned, past the range, larger than the buffer, unknown ops, a busy tag', async () => {
  const r = await rig(12);
  try {
    const qp = await r.ctrl.createQueuePair({ entries: 9 });
    const results = new Map<number, number>();
    const d = new UblkQueueDispatcher(qp, r.emu.dma, { nsid: 1, blockSize: 4096, rangeStart: 0, rangeBlocks: 100 }, 8, 16384, (tag, res) => results.set(tag, res));
    const before = qp.stats.submitted;
    assert.equal(d.start(0, UblkIoOp.Read, 8, 1), -Errno.EINVAL);
    assert.equal(d.lastRefusal, Refusal.Unaligned);
    assert.equal(d.start(0, UblkIoOp.Read, 4, 0), -Errno.EINVAL, 'half a block');
    assert.equal(d.start(0, UblkIoOp.Read, 0, 0), -Errno.EINVAL, 'empty');
    assert.equal(d.start(0, UblkIoOp.Read, 16, 99 * 8), -Errno.EIO, 'runs past the range end');
    assert.equal(d.lastRefusal, Refusal.OutOfRange);
    assert.equal(d.start(0, UblkIoOp.Write, 8, 100 * 8), -Errno.EIO, 'starts at the range end');
    assert.equal(d.start(0, UblkIoOp.Read, 64, 0), -Errno.EINVAL, '32 KiB into a 16 KiB buffer');
    assert.equal(d.lastRefusal, Refusal.TooLarge);
    assert.equal(d.start(0, UblkIoOp.WriteSame, 8, 0), -Errno.EOPNOTSUPP);
    assert.equal(d.start(0, 13 /* zone append */, 8, 0), -Errno.EOPNOTSUPP);
    assert.equal(d.start(8, UblkIoOp.Read, 8, 0), -Errno.EBUSY, 'tag beyond the depth');
    assert.equal(qp.stats.submitted, before, 'nothing reached the controller');
    assert.equal(d.counters.refused, 9);
    assert.equal(d.start(2, UblkIoOp.Read, 8, 0), 0);
    assert.equal(d.start(2, UblkIoOp.Read, 8, 0), -Errno.EBUSY, 'the tag is in flight');
    drain(d, results, 1);
    assert.equal(results.get(2), 4096);
    d.release();
    await r.ctrl.deleteQueuePair(qp);
  } finally {
    await r.close();
  }
});

test('NVMe errors reach the kernel as negative errnos: media error -> ENODATA, LBA out of range -> EREMOTEIO', async () => {
  const r = await rig(12);
  try {
    const qp = await r.ctrl.createQueuePair({ entries: 9 });
    const results = new Map<number, number>();
    // a range that claims more LBAs than the namespace has: the controller answers LBA Out of Range
    const nsBlocks = r.ctrl.namespace(1).blocks;
    const d = new UblkQueueDispatcher(qp, r.emu.dma, { nsid: 1, blockSize: 4096, rangeStart: nsBlocks - 4, rangeBlocks: 64 }, 8, 65536, (tag, res) => results.set(tag, res));
    r.emu.inject({ qid: qp.qid, opcode: NvmOpcode.Read, nsid: 1, count: 1, action: { kind: 'status', sct: Sct.MediaDataIntegrity, sc: MediaStatus.UnrecoveredReadError, dnr: true } });
    assert.equal(d.start(0, UblkIoOp.Read, 8, 0), 0);
    drain(d, results, 1);
    assert.equal(results.get(0), -Errno.ENODATA);
    results.clear();
    assert.equal(d.start(1, UblkIoOp.Write, 8, 8 * 8), 0, 'inside the configured range, past the namespace');
    drain(d, results, 1);
    assert.equal(results.get(1), -Errno.EREMOTEIO);
    assert.equal(d.counters.errors, 2);
    d.release();
    await r.ctrl.deleteQueuePair(qp);
  } finally {
    await r.close();
  }
});

test('the I/O thread path in one process: a provisioned queue pair attached from its grant, buffers in the mapped data region', async () => {
  const r = await rig(12, 'memfd');
  try {
    const p = await provisionQueuePair(r.ctrl, r.emu, { entries: 9, dataBytes: 8 * (65536 + 4096) + 3 * 4096, nsid: 1, name: 'ublk-test' });
    const qp = attachQueuePair(p.grant, p.fds, { closeFds: false });
    const mem = qp.mappings.find((m) => m.role === 'memory')!;
    const results = new Map<number, number>();
    const d = new UblkQueueDispatcher(qp, qp.dma, { nsid: 1, blockSize: 4096, rangeStart: 10, rangeBlocks: 100 }, 8, 65536, (tag, res) => results.set(tag, res));
    for (const b of d.buffers) {
      // the address given to the kernel is inside the mapping and the buffer is a view of that mapping
      assert.equal(b.bytes.buffer, mem.buffer);
      assert.ok(b.bytes.byteOffset + b.size <= mem.bytes);
      assert.equal((mem.address + b.bytes.byteOffset) % 4096, 0);
    }
    d.buffers[7]!.bytes.fill(0xa5, 0, 8192);
    assert.equal(d.start(7, UblkIoOp.Write, 16, 8), 0);
    drain(d, results, 1);
    assert.equal(results.get(7), 8192);
    assert.equal(hex(await readDirect(r, 11, 2, 4096)), 'a5'.repeat(8192));
    d.release();
    qp.detach();
    await p.reclaim();
  } finally {
    await r.close();
  }
});

test('no /dev/ublk-control: one clear error naming the module; a regular file is not taken for the control device', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ublk-'));
  try {
    assert.throws(
      () => openUblkControl(path.join(dir, 'ublk-control')),
      (e: unknown) => e instanceof UblkError && e.code === 'no-module' && /ublk_drv/.test(e.message),
    );
    fs.writeFileSync(path.join(dir, 'file'), '');
    assert.throws(
      () => openUblkControl(path.join(dir, 'file')),
      (e: unknown) => e instanceof UblkError && /not a character device/.test(e.message),
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('[[ublk]] configuration: defaults, ids, and errors that name the key', () => {
  const c = parseConfig('[[device]]\nname = "e"\nuri = "emu://?size=64MiB"\n[[ublk]]\ndevice = "e"\n[[ublk]]\ndevice = "e"\nstart = 1024\ncount = 2048\nqueues = 2\ndepth = 8\nmax_io_kib = 128\n');
  assert.deepEqual(c.ublk, [
    { device: 'e', nsid: 1, id: 0, start: 0, queues: 1, depth: 16, maxIoBytes: 65536 },
    { device: 'e', nsid: 1, id: 1, start: 1024, count: 2048, queues: 2, depth: 8, maxIoBytes: 131072 },
  ]);
  assert.throws(() => parseConfig('[[ublk]]\ndevice = "nope"\n'), /ublk\[0\]\.device: no \[\[device\]\] is named 'nope'/);
  assert.throws(
    () => parseConfig('[[device]]\nname = "e"\nuri = "emu://?size=64MiB"\n[[ublk]]\ndevice = "e"\nid = 3\n[[ublk]]\ndevice = "e"\nid = 3\n'),
    /ublk\[1\]\.id: ublk device id 3 is used twice/,
  );
  assert.throws(() => parseConfig('[[device]]\nname = "e"\nuri = "emu://?size=64MiB"\n[[ublk]]\ndevice = "e"\ndepth = 0\n'), /ublk\[0\]\.depth/);
  assert.throws(() => parseConfig('[[device]]\nname = "e"\nuri = "emu://?size=64MiB"\n[[ublk]]\ndevice = "e"\nmax_io_kib = 6\n'), /ublk\[0\]\.max_io_kib/);
  assert.throws(() => parseConfig('[[device]]\nname = "e"\nuri = "emu://?size=64MiB"\n[[ublk]]\ndevice = "e"\nbogus = 1\n'), /bogus/);
});

test('homid without the ublk module: the device is reported failed with the reason, homid keeps serving', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ublk-'));
  const cfg = parseConfig(
    `socket = "${dir}/s"\nlog_level = "silent"\n[[device]]\nname = "e"\nuri = "emu://?size=64MiB"\n[[ublk]]\ndevice = "e"\nstart = 1024\ncount = 4096\n[[ublk]]\ndevice = "e"\nstart = 99999999\n`,
  );
  const h = await Homid.start(cfg, { ublkControlPath: path.join(dir, 'no-ublk-control') });
  try {
    const st = h.status();
    assert.equal(st.devices[0]!.state, 'live');
    assert.equal(st.ublk?.length, 2);
    const [a, b] = st.ublk!;
    assert.equal(a!.state, 'failed');
    assert.match(a!.error ?? '', /no ublk module/);
    assert.equal(a!.rangeStart, 1024);
    assert.equal(b!.state, 'failed');
    assert.match(b!.error ?? '', /outside namespace 1/);
    const text = formatStatus(st);
    assert.match(text, /ublk/);
    assert.match(text, /\/dev\/ublkb0/);
    assert.match(text, /no ublk module/);
    assert.equal(st.devices[0]!.queuePairsInUse, 0, 'a failed ublk device holds no queue pairs');
  } finally {
    await h.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('ublk add / del: another uid is refused (root only); root gets what the kernel side refused; a failed add is not kept', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ublk-'));
  const cfg = parseConfig(`socket = "${dir}/s"\nlog_level = "silent"\n[[device]]\nname = "e"\nuri = "emu://?size=64MiB"\n`);
  const h = await Homid.start(cfg, { ublkControlPath: path.join(dir, 'no-ublk-control') });
  try {
    const other = h.connect({ pid: process.pid, uid: 65534, gid: 65534 });
    const refusals = h.counters.refusals;
    await assert.rejects(h.ublkAdd(other, { device: 'e', id: 0 }), (e: unknown) => e instanceof HomidError && e.code === 'ublk-denied' && /root only/.test(e.message));
    await assert.rejects(h.ublkDel(other, 0), (e: unknown) => e instanceof HomidError && e.code === 'ublk-denied');
    assert.equal(h.counters.refusals, refusals + 2);
    const root = h.connect({ pid: process.pid, uid: 0, gid: 0 });
    await assert.rejects(h.ublkAdd(root, { device: 'e', id: 0, start: 8, count: 1024 }), (e: unknown) => e instanceof HomidError && e.code === 'ublk' && /no ublk module/.test(e.message));
    await assert.rejects(h.ublkAdd(root, { device: 'nope', id: 1 }), (e: unknown) => e instanceof HomidError && e.code === 'no-device');
    await assert.rejects(h.ublkDel(root, 5), (e: unknown) => e instanceof HomidError && e.code === 'ublk' && /serves no ublk device 5/.test(e.message));
    assert.deepEqual(h.ublkList(), [], 'failed adds are not listed');
    assert.equal(h.status().ublk, undefined);
    assert.equal(h.listDevices()[0]!.queuePairsInUse, 0, 'nothing was left holding queue pairs');
    assert.match(formatUblk([]), /no ublk devices/);
  } finally {
    await h.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
