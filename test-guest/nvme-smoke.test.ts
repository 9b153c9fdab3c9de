// Real-kernel smoke suite, run INSIDE the VM harness's guest: Linux's own nvme driver on QEMU's NVMe
// controller(s) as the host configured them (HOMI_GUEST_NVME), block I/O, and PCI driver rebinding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { assertInGuest, controllerBySerial, expectedNvme, namespacesOf, pciDriver, rebind, sys, waitFor, type NvmeCtrl } from './helpers.js';

assertInGuest();

const specs = expectedNvme();
const MiB = 1024 * 1024;

function ctrlOf(serial: string): NvmeCtrl {
  const c = controllerBySerial(serial);
  assert.ok(c, `no nvme controller with serial ${serial}; have ${readdirSync('/sys/class/nvme').join(', ')}`);
  return c;
}

function dd(args: string[], input?: Buffer): Buffer {
  return execFileSync('dd', [...args, 'status=none'], { input, maxBuffer: 64 * MiB });
}

test('the harness configured at least one NVMe controller', () => {
  assert.ok(specs.length > 0, 'HOMI_GUEST_NVME is empty');
});

test('the requested modules are loaded', () => {
  for (const m of (process.env.HOMI_GUEST_MODULES ?? '').split(' ').filter((s) => s.length > 0)) {
    assert.ok(existsSync(`/sys/module/${m.replace(/-/g, '_')}`), `module ${m} is not loaded`);
  }
});

test('every configured controller is bound to nvme, with its serial and QEMU model', async () => {
  for (const s of specs) {
    const c = await waitFor(`controller ${s.serial}`, () => controllerBySerial(s.serial));
    assert.equal(c.model, 'QEMU NVMe Ctrl');
    assert.equal(pciDriver(c.bdf), 'nvme');
    assert.equal(sys(`/sys/class/nvme/${c.name}/state`), 'live');
  }
});

test('PCI identity: class 0x010802 (NVM Express), QEMU vendor/device ids', () => {
  for (const s of specs) {
    const c = ctrlOf(s.serial);
    const dev = `/sys/bus/pci/devices/${c.bdf}`;
    assert.equal(sys(`${dev}/class`), '0x010802');
    assert.equal(sys(`${dev}/vendor`), '0x1b36');
    assert.equal(sys(`${dev}/device`), '0x0010');
    const cfg = readFileSync(`${dev}/config`);
    assert.equal(cfg.readUInt16LE(0), 0x1b36);
    assert.equal(cfg.readUIntLE(9, 3), 0x010802); // prog-if, subclass, class
    if (s.sriov) assert.equal(Number(sys(`${dev}/sriov_totalvfs`)), s.sriov.maxVfs);
    if (s.maxIoQueuePairs !== undefined) {
      // One admin queue plus at most max_ioqpairs I/O queues (the kernel may use fewer: one per CPU).
      const q = Number(sys(`/sys/class/nvme/${c.name}/queue_count`));
      assert.ok(q >= 2 && q <= s.maxIoQueuePairs + 1, `queue_count ${q}`);
    }
  }
});

test('namespace sizes and block sizes match the configuration', async () => {
  for (const s of specs) {
    const c = ctrlOf(s.serial);
    const nss = s.namespaces ?? [{}];
    const have = await waitFor(`${nss.length} namespace(s) on ${c.name}`, () => {
      const m = namespacesOf(c);
      return m.size === nss.length ? m : undefined;
    });
    nss.forEach((ns, j) => {
      const nsid = ns.nsid ?? j + 1;
      const blk = have.get(nsid);
      assert.ok(blk, `no block device for nsid ${nsid} of ${c.name}`);
      const lbs = ns.logicalBlockSize ?? 512;
      // /sys/block/*/size counts 512-byte sectors whatever the logical block size.
      if (!ns.image) assert.equal(Number(sys(`/sys/block/${blk}/size`)) * 512, (ns.sizeMiB ?? 64) * MiB, `${blk} size`);
      assert.equal(Number(sys(`/sys/block/${blk}/queue/logical_block_size`)), lbs, `${blk} logical block size`);
      assert.ok(existsSync(`/dev/${blk}`), `/dev/${blk}`);
    });
  }
});

/** The first namespace of the first controller: where the I/O tests write. */
function firstDisk(): { ctrl: NvmeCtrl; dev: string; lbs: number } {
  const s = specs[0];
  const ctrl = ctrlOf(s.serial);
  const nss = s.namespaces ?? [{}];
  const blk = namespacesOf(ctrl).get(nss[0].nsid ?? 1);
  assert.ok(blk, 'no first namespace');
  return { ctrl, dev: `/dev/${blk}`, lbs: nss[0].logicalBlockSize ?? 512 };
}

