/**
 * The kernel's ublk driver (drivers/block/ublk_drv.c, UAPI include/uapi/linux/ublk_cmd.h): named constants, the
 * byte layouts of its structures with encoders and decoders, and the few system calls a ublk server needs beyond
 * io_uring (the read-only mmap of a queue's I/O descriptor array, an eventfd).
 *
 * Control commands go to /dev/ublk-control as IORING_OP_URING_CMD on a ring set up with IORING_SETUP_SQE128:
 * struct ublksrv_ctrl_cmd (32 bytes) sits in the SQE's command area (offset 48). I/O commands go to /dev/ublkcN
 * as IORING_OP_URING_CMD on an ordinary 64-byte-SQE ring: struct ublksrv_io_cmd (16 bytes) fits the 16-byte
 * command area. Every command number is ioctl-encoded (_IOR / _IOWR of type 'u'), the encoding the 6.12 kernel
 * accepts unconditionally (the bare legacy numbers depend on CONFIG_BLKDEV_UBLK_LEGACY_OPCODES).
 *
 * Layouts (little endian):
 *   ublksrv_ctrl_cmd 32: dev_id u32 0, queue_id u16 4 (0xffff: not for a queue), len u16 6, addr u64 8,
 *     data[0] u64 16, dev_path_len u16 24, pad u16 26, reserved u32 28.
 *   ublksrv_ctrl_dev_info 64: nr_hw_queues u16 0, queue_depth u16 2, state u16 4, pad0 u16 6,
 *     max_io_buf_bytes u32 8, dev_id u32 12, ublksrv_pid s32 16, pad1 u32 20, flags u64 24, ublksrv_flags u64 32,
 *     owner_uid u32 40, owner_gid u32 44, reserved1 u64 48, reserved2 u64 56.
 *   ublksrv_io_cmd 16: q_id u16 0, tag u16 2, result s32 4, addr u64 8.
 *   ublksrv_io_desc 24: op_flags u32 0 (op: bits 0-7, flags: 8-31), nr_sectors u32 4, start_sector u64 8,
 *     addr u64 16.
 *   ublk_params (6.12: 112 bytes): len u32 0, types u32 4, basic 8 (32 bytes: attrs u32 0, logical_bs_shift u8 4,
 *     physical_bs_shift u8 5, io_opt_shift u8 6, io_min_shift u8 7, max_sectors u32 8, chunk_sectors u32 12,
 *     dev_sectors u64 16, virt_boundary_mask u64 24), discard 40 (20 bytes: discard_alignment u32 0,
 *     discard_granularity u32 4, max_discard_sectors u32 8, max_write_zeroes_sectors u32 12,
 *     max_discard_segments u16 16, reserved u16 18), devt 60 (16 bytes, read-only: char_major, char_minor,
 *     disk_major, disk_minor u32), zoned 76 (32 bytes).
 *
 * Per-queue descriptor array: /dev/ublkcN mapped read-only at offset q_id * UBLK_MAX_CMD_BUF_BYTES, its length
 * the queue depth * 24 bytes rounded up to the page (the driver refuses a writable mapping or another length).
 */
import koffi from 'koffi';
import { ERRNO, OsError } from './libc.js';
import { MAP_POPULATE, MAP_SHARED, PROT_READ, mmap, munmap, type Mapping } from './mman.js';

/** /dev/ublk-control: the control device the ublk_drv module creates. */
export const UBLK_CONTROL_PATH = '/dev/ublk-control';
/** The per-device char device (the server's) and block device (everyone's). */
export const ublkCharPath = (devId: number): string => `/dev/ublkc${devId}`;
export const ublkBlockPath = (devId: number): string => `/dev/ublkb${devId}`;
/** The kernel module. */
export const UBLK_MODULE = 'ublk_drv';

/** The ioctl type letter of ublk commands. */
export const UBLK_IOCTL_TYPE = 0x75; // 'u'
const IOC_WRITE = 1;
const IOC_READ = 2;
const IOC_NRSHIFT = 0;
const IOC_TYPESHIFT = 8;
const IOC_SIZESHIFT = 16;
const IOC_DIRSHIFT = 30;

