/**
 * homid's SR-IOV virtual functions: the configured physical functions ([[sriov]]), each a VF pool (sriov.ts)
 * whose PF stays with the kernel's nvme driver (admin commands through its passthrough), and the VF leases.
 *
 * A lease: provision a secondary controller (resources, online, namespaces), bind its VF to vfio-pci
 * (driver_override; VF driver autoprobe is off), open the VFIO container (group attached, type1 IOMMU set),
 * group and device, and hand the three descriptors to the client, which drives the VF with HOMI's driver.
 *
 * Reclaim (closeVf, or the client went away): take the secondary offline first (the VF's controller stops: no
 * more I/O to the shared namespaces, whatever the client still holds), close homid's descriptors, unbind the VF
 * from vfio-pci off the main thread (vfio-pci's unbind waits until every process has closed the device: a
 * client that keeps its descriptors must not stall homid; the VF stays out of the pool until it is unbound),
 * reset it, detach its namespaces and return its resources.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { SriovResourcesError } from '../driver/sriov.js';
import { KernelNvmeAdmin, kernelAdminChannel } from '../io/kernel-admin.js';
import { HomidErrorCode } from '../ipc/errors.js';
import { pciFunction } from '../pci/discover.js';
import { bindTo, DriverBinding } from '../pci/bind.js';
import { sriovState } from '../pci/sriov.js';
import { deviceDir, driverDir, linkName, sysPaths, type SysPathOptions } from '../pci/sysfs.js';
import { VfioDevice } from '../pci/vfio.js';
import type { SriovConfig } from './config.js';
import { HomidError } from './errors.js';
import { SriovPf, type ProvisionedVf } from './sriov.js';

export interface VfLease {
  readonly id: number;
  readonly client: number;
  readonly pf: string;
  readonly vf: ProvisionedVf;
  readonly iommuGroup: number;
  readonly createdAt: number;
  binding: DriverBinding | null;
  vfio: VfioDevice | null;
}

export interface ManagedPf {
  readonly config: SriovConfig;
  pool: SriovPf | null;
  admin: KernelNvmeAdmin | null;
  error: string | null;
  /** VFs reclaimed whose unbind has not finished: out of the pool until it does (SCID). */
  readonly quarantined: Set<number>;
}

export interface VfLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** How long a reclaim waits for vfio-pci to let go of a VF before leaving it quarantined. */
export const VF_UNBIND_TIMEOUT_MS = 30_000;

export class VfService {
  readonly pfs = new Map<string, ManagedPf>();

  constructor(
    private readonly log: VfLogger,
    private readonly sys: SysPathOptions = {},
  ) {}

  /**
   * Open every configured PF's admin passthrough; failures are reported per PF (others are served). What an
   * earlier homid left behind (it was killed: no reclaim ran) is taken back: VFs bound to vfio-pci through a
   * driver_override are unbound, secondaries offline, namespaces detached, resources returned.
   */
  async start(configs: readonly SriovConfig[]): Promise<void> {
    for (const c of configs) {
      const m: ManagedPf = { config: c, pool: null, admin: null, error: null, quarantined: new Set() };
      this.pfs.set(c.name, m);
      try {
        const f = pciFunction(c.pf, this.sys);
        if (f.sriovTotalVfs === null) throw new Error(`${c.pf} is not SR-IOV capable (no sriov_totalvfs)`);
        if (f.driver !== 'nvme' || f.nvmeControllers.length === 0) throw new Error(`${c.pf} is not bound to the kernel's nvme driver (driver: ${f.driver ?? 'none'}); admin = "kernel" needs it there`);
        const dev = join(sysPaths(this.sys).dev, f.nvmeControllers[0]!);
        m.admin = KernelNvmeAdmin.open(dev, this.sys);
        m.pool = new SriovPf(c.pf, kernelAdminChannel(m.admin), this.sys);
        await this.recoverStale(m, m.pool);
        this.log.info({ pf: c.name, address: c.pf, admin: dev, totalVfs: f.sriovTotalVfs }, 'SR-IOV physical function managed');
      } catch (e) {
        m.error = (e as Error).message;
        m.admin?.close();
        m.admin = null;
        m.pool = null;
        this.log.error({ pf: c.name, address: c.pf, err: m.error }, 'SR-IOV physical function not available');
      }
    }
  }

