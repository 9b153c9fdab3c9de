/**
 * Submission Queue Entry layout (64 bytes, 16 dwords; NVMe Base 2.0 section 4.2).
 * The fast path writes dwords straight into a Uint32Array view of SQ memory using the SQE_DW_* indices;
 * `encodeSqe`/`decodeSqe` are the general, allocation-tolerant versions.
 */

export const SQE_DWORDS = 16;

/** Dword indices within an SQE. */
export const SQE_DW_CDW0 = 0; // OPC 7:0, FUSE 9:8, PSDT 15:14, CID 31:16
export const SQE_DW_NSID = 1;
export const SQE_DW_CDW2 = 2;
export const SQE_DW_CDW3 = 3;
export const SQE_DW_MPTR_LO = 4;
export const SQE_DW_MPTR_HI = 5;
export const SQE_DW_DPTR0 = 6; // PRP1 low, or SGL1 bytes 0..3
export const SQE_DW_DPTR1 = 7; // PRP1 high
export const SQE_DW_DPTR2 = 8; // PRP2 low, or SGL1 length
export const SQE_DW_DPTR3 = 9; // PRP2 high, or SGL1 byte 15 = descriptor type
export const SQE_DW_CDW10 = 10;
export const SQE_DW_CDW11 = 11;
export const SQE_DW_CDW12 = 12;
export const SQE_DW_CDW13 = 13;
export const SQE_DW_CDW14 = 14;
export const SQE_DW_CDW15 = 15;

export const SQE_FUSE_SHIFT = 8;
export const SQE_PSDT_SHIFT = 14;
export const SQE_CID_SHIFT = 16;
/** PSDT values. */
export const PSDT_PRP = 0;
export const PSDT_SGL_MPTR_CONTIG = 1;
export const PSDT_SGL_MPTR_SGL = 2;

export const TWO_POW_32 = 4294967296;

/** Split a non-negative integer address (< 2^53) into low/high dwords. */
export function lo32(addr: number): number {
  return addr >>> 0;
}
export function hi32(addr: number): number {
  return Math.floor(addr / TWO_POW_32) >>> 0;
}
export function join64(lo: number, hi: number): number {
  return hi * TWO_POW_32 + (lo >>> 0);
}

/** A submission entry in decoded form. Addresses are numbers (< 2^53). */
export interface Sqe {
  opcode: number;
  fuse?: number;
  psdt?: number;
  cid: number;
  nsid?: number;
  cdw2?: number;
  cdw3?: number;
  mptr?: number;
  /** Data pointer: PRP1 / PRP2, or for SGLs the raw 16 bytes given as dptr (dwords 6..9). */
  prp1?: number;
  prp2?: number;
  /** Raw data-pointer dwords (6..9), used instead of prp1/prp2 when set (e.g. SGL descriptors). */
  dptr?: [number, number, number, number];
  cdw10?: number;
  cdw11?: number;
  cdw12?: number;
  cdw13?: number;
  cdw14?: number;
  cdw15?: number;
}

/** Write an SQE into `dw` at dword offset `at` (all 16 dwords are written). */
export function encodeSqe(e: Sqe, dw: Uint32Array, at = 0): void {
  dw[at + SQE_DW_CDW0] = ((e.opcode & 0xff) | (((e.fuse ?? 0) & 0x3) << SQE_FUSE_SHIFT) | (((e.psdt ?? 0) & 0x3) << SQE_PSDT_SHIFT) | ((e.cid & 0xffff) << SQE_CID_SHIFT)) >>> 0;
  dw[at + SQE_DW_NSID] = (e.nsid ?? 0) >>> 0;
  dw[at + SQE_DW_CDW2] = (e.cdw2 ?? 0) >>> 0;
  dw[at + SQE_DW_CDW3] = (e.cdw3 ?? 0) >>> 0;
  dw[at + SQE_DW_MPTR_LO] = lo32(e.mptr ?? 0);
  dw[at + SQE_DW_MPTR_HI] = hi32(e.mptr ?? 0);
  if (e.dptr) {
    dw[at + SQE_DW_DPTR0] = e.dptr[0] >>> 0;
    dw[at + SQE_DW_DPTR1] = e.dptr[1] >>> 0;
    dw[at + SQE_DW_DPTR2] = e.dptr[2] >>> 0;
    dw[at + SQE_DW_DPTR3] = e.dptr[3] >>> 0;
  } else {
    dw[at + SQE_DW_DPTR0] = lo32(e.prp1 ?? 0);
    dw[at + SQE_DW_DPTR1] = hi32(e.prp1 ?? 0);
    dw[at + SQE_DW_DPTR2] = lo32(e.prp2 ?? 0);
    dw[at + SQE_DW_DPTR3] = hi32(e.prp2 ?? 0);
  }
  dw[at + SQE_DW_CDW10] = (e.cdw10 ?? 0) >>> 0;
  dw[at + SQE_DW_CDW11] = (e.cdw11 ?? 0) >>> 0;
  dw[at + SQE_DW_CDW12] = (e.cdw12 ?? 0) >>> 0;
  dw[at + SQE_DW_CDW13] = (e.cdw13 ?? 0) >>> 0;
  dw[at + SQE_DW_CDW14] = (e.cdw14 ?? 0) >>> 0;
  dw[at + SQE_DW_CDW15] = (e.cdw15 ?? 0) >>> 0;
}

