/**
 * A primary NVMe controller with SR-IOV, modelled from the spec for host tests (no VM): flexible VQ / VI pools,
 * secondary controllers (one per VF), Virtualization Management with the spec's command-specific errors,
 * Namespace Attachment with controller lists, and Identify CNS 02h / 12h / 14h / 15h answered with the encoders.
 * Plus a fake sysfs PF whose sriov_numvfs creates and removes VF functions (FakeSys) and, like QEMU, attaches
 * every shared namespace to a secondary whose VF appears.
 */
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AdminCommandChannel } from '../../src/driver/sriov.js';
import {
  decodeControllerList,
  encodeControllerList,
  encodePrimaryControllerCapabilities,
  encodeSecondaryControllerList,
  decodeVirtualizationManagement,
  VirtMgmtAction,
  type SecondaryController,
} from '../../src/nvme/sriov.js';
import { encodeActiveNamespaceList } from '../../src/nvme/namespace-list.js';
import { AdminOpcode, Cns } from '../../src/nvme/opcodes.js';
import { CommandSpecificStatus, Sct } from '../../src/nvme/status.js';
import { makeStatus } from '../../src/nvme/cqe.js';
import type { Sqe } from '../../src/nvme/sqe.js';
import { FakeSys } from '../pci/fake-sysfs.js';

export class FakeStatusError extends Error {
  constructor(
    readonly status: number,
    what: string,
  ) {
    super(`${what}: status 0x${status.toString(16)}`);
  }
}

const cs = (sc: number): number => makeStatus(Sct.CommandSpecific, sc);

export interface FakePrimaryOptions {
  vfs: number;
  vqFlexible: number;
  viFlexible: number;
  vqMaxPerSecondary?: number;
  viMaxPerSecondary?: number;
  nsids?: number[];
}

export class FakePrimary implements AdminCommandChannel {
  readonly description = 'fake primary controller';
  readonly cntlid = 1;
  readonly secondaries: SecondaryController[];
  /** nsid -> attached controller ids */
  readonly attached = new Map<number, Set<number>>();
  /** VFs enabled (set by the fake sysfs). */
  vfsEnabled = 0;
  readonly log: string[] = [];

  constructor(readonly o: FakePrimaryOptions) {
    this.secondaries = Array.from({ length: o.vfs }, (_, i) => ({ scid: this.cntlid + 1 + i, pcid: this.cntlid, online: false, vfNumber: i + 1, vq: 0, vi: 0 }));
    for (const n of o.nsids ?? [1]) this.attached.set(n, new Set([this.cntlid]));
  }

  assigned(): { vq: number; vi: number } {
    return { vq: this.secondaries.reduce((s, c) => s + c.vq, 0), vi: this.secondaries.reduce((s, c) => s + c.vi, 0) };
  }

  private caps(): Uint8Array {
    const a = this.assigned();
    return encodePrimaryControllerCapabilities({
      cntlid: this.cntlid,
      portId: 0,
      supportsVq: true,
      supportsVi: true,
      vqFlexibleTotal: this.o.vqFlexible,
      vqFlexibleAssigned: a.vq,
      vqFlexibleAllocatedPrimary: 0,
      vqPrivate: 2,
      vqMaxPerSecondary: this.o.vqMaxPerSecondary ?? this.o.vqFlexible,
      vqGranularity: 1,
      viFlexibleTotal: this.o.viFlexible,
      viFlexibleAssigned: a.vi,
      viFlexibleAllocatedPrimary: 0,
      viPrivate: 1,
      viMaxPerSecondary: this.o.viMaxPerSecondary ?? this.o.viFlexible,
      viGranularity: 1,
    });
  }

  /** VF `vfn` appeared: like QEMU, it comes up with every (shared) namespace attached. */
  vfAppeared(vfn: number): void {
    const s = this.secondaries.find((c) => c.vfNumber === vfn)!;
    for (const set of this.attached.values()) set.add(s.scid);
  }

  vfGone(vfn: number): void {
    const s = this.secondaries.find((c) => c.vfNumber === vfn)!;
    s.online = false;
    for (const set of this.attached.values()) set.delete(s.scid);
  }

  adminCommand(sqe: Sqe, data: { read?: number; write?: Uint8Array } = {}): Promise<{ result: number; data: Uint8Array }> {
    return new Promise((resolve) => resolve(this.exec(sqe, data)));
  }

