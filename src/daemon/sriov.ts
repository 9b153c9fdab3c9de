/**
 * homid's SR-IOV control of one physical function: the VF pool. The PF stays with whoever owns it (the
 * kernel's nvme driver: admin commands through its passthrough; or HOMI: its own admin queue) and this class
 * only speaks through the driver core's AdminCommandChannel (src/driver/sriov.ts) and sysfs (src/pci/sriov.ts).
 *
 * provision(): choose a free secondary controller (planned against the controller's own lists), assign its VQ
 * and VI resources, make sure its VF is enabled (driver autoprobe off), bring it online, attach the namespaces.
 * reclaim(): the reverse, each step attempted even when an earlier one failed (and the failures reported):
 * function reset, offline, detach the namespaces, resources back to the pool. The caller binds the VF to
 * vfio-pci (driver_override) and puts the binding back before reclaim.
 */
import { planSecondaryAssignment, SriovManager, type AdminCommandChannel, type SecondaryResources } from '../driver/sriov.js';
import type { PrimaryControllerCapabilities, SecondaryController } from '../nvme/sriov.js';
import { enableVfs, resetFunction, sriovState, type SriovState } from '../pci/sriov.js';
import type { SysPathOptions } from '../pci/sysfs.js';
import type { SriovStatusResult } from '../ipc/messages.js';

export interface VfRequest extends SecondaryResources {
  /** Namespaces to attach to the VF's controller. */
  nsids: number[];
}

export interface ProvisionedVf {
  /** VF number (1-based, the secondary controller entry's VFN); virtfn index vfNumber - 1. */
  vfNumber: number;
  /** The secondary controller's id (the VF controller's CNTLID). */
  scid: number;
  /** The VF's PCI address. */
  address: string;
  resources: SecondaryResources;
  nsids: number[];
}

export interface SriovPfStatus {
  pf: string;
  admin: string;
  caps: PrimaryControllerCapabilities;
  secondaries: SecondaryController[];
  sysfs: SriovState;
  /** Controllers attached to each namespace asked about. */
  attachments: Record<number, number[]>;
}

/** One secondary controller's holder, as status shows it (null: not handed out, or not for this viewer). */
export type VfHolder = SriovStatusResult['pfs'][number]['secondaries'][number]['holder'];

/**
 * A PF's status in the wire's shape (what `homi sriov` prints), less its name, address, admin channel and error:
 * resources from the primary controller's capabilities, and per secondary controller its VF (address, driver
 * from sysfs), state, resources, holder and the namespaces (of `nsids`) attached to it.
 */
export function pfStatusFields(st: SriovPfStatus, nsids: readonly number[], holder: (scid: number) => VfHolder): Omit<SriovStatusResult['pfs'][number], 'name' | 'pf' | 'admin' | 'error'> {
  const { caps, sysfs, attachments } = st;
  return {
    totalVfs: sysfs.totalVfs,
    numVfs: sysfs.numVfs,
    vqFlexible: caps.vqFlexibleTotal,
    vqAssigned: caps.vqFlexibleAssigned,
    viFlexible: caps.viFlexibleTotal,
    viAssigned: caps.viFlexibleAssigned,
    vqMaxPerVf: caps.vqMaxPerSecondary,
    viMaxPerVf: caps.viMaxPerSecondary,
    secondaries: st.secondaries.map((c) => {
      const vf = sysfs.vfs.find((v) => v.index === c.vfNumber - 1);
      return {
        scid: c.scid,
        vfNumber: c.vfNumber,
        online: c.online,
        vq: c.vq,
        vi: c.vi,
        address: vf?.address ?? null,
        driver: vf?.driver ?? null,
        holder: holder(c.scid),
        nsids: nsids.filter((n) => attachments[n]?.includes(c.scid)),
      };
    }),
  };
}

export class SriovPf {
  readonly mgr: SriovManager;
  /** SCIDs provisioned through this object and not reclaimed. */
  private readonly held = new Map<number, ProvisionedVf>();

  constructor(
    readonly pf: string,
    channel: AdminCommandChannel,
    private readonly sys: SysPathOptions = {},
  ) {
    this.mgr = new SriovManager(channel);
  }

  get provisioned(): ProvisionedVf[] {
    return [...this.held.values()];
  }

