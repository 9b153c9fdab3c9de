import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { listKernelNvme, nvmeNodeOf } from '../../src/pci/kernel-nvme.js';
import { KernelNvmeAdmin, NotNvmeDeviceError } from '../../src/io/kernel-admin.js';
import { FakeSys } from './fake-sysfs.js';

const MiB = 1 << 20;

/** Two PCIe controllers (one with native multipath), a fabrics controller without namespaces. */
function tree(): FakeSys {
  const f = new FakeSys();
  f.addDevice({ address: '0000:01:00.0', driver: 'nvme', iommuGroup: 3 });
  f.addDevice({ address: '0000:02:00.0', driver: 'nvme' });
  f.addKernelController({
    instance: 0,
    address: '0000:01:00.0',
    serial: 'HOMI-A',
    namespaces: [
      { head: 2, nsid: 2, sizeBytes: 32 * MiB, lbaSize: 4096 },
      { head: 1, nsid: 1, sizeBytes: 64 * MiB, lbaSize: 512 },
      { head: 3, nsid: 7, sizeBytes: 16 * MiB, lbaSize: 512, genericOnly: true },
    ],
  });
  f.addKernelController({ instance: 1, address: '0000:02:00.0', serial: 'HOMI-MP', firmware: '1.0', namespaces: [{ head: 4, nsid: 1, sizeBytes: 8 * MiB, lbaSize: 512, subsystem: 5 }] });
  f.addKernelController({ instance: 10, serial: 'FABRIC', state: 'connecting' });
  return f;
}

test('listKernelNvme: controllers by number with their attributes, namespaces by NSID with block and generic devices', () => {
  const f = tree();
  try {
    const l = listKernelNvme(f.paths);
    assert.deepEqual(
      l.map((c) => c.name),
      ['nvme0', 'nvme1', 'nvme10'],
      'numeric order, not text order',
    );
    const [a, mp, fab] = l as [(typeof l)[0], (typeof l)[0], (typeof l)[0]];
    assert.equal(a.device, join(f.dev, 'nvme0'));
    assert.equal(a.transport, 'pcie');
    assert.equal(a.pciAddress, '0000:01:00.0');
    assert.equal(a.model, 'QEMU NVMe Ctrl');
    assert.equal(a.serial, 'HOMI-A');
    assert.equal(a.firmware, '8.0.0');
    assert.equal(a.state, 'live');
    assert.equal(a.cntlid, 0);
    assert.deepEqual(a.namespaces, [
      { nsid: 1, disk: 'nvme0n1', blockDevice: join(f.dev, 'nvme0n1'), genericDevice: join(f.dev, 'ng0n1'), sizeBytes: 64 * MiB, lbaSize: 512 },
      { nsid: 2, disk: 'nvme0n2', blockDevice: join(f.dev, 'nvme0n2'), genericDevice: join(f.dev, 'ng0n2'), sizeBytes: 32 * MiB, lbaSize: 4096 },
      { nsid: null, disk: null, blockDevice: null, genericDevice: join(f.dev, 'ng0n3'), sizeBytes: null, lbaSize: null },
    ]);
    // native multipath: the hidden path nvme5c1n4 names the subsystem's disk nvme5n4 and the head's ng5n4
    assert.deepEqual(mp.namespaces, [{ nsid: 1, disk: 'nvme5n4', blockDevice: join(f.dev, 'nvme5n4'), genericDevice: join(f.dev, 'ng5n4'), sizeBytes: 8 * MiB, lbaSize: 512 }]);
    assert.equal(mp.firmware, '1.0');
    assert.equal(fab.transport, 'tcp');
    assert.equal(fab.pciAddress, null, 'no PCI address for a fabrics controller');
    assert.equal(fab.state, 'connecting');
    assert.deepEqual(fab.namespaces, []);
  } finally {
    f.cleanup();
  }
});

test('listKernelNvme: no /sys/class/nvme (no nvme driver) gives nothing', () => {
  const f = new FakeSys();
  try {
    assert.deepEqual(listKernelNvme(f.paths), []);
  } finally {
    f.cleanup();
  }
});

test('nvmeNodeOf: a device number sysfs files under class nvme is a controller; others are refused with the reason', () => {
  const f = tree();
  try {
    const ctrl0 = join(f.sys, 'class', 'nvme', 'nvme0');
    // /dev/null is char 1:3: point that number at the fake nvme0, then at a device of another class
    symlinkSync(ctrl0, join(f.sys, 'dev', 'char', '1:3'));
    assert.deepEqual(nvmeNodeOf('/dev/null', f.paths), { kind: 'controller', name: 'nvme0' });

    const g = new FakeSys();
    try {
      const mem = join(g.sys, 'devices', 'virtual', 'mem', 'null');
      mkdirSync(mem, { recursive: true });
      mkdirSync(join(g.sys, 'class', 'mem'), { recursive: true });
      symlinkSync(join(g.sys, 'class', 'mem'), join(mem, 'subsystem'));
      mkdirSync(join(g.sys, 'dev', 'char'), { recursive: true });
      symlinkSync(mem, join(g.sys, 'dev', 'char', '1:3'));
      assert.deepEqual(nvmeNodeOf('/dev/null', g.paths), { refused: '/dev/null is not an NVMe device (char device 1:3, mem null)' });
    } finally {
      g.cleanup();
    }
    const file = join(f.root, 'plain');
    writeFileSync(file, 'x');
    assert.deepEqual(nvmeNodeOf(file, f.paths), { refused: `${file} is not a device node` });
    assert.deepEqual(nvmeNodeOf(join(f.root, 'nope'), f.paths), { refused: `${join(f.root, 'nope')}: no such file` });
  } finally {
    f.cleanup();
  }
});

test('KernelNvmeAdmin: a path that is no NVMe device is refused before any ioctl, naming the controllers present', () => {
  const f = tree();
  try {
    assert.throws(
      () => KernelNvmeAdmin.open(join(f.root, 'nope'), f.paths),
      (e: unknown) =>
        e instanceof NotNvmeDeviceError &&
        e.message ===
          `${join(f.root, 'nope')}: no such file: give a controller /dev/nvmeX (or a namespace /dev/nvmeXnY, /dev/ngXnY); present: ${['nvme0', 'nvme1', 'nvme10'].map((n) => join(f.dev, n)).join(', ')}`,
    );
    const empty = new FakeSys();
    try {
      assert.throws(() => KernelNvmeAdmin.open(empty.root, empty.paths), /is not a device node: .*; this machine has no NVMe controller the kernel drives$/);
    } finally {
      empty.cleanup();
    }
  } finally {
    f.cleanup();
  }
});

test('KernelNvmeAdmin: the real kernel refuses NVME_IOCTL_ADMIN_CMD on a device that is not NVMe (ENOTTY), in one clear line', () => {
  const f = tree();
  try {
    // sysfs says /dev/null (1:3) is nvme0, the kernel knows better: the ioctl reaches the null driver
    symlinkSync(join(f.sys, 'class', 'nvme', 'nvme0'), join(f.sys, 'dev', 'char', '1:3'));
    const k = KernelNvmeAdmin.open('/dev/null', f.paths);
    try {
      assert.throws(
        () => k.identifyController(),
        (e: unknown) => e instanceof NotNvmeDeviceError && e.message === '/dev/null: the kernel refused NVME_IOCTL_ADMIN_CMD (ENOTTY): not an NVMe device',
      );
    } finally {
      k.close();
    }
  } finally {
    f.cleanup();
  }
});
