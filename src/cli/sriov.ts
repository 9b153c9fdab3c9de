/**
 * `homi sriov`: SR-IOV physical functions and their virtual functions.
 *   homi sriov status [--json] [--socket S]      what homid manages: PFs, secondary controllers, resources, holders
 *   homi sriov status --pf ADDR [--json]         one PF directly, through the kernel's admin passthrough (root)
 *   homi sriov enable --pf ADDR --vfs N          enable N VFs (driver autoprobe off, no namespace attached)
 *   homi sriov disable --pf ADDR                 every secondary offline, resources back, no VFs
 * The PF stays bound to the kernel's nvme driver throughout.
 */
import { join } from 'node:path';
import { HomidClient } from '../client/index.js';
import { SriovPf, pfStatusFields } from '../daemon/sriov.js';
import { KernelNvmeAdmin, kernelAdminChannel } from '../io/kernel-admin.js';
import type { SriovStatusResult } from '../ipc/messages.js';
import { normalizePciAddress } from '../pci/address.js';
import { pciFunction } from '../pci/discover.js';
import { renderTable } from '../util/table.js';
import { explainConnectError, homidSocket } from './status.js';
import { UsageError } from './errors.js';

type PfStatus = SriovStatusResult['pfs'][number];

export function formatSriov(pfs: readonly PfStatus[]): string {
  if (pfs.length === 0) return 'no SR-IOV physical function is managed (homid configuration: [[sriov]])';
  const out: string[] = [];
  for (const p of pfs) {
    out.push(`${p.name}: PF ${p.pf} (admin: ${p.admin})${p.error ? `: ERROR ${p.error}` : ''}`);
    if (p.error) {
      out.push('');
      continue;
    }
    out.push(
      `  VFs ${p.numVfs} of ${p.totalVfs} enabled; flexible VQ ${p.vqAssigned} of ${p.vqFlexible} assigned (at most ${p.vqMaxPerVf} per VF); ` +
        `flexible VI ${p.viAssigned} of ${p.viFlexible} assigned (at most ${p.viMaxPerVf} per VF)`,
    );
    out.push(
      renderTable(
        ['scid', 'vf', 'address', 'driver', 'state', 'vq', 'vi', 'namespaces', 'holder'],
        p.secondaries.map((s) => [
          String(s.scid),
          String(s.vfNumber),
          s.address ?? '-',
          s.driver ?? '-',
          s.online ? 'online' : 'offline',
          String(s.vq),
          String(s.vi),
          s.nsids.length > 0 ? s.nsids.join(',') : '-',
          s.holder ? `client ${s.holder.client} (pid ${s.holder.pid}, uid ${s.holder.uid})` : '-',
        ]),
      ),
      '',
    );
  }
  return out.join('\n');
}

/** One PF through the kernel's admin passthrough of its controller. */
async function withPf<T>(pf: string, fn: (p: SriovPf) => Promise<T>): Promise<T> {
  const addr = normalizePciAddress(pf);
  const f = pciFunction(addr);
  if (f.sriovTotalVfs === null) throw new UsageError(`${addr} is not SR-IOV capable (no sriov_totalvfs)`);
  if (f.driver !== 'nvme' || f.nvmeControllers.length === 0)
    throw new UsageError(`${addr} is not bound to the kernel's nvme driver (driver: ${f.driver ?? 'none'}): homi sriov manages a PF the kernel keeps`);
  if (process.getuid?.() !== 0) throw new Error(`${addr}: SR-IOV management needs root (admin passthrough and sysfs writes)`);
  const admin = KernelNvmeAdmin.open(join('/dev', f.nvmeControllers[0]!));
  try {
    return await fn(new SriovPf(addr, kernelAdminChannel(admin)));
  } finally {
    admin.close();
  }
}

async function directStatus(pf: string): Promise<PfStatus> {
  return withPf(pf, async (p) => {
    const nsids = await p.mgr.namespaceIds();
    const st = await p.status(nsids);
    return { name: st.pf, pf: st.pf, admin: st.admin, error: null, ...pfStatusFields(st, nsids, () => null) };
  });
}

export async function sriovStatusCommand(o: { json?: boolean; socket?: string; pf?: string }): Promise<number> {
  let pfs: PfStatus[];
  if (o.pf !== undefined) {
    pfs = [await directStatus(o.pf)];
  } else {
    const socket = homidSocket(o.socket);
    let c: HomidClient;
    try {
      c = await HomidClient.connect(socket);
    } catch (e) {
      throw explainConnectError(socket, e);
    }
    try {
      pfs = (await c.sriovStatus()).pfs;
    } finally {
      c.close();
    }
  }
  process.stdout.write(o.json ? `${JSON.stringify({ pfs })}\n` : `${formatSriov(pfs)}\n`);
  return 0;
}

export async function sriovEnableCommand(o: { pf: string; vfs: string }): Promise<number> {
  if (!/^\d+$/.test(o.vfs) || Number(o.vfs) < 1) throw new UsageError(`--vfs must be a positive integer, got ${o.vfs}`);
  const n = Number(o.vfs);
  await withPf(o.pf, async (p) => {
    const st = await p.setVfCount(n);
    process.stdout.write(`${st.pf}: ${st.numVfs} VFs enabled (driver autoprobe off): ${st.vfs.map((v) => v.address).join(', ')}\n`);
  });
  return 0;
}

export async function sriovDisableCommand(o: { pf: string }): Promise<number> {
  await withPf(o.pf, async (p) => {
    const st = await p.setVfCount(0);
    process.stdout.write(`${st.pf}: no VFs enabled; every secondary controller offline with its resources returned\n`);
  });
  return 0;
}