  private async recoverStale(m: ManagedPf, pool: SriovPf): Promise<void> {
    const st = sriovState(m.config.pf, this.sys);
    for (const s of await pool.mgr.secondaryControllers()) {
      const vf = st.vfs.find((v) => v.index === s.vfNumber - 1);
      const attached = vf ? await pool.mgr.namespacesOf(s.scid) : [];
      if (!s.online && s.vq === 0 && s.vi === 0 && attached.length === 0 && (vf?.driver ?? null) === null) continue;
      this.log.warn({ pf: m.config.name, scid: s.scid, vf: vf?.address, online: s.online, vq: s.vq, vi: s.vi, driver: vf?.driver ?? null }, 'taking back a VF an earlier homid left provisioned');
      if (s.online) await pool.mgr.offline(s.scid);
      if (vf && vf.driver === 'vfio-pci' && vf.driverOverride === 'vfio-pci') {
        const b = new DriverBinding(sysPaths(this.sys), vf.address, null, null, 'vfio-pci', true); // no exit hook: the unbind below is the attempt
        if (!(await this.unbind(b, vf.address))) throw new Error(`${vf.address} is still held through vfio-pci (a process from before keeps it open)`);
      }
      if (attached.length > 0) await pool.mgr.setAttachments(s.scid, []);
      await pool.mgr.release(s.scid);
    }
  }

  private pool(name: string): { m: ManagedPf; pool: SriovPf } {
    const m = this.pfs.get(name);
    if (!m) throw new HomidError(HomidErrorCode.NoSriov, `no SR-IOV physical function '${name}' is configured (configured: ${[...this.pfs.keys()].join(', ') || 'none'})`);
    if (!m.pool) throw new HomidError(HomidErrorCode.NoSriov, `SR-IOV physical function '${name}' is not available: ${m.error ?? 'not started'}`);
    return { m, pool: m.pool };
  }

  /** Provision a VF, bind it to vfio-pci and open its VFIO descriptors. Nothing stays changed on failure. */
  async open(id: number, client: number, req: { pf: string; vq: number; vi: number; nsids: number[] }): Promise<VfLease> {
    const { m, pool } = this.pool(req.pf);
    const p = sysPaths(this.sys);
    if (!existsSync(driverDir(p, 'vfio-pci'))) throw new HomidError(HomidErrorCode.NoVfio, `cannot hand out a VF: vfio-pci is not loaded (modprobe vfio-pci)`);
    let vf: ProvisionedVf;
    try {
      vf = await pool.provision(req, { vfsWanted: m.config.vfs, busy: m.quarantined });
    } catch (e) {
      if (e instanceof SriovResourcesError) throw new HomidError(HomidErrorCode.ResourcesExhausted, `SR-IOV physical function '${req.pf}': ${e.message}`);
      throw e;
    }
    const lease: VfLease = { id, client, pf: req.pf, vf, iommuGroup: -1, createdAt: Date.now(), binding: null, vfio: null };
    try {
      const f = pciFunction(vf.address, p);
      if (f.iommuGroup === null) throw new HomidError(HomidErrorCode.NoVfio, `VF ${vf.address} has no IOMMU group: VFIO needs an enabled IOMMU (e.g. intel_iommu=on)`);
      (lease as { iommuGroup: number }).iommuGroup = f.iommuGroup;
      lease.binding = bindTo(vf.address, 'vfio-pci', p);
      const groupDev = join(p.dev, 'vfio', String(f.iommuGroup));
      for (let i = 0; i < 200 && !existsSync(groupDev); i++) await new Promise((r) => setTimeout(r, 5));
      lease.vfio = VfioDevice.open(p, vf.address, f.iommuGroup);
      return lease;
    } catch (e) {
      const errs = await this.reclaim(lease);
      if (errs.length > 0) (e as Error).message += `; undoing it: ${errs.join('; ')}`;
      throw e;
    }
  }

