import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePciAddress } from '../../src/pci/address.js';
import { listNvmeFunctions, listPciFunctions, pciFunction } from '../../src/pci/discover.js';
import { FakeSys } from './fake-sysfs.js';

function tree(): FakeSys {
  const f = new FakeSys();
  f.addDevice({ address: '0000:01:00.0', driver: 'nvme', iommuGroup: 5, numaNode: 0, sriovTotalVfs: 4, sriovNumVfs: 2, bar0Size: 0x4000, nvme: { ctrl: 'nvme0', disks: ['nvme0n1'] } });
  f.addDevice({ address: '0000:01:00.1', driver: null, physfn: '0000:01:00.0', resource0Only: true, bar0Size: 0x2000 });
  f.addDevice({ address: '0000:00:02.0', classCode: 0x020000, vendor: 0x8086, device: 0x100e, driver: 'e1000' });
  f.addDevice({ address: '0000:00:1f.2', classCode: 0x010601, driver: 'ahci' });
  return f;
}

test('listNvmeFunctions: only class 0x010802, sorted, with ids, driver, group, NUMA, SR-IOV, BAR0', () => {
  const f = tree();
  try {
    const l = listNvmeFunctions(f.paths);
    assert.deepEqual(
      l.map((d) => d.address),
      ['0000:01:00.0', '0000:01:00.1'],
    );
    const pf = l[0]!;
    assert.equal(pf.classCode, 0x010802);
    assert.equal(pf.vendorId, 0x1b36);
    assert.equal(pf.deviceId, 0x0010);
    assert.equal(pf.subsystemVendorId, 0x1af4);
    assert.equal(pf.driver, 'nvme');
    assert.equal(pf.driverOverride, null);
    assert.equal(pf.iommuGroup, 5);
    assert.equal(pf.numaNode, 0);
    assert.equal(pf.sriovTotalVfs, 4);
    assert.equal(pf.sriovNumVfs, 2);
    assert.equal(pf.physfn, null);
    assert.equal(pf.bar0Size, 0x4000);
    assert.deepEqual(pf.nvmeControllers, ['nvme0']);
    const vf = l[1]!;
    assert.equal(vf.driver, null);
    assert.equal(vf.iommuGroup, null);
    assert.equal(vf.numaNode, null, 'numa_node -1 reads as unknown');
    assert.equal(vf.sriovTotalVfs, null, 'not SR-IOV capable');
    assert.equal(vf.physfn, '0000:01:00.0');
    assert.equal(vf.bar0Size, 0x2000, 'falls back to the size of resource0');
  } finally {
    f.cleanup();
  }
});

test('listPciFunctions filters by any class code; empty tree gives nothing', () => {
  const f = tree();
  try {
    assert.deepEqual(
      listPciFunctions({ ...f.paths, classCode: 0x020000 }).map((d) => d.driver),
      ['e1000'],
    );
    assert.deepEqual(listNvmeFunctions({ sys: f.root + '/nowhere' }), []);
  } finally {
    f.cleanup();
  }
});

test('pciFunction: missing device and malformed addresses give clear errors', () => {
  const f = tree();
  try {
    assert.throws(() => pciFunction('0000:09:00.0', f.paths), /no PCI function 0000:09:00\.0/);
    assert.throws(() => pciFunction('nvme0', f.paths), /'nvme0' is not a PCI address/);
    assert.equal(pciFunction('01:00.0', f.paths).address, '0000:01:00.0');
  } finally {
    f.cleanup();
  }
});

test('normalizePciAddress', () => {
  assert.equal(normalizePciAddress('0000:AB:1F.7'), '0000:ab:1f.7');
  assert.equal(normalizePciAddress('01:00.0'), '0000:01:00.0');
  assert.throws(() => normalizePciAddress('0000:01:00.8'));
  assert.throws(() => normalizePciAddress('0000:01:20.0'));
});
