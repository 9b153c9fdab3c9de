// SR-IOV and namespace attachment on the wire: byte fixtures laid out by hand from the NVMe Base spec's figures
// (Primary Controller Capabilities, Secondary Controller List, Controller List; Virtualization Management and
// Namespace Attachment dwords), then decoded; encoders checked against the same bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AdminOpcode, Cns } from '../../src/nvme/opcodes.js';
import {
  decodeControllerList,
  decodePrimaryControllerCapabilities,
  decodeSecondaryControllerList,
  decodeVirtualizationManagement,
  encodeControllerList,
  encodePrimaryControllerCapabilities,
  encodeSecondaryControllerList,
  identifyAttachedControllers,
  identifyPrimaryControllerCapabilities,
  identifySecondaryControllerList,
  namespaceAttachment,
  NsAttachSel,
  virtualizationManagement,
  VirtMgmtAction,
  VirtResourceType,
} from '../../src/nvme/sriov.js';

const le16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v & 0xff;
  b[o + 1] = (v >> 8) & 0xff;
};
const le32 = (b: Uint8Array, o: number, v: number): void => {
  le16(b, o, v & 0xffff);
  le16(b, o + 2, v >>> 16);
};

test('opcodes and CNS values are the spec numbers', () => {
  assert.equal(AdminOpcode.VirtualizationManagement, 0x1c);
  assert.equal(AdminOpcode.NamespaceAttachment, 0x15);
  assert.equal(Cns.NamespaceAttachedControllerList, 0x12);
  assert.equal(Cns.ControllerList, 0x13);
  assert.equal(Cns.PrimaryControllerCapabilities, 0x14);
  assert.equal(Cns.SecondaryControllerList, 0x15);
  assert.deepEqual(VirtMgmtAction, { PrimaryFlexibleAllocation: 1, SecondaryOffline: 7, SecondaryAssign: 8, SecondaryOnline: 9 });
  assert.deepEqual(VirtResourceType, { Vq: 0, Vi: 1 });
});

test('Virtualization Management: ACT 3:0, RT 10:8, CNTLID 31:16 in CDW10; NR 15:0 in CDW11', () => {
  const s = virtualizationManagement(VirtMgmtAction.SecondaryAssign, 0x0102, VirtResourceType.Vi, 3);
  assert.equal(s.opcode, 0x1c);
  assert.equal(s.cdw10, 0x0102_0108);
  assert.equal(s.cdw11, 3);
  assert.deepEqual(decodeVirtualizationManagement(s.cdw10!, s.cdw11!), { action: 8, rt: 1, cntlid: 0x102, nr: 3 });
  assert.equal(virtualizationManagement(VirtMgmtAction.SecondaryOnline, 2).cdw10, 0x0002_0009);
  assert.equal(virtualizationManagement(VirtMgmtAction.SecondaryOffline, 1).cdw10, 0x0001_0007);
  assert.throws(() => virtualizationManagement(VirtMgmtAction.SecondaryAssign, 0x10000), RangeError);
  assert.throws(() => virtualizationManagement(VirtMgmtAction.SecondaryAssign, 1, VirtResourceType.Vq, 0x10000), RangeError);
});

test('Namespace Attachment: SEL in CDW10, one namespace only; the controller list is a count then ids', () => {
  const a = namespaceAttachment(1, NsAttachSel.Attach);
  assert.deepEqual([a.opcode, a.nsid, a.cdw10], [0x15, 1, 0]);
  assert.equal(namespaceAttachment(7, NsAttachSel.Detach).cdw10, 1);
  assert.throws(() => namespaceAttachment(0, NsAttachSel.Attach), RangeError);
  assert.throws(() => namespaceAttachment(0xffffffff, NsAttachSel.Attach), RangeError);
  // The opcode's data direction is host to controller (bits 1:0 = 01b).
  assert.equal(AdminOpcode.NamespaceAttachment & 3, 1);

  const want = new Uint8Array(4096);
  le16(want, 0, 3);
  le16(want, 2, 0x0001);
  le16(want, 4, 0x0002);
  le16(want, 6, 0xabcd);
  assert.deepEqual(encodeControllerList([1, 2, 0xabcd]), want);
  assert.deepEqual(decodeControllerList(want), [1, 2, 0xabcd]);
  assert.deepEqual(decodeControllerList(new Uint8Array(4096)), []);
  const bad = new Uint8Array(4096);
  le16(bad, 0, 2048);
  assert.throws(() => decodeControllerList(bad), /exceeds 2047/);
  assert.throws(() => encodeControllerList(new Array<number>(2048).fill(1)), RangeError);
});

