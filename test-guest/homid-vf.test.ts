// homid handing out SR-IOV virtual functions, run INSIDE the VM harness's guest. The PF stays with the kernel's
// nvme driver, an ext4 file system on its namespace mounted; homid ([[sriov]] pf0, admin through the kernel's
// passthrough) provisions VFs for client processes, which drive them with HOMI's driver through the VFIO
// descriptors homid passes. A client killed holding a VF has it reclaimed (offline, unbound, reset, namespaces
// detached, resources back) and the next client gets it; refusals for another uid and over the class budget;
// `homi sriov`'s view (sriovStatus) agrees with the controller's own secondary controller list; homid's stop
// leaves the PF with the kernel and no VFs.
//
//   node dist/src/vm/cli.js run --iommu --modules nvme,vfio-pci,vfio_iommu_type1,ext4 --hugepages 64 \
//     --nvme serial=HOMI-SRIOV,qpairs=6,msix=4,vfs=2,vq=4,vi=2,ns=16M,shared=1 -- node --test dist/test-guest/homid-vf.test.js
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { HomidClient, HomidClientError } from '../src/client/index.js';
import { configFromObject } from '../src/daemon/config.js';
import { startHomidServer, type HomidServer } from '../src/daemon/server.js';
import { SriovManager } from '../src/driver/sriov.js';
import { fiemapPath } from '../src/extents/fiemap.js';
import { KernelNvmeAdmin, kernelAdminChannel } from '../src/io/kernel-admin.js';
import { sriovState } from '../src/pci/sriov.js';
import { CLI_DIR, nextJson, spawnNode, spawnProc, until, type Proc } from '../test/daemon/procs.js';
import { assertInGuest, controllerBySerial, expectedNvme, namespacesOf, pciDriver, sys, waitFor } from './helpers.js';

assertInGuest();

const IOMMU = process.env.HOMI_GUEST_IOMMU === '1';
const spec = expectedNvme().find((d) => d.sriov !== undefined && (d.namespaces ?? [{}]).some((n) => n.shared === true));
const skip = !IOMMU ? 'no IOMMU in this run' : !spec ? 'no SR-IOV controller with a shared namespace in this run' : false;
const kctrl = spec ? await waitFor(`controller ${spec.serial}`, () => controllerBySerial(spec.serial)) : undefined;
const PF = kctrl?.bdf ?? '';
const CLIENT = fileURLToPath(new URL('./homid-vf-client.js', import.meta.url));
const NOBODY = 65534;
const MNT = '/run/homi-vf-mnt';
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const procs: Proc[] = [];
let mounted = false;

after(async () => {
  for (const p of procs) if (p.p.exitCode === null && p.p.signalCode === null) p.p.kill('SIGKILL');
  await Promise.all(procs.map((p) => p.exited));
  if (mounted) {
    try {
      execFileSync('umount', [MNT]);
    } catch {
      // reported by the test
    }
  }
});

function client(sock: string, slba: number, bytes: number, action: 'write-hold' | 'hold' | 'exit', asUid?: number): Proc {
  const env = { HOMI_VF_CHILD: '1' };
  const args = [CLIENT, sock, 'pf0', String(slba), String(bytes), action];
  const p = asUid === undefined ? spawnProc(process.execPath, args, { env }) : spawnProc('setpriv', [`--reuid=${asUid}`, `--regid=${asUid}`, '--clear-groups', process.execPath, ...args], { env });
  procs.push(p);
  return p;
}

