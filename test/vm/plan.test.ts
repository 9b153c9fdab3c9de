// The VM harness's pure parts: the QEMU command line, the --nvme argument, the guest script. No VM here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildQemuPlan } from '../../src/vm/qemu.js';
import { parseIvshmemArg, parseNvmeSpec } from '../../src/vm/nvme-arg.js';
import type { IvshmemSpec } from '../../src/vm/spec.js';
import { guestScript, shQuote } from '../../src/vm/run.js';
import type { Provisioned } from '../../src/vm/provision.js';

const io = { qemu: '/usr/bin/qemu-system-x86_64', vmlinuz: '/k/vmlinuz', initramfs: '/k/init.cpio.gz', jobShare: '/t/share', imageDir: '/t/img' };

function devices(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length - 1; i++) if (args[i] === '-device') out.push(args[i + 1]);
  return out;
}

test('one controller: root port, nvme with serial, one 64 MiB 512-byte namespace by default', () => {
  const p = buildQemuPlan({ command: 'true', nvme: [{ serial: 'S1' }] }, io);
  const d = devices(p.args);
  assert.ok(d.includes('pcie-root-port,id=rp0,chassis=1,slot=1'));
  assert.ok(d.includes('nvme,id=nvme0,serial=S1,bus=rp0'));
  assert.ok(d.includes('nvme-ns,drive=nvme0n1,bus=nvme0,nsid=1,logical_block_size=512,physical_block_size=512'));
  assert.deepEqual(p.images, [{ path: '/t/img/nvme0n1.img', bytes: 64 << 20 }]);
  assert.ok(p.args.includes('q35'));
  assert.ok(!p.append.includes('intel_iommu'));
  assert.equal(p.args[0], io.qemu);
});

test('iommu puts intel-iommu before every other device and splits the irqchip', () => {
  const p = buildQemuPlan({ command: 'true', iommu: true, nvme: [{ serial: 'S1' }] }, io);
  const d = devices(p.args);
  assert.equal(d[0], 'intel-iommu,intremap=on');
  assert.ok(p.args.includes('q35,kernel-irqchip=split'));
  assert.match(p.append, /intel_iommu=on/);
});

test('SR-IOV without a subsystem gets one; shared subsystems are declared once', () => {
  const p = buildQemuPlan(
    {
      command: 'true',
      nvme: [
        { serial: 'A', sriov: { maxVfs: 2, vqFlexible: 4, viFlexible: 2 }, maxIoQueuePairs: 6, msixQsize: 4 },
        { serial: 'B', subsystem: 'nqn.x', namespaces: [{ sizeMiB: 8, logicalBlockSize: 4096, shared: true }] },
        { serial: 'C', subsystem: 'nqn.x', namespaces: [] },
      ],
    },
    io,
  );
  const d = devices(p.args);
  assert.equal(d.filter((x) => x.startsWith('nvme-subsys')).length, 2);
  assert.ok(d.includes('nvme,id=nvme0,serial=A,bus=rp0,subsys=subsys0,max_ioqpairs=6,msix_qsize=4,sriov_max_vfs=2,sriov_vq_flexible=4,sriov_vi_flexible=2'));
  assert.ok(d.includes('nvme,id=nvme1,serial=B,bus=rp1,subsys=subsys1'));
  assert.ok(d.includes('nvme,id=nvme2,serial=C,bus=rp2,subsys=subsys1'));
  assert.ok(d.includes('nvme-ns,drive=nvme1n1,bus=nvme1,nsid=1,logical_block_size=4096,physical_block_size=4096,shared=on'));
  assert.equal(p.images.length, 2);
});

function after(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i < 0 ? undefined : args[i + 1];
}

