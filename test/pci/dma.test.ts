import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkHugepagePreconditions, hugepageStatus, HugepageError, physicalAddresses } from '../../src/mem/hugepage.js';
import { ChunkedDmaAllocator, type ChunkSource, type DmaChunk } from '../../src/mem/pcie-dma.js';
import { DmaAllocationError } from '../../src/mem/dma.js';

function fakeProc(meminfo: string, pool?: { free: number; total: number }): { proc: string; sys: string; cleanup: () => void } {
  const root = mkdtempSync(join(tmpdir(), 'homi-fakeproc-'));
  const proc = join(root, 'proc');
  const sys = join(root, 'sys');
  mkdirSync(join(proc, 'self'), { recursive: true });
  writeFileSync(join(proc, 'meminfo'), meminfo);
  if (pool) {
    const d = join(sys, 'kernel', 'mm', 'hugepages', 'hugepages-2048kB');
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'free_hugepages'), `${pool.free}\n`);
    writeFileSync(join(d, 'nr_hugepages'), `${pool.total}\n`);
  }
  return { proc, sys, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

const MEMINFO = (free: number, total: number, size = 2048): string =>
  `MemTotal:       2000000 kB\nHugePages_Total:    ${total}\nHugePages_Free:     ${free}\nHugePages_Rsvd:        0\nHugepagesize:       ${size} kB\n`;

test('hugepage preconditions: not root -> clear error', () => {
  const p = fakeProc(MEMINFO(32, 32));
  try {
    assert.throws(
      () => checkHugepagePreconditions({ proc: p.proc, sys: p.sys, uid: 1000 }),
      (e: unknown) => e instanceof HugepageError && /needs root/.test(e.message),
    );
  } finally {
    p.cleanup();
  }
});

test('hugepage preconditions: no free hugepages -> clear error naming nr_hugepages', () => {
  const p = fakeProc(MEMINFO(0, 0));
  try {
    assert.throws(
      () => checkHugepagePreconditions({ proc: p.proc, sys: p.sys, uid: 0 }),
      (e: unknown) => e instanceof HugepageError && /needs 1 free 2 MiB hugepage\(s\), 0 free of 0/.test(e.message) && /nr_hugepages/.test(e.message),
    );
    assert.throws(() => checkHugepagePreconditions({ proc: p.proc + '/missing', sys: p.sys, uid: 0 }), /0 free of 0/);
  } finally {
    p.cleanup();
  }
});

test('hugepage status: meminfo, the 2 MiB sysfs pool wins, 1 GiB default pages do not count', () => {
  const a = fakeProc(MEMINFO(7, 8));
  const b = fakeProc(MEMINFO(0, 0, 1048576), { free: 5, total: 6 });
  const c = fakeProc(MEMINFO(4, 4, 1048576));
  try {
    assert.deepEqual(hugepageStatus({ proc: a.proc, sys: a.sys }), { free: 7, total: 8, defaultSize: 2 * 1024 * 1024 });
    assert.equal(checkHugepagePreconditions({ proc: a.proc, sys: a.sys, uid: 0 }).free, 7);
    assert.deepEqual(hugepageStatus({ proc: b.proc, sys: b.sys }), { free: 5, total: 6, defaultSize: 1024 * 1024 * 1024 });
    assert.equal(hugepageStatus({ proc: c.proc, sys: c.sys }).free, 0);
  } finally {
    a.cleanup();
    b.cleanup();
    c.cleanup();
  }
});

test('pagemap: PFN bits 0-54 with the present bit; zero PFN (no CAP_SYS_ADMIN) and absent pages refused', () => {
  const p = fakeProc(MEMINFO(1, 1));
  try {
    const pm = join(p.proc, 'self', 'pagemap');
    const b = Buffer.alloc(8 * 16);
    b.writeBigUInt64LE((1n << 63n) | (1n << 55n) | 0x12345n, 8 * 3); // page 3: present, soft-dirty bit, PFN 0x12345
    b.writeBigUInt64LE(1n << 63n, 8 * 5); // page 5: present, PFN hidden
    b.writeBigUInt64LE((1n << 63n) | ((1n << 55n) - 1n), 8 * 6); // page 6: largest PFN
    writeFileSync(pm, b);
    assert.deepEqual(physicalAddresses(pm, [3 * 4096, 3 * 4096 + 0x123]), [0x12345000, 0x12345123]);
    assert.throws(() => physicalAddresses(pm, [5 * 4096]), /hides physical frame numbers.*CAP_SYS_ADMIN/);
    assert.throws(() => physicalAddresses(pm, [4 * 4096]), /is not present/);
    assert.throws(() => physicalAddresses(pm, [100 * 4096]), /short read/);
    assert.throws(() => physicalAddresses(pm + '.nope', [0]), /cannot open/);
  } finally {
    p.cleanup();
  }
});

/** A chunk source over plain memory with chosen IOVAs (like hugepage runs). */
class FakeSource implements ChunkSource {
  readonly maxChunkBytes: number;
  grown: number[] = [];
  released = 0;
  private next = 0x4000_0000;
  constructor(
    private readonly chunkBytes: number,
    max = chunkBytes,
  ) {
    this.maxChunkBytes = max;
  }
  grow(minBytes: number): DmaChunk[] {
    const size = Math.max(this.chunkBytes, minBytes);
    this.grown.push(size);
    const iova = this.next;
    this.next += size + 0x100_0000; // a physical gap between chunks
    const c = { iova, bytes: new Uint8Array(size) };
    c.bytes.fill(0xee);
    return [c];
  }
  release(): void {
    this.released++;
  }
}

const HP = 2 * 1024 * 1024;

test('chunked allocator: buffers never cross a chunk, are aligned, zeroed, and map CPU bytes to IOVAs', () => {
  const src = new FakeSource(HP);
  const a = new ChunkedDmaAllocator(src, 4096, 'test memory');
  const bufs = [];
  for (let i = 0; i < 5; i++) bufs.push(a.alloc(768 * 1024));
  assert.deepEqual(src.grown, [HP, HP, HP], 'two 768 KiB buffers per 2 MiB chunk');
  for (const b of bufs) {
    assert.equal(b.iova % 4096, 0);
    const chunkStart = Math.floor((b.iova - 0x4000_0000) / (HP + 0x100_0000)) * (HP + 0x100_0000) + 0x4000_0000;
    assert.ok(b.iova + b.size <= chunkStart + HP, `0x${b.iova.toString(16)} crosses its chunk`);
    assert.ok(
      b.bytes.every((x) => x === 0),
      'zeroed',
    );
  }
  assert.equal(a.allocatedBytes, 5 * 768 * 1024);
  const big = a.alloc(64, 65536);
  assert.equal(big.iova % 65536, 0);
  for (const b of bufs) a.free(b);
  a.free(big);
  assert.equal(a.allocatedBytes, 0);
  // Freed space coalesces: a whole chunk fits again without growing.
  const whole = a.alloc(HP);
  assert.equal(src.grown.length, 3);
  assert.equal(whole.size, HP);
  assert.throws(() => a.free({ iova: whole.iova + 4096, size: 4096, bytes: new Uint8Array(4096) }), /not allocated here/);
  a.free(whole);
  assert.throws(() => a.free(whole), /not allocated here/);
  a.close();
  a.close();
  assert.equal(src.released, 1);
  assert.throws(() => a.alloc(4096), /closed/);
});

test('chunked allocator: a request larger than any device-contiguous block fails clearly', () => {
  const a = new ChunkedDmaAllocator(new FakeSource(HP), 4096, 'hugepage DMA memory');
  assert.throws(
    () => a.alloc(HP + 1),
    (e: unknown) => e instanceof DmaAllocationError && /largest device-contiguous block is 2097152 bytes/.test(e.message),
  );
  assert.throws(() => a.alloc(0), /invalid DMA allocation size/);
  assert.throws(() => a.alloc(4096, 3000), /invalid DMA alignment/);
});
