/**
 * SR-IOV and namespace attachment on the wire (NVMe Base 2.0: Identify CNS 12h/13h Controller List, 14h Primary
 * Controller Capabilities, 15h Secondary Controller List; Virtualization Management, admin opcode 1Ch; Namespace
 * Attachment, admin opcode 15h). Pure: builders, decoders and encoders (the encoders make the byte fixtures of
 * the unit tests and let a software controller answer).
 */
import { checkBuffer, checkU16, checkU32, checkUint, readU16, readU32 } from './bytes.js';
import { AdminOpcode, Cns, IDENTIFY_SIZE } from './opcodes.js';
import type { Sqe } from './sqe.js';
import { identify } from './commands.js';

// ---------------------------------------------------------------- Virtualization Management (1Ch)

/** Virtualization Management CDW10 ACT (bits 3:0). */
export const VirtMgmtAction = {
  /** Primary Controller Flexible Allocation: takes effect at the primary's next reset. */
  PrimaryFlexibleAllocation: 0x1,
  /** Secondary Controller Offline: the secondary controller stops (its resources may then be reassigned). */
  SecondaryOffline: 0x7,
  /** Secondary Controller Assign: give NR flexible resources of type RT to an offline secondary (0 releases). */
  SecondaryAssign: 0x8,
  /** Secondary Controller Online: the secondary controller may be enabled by its host. */
  SecondaryOnline: 0x9,
} as const;
export type VirtMgmtActionValue = (typeof VirtMgmtAction)[keyof typeof VirtMgmtAction];

/** Virtualization Management CDW10 RT (bits 10:8): the resource type. */
export const VirtResourceType = {
  /** VQ: a queue resource (one submission and one completion queue, admin queues included). */
  Vq: 0,
  /** VI: an interrupt resource (an MSI-X vector). */
  Vi: 1,
} as const;
export type VirtResourceTypeValue = (typeof VirtResourceType)[keyof typeof VirtResourceType];

export const VIRT_MGMT_ACT_MASK = 0xf;
export const VIRT_MGMT_RT_SHIFT = 8;
export const VIRT_MGMT_RT_MASK = 0x7;
export const VIRT_MGMT_CNTLID_SHIFT = 16;
/** CDW11 NR (bits 15:0): the number of resources. */
export const VIRT_MGMT_NR_MASK = 0xffff;

/** Virtualization Management: `action` on controller `cntlid` (resource type `rt`, `nr` resources where used). */
export function virtualizationManagement(action: VirtMgmtActionValue, cntlid: number, rt: VirtResourceTypeValue = VirtResourceType.Vq, nr = 0): Sqe {
  checkUint('action', action, VIRT_MGMT_ACT_MASK);
  checkUint('rt', rt, VIRT_MGMT_RT_MASK);
  checkU16('cntlid', cntlid);
  checkU16('nr', nr);
  return {
    opcode: AdminOpcode.VirtualizationManagement,
    cid: 0,
    nsid: 0,
    cdw10: (action | (rt << VIRT_MGMT_RT_SHIFT) | (cntlid << VIRT_MGMT_CNTLID_SHIFT)) >>> 0,
    cdw11: nr & VIRT_MGMT_NR_MASK,
  };
}

export function decodeVirtualizationManagement(cdw10: number, cdw11: number): { action: number; rt: number; cntlid: number; nr: number } {
  return {
    action: cdw10 & VIRT_MGMT_ACT_MASK,
    rt: (cdw10 >>> VIRT_MGMT_RT_SHIFT) & VIRT_MGMT_RT_MASK,
    cntlid: cdw10 >>> VIRT_MGMT_CNTLID_SHIFT,
    nr: cdw11 & VIRT_MGMT_NR_MASK,
  };
}

// ---------------------------------------------------------------- Namespace Attachment (15h)

/** Namespace Attachment CDW10 SEL (bits 3:0). */
export const NsAttachSel = {
  Attach: 0x0,
  Detach: 0x1,
} as const;
export type NsAttachSelValue = (typeof NsAttachSel)[keyof typeof NsAttachSel];

/** Namespace Attachment of `nsid` (the data, a controller list, goes from host to controller). */
export function namespaceAttachment(nsid: number, sel: NsAttachSelValue): Sqe {
  checkU32('nsid', nsid);
  if (nsid === 0 || nsid === 0xffff_ffff) throw new RangeError(`nsid must name one namespace, got ${nsid}`);
  return { opcode: AdminOpcode.NamespaceAttachment, cid: 0, nsid, cdw10: sel & 0xf };
}

// ---------------------------------------------------------------- controller lists (CNS 12h / 13h, attachment data)

/** A controller list: a 2-byte count and up to 2047 2-byte controller ids, 4096 bytes. */
export const CONTROLLER_LIST_MAX = 2047;

