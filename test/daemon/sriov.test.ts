// SR-IOV management without a VM: the planner on constructed capabilities, SriovManager and homid's VF pool
// (SriovPf) against a spec-modelled primary controller (test/daemon/fake-sriov.ts) and a fake sysfs whose
// sriov_numvfs creates VFs. Resources are checked in the controller's own lists.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { freeFlexibleResources, planSecondaryAssignment, SriovResourcesError } from '../../src/driver/sriov.js';
import { SriovPf } from '../../src/daemon/sriov.js';
import type { PrimaryControllerCapabilities, SecondaryController } from '../../src/nvme/sriov.js';
import { enableVfs, sriovState } from '../../src/pci/sriov.js';
import { FakePrimary, FakeStatusError, fakeSriovSys, PF } from './fake-sriov.js';
import { ConfigError } from '../../src/daemon/config.js';
import { Homid } from '../../src/daemon/homid.js';
import { config, NOBODY_PEER, refused, ROOT_PEER, silent } from './fixtures.js';
import { formatSriov } from '../../src/cli/sriov.js';

const caps = (o: Partial<PrimaryControllerCapabilities> = {}): PrimaryControllerCapabilities => ({
  cntlid: 1,
  portId: 0,
  supportsVq: true,
  supportsVi: true,
  vqFlexibleTotal: 4,
  vqFlexibleAssigned: 0,
  vqFlexibleAllocatedPrimary: 0,
  vqPrivate: 2,
  vqMaxPerSecondary: 2,
  vqGranularity: 1,
  viFlexibleTotal: 2,
  viFlexibleAssigned: 0,
  viFlexibleAllocatedPrimary: 0,
  viPrivate: 1,
  viMaxPerSecondary: 1,
  viGranularity: 1,
  ...o,
});
const sec = (scid: number, o: Partial<SecondaryController> = {}): SecondaryController => ({ scid, pcid: 1, online: false, vfNumber: scid - 1, vq: 0, vi: 0, ...o });

test('planner: the first free secondary, exact resources, the pool after', () => {
  const p = planSecondaryAssignment(caps(), [sec(2), sec(3)], { vq: 2, vi: 1 });
  assert.equal(p.secondary.scid, 2);
  assert.deepEqual(p.assign, { vq: 2, vi: 1 });
  assert.deepEqual(p.freeAfter, { vq: 2, vi: 1 });
  // busy (leased) and resourced secondaries are skipped; a preferred VF is taken when free
  assert.equal(planSecondaryAssignment(caps(), [sec(2), sec(3)], { vq: 2, vi: 1 }, { busy: new Set([2]) }).secondary.scid, 3);
  assert.equal(planSecondaryAssignment(caps(), [sec(2), sec(3)], { vq: 2, vi: 1 }, { preferVfNumber: 2 }).secondary.scid, 3);
  assert.equal(planSecondaryAssignment(caps({ vqFlexibleAssigned: 2, viFlexibleAssigned: 1 }), [sec(2, { vq: 2, vi: 1, online: true }), sec(3)], { vq: 2, vi: 1 }).secondary.scid, 3);
  // only enabled VFs when told how many are
  assert.throws(() => planSecondaryAssignment(caps(), [sec(2, { vq: 2, vi: 1 }), sec(3)], { vq: 2, vi: 1 }, { vfsEnabled: 1 }), /no free secondary controller/);
});

test('planner: refusals name the reason', () => {
  const r = (fn: () => unknown, re: RegExp): void => assert.throws(fn, (e: unknown) => e instanceof SriovResourcesError && re.test(e.message));
  r(() => planSecondaryAssignment(caps(), [sec(2)], { vq: 1, vi: 1 }), /at least 2 VQ/);
  r(() => planSecondaryAssignment(caps(), [sec(2)], { vq: 2, vi: 0 }), /at least 1 VI/);
  r(() => planSecondaryAssignment(caps(), [sec(2)], { vq: 3, vi: 1 }), /3 VQ resources exceed the 2 one secondary/);
  r(
    () => planSecondaryAssignment(caps({ vqMaxPerSecondary: 4, vqFlexibleAssigned: 3 }), [sec(2, { vq: 3 }), sec(3)], { vq: 2, vi: 1 }),
    /resources exhausted: asked for 2 VQ and 1 VI, 1 VQ and 2 VI are free/,
  );
  r(() => planSecondaryAssignment(caps({ supportsVi: false }), [sec(2)], { vq: 2, vi: 1 }), /does not support flexible VI/);
  // the list is the cross-check of VQRFA: the larger count wins (never overbook)
  assert.deepEqual(freeFlexibleResources(caps(), [sec(2, { vq: 3, vi: 1 })]), { vq: 1, vi: 1 });
  assert.deepEqual(freeFlexibleResources(caps({ vqFlexibleAllocatedPrimary: 1 }), []), { vq: 3, vi: 2 });
  // granularity rounds up
  assert.deepEqual(planSecondaryAssignment(caps({ vqGranularity: 4, vqMaxPerSecondary: 4 }), [sec(2)], { vq: 3, vi: 1 }).assign, { vq: 4, vi: 1 });
});

