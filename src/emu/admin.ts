/**
 * Admin command set of the embedded controller: Identify, queue management, features, log pages, Abort,
 * Asynchronous Event Request, Keep Alive. Each handler returns a 15-bit status (0 = success) or DEFERRED, puts
 * the result dword in its CommandOutcome, and changes controller state only through AdminTarget's operations
 * (src/emu/command.ts).
 */
import { makeStatus } from '../nvme/cqe.js';
import { ONCS_DSM, ONCS_WRITE_ZEROES, SGLS_SUPPORTED, VWC_PRESENT, encodeIdentifyController } from '../nvme/identify-controller.js';
import { encodeIdentifyNamespace } from '../nvme/identify-namespace.js';
import { NSID_MAX, activeNamespacesAfter, encodeActiveNamespaceList } from '../nvme/namespace-list.js';
import { AdminOpcode, Cns, FeatureId, IDENTIFY_SIZE, LogPageId } from '../nvme/opcodes.js';
import { CQES_LOG2, SQES_LOG2 } from '../nvme/registers.js';
import { PSDT_PRP, SQE_DW_CDW10, SQE_DW_CDW11, SQE_DW_CDW12, SQE_DW_CDW13, SQE_DW_DPTR0, SQE_DW_DPTR1, SQE_CID_SHIFT, SQE_DW_NSID, SQE_PSDT_SHIFT, TWO_POW_32 } from '../nvme/sqe.js';
import { CommandSpecificStatus, GenericStatus, Sct } from '../nvme/status.js';
import type { AdminTarget, CommandOutcome } from './command.js';
import { AER_LIMIT, DEFERRED, ERROR_LOG_ENTRIES, NVME_VERSION } from './constants.js';
import { encodeErrorLog, encodeSmartLog } from './logs.js';
import { CompletionQueue, SubmissionQueue } from './queues.js';

const gen = (sc: number): number => makeStatus(Sct.Generic, sc, true);
const cs = (sc: number): number => makeStatus(Sct.CommandSpecific, sc, true);
const ST_INVALID_OPCODE = gen(GenericStatus.InvalidOpcode);
const ST_INVALID_FIELD = gen(GenericStatus.InvalidField);
const ST_INVALID_NS = gen(GenericStatus.InvalidNamespaceOrFormat);
const ST_SEQUENCE = gen(GenericStatus.CommandSequenceError);
const ST_PRP_OFFSET = gen(GenericStatus.PrpOffsetInvalid);
const ST_DATA_TRANSFER = makeStatus(Sct.Generic, GenericStatus.DataTransferError, false);
const ST_CQ_INVALID = cs(CommandSpecificStatus.CompletionQueueInvalid);
const ST_INVALID_QID = cs(CommandSpecificStatus.InvalidQueueIdentifier);
const ST_INVALID_QSIZE = cs(CommandSpecificStatus.InvalidQueueSize);
const ST_INVALID_QDELETE = cs(CommandSpecificStatus.InvalidQueueDeletion);
const ST_INVALID_LOG_PAGE = cs(CommandSpecificStatus.InvalidLogPage);
const ST_AER_LIMIT = cs(CommandSpecificStatus.AsyncEventRequestLimitExceeded);

/** Abort result dword 0 bit 0: the command was not aborted. */
const ABORT_NOT_ABORTED = 1;
/** Create I/O queue CDW11 bit 0: Physically Contiguous. */
const QUEUE_PC = 1;
/** Set Features CDW10 bit 31: Save. Get Features CDW10 bits 10:8: Select. */
const GET_FEATURES_SEL_SHIFT = 8;
const GET_FEATURES_SEL_SUPPORTED = 3;
/** Supported capabilities reported for SEL=3: changeable. */
const FEATURE_CAP_CHANGEABLE = 1 << 2;
/** Identify Namespace DLFEAT (byte 33): deallocated blocks read as zeros (001b), Write Zeroes may deallocate (bit 3). */
const ID_NS_DLFEAT_OFFSET = 33;
const DLFEAT_READ_ZEROES = 0x1;
const DLFEAT_WRITE_ZEROES_DEALLOC = 0x8;
/** Identify Controller CNTRLTYPE: I/O controller. */
const CNTRLTYPE_IO = 1;
/** WCTEMP / CCTEMP thresholds in Kelvin. */
const WCTEMP_K = 343;
const CCTEMP_K = 358;