/** _IOC(dir, type, nr, size). */
export function ioc(dir: number, type: number, nr: number, size: number): number {
  return ((dir << IOC_DIRSHIFT) | (size << IOC_SIZESHIFT) | (type << IOC_TYPESHIFT) | (nr << IOC_NRSHIFT)) >>> 0;
}
const ior = (nr: number, size: number): number => ioc(IOC_READ, UBLK_IOCTL_TYPE, nr, size);
const iowr = (nr: number, size: number): number => ioc(IOC_READ | IOC_WRITE, UBLK_IOCTL_TYPE, nr, size);

export const UBLK_CTRL_CMD_SIZE = 32;
export const UBLK_DEV_INFO_SIZE = 64;
export const UBLK_IO_CMD_SIZE = 16;
export const UBLK_IO_DESC_SIZE = 24;
/** sizeof(struct ublk_params) in 6.12 (basic, discard, devt, zoned). */
export const UBLK_PARAMS_SIZE = 112;

/** Control command numbers (the _IOC_NR part). */
export const UblkCmdNr = {
  GetQueueAffinity: 0x01,
  GetDevInfo: 0x02,
  AddDev: 0x04,
  DelDev: 0x05,
  StartDev: 0x06,
  StopDev: 0x07,
  SetParams: 0x08,
  GetParams: 0x09,
  StartUserRecovery: 0x10,
  EndUserRecovery: 0x11,
  GetDevInfo2: 0x12,
  GetFeatures: 0x13,
} as const;

/** Control commands, ioctl-encoded (sqe.cmd_op). */
export const UBLK_U_CMD_GET_DEV_INFO = ior(UblkCmdNr.GetDevInfo, UBLK_CTRL_CMD_SIZE);
export const UBLK_U_CMD_ADD_DEV = iowr(UblkCmdNr.AddDev, UBLK_CTRL_CMD_SIZE);
export const UBLK_U_CMD_DEL_DEV = iowr(UblkCmdNr.DelDev, UBLK_CTRL_CMD_SIZE);
export const UBLK_U_CMD_START_DEV = iowr(UblkCmdNr.StartDev, UBLK_CTRL_CMD_SIZE);
export const UBLK_U_CMD_STOP_DEV = iowr(UblkCmdNr.StopDev, UBLK_CTRL_CMD_SIZE);
export const UBLK_U_CMD_SET_PARAMS = iowr(UblkCmdNr.SetParams, UBLK_CTRL_CMD_SIZE);
export const UBLK_U_CMD_GET_PARAMS = ior(UblkCmdNr.GetParams, UBLK_CTRL_CMD_SIZE);
export const UBLK_U_CMD_START_USER_RECOVERY = iowr(UblkCmdNr.StartUserRecovery, UBLK_CTRL_CMD_SIZE);
export const UBLK_U_CMD_END_USER_RECOVERY = iowr(UblkCmdNr.EndUserRecovery, UBLK_CTRL_CMD_SIZE);
export const UBLK_U_CMD_GET_FEATURES = ior(UblkCmdNr.GetFeatures, UBLK_CTRL_CMD_SIZE);

/** I/O command numbers. */
export const UblkIoNr = { FetchReq: 0x20, CommitAndFetchReq: 0x21, NeedGetData: 0x22 } as const;
export const UBLK_U_IO_FETCH_REQ = iowr(UblkIoNr.FetchReq, UBLK_IO_CMD_SIZE);
export const UBLK_U_IO_COMMIT_AND_FETCH_REQ = iowr(UblkIoNr.CommitAndFetchReq, UBLK_IO_CMD_SIZE);

/** The name of a control or I/O command number (for messages). */
export function ublkCmdName(cmdOp: number): string {
  const nr = cmdOp & 0xff;
  for (const [k, v] of Object.entries(UblkCmdNr)) if (v === nr) return k;
  for (const [k, v] of Object.entries(UblkIoNr)) if (v === nr) return k;
  return `0x${nr.toString(16)}`;
}