test('TCG keeps guest memory barriers by default: multi-threaded TCG with at least two possible vCPUs', () => {
  // QEMU 7.2 emits a guest barrier only in parallel blocks (more than one possible vCPU); without it a 1-vCPU guest's
  // nvme driver loses shadow doorbell updates against QEMU's device thread (docs/results/kqd/experiments.md).
  const one = buildQemuPlan({ command: 'true', cpus: 1 }, io);
  assert.equal(after(one.args, '-accel'), 'tcg,thread=multi');
  assert.equal(after(one.args, '-smp'), '1,maxcpus=2');
  const dflt = buildQemuPlan({ command: 'true' }, io);
  assert.equal(after(dflt.args, '-accel'), 'tcg,thread=multi');
  assert.equal(after(dflt.args, '-smp'), '2');
  const four = buildQemuPlan({ command: 'true', cpus: 4 }, io);
  assert.equal(after(four.args, '-smp'), '4');
  // tcgParallel: false is QEMU 7.2's own choice (what reproduces the lost doorbells with one vCPU)
  const off = buildQemuPlan({ command: 'true', cpus: 1, tcgParallel: false }, io);
  assert.equal(after(off.args, '-accel'), 'tcg');
  assert.equal(after(off.args, '-smp'), '1');
  const off2 = buildQemuPlan({ command: 'true', cpus: 2, tcgParallel: false }, io);
  assert.equal(after(off2.args, '-accel'), 'tcg,thread=multi');
  assert.equal(after(off2.args, '-smp'), '2');
  for (const p of [one, dflt, four, off, off2]) assert.equal(p.args.filter((a) => a === '-smp' || a === '-accel').length, 2);
});

test('bad specs are refused with the field named', () => {
  assert.throws(() => buildQemuPlan({ command: 'true', nvme: [{ serial: '' }] }, io), /serial/);
  assert.throws(() => buildQemuPlan({ command: 'true', nvme: [{ serial: 'x'.repeat(21) }] }, io), /serial/);
  assert.throws(() => buildQemuPlan({ command: 'true', nvme: [{ serial: 'A' }, { serial: 'A' }] }, io), /twice/);
  assert.throws(() => buildQemuPlan({ command: 'true', nvme: [{ serial: 'A', namespaces: [{ logicalBlockSize: 1024 as 512 }] }] }, io), /logicalBlockSize/);
  assert.throws(() => buildQemuPlan({ command: 'true', nvme: [{ serial: 'A', namespaces: [{}, { nsid: 1 }] }] }, io), /nsid 1 twice/);
});

test('commas in paths are doubled for QEMU', () => {
  const p = buildQemuPlan({ command: 'true', nvme: [{ serial: 'A', namespaces: [{ image: '/a,b.img' }] }] }, { ...io, jobShare: '/t,s' });
  assert.ok(p.args.some((a) => a.startsWith('file=/a,,b.img,')));
  assert.ok(p.args.some((a) => a.includes('path=/t,,s,')));
  assert.deepEqual(p.images, []);
});

test('--nvme argument', () => {
  assert.deepEqual(parseNvmeSpec('', 3), { serial: 'HOMI3' });
  assert.deepEqual(parseNvmeSpec('serial=X,ns=64M:512+1G:4096:4096,qpairs=4,vfs=2,vq=4,vi=2', 0), {
    serial: 'X',
    namespaces: [
      { sizeMiB: 64, logicalBlockSize: 512 },
      { sizeMiB: 1024, logicalBlockSize: 4096, physicalBlockSize: 4096 },
    ],
    maxIoQueuePairs: 4,
    sriov: { maxVfs: 2, vqFlexible: 4, viFlexible: 2 },
  });
  assert.deepEqual(parseNvmeSpec('ns=0', 0).namespaces, []);
  // shared=1: every namespace shared (SR-IOV namespace attachment)
  assert.deepEqual(parseNvmeSpec('ns=16M+8M:4096,shared=1', 0).namespaces, [
    { sizeMiB: 16, shared: true },
    { sizeMiB: 8, logicalBlockSize: 4096, shared: true },
  ]);
  assert.deepEqual(parseNvmeSpec('shared=1', 0).namespaces, [{ shared: true }]);
  assert.throws(() => parseNvmeSpec('shared=yes', 0), /shared must be 0 or 1/);
  assert.throws(() => parseNvmeSpec('ns=64M:1024', 0), /512 or 4096/);
  assert.throws(() => parseNvmeSpec('bogus=1', 0), /unknown key bogus/);
  assert.throws(() => parseNvmeSpec('qpairs=x', 0), /integer/);
});

