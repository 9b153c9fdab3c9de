/**
 * Builders for admin and NVM I/O submission entries (NVMe Base 2.0 section 5; NVM Command Set 1.0 section 3).
 * Each returns an `Sqe` with cid 0: the submitter assigns the command identifier.
 */
import { checkBuffer, checkSafe, checkU16, checkU32, checkU8, checkUint, readU32, readU64, TWO_POW_32, writeU32, writeU64 } from './bytes.js';
import { encodeNlb } from './lba.js';
import { AdminOpcode, DSM_RANGE_SIZE, FeatureId, NvmOpcode } from './opcodes.js';
import { PSDT_PRP, PSDT_SGL_MPTR_CONTIG, type Sqe } from './sqe.js';

/** Where the data of a command lives: PRP entries, or an SGL1 descriptor as four dwords. */
export type DataPointer = { prp1: number; prp2?: number } | { sgl: [number, number, number, number] };

function withData(sqe: Sqe, dp: DataPointer | undefined): Sqe {
  if (dp === undefined) return sqe;
  if ('sgl' in dp) {
    if (!Array.isArray(dp.sgl) || dp.sgl.length !== 4) throw new TypeError('sgl must be four dwords');
    dp.sgl.forEach((d, i) => checkU32(`sgl[${i}]`, d));
    sqe.psdt = PSDT_SGL_MPTR_CONTIG;
    sqe.dptr = [dp.sgl[0], dp.sgl[1], dp.sgl[2], dp.sgl[3]];
  } else {
    sqe.psdt = PSDT_PRP;
    sqe.prp1 = checkSafe('prp1', dp.prp1);
    sqe.prp2 = checkSafe('prp2', dp.prp2 ?? 0);
  }
  return sqe;
}

// ---- Identify (CDW10: CNS 7:0, CNTID 31:16; CDW11: CNS specific id 15:0, CSI 31:24)
export const IDENTIFY_CNTID_SHIFT = 16;
export const IDENTIFY_CSI_SHIFT = 24;

export function identify(cns: number, nsid: number, prp1: number, opts: { cntid?: number; csi?: number; prp2?: number } = {}): Sqe {
  checkU8('cns', cns);
  checkU32('nsid', nsid);
  const cntid = checkU16('cntid', opts.cntid ?? 0);
  const csi = checkU8('csi', opts.csi ?? 0);
  return withData(
    {
      opcode: AdminOpcode.Identify,
      cid: 0,
      nsid,
      cdw10: (cns | (cntid << IDENTIFY_CNTID_SHIFT)) >>> 0,
      cdw11: (csi << IDENTIFY_CSI_SHIFT) >>> 0,
    },
    { prp1, prp2: opts.prp2 ?? 0 },
  );
}

// ---- Queue creation / deletion (CDW10: QID 15:0, QSIZE 31:16 0's based)
export const QSIZE_SHIFT = 16;
export const CQ_PC_BIT = 1 << 0;
export const CQ_IEN_BIT = 1 << 1;
export const CQ_IV_SHIFT = 16;
export const SQ_PC_BIT = 1 << 0;
export const SQ_QPRIO_SHIFT = 1; // bits 2:1
export const SQ_CQID_SHIFT = 16;
/** Queue priorities for weighted round robin arbitration (SQ CDW11 QPRIO). */
export const QueuePriority = { Urgent: 0, High: 1, Medium: 2, Low: 3 } as const;
/** I/O queue identifiers are 1..65535; sizes 2..65536 entries. */
export const IO_QID_MAX = 0xffff;
export const QUEUE_SIZE_MIN = 2;
export const QUEUE_SIZE_MAX = 0x1_0000;

function queueCdw10(qid: number, size: number): number {
  checkUint('qid', qid, IO_QID_MAX);
  if (qid === 0) throw new RangeError('qid must be 1..65535 (0 is the admin queue)');
  checkUint('size', size, QUEUE_SIZE_MAX);
  if (size < QUEUE_SIZE_MIN) throw new RangeError(`size must be at least ${QUEUE_SIZE_MIN} entries, got ${size}`);
  return (qid | ((size - 1) << QSIZE_SHIFT)) >>> 0;
}

/** Create I/O Completion Queue: `size` is the number of entries (1's based). */
export function createIoCq(qid: number, size: number, prp1: number, physContig: boolean, ien: boolean, iv: number): Sqe {
  const cdw10 = queueCdw10(qid, size);
  checkU16('iv', iv);
  return withData(
    {
      opcode: AdminOpcode.CreateIoCq,
      cid: 0,
      cdw10,
      cdw11: ((physContig ? CQ_PC_BIT : 0) | (ien ? CQ_IEN_BIT : 0) | (iv << CQ_IV_SHIFT)) >>> 0,
    },
    { prp1 },
  );
}

