/**
 * What the driver keeps from Identify: a compact controller identity and per-namespace geometry.
 */
import { maxTransferBytes, type IdentifyController, type IdentifyNamespace } from '../nvme/identify.js';

export interface ControllerIdentity {
  vid: number;
  ssvid: number;
  serial: string;
  model: string;
  firmware: string;
  cntlid: number;
  /** Raw MDTS (log2 in units of CAP.MPSMIN; 0 = no limit). */
  mdtsLog2: number;
  /** Maximum data transfer size in bytes (Infinity when MDTS is 0). */
  mdts: number;
  /** Number of namespaces (maximum NSID). */
  nn: number;
  oncs: number;
  vwc: number;
  sgls: number;
  /** Abort Command Limit (1's based). */
  abortLimit: number;
  raw: IdentifyController;
}

export interface NamespaceInfo {
  nsid: number;
  /** Logical block size in bytes. */
  blockSize: number;
  /** Size in logical blocks (NSZE). */
  blocks: number;
  /** log2 of blockSize. */
  lbads: number;
  /** Metadata bytes per block of the active format. */
  metadataSize: number;
  /** blocks * blockSize. */
  capacityBytes: number;
  raw: IdentifyNamespace;
}

export function toIdentity(id: IdentifyController, minPageSize: number): ControllerIdentity {
  return {
    vid: id.vid,
    ssvid: id.ssvid,
    serial: id.sn,
    model: id.mn,
    firmware: id.fr,
    cntlid: id.cntlid,
    mdtsLog2: id.mdts,
    mdts: maxTransferBytes(id.mdts, minPageSize),
    nn: id.nn,
    oncs: id.oncs,
    vwc: id.vwc,
    sgls: id.sgls,
    abortLimit: id.acl + 1,
    raw: id,
  };
}

export function toNamespaceInfo(nsid: number, ns: IdentifyNamespace): NamespaceInfo {
  return {
    nsid,
    blockSize: ns.blockSize,
    blocks: ns.blocks,
    lbads: ns.activeFormat.lbads,
    metadataSize: ns.activeFormat.ms,
    capacityBytes: ns.blocks * ns.blockSize,
    raw: ns,
  };
}
