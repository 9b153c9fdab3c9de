/**
 * The kernel NVMe driver's passthrough ioctls (linux/nvme_ioctl.h): NVME_IOCTL_ID, and NVME_IOCTL_ADMIN_CMD,
 * which runs one admin command on the kernel's own admin queue of a controller (`/dev/nvmeX`; a namespace's
 * block or generic char device works too). The io_uring_cmd backend (src/io/uring-cmd.ts) shares the ioctl
 * number encoding and the command layout: struct nvme_uring_cmd is struct nvme_passthru_cmd with its last
 * field reserved.
 *
 * struct nvme_passthru_cmd (72 bytes): opcode 0 (u8), flags 1 (u8), rsvd1 2 (u16), nsid 4, cdw2 8, cdw3 12,
 * metadata 16 (u64), addr 24 (u64), metadata_len 32, data_len 36, cdw10 40, cdw11 44, cdw12 48, cdw13 52,
 * cdw14 56, cdw15 60, timeout_ms 64, result 68 (written back by the kernel: the completion's DW0).
 * The ioctl returns 0, the NVMe status field (a positive number, DNR and More bits included), or -1 with errno.
 */
import { ioctl } from './libc.js';
import { allocHostMemory, freeHostMemory } from './fileio.js';

/** _IOWR(type, nr, size) = (3 << 30) | (size << 16) | (type << 8) | nr. */
export function iowr(type: number, nr: number, size: number): number {
  return ((3 << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}

/** The ioctl type letter of the NVMe driver. */
export const NVME_IOCTL_TYPE = 0x4e; // 'N'
/** sizeof(struct nvme_passthru_cmd) (also struct nvme_uring_cmd's). */
export const NVME_PASSTHRU_CMD_SIZE = 72;
/** _IO('N', 0x40): the namespace id of an NVMe block or generic char device. */
export const NVME_IOCTL_ID = 0x4e40;
/** _IOWR('N', 0x41, struct nvme_admin_cmd): one admin command on the controller's admin queue. */
export const NVME_IOCTL_ADMIN_CMD = iowr(NVME_IOCTL_TYPE, 0x41, NVME_PASSTHRU_CMD_SIZE);

/** Byte offsets of struct nvme_passthru_cmd. */
export const PassthruOffset = {
  OPCODE: 0,
  FLAGS: 1,
  NSID: 4,
  CDW2: 8,
  CDW3: 12,
  METADATA: 16,
  ADDR: 24,
  METADATA_LEN: 32,
  DATA_LEN: 36,
  CDW10: 40,
  CDW11: 44,
  CDW12: 48,
  CDW13: 52,
  CDW14: 56,
  CDW15: 60,
  TIMEOUT_MS: 64,
  RESULT: 68,
} as const;

/** The command dwords an admin passthrough carries (the kernel assigns the command id and builds the PRPs). */
export interface PassthruCommand {
  opcode: number;
  nsid?: number;
  cdw10?: number;
  cdw11?: number;
  cdw12?: number;
  cdw13?: number;
  cdw14?: number;
  cdw15?: number;
  /** 0: the kernel's default admin timeout. */
  timeoutMs?: number;
}

export interface PassthruResult {
  /** 0, or the NVMe status field the controller posted (15 bits: SC, SCT, CRD, More, DNR). */
  status: number;
  /** Completion dword 0. */
  result: number;
  /** The data the controller transferred to the host (empty when none was asked for). */
  data: Uint8Array;
}

const TWO_POW_32 = 0x1_0000_0000;

/** Encode struct nvme_passthru_cmd for `cmd` with a data buffer at `addr` of `dataLen` bytes. */
export function encodePassthruCmd(cmd: PassthruCommand, addr: number, dataLen: number): Uint8Array {
  const b = new Uint8Array(NVME_PASSTHRU_CMD_SIZE);
  const v = new DataView(b.buffer);
  v.setUint8(PassthruOffset.OPCODE, cmd.opcode & 0xff);
  v.setUint32(PassthruOffset.NSID, (cmd.nsid ?? 0) >>> 0, true);
  v.setUint32(PassthruOffset.ADDR, addr >>> 0, true);
  v.setUint32(PassthruOffset.ADDR + 4, Math.floor(addr / TWO_POW_32) >>> 0, true);
  v.setUint32(PassthruOffset.DATA_LEN, dataLen >>> 0, true);
  v.setUint32(PassthruOffset.CDW10, (cmd.cdw10 ?? 0) >>> 0, true);
  v.setUint32(PassthruOffset.CDW11, (cmd.cdw11 ?? 0) >>> 0, true);
  v.setUint32(PassthruOffset.CDW12, (cmd.cdw12 ?? 0) >>> 0, true);
  v.setUint32(PassthruOffset.CDW13, (cmd.cdw13 ?? 0) >>> 0, true);
  v.setUint32(PassthruOffset.CDW14, (cmd.cdw14 ?? 0) >>> 0, true);
  v.setUint32(PassthruOffset.CDW15, (cmd.cdw15 ?? 0) >>> 0, true);
  v.setUint32(PassthruOffset.TIMEOUT_MS, (cmd.timeoutMs ?? 0) >>> 0, true);
  return b;
}

/**
 * NVME_IOCTL_ADMIN_CMD on `fd`: run `cmd`, reading `readBytes` bytes from the controller (0: no data), or, when
 * `writeData` is given, transferring those bytes to the controller (an opcode whose data direction is host to
 * controller, e.g. Namespace Attachment: the kernel takes the direction from the opcode's low bits). The data
 * buffer is page-aligned host memory, freed before returning. Throws OsError when the kernel refuses the ioctl
 * (ENOTTY: not an NVMe device; EACCES / EPERM: no CAP_SYS_ADMIN; EINVAL: ...); an NVMe error is `status`.
 */
export function nvmeAdminCommand(fd: number, cmd: PassthruCommand, readBytes = 0, writeData?: Uint8Array): PassthruResult {
  if (!Number.isSafeInteger(readBytes) || readBytes < 0) throw new RangeError(`admin passthrough: invalid data length ${readBytes}`);
  if (writeData !== undefined && readBytes > 0) throw new RangeError('admin passthrough: a command either reads or writes data, not both');
  const len = writeData !== undefined ? writeData.length : readBytes;
  const mem = len > 0 ? allocHostMemory(len) : null;
  try {
    if (mem && writeData) new Uint8Array(mem.buffer, 0, len).set(writeData);
    const arg = encodePassthruCmd(cmd, mem?.address ?? 0, len);
    const status = ioctl(fd, NVME_IOCTL_ADMIN_CMD, arg);
    const result = new DataView(arg.buffer).getUint32(PassthruOffset.RESULT, true);
    return { status, result, data: mem && !writeData ? new Uint8Array(mem.buffer, 0, readBytes).slice() : new Uint8Array(0) };
  } finally {
    if (mem) freeHostMemory(mem);
  }
}