/** Create I/O Submission Queue: `size` is the number of entries (1's based). */
export function createIoSq(qid: number, size: number, prp1: number, cqid: number, prio = 0, physContig = true, nvmSetId = 0): Sqe {
  const cdw10 = queueCdw10(qid, size);
  checkUint('cqid', cqid, IO_QID_MAX);
  if (cqid === 0) throw new RangeError('cqid must be 1..65535 (an I/O completion queue)');
  checkUint('prio', prio, 3);
  checkU16('nvmSetId', nvmSetId);
  return withData(
    {
      opcode: AdminOpcode.CreateIoSq,
      cid: 0,
      cdw10,
      cdw11: ((physContig ? SQ_PC_BIT : 0) | (prio << SQ_QPRIO_SHIFT) | (cqid << SQ_CQID_SHIFT)) >>> 0,
      cdw12: nvmSetId,
    },
    { prp1 },
  );
}

function deleteQueue(opcode: number, qid: number): Sqe {
  checkUint('qid', qid, IO_QID_MAX);
  if (qid === 0) throw new RangeError('qid must be 1..65535 (the admin queue cannot be deleted)');
  return { opcode, cid: 0, cdw10: qid };
}
export const deleteIoSq = (qid: number): Sqe => deleteQueue(AdminOpcode.DeleteIoSq, qid);
export const deleteIoCq = (qid: number): Sqe => deleteQueue(AdminOpcode.DeleteIoCq, qid);

// ---- Get Log Page (CDW10: LID 7:0, LSP 14:8, RAE 15, NUMDL 31:16; CDW11: NUMDU 15:0, LSI 31:16;
//      CDW12/13: LPOL/LPOU byte offset; CDW14: UUID index 6:0, OT 23, CSI 31:24)
export const LOG_LSP_SHIFT = 8;
export const LOG_RAE_BIT = 1 << 15;
export const LOG_NUMDL_SHIFT = 16;
export const LOG_LSI_SHIFT = 16;
export const LOG_CSI_SHIFT = 24;
/** NUMD is a 32-bit 0's based dword count. */
export const LOG_MAX_BYTES = 4 * TWO_POW_32;

/** Get Log Page for `numdBytes` bytes (a multiple of 4) starting at byte `offset` (a multiple of 4). */
export function getLogPage(lid: number, numdBytes: number, nsid: number, prp1: number, prp2 = 0, offset = 0, opts: { lsp?: number; rae?: boolean; lsi?: number; csi?: number } = {}): Sqe {
  checkU8('lid', lid);
  checkUint('numdBytes', numdBytes, LOG_MAX_BYTES);
  if (numdBytes === 0 || numdBytes % 4 !== 0) throw new RangeError(`numdBytes must be a non-zero multiple of 4, got ${numdBytes}`);
  checkU32('nsid', nsid);
  checkSafe('offset', offset);
  if (offset % 4 !== 0) throw new RangeError(`offset must be dword aligned, got ${offset}`);
  const lsp = checkUint('lsp', opts.lsp ?? 0, 0x7f);
  const lsi = checkU16('lsi', opts.lsi ?? 0);
  const csi = checkU8('csi', opts.csi ?? 0);
  const numd = numdBytes / 4 - 1;
  return withData(
    {
      opcode: AdminOpcode.GetLogPage,
      cid: 0,
      nsid,
      cdw10: (lid | (lsp << LOG_LSP_SHIFT) | (opts.rae ? LOG_RAE_BIT : 0) | ((numd & 0xffff) << LOG_NUMDL_SHIFT)) >>> 0,
      cdw11: ((Math.floor(numd / 0x1_0000) & 0xffff) | (lsi << LOG_LSI_SHIFT)) >>> 0,
      cdw12: offset >>> 0,
      cdw13: Math.floor(offset / TWO_POW_32) >>> 0,
      cdw14: (csi << LOG_CSI_SHIFT) >>> 0,
    },
    { prp1, prp2 },
  );
}

/** Bytes requested by a Get Log Page command (from CDW10/CDW11). */
export function decodeLogPageBytes(cdw10: number, cdw11: number): number {
  return ((cdw10 >>> LOG_NUMDL_SHIFT) + (cdw11 & 0xffff) * 0x1_0000 + 1) * 4;
}

// ---- Set / Get Features (CDW10: FID 7:0, SV 31 (set) / SEL 10:8 (get))
export const FEATURE_SV_BIT = 1 << 31;
export const FEATURE_SEL_SHIFT = 8;
export const FeatureSelect = { Current: 0, Default: 1, Saved: 2, SupportedCapabilities: 3 } as const;