const scratch = Buffer.alloc(Math.max(IDENTIFY_SIZE, ERROR_LOG_ENTRIES * 64));

function cdw(q: Uint32Array, b: number, i: number): number {
  return q[b + i]!;
}

/** Execute the admin command at dword `b` of `q`; returns its status, the result dword in `out`. */
export function adminCommand(c: AdminTarget, q: Uint32Array, b: number, out: CommandOutcome): number {
  const opc = q[b]! & 0xff;
  if (((q[b]! >>> SQE_PSDT_SHIFT) & 0x3) !== PSDT_PRP && opcUsesData(opc)) return ST_INVALID_FIELD; // admin: PRPs only
  switch (opc) {
    case AdminOpcode.Identify:
      return identify(c, q, b);
    case AdminOpcode.CreateIoCq:
      return createCq(c, q, b);
    case AdminOpcode.CreateIoSq:
      return createSq(c, q, b);
    case AdminOpcode.DeleteIoSq:
      return deleteSq(c, q, b);
    case AdminOpcode.DeleteIoCq:
      return deleteCq(c, q, b);
    case AdminOpcode.SetFeatures:
      return setFeatures(c, q, b, out);
    case AdminOpcode.GetFeatures:
      return getFeatures(c, q, b, out);
    case AdminOpcode.GetLogPage:
      return getLogPage(c, q, b);
    case AdminOpcode.Abort: {
      const v = cdw(q, b, SQE_DW_CDW10);
      out.result = c.abortCommand(v & 0xffff, v >>> 16) ? 0 : ABORT_NOT_ABORTED;
      return 0;
    }
    case AdminOpcode.AsyncEventRequest: {
      const event = c.takeAsyncEvent();
      if (event >= 0) {
        out.result = event;
        return 0;
      }
      return c.parkAsyncEventRequest(q[b]! >>> SQE_CID_SHIFT) ? DEFERRED : ST_AER_LIMIT;
    }
    case AdminOpcode.KeepAlive:
      return 0;
    default:
      return ST_INVALID_OPCODE;
  }
}

function opcUsesData(opc: number): boolean {
  return opc === AdminOpcode.Identify || opc === AdminOpcode.GetLogPage;
}

/** Copy `len` bytes of scratch to the command's PRPs. */
function toHost(c: AdminTarget, q: Uint32Array, b: number, len: number): number {
  const st = c.dp.map(q, b, len, true);
  if (st !== 0) return st;
  c.dp.copyToHost(scratch, 0);
  return 0;
}

function identify(c: AdminTarget, q: Uint32Array, b: number): number {
  const cns = cdw(q, b, SQE_DW_CDW10) & 0xff;
  const nsid = cdw(q, b, SQE_DW_NSID);
  switch (cns) {
    case Cns.Controller: {
      const cfg = c.cfg;
      const total = cfg.namespaces.reduce((a, n) => a + n.sizeBytes, 0);
      encodeIdentifyController(
        {
          vid: cfg.vendorId,
          ssvid: cfg.subsystemVendorId,
          sn: cfg.serial,
          mn: cfg.model,
          fr: cfg.firmware,
          rab: 0,
          mdts: cfg.mdts,
          cntlid: cfg.cntlid,
          ver: NVME_VERSION,
          cntrltype: CNTRLTYPE_IO,
          acl: 3,
          aerl: AER_LIMIT - 1,
          elpe: ERROR_LOG_ENTRIES - 1,
          npss: 0,
          wctemp: WCTEMP_K,
          cctemp: CCTEMP_K,
          tnvmcap: total,
          sqes: (SQES_LOG2 << 4) | SQES_LOG2,
          cqes: (CQES_LOG2 << 4) | CQES_LOG2,
          nn: c.nn,
          oncs: ONCS_DSM | ONCS_WRITE_ZEROES,
          vwc: VWC_PRESENT,
          sgls: SGLS_SUPPORTED,
          subnqn: `nqn.2024-01.dev.homi:emu:${cfg.serial}`,
        },
        scratch,
      );
      break;
    }
    case Cns.Namespace: {
      const ns = nsid >= 1 && nsid <= c.nn ? c.ns[nsid]! : undefined;
      if (ns === undefined) return ST_INVALID_NS;
      const eui = new Uint8Array(8);
      eui[0] = 0x02; // locally administered
      eui[4] = (c.cfg.cntlid >>> 8) & 0xff;
      eui[5] = c.cfg.cntlid & 0xff;
      eui[6] = (nsid >>> 8) & 0xff;
      eui[7] = nsid & 0xff;
      encodeIdentifyNamespace({ nsze: ns.nlba, ncap: ns.nlba, nuse: ns.nlba, lbaFormats: [{ ms: 0, lbads: ns.lbads, rp: 0 }], eui64: eui }, scratch);
      scratch[ID_NS_DLFEAT_OFFSET] = DLFEAT_READ_ZEROES | DLFEAT_WRITE_ZEROES_DEALLOC;
      break;
    }
    case Cns.ActiveNamespaceList: {
      if (nsid >= NSID_MAX) return ST_INVALID_NS;
      const all: number[] = [];
      for (let i = 1; i <= c.nn; i++) all.push(i);
      encodeActiveNamespaceList(activeNamespacesAfter(all, nsid), scratch);
      break;
    }
    default:
      return ST_INVALID_FIELD;
  }
  return toHost(c, q, b, IDENTIFY_SIZE);
}