test('Identify SQEs: CNS in CDW10 7:0, CNTID in 31:16, NSID for the attached-controller list', () => {
  assert.equal(identifyPrimaryControllerCapabilities().cdw10, 0x14);
  assert.equal(identifySecondaryControllerList(5).cdw10, 0x0005_0015);
  const a = identifyAttachedControllers(3, 0);
  assert.deepEqual([a.cdw10, a.nsid], [0x12, 3]);
});

test('Primary Controller Capabilities: every field at its offset', () => {
  const b = new Uint8Array(4096);
  le16(b, 0, 0x0041); // CNTLID
  le16(b, 2, 0x0007); // PORTID
  b[4] = 0x3; // CRT: VQ and VI
  le32(b, 32, 4); // VQFRT
  le32(b, 36, 2); // VQRFA
  le16(b, 40, 1); // VQRFAP
  le16(b, 42, 8); // VQPRT
  le16(b, 44, 3); // VQFRSM
  le16(b, 46, 1); // VQGRAN
  le32(b, 64, 6); // VIFRT
  le32(b, 68, 1); // VIRFA
  le16(b, 72, 0); // VIRFAP
  le16(b, 74, 5); // VIPRT
  le16(b, 76, 2); // VIFRSM
  le16(b, 78, 2); // VIGRAN
  const c = decodePrimaryControllerCapabilities(b);
  assert.deepEqual(c, {
    cntlid: 0x41,
    portId: 7,
    supportsVq: true,
    supportsVi: true,
    vqFlexibleTotal: 4,
    vqFlexibleAssigned: 2,
    vqFlexibleAllocatedPrimary: 1,
    vqPrivate: 8,
    vqMaxPerSecondary: 3,
    vqGranularity: 1,
    viFlexibleTotal: 6,
    viFlexibleAssigned: 1,
    viFlexibleAllocatedPrimary: 0,
    viPrivate: 5,
    viMaxPerSecondary: 2,
    viGranularity: 2,
  });
  assert.deepEqual(encodePrimaryControllerCapabilities(c), b);
  b[4] = 0x1;
  assert.equal(decodePrimaryControllerCapabilities(b).supportsVi, false);
  assert.throws(() => decodePrimaryControllerCapabilities(new Uint8Array(100)), RangeError);
});

test('Secondary Controller List: NUMID in byte 0, 32-byte entries from byte 32', () => {
  const b = new Uint8Array(4096);
  b[0] = 2;
  // entry 0: SCID 2, PCID 1, online, VFN 1, NVQ 2, NVI 1
  le16(b, 32, 2);
  le16(b, 34, 1);
  b[36] = 1;
  le16(b, 40, 1);
  le16(b, 42, 2);
  le16(b, 44, 1);
  // entry 1: SCID 3, PCID 1, offline, VFN 2, nothing assigned; reserved bits of SCS set (ignored)
  le16(b, 64, 3);
  le16(b, 66, 1);
  b[68] = 0xfe;
  le16(b, 72, 2);
  const l = decodeSecondaryControllerList(b);
  assert.deepEqual(l, [
    { scid: 2, pcid: 1, online: true, vfNumber: 1, vq: 2, vi: 1 },
    { scid: 3, pcid: 1, online: false, vfNumber: 2, vq: 0, vi: 0 },
  ]);
  b[68] = 0;
  assert.deepEqual(encodeSecondaryControllerList(l), b);
  const over = new Uint8Array(4096);
  over[0] = 128;
  assert.throws(() => decodeSecondaryControllerList(over), /exceeds 127/);
});