/** Device feature flags (ublksrv_ctrl_dev_info.flags). */
export const UBLK_F_SUPPORT_ZERO_COPY = 1n << 0n;
export const UBLK_F_URING_CMD_COMP_IN_TASK = 1n << 1n;
export const UBLK_F_NEED_GET_DATA = 1n << 2n;
export const UBLK_F_USER_RECOVERY = 1n << 3n;
export const UBLK_F_USER_RECOVERY_REISSUE = 1n << 4n;
export const UBLK_F_UNPRIVILEGED_DEV = 1n << 5n;
export const UBLK_F_CMD_IOCTL_ENCODE = 1n << 6n;
export const UBLK_F_USER_COPY = 1n << 7n;
export const UBLK_F_ZONED = 1n << 8n;

/** Device states (ublksrv_ctrl_dev_info.state). */
export const UblkState = { Dead: 0, Live: 1, Quiesced: 2, FailIo: 3 } as const;
export function ublkStateName(s: number): string {
  switch (s) {
    case UblkState.Dead:
      return 'dead';
    case UblkState.Live:
      return 'live';
    case UblkState.Quiesced:
      return 'quiesced';
    case UblkState.FailIo:
      return 'fail-io';
    default:
      return `state ${s}`;
  }
}

/** I/O operations (ublksrv_io_desc.op_flags bits 0-7). */
export const UblkIoOp = { Read: 0, Write: 1, Flush: 2, Discard: 3, WriteSame: 4, WriteZeroes: 5 } as const;
/** I/O flags (op_flags bits 8-31). */
export const UBLK_IO_F_FUA = 1 << 13;
export const UBLK_IO_F_NOUNMAP = 1 << 15;
/** The op of op_flags. */
export const UBLK_IO_OP_MASK = 0xff;

/** Completion of a fetch: a request is in the descriptor (OK), or the device is going away (ABORT: no refetch). */
export const UBLK_IO_RES_OK = 0;
export const UBLK_IO_RES_NEED_GET_DATA = 1;
/** errno ENODEV: UBLK_IO_RES_ABORT is its negative. */
const ENODEV = 19;
export const UBLK_IO_RES_ABORT = -ENODEV;

/** Parameter types (ublk_params.types). */
export const UBLK_PARAM_TYPE_BASIC = 1 << 0;
export const UBLK_PARAM_TYPE_DISCARD = 1 << 1;
export const UBLK_PARAM_TYPE_DEVT = 1 << 2;
/** ublk_param_basic.attrs. */
export const UBLK_ATTR_READ_ONLY = 1 << 0;
export const UBLK_ATTR_ROTATIONAL = 1 << 1;
export const UBLK_ATTR_VOLATILE_CACHE = 1 << 2;
export const UBLK_ATTR_FUA = 1 << 3;

/** Queue limits of the driver. */
export const UBLK_MAX_QUEUE_DEPTH = 4096;
export const UBLK_MAX_NR_QUEUES = 4096;
/** Largest I/O buffer per tag the driver accepts (UBLK_IO_BUF_BITS = 25). */
export const UBLK_MAX_IO_BUF_BYTES = 1 << 25;
/** dev_id asking the kernel to pick one (ADD_DEV). */
export const UBLK_DEV_ID_ANY = 0xffff_ffff;
/** queue_id of a command that is not for a queue. */
export const UBLK_QUEUE_ID_NONE = 0xffff;
/** The descriptor arrays of the queues are this far apart in /dev/ublkcN (round_up(4096 * 24, 4096)). */
export const UBLK_MAX_CMD_BUF_BYTES = UBLK_MAX_QUEUE_DEPTH * UBLK_IO_DESC_SIZE;
/** Sector unit of the ublk interface. */
export const UBLK_SECTOR_SHIFT = 9;

