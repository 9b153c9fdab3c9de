// p2pmem (PCI P2PDMA memory) as io_uring data buffers, on a fake sysfs tree: the folder's parsing and refusals,
// the mapping logic (each allocation one MAP_SHARED mmap of `allocate`; a regular file stands in for it here),
// and a real io_uring O_DIRECT read and write of a file through such a mapping. The real p2pmem is in the VM
// suite (test-guest/p2pmem.test.ts, the 'p2p' kernel).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { normalizeBdf, p2pmemSource, parseBufferPlacement, readP2pmem } from '../../src/io/p2pmem.js';
import { openIo } from '../../src/io/open.js';
import { perfOptionsFrom } from '../../src/cli/perf.js';

const BDF = '0000:03:00.0';
const MiB = 1024 * 1024;

/** A fake sysfs with one PCI function; `p2pmem` files as given (undefined: no p2pmem folder). */
function fakeSys(p2pmem?: { size?: string; available?: string; published?: string; allocateBytes?: number | null }): string {
  const root = mkdtempSync(join(tmpdir(), 'homi-p2pmem-'));
  const dev = join(root, 'bus', 'pci', 'devices', BDF);
  mkdirSync(dev, { recursive: true });
  if (p2pmem) {
    const d = join(dev, 'p2pmem');
    mkdirSync(d);
    writeFileSync(join(d, 'size'), p2pmem.size ?? `${64 * MiB}\n`);
    writeFileSync(join(d, 'available'), p2pmem.available ?? `${64 * MiB - 131072}\n`);
    writeFileSync(join(d, 'published'), p2pmem.published ?? '1\n');
    if (p2pmem.allocateBytes !== null) {
      writeFileSync(join(d, 'allocate'), '');
      truncateSync(join(d, 'allocate'), p2pmem.allocateBytes ?? 4 * MiB);
    }
  }
  return root;
}

test('normalizeBdf: DDDD:BB:DD.F as sysfs names it, BB:DD.F gets domain 0000, anything else null', () => {
  assert.equal(normalizeBdf('0000:03:00.0'), '0000:03:00.0');
  assert.equal(normalizeBdf('03:00.0'), '0000:03:00.0');
  assert.equal(normalizeBdf('0000:0A:1f.7'), '0000:0a:1f.7');
  for (const bad of ['', '3:0.0', '0000:03:00.8', '0000:03:20.0', '../03:00.0', '0000:03:00.0/..', '0000:03:00.0\n1']) assert.equal(normalizeBdf(bad), null, bad);
});

test('parseBufferPlacement: host or p2pmem:<bdf>; the CLI turns it into PerfOptions.buffers', () => {
  assert.deepEqual(parseBufferPlacement('host'), { kind: 'host' });
  assert.deepEqual(parseBufferPlacement('p2pmem:03:00.0'), { kind: 'p2pmem', bdf: '0000:03:00.0' });
  assert.throws(() => parseBufferPlacement('p2pmem:zz'), /must be DDDD:BB:DD.F/);
  assert.throws(() => parseBufferPlacement('gpu'), /is not host or p2pmem:/);
  const base = { rw: 'randread', bs: '4k', qd: '32', nqueues: '1', warmup: '0', rwmixread: '50', nsid: '1', verify: false, verifySpan: '64MiB', seed: '1', json: false };
  assert.deepEqual(perfOptionsFrom('/dev/x', { ...base, buffers: 'p2pmem:0000:03:00.0' }).buffers, { kind: 'p2pmem', bdf: '0000:03:00.0' });
  assert.deepEqual(perfOptionsFrom('/dev/x', { ...base, buffers: 'host' }).buffers, { kind: 'host' });
  assert.throws(() => perfOptionsFrom('/dev/x', { ...base, buffers: 'p2pmem:1' }), /^UsageError: --buffers: 'p2pmem:1'/);
});

test('readP2pmem: the folder parsed; every refusal names what is missing or malformed', () => {
  const ok = fakeSys({});
  const none = fakeSys();
  const bad = fakeSys({ size: 'lots\n' });
  const over = fakeSys({ available: `${65 * MiB}\n` });
  const pub = fakeSys({ published: '2\n' });
  try {
    assert.deepEqual(readP2pmem('03:00.0', ok), {
      bdf: BDF,
      dir: join(ok, 'bus/pci/devices', BDF, 'p2pmem'),
      sizeBytes: 64 * MiB,
      availableBytes: 64 * MiB - 131072,
      published: true,
      allocatable: true,
    });
    assert.throws(() => readP2pmem('0000:04:00.0', ok), /^IoOpenError: p2pmem: there is no PCI function 0000:04:00.0 /);
    assert.throws(() => readP2pmem('nope', ok), /^IoOpenError: p2pmem: 'nope' is not a PCI address/);
    assert.throws(() => readP2pmem(BDF, none), /^IoOpenError: p2pmem: 0000:03:00.0 has no p2pmem \(.*p2pmem is missing\): the kernel lacks CONFIG_PCI_P2PDMA/);
    assert.throws(() => readP2pmem(BDF, bad), /size is not a decimal number: "lots\\n"/);
    assert.throws(() => readP2pmem(BDF, over), /available \(68157440\) is more than size \(67108864\)/);
    assert.throws(() => readP2pmem(BDF, pub), /published: expected 0 or 1, got "2"/);
  } finally {
    for (const r of [ok, none, bad, over, pub]) rmSync(r, { recursive: true, force: true });
  }
});

