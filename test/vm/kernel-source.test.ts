// Choosing the guest kernel: the 'p2p' kernel's packages picked from a Debian Packages index (verified through the
// signed InRelease), the kernel config read back, and the default kernel's cache kept apart. No network here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePackagesIndex, parseReleaseSha256, pickP2pKernel, P2P_KERNEL_RELEASE, type PackageEntry } from '../../src/vm/kernel-source.js';
import { ensureKernel, kernelConfigValue, type Provisioned } from '../../src/vm/provision.js';
import { runInGuest } from '../../src/vm/run.js';

const sha = (c: string): string => c.repeat(64);

function stanza(pkg: string, version: string, c: string): string {
  return `Package: ${pkg}\nSource: linux\nVersion: ${version}\nInstalled-Size: 1\nFilename: pool/main/l/linux/${pkg}_${version}_amd64.deb\nSize: 1234\nSHA256: ${sha(c)}\nDescription: x\n continued line\n`;
}

test('parseReleaseSha256: the SHA256 section only, path -> hash and size', () => {
  const text = `Origin: Debian\nMD5Sum:\n d70654e4ff73403c5076a564041f1484 10824484 main/binary-amd64/Packages.xz\nSHA256:\n ${sha('a')}   10824484 main/binary-amd64/Packages.xz\n ${sha('b')} 5 main/binary-i386/Packages.xz\n`;
  const m = parseReleaseSha256(text);
  assert.deepEqual(m.get('main/binary-amd64/Packages.xz'), { sha256: sha('a'), size: 10824484 });
  assert.equal(m.size, 2);
});

test('parsePackagesIndex keeps complete stanzas; pickP2pKernel prefers the pinned release, else the newest plain amd64 one of 6.2+', () => {
  const index = [
    stanza('linux-modules-7.2.13+deb14-amd64', '7.2.13-1', 'a'),
    stanza('linux-binary-7.2.13+deb14-amd64', '7.2.13-1', 'b'),
    stanza('linux-base-7.2.13+deb14-amd64', '7.2.13-1', 'c'),
    stanza('linux-image-7.2.13+deb14-amd64', '7.2.13-1', 'd'),
    stanza('linux-modules-7.3.1+deb14-cloud-amd64', '7.3.1-1', 'e'),
    stanza('linux-binary-7.3.1+deb14-cloud-amd64', '7.3.1-1', 'f'),
    stanza('linux-image-6.1.0-30-amd64-unsigned', '6.1.1-1', '1'),
    'Package: broken\nVersion: 1\n',
  ].join('\n');
  const entries = parsePackagesIndex(index);
  assert.equal(entries.length, 7);
  const pick = pickP2pKernel(entries, P2P_KERNEL_RELEASE)!;
  assert.equal(pick.release, '7.2.13+deb14-amd64');
  assert.deepEqual(
    pick.packages.map((p: PackageEntry) => p.package),
    ['linux-binary-7.2.13+deb14-amd64', 'linux-modules-7.2.13+deb14-amd64', 'linux-base-7.2.13+deb14-amd64'],
  );
  assert.equal(pick.packages[1]!.sha256, sha('a'));
  // The pinned release gone from the suite: the newest complete plain one (an unsplit -unsigned image counts).
  const later = parsePackagesIndex([stanza('linux-image-7.4.2+deb14-amd64-unsigned', '7.4.2-1', '2'), stanza('linux-modules-7.3.9+deb14-amd64', '7.3.9-1', '3'), index].join('\n'));
  const p2 = pickP2pKernel(later, '9.9.9+deb15-amd64')!;
  assert.equal(p2.release, '7.4.2+deb14-amd64');
  assert.deepEqual(
    p2.packages.map((p) => p.package),
    ['linux-image-7.4.2+deb14-amd64-unsigned'],
  );
  // Nothing of 6.2 or later: none (6.1 has no p2pmem allocate file).
  assert.equal(pickP2pKernel(parsePackagesIndex(stanza('linux-image-6.1.0+deb12-amd64-unsigned', '6.1-1', '4')), 'x'), null);
});

test('kernelConfigValue reads y / m / strings and says null for "is not set"', () => {
  const cfg = 'CONFIG_PCI_P2PDMA=y\n# CONFIG_IOMMUFD is not set\nCONFIG_NVME_CORE=m\nCONFIG_LOCALVERSION=""\n';
  assert.equal(kernelConfigValue(cfg, 'PCI_P2PDMA'), 'y');
  assert.equal(kernelConfigValue(cfg, 'CONFIG_NVME_CORE'), 'm');
  assert.equal(kernelConfigValue(cfg, 'IOMMUFD'), null);
  assert.equal(kernelConfigValue(cfg, 'PCI_P2P'), null, 'a prefix is not the option');
});

test('the cache keeps the kernels apart: the default never resolves to the p2p one, and a run refuses the wrong one', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'homi-vm-cache-'));
  const saved = process.env.HOMI_VM_CACHE;
  process.env.HOMI_VM_CACHE = cache;
  try {
    const mk = (name: string, flavor: string | undefined): void => {
      const root = join(cache, 'kernel', name);
      mkdirSync(join(root, 'boot'), { recursive: true });
      writeFileSync(join(root, 'boot', 'vmlinuz'), '');
      writeFileSync(join(root, 'homi-kernel.json'), JSON.stringify({ ...(flavor ? { flavor } : {}), package: name, packageVersion: '1', release: name, root, vmlinuz: join(root, 'boot', 'vmlinuz') }));
    };
    mk('p2p-7.2.13+deb14-amd64', 'p2p');
    mk('linux-image-6.12.1+deb12-amd64-unsigned', undefined);
    assert.equal((await ensureKernel('p2p')).release, 'p2p-7.2.13+deb14-amd64');
    assert.equal((await ensureKernel('default')).release, 'linux-image-6.12.1+deb12-amd64-unsigned', 'a cache entry without a flavor is the default kernel');
    const p = { kernel: await ensureKernel('default'), initramfs: '/x', qemu: '/bin/false', qemuVersion: '7.2.0', ms: 0 } as Provisioned;
    await assert.rejects(runInGuest({ command: 'true', kernel: 'p2p' }, p), /asks for the 'p2p' guest kernel, but was given the 'default' one/);
  } finally {
    if (saved === undefined) delete process.env.HOMI_VM_CACHE;
    else process.env.HOMI_VM_CACHE = saved;
    rmSync(cache, { recursive: true, force: true });
  }
});