/** Byte offsets of struct ublksrv_ctrl_cmd. */
export const CtrlCmd = { devId: 0, queueId: 4, len: 6, addr: 8, data0: 16, devPathLen: 24 } as const;
/** Byte offsets of struct ublksrv_ctrl_dev_info. */
export const DevInfo = {
  nrHwQueues: 0,
  queueDepth: 2,
  state: 4,
  maxIoBufBytes: 8,
  devId: 12,
  ublksrvPid: 16,
  flags: 24,
  ublksrvFlags: 32,
  ownerUid: 40,
  ownerGid: 44,
} as const;
/** Byte offsets of struct ublksrv_io_cmd. */
export const IoCmd = { qId: 0, tag: 2, result: 4, addr: 8 } as const;
/** Byte offsets of struct ublksrv_io_desc. */
export const IoDesc = { opFlags: 0, nrSectors: 4, startSector: 8, addr: 16 } as const;
/** Byte offsets of struct ublk_params and its members. */
export const Params = { len: 0, types: 4, basic: 8, discard: 40, devt: 60 } as const;
export const ParamBasic = { attrs: 0, logicalBsShift: 4, physicalBsShift: 5, ioOptShift: 6, ioMinShift: 7, maxSectors: 8, chunkSectors: 12, devSectors: 16, virtBoundaryMask: 24 } as const;
export const ParamDiscard = { alignment: 0, granularity: 4, maxDiscardSectors: 8, maxWriteZeroesSectors: 12, maxDiscardSegments: 16 } as const;
export const ParamDevt = { charMajor: 0, charMinor: 4, diskMajor: 8, diskMinor: 12 } as const;

export interface UblkCtrlCmd {
  devId: number;
  queueId?: number;
  len?: number;
  addr?: number;
  data0?: bigint;
}

/** struct ublksrv_ctrl_cmd into `out` (32 bytes, e.g. the SQE128 command area). */
export function encodeCtrlCmd(c: UblkCtrlCmd, out: Uint8Array): void {
  if (out.length < UBLK_CTRL_CMD_SIZE) throw new RangeError(`ublksrv_ctrl_cmd needs ${UBLK_CTRL_CMD_SIZE} bytes`);
  out.fill(0, 0, UBLK_CTRL_CMD_SIZE);
  const v = new DataView(out.buffer, out.byteOffset, UBLK_CTRL_CMD_SIZE);
  v.setUint32(CtrlCmd.devId, c.devId >>> 0, true);
  v.setUint16(CtrlCmd.queueId, c.queueId ?? UBLK_QUEUE_ID_NONE, true);
  v.setUint16(CtrlCmd.len, c.len ?? 0, true);
  v.setBigUint64(CtrlCmd.addr, BigInt(c.addr ?? 0), true);
  v.setBigUint64(CtrlCmd.data0, c.data0 ?? 0n, true);
}

export function decodeCtrlCmd(b: Uint8Array): Required<UblkCtrlCmd> {
  if (b.length < UBLK_CTRL_CMD_SIZE) throw new RangeError(`ublksrv_ctrl_cmd needs ${UBLK_CTRL_CMD_SIZE} bytes, got ${b.length}`);
  const v = new DataView(b.buffer, b.byteOffset, UBLK_CTRL_CMD_SIZE);
  return {
    devId: v.getUint32(CtrlCmd.devId, true),
    queueId: v.getUint16(CtrlCmd.queueId, true),
    len: v.getUint16(CtrlCmd.len, true),
    addr: Number(v.getBigUint64(CtrlCmd.addr, true)),
    data0: v.getBigUint64(CtrlCmd.data0, true),
  };
}

export interface UblkDevInfo {
  nrHwQueues: number;
  queueDepth: number;
  state: number;
  maxIoBufBytes: number;
  devId: number;
  ublksrvPid: number;
  flags: bigint;
  ublksrvFlags: bigint;
  ownerUid: number;
  ownerGid: number;
}

export function encodeDevInfo(d: Partial<UblkDevInfo> & Pick<UblkDevInfo, 'nrHwQueues' | 'queueDepth' | 'maxIoBufBytes' | 'devId' | 'flags'>, out: Uint8Array): void {
  if (out.length < UBLK_DEV_INFO_SIZE) throw new RangeError(`ublksrv_ctrl_dev_info needs ${UBLK_DEV_INFO_SIZE} bytes`);
  out.fill(0, 0, UBLK_DEV_INFO_SIZE);
  const v = new DataView(out.buffer, out.byteOffset, UBLK_DEV_INFO_SIZE);
  v.setUint16(DevInfo.nrHwQueues, d.nrHwQueues, true);
  v.setUint16(DevInfo.queueDepth, d.queueDepth, true);
  v.setUint16(DevInfo.state, d.state ?? 0, true);
  v.setUint32(DevInfo.maxIoBufBytes, d.maxIoBufBytes >>> 0, true);
  v.setUint32(DevInfo.devId, d.devId >>> 0, true);
  v.setInt32(DevInfo.ublksrvPid, d.ublksrvPid ?? 0, true);
  v.setBigUint64(DevInfo.flags, d.flags, true);
  v.setBigUint64(DevInfo.ublksrvFlags, d.ublksrvFlags ?? 0n, true);
}