  /** Take a VF lease back (see the file's comment). Returns the steps that failed (empty: all done). */
  async reclaim(l: VfLease): Promise<string[]> {
    const m = this.pfs.get(l.pf);
    const pool = m?.pool;
    if (!m || !pool) return [`physical function '${l.pf}' is gone`];
    const errs: string[] = [];
    try {
      if ((await pool.mgr.secondary(l.vf.scid)).online) await pool.mgr.offline(l.vf.scid);
    } catch (e) {
      errs.push(`offline secondary ${l.vf.scid}: ${(e as Error).message}`);
    }
    l.vfio?.close();
    l.vfio = null;
    let unbound = true;
    if (l.binding) {
      const b = l.binding;
      l.binding = null;
      unbound = await this.unbind(b, l.vf.address);
      if (!unbound) {
        m.quarantined.add(l.vf.scid);
        this.watchQuarantined(m, l.vf.scid, l.vf.address);
        errs.push(`${l.vf.address}: vfio-pci did not let go within ${VF_UNBIND_TIMEOUT_MS} ms (a process still holds the device); the VF stays out of the pool until it does`);
      }
    }
    const rest = await pool.reclaim(l.vf.scid, { reset: unbound });
    errs.push(...rest);
    return errs;
  }

  /**
   * Put the VF's binding back (no driver, driver_override cleared) without blocking the main thread: the
   * unbind runs in a child process, for up to VF_UNBIND_TIMEOUT_MS (then the VF is quarantined and watched).
   */
  private async unbind(b: DriverBinding, address: string): Promise<boolean> {
    const p = sysPaths(this.sys);
    const dir = deviceDir(p, address);
    if (this.sys.write) {
      // a fake sysfs (tests): its kernel applies writes synchronously
      b.restore();
      return true;
    }
    const ok = await new Promise<boolean>((resolve) => {
      const script = 'if [ -e "$2/driver" ]; then printf "%s" "$1" > "$2/driver/unbind"; fi; printf "\\n" > "$2/driver_override"';
      execFile('/bin/sh', ['-c', script, 'sh', address, dir], { timeout: VF_UNBIND_TIMEOUT_MS }, (err) => resolve(err === null));
    });
    if (!ok || linkName(join(dir, 'driver')) !== null) return false;
    b.restore(); // unbound already: clears driver_override and the exit hook, writes no unbind
    return true;
  }

  private readonly watchers = new Set<NodeJS.Timeout>();

  /** Back into the pool once the kernel has let go of the VF (its last holder closed it). */
  private watchQuarantined(m: ManagedPf, scid: number, address: string): void {
    const dir = deviceDir(sysPaths(this.sys), address);
    const t = setInterval(() => {
      if (linkName(join(dir, 'driver')) !== null) return;
      clearInterval(t);
      this.watchers.delete(t);
      m.quarantined.delete(scid);
      this.log.info({ pf: m.config.name, scid, vf: address }, 'a quarantined VF was released by its last holder; back in the pool');
    }, 1000);
    t.unref();
    this.watchers.add(t);
  }

  /** Disable the VFs homid enabled and close the admin passthroughs (homid stopping; leases reclaimed first). */
  async stop(): Promise<void> {
    for (const t of this.watchers) clearInterval(t);
    this.watchers.clear();
    for (const m of this.pfs.values()) {
      // a VF still bound (a holder that never let go) would make sriov_numvfs = 0 wait for it: leave the VFs then
      const bound = m.pool ? sriovState(m.config.pf, this.sys).vfs.filter((v) => v.driver !== null) : [];
      if (bound.length > 0) this.log.warn({ pf: m.config.name, bound: bound.map((v) => `${v.address} (${v.driver})`) }, 'VFs still bound to a driver: leaving the VFs enabled');
      if (m.pool && m.pool.provisioned.length === 0 && bound.length === 0) {
        try {
          await m.pool.setVfCount(0);
        } catch (e) {
          this.log.warn({ pf: m.config.name, err: (e as Error).message }, 'disabling the VFs failed');
        }
      }
      m.admin?.close();
      m.admin = null;
      m.pool = null;
    }
  }
}
