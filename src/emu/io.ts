/**
 * NVM command set of the embedded controller: Read, Write, Flush, Write Zeroes, Dataset Management.
 * The Read/Write path is the hot path: dwords straight from the SQ ring, no allocation. A handler returns its
 * status; the failing LBA and the data it moved go into the CommandOutcome (src/emu/command.ts).
 */
import { makeStatus } from '../nvme/cqe.js';
import { DSM_ATTR_DEALLOCATE, DSM_RANGE_SIZE, NvmOpcode } from '../nvme/opcodes.js';
import { SQE_DW_CDW10, SQE_DW_CDW11, SQE_DW_CDW12, SQE_DW_NSID, SQE_FUSE_SHIFT, TWO_POW_32 } from '../nvme/sqe.js';
import { GenericStatus, Sct } from '../nvme/status.js';
import { TRANSFER_READ, TRANSFER_WRITE, type CommandOutcome, type IoTarget } from './command.js';
import type { Namespace } from './namespace.js';

const gen = (sc: number): number => makeStatus(Sct.Generic, sc, true);
const ST_INVALID_OPCODE = gen(GenericStatus.InvalidOpcode);
const ST_INVALID_FIELD = gen(GenericStatus.InvalidField);
const ST_INVALID_NS = gen(GenericStatus.InvalidNamespaceOrFormat);
const ST_LBA_RANGE = gen(GenericStatus.LbaOutOfRange);

/** CDW12 bits 15:0: number of logical blocks, 0's based. */
const NLB_MASK = 0xffff;
/** FUSE bits of CDW0 (fused operations are not supported). */
const FUSE_MASK = 0x3 << SQE_FUSE_SHIFT;
/** The broadcast NSID, accepted by Flush. */
const NSID_ALL = 0xffffffff;
/** DSM: at most 256 ranges (CDW10 NR is 0's based, 8 bits). */
const DSM_MAX_RANGES = 256;
const dsmBuf = Buffer.alloc(DSM_MAX_RANGES * DSM_RANGE_SIZE);

/** log2 of the 512-byte unit the SMART data counters use. */
const UNIT_512_SHIFT = 9;

/** The namespace `nsid` names, or undefined when it is 0, beyond NN, or inactive. */
function activeNs(c: IoTarget, nsid: number): Namespace | undefined {
  return nsid !== 0 && nsid <= c.nn ? c.ns[nsid] : undefined;
}

/** 0 when [slba, slba + nlb) lies inside the namespace; else LBA Out of Range, with the LBA for the error log. */
function rangeStatus(ns: Namespace, slba: number, nlb: number, out: CommandOutcome): number {
  if (slba + nlb <= ns.nlba) return 0;
  out.errorLba = slba;
  return ST_LBA_RANGE;
}

/** Execute the NVM command at dword `b` of `q`; returns its status, the rest of the outcome in `out`. */
export function ioCommand(c: IoTarget, q: Uint32Array, b: number, out: CommandOutcome): number {
  const d0 = q[b]!;
  const opc = d0 & 0xff;
  if ((d0 & FUSE_MASK) !== 0) return ST_INVALID_FIELD;
  const nsid = q[b + SQE_DW_NSID]!;
  switch (opc) {
    case NvmOpcode.Read:
    case NvmOpcode.Write: {
      const ns = activeNs(c, nsid);
      if (ns === undefined) return ST_INVALID_NS;
      const slba = q[b + SQE_DW_CDW10]! + q[b + SQE_DW_CDW11]! * TWO_POW_32;
      const nlb = (q[b + SQE_DW_CDW12]! & NLB_MASK) + 1;
      const rs = rangeStatus(ns, slba, nlb, out);
      if (rs !== 0) return rs;
      const lbads = ns.lbads;
      const bytes = nlb << lbads;
      if (bytes > c.mdtsBytes) return ST_INVALID_FIELD;
      const read = opc === NvmOpcode.Read;
      out.transfer = read ? TRANSFER_READ : TRANSFER_WRITE;
      out.units512 = nlb << (lbads - UNIT_512_SHIFT);
      // A null namespace moves no data, except into device windows: their bytes still go through the copy
      // engine (emulated P2P's cost is the copy, whatever the bytes).
      if (c.nullMode) return c.dp.windows === null ? 0 : c.dp.map(q, b, bytes, read);
      const st = c.dp.map(q, b, bytes, read);
      if (st !== 0) return st;
      if (read) c.dp.readToHost(ns.store, slba * 2 ** lbads);
      else c.dp.writeFromHost(ns.store, slba * 2 ** lbads);
      return 0;
    }
    case NvmOpcode.Flush:
      if (nsid === NSID_ALL) {
        c.flushAll();
        return 0;
      }
      if (nsid === 0 || nsid > c.nn) return ST_INVALID_NS;
      c.ns[nsid]!.store.flush();
      return 0;
    case NvmOpcode.WriteZeroes: {
      const ns = activeNs(c, nsid);
      if (ns === undefined) return ST_INVALID_NS;
      const slba = q[b + SQE_DW_CDW10]! + q[b + SQE_DW_CDW11]! * TWO_POW_32;
      const nlb = (q[b + SQE_DW_CDW12]! & NLB_MASK) + 1;
      const rs = rangeStatus(ns, slba, nlb, out);
      if (rs !== 0) return rs;
      ns.store.zero(slba * 2 ** ns.lbads, nlb * 2 ** ns.lbads);
      return 0;
    }
    case NvmOpcode.DatasetManagement:
      return datasetManagement(c, q, b, nsid, out);
    default:
      return ST_INVALID_OPCODE;
  }
}

function datasetManagement(c: IoTarget, q: Uint32Array, b: number, nsid: number, out: CommandOutcome): number {
  const ns = activeNs(c, nsid);
  if (ns === undefined) return ST_INVALID_NS;
  const nr = (q[b + SQE_DW_CDW10]! & 0xff) + 1;
  const attr = q[b + SQE_DW_CDW11]!;
  if ((attr & DSM_ATTR_DEALLOCATE) === 0) return 0; // integral read/write hints: advisory, nothing to do
  const len = nr * DSM_RANGE_SIZE;
  const st = c.dp.map(q, b, len, false);
  if (st !== 0) return st;
  c.dp.copyFromHost(dsmBuf, 0);
  // Validate every range before deallocating any.
  for (let i = 0; i < nr; i++) {
    const at = i * DSM_RANGE_SIZE;
    const nlb = dsmBuf.readUInt32LE(at + 4);
    const slba = dsmBuf.readUInt32LE(at + 8) + dsmBuf.readUInt32LE(at + 12) * TWO_POW_32;
    const rs = rangeStatus(ns, slba, nlb, out);
    if (rs !== 0) return rs;
  }
  for (let i = 0; i < nr; i++) {
    const at = i * DSM_RANGE_SIZE;
    const nlb = dsmBuf.readUInt32LE(at + 4);
    const slba = dsmBuf.readUInt32LE(at + 8) + dsmBuf.readUInt32LE(at + 12) * TWO_POW_32;
    if (nlb !== 0) ns.store.zero(slba * 2 ** ns.lbads, nlb * 2 ** ns.lbads);
  }
  return 0;
}