/** Common checks of Create I/O CQ/SQ; returns 0 or a status. Leaves the queue's segment in c.dma.offset. */
function queueBase(c: AdminTarget, q: Uint32Array, b: number, entries: number, entrySize: number): number {
  const base = cdw(q, b, SQE_DW_DPTR0) + cdw(q, b, SQE_DW_DPTR1) * TWO_POW_32;
  if (base % c.pageSize !== 0) return -ST_PRP_OFFSET;
  const seg = c.dma.locate(base, entries * entrySize);
  if (seg < 0) return -ST_DATA_TRANSFER;
  return seg;
}

function createCq(c: AdminTarget, q: Uint32Array, b: number): number {
  const d10 = cdw(q, b, SQE_DW_CDW10);
  const d11 = cdw(q, b, SQE_DW_CDW11);
  const qid = d10 & 0xffff;
  const qsize = (d10 >>> 16) + 1;
  if (qid === 0 || qid > c.cfg.maxQueuePairs || c.cqs[qid] !== undefined) return ST_INVALID_QID;
  if (qsize < 2 || qsize > c.cfg.mqes + 1) return ST_INVALID_QSIZE;
  if ((d11 & QUEUE_PC) === 0) return ST_INVALID_FIELD;
  if (c.iocqes !== CQES_LOG2) return ST_INVALID_FIELD;
  const seg = queueBase(c, q, b, qsize, 1 << CQES_LOG2);
  if (seg < 0) return -seg;
  const base = cdw(q, b, SQE_DW_DPTR0) + cdw(q, b, SQE_DW_DPTR1) * TWO_POW_32;
  c.addCq(new CompletionQueue(qid, qsize, base, c.dma.sab[seg]!, c.dma.offset, 2 * qid + 1));
  return 0;
}

function createSq(c: AdminTarget, q: Uint32Array, b: number): number {
  const d10 = cdw(q, b, SQE_DW_CDW10);
  const d11 = cdw(q, b, SQE_DW_CDW11);
  const qid = d10 & 0xffff;
  const qsize = (d10 >>> 16) + 1;
  const cqid = d11 >>> 16;
  if (qid === 0 || qid > c.cfg.maxQueuePairs || c.sqs[qid] !== undefined) return ST_INVALID_QID;
  if (qsize < 2 || qsize > c.cfg.mqes + 1) return ST_INVALID_QSIZE;
  const cq = cqid === 0 ? undefined : c.cqs[cqid];
  if (cq === undefined) return ST_CQ_INVALID;
  if ((d11 & QUEUE_PC) === 0) return ST_INVALID_FIELD;
  if (c.iosqes !== SQES_LOG2) return ST_INVALID_FIELD;
  const seg = queueBase(c, q, b, qsize, 1 << SQES_LOG2);
  if (seg < 0) return -seg;
  const base = cdw(q, b, SQE_DW_DPTR0) + cdw(q, b, SQE_DW_DPTR1) * TWO_POW_32;
  c.addSq(new SubmissionQueue(qid, qsize, base, c.dma.sab[seg]!, c.dma.offset, cq, 2 * qid, (d11 >>> 1) & 0x3));
  return 0;
}

function deleteSq(c: AdminTarget, q: Uint32Array, b: number): number {
  const qid = cdw(q, b, SQE_DW_CDW10) & 0xffff;
  const sq = qid === 0 || qid > c.cfg.maxQueuePairs ? undefined : c.sqs[qid];
  if (sq === undefined) return ST_INVALID_QID;
  c.deleteSq(sq);
  return 0;
}

