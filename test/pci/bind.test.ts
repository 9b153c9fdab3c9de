import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bindTo, blockDevicesOf, busyReasons, DeviceBusyError } from '../../src/pci/bind.js';
import { sysPaths } from '../../src/pci/sysfs.js';
import { FakeSys } from './fake-sysfs.js';

const A = '0000:01:00.0';

function tree(): FakeSys {
  const f = new FakeSys();
  f.addDevice({ address: A, driver: 'nvme', nvme: { ctrl: 'nvme0', disks: ['nvme0n1'] } });
  f.loadDriver('uio_pci_generic');
  f.loadDriver('vfio-pci');
  return f;
}

test('bindTo switches through driver_override + unbind + drivers_probe; restore puts nvme back, idempotent', () => {
  const f = tree();
  try {
    const b = bindTo(A, 'uio_pci_generic', f.paths);
    assert.equal(f.driverOf(A), 'uio_pci_generic');
    assert.equal(b.originalDriver, 'nvme');
    assert.equal(b.driver, 'uio_pci_generic');
    assert.equal(b.unchanged, false);
    assert.deepEqual(f.writes, [`/bus/pci/devices/${A}/driver_override <- uio_pci_generic`, `/bus/pci/devices/${A}/driver/unbind <- ${A}`, `/bus/pci/drivers_probe <- ${A}`]);
    let hook = 0;
    b.beforeRestore = () => hook++;
    b.restore();
    assert.equal(f.driverOf(A), 'nvme');
    assert.equal(f.override(A), '(null)', 'driver_override cleared again');
    assert.equal(hook, 1);
    const n = f.writes.length;
    b.restore();
    assert.equal(f.writes.length, n, 'second restore does nothing');
    assert.equal(hook, 1);
  } finally {
    f.cleanup();
  }
});

test('bindTo to the driver already bound changes nothing', () => {
  const f = tree();
  try {
    const b = bindTo(A, 'nvme', f.paths);
    assert.equal(b.unchanged, true);
    b.restore();
    assert.deepEqual(f.writes, []);
    assert.equal(f.driverOf(A), 'nvme');
  } finally {
    f.cleanup();
  }
});

test('an unbound function is unbound again on restore, and a previous driver_override comes back', () => {
  const f = new FakeSys();
  try {
    f.addDevice({ address: A, driver: null });
    f.loadDriver('vfio-pci');
    writeFileSync(join(f.devDir(A), 'driver_override'), 'pci-stub\n');
    const b = bindTo(A, 'vfio-pci', f.paths);
    assert.equal(f.driverOf(A), 'vfio-pci');
    assert.equal(b.originalOverride, 'pci-stub');
    b.restore();
    assert.equal(f.driverOf(A), null);
    assert.equal(f.override(A), 'pci-stub');
  } finally {
    f.cleanup();
  }
});

test('a refused probe throws and leaves the original driver bound', () => {
  const f = tree();
  try {
    f.refuse.add('uio_pci_generic');
    assert.throws(() => bindTo(A, 'uio_pci_generic', f.paths), /binding 0000:01:00\.0 to uio_pci_generic failed/);
    assert.equal(f.driverOf(A), 'nvme');
    assert.equal(f.override(A), '(null)');
  } finally {
    f.cleanup();
  }
});

test('a driver that is not loaded is refused before anything is written', () => {
  const f = new FakeSys();
  try {
    f.addDevice({ address: A, driver: 'nvme' });
    assert.throws(() => bindTo(A, 'uio_pci_generic', f.paths), /the driver is not loaded \(modprobe uio_pci_generic\); 0000:01:00\.0 stays bound to nvme/);
    assert.deepEqual(f.writes, []);
  } finally {
    f.cleanup();
  }
});

test('busy device: a mounted namespace, a partition or a holder refuses with one clear error, leaving it bound', () => {
  const cases: Array<[string, (f: FakeSys) => void, RegExp]> = [
    ['mounted', (f) => writeFileSync(join(f.proc, 'mounts'), `/dev/nvme0n1 /mnt/data xfs rw 0 0\n`), /\/dev\/nvme0n1 is mounted on \/mnt\/data/],
    [
      'mounted partition',
      (f) => {
        mkdirSync(join(f.sys, 'block', 'nvme0n1', 'nvme0n1p1', 'holders'), { recursive: true });
        writeFileSync(join(f.proc, 'mounts'), `/dev/nvme0n1p1 /boot ext4 rw 0 0\n`);
      },
      /\/dev\/nvme0n1p1 is mounted on \/boot/,
    ],
    ['held by dm', (f) => mkdirSync(join(f.sys, 'block', 'nvme0n1', 'holders', 'dm-0'), { recursive: true }), /nvme0n1 is held by dm-0/],
    ['swap', (f) => writeFileSync(join(f.proc, 'swaps'), 'Filename\tType\n/dev/nvme0n1 partition 1 0 -2\n'), /in use as swap/],
  ];
  for (const [name, setup, re] of cases) {
    const f = tree();
    try {
      setup(f);
      assert.throws(
        () => bindTo(A, 'uio_pci_generic', f.paths),
        (e: unknown) => e instanceof DeviceBusyError && re.test(e.message) && /stays bound to nvme/.test(e.message),
        name,
      );
      assert.equal(f.driverOf(A), 'nvme', name);
      assert.deepEqual(f.writes, [], name);
    } finally {
      f.cleanup();
    }
  }
});

test('block devices of a function include multipath path disks and their heads', () => {
  const f = new FakeSys();
  try {
    f.addDevice({ address: A, driver: 'nvme', nvme: { ctrl: 'nvme1', disks: ['nvme0c1n1', 'nvme0c1n2'] } });
    assert.deepEqual(blockDevicesOf(sysPaths(f.paths), A), ['nvme0c1n1', 'nvme0c1n2', 'nvme0n1', 'nvme0n2']);
    writeFileSync(join(f.proc, 'mounts'), `/dev/nvme0n2 /srv xfs rw 0 0\n`);
    assert.deepEqual(busyReasons(sysPaths(f.paths), A), ['/dev/nvme0n2 is mounted on /srv']);
  } finally {
    f.cleanup();
  }
});

test('the original driver comes back when the process exits without restore()', () => {
  const f = tree();
  try {
    const child = fileURLToPath(new URL('./exit-child.js', import.meta.url));
    for (const how of ['exit', 'throw', 'SIGTERM']) {
      const r = spawnSync(process.execPath, [child, f.root, A, how], { encoding: 'utf8', env: { ...process.env, HOMI_PCI_EXIT_CHILD: '1' } });
      assert.match(r.stdout, /bound uio_pci_generic/, `${how}: ${r.stderr}`);
      assert.equal(f.driverOf(A), 'nvme', `${how}: driver restored`);
      assert.equal(f.override(A), '(null)', `${how}: override restored`);
    }
  } finally {
    f.cleanup();
  }
});