export function encodeControllerList(ids: readonly number[], out = new Uint8Array(IDENTIFY_SIZE)): Uint8Array {
  checkBuffer('controller list', out, IDENTIFY_SIZE);
  if (ids.length > CONTROLLER_LIST_MAX) throw new RangeError(`a controller list holds at most ${CONTROLLER_LIST_MAX} ids, got ${ids.length}`);
  out.fill(0, 0, IDENTIFY_SIZE);
  const v = new DataView(out.buffer, out.byteOffset, IDENTIFY_SIZE);
  v.setUint16(0, ids.length, true);
  ids.forEach((id, i) => v.setUint16(2 + 2 * i, checkU16(`ids[${i}]`, id), true));
  return out;
}

export function decodeControllerList(b: Uint8Array): number[] {
  checkBuffer('controller list', b, IDENTIFY_SIZE);
  const n = readU16(b, 0);
  if (n > CONTROLLER_LIST_MAX) throw new RangeError(`controller list: count ${n} exceeds ${CONTROLLER_LIST_MAX}`);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(readU16(b, 2 + 2 * i));
  return out;
}

export const identifyControllerList = (cntid = 0): Sqe => identify(Cns.ControllerList, 0, 0, { cntid });
export const identifyAttachedControllers = (nsid: number, cntid = 0): Sqe => identify(Cns.NamespaceAttachedControllerList, nsid, 0, { cntid });

// ---------------------------------------------------------------- Primary Controller Capabilities (CNS 14h)

/** Byte offsets of the Primary Controller Capabilities structure. */
export const PrimaryCapsOffset = {
  CNTLID: 0,
  PORTID: 2,
  CRT: 4,
  VQFRT: 32,
  VQRFA: 36,
  VQRFAP: 40,
  VQPRT: 42,
  VQFRSM: 44,
  VQGRAN: 46,
  VIFRT: 64,
  VIRFA: 68,
  VIRFAP: 72,
  VIPRT: 74,
  VIFRSM: 76,
  VIGRAN: 78,
} as const;

/** CRT bits: which resource types the controller supports. */
export const CRT_VQ = 1 << 0;
export const CRT_VI = 1 << 1;

export interface PrimaryControllerCapabilities {
  cntlid: number;
  portId: number;
  /** CRT: VQ and VI resources supported. */
  supportsVq: boolean;
  supportsVi: boolean;
  /** VQFRT: flexible VQ resources in all. */
  vqFlexibleTotal: number;
  /** VQRFA: flexible VQ resources assigned to secondary controllers. */
  vqFlexibleAssigned: number;
  /** VQRFAP: flexible VQ resources allocated to the primary. */
  vqFlexibleAllocatedPrimary: number;
  /** VQPRT: private VQ resources of the primary. */
  vqPrivate: number;
  /** VQFRSM: the most flexible VQ resources one secondary may get. */
  vqMaxPerSecondary: number;
  /** VQGRAN: the preferred granularity of VQ assignments. */
  vqGranularity: number;
  viFlexibleTotal: number;
  viFlexibleAssigned: number;
  viFlexibleAllocatedPrimary: number;
  viPrivate: number;
  viMaxPerSecondary: number;
  viGranularity: number;
}

export const identifyPrimaryControllerCapabilities = (cntid = 0): Sqe => identify(Cns.PrimaryControllerCapabilities, 0, 0, { cntid });

export function decodePrimaryControllerCapabilities(b: Uint8Array): PrimaryControllerCapabilities {
  checkBuffer('primary controller capabilities', b, IDENTIFY_SIZE);
  const O = PrimaryCapsOffset;
  const crt = b[O.CRT]!;
  return {
    cntlid: readU16(b, O.CNTLID),
    portId: readU16(b, O.PORTID),
    supportsVq: (crt & CRT_VQ) !== 0,
    supportsVi: (crt & CRT_VI) !== 0,
    vqFlexibleTotal: readU32(b, O.VQFRT),
    vqFlexibleAssigned: readU32(b, O.VQRFA),
    vqFlexibleAllocatedPrimary: readU16(b, O.VQRFAP),
    vqPrivate: readU16(b, O.VQPRT),
    vqMaxPerSecondary: readU16(b, O.VQFRSM),
    vqGranularity: readU16(b, O.VQGRAN),
    viFlexibleTotal: readU32(b, O.VIFRT),
    viFlexibleAssigned: readU32(b, O.VIRFA),
    viFlexibleAllocatedPrimary: readU16(b, O.VIRFAP),
    viPrivate: readU16(b, O.VIPRT),
    viMaxPerSecondary: readU16(b, O.VIFRSM),
    viGranularity: readU16(b, O.VIGRAN),
  };
}