export function setFeatures(fid: number, cdw11: number, opts: { nsid?: number; save?: boolean; cdw12?: number; data?: DataPointer } = {}): Sqe {
  checkU8('fid', fid);
  checkU32('cdw11', cdw11);
  return withData(
    {
      opcode: AdminOpcode.SetFeatures,
      cid: 0,
      nsid: checkU32('nsid', opts.nsid ?? 0),
      cdw10: (fid | (opts.save ? FEATURE_SV_BIT : 0)) >>> 0,
      cdw11,
      cdw12: checkU32('cdw12', opts.cdw12 ?? 0),
    },
    opts.data,
  );
}

export function getFeatures(fid: number, opts: { nsid?: number; sel?: number; cdw11?: number; data?: DataPointer } = {}): Sqe {
  checkU8('fid', fid);
  const sel = checkUint('sel', opts.sel ?? FeatureSelect.Current, 3);
  return withData(
    {
      opcode: AdminOpcode.GetFeatures,
      cid: 0,
      nsid: checkU32('nsid', opts.nsid ?? 0),
      cdw10: fid | (sel << FEATURE_SEL_SHIFT),
      cdw11: checkU32('cdw11', opts.cdw11 ?? 0),
    },
    opts.data,
  );
}

// ---- Number of Queues feature (FID 07h): CDW11 NSQR 15:0, NCQR 31:16, both 0's based; result DW0 NSQA / NCQA.
export const NUMQ_NCQ_SHIFT = 16;
/** Up to 65535 queues of each kind may be requested (FFFFh is invalid). */
export const NUMQ_MAX = 0xffff;

/** CDW11 for Set Features Number of Queues from 1's based counts. */
export function encodeNumberOfQueues(sqCount: number, cqCount: number): number {
  checkUint('sqCount', sqCount, NUMQ_MAX);
  checkUint('cqCount', cqCount, NUMQ_MAX);
  if (sqCount === 0) throw new RangeError('sqCount must be at least 1');
  if (cqCount === 0) throw new RangeError('cqCount must be at least 1');
  return ((sqCount - 1) | ((cqCount - 1) << NUMQ_NCQ_SHIFT)) >>> 0;
}

/** Decode CDW11 or the completion DW0 of Number of Queues into 1's based counts. */
export function decodeNumberOfQueues(dw: number): { sqCount: number; cqCount: number } {
  return { sqCount: (dw & 0xffff) + 1, cqCount: (dw >>> NUMQ_NCQ_SHIFT) + 1 };
}

export function setNumberOfQueues(sqCount: number, cqCount: number): Sqe {
  return setFeatures(FeatureId.NumberOfQueues, encodeNumberOfQueues(sqCount, cqCount));
}

// ---- Abort (CDW10: SQID 15:0, CID 31:16)
export const ABORT_CID_SHIFT = 16;
export function abort(sqid: number, cid: number): Sqe {
  checkU16('sqid', sqid);
  checkU16('cid', cid);
  return { opcode: AdminOpcode.Abort, cid: 0, cdw10: (sqid | (cid << ABORT_CID_SHIFT)) >>> 0 };
}

// ---- NVM I/O commands: CDW10/11 SLBA, CDW12 NLB 15:0 (0's based), PRINFO 29:26, FUA 30, LR 31; CDW13 DSM 7:0.
export const IO_PRINFO_SHIFT = 26;
export const IO_FUA_BIT = 1 << 30;
export const IO_LR_BIT = 1 << 31;
export const WZ_DEAC_BIT = 1 << 25;

export interface IoOptions {
  fua?: boolean;
  limitedRetry?: boolean;
  prinfo?: number;
  /** Dataset management hints (CDW13 7:0). */
  dsm?: number;
}

function rwCommand(opcode: number, nsid: number, slba: number, blocks: number, dp: DataPointer, o: IoOptions): Sqe {
  checkU32('nsid', nsid);
  checkSafe('slba', slba);
  const nlb = encodeNlb(blocks);
  const prinfo = checkUint('prinfo', o.prinfo ?? 0, 0xf);
  return withData(
    {
      opcode,
      cid: 0,
      nsid,
      cdw10: slba >>> 0,
      cdw11: Math.floor(slba / TWO_POW_32) >>> 0,
      cdw12: (nlb | (prinfo << IO_PRINFO_SHIFT) | (o.fua ? IO_FUA_BIT : 0) | (o.limitedRetry ? IO_LR_BIT : 0)) >>> 0,
      cdw13: checkU8('dsm', o.dsm ?? 0),
    },
    dp,
  );
}

