// openPcie's up-front checks against a fake sysfs: every refusal is one clear error and leaves the device
// bound as it was (no sysfs write at all).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openPcie, resolvePcieMode } from '../../src/transport/pcie.js';
import { pciFunction } from '../../src/pci/discover.js';
import { sysPaths } from '../../src/pci/sysfs.js';
import { openDevice, DeviceOpenError } from '../../src/device/open.js';
import { FakeSys } from './fake-sysfs.js';

const A = '0000:01:00.0';

function tree(opts: { group?: boolean; hugepages?: number } = {}): FakeSys {
  const f = new FakeSys();
  f.addDevice({ address: A, driver: 'nvme', nvme: { ctrl: 'nvme0', disks: ['nvme0n1'] }, ...(opts.group ? { iommuGroup: 3 } : {}) });
  f.addDevice({ address: '0000:00:02.0', classCode: 0x020000, driver: 'e1000', ...(opts.group ? { iommuGroup: 3 } : {}) });
  f.loadDriver('uio_pci_generic');
  f.loadDriver('vfio-pci');
  const hp = opts.hugepages ?? 0;
  writeFileSync(join(f.proc, 'meminfo'), `HugePages_Total: ${hp}\nHugePages_Free: ${hp}\nHugepagesize: 2048 kB\n`);
  return f;
}

async function refused(f: FakeSys, p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.match((e as Error).message, re);
    return true;
  });
  assert.equal(f.driverOf(A), 'nvme', 'still bound to nvme');
  assert.deepEqual(f.writes, [], 'nothing written to sysfs');
}

test('missing device, non-NVMe function', async () => {
  const f = tree();
  try {
    await refused(f, openPcie('0000:07:00.0', { ...f.paths, mode: 'uio' }), /no PCI function 0000:07:00\.0/);
    await refused(f, openPcie('0000:00:02.0', { ...f.paths, mode: 'uio' }), /is not an NVMe controller \(class 0x020000/);
  } finally {
    f.cleanup();
  }
});

test('uio: not root, no hugepages', async () => {
  const f = tree({ hugepages: 0 });
  try {
    await refused(f, openPcie(A, { ...f.paths, mode: 'uio', hugepages: { uid: 1000 } }), /needs root/);
    await refused(f, openPcie(A, { ...f.paths, mode: 'uio', hugepages: { uid: 0 } }), /needs 1 free 2 MiB hugepage\(s\), 0 free/);
  } finally {
    f.cleanup();
  }
});

test('uio behind a translating IOMMU is refused (use vfio)', async () => {
  const f = tree({ group: true, hugepages: 8 });
  try {
    await refused(f, openPcie(A, { ...f.paths, mode: 'uio', hugepages: { uid: 0 } }), /translating IOMMU \(group 3, type DMA\).*mode=vfio/);
  } finally {
    f.cleanup();
  }
});

test('vfio: no IOMMU group; no /dev/vfio/vfio; a group shared with a device bound elsewhere', async () => {
  const f = tree();
  try {
    await refused(f, openPcie(A, { ...f.paths, mode: 'vfio' }), /has no IOMMU group: VFIO needs an enabled IOMMU/);
  } finally {
    f.cleanup();
  }
  const g = tree({ group: true });
  try {
    await refused(g, openPcie(A, { ...g.paths, mode: 'vfio' }), /vfio\/vfio is missing/);
    mkdirSync(join(g.dev, 'vfio'), { recursive: true });
    writeFileSync(join(g.dev, 'vfio', 'vfio'), '');
    await refused(g, openPcie(A, { ...g.paths, mode: 'vfio' }), /IOMMU group 3 of 0000:01:00\.0 also holds 0000:00:02\.0 \(bound to e1000\).*left as it was/);
  } finally {
    g.cleanup();
  }
});

test('vfio: a busy device is refused (mounted namespace) before any rebinding', async () => {
  const f = tree({ group: true });
  try {
    mkdirSync(join(f.dev, 'vfio'), { recursive: true });
    writeFileSync(join(f.dev, 'vfio', 'vfio'), '');
    // The other function leaves the group viable once it is unbound.
    f.write(join(f.devDir('0000:00:02.0'), 'driver', 'unbind'), '0000:00:02.0');
    f.writes.length = 0;
    writeFileSync(join(f.proc, 'mounts'), '/dev/nvme0n1 /data xfs rw 0 0\n');
    await refused(f, openPcie(A, { ...f.paths, mode: 'vfio' }), /in use \(\/dev\/nvme0n1 is mounted on \/data\); it stays bound to nvme/);
  } finally {
    f.cleanup();
  }
});

test('auto mode: vfio with a group and vfio-pci loaded, else uio', () => {
  const f = tree({ group: true });
  const g = tree();
  try {
    mkdirSync(join(f.dev, 'vfio'), { recursive: true });
    writeFileSync(join(f.dev, 'vfio', 'vfio'), '');
    assert.equal(resolvePcieMode(sysPaths(f.paths), pciFunction(A, f.paths), 'auto'), 'vfio');
    assert.equal(resolvePcieMode(sysPaths(g.paths), pciFunction(A, g.paths), 'auto'), 'uio');
  } finally {
    f.cleanup();
    g.cleanup();
  }
});

test('openDevice wraps PCIe errors in DeviceOpenError naming the URI', async () => {
  await assert.rejects(
    openDevice('pci:0000:ff:1f.7?mode=uio'),
    (e: unknown) => e instanceof DeviceOpenError && /cannot open 'pci:0000:ff:1f\.7\?mode=uio': no PCI function/.test((e as Error).message),
  );
});
