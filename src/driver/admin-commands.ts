/**
 * The admin command SQEs the driver core issues (NVMe Base 2.0 section 5). Pure builders; the CID is assigned
 * by the queue pair.
 */
import { AdminOpcode, Cns } from '../nvme/opcodes.js';
import type { Sqe } from '../nvme/sqe.js';

/** Create I/O Completion Queue CDW11: PC (physically contiguous). Interrupts stay disabled (IEN = 0). */
const CREATE_CQ_PC = 1 << 0;
/** Create I/O Submission Queue CDW11: PC; CQID in bits 31:16. */
const CREATE_SQ_PC = 1 << 0;
const CREATE_SQ_CQID_SHIFT = 16;
/** Queue size field (0's based) in CDW10 bits 31:16 of the create commands. */
const QSIZE_SHIFT = 16;
/** Identify CDW10: CNTID in bits 31:16. */
const IDENTIFY_CNTID_SHIFT = 16;
/** Get/Set Features CDW10: SEL (get) bits 10:8, SV (set) bit 31. */
const GET_FEATURES_SEL_SHIFT = 8;
const SET_FEATURES_SV = 1 << 31;
/** Get Log Page CDW10: NUMDL bits 31:16; LSP 11:8; RAE bit 15. CDW11: NUMDU bits 15:0. */
const LOG_NUMDL_SHIFT = 16;
const LOG_RAE = 1 << 15;
/** Abort CDW10: SQID bits 15:0, CID bits 31:16. */
const ABORT_CID_SHIFT = 16;
/** Number of Queues feature: NSQR bits 15:0, NCQR bits 31:16 (both 0's based). */
const NUMQ_NCQ_SHIFT = 16;
/** Abort result DW0 bit 0: 1 = the command was not aborted. */
export const ABORT_RESULT_NOT_ABORTED = 1 << 0;

export function identifySqe(cns: number, nsid = 0, prp1 = 0, prp2 = 0, cntid = 0): Sqe {
  return { opcode: AdminOpcode.Identify, cid: 0, nsid, prp1, prp2, cdw10: (cns & 0xff) | (cntid << IDENTIFY_CNTID_SHIFT) };
}
export const identifyControllerSqe = (prp1: number, prp2 = 0): Sqe => identifySqe(Cns.Controller, 0, prp1, prp2);
export const identifyNamespaceSqe = (nsid: number, prp1: number, prp2 = 0): Sqe => identifySqe(Cns.Namespace, nsid, prp1, prp2);
export const activeNamespaceListSqe = (afterNsid: number, prp1: number, prp2 = 0): Sqe =>
  identifySqe(Cns.ActiveNamespaceList, afterNsid, prp1, prp2);

export function createIoCqSqe(qid: number, entries: number, iova: number): Sqe {
  return { opcode: AdminOpcode.CreateIoCq, cid: 0, prp1: iova, cdw10: (qid | ((entries - 1) << QSIZE_SHIFT)) >>> 0, cdw11: CREATE_CQ_PC };
}
export function createIoSqSqe(qid: number, entries: number, iova: number, cqid: number): Sqe {
  return {
    opcode: AdminOpcode.CreateIoSq,
    cid: 0,
    prp1: iova,
    cdw10: (qid | ((entries - 1) << QSIZE_SHIFT)) >>> 0,
    cdw11: (CREATE_SQ_PC | (cqid << CREATE_SQ_CQID_SHIFT)) >>> 0,
  };
}
export const deleteIoSqSqe = (qid: number): Sqe => ({ opcode: AdminOpcode.DeleteIoSq, cid: 0, cdw10: qid });
export const deleteIoCqSqe = (qid: number): Sqe => ({ opcode: AdminOpcode.DeleteIoCq, cid: 0, cdw10: qid });

export function getFeaturesSqe(fid: number, cdw11 = 0, nsid = 0, sel = 0, prp1 = 0, prp2 = 0): Sqe {
  return { opcode: AdminOpcode.GetFeatures, cid: 0, nsid, prp1, prp2, cdw10: (fid & 0xff) | ((sel & 0x7) << GET_FEATURES_SEL_SHIFT), cdw11 };
}
export function setFeaturesSqe(fid: number, cdw11: number, nsid = 0, save = false, prp1 = 0, prp2 = 0): Sqe {
  return { opcode: AdminOpcode.SetFeatures, cid: 0, nsid, prp1, prp2, cdw10: ((fid & 0xff) | (save ? SET_FEATURES_SV : 0)) >>> 0, cdw11 };
}
/** Number of Queues CDW11 for `nsq` submission and `ncq` completion queues (1's based counts). */
export function numberOfQueuesValue(nsq: number, ncq: number): number {
  return ((nsq - 1) | ((ncq - 1) << NUMQ_NCQ_SHIFT)) >>> 0;
}
/** Decode the Number of Queues result DW0 into 1's based counts. */
export function decodeNumberOfQueues(dw0: number): { nsqa: number; ncqa: number } {
  return { nsqa: (dw0 & 0xffff) + 1, ncqa: (dw0 >>> NUMQ_NCQ_SHIFT) + 1 };
}

/** Get Log Page for `bytes` (multiple of 4) at byte `offset`. */
export function getLogPageSqe(lid: number, bytes: number, nsid: number, prp1: number, prp2: number, offset = 0, rae = false): Sqe {
  const numd = bytes / 4 - 1;
  return {
    opcode: AdminOpcode.GetLogPage,
    cid: 0,
    nsid,
    prp1,
    prp2,
    cdw10: ((lid & 0xff) | (rae ? LOG_RAE : 0) | ((numd & 0xffff) << LOG_NUMDL_SHIFT)) >>> 0,
    cdw11: (numd >>> 16) & 0xffff,
    cdw12: offset >>> 0,
    cdw13: Math.floor(offset / 0x1_0000_0000) >>> 0,
  };
}

export const abortSqe = (sqid: number, cid: number): Sqe => ({
  opcode: AdminOpcode.Abort,
  cid: 0,
  cdw10: ((sqid & 0xffff) | (cid << ABORT_CID_SHIFT)) >>> 0,
});