function deleteCq(c: AdminTarget, q: Uint32Array, b: number): number {
  const qid = cdw(q, b, SQE_DW_CDW10) & 0xffff;
  const cq = qid === 0 || qid > c.cfg.maxQueuePairs ? undefined : c.cqs[qid];
  if (cq === undefined) return ST_INVALID_QID;
  if (cq.sqRefs !== 0) return ST_INVALID_QDELETE;
  c.deleteCq(cq);
  return 0;
}

function setFeatures(c: AdminTarget, q: Uint32Array, b: number, out: CommandOutcome): number {
  const fid = cdw(q, b, SQE_DW_CDW10) & 0xff;
  const d11 = cdw(q, b, SQE_DW_CDW11);
  switch (fid) {
    case FeatureId.NumberOfQueues: {
      const nsqr = d11 & 0xffff;
      const ncqr = d11 >>> 16;
      if (nsqr === 0xffff || ncqr === 0xffff) return ST_INVALID_FIELD;
      for (let i = 1; i < c.sqs.length; i++) if (c.sqs[i] !== undefined || c.cqs[i] !== undefined) return ST_SEQUENCE;
      const max = c.cfg.maxQueuePairs - 1;
      c.setQueueCounts(Math.min(nsqr, max), Math.min(ncqr, max));
      out.result = (c.nsqa | (c.ncqa << 16)) >>> 0;
      return 0;
    }
    case FeatureId.VolatileWriteCache:
      c.setVolatileWriteCache(d11 & 1);
      return 0;
    case FeatureId.Arbitration:
      c.setArbitration(d11);
      return 0;
    default:
      return ST_INVALID_FIELD;
  }
}

function getFeatures(c: AdminTarget, q: Uint32Array, b: number, out: CommandOutcome): number {
  const d10 = cdw(q, b, SQE_DW_CDW10);
  const fid = d10 & 0xff;
  const sel = (d10 >>> GET_FEATURES_SEL_SHIFT) & 0x7;
  if (fid !== FeatureId.NumberOfQueues && fid !== FeatureId.VolatileWriteCache && fid !== FeatureId.Arbitration) {
    return ST_INVALID_FIELD;
  }
  if (sel === GET_FEATURES_SEL_SUPPORTED) {
    out.result = FEATURE_CAP_CHANGEABLE;
    return 0;
  }
  if (sel > GET_FEATURES_SEL_SUPPORTED) return ST_INVALID_FIELD;
  switch (fid) {
    case FeatureId.NumberOfQueues:
      out.result = (c.nsqa | (c.ncqa << 16)) >>> 0;
      break;
    case FeatureId.VolatileWriteCache:
      out.result = c.volatileWriteCache;
      break;
    case FeatureId.Arbitration:
      out.result = c.arbitration >>> 0;
      break;
  }
  return 0;
}

function getLogPage(c: AdminTarget, q: Uint32Array, b: number): number {
  const d10 = cdw(q, b, SQE_DW_CDW10);
  const d11 = cdw(q, b, SQE_DW_CDW11);
  const lid = d10 & 0xff;
  const numd = ((d10 >>> 16) | ((d11 & 0xffff) << 16)) + 1;
  const len = numd * 4;
  const offset = cdw(q, b, SQE_DW_CDW12) + cdw(q, b, SQE_DW_CDW13) * TWO_POW_32;
  if ((offset & 3) !== 0) return ST_INVALID_FIELD;
  if (len > c.mdtsBytes) return ST_INVALID_FIELD;
  let size: number;
  switch (lid) {
    case LogPageId.ErrorInformation:
      size = encodeErrorLog(c.errorLog, scratch, ERROR_LOG_ENTRIES);
      break;
    case LogPageId.SmartHealth:
      size = encodeSmartLog(c.smart(), scratch);
      break;
    default:
      return ST_INVALID_LOG_PAGE;
  }
  if (offset >= size) return ST_INVALID_FIELD;
  const st = c.dp.map(q, b, len, true);
  if (st !== 0) return st;
  // Bytes beyond the page read as zero.
  const page = Buffer.alloc(len);
  scratch.copy(page, 0, offset, Math.min(size, offset + len));
  c.dp.copyToHost(page, 0);
  return 0;
}
