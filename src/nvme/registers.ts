/**
 * NVMe controller register layout (NVMe Base Specification 2.0, section 3.1.4 "Controller Properties").
 * Pure constants and bit-field helpers; no I/O. All offsets are byte offsets into BAR0.
 */

/** Byte offsets of the controller registers in BAR0. */
export const REG_CAP = 0x00; // Controller Capabilities, 64-bit
export const REG_VS = 0x08; // Version
export const REG_INTMS = 0x0c; // Interrupt Mask Set
export const REG_INTMC = 0x10; // Interrupt Mask Clear
export const REG_CC = 0x14; // Controller Configuration
export const REG_CSTS = 0x1c; // Controller Status
export const REG_NSSR = 0x20; // NVM Subsystem Reset
export const REG_AQA = 0x24; // Admin Queue Attributes
export const REG_ASQ = 0x28; // Admin Submission Queue Base Address, 64-bit
export const REG_ACQ = 0x30; // Admin Completion Queue Base Address, 64-bit
export const REG_CMBLOC = 0x38;
export const REG_CMBSZ = 0x3c;
/** First doorbell register (SQ0TDBL). */
export const REG_DOORBELL_BASE = 0x1000;

/** NSSR magic value "NVMe". */
export const NSSR_RESET_VALUE = 0x4e564d65;

// CAP fields (bit positions within the 64-bit register; high fields are given relative to the high dword).
export const CAP_MQES_MASK = 0xffff; // bits 15:0, 0's based
export const CAP_CQR_BIT = 16; // Contiguous Queues Required
export const CAP_AMS_SHIFT = 17; // bits 18:17
export const CAP_TO_SHIFT = 24; // bits 31:24, units of 500 ms
export const CAP_TO_UNIT_MS = 500;
// High dword (bits 63:32 of CAP)
export const CAP_HI_DSTRD_SHIFT = 0; // bits 35:32
export const CAP_HI_NSSRS_BIT = 4; // bit 36
export const CAP_HI_CSS_SHIFT = 5; // bits 44:37
export const CAP_HI_BPS_BIT = 13; // bit 45
export const CAP_HI_MPSMIN_SHIFT = 16; // bits 51:48
export const CAP_HI_MPSMAX_SHIFT = 20; // bits 55:52
/** CAP.CSS bit 0: NVM command set supported. */
export const CAP_CSS_NVM = 0x01;
/** CAP.CSS bit 7: no I/O command set (admin only). */
export const CAP_CSS_NOIO = 0x80;

// CC fields
export const CC_EN = 1 << 0;
export const CC_CSS_SHIFT = 4; // bits 6:4
export const CC_MPS_SHIFT = 7; // bits 10:7, page size = 2^(12+MPS)
export const CC_AMS_SHIFT = 11; // bits 13:11
export const CC_SHN_SHIFT = 14; // bits 15:14
export const CC_SHN_MASK = 0x3 << CC_SHN_SHIFT;
export const CC_SHN_NONE = 0;
export const CC_SHN_NORMAL = 1;
export const CC_SHN_ABRUPT = 2;
export const CC_IOSQES_SHIFT = 16; // bits 19:16, log2 of SQ entry size
export const CC_IOCQES_SHIFT = 20; // bits 23:20, log2 of CQ entry size
export const CC_CSS_NVM = 0;

// CSTS fields
export const CSTS_RDY = 1 << 0;
export const CSTS_CFS = 1 << 1;
export const CSTS_SHST_SHIFT = 2; // bits 3:2
export const CSTS_SHST_MASK = 0x3 << CSTS_SHST_SHIFT;
export const CSTS_SHST_NORMAL = 0;
export const CSTS_SHST_OCCURRING = 1;
export const CSTS_SHST_COMPLETE = 2;
export const CSTS_NSSRO = 1 << 4;
export const CSTS_PP = 1 << 5;

// AQA fields (both 0's based)
export const AQA_ASQS_MASK = 0xfff; // bits 11:0
export const AQA_ACQS_SHIFT = 16; // bits 27:16

/** log2 sizes of queue entries. */
export const SQE_SIZE = 64;
export const CQE_SIZE = 16;
export const SQES_LOG2 = 6;
export const CQES_LOG2 = 4;

/** Decoded Controller Capabilities. */
export interface Capabilities {
  /** Maximum queue entries supported (1's based, i.e. MQES + 1). */
  maxQueueEntries: number;
  contiguousQueuesRequired: boolean;
  arbitrationMechanisms: number;
  /** Worst-case time to wait for CSTS.RDY transitions, in milliseconds (CAP.TO * 500). */
  timeoutMs: number;
  /** Doorbell stride in bytes (4 << DSTRD). */
  doorbellStride: number;
  nvmSubsystemResetSupported: boolean;
  commandSets: number;
  bootPartitionSupported: boolean;
  /** Minimum and maximum memory page size in bytes. */
  minPageSize: number;
  maxPageSize: number;
}

