/** Memory namespaces are sparse: chunks are allocated on first write; unwritten media reads as zeros. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStore } from '../../src/emu/namespace.js';
import { MAX_MEMORY_NAMESPACE_BYTES, MEMORY_MIN_CHUNK_SHIFT, resolveConfig } from '../../src/emu/config.js';
import { openIo } from '../../src/io/open.js';

const MiB = 2 ** 20;
const TiB = 2 ** 40;

test('MemoryStore: nothing allocated until written; a write allocates only the chunks it touches', () => {
  const s = new MemoryStore(TiB);
  assert.equal(s.allocatedBytes, 0);
  const chunk = 2 ** s.chunkShift;
  assert.ok(chunk >= 2 ** MEMORY_MIN_CHUNK_SHIFT && TiB / chunk <= 65536, `chunk ${chunk}`);
  // A write across a chunk boundary, high in the namespace.
  const off = TiB - chunk - 100;
  const src = Buffer.alloc(300);
  for (let i = 0; i < src.length; i++) src[i] = (i * 7 + 1) & 0xff;
  s.write(off, src, 0, src.length);
  assert.equal(s.allocatedBytes, 2 * chunk);
  const back = Buffer.alloc(300, 0xee);
  s.read(off, back, 0, back.length);
  assert.deepEqual(back, src);
  // Unwritten media reads as zeros, also next to written bytes.
  const z = Buffer.alloc(4096, 0xee);
  s.read(0, z, 0, z.length);
  assert.ok(z.every((b) => b === 0));
  const edge = Buffer.alloc(200, 0xee);
  s.read(off - 100, edge, 0, edge.length);
  assert.ok(edge.subarray(0, 100).every((b) => b === 0));
  assert.deepEqual(edge.subarray(100), src.subarray(0, 100));
  s.close();
});

test('MemoryStore: zeroing part of a chunk keeps it, zeroing a whole chunk gives it back', () => {
  const s = new MemoryStore(8 * MiB);
  const chunk = 2 ** s.chunkShift;
  assert.equal(chunk, MiB);
  s.write(0, Buffer.alloc(3 * chunk, 0x5a), 0, 3 * chunk);
  assert.equal(s.allocatedBytes, 3 * chunk);
  s.zero(10, 20);
  assert.equal(s.allocatedBytes, 3 * chunk);
  s.zero(chunk, chunk);
  assert.equal(s.allocatedBytes, 2 * chunk);
  const b = Buffer.alloc(3 * chunk, 0xee);
  s.read(0, b, 0, b.length);
  assert.ok(b.subarray(0, 10).every((x) => x === 0x5a));
  assert.ok(b.subarray(10, 30).every((x) => x === 0));
  assert.ok(b.subarray(30, chunk).every((x) => x === 0x5a));
  assert.ok(b.subarray(chunk, 2 * chunk).every((x) => x === 0));
  assert.ok(b.subarray(2 * chunk).every((x) => x === 0x5a));
});

test('MemoryStore: a namespace size that is not a whole number of chunks ends in a short chunk', () => {
  const size = 3 * MiB + 4096;
  const s = new MemoryStore(size);
  const src = Buffer.alloc(4096, 0x11);
  s.write(size - 4096, src, 0, 4096);
  assert.equal(s.allocatedBytes, 4096);
  const back = Buffer.alloc(4096);
  s.read(size - 4096, back, 0, 4096);
  assert.deepEqual(back, src);
});

test('memory namespaces above 64 TiB are refused with the reason', () => {
  assert.throws(() => new MemoryStore(MAX_MEMORY_NAMESPACE_BYTES + 4096), /memory namespace holds .* \(64 TiB\)/);
  assert.throws(() => resolveConfig({ namespaces: [{ sizeBytes: 128 * TiB, lbads: 12 }], backing: 'memory' }), /at most .* \(64 TiB\)/);
  // File-backed and null namespaces have no such bound.
  assert.doesNotThrow(() => resolveConfig({ namespaces: [{ sizeBytes: 128 * TiB, lbads: 12 }], backing: 'null' }));
});

test('a 1 TiB emu:// namespace opens at once; data written at a high LBA reads back; unwritten LBAs read zeros', async () => {
  const t0 = performance.now();
  const dev = await openIo('emu://?size=1TiB');
  try {
    assert.ok(performance.now() - t0 < 5000, `open took ${performance.now() - t0} ms`);
    const g = dev.geometry;
    assert.equal(g.blocks * g.blockSize, TiB);
    const w = dev.allocBuffer(8192);
    const r = dev.allocBuffer(8192);
    for (let i = 0; i < 8192; i++) w.bytes[i] = (i * 13 + 5) & 0xff;
    for (const lba of [g.blocks - 2, Math.floor(g.blocks / 3)]) {
      await dev.write(lba, 2, w);
      r.bytes.fill(0xee);
      await dev.read(lba, 2, r);
      assert.deepEqual(Buffer.from(r.bytes), Buffer.from(w.bytes), `LBA ${lba}`);
    }
    for (const lba of [0, g.blocks - 4, Math.floor(g.blocks / 3) + 2]) {
      r.bytes.fill(0xee);
      await dev.read(lba, 2, r);
      assert.ok(
        r.bytes.every((b) => b === 0),
        `unwritten LBA ${lba} reads zeros`,
      );
    }
  } finally {
    await dev.close();
  }
});

test('MemoryStore: once chunks exist, I/O takes no new chunk; reads of unwritten chunks and zeroing allocate nothing', async () => {
  const { PerformanceObserver, constants } = await import('node:perf_hooks');
  const size = 256 * MiB;
  const s = new MemoryStore(size);
  const half = size / 2;
  const fill = Buffer.alloc(MiB, 3);
  for (let off = 0; off < half; off += MiB) s.write(off, fill, 0, MiB); // the first half exists, the second was never written
  const n = 300_000;
  const offs = new Float64Array(n);
  let x = 12345;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    offs[i] = ((x >>> 0) % (half / 4096)) * 4096;
  }
  const buf = Buffer.alloc(8192);
  const scavenges = async (run: () => void): Promise<number> => {
    run(); // warm up the JIT
    let minor = 0;
    const obs = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) minor++;
    });
    obs.observe({ entryTypes: ['gc'] });
    run();
    await new Promise((r) => setTimeout(r, 50));
    obs.disconnect();
    return minor;
  };
  // Reads and writes where the chunks exist: no chunk is taken. (Node 20's Buffer.copy itself makes a view per
  // call, before and after sparse chunks alike: that is not counted here.)
  const before = s.allocatedBytes;
  for (let i = 0; i < n; i++) {
    if (i & 1) s.write(offs[i]!, buf, 0, 4096);
    else s.read(offs[i]!, buf, 4096, 4096);
  }
  assert.equal(s.allocatedBytes, before);
  // Reads of chunks never written (zeros filled in) and zeroing part of a chunk: nothing allocated at all.
  // A per-call allocation of even 16 bytes would be about 5 MB over these calls: several scavenges.
  const minor = await scavenges(() => {
    for (let i = 0; i < n; i++) {
      if (i & 1) s.read(half + offs[i]!, buf, 0, 4096);
      else s.zero(offs[i]! + 512, 1024);
    }
  });
  assert.equal(s.allocatedBytes, before);
  assert.ok(minor <= 2, `${minor} scavenges during ${n} store calls`);
});