/** struct ublksrv_ctrl_dev_info as the kernel wrote it. Throws RangeError on a short buffer. */
export function decodeDevInfo(b: Uint8Array): UblkDevInfo {
  if (b.length < UBLK_DEV_INFO_SIZE) throw new RangeError(`ublksrv_ctrl_dev_info needs ${UBLK_DEV_INFO_SIZE} bytes, got ${b.length}`);
  const v = new DataView(b.buffer, b.byteOffset, UBLK_DEV_INFO_SIZE);
  return {
    nrHwQueues: v.getUint16(DevInfo.nrHwQueues, true),
    queueDepth: v.getUint16(DevInfo.queueDepth, true),
    state: v.getUint16(DevInfo.state, true),
    maxIoBufBytes: v.getUint32(DevInfo.maxIoBufBytes, true),
    devId: v.getUint32(DevInfo.devId, true),
    ublksrvPid: v.getInt32(DevInfo.ublksrvPid, true),
    flags: v.getBigUint64(DevInfo.flags, true),
    ublksrvFlags: v.getBigUint64(DevInfo.ublksrvFlags, true),
    ownerUid: v.getUint32(DevInfo.ownerUid, true),
    ownerGid: v.getUint32(DevInfo.ownerGid, true),
  };
}

export interface UblkParams {
  /** UBLK_ATTR_* */
  attrs: number;
  logicalBsShift: number;
  physicalBsShift: number;
  ioOptShift: number;
  ioMinShift: number;
  maxSectors: number;
  chunkSectors: number;
  devSectors: number;
  virtBoundaryMask: number;
  /** Discard / write-zeroes limits; null: the device does neither (UBLK_PARAM_TYPE_DISCARD left out). */
  discard: { alignment: number; granularity: number; maxDiscardSectors: number; maxWriteZeroesSectors: number; maxDiscardSegments: number } | null;
}

/** struct ublk_params (SET_PARAMS): basic, and discard when given. */
export function encodeParams(p: UblkParams, out: Uint8Array): void {
  if (out.length < UBLK_PARAMS_SIZE) throw new RangeError(`ublk_params needs ${UBLK_PARAMS_SIZE} bytes`);
  out.fill(0, 0, UBLK_PARAMS_SIZE);
  const v = new DataView(out.buffer, out.byteOffset, UBLK_PARAMS_SIZE);
  v.setUint32(Params.len, UBLK_PARAMS_SIZE, true);
  v.setUint32(Params.types, UBLK_PARAM_TYPE_BASIC | (p.discard ? UBLK_PARAM_TYPE_DISCARD : 0), true);
  const b = Params.basic;
  v.setUint32(b + ParamBasic.attrs, p.attrs >>> 0, true);
  v.setUint8(b + ParamBasic.logicalBsShift, p.logicalBsShift);
  v.setUint8(b + ParamBasic.physicalBsShift, p.physicalBsShift);
  v.setUint8(b + ParamBasic.ioOptShift, p.ioOptShift);
  v.setUint8(b + ParamBasic.ioMinShift, p.ioMinShift);
  v.setUint32(b + ParamBasic.maxSectors, p.maxSectors >>> 0, true);
  v.setUint32(b + ParamBasic.chunkSectors, p.chunkSectors >>> 0, true);
  v.setBigUint64(b + ParamBasic.devSectors, BigInt(p.devSectors), true);
  v.setBigUint64(b + ParamBasic.virtBoundaryMask, BigInt(p.virtBoundaryMask), true);
  if (p.discard) {
    const d = Params.discard;
    v.setUint32(d + ParamDiscard.alignment, p.discard.alignment >>> 0, true);
    v.setUint32(d + ParamDiscard.granularity, p.discard.granularity >>> 0, true);
    v.setUint32(d + ParamDiscard.maxDiscardSectors, p.discard.maxDiscardSectors >>> 0, true);
    v.setUint32(d + ParamDiscard.maxWriteZeroesSectors, p.discard.maxWriteZeroesSectors >>> 0, true);
    v.setUint16(d + ParamDiscard.maxDiscardSegments, p.discard.maxDiscardSegments, true);
  }
}