test('p2pmemSource: refuses unpublished memory and kernels without allocate; each allocation maps allocate shared, rounded to pages', () => {
  const unpublished = fakeSys({ published: '0\n' });
  const old = fakeSys({ allocateBytes: null });
  const ok = fakeSys({});
  try {
    assert.throws(() => p2pmemSource(BDF, unpublished), /is not published \(its driver keeps it for itself\)/);
    assert.throws(() => p2pmemSource(BDF, old), /allocate is missing: mapping p2pmem from user space needs Linux 6.2 or later/);
    const src = p2pmemSource(BDF, ok);
    assert.equal(src.describe, `p2pmem ${BDF}`);
    const m = src.alloc(5000);
    assert.equal(m.length, 8192, 'rounded up to 4 KiB pages');
    assert.equal(m.address % 4096, 0);
    // Shared: what goes through the mapping is in the file that stands for the device memory.
    new Uint8Array(m.buffer).set([1, 2, 3], 100);
    src.free(m);
    assert.deepEqual([...readFileSync(join(ok, 'bus/pci/devices', BDF, 'p2pmem', 'allocate')).subarray(100, 103)], [1, 2, 3]);
  } finally {
    for (const r of [unpublished, old, ok]) rmSync(r, { recursive: true, force: true });
  }
});

test('openIo with p2pmem: io_uring O_DIRECT reads and writes a file through the mapping; other combinations refused', async (t) => {
  const sysRoot = fakeSys({});
  const dir = mkdtempSync(join(process.cwd(), '.homi-p2pmem-io-'));
  const file = join(dir, 'data');
  try {
    const pattern = randomBytes(MiB);
    writeFileSync(file, pattern);
    const p2pmem = { bdf: BDF, sysfsRoot: sysRoot };
    await assert.rejects(openIo(file, { backend: 'io_uring', p2pmem }), /^IoOpenError: p2pmem buffers need --direct/);
    await assert.rejects(openIo(file, { backend: 'posix', direct: true, p2pmem }), /^IoOpenError: p2pmem buffers apply to the io_uring backend/);
    await assert.rejects(openIo(file, { backend: 'io_uring', direct: true, fixedBuffers: true, p2pmem }), /--fixed-buffers .* not supported/);
    await assert.rejects(openIo(file, { backend: 'io_uring', direct: true, p2pmem: { bdf: '0000:09:00.0', sysfsRoot: sysRoot } }), /no PCI function 0000:09:00.0/);
    let dev;
    try {
      dev = await openIo(file, { backend: 'io_uring', direct: true, p2pmem });
    } catch (e) {
      // O_DIRECT is a property of the file system the checkout is on.
      if (/O_DIRECT|EINVAL/.test(String(e))) {
        t.skip(`the checkout is on a file system without O_DIRECT: ${String(e)}`);
        return;
      }
      throw e;
    }
    try {
      assert.match(dev.transport, /^io_uring O_DIRECT, buffers in p2pmem 0000:03:00.0$/);
      const buf = dev.allocBuffer(128 * 1024);
      const bs = dev.geometry.blockSize;
      await dev.read((256 * 1024) / bs, (128 * 1024) / bs, buf);
      assert.ok(Buffer.from(buf.bytes).equals(pattern.subarray(256 * 1024, 384 * 1024)));
      // The same bytes are in the stand-in for device memory (MAP_SHARED of allocate, offset 0).
      const backing = readFileSync(join(sysRoot, 'bus/pci/devices', BDF, 'p2pmem', 'allocate'));
      assert.ok(backing.subarray(0, 128 * 1024).equals(pattern.subarray(256 * 1024, 384 * 1024)));
      buf.bytes.fill(0x5a);
      await dev.write(0, (128 * 1024) / bs, buf);
    } finally {
      await dev.close();
    }
    assert.ok(
      readFileSync(file)
        .subarray(0, 128 * 1024)
        .every((b) => b === 0x5a),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(sysRoot, { recursive: true, force: true });
  }
});
