/**
 * SR-IOV management of a primary controller (the physical function), over one admin interface with two
 * implementations: HOMI's own admin queue (a live Controller: `controllerAdminCommandChannel`) and the kernel's admin
 * passthrough when the kernel keeps the PF (src/io/kernel-admin.ts, `KernelNvmeAdmin`). What it does:
 * read the primary controller's capabilities (Identify CNS 14h) and the secondary controller list (CNS 15h),
 * assign and release flexible VQ / VI resources and take secondary controllers online and offline
 * (Virtualization Management), attach and detach namespaces (Namespace Attachment with a controller list), and
 * plan an assignment against what the controller says is free (`planSecondaryAssignment`, pure).
 */
import { Cns, IDENTIFY_SIZE } from '../nvme/opcodes.js';
import { identify } from '../nvme/commands.js';
import { decodeActiveNamespaceList, NSID_LIST_MAX_ENTRIES } from '../nvme/namespace-list.js';
import type { Sqe } from '../nvme/sqe.js';
import {
  decodeControllerList,
  decodePrimaryControllerCapabilities,
  decodeSecondaryControllerList,
  encodeControllerList,
  identifyAttachedControllers,
  identifyControllerList,
  identifyPrimaryControllerCapabilities,
  identifySecondaryControllerList,
  namespaceAttachment,
  NsAttachSel,
  SECONDARY_LIST_MAX,
  CONTROLLER_LIST_MAX,
  virtualizationManagement,
  VirtMgmtAction,
  VirtResourceType,
  type PrimaryControllerCapabilities,
  type SecondaryController,
} from '../nvme/sriov.js';
import type { Controller } from './controller.js';

/** One admin command: its completion DW0 and the data read (empty when none). An error status throws. */
export interface AdminCommandChannel {
  /** What the commands go through, for messages: e.g. "/dev/nvme0 (kernel passthrough)". */
  readonly description: string;
  adminCommand(sqe: Sqe, data?: { read?: number; write?: Uint8Array }): Promise<{ result: number; data: Uint8Array }>;
}

/** HOMI's own admin queue of a live controller as an AdminCommandChannel. */
export function controllerAdminCommandChannel(c: Controller, description = 'HOMI admin queue'): AdminCommandChannel {
  return {
    description,
    async adminCommand(sqe, data = {}) {
      const len = data.write ? data.write.length : (data.read ?? 0);
      if (len === 0) return { result: (await c.admin(sqe)).result, data: new Uint8Array(0) };
      const dma = c.transport.dma;
      const buf = dma.alloc(len);
      try {
        if (data.write) buf.bytes.set(data.write);
        const completion = await c.admin(sqe, buf);
        return { result: completion.result, data: data.write ? new Uint8Array(0) : buf.bytes.slice(0, len) };
      } finally {
        dma.free(buf);
      }
    },
  };
}

/** Flexible resources of one secondary controller. */
export interface SecondaryResources {
  vq: number;
  vi: number;
}

/** A secondary controller needs at least this many VQ resources: its admin queue pair and one I/O queue pair. */
export const MIN_SECONDARY_VQ = 2;
/** ... and one interrupt resource (the admin queue's vector). */
export const MIN_SECONDARY_VI = 1;

export class SriovResourcesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SriovResourcesError';
  }
}

/** Flexible resources not assigned to any secondary controller (nor allocated to the primary). */
export function freeFlexibleResources(caps: PrimaryControllerCapabilities, secondaries: readonly SecondaryController[]): SecondaryResources {
  // VQRFA / VIRFA are the controller's own totals; the list is the cross-check (the larger wins: never overbook).
  const vqAssigned = Math.max(
    caps.vqFlexibleAssigned,
    secondaries.reduce((s, c) => s + c.vq, 0),
  );
  const viAssigned = Math.max(
    caps.viFlexibleAssigned,
    secondaries.reduce((s, c) => s + c.vi, 0),
  );
  return {
    vq: Math.max(0, caps.vqFlexibleTotal - caps.vqFlexibleAllocatedPrimary - vqAssigned),
    vi: Math.max(0, caps.viFlexibleTotal - caps.viFlexibleAllocatedPrimary - viAssigned),
  };
}

function roundUp(n: number, gran: number): number {
  return gran > 1 ? Math.ceil(n / gran) * gran : n;
}