export function decodeCap(lo: number, hi: number): Capabilities {
  return {
    maxQueueEntries: (lo & CAP_MQES_MASK) + 1,
    contiguousQueuesRequired: ((lo >>> CAP_CQR_BIT) & 1) === 1,
    arbitrationMechanisms: (lo >>> CAP_AMS_SHIFT) & 0x3,
    timeoutMs: ((lo >>> CAP_TO_SHIFT) & 0xff) * CAP_TO_UNIT_MS,
    doorbellStride: 4 << ((hi >>> CAP_HI_DSTRD_SHIFT) & 0xf),
    nvmSubsystemResetSupported: ((hi >>> CAP_HI_NSSRS_BIT) & 1) === 1,
    commandSets: (hi >>> CAP_HI_CSS_SHIFT) & 0xff,
    bootPartitionSupported: ((hi >>> CAP_HI_BPS_BIT) & 1) === 1,
    minPageSize: 1 << (12 + ((hi >>> CAP_HI_MPSMIN_SHIFT) & 0xf)),
    maxPageSize: 2 ** (12 + ((hi >>> CAP_HI_MPSMAX_SHIFT) & 0xf)),
  };
}

export interface CapFields {
  mqes: number; // 0's based
  cqr: boolean;
  toUnits: number; // 500 ms units
  dstrd: number;
  css: number;
  mpsmin: number;
  mpsmax: number;
  nssrs?: boolean;
}

/** Encode CAP into [lo, hi] dwords. */
export function encodeCap(f: CapFields): [number, number] {
  const lo = ((f.mqes & CAP_MQES_MASK) | ((f.cqr ? 1 : 0) << CAP_CQR_BIT) | ((f.toUnits & 0xff) << CAP_TO_SHIFT)) >>> 0;
  const hi =
    ((f.dstrd & 0xf) | ((f.nssrs ? 1 : 0) << CAP_HI_NSSRS_BIT) | ((f.css & 0xff) << CAP_HI_CSS_SHIFT) | ((f.mpsmin & 0xf) << CAP_HI_MPSMIN_SHIFT) | ((f.mpsmax & 0xf) << CAP_HI_MPSMAX_SHIFT)) >>> 0;
  return [lo, hi];
}

export interface Version {
  major: number;
  minor: number;
  tertiary: number;
}

export function decodeVersion(vs: number): Version {
  return { major: vs >>> 16, minor: (vs >>> 8) & 0xff, tertiary: vs & 0xff };
}

export function encodeVersion(major: number, minor: number, tertiary = 0): number {
  return ((major << 16) | (minor << 8) | tertiary) >>> 0;
}

export interface ControllerConfig {
  enable: boolean;
  css: number;
  /** MPS field: page size = 2^(12+mps). */
  mps: number;
  ams: number;
  shn: number;
  iosqes: number;
  iocqes: number;
}

export function encodeCc(c: ControllerConfig): number {
  return (
    ((c.enable ? CC_EN : 0) |
      ((c.css & 0x7) << CC_CSS_SHIFT) |
      ((c.mps & 0xf) << CC_MPS_SHIFT) |
      ((c.ams & 0x7) << CC_AMS_SHIFT) |
      ((c.shn & 0x3) << CC_SHN_SHIFT) |
      ((c.iosqes & 0xf) << CC_IOSQES_SHIFT) |
      ((c.iocqes & 0xf) << CC_IOCQES_SHIFT)) >>>
    0
  );
}

export function decodeCc(cc: number): ControllerConfig {
  return {
    enable: (cc & CC_EN) !== 0,
    css: (cc >>> CC_CSS_SHIFT) & 0x7,
    mps: (cc >>> CC_MPS_SHIFT) & 0xf,
    ams: (cc >>> CC_AMS_SHIFT) & 0x7,
    shn: (cc >>> CC_SHN_SHIFT) & 0x3,
    iosqes: (cc >>> CC_IOSQES_SHIFT) & 0xf,
    iocqes: (cc >>> CC_IOCQES_SHIFT) & 0xf,
  };
}

export interface ControllerStatus {
  ready: boolean;
  fatal: boolean;
  shutdownStatus: number;
  subsystemResetOccurred: boolean;
  processingPaused: boolean;
}

export function decodeCsts(v: number): ControllerStatus {
  return {
    ready: (v & CSTS_RDY) !== 0,
    fatal: (v & CSTS_CFS) !== 0,
    shutdownStatus: (v & CSTS_SHST_MASK) >>> CSTS_SHST_SHIFT,
    subsystemResetOccurred: (v & CSTS_NSSRO) !== 0,
    processingPaused: (v & CSTS_PP) !== 0,
  };
}

/** Encode AQA from 1's based queue sizes. */
export function encodeAqa(asqEntries: number, acqEntries: number): number {
  return (((asqEntries - 1) & AQA_ASQS_MASK) | (((acqEntries - 1) & AQA_ASQS_MASK) << AQA_ACQS_SHIFT)) >>> 0;
}

/** Decode AQA into 1's based sizes. */
export function decodeAqa(v: number): { asqEntries: number; acqEntries: number } {
  return { asqEntries: (v & AQA_ASQS_MASK) + 1, acqEntries: ((v >>> AQA_ACQS_SHIFT) & AQA_ASQS_MASK) + 1 };
}

/** Byte offset in BAR0 of the SQ tail doorbell of queue `qid`. */
export function sqTailDoorbellOffset(qid: number, strideBytes: number): number {
  return REG_DOORBELL_BASE + 2 * qid * strideBytes;
}

/** Byte offset in BAR0 of the CQ head doorbell of queue `qid`. */
export function cqHeadDoorbellOffset(qid: number, strideBytes: number): number {
  return REG_DOORBELL_BASE + (2 * qid + 1) * strideBytes;
}
