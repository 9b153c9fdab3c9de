/**
 * Completion Queue Entry layout (16 bytes, 4 dwords; NVMe Base 2.0 section 4.6).
 * DW0 command specific, DW1 command specific (reserved for most), DW2 SQHD 15:0 / SQID 31:16,
 * DW3 CID 15:0, Phase 16, Status field 31:17 (SC 24:17, SCT 27:25, CRD 29:28, M 30, DNR 31).
 */

export const CQE_DWORDS = 4;
export const CQE_DW_RESULT = 0;
export const CQE_DW_RESULT_HI = 1;
export const CQE_DW_SQ = 2;
export const CQE_DW_STATUS = 3;

export const CQE_SQHD_MASK = 0xffff;
export const CQE_SQID_SHIFT = 16;
export const CQE_CID_MASK = 0xffff;
export const CQE_PHASE_BIT = 1 << 16;
/** Status field (15 bits: SC, SCT, CRD, M, DNR) starts at bit 17 of DW3. */
export const CQE_STATUS_SHIFT = 17;
export const STATUS_SC_MASK = 0xff; // within the 15-bit status field
export const STATUS_SCT_SHIFT = 8;
export const STATUS_SCT_MASK = 0x7;
export const STATUS_CRD_SHIFT = 11;
export const STATUS_MORE_BIT = 1 << 13;
export const STATUS_DNR_BIT = 1 << 14;

/** Build the 15-bit status field. */
export function makeStatus(sct: number, sc: number, dnr = false, more = false, crd = 0): number {
  return (sc & STATUS_SC_MASK) | ((sct & STATUS_SCT_MASK) << STATUS_SCT_SHIFT) | ((crd & 0x3) << STATUS_CRD_SHIFT) | (more ? STATUS_MORE_BIT : 0) | (dnr ? STATUS_DNR_BIT : 0);
}
/** Status Code Type and Status Code of a 15-bit status field. */
export function statusSct(status: number): number {
  return (status >>> STATUS_SCT_SHIFT) & STATUS_SCT_MASK;
}
export function statusSc(status: number): number {
  return status & STATUS_SC_MASK;
}
export function statusDnr(status: number): boolean {
  return (status & STATUS_DNR_BIT) !== 0;
}
/** True when SCT and SC are both zero (successful completion). */
export function statusOk(status: number): boolean {
  return (status & 0x7ff) === 0;
}

export interface Cqe {
  result: number;
  resultHi: number;
  sqHead: number;
  sqId: number;
  cid: number;
  phase: number;
  /** 15-bit status field. */
  status: number;
}

export function encodeCqe(e: Cqe, dw: Uint32Array, at = 0): void {
  dw[at + CQE_DW_RESULT] = e.result >>> 0;
  dw[at + CQE_DW_RESULT_HI] = e.resultHi >>> 0;
  dw[at + CQE_DW_SQ] = ((e.sqHead & CQE_SQHD_MASK) | ((e.sqId & 0xffff) << CQE_SQID_SHIFT)) >>> 0;
  dw[at + CQE_DW_STATUS] = ((e.cid & CQE_CID_MASK) | ((e.phase & 1) << 16) | ((e.status & 0x7fff) << CQE_STATUS_SHIFT)) >>> 0;
}

export function decodeCqe(dw: Uint32Array, at = 0): Cqe {
  const d2 = dw[at + CQE_DW_SQ]!;
  const d3 = dw[at + CQE_DW_STATUS]!;
  return {
    result: dw[at + CQE_DW_RESULT]!,
    resultHi: dw[at + CQE_DW_RESULT_HI]!,
    sqHead: d2 & CQE_SQHD_MASK,
    sqId: d2 >>> CQE_SQID_SHIFT,
    cid: d3 & CQE_CID_MASK,
    phase: (d3 >>> 16) & 1,
    status: d3 >>> CQE_STATUS_SHIFT,
  };
}