export interface AssignmentPlan {
  /** The secondary controller to use. */
  secondary: SecondaryController;
  /** Resources to assign (after granularity), and what is free afterwards. */
  assign: SecondaryResources;
  freeAfter: SecondaryResources;
}

/**
 * Choose a secondary controller (offline, no resources, not in `busy` by SCID, and with its VF enabled when
 * `vfsEnabled` is given) and the resources to give it. Throws SriovResourcesError with the reason when the
 * request cannot be met (too few or too many resources for one secondary, none free, no secondary free).
 */
export function planSecondaryAssignment(
  caps: PrimaryControllerCapabilities,
  secondaries: readonly SecondaryController[],
  want: SecondaryResources,
  opts: { busy?: ReadonlySet<number>; vfsEnabled?: number; preferVfNumber?: number } = {},
): AssignmentPlan {
  if (!caps.supportsVq || !caps.supportsVi) throw new SriovResourcesError(`the controller does not support flexible ${!caps.supportsVq ? 'VQ' : 'VI'} resources`);
  if (!Number.isInteger(want.vq) || want.vq < MIN_SECONDARY_VQ)
    throw new SriovResourcesError(`a virtual function needs at least ${MIN_SECONDARY_VQ} VQ resources (its admin and one I/O queue), asked for ${want.vq}`);
  if (!Number.isInteger(want.vi) || want.vi < MIN_SECONDARY_VI) throw new SriovResourcesError(`a virtual function needs at least ${MIN_SECONDARY_VI} VI resource, asked for ${want.vi}`);
  const assign = { vq: roundUp(want.vq, caps.vqGranularity), vi: roundUp(want.vi, caps.viGranularity) };
  if (caps.vqMaxPerSecondary > 0 && assign.vq > caps.vqMaxPerSecondary)
    throw new SriovResourcesError(`${assign.vq} VQ resources exceed the ${caps.vqMaxPerSecondary} one secondary controller may have`);
  if (caps.viMaxPerSecondary > 0 && assign.vi > caps.viMaxPerSecondary)
    throw new SriovResourcesError(`${assign.vi} VI resources exceed the ${caps.viMaxPerSecondary} one secondary controller may have`);
  const free = freeFlexibleResources(caps, secondaries);
  if (assign.vq > free.vq || assign.vi > free.vi) {
    throw new SriovResourcesError(`resources exhausted: asked for ${assign.vq} VQ and ${assign.vi} VI, ${free.vq} VQ and ${free.vi} VI are free`);
  }
  const candidates = secondaries.filter(
    (s) => !s.online && s.vq === 0 && s.vi === 0 && s.vfNumber > 0 && !(opts.busy?.has(s.scid) ?? false) && (opts.vfsEnabled === undefined || s.vfNumber <= opts.vfsEnabled),
  );
  const pick = candidates.find((s) => s.vfNumber === opts.preferVfNumber) ?? candidates.sort((a, b) => a.vfNumber - b.vfNumber)[0];
  if (!pick) throw new SriovResourcesError(`no free secondary controller: all ${secondaries.length} are online, hold resources or are leased`);
  return { secondary: pick, assign, freeAfter: { vq: free.vq - assign.vq, vi: free.vi - assign.vi } };
}

/** SR-IOV management commands on one primary controller. */
export class SriovManager {
  constructor(readonly channel: AdminCommandChannel) {}

  async primaryCapabilities(): Promise<PrimaryControllerCapabilities> {
    return decodePrimaryControllerCapabilities((await this.channel.adminCommand(identifyPrimaryControllerCapabilities(), { read: IDENTIFY_SIZE })).data);
  }

  /** Every secondary controller (CNS 15h, following the list past 127 entries). */
  async secondaryControllers(): Promise<SecondaryController[]> {
    const all: SecondaryController[] = [];
    let from = 0;
    for (;;) {
      const page = decodeSecondaryControllerList((await this.channel.adminCommand(identifySecondaryControllerList(from), { read: IDENTIFY_SIZE })).data);
      all.push(...page);
      if (page.length < SECONDARY_LIST_MAX) return all;
      from = page[page.length - 1]!.scid + 1;
    }
  }

  async secondary(scid: number): Promise<SecondaryController> {
    const s = (await this.secondaryControllers()).find((c) => c.scid === scid);
    if (!s) throw new Error(`${this.channel.description}: no secondary controller ${scid}`);
    return s;
  }

