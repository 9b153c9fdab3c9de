// SR-IOV under a kernel-owned physical function, run INSIDE the VM harness's guest: the PF stays bound to the
// kernel's nvme driver with an ext4 file system on its namespace mounted and in use, while HOMI (admin commands
// through the kernel's passthrough) gives a secondary controller its VQ / VI resources, enables the VFs without
// driver autoprobe, brings the secondary online, attaches the shared namespace, and HOMI's own driver drives the
// VF through VFIO. Bytes go both ways through the shared namespace (the file's own blocks, found by FIEMAP);
// the controller's own lists are checked at every step; teardown leaves the PF with the kernel and no VFs.
//
//   node dist/src/vm/cli.js run --iommu --modules nvme,vfio-pci,vfio_iommu_type1,ext4 --hugepages 64 \
//     --nvme serial=HOMI-SRIOV,qpairs=6,msix=4,vfs=2,vq=4,vi=2,ns=16M,shared=1 -- node --test dist/test-guest/sriov.test.js
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { Controller } from '../src/driver/controller.js';
import { dataPointer } from '../src/driver/dptr.js';
import type { QueuePair } from '../src/driver/queue-pair.js';
import { SriovResourcesError } from '../src/driver/sriov.js';
import { SriovPf } from '../src/daemon/sriov.js';
import { fiemapPath } from '../src/extents/fiemap.js';
import { KernelNvmeAdmin, kernelAdminChannel } from '../src/io/kernel-admin.js';
import { NvmOpcode } from '../src/nvme/opcodes.js';
import { sriovState } from '../src/pci/sriov.js';
import { openPcie, type PcieTransport } from '../src/transport/pcie.js';
import { assertInGuest, controllerBySerial, expectedNvme, namespacesOf, pciDriver, sys, waitFor } from './helpers.js';

assertInGuest();

const IOMMU = process.env.HOMI_GUEST_IOMMU === '1';
const spec = expectedNvme().find((d) => d.sriov !== undefined && (d.namespaces ?? [{}]).some((n) => n.shared === true));
const skip = !IOMMU ? 'no IOMMU in this run' : !spec ? 'no SR-IOV controller with a shared namespace in this run' : false;

const kctrl = spec ? await waitFor(`controller ${spec.serial}`, () => controllerBySerial(spec.serial)) : undefined;
const PF = kctrl?.bdf ?? '';
const MNT = '/run/homi-sriov-mnt';
let mounted = false;
let disk = '';

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function dropCaches(): void {
  sh('sync', []);
  writeFileSync('/proc/sys/vm/drop_caches', '3\n');
}