export function encodePrimaryControllerCapabilities(c: PrimaryControllerCapabilities, out = new Uint8Array(IDENTIFY_SIZE)): Uint8Array {
  checkBuffer('primary controller capabilities', out, IDENTIFY_SIZE);
  out.fill(0, 0, IDENTIFY_SIZE);
  const v = new DataView(out.buffer, out.byteOffset, IDENTIFY_SIZE);
  const O = PrimaryCapsOffset;
  v.setUint16(O.CNTLID, checkU16('cntlid', c.cntlid), true);
  v.setUint16(O.PORTID, checkU16('portId', c.portId), true);
  v.setUint8(O.CRT, (c.supportsVq ? CRT_VQ : 0) | (c.supportsVi ? CRT_VI : 0));
  v.setUint32(O.VQFRT, checkU32('vqFlexibleTotal', c.vqFlexibleTotal), true);
  v.setUint32(O.VQRFA, checkU32('vqFlexibleAssigned', c.vqFlexibleAssigned), true);
  v.setUint16(O.VQRFAP, checkU16('vqFlexibleAllocatedPrimary', c.vqFlexibleAllocatedPrimary), true);
  v.setUint16(O.VQPRT, checkU16('vqPrivate', c.vqPrivate), true);
  v.setUint16(O.VQFRSM, checkU16('vqMaxPerSecondary', c.vqMaxPerSecondary), true);
  v.setUint16(O.VQGRAN, checkU16('vqGranularity', c.vqGranularity), true);
  v.setUint32(O.VIFRT, checkU32('viFlexibleTotal', c.viFlexibleTotal), true);
  v.setUint32(O.VIRFA, checkU32('viFlexibleAssigned', c.viFlexibleAssigned), true);
  v.setUint16(O.VIRFAP, checkU16('viFlexibleAllocatedPrimary', c.viFlexibleAllocatedPrimary), true);
  v.setUint16(O.VIPRT, checkU16('viPrivate', c.viPrivate), true);
  v.setUint16(O.VIFRSM, checkU16('viMaxPerSecondary', c.viMaxPerSecondary), true);
  v.setUint16(O.VIGRAN, checkU16('viGranularity', c.viGranularity), true);
  return out;
}

// ---------------------------------------------------------------- Secondary Controller List (CNS 15h)

/** Byte 0: the number of entries; entries of 32 bytes from byte 32. */
export const SECONDARY_LIST_HEADER_SIZE = 32;
export const SECONDARY_ENTRY_SIZE = 32;
export const SECONDARY_LIST_MAX = 127;
/** Byte offsets within one Secondary Controller Entry. */
export const SecondaryEntryOffset = {
  SCID: 0,
  PCID: 2,
  SCS: 4,
  VFN: 8,
  NVQ: 10,
  NVI: 12,
} as const;
/** SCS bit 0: the secondary controller is online. */
export const SCS_ONLINE = 1 << 0;

export interface SecondaryController {
  /** SCID: the secondary controller's id (its CNTLID). */
  scid: number;
  /** PCID: its primary controller's id. */
  pcid: number;
  online: boolean;
  /** VFN: the virtual function number (1-based; 0: not a VF). */
  vfNumber: number;
  /** NVQ: flexible VQ resources assigned. */
  vq: number;
  /** NVI: flexible VI resources assigned. */
  vi: number;
}

export const identifySecondaryControllerList = (cntid = 0): Sqe => identify(Cns.SecondaryControllerList, 0, 0, { cntid });

export function decodeSecondaryControllerList(b: Uint8Array): SecondaryController[] {
  checkBuffer('secondary controller list', b, IDENTIFY_SIZE);
  const n = b[0]!;
  if (n > SECONDARY_LIST_MAX) throw new RangeError(`secondary controller list: NUMID ${n} exceeds ${SECONDARY_LIST_MAX}`);
  const out: SecondaryController[] = [];
  const O = SecondaryEntryOffset;
  for (let i = 0; i < n; i++) {
    const e = SECONDARY_LIST_HEADER_SIZE + i * SECONDARY_ENTRY_SIZE;
    out.push({
      scid: readU16(b, e + O.SCID),
      pcid: readU16(b, e + O.PCID),
      online: (b[e + O.SCS]! & SCS_ONLINE) !== 0,
      vfNumber: readU16(b, e + O.VFN),
      vq: readU16(b, e + O.NVQ),
      vi: readU16(b, e + O.NVI),
    });
  }
  return out;
}

export function encodeSecondaryControllerList(list: readonly SecondaryController[], out = new Uint8Array(IDENTIFY_SIZE)): Uint8Array {
  checkBuffer('secondary controller list', out, IDENTIFY_SIZE);
  if (list.length > SECONDARY_LIST_MAX) throw new RangeError(`a secondary controller list holds at most ${SECONDARY_LIST_MAX} entries, got ${list.length}`);
  out.fill(0, 0, IDENTIFY_SIZE);
  const v = new DataView(out.buffer, out.byteOffset, IDENTIFY_SIZE);
  const O = SecondaryEntryOffset;
  out[0] = list.length;
  list.forEach((s, i) => {
    const e = SECONDARY_LIST_HEADER_SIZE + i * SECONDARY_ENTRY_SIZE;
    v.setUint16(e + O.SCID, checkU16('scid', s.scid), true);
    v.setUint16(e + O.PCID, checkU16('pcid', s.pcid), true);
    v.setUint8(e + O.SCS, s.online ? SCS_ONLINE : 0);
    v.setUint16(e + O.VFN, checkU16('vfNumber', s.vfNumber), true);
    v.setUint16(e + O.NVQ, checkU16('vq', s.vq), true);
    v.setUint16(e + O.NVI, checkU16('vi', s.vi), true);
  });
  return out;
}
