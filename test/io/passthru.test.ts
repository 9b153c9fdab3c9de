import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodePassthruCmd, NVME_IOCTL_ADMIN_CMD, NVME_IOCTL_ID, PassthruOffset } from '../../src/sys/nvme-ioctl.js';
import { NVME_URING_CMD_IO } from '../../src/io/uring-cmd.js';
import * as cmd from '../../src/nvme/commands.js';
import { LogPageId } from '../../src/nvme/opcodes.js';

test('the NVMe ioctl numbers are linux/nvme_ioctl.h values', () => {
  assert.equal(NVME_IOCTL_ID, 0x4e40);
  assert.equal(NVME_IOCTL_ADMIN_CMD, 0xc0484e41);
  assert.equal(NVME_URING_CMD_IO, 0xc0484e80);
});

test('struct nvme_passthru_cmd: a Get Log Page lands at the kernel offsets, the data address as a u64', () => {
  const sqe = cmd.getLogPage(LogPageId.SmartHealth, 512, 0xffffffff, 0);
  const addr = 0x7f12_3456_7000;
  const b = encodePassthruCmd({ opcode: sqe.opcode, nsid: sqe.nsid ?? 0, cdw10: sqe.cdw10, cdw11: sqe.cdw11, timeoutMs: 5000 }, addr, 512);
  const v = new DataView(b.buffer);
  assert.equal(b.length, 72);
  assert.equal(v.getUint8(PassthruOffset.OPCODE), 0x02);
  assert.equal(v.getUint32(PassthruOffset.NSID, true), 0xffffffff);
  assert.equal(v.getBigUint64(PassthruOffset.ADDR, true), BigInt(addr));
  assert.equal(v.getUint32(PassthruOffset.DATA_LEN, true), 512);
  // NUMDL = 512 / 4 - 1 in CDW10 31:16, LID in 7:0
  assert.equal(v.getUint32(PassthruOffset.CDW10, true), (127 << 16) | 0x02);
  assert.equal(v.getUint32(PassthruOffset.TIMEOUT_MS, true), 5000);
  assert.equal(v.getUint32(PassthruOffset.RESULT, true), 0);
});