  /** Assign `nr` flexible resources of type `rt` to an offline secondary (0 releases them); returns NRM (DW0). */
  async assign(scid: number, rt: 'vq' | 'vi', nr: number): Promise<number> {
    const t = rt === 'vq' ? VirtResourceType.Vq : VirtResourceType.Vi;
    return (await this.channel.adminCommand(virtualizationManagement(VirtMgmtAction.SecondaryAssign, scid, t, nr))).result;
  }

  async online(scid: number): Promise<void> {
    await this.channel.adminCommand(virtualizationManagement(VirtMgmtAction.SecondaryOnline, scid));
  }

  async offline(scid: number): Promise<void> {
    await this.channel.adminCommand(virtualizationManagement(VirtMgmtAction.SecondaryOffline, scid));
  }

  /** Offline (if online), then assign exactly `r`. */
  async setResources(scid: number, r: SecondaryResources): Promise<void> {
    const s = await this.secondary(scid);
    if (s.online) await this.offline(scid);
    if (s.vq !== r.vq) await this.assign(scid, 'vq', r.vq);
    if (s.vi !== r.vi) await this.assign(scid, 'vi', r.vi);
  }

  /** Offline (if online) and give every flexible resource back to the pool. */
  async release(scid: number): Promise<void> {
    await this.setResources(scid, { vq: 0, vi: 0 });
  }

  async attachNamespace(nsid: number, controllers: readonly number[]): Promise<void> {
    await this.channel.adminCommand(namespaceAttachment(nsid, NsAttachSel.Attach), { write: encodeControllerList(controllers) });
  }

  async detachNamespace(nsid: number, controllers: readonly number[]): Promise<void> {
    await this.channel.adminCommand(namespaceAttachment(nsid, NsAttachSel.Detach), { write: encodeControllerList(controllers) });
  }

  /** The primary's active namespaces (CNS 02h). */
  async namespaceIds(): Promise<number[]> {
    const all: number[] = [];
    let after = 0;
    for (;;) {
      const ids = decodeActiveNamespaceList((await this.channel.adminCommand(identify(Cns.ActiveNamespaceList, after, 0), { read: IDENTIFY_SIZE })).data);
      all.push(...ids);
      if (ids.length < NSID_LIST_MAX_ENTRIES) return all;
      after = ids[ids.length - 1]!;
    }
  }

  /** The namespaces (of `nsids`, default the primary's) attached to controller `cntlid`. */
  async namespacesOf(cntlid: number, nsids?: readonly number[]): Promise<number[]> {
    const out: number[] = [];
    for (const n of nsids ?? (await this.namespaceIds())) if ((await this.attachedControllers(n)).includes(cntlid)) out.push(n);
    return out;
  }

  /**
   * Make `cntlid`'s attachments among the primary's namespaces exactly `wanted` (a controller may come up with
   * every shared namespace attached, as QEMU's VFs do): detach the others, attach the missing ones.
   */
  async setAttachments(cntlid: number, wanted: readonly number[]): Promise<void> {
    const all = await this.namespaceIds();
    const missing = wanted.filter((n) => !all.includes(n));
    if (missing.length > 0) throw new Error(`${this.channel.description}: no namespace ${missing.join(', ')} (the primary has ${all.join(', ') || 'none'})`);
    const have = await this.namespacesOf(cntlid, all);
    for (const n of have) if (!wanted.includes(n)) await this.detachNamespace(n, [cntlid]);
    for (const n of wanted) if (!have.includes(n)) await this.attachNamespace(n, [cntlid]);
  }

  /** Controllers attached to namespace `nsid` (CNS 12h). */
  async attachedControllers(nsid: number): Promise<number[]> {
    return this.controllerList((from) => identifyAttachedControllers(nsid, from));
  }

  /** Every controller of the subsystem (CNS 13h). */
  async subsystemControllers(): Promise<number[]> {
    return this.controllerList((from) => identifyControllerList(from));
  }

  private async controllerList(sqe: (from: number) => Sqe): Promise<number[]> {
    const all: number[] = [];
    let from = 0;
    for (;;) {
      const page = decodeControllerList((await this.channel.adminCommand(sqe(from), { read: IDENTIFY_SIZE })).data);
      all.push(...page);
      if (page.length < CONTROLLER_LIST_MAX) return all;
      from = page[page.length - 1]! + 1;
    }
  }
}