test('sysfs: enabling VFs turns driver autoprobe off; a different count needs 0 first', (t) => {
  const ctrl = new FakePrimary({ vfs: 2, vqFlexible: 4, viFlexible: 2 });
  const fs = fakeSriovSys(ctrl);
  t.after(() => fs.cleanup());
  let st = sriovState(PF, fs.paths);
  assert.deepEqual([st.totalVfs, st.numVfs, st.driversAutoprobe, st.vfs.length], [2, 0, true, 0]);
  st = enableVfs(PF, 2, fs.paths);
  assert.deepEqual([st.numVfs, st.driversAutoprobe], [2, false]);
  assert.deepEqual(
    st.vfs.map((v) => [v.index, v.address, v.driver]),
    [
      [0, '0000:01:00.1', null],
      [1, '0000:01:00.2', null],
    ],
  );
  assert.throws(() => enableVfs(PF, 1, fs.paths), /disable them first/);
  assert.throws(() => enableVfs(PF, 3, fs.paths), /supports 0..2/);
  assert.equal(enableVfs(PF, 1, { ...fs.paths, force: true }).numVfs, 1);
});

test('VF pool: provision assigns, enables, attaches exactly the namespaces asked for, onlines; reclaim undoes all', async (t) => {
  const ctrl = new FakePrimary({ vfs: 2, vqFlexible: 4, viFlexible: 2, vqMaxPerSecondary: 2, viMaxPerSecondary: 1, nsids: [1, 2] });
  const fs = fakeSriovSys(ctrl);
  t.after(() => fs.cleanup());
  const pool = new SriovPf(PF, ctrl, fs.paths);
  const a = await pool.provision({ vq: 2, vi: 1, nsids: [1] });
  assert.deepEqual(a, { vfNumber: 1, scid: 2, address: '0000:01:00.1', resources: { vq: 2, vi: 1 }, nsids: [1] });
  // The controller's own view: resources, online, attachments (the other VF had every namespace on arrival:
  // detached; namespace 2 was not asked for: detached).
  assert.deepEqual(ctrl.secondaries[0], { scid: 2, pcid: 1, online: true, vfNumber: 1, vq: 2, vi: 1 });
  assert.deepEqual([...ctrl.attached.get(1)!].sort(), [1, 2]);
  assert.deepEqual([...ctrl.attached.get(2)!].sort(), [1]);
  const st = await pool.status([1, 2]);
  assert.deepEqual([st.caps.vqFlexibleAssigned, st.caps.viFlexibleAssigned], [4 - 2, 2 - 1]);
  assert.deepEqual(st.attachments, { 1: [1, 2], 2: [1] });
  assert.equal(st.sysfs.numVfs, 2);
  assert.equal(st.sysfs.driversAutoprobe, false);

  const b = await pool.provision({ vq: 2, vi: 1, nsids: [2] });
  assert.equal(b.scid, 3);
  assert.deepEqual(ctrl.assigned(), { vq: 4, vi: 2 });
  await assert.rejects(pool.provision({ vq: 2, vi: 1, nsids: [] }), /resources exhausted/);
  assert.equal(pool.provisioned.length, 2);

  assert.deepEqual(await pool.reclaim(a.scid), []);
  assert.deepEqual(ctrl.secondaries[0], { scid: 2, pcid: 1, online: false, vfNumber: 1, vq: 0, vi: 0 });
  assert.deepEqual([...ctrl.attached.get(1)!], [1]);
  assert.deepEqual(fs.writes.filter((w) => w.includes('0000:01:00.1/reset')).length, 1, 'the VF was not reset');
  // the freed VF is handed to the next request
  const c = await pool.provision({ vq: 2, vi: 1, nsids: [1] });
  assert.equal(c.scid, 2);
  assert.deepEqual(await pool.reclaim(c.scid), []);
  assert.deepEqual(await pool.reclaim(b.scid), []);
  assert.deepEqual(ctrl.assigned(), { vq: 0, vi: 0 });
  // teardown: no VFs
  await pool.setVfCount(0);
  assert.equal(sriovState(PF, fs.paths).numVfs, 0);
});