  private exec(sqe: Sqe, data: { read?: number; write?: Uint8Array }): { result: number; data: Uint8Array } {
    const ok = (result = 0, bytes: Uint8Array = new Uint8Array(0)): { result: number; data: Uint8Array } => ({ result, data: bytes });
    if (sqe.opcode === AdminOpcode.Identify) {
      const cns = sqe.cdw10! & 0xff;
      const cntid = sqe.cdw10! >>> 16;
      const out = new Uint8Array(4096);
      if (cns === Cns.PrimaryControllerCapabilities) return ok(0, this.caps());
      if (cns === Cns.SecondaryControllerList) return ok(0, encodeSecondaryControllerList(this.secondaries.filter((s) => s.scid >= cntid)));
      if (cns === Cns.NamespaceAttachedControllerList) {
        const set = this.attached.get(sqe.nsid!);
        if (!set) throw new FakeStatusError(makeStatus(Sct.Generic, 0x0b), 'Identify 12h');
        return ok(0, encodeControllerList([...set].filter((c) => c >= cntid).sort((a, b) => a - b)));
      }
      if (cns === Cns.ActiveNamespaceList) {
        encodeActiveNamespaceList(
          [...this.attached.keys()].filter((n) => n > sqe.nsid!),
          out,
        );
        return ok(0, out);
      }
      throw new FakeStatusError(makeStatus(Sct.Generic, 0x02), `Identify CNS ${cns}`);
    }
    if (sqe.opcode === AdminOpcode.VirtualizationManagement) {
      const v = decodeVirtualizationManagement(sqe.cdw10!, sqe.cdw11 ?? 0);
      this.log.push(`virt act=${v.action} rt=${v.rt} cntlid=${v.cntlid} nr=${v.nr}`);
      const s = this.secondaries.find((c) => c.scid === v.cntlid);
      if (!s) throw new FakeStatusError(cs(CommandSpecificStatus.InvalidControllerIdentifier), 'virt');
      switch (v.action) {
        case VirtMgmtAction.SecondaryOffline:
          s.online = false;
          return ok();
        case VirtMgmtAction.SecondaryOnline:
          if (s.vq < 2 || s.vi < 1 || s.vfNumber > this.vfsEnabled) throw new FakeStatusError(cs(CommandSpecificStatus.InvalidSecondaryControllerState), 'online');
          s.online = true;
          return ok();
        case VirtMgmtAction.SecondaryAssign: {
          if (s.online) throw new FakeStatusError(cs(CommandSpecificStatus.InvalidSecondaryControllerState), 'assign');
          const a = this.assigned();
          const key = v.rt === 0 ? 'vq' : 'vi';
          const total = v.rt === 0 ? this.o.vqFlexible : this.o.viFlexible;
          const max = v.rt === 0 ? (this.o.vqMaxPerSecondary ?? total) : (this.o.viMaxPerSecondary ?? total);
          if (v.nr > max || v.nr > total - a[key] + s[key]) throw new FakeStatusError(cs(CommandSpecificStatus.InvalidNumberOfControllerResources), 'assign');
          s[key] = v.nr;
          return ok(v.nr);
        }
        default:
          throw new FakeStatusError(makeStatus(Sct.Generic, 0x02), `virt action ${v.action}`);
      }
    }
    if (sqe.opcode === AdminOpcode.NamespaceAttachment) {
      const set = this.attached.get(sqe.nsid!);
      if (!set) throw new FakeStatusError(makeStatus(Sct.Generic, 0x0b), 'attach');
      const ids = decodeControllerList(data.write!);
      const sel = sqe.cdw10! & 0xf;
      this.log.push(`${sel === 0 ? 'attach' : 'detach'} ns=${sqe.nsid} ${ids.join(',')}`);
      for (const id of ids) {
        const sec = this.secondaries.find((c) => c.scid === id);
        if (id !== this.cntlid && (!sec || sec.vfNumber > this.vfsEnabled)) throw new FakeStatusError(cs(CommandSpecificStatus.ControllerListInvalid), 'attach');
        if (sel === 0 && set.has(id)) throw new FakeStatusError(cs(CommandSpecificStatus.NamespaceAlreadyAttached), 'attach');
        if (sel === 1 && !set.has(id)) throw new FakeStatusError(cs(CommandSpecificStatus.NamespaceNotAttached), 'detach');
      }
      for (const id of ids)
        if (sel === 0) set.add(id);
        else set.delete(id);
      return ok();
    }
    throw new FakeStatusError(makeStatus(Sct.Generic, 0x01), `opcode ${sqe.opcode}`);
  }
}

export const PF = '0000:01:00.0';

/** A fake sysfs with an SR-IOV PF bound to nvme whose sriov_numvfs drives `ctrl`'s VFs. */
export function fakeSriovSys(ctrl: FakePrimary): FakeSys {
  const fs = new FakeSys();
  fs.addDevice({ address: PF, driver: 'nvme', sriovTotalVfs: ctrl.o.vfs, iommuGroup: 5 });
  fs.loadDriver('vfio-pci');
  writeFileSync(join(fs.devDir(PF), 'sriov_drivers_autoprobe'), '1\n');
  const base = fs.write.bind(fs);
  fs.write = (path: string, d: string): void => {
    if (path === join(fs.devDir(PF), 'sriov_numvfs')) {
      const n = Number(d.trim());
      fs.writes.push(`/bus/pci/devices/${PF}/sriov_numvfs <- ${n}`);
      if (n !== 0 && ctrl.vfsEnabled !== 0) throw Object.assign(new Error('EBUSY'), { code: 'EBUSY' });
      for (let i = 0; i < ctrl.vfsEnabled; i++) {
        const a = `0000:01:00.${i + 1}`;
        rmSync(join(fs.devDir(PF), `virtfn${i}`));
        rmSync(fs.devDir(a), { recursive: true, force: true });
        ctrl.vfGone(i + 1);
      }
      ctrl.vfsEnabled = n;
      for (let i = 0; i < n; i++) {
        const a = `0000:01:00.${i + 1}`;
        fs.addDevice({ address: a, physfn: PF });
        writeFileSync(join(fs.devDir(a), 'reset'), '');
        symlinkSync(`../${a}`, join(fs.devDir(PF), `virtfn${i}`));
        ctrl.vfAppeared(i + 1);
      }
      writeFileSync(path, `${n}\n`);
      return;
    }
    base(path, d);
  };
  mkdirSync(join(fs.sys, 'kernel'), { recursive: true });
  return fs;
}