/** Read `blocks` (1..65536) logical blocks starting at `slba`. */
export const read = (nsid: number, slba: number, blocks: number, dp: DataPointer, o: IoOptions = {}): Sqe => rwCommand(NvmOpcode.Read, nsid, slba, blocks, dp, o);
/** Write `blocks` (1..65536) logical blocks starting at `slba`. */
export const write = (nsid: number, slba: number, blocks: number, dp: DataPointer, o: IoOptions = {}): Sqe => rwCommand(NvmOpcode.Write, nsid, slba, blocks, dp, o);

export function flush(nsid: number): Sqe {
  return { opcode: NvmOpcode.Flush, cid: 0, nsid: checkU32('nsid', nsid) };
}

export function writeZeroes(nsid: number, slba: number, blocks: number, o: { deallocate?: boolean; fua?: boolean } = {}): Sqe {
  checkU32('nsid', nsid);
  checkSafe('slba', slba);
  const nlb = encodeNlb(blocks);
  return {
    opcode: NvmOpcode.WriteZeroes,
    cid: 0,
    nsid,
    cdw10: slba >>> 0,
    cdw11: Math.floor(slba / TWO_POW_32) >>> 0,
    cdw12: (nlb | (o.deallocate ? WZ_DEAC_BIT : 0) | (o.fua ? IO_FUA_BIT : 0)) >>> 0,
  };
}

/** SLBA (CDW10/CDW11) of an I/O command. */
export function decodeSlba(cdw10: number, cdw11: number): number {
  return (cdw11 >>> 0) * TWO_POW_32 + (cdw10 >>> 0);
}

// ---- Dataset Management (CDW10: NR 7:0 0's based; CDW11: IDR 0, IDW 1, AD 2). Ranges: 16 bytes each:
//      context attributes 3:0, length in LBAs 7:4, starting LBA 15:8.
export const DSM_MAX_RANGES = 256;
export const DSM_ATTR_IDR = 1 << 0;
export const DSM_ATTR_IDW = 1 << 1;
export const DSM_ATTR_AD = 1 << 2;
export const DSM_RANGE_CATTR_OFFSET = 0;
export const DSM_RANGE_NLB_OFFSET = 4;
export const DSM_RANGE_SLBA_OFFSET = 8;

export interface DsmRange {
  slba: number;
  /** Length in logical blocks (1's based, 32 bits). */
  blocks: number;
  contextAttributes?: number;
}

export function dsm(nsid: number, ranges: number, dp: DataPointer, attrs: number = DSM_ATTR_AD): Sqe {
  checkU32('nsid', nsid);
  checkUint('ranges', ranges, DSM_MAX_RANGES);
  if (ranges === 0) throw new RangeError('ranges must be 1..256');
  checkUint('attrs', attrs, 0x7);
  return withData({ opcode: NvmOpcode.DatasetManagement, cid: 0, nsid, cdw10: ranges - 1, cdw11: attrs }, dp);
}

/** Write Dataset Management range descriptors into `out`. */
export function encodeDsmRanges(ranges: readonly DsmRange[], out: Uint8Array): void {
  if (ranges.length === 0 || ranges.length > DSM_MAX_RANGES) throw new RangeError(`ranges must hold 1..${DSM_MAX_RANGES} entries, got ${ranges.length}`);
  checkBuffer('out', out, ranges.length * DSM_RANGE_SIZE);
  ranges.forEach((r, i) => {
    const o = i * DSM_RANGE_SIZE;
    writeU32(out, o + DSM_RANGE_CATTR_OFFSET, `ranges[${i}].contextAttributes`, r.contextAttributes ?? 0);
    writeU32(out, o + DSM_RANGE_NLB_OFFSET, `ranges[${i}].blocks`, r.blocks);
    writeU64(out, o + DSM_RANGE_SLBA_OFFSET, `ranges[${i}].slba`, r.slba);
  });
}

export function decodeDsmRanges(bytes: Uint8Array, count: number): DsmRange[] {
  checkUint('count', count, DSM_MAX_RANGES);
  checkBuffer('bytes', bytes, count * DSM_RANGE_SIZE);
  const out: DsmRange[] = [];
  for (let i = 0; i < count; i++) {
    const o = i * DSM_RANGE_SIZE;
    out.push({
      contextAttributes: readU32(bytes, o + DSM_RANGE_CATTR_OFFSET),
      blocks: readU32(bytes, o + DSM_RANGE_NLB_OFFSET),
      slba: readU64(bytes, o + DSM_RANGE_SLBA_OFFSET, `ranges[${i}].slba`),
    });
  }
  return out;
}