test('guest script: quoting, modules, hugepages, environment', () => {
  const p = {
    kernel: { package: 'k', packageVersion: '1', release: '6.12.0-x', root: "/c/it's", vmlinuz: '/v' },
    initramfs: '/i',
    qemu: '/q',
    qemuVersion: '7.2.0',
    ms: 0,
  } satisfies Provisioned;
  const s = guestScript({ command: 'x', modules: ['nvme', 'vfio-pci'], hugepagesMiB: 3, env: { A_B: "it's" } }, p, '/w d');
  assert.match(s, /for m in nvme vfio-pci; do/);
  assert.match(s, /echo 2 > \/proc\/sys\/vm\/nr_hugepages/);
  assert.ok(s.includes(`export A_B=${shQuote("it's")}`));
  assert.ok(s.includes(`cd '/w d'`));
  assert.ok(s.includes(`-d '/c/it'\\''s'`));
  assert.throws(() => guestScript({ command: 'x', modules: ['a b'] }, p, '/'), /bad module/);
  assert.throws(() => guestScript({ command: 'x', env: { 'A-B': '1' } }, p, '/'), /bad environment/);
});

test('ivshmem: a file-backed memory backend and an ivshmem-plain on the root complex; unnamed files go to ivshmemDir', () => {
  const p = buildQemuPlan(
    {
      command: 'true',
      iommu: true,
      nvme: [{ serial: 'S1' }],
      ivshmem: [
        { id: 'gpu0', sizeMiB: 16 },
        { id: 'gpu1', sizeMiB: 2, file: '/data/a,b.mem' },
      ],
    },
    { ...io, ivshmemDir: '/t/shm' },
  );
  const d = devices(p.args);
  assert.ok(d.includes('ivshmem-plain,id=gpu0,memdev=gpu0-mem,bus=pcie.0'));
  assert.ok(d.includes('ivshmem-plain,id=gpu1,memdev=gpu1-mem,bus=pcie.0'));
  const objs = p.args.filter((_, i) => i > 0 && p.args[i - 1] === '-object');
  assert.ok(objs.includes(`memory-backend-file,id=gpu0-mem,share=on,mem-path=/t/shm/gpu0.mem,size=${16 << 20}`));
  assert.ok(objs.includes(`memory-backend-file,id=gpu1-mem,share=on,mem-path=/data/a,,b.mem,size=${2 << 20}`));
  assert.deepEqual(p.ivshmem, [
    { id: 'gpu0', file: '/t/shm/gpu0.mem', bytes: 16 << 20 },
    { id: 'gpu1', file: '/data/a,b.mem', bytes: 2 << 20 },
  ]);
  // The IOMMU still comes first, so it translates the NVMe controller's DMA into BAR2.
  assert.equal(d[0], 'intel-iommu,intremap=on');
  assert.ok(d.indexOf('ivshmem-plain,id=gpu0,memdev=gpu0-mem,bus=pcie.0') > 0);
});

test('ivshmem: bad ids, sizes (not a power of two, too big) and relative files are refused; --ivshmem parses', () => {
  const plan = (ivshmem: IvshmemSpec[]): unknown => buildQemuPlan({ command: 'true', ivshmem }, { ...io, ivshmemDir: '/t/shm' });
  assert.throws(() => plan([{ id: '1x', sizeMiB: 2 }]), /ivshmem\[0\]\.id/);
  assert.throws(() => plan([{ id: 'a', sizeMiB: 3 }]), /power of two/);
  assert.throws(() => plan([{ id: 'a', sizeMiB: 2048 }]), /power of two from 1 to 1024/);
  assert.throws(() => plan([{ id: 'a', sizeMiB: 2, file: 'rel.mem' }]), /absolute/);
  assert.throws(
    () =>
      plan([
        { id: 'a', sizeMiB: 2 },
        { id: 'a', sizeMiB: 4 },
      ]),
    /used twice/,
  );
  assert.throws(() => buildQemuPlan({ command: 'true', ivshmem: [{ id: 'a', sizeMiB: 2 }] }, io), /no folder/);
  assert.deepEqual(parseIvshmemArg('gpu0:16M'), { id: 'gpu0', sizeMiB: 16 });
  assert.deepEqual(parseIvshmemArg('g:2:/tmp/x.mem'), { id: 'g', sizeMiB: 2, file: '/tmp/x.mem' });
  assert.throws(() => parseIvshmemArg('g:2:rel'), /ID:SIZE/);
  assert.throws(() => parseIvshmemArg('gpu0'), /ID:SIZE/);
});