const pattern = randomBytes(1 * MiB);
const offsetBlocks = 256; // 1 MiB in 4 KiB units

test('dd write and direct read back through the block device', () => {
  const { dev } = firstDisk();
  dd(['of=' + dev, 'bs=4096', `seek=${offsetBlocks}`, 'oflag=direct', 'conv=fsync,notrunc'], pattern);
  const back = dd(['if=' + dev, 'bs=4096', `skip=${offsetBlocks}`, `count=${pattern.length / 4096}`, 'iflag=direct']);
  assert.equal(back.length, pattern.length);
  assert.ok(back.equals(pattern), 'read-back differs from what was written');
  // Outside the written range the (new, sparse) image reads as zeros.
  if (!(specs[0].namespaces ?? [{}])[0].image) {
    const before = dd(['if=' + dev, 'bs=4096', 'skip=0', 'count=1', 'iflag=direct']);
    assert.ok(before.equals(Buffer.alloc(4096)), 'block 0 is not zero');
  }
});

test('unbind from nvme, bind uio_pci_generic (driver_override + drivers_probe), then restore nvme', async () => {
  const { ctrl } = firstDisk();
  const bdf = ctrl.bdf;
  const serial = ctrl.serial;
  await rebind(bdf, 'uio_pci_generic');
  try {
    assert.equal(controllerBySerial(serial), undefined, 'the nvme controller is still there');
    const uio = readdirSync('/sys/class/uio').find((u) => basename(readlinkSync(`/sys/class/uio/${u}/device`)) === bdf);
    assert.ok(uio, `no /sys/class/uio entry for ${bdf}`);
    assert.ok(existsSync(`/dev/${uio}`), `/dev/${uio}`);
    // BAR0 (the controller's registers) is exposed for mmap by user space.
    const bar0 = sys(`/sys/bus/pci/devices/${bdf}/resource`)
      .split('\n')[0]
      .split(/\s+/)
      .map((x) => BigInt(x));
    assert.ok(bar0[1] - bar0[0] + 1n >= 0x1000n, 'BAR0 smaller than 4 KiB');
    assert.ok(existsSync(`/sys/bus/pci/devices/${bdf}/resource0`));
  } finally {
    await rebind(bdf, null);
  }
  await waitFor('nvme rebound', () => pciDriver(bdf) === 'nvme');
  const again = await waitFor(`controller ${serial} back`, () => controllerBySerial(serial));
  assert.equal(again.bdf, bdf);
  assert.equal(sys(`/sys/bus/pci/devices/${bdf}/driver_override`), '(null)');
  // The data written before survives the rebind.
  const blk = await waitFor('namespace back', () => {
    const d = namespacesOf(again).get((specs[0].namespaces ?? [{}])[0].nsid ?? 1);
    return d && existsSync(`/dev/${d}`) ? d : undefined;
  });
  const back = dd([`if=/dev/${blk}`, 'bs=4096', `skip=${offsetBlocks}`, `count=${pattern.length / 4096}`, 'iflag=direct']);
  assert.ok(back.equals(pattern), 'data changed across the rebind');
});

test('with an IOMMU: the function has its own group and binds to vfio-pci', { skip: process.env.HOMI_GUEST_IOMMU !== '1' && 'no IOMMU in this run' }, async () => {
  const { ctrl } = firstDisk();
  const bdf = ctrl.bdf;
  const group = basename(readlinkSync(`/sys/bus/pci/devices/${bdf}/iommu_group`));
  assert.deepEqual(readdirSync(`/sys/kernel/iommu_groups/${group}/devices`), [bdf]);
  await rebind(bdf, 'vfio-pci');
  try {
    await waitFor(`/dev/vfio/${group}`, () => existsSync(`/dev/vfio/${group}`));
    assert.ok(existsSync('/dev/vfio/vfio'));
  } finally {
    await rebind(bdf, null);
  }
  await waitFor(`controller ${ctrl.serial} back`, () => controllerBySerial(ctrl.serial));
});

test('hugepages are reserved and hugetlbfs is mounted', { skip: !(Number(process.env.HOMI_GUEST_HUGEPAGES_MIB) > 0) && 'no hugepages asked' }, () => {
  const want = Number(process.env.HOMI_GUEST_HUGEPAGES_MIB) / 2;
  const total = Number(/HugePages_Total:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]);
  assert.ok(total >= want, `HugePages_Total ${total} < ${want}`);
  assert.match(readFileSync('/proc/mounts', 'utf8'), /\s\/dev\/hugepages\s+hugetlbfs\s/);
  // A file on hugetlbfs can be created and sized (one page).
  writeFileSync('/dev/hugepages/homi-probe', '');
});