async function io(t: PcieTransport, qp: QueuePair, op: number, slba: number, bytes: Uint8Array, lbs: number, write: boolean): Promise<Uint8Array> {
  const buf = t.dma.alloc(bytes.length);
  const dp = dataPointer(t.dma, buf);
  try {
    if (write) buf.bytes.set(bytes);
    let st = -1;
    assert.ok(qp.submitIo(op, 1, slba, bytes.length / lbs, dp.prp1, dp.prp2, 1) >= 0);
    qp.ring();
    const t0 = Date.now();
    while (st < 0) {
      qp.poll((_tag, s) => (st = s));
      if (Date.now() - t0 > 20_000) throw new Error(`I/O did not complete within 20 s on the VF's queue ${qp.qid}`);
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(st, 0, `${op === NvmOpcode.Write ? 'write' : 'read'} through the VF failed: status 0x${st.toString(16)}`);
    return buf.bytes.slice(0, bytes.length);
  } finally {
    dp.release();
    t.dma.free(buf);
  }
}

function openPf(): { admin: KernelNvmeAdmin; pf: SriovPf } {
  const admin = KernelNvmeAdmin.open(`/dev/${kctrl!.name}`);
  return { admin, pf: new SriovPf(PF, kernelAdminChannel(admin)) };
}

after(() => {
  if (mounted) {
    try {
      sh('umount', [MNT]);
    } catch {
      // reported by the test that failed
    }
  }
});

test('sr-iov: the PF stays with the kernel, its file system mounted; a VF driven by HOMI through VFIO shares the namespace', { skip }, async () => {
  const lbs = Number(sys(`/sys/block/${(disk = namespacesOf(kctrl!).get(1)!)}/queue/logical_block_size`));
  // A file system the kernel uses on the PF's namespace, mounted for the whole test.
  sh('mkfs.ext4', ['-F', '-q', '-b', '4096', `/dev/${disk}`]);
  mkdirSync(MNT, { recursive: true });
  sh('mount', [`/dev/${disk}`, MNT]);
  mounted = true;
  const file = `${MNT}/shared.bin`;
  const kernelData = randomBytes(64 * 1024);
  const fd = openSync(file, 'w');
  writeSync(fd, kernelData);
  fsyncSync(fd);
  closeSync(fd);
  const map = fiemapPath(file, { sync: true });
  assert.equal(map.extents.length, 1, `expected one extent, got ${JSON.stringify(map.extents)}`);
  const ext = map.extents[0]!;
  assert.ok(ext.length >= kernelData.length);
  const slba = ext.physical / lbs;

  const { admin, pf } = openPf();
  try {
    // What the controller says about itself, against what QEMU was configured with.
    const st0 = await pf.status([1]);
    assert.equal(st0.caps.vqFlexibleTotal, spec!.sriov!.vqFlexible);
    assert.equal(st0.caps.viFlexibleTotal, spec!.sriov!.viFlexible);
    assert.equal(st0.caps.vqFlexibleAssigned, 0);
    assert.equal(st0.secondaries.length, spec!.sriov!.maxVfs);
    assert.ok(st0.secondaries.every((s) => !s.online && s.vq === 0 && s.vi === 0));
    const pfCntlid = Number(sys(`/sys/class/nvme/${kctrl!.name}/cntlid`));
    assert.equal(st0.caps.cntlid, pfCntlid);
    assert.deepEqual(st0.attachments[1], [pfCntlid]);
    assert.equal(st0.sysfs.numVfs, 0);

    const vf = await pf.provision({ vq: 2, vi: 1, nsids: [1] });
    const st1 = await pf.status([1]);
    const sec = st1.secondaries.find((s) => s.scid === vf.scid)!;
    assert.deepEqual({ online: sec.online, vq: sec.vq, vi: sec.vi }, { online: true, vq: 2, vi: 1 });
    assert.equal(st1.caps.vqFlexibleAssigned, 2);
    assert.equal(st1.caps.viFlexibleAssigned, 1);
    assert.deepEqual(
      [...st1.attachments[1]!].sort((a, b) => a - b),
      [pfCntlid, vf.scid].sort((a, b) => a - b),
    );
    assert.equal(st1.sysfs.numVfs, spec!.sriov!.maxVfs);
    assert.equal(st1.sysfs.driversAutoprobe, false);
    assert.ok(
      st1.sysfs.vfs.every((v) => v.driver === null),
      'a VF was bound to a driver without being asked',
    );
    assert.equal(pciDriver(PF), 'nvme');

    // More than one secondary may have is refused; a second VF takes the rest of the pool exactly; a third is
    // refused because nothing is free; the controller's lists change only for the second.
    await assert.rejects(pf.provision({ vq: 3, vi: 1, nsids: [1] }), (e: unknown) => e instanceof SriovResourcesError && /exceed the 2 one secondary/.test(e.message));
    assert.deepEqual((await pf.status()).secondaries, st1.secondaries);
    const vfB = await pf.provision({ vq: 2, vi: 1, nsids: [] });
    assert.notEqual(vfB.scid, vf.scid);
    const stB = await pf.status([1]);
    assert.deepEqual([stB.caps.vqFlexibleAssigned, stB.caps.viFlexibleAssigned], [4, 2]);
    assert.deepEqual(
      stB.secondaries.map((s) => [s.scid, s.online, s.vq, s.vi]),
      st1.secondaries.map((s) => [s.scid, true, 2, 1]),
    );
    assert.ok(!stB.attachments[1]!.includes(vfB.scid), 'a namespace not asked for is attached to the second VF');
    await assert.rejects(
      pf.provision({ vq: 2, vi: 1, nsids: [1] }),
      (e: unknown) => e instanceof SriovResourcesError && /resources exhausted: asked for 2 VQ and 1 VI, 0 VQ and 0 VI are free/.test(e.message),
    );
    assert.deepEqual(await pf.reclaim(vfB.scid), []);
    assert.deepEqual((await pf.status()).secondaries, st1.secondaries);

    // HOMI's driver on the VF, through VFIO.
    const t = await openPcie(vf.address, { mode: 'vfio' });
    try {
      assert.equal(pciDriver(vf.address), 'vfio-pci');
      const c = await Controller.open(t, { ioQueues: 1 });
      try {
        assert.equal(c.identity.cntlid, vf.scid, "the VF's controller is not the secondary controller provisioned");
        const ns = c.namespace(1);
        assert.equal(ns.blockSize, lbs);
        const qp = await c.createQueuePair({ entries: 32 });
        // kernel -> VF: the file's blocks as the kernel wrote them.
        const got = await io(t, qp, NvmOpcode.Read, slba, new Uint8Array(kernelData.length), lbs, false);
        assert.ok(Buffer.from(got).equals(kernelData), 'the VF reads something else than the kernel wrote into the file');
        // VF -> kernel: new bytes into the same blocks; the kernel sees them after its cache is dropped.
        const vfData = randomBytes(kernelData.length);
        await io(t, qp, NvmOpcode.Write, slba, vfData, lbs, true);
        dropCaches();
        assert.ok(readFileSync(file).equals(vfData), 'the kernel reads something else than the VF wrote');
        // And the file system is still the kernel's and usable.
        writeFileSync(`${MNT}/after.txt`, 'still mounted\n');
        assert.equal(readFileSync(`${MNT}/after.txt`, 'utf8'), 'still mounted\n');
        await c.deleteQueuePair(qp);
      } finally {
        await c.close();
      }
    } finally {
      await t.close();
    }
    assert.equal(pciDriver(vf.address), null, 'the VF is not back to no driver');

    const errs = await pf.reclaim(vf.scid);
    assert.deepEqual(errs, []);
    const st2 = await pf.status([1]);
    assert.ok(
      st2.secondaries.every((s) => !s.online && s.vq === 0 && s.vi === 0),
      JSON.stringify(st2.secondaries),
    );
    assert.equal(st2.caps.vqFlexibleAssigned, 0);
    assert.deepEqual(st2.attachments[1], [pfCntlid]);

    // Teardown: no VFs, the PF with the kernel, the file system still there.
    const st3 = await pf.setVfCount(0);
    assert.equal(st3.numVfs, 0);
    assert.equal(sriovState(PF).vfs.length, 0);
  } finally {
    admin.close();
  }
  assert.equal(pciDriver(PF), 'nvme');
  assert.equal(sys(`/sys/class/nvme/${kctrl!.name}/state`), 'live');
  assert.ok(readFileSync(file).length === kernelData.length);
});

test('homi sriov: enable, status (the controller own lists) and disable on a PF the kernel keeps', { skip }, () => {
  const homi = (args: string[]): string => execFileSync(process.execPath, ['dist/src/cli/main.js', 'sriov', ...args], { encoding: 'utf8' });
  const total = spec!.sriov!.maxVfs;
  assert.match(homi(['enable', '--pf', PF, '--vfs', String(total)]), new RegExp(`${total} VFs enabled \\(driver autoprobe off\\)`));
  assert.equal(sriovState(PF).numVfs, total);
  const st = JSON.parse(homi(['status', '--pf', PF, '--json'])) as {
    pfs: Array<{ numVfs: number; vqFlexible: number; vqAssigned: number; secondaries: Array<{ online: boolean; vq: number; address: string | null; driver: string | null; nsids: number[] }> }>;
  };
  const p = st.pfs[0]!;
  assert.deepEqual([p.numVfs, p.vqFlexible, p.vqAssigned], [total, spec!.sriov!.vqFlexible, 0]);
  assert.equal(p.secondaries.length, total);
  // enabled, offline, nothing assigned, no driver, and no namespace: QEMU's VFs arrive with the shared one attached
  assert.ok(
    p.secondaries.every((s) => !s.online && s.vq === 0 && s.address !== null && s.driver === null && s.nsids.length === 0),
    JSON.stringify(p.secondaries),
  );
  assert.match(homi(['disable', '--pf', PF]), /no VFs enabled/);
  assert.equal(sriovState(PF).numVfs, 0);
  assert.equal(pciDriver(PF), 'nvme');
});
