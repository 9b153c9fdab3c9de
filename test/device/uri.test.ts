import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseDeviceUri, UriError } from '../../src/device/uri.js';
import { parseSize, formatSize } from '../../src/util/size.js';

test('emu URI: memory, defaults', () => {
  const u = parseDeviceUri('emu://?size=1GiB');
  assert.equal(u.kind, 'emu');
  if (u.kind !== 'emu') return;
  assert.equal(u.file, null);
  assert.equal(u.namespaceSize, 1024 ** 3);
  assert.equal(u.namespaces, 1);
  assert.equal(u.lbads, 12);
  assert.equal(u.nullMode, false);
});

test('emu URI: file-backed, absolute and relative paths, parameters', () => {
  const a = parseDeviceUri('emu:///tmp/x.img?size=64MiB&namespaces=3&lbads=9');
  assert.ok(a.kind === 'emu');
  if (a.kind !== 'emu') return;
  assert.equal(a.file, '/tmp/x.img');
  assert.equal(a.namespaces, 3);
  assert.equal(a.lbads, 9);
  const r = parseDeviceUri('emu://disk.img');
  assert.ok(r.kind === 'emu' && r.file === 'disk.img' && r.namespaceSize === 1024 ** 3);
  const n = parseDeviceUri('emu://?null=1&queues=8&model=M&serial=S');
  assert.ok(n.kind === 'emu' && n.nullMode && n.maxQueuePairs === 8 && n.model === 'M' && n.serial === 'S');
});

test('bad URIs name the bad part', () => {
  const cases: Array<[string, RegExp]> = [
    ['emu://?size=abc', /size: 'abc' is not a byte size/],
    ['emu://?size=1GiB&lbads=10', /lbads: '10' must be 9/],
    ['emu://?sise=1GiB', /unknown parameter 'sise'/],
    ['emu://?size=1000', /not a positive multiple of the 4096-byte block size/],
    ['emu://?namespaces=0', /namespaces: 0 is out of range/],
    ['emu://x.img?null=1', /null=1 cannot be combined/],
    ['emu://?null=yes', /null: 'yes' must be 0 or 1/],
    ['nvme://foo', /unknown scheme 'nvme:'/],
    ['just-a-path', /missing scheme/],
    ['pci:01:00.0', /'01:00.0' is not a PCI address/],
    ['emu://?size=16MiB&size=32MiB', /parameter 'size' is given more than once/],
    ['emu://x.img?namespaces=2&lbads=9&namespaces=3', /parameter 'namespaces' is given more than once/],
    ['pci:0000:01:00.0?mode=uio&mode=vfio', /parameter 'mode' is given more than once/],
    ['emu://?size=65TiB', /size: 65 TiB is above the 64 TiB a memory namespace holds \(use a backing file or null=1\)/],
  ];
  for (const [uri, re] of cases) {
    assert.throws(
      () => parseDeviceUri(uri),
      (e: unknown) => e instanceof UriError && re.test(e.message) && e.message.includes(uri),
      uri,
    );
  }
});

test('a large memory namespace is accepted up to 64 TiB; file-backed and null ones beyond', () => {
  for (const uri of ['emu://?size=64TiB', 'emu://?size=65TiB&null=1', 'emu:///tmp/x.img?size=65TiB']) {
    const u = parseDeviceUri(uri);
    assert.ok(u.kind === 'emu' && u.namespaceSize >= 64 * 2 ** 40, uri);
  }
});

test('pci URI', () => {
  const p = parseDeviceUri('pci:0000:01:00.0');
  assert.deepEqual(p, { kind: 'pci', uri: 'pci:0000:01:00.0', address: '0000:01:00.0', mode: 'auto' });
  const v = parseDeviceUri('pci:0000:01:00.0?mode=vfio');
  assert.deepEqual(v, { kind: 'pci', uri: 'pci:0000:01:00.0?mode=vfio', address: '0000:01:00.0', mode: 'vfio' });
  assert.equal((parseDeviceUri('pci:0000:01:00.0?mode=uio') as { mode: string }).mode, 'uio');
  assert.throws(() => parseDeviceUri('pci:0000:01:00.0?mode=dpdk'), /mode: 'dpdk' must be uio, vfio or auto/);
  assert.throws(() => parseDeviceUri('pci:0000:01:00.0?queues=2'), /unknown parameter 'queues'/);
});

test('sizes', () => {
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('4k'), 4096);
  assert.equal(parseSize('64KiB'), 65536);
  assert.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3);
  assert.throws(() => parseSize('1.5'), /not a whole number/);
  assert.throws(() => parseSize('12 parsecs'), /unknown size unit/);
  assert.equal(formatSize(1024 ** 3), '1 GiB');
  assert.equal(formatSize(1536), '1.50 KiB');
});