test('VF pool: a step that fails undoes what was done and reports it; disabling refuses while VFs are handed out', async (t) => {
  const ctrl = new FakePrimary({ vfs: 2, vqFlexible: 4, viFlexible: 2, nsids: [1] });
  const fs = fakeSriovSys(ctrl);
  t.after(() => fs.cleanup());
  const pool = new SriovPf(PF, ctrl, fs.paths);
  // namespace 9 does not exist: refused after resources were assigned; they go back
  await assert.rejects(pool.provision({ vq: 2, vi: 1, nsids: [9] }), /no namespace 9/);
  assert.deepEqual(ctrl.assigned(), { vq: 0, vi: 0 });
  assert.ok(ctrl.secondaries.every((s) => !s.online));
  assert.equal(pool.provisioned.length, 0);
  // the controller refusing: more than the pool has is caught by the plan before any command
  const before = ctrl.log.length;
  await assert.rejects(pool.provision({ vq: 5, vi: 1, nsids: [] }), SriovResourcesError);
  assert.equal(ctrl.log.length, before);
  const a = await pool.provision({ vq: 2, vi: 1, nsids: [1] });
  await assert.rejects(pool.setVfCount(0), /1 VFs are handed out/);
  assert.deepEqual(await pool.reclaim(a.scid), []);
  // online on a secondary with no resources is the controller's refusal, surfaced as is
  await assert.rejects(pool.mgr.online(3), (e: unknown) => e instanceof FakeStatusError);
});

test('config: [[sriov]] physical functions and the class key vfs (default 0)', () => {
  const c = config({ sriov: [{ name: 'pf0', pf: '01:00.0' }], class: { gpu: { vfs: 2 } } });
  assert.deepEqual(c.sriov, [{ name: 'pf0', pf: '0000:01:00.0', admin: 'kernel' }]);
  assert.deepEqual(config({ sriov: [{ name: 'p', pf: '0000:01:00.0', vfs: 2, namespaces: [1, 3] }] }).sriov, [{ name: 'p', pf: '0000:01:00.0', admin: 'kernel', vfs: 2, namespaces: [1, 3] }]);
  assert.equal(c.classes.get('default')!.vfs, 0);
  assert.equal(c.classes.get('gpu')!.vfs, 2);
  assert.throws(
    () => config({ sriov: [{ name: 'pf0', pf: 'nonsense' }] }),
    (e: unknown) => e instanceof ConfigError && /sriov\[0\]\.pf: a PCI address/.test(e.message),
  );
  assert.throws(() => config({ sriov: [{ name: 'a', pf: '0000:01:00.0', admin: 'homi' }] }), /sriov\[0\]\.admin/);
  assert.throws(
    () =>
      config({
        sriov: [
          { name: 'a', pf: '0000:01:00.0' },
          { name: 'a', pf: '0000:02:00.0' },
        ],
      }),
    /duplicate name 'a'/,
  );
  assert.throws(() => config({ class: { default: { vfs: -1 } } }), /class\.default\.vfs/);
});