/** Decode the SQE at dword offset `at`. */
export function decodeSqe(dw: Uint32Array, at = 0): Required<Omit<Sqe, 'dptr'>> & { dptr: [number, number, number, number] } {
  const d0 = dw[at + SQE_DW_CDW0]!;
  return {
    opcode: d0 & 0xff,
    fuse: (d0 >>> SQE_FUSE_SHIFT) & 0x3,
    psdt: (d0 >>> SQE_PSDT_SHIFT) & 0x3,
    cid: d0 >>> SQE_CID_SHIFT,
    nsid: dw[at + SQE_DW_NSID]!,
    cdw2: dw[at + SQE_DW_CDW2]!,
    cdw3: dw[at + SQE_DW_CDW3]!,
    mptr: join64(dw[at + SQE_DW_MPTR_LO]!, dw[at + SQE_DW_MPTR_HI]!),
    prp1: join64(dw[at + SQE_DW_DPTR0]!, dw[at + SQE_DW_DPTR1]!),
    prp2: join64(dw[at + SQE_DW_DPTR2]!, dw[at + SQE_DW_DPTR3]!),
    dptr: [dw[at + SQE_DW_DPTR0]!, dw[at + SQE_DW_DPTR1]!, dw[at + SQE_DW_DPTR2]!, dw[at + SQE_DW_DPTR3]!],
    cdw10: dw[at + SQE_DW_CDW10]!,
    cdw11: dw[at + SQE_DW_CDW11]!,
    cdw12: dw[at + SQE_DW_CDW12]!,
    cdw13: dw[at + SQE_DW_CDW13]!,
    cdw14: dw[at + SQE_DW_CDW14]!,
    cdw15: dw[at + SQE_DW_CDW15]!,
  };
}

/**
 * Write a data-transfer I/O command (Read, Write and the like: CDW0, NSID, PRP1, PRP2, SLBA in CDW10/11, the
 * 0-based block count in CDW12; every other dword zero) into dwords [at, at + 16) of `dw`. Allocation-free: the
 * driver's fast path and homid's mediated forwarding write SQEs with it.
 */
export function writeIoSqe(dw: Uint32Array, at: number, cdw0: number, nsid: number, slba: number, nlb: number, prp1: number, prp2: number): void {
  dw[at + SQE_DW_CDW0] = cdw0;
  dw[at + SQE_DW_NSID] = nsid;
  dw[at + SQE_DW_CDW2] = 0;
  dw[at + SQE_DW_CDW3] = 0;
  dw[at + SQE_DW_MPTR_LO] = 0;
  dw[at + SQE_DW_MPTR_HI] = 0;
  dw[at + SQE_DW_DPTR0] = prp1 >>> 0;
  dw[at + SQE_DW_DPTR1] = (prp1 / TWO_POW_32) >>> 0;
  dw[at + SQE_DW_DPTR2] = prp2 >>> 0;
  dw[at + SQE_DW_DPTR3] = (prp2 / TWO_POW_32) >>> 0;
  dw[at + SQE_DW_CDW10] = slba >>> 0;
  dw[at + SQE_DW_CDW11] = (slba / TWO_POW_32) >>> 0;
  dw[at + SQE_DW_CDW12] = (nlb - 1) & 0xffff;
  dw[at + SQE_DW_CDW13] = 0;
  dw[at + SQE_DW_CDW14] = 0;
  dw[at + SQE_DW_CDW15] = 0;
}

/**
 * Write any command that needs no more than CDW0, NSID, PRP1/PRP2 and CDW10..CDW12 (every other dword zero) into
 * dwords [at, at + 16) of `dw`: Dataset Management, Flush and the like. Allocation-free.
 */
export function writeCmdSqe(dw: Uint32Array, at: number, cdw0: number, nsid: number, prp1: number, prp2: number, cdw10: number, cdw11: number, cdw12: number): void {
  dw[at + SQE_DW_CDW0] = cdw0;
  dw[at + SQE_DW_NSID] = nsid;
  dw[at + SQE_DW_CDW2] = 0;
  dw[at + SQE_DW_CDW3] = 0;
  dw[at + SQE_DW_MPTR_LO] = 0;
  dw[at + SQE_DW_MPTR_HI] = 0;
  dw[at + SQE_DW_DPTR0] = prp1 >>> 0;
  dw[at + SQE_DW_DPTR1] = (prp1 / TWO_POW_32) >>> 0;
  dw[at + SQE_DW_DPTR2] = prp2 >>> 0;
  dw[at + SQE_DW_DPTR3] = (prp2 / TWO_POW_32) >>> 0;
  dw[at + SQE_DW_CDW10] = cdw10;
  dw[at + SQE_DW_CDW11] = cdw11;
  dw[at + SQE_DW_CDW12] = cdw12;
  dw[at + SQE_DW_CDW13] = 0;
  dw[at + SQE_DW_CDW14] = 0;
  dw[at + SQE_DW_CDW15] = 0;
}

/** CDW0 of a command: opcode (bits 7:0) and command identifier (bits 31:16); FUSE 0, PSDT 0 (PRPs). */
export function sqeCdw0(opcode: number, cid: number): number {
  return ((opcode & 0xff) | ((cid & 0xffff) << SQE_CID_SHIFT)) >>> 0;
}