  async status(nsids: readonly number[] = []): Promise<SriovPfStatus> {
    const attachments: Record<number, number[]> = {};
    for (const n of nsids) attachments[n] = await this.mgr.attachedControllers(n);
    return {
      pf: this.pf,
      admin: this.mgr.channel.description,
      caps: await this.mgr.primaryCapabilities(),
      secondaries: await this.mgr.secondaryControllers(),
      sysfs: sriovState(this.pf, this.sys),
      attachments,
    };
  }

  /** Enable `count` VFs (autoprobe off). Count 0 first takes every secondary offline and releases its resources. */
  async setVfCount(count: number): Promise<SriovState> {
    if (count === 0) {
      if (this.held.size > 0) throw new Error(`${this.pf}: ${this.held.size} VFs are handed out; reclaim them first`);
      for (const s of await this.mgr.secondaryControllers()) if (s.online || s.vq > 0 || s.vi > 0) await this.mgr.release(s.scid);
    }
    const st = enableVfs(this.pf, count, { ...this.sys, force: count === 0 });
    if (count > 0) await this.detachIdle();
    return st;
  }

  /** New VFs may come up with shared namespaces attached: detach every namespace from secondaries not handed out. */
  private async detachIdle(): Promise<void> {
    const enabled = sriovState(this.pf, this.sys).numVfs;
    for (const s of await this.mgr.secondaryControllers()) if (!this.held.has(s.scid) && s.vfNumber > 0 && s.vfNumber <= enabled) await this.mgr.setAttachments(s.scid, []);
  }

  /**
   * Provision one VF. `vfsWanted`: how many VFs to enable when none are (default: all the PF supports).
   * Throws SriovResourcesError when the controller has no room (nothing changed then).
   */
  async provision(req: VfRequest, opts: { vfsWanted?: number; preferVfNumber?: number; busy?: ReadonlySet<number> } = {}): Promise<ProvisionedVf> {
    let state = sriovState(this.pf, this.sys);
    const caps = await this.mgr.primaryCapabilities();
    const list = await this.mgr.secondaryControllers();
    const plan = planSecondaryAssignment(caps, list, req, {
      busy: new Set([...this.held.keys(), ...(opts.busy ?? [])]),
      vfsEnabled: state.numVfs > 0 ? state.numVfs : undefined,
      preferVfNumber: opts.preferVfNumber,
    });
    const scid = plan.secondary.scid;
    const vf: ProvisionedVf = { vfNumber: plan.secondary.vfNumber, scid, address: '', resources: plan.assign, nsids: [] };
    this.held.set(scid, vf);
    try {
      await this.mgr.setResources(scid, plan.assign);
      if (state.numVfs === 0) {
        state = enableVfs(this.pf, opts.vfsWanted ?? state.totalVfs, this.sys);
        await this.detachIdle();
      }
      const pci = state.vfs.find((v) => v.index === plan.secondary.vfNumber - 1);
      if (!pci) throw new Error(`${this.pf}: VF ${plan.secondary.vfNumber} is not enabled (${state.numVfs} VFs are)`);
      vf.address = pci.address;
      // Exactly the namespaces asked for, before the secondary can be enabled by anyone.
      vf.nsids = [...req.nsids];
      await this.mgr.setAttachments(scid, req.nsids);
      await this.mgr.online(scid);
      return { ...vf, nsids: [...vf.nsids] };
    } catch (e) {
      const errs = await this.reclaim(scid, { reset: false });
      if (errs.length > 0) (e as Error).message += `; undoing it failed too: ${errs.join('; ')}`;
      throw e;
    }
  }

  /**
   * Take a VF back: function reset (unless `reset: false`), offline, detach its namespaces, resources back to
   * the pool. Every step is tried; returns the failures (empty: all done).
   */
  async reclaim(scid: number, opts: { reset?: boolean } = {}): Promise<string[]> {
    const vf = this.held.get(scid);
    const errs: string[] = [];
    const step = async (what: string, fn: () => unknown): Promise<void> => {
      try {
        await fn();
      } catch (e) {
        errs.push(`${what}: ${(e as Error).message}`);
      }
    };
    if (vf?.address && opts.reset !== false) await step(`reset ${vf.address}`, () => resetFunction(vf.address, this.sys));
    await step(`offline secondary ${scid}`, async () => {
      if ((await this.mgr.secondary(scid)).online) await this.mgr.offline(scid);
    });
    await step(`detach namespaces from ${scid}`, () => this.mgr.setAttachments(scid, []));
    await step(`release resources of ${scid}`, () => this.mgr.release(scid));
    if (errs.length === 0) this.held.delete(scid);
    return errs;
  }
}