test('homid: VFs handed to client processes under a kernel-owned PF with its file system mounted; reclaim on death', { skip, timeout: 300_000 }, async () => {
  const disk = namespacesOf(kctrl!).get(1)!;
  const lbs = Number(sys(`/sys/block/${disk}/queue/logical_block_size`));
  execFileSync('mkfs.ext4', ['-F', '-q', '-b', '4096', `/dev/${disk}`]);
  mkdirSync(MNT, { recursive: true });
  execFileSync('mount', [`/dev/${disk}`, MNT]);
  mounted = true;
  const file = `${MNT}/shared.bin`;
  const kernelData = randomBytes(64 * 1024);
  const fd = openSync(file, 'w');
  writeSync(fd, kernelData);
  fsyncSync(fd);
  closeSync(fd);
  const ext = fiemapPath(file, { sync: true }).extents;
  assert.equal(ext.length, 1);
  const slba = ext[0]!.physical / lbs;

  const dir = mkdtempSync('/tmp/homid-vf-');
  chmodSync(dir, 0o755);
  const sock = join(dir, 'homid.sock');
  const config = configFromObject(
    {
      socket: sock,
      socket_mode: '0666',
      log_level: 'warn',
      sriov: [{ name: 'pf0', pf: PF }],
      class: { default: { queue_pairs: 4, per_client: 4, vfs: 1 } },
      raw: { users: [0] },
    },
    'homid-vf',
  );
  let srv: HomidServer | null = await startHomidServer(config, { logger: pino({ level: 'silent' }) });
  const admin = KernelNvmeAdmin.open(`/dev/${kctrl!.name}`);
  const mgr = new SriovManager(kernelAdminChannel(admin));
  const root = await HomidClient.connect(sock);
  try {
    const st0 = await root.sriovStatus();
    assert.equal(st0.pfs.length, 1);
    assert.equal(st0.pfs[0]!.error, null);
    assert.equal(st0.pfs[0]!.vqFlexible, spec!.sriov!.vqFlexible);

    // More than one VF may have: refused with the resources code, nothing changed on the controller.
    const before = await mgr.secondaryControllers();
    await assert.rejects(
      root.openVf({ pf: 'pf0', vq: 3, vi: 1, nsids: [1] }),
      (e: unknown) => e instanceof HomidClientError && e.code === 'resources-exhausted' && /exceed the 2 one secondary/.test(e.message),
    );
    assert.deepEqual(await mgr.secondaryControllers(), before);

    // Client A: a VF, reads the file's blocks as the kernel wrote them, writes new ones, holds the VF.
    const a = client(sock, slba, kernelData.length, 'write-hold');
    const a1 = await nextJson(a, 120_000);
    assert.equal(a1.error, undefined, JSON.stringify(a1));
    assert.equal(a1.readSha256, sha(kernelData), 'the VF read something else than the kernel wrote into the file');
    assert.equal(a1.cntlid, a1.scid);
    const a2 = await nextJson(a, 60_000);
    writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    assert.equal(sha(readFileSync(file)), a2.wroteSha256, 'the kernel reads something else than the VF wrote');

    // The status agrees with the controller's own secondary controller list, and names A as the holder.
    const st1 = (await root.sriovStatus()).pfs[0]!;
    const list = await mgr.secondaryControllers();
    assert.deepEqual(
      st1.secondaries.map((s) => ({ scid: s.scid, online: s.online, vq: s.vq, vi: s.vi, vfNumber: s.vfNumber })),
      list.map((s) => ({ scid: s.scid, online: s.online, vq: s.vq, vi: s.vi, vfNumber: s.vfNumber })),
    );
    const held = st1.secondaries.find((s) => s.scid === a1.scid)!;
    assert.deepEqual([held.online, held.vq, held.vi, held.driver, held.holder?.pid, held.nsids], [true, 2, 1, 'vfio-pci', a.p.pid, [1]]);
    assert.equal(st1.vqAssigned, 2);
    assert.ok(st1.secondaries.filter((s) => s.scid !== a1.scid).every((s) => !s.online && s.vq === 0 && s.nsids.length === 0));

    // Refusals: over the class budget (vfs = 1, A holds it), and a uid without raw trust.
    await assert.rejects(root.openVf({ pf: 'pf0', vq: 2, vi: 1, nsids: [1] }), (e: unknown) => e instanceof HomidClientError && e.code === 'budget-class');
    const nobody = client(sock, slba, 4096, 'exit', NOBODY);
    const n1 = await nextJson(nobody, 120_000);
    assert.equal(n1.refused, 'raw-denied', JSON.stringify(n1));
    assert.equal(await nobody.exited, 0);
    assert.deepEqual(
      (await mgr.secondaryControllers()).map((s) => [s.online, s.vq, s.vi]),
      list.map((s) => [s.online, s.vq, s.vi]),
      'a refusal changed the controller',
    );

    // A dies holding the VF: homid reclaims it (the controller's own list shows it), then B gets one.
    a.p.kill('SIGKILL');
    await a.exited;
    await until(
      async () => {
        const s = (await root.sriovStatus()).pfs[0]!;
        return s.secondaries.every((x) => x.holder === null && !x.online && x.vq === 0 && x.vi === 0 && x.driver === null && x.nsids.length === 0);
      },
      60_000,
      'the dead client’s VF reclaimed',
    );
    assert.ok((await mgr.secondaryControllers()).every((s) => !s.online && s.vq === 0 && s.vi === 0));
    assert.deepEqual(await mgr.attachedControllers(1), [Number(sys(`/sys/class/nvme/${kctrl!.name}/cntlid`))]);

    const b = client(sock, slba, kernelData.length, 'exit');
    const b1 = await nextJson(b, 120_000);
    assert.equal(b1.error, undefined, JSON.stringify(b1));
    assert.equal(b1.readSha256, a2.wroteSha256, 'the next holder reads something else than the dead one wrote');
    assert.deepEqual(await nextJson(b, 60_000), { closed: true });
    assert.equal(await b.exited, 0);
    assert.ok((await mgr.secondaryControllers()).every((s) => !s.online && s.vq === 0 && s.vi === 0));

    root.close();
    await srv.close();
    srv = null;
    // homid stopping: no VFs, the PF with the kernel, its file system still in use.
    assert.equal(sriovState(PF).numVfs, 0);
    assert.equal(pciDriver(PF), 'nvme');
    writeFileSync(`${MNT}/after.txt`, 'ok\n');
    assert.equal(readFileSync(`${MNT}/after.txt`, 'utf8'), 'ok\n');
  } finally {
    root.close();
    if (srv) await srv.close();
    admin.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('homid SIGKILLed while a client holds a VF: the next homid takes the VF back; a stopped homid leaves no VFs', { skip, timeout: 300_000 }, async () => {
  const dir = mkdtempSync('/tmp/homid-vf-kill-');
  chmodSync(dir, 0o755);
  const sock = join(dir, 'homid.sock');
  const cfg = join(dir, 'homid.toml');
  writeFileSync(cfg, ['log_level = "warn"', `socket = "${sock}"`, '[[sriov]]', 'name = "pf0"', `pf = "${PF}"`, '[class.default]', 'vfs = 1', '[raw]', 'users = [0]', ''].join('\n'));
  const homid = (): Proc => {
    const p = spawnNode([join(CLI_DIR, 'homid.js'), '--config', cfg]);
    procs.push(p);
    return p;
  };
  const connect = async (h: Proc): Promise<HomidClient> => {
    for (const t0 = Date.now(); ;) {
      try {
        return await HomidClient.connect(sock);
      } catch (e) {
        if (h.p.exitCode !== null || Date.now() - t0 > 120_000) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };
  const admin = KernelNvmeAdmin.open(`/dev/${kctrl!.name}`);
  const mgr = new SriovManager(kernelAdminChannel(admin));
  try {
    const first = homid();
    (await connect(first)).close();
    const a = client(sock, 0, 4096, 'hold');
    const a1 = await nextJson(a, 120_000);
    assert.equal(a1.error, undefined, JSON.stringify(a1));
    const vfAddr = a1.vf as string;
    first.p.kill('SIGKILL');
    await first.exited;
    a.p.kill('SIGKILL');
    await a.exited;
    // What the killed homid left: the secondary online with its resources, the VF on vfio-pci.
    const left = (await mgr.secondaryControllers()).find((x) => x.scid === a1.scid)!;
    assert.deepEqual([left.online, left.vq, left.vi], [true, 2, 1]);
    assert.equal(pciDriver(vfAddr), 'vfio-pci');

    const second = homid();
    const c = await connect(second);
    const st = (await c.sriovStatus()).pfs[0]!;
    assert.equal(st.error, null);
    assert.ok(
      st.secondaries.every((x) => !x.online && x.vq === 0 && x.vi === 0 && x.driver === null && x.nsids.length === 0 && x.holder === null),
      JSON.stringify(st.secondaries),
    );
    assert.ok((await mgr.secondaryControllers()).every((x) => !x.online && x.vq === 0 && x.vi === 0));
    assert.equal(sys(`/sys/bus/pci/devices/${vfAddr}/driver_override`), '(null)');
    c.close();
    second.p.kill('SIGTERM');
    assert.equal(await second.exited, 0);
    assert.equal(sriovState(PF).numVfs, 0, 'a stopped homid leaves VFs enabled');
    assert.equal(pciDriver(PF), 'nvme');
  } finally {
    admin.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