export interface UblkDevt {
  charMajor: number;
  charMinor: number;
  diskMajor: number;
  diskMinor: number;
}

/** The types, and the devt member (GET_PARAMS: the char and disk device numbers, once started). */
export function decodeParamsDevt(b: Uint8Array): { len: number; types: number; devt: UblkDevt | null } {
  if (b.length < Params.devt + 16) throw new RangeError(`ublk_params needs at least ${Params.devt + 16} bytes, got ${b.length}`);
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  const types = v.getUint32(Params.types, true);
  const d = Params.devt;
  const devt =
    (types & UBLK_PARAM_TYPE_DEVT) === 0 ? null : { charMajor: v.getUint32(d, true), charMinor: v.getUint32(d + 4, true), diskMajor: v.getUint32(d + 8, true), diskMinor: v.getUint32(d + 12, true) };
  return { len: v.getUint32(Params.len, true), types, devt };
}

/** struct ublksrv_io_cmd into the 16-byte command area of a 64-byte SQE, as 32-bit words from `at`. */
export function writeIoCmdWords(w: Uint32Array, at: number, qId: number, tag: number, result: number, addr: number): void {
  w[at] = (qId & 0xffff) | ((tag & 0xffff) << 16);
  w[at + 1] = result | 0;
  w[at + 2] = addr >>> 0;
  w[at + 3] = Math.floor(addr / 4294967296) >>> 0;
}

export interface UblkIoDesc {
  op: number;
  flags: number;
  nrSectors: number;
  startSector: number;
  addr: number;
}

/** One descriptor (tests and diagnostics; the server reads the words in place). */
export function decodeIoDesc(b: Uint8Array, tag = 0): UblkIoDesc {
  const o = tag * UBLK_IO_DESC_SIZE;
  if (b.length < o + UBLK_IO_DESC_SIZE) throw new RangeError(`no descriptor for tag ${tag} in ${b.length} bytes`);
  const v = new DataView(b.buffer, b.byteOffset + o, UBLK_IO_DESC_SIZE);
  const opFlags = v.getUint32(IoDesc.opFlags, true);
  return {
    op: opFlags & UBLK_IO_OP_MASK,
    flags: opFlags >>> 8,
    nrSectors: v.getUint32(IoDesc.nrSectors, true),
    startSector: Number(v.getBigUint64(IoDesc.startSector, true)),
    addr: Number(v.getBigUint64(IoDesc.addr, true)),
  };
}

/** Bytes of one queue's descriptor array mapping. */
export function descArrayBytes(depth: number, pageSize = 4096): number {
  return Math.ceil((depth * UBLK_IO_DESC_SIZE) / pageSize) * pageSize;
}

/** Map queue `qId`'s descriptor array of /dev/ublkcN (open on `fd`) read-only. Throws OsError. */
export function mapIoDescs(fd: number, qId: number, depth: number): Mapping {
  return mmap(descArrayBytes(depth), PROT_READ, MAP_SHARED | MAP_POPULATE, fd, qId * UBLK_MAX_CMD_BUF_BYTES, `/dev/ublkc descriptors of queue ${qId}`);
}
export function unmapIoDescs(m: Mapping): void {
  munmap(m);
}

export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;

interface EvLib {
  eventfd: (initval: number, flags: number) => number;
}
let evLib: EvLib | null = null;

/** eventfd(0, flags): a descriptor a thread can wait on in its io_uring (IORING_OP_READ) and another can wake. */
export function eventFd(flags = EFD_CLOEXEC): number {
  if (evLib === null) {
    if (process.platform !== 'linux') throw new OsError('dlopen(libc)', ERRNO.EOPNOTSUPP);
    const l = koffi.load('libc.so.6');
    evLib = { eventfd: l.func('int eventfd(unsigned int initval, int flags)') as EvLib['eventfd'] };
  }
  const fd = evLib.eventfd(0, flags);
  if (fd < 0) throw new OsError('eventfd', koffi.errno());
  return fd;
}