test('PCIe switch: one root port and x3130-upstream per switch id, an xio3130-downstream per controller; others keep their root port', () => {
  const p = buildQemuPlan(
    {
      command: 'true',
      nvme: [{ serial: 'CMB', cmbMiB: 64, pcieSwitch: 's0', namespaces: [{ sizeMiB: 16, logicalBlockSize: 4096 }] }, { serial: 'SRC', pcieSwitch: 's0' }, { serial: 'ALONE' }],
    },
    io,
  );
  const d = devices(p.args);
  assert.deepEqual(
    d.filter((x) => /^(pcie-root-port|x3130-upstream|xio3130-downstream|nvme,)/.test(x)),
    [
      'pcie-root-port,id=swrp0,chassis=60,slot=60',
      'x3130-upstream,id=swup0,bus=swrp0',
      'xio3130-downstream,id=swdn0,bus=swup0,chassis=80,slot=80,port=0',
      'nvme,id=nvme0,serial=CMB,bus=swdn0,cmb_size_mb=64',
      'xio3130-downstream,id=swdn1,bus=swup0,chassis=81,slot=81,port=1',
      'nvme,id=nvme1,serial=SRC,bus=swdn1',
      'pcie-root-port,id=rp2,chassis=3,slot=3',
      'nvme,id=nvme2,serial=ALONE,bus=rp2',
    ],
  );
  // Two switches: each its own root port and upstream port.
  const two = devices(
    buildQemuPlan(
      {
        command: 'true',
        nvme: [
          { serial: 'A', pcieSwitch: 'x' },
          { serial: 'B', pcieSwitch: 'y' },
        ],
      },
      io,
    ).args,
  );
  assert.ok(two.includes('x3130-upstream,id=swup0,bus=swrp0') && two.includes('x3130-upstream,id=swup1,bus=swrp1'));
  assert.ok(two.includes('xio3130-downstream,id=swdn1,bus=swup1,chassis=81,slot=81,port=1'));
});

test('CMB: cmb_size_mb and legacy-cmb; bad CMB and switch fields refused with the field named', () => {
  const d = devices(buildQemuPlan({ command: 'true', nvme: [{ serial: 'C', cmbMiB: 2, legacyCmb: true }] }, io).args);
  assert.ok(d.includes('nvme,id=nvme0,serial=C,bus=rp0,cmb_size_mb=2,legacy-cmb=on'), d.join('\n'));
  assert.throws(() => buildQemuPlan({ command: 'true', nvme: [{ serial: 'C', cmbMiB: 0 }] }, io), /nvme\[0\]\.cmbMiB must be an integer 1\.\.4096/);
  assert.throws(() => buildQemuPlan({ command: 'true', nvme: [{ serial: 'C', cmbMiB: 1.5 }] }, io), /cmbMiB/);
  assert.throws(() => buildQemuPlan({ command: 'true', nvme: [{ serial: 'C', legacyCmb: true }] }, io), /nvme\[0\]\.legacyCmb needs a CMB/);
  assert.throws(() => buildQemuPlan({ command: 'true', nvme: [{ serial: 'C', pcieSwitch: 'a,b' }] }, io), /nvme\[0\]\.pcieSwitch must be/);
  assert.deepEqual(parseNvmeSpec('serial=C,cmb=64,legacycmb=1,switch=s0', 0), { serial: 'C', cmbMiB: 64, legacyCmb: true, pcieSwitch: 's0' });
  assert.throws(() => parseNvmeSpec('cmb=x', 0), /cmb needs an integer/);
  assert.throws(() => parseNvmeSpec('legacycmb=2', 0), /legacycmb must be 0 or 1/);
});