test('homid: VF refusals before anything is touched: no raw trust, class budget (default 0), unknown or unavailable PF', async (t) => {
  // A PF address that does not exist here: homid reports it and serves the rest.
  const h = await Homid.start(config({ sriov: [{ name: 'pf0', pf: '0000:7f:1f.7' }], class: { default: { vfs: 1 } }, raw: { users: [ROOT_PEER.uid] } }), { logger: silent() });
  t.after(() => h.stop());
  const nobody = h.connect(NOBODY_PEER);
  const e1 = await refused(h.openVf(nobody, { pf: 'pf0', vq: 2, vi: 1, nsids: [1] }), 'raw-denied');
  assert.match(e1.message, /uid 65534 may not hold a virtual function/);
  const root = h.connect(ROOT_PEER);
  const e2 = await refused(h.openVf(root, { pf: 'pf0', vq: 2, vi: 1, nsids: [1] }), 'no-sriov');
  assert.match(e2.message, /'pf0' is not available: no PCI function 0000:7f:1f.7/);
  await refused(h.openVf(root, { pf: 'other', vq: 2, vi: 1, nsids: [1] }), 'no-sriov');
  assert.equal(root.vfs.size, 0);
  const st = await h.sriovStatus(root);
  assert.equal(st.pfs.length, 1);
  assert.match(st.pfs[0]!.error!, /no PCI function/);
  assert.equal(h.counters.refusals, 3);

  const h0 = await Homid.start(config({ sriov: [{ name: 'pf0', pf: '0000:7f:1f.7' }], raw: { users: [ROOT_PEER.uid] } }), { logger: silent() });
  t.after(() => h0.stop());
  const e3 = await refused(h0.openVf(h0.connect(ROOT_PEER), { pf: 'pf0', vq: 2, vi: 1, nsids: [1] }), 'budget-class');
  assert.match(e3.message, /holds 0 of 0 virtual functions \(vfs\)/);

  // [[sriov]] namespaces: the only namespaces a VF may get; a repeated one is a bad request
  const h1 = await Homid.start(config({ sriov: [{ name: 'pf0', pf: '0000:7f:1f.7', namespaces: [1] }], class: { default: { vfs: 1 } }, raw: { users: [ROOT_PEER.uid] } }), { logger: silent() });
  t.after(() => h1.stop());
  const r1 = h1.connect(ROOT_PEER);
  const e4 = await refused(h1.openVf(r1, { pf: 'pf0', vq: 2, vi: 1, nsids: [1, 2] }), 'bad-namespace');
  assert.match(e4.message, /namespace 2 may not be attached to a VF of 'pf0' \(config \[\[sriov\]\] namespaces: 1\)/);
  await refused(h1.openVf(r1, { pf: 'pf0', vq: 2, vi: 1, nsids: [1, 1] }), 'bad-request');
  await refused(h1.openVf(r1, { pf: 'pf0', vq: 2, vi: 1, nsids: [1] }), 'no-sriov');
});

test('homi sriov: the table shows resources, state, namespaces and holders; errors per PF', () => {
  const text = formatSriov([
    {
      name: 'pf0',
      pf: '0000:01:00.0',
      admin: '/dev/nvme1 (kernel admin passthrough)',
      error: null,
      totalVfs: 2,
      numVfs: 2,
      vqFlexible: 4,
      vqAssigned: 2,
      viFlexible: 2,
      viAssigned: 1,
      vqMaxPerVf: 2,
      viMaxPerVf: 1,
      secondaries: [
        { scid: 2, vfNumber: 1, online: true, vq: 2, vi: 1, address: '0000:01:00.1', driver: 'vfio-pci', holder: { client: 3, pid: 77, uid: 0 }, nsids: [1] },
        { scid: 3, vfNumber: 2, online: false, vq: 0, vi: 0, address: '0000:01:00.2', driver: null, holder: null, nsids: [] },
      ],
    },
    {
      name: 'pf1',
      pf: '0000:02:00.0',
      admin: 'kernel',
      error: 'no PCI function 0000:02:00.0',
      totalVfs: 0,
      numVfs: 0,
      vqFlexible: 0,
      vqAssigned: 0,
      viFlexible: 0,
      viAssigned: 0,
      vqMaxPerVf: 0,
      viMaxPerVf: 0,
      secondaries: [],
    },
  ]);
  assert.match(text, /VFs 2 of 2 enabled; flexible VQ 2 of 4 assigned \(at most 2 per VF\); flexible VI 1 of 2 assigned/);
  assert.match(text, /2 +1 +0000:01:00\.1 +vfio-pci +online +2 +1 +1 +client 3 \(pid 77, uid 0\)/);
  assert.match(text, /3 +2 +0000:01:00\.2 +- +offline +0 +0 +- +-/);
  assert.match(text, /pf1: PF 0000:02:00.0 \(admin: kernel\): ERROR no PCI function/);
  assert.match(formatSriov([]), /no SR-IOV physical function is managed/);
});
