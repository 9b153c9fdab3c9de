// Peer-BAR device memory on fake sysfs trees: which BARs are accepted, where they are, the mapping, and the
// allocator over it (bus route for uio, IOMMU route for VFIO with a recording mapper). No device here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FakeSys } from './fake-sysfs.js';
import { sysPaths } from '../../src/pci/sysfs.js';
import { PciError } from '../../src/pci/address.js';
import { IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_MEM_64, IORESOURCE_PREFETCH, IORESOURCE_UNSET, mapPeerBar, parsePeerSpec, parseResourceLine, peerBarInfo } from '../../src/pci/peer-bar.js';
import { DeviceMemorySource, openDeviceMemory, type DeviceMemoryRegion } from '../../src/mem/device-memory.js';
import { DmaAllocationError } from '../../src/mem/dma.js';
import { IovaSpace, VFIO_IOVA_BASE } from '../../src/mem/vfio-dma.js';
import { dataPointer } from '../../src/driver/dptr.js';

const PEER = '0000:00:04.0';
const NVME = '0000:01:00.0';
const BAR2 = 0x38_0000_0000;
const MEM_PREF64 = IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_MEM_64 | 0x0004_0000;

/** A fake ivshmem-like function: BAR0 registers (non-prefetchable), BAR2 `size` bytes of memory at `start`. */
function withPeer(o: { size?: number; start?: number; flags?: number; command?: number; driver?: string | null } = {}): FakeSys {
  const fs = new FakeSys();
  fs.addDevice({ address: NVME });
  fs.addDevice({ address: PEER, classCode: 0x050000, vendor: 0x1af4, device: 0x1110, driver: o.driver ?? null, bar0Size: 0x100 });
  const d = fs.devDir(PEER);
  const size = o.size ?? 0x10_0000;
  const start = o.start ?? BAR2;
  const line = (s: number, e: number, fl: number): string => `0x${s.toString(16).padStart(16, '0')} 0x${e.toString(16).padStart(16, '0')} 0x${fl.toString(16).padStart(16, '0')}`;
  const lines = [
    line(0xfebf1000, 0xfebf10ff, IORESOURCE_MEM | 0x0004_0000),
    line(0, 0, 0),
    size > 0 ? line(start, start + size - 1, o.flags ?? MEM_PREF64) : line(0, 0, 0),
    line(0xc000, 0xc0ff, IORESOURCE_IO),
    line(0, 0, 0),
    line(0, 0, 0),
  ];
  writeFileSync(join(d, 'resource'), lines.join('\n') + '\n');
  if (size > 0) writeFileSync(join(d, 'resource2'), Buffer.alloc(size));
  const cfg = Buffer.alloc(256);
  cfg.writeUInt16LE(o.command ?? 0x0002, 4);
  writeFileSync(join(d, 'config'), cfg);
  return fs;
}

function expectPci(f: () => unknown, re: RegExp): void {
  assert.throws(f, (e: unknown) => e instanceof PciError && re.test(e.message), String(re));
}

test('peer spec: address with optional BAR (default 2); bad forms and BAR 6+ refused', () => {
  assert.deepEqual(parsePeerSpec('00:04.0'), { address: PEER, bar: 2 });
  assert.deepEqual(parsePeerSpec('0000:00:04.0:4'), { address: PEER, bar: 4 });
  expectPci(() => parsePeerSpec('0000:00:04.0:6'), /BAR 6 does not exist/);
  expectPci(() => parsePeerSpec('nvme0'), /not a peer BAR/);
  expectPci(() => parsePeerSpec('0000:00:04.0:'), /not a peer BAR/);
});

test('resource lines: hex triples parsed; malformed or above 2^53 refused', () => {
  assert.deepEqual(parseResourceLine('0x0000003800000000 0x00000038000fffff 0x000000000014220c', 'x'), { start: BAR2, end: BAR2 + 0xfffff, flags: 0x14220c });
  expectPci(() => parseResourceLine('0x1 0x2', 'x'), /malformed/);
  expectPci(() => parseResourceLine('0xffffffffffffffff 0xffffffffffffffff 0x200', 'x'), /above 2\^53/);
});

test('a prefetchable 64-bit memory BAR is accepted: bus address and size from the resource file', () => {
  const fs = withPeer();
  try {
    const i = peerBarInfo(sysPaths(fs.paths), '00:04.0', 2, { controller: NVME });
    assert.equal(i.address, PEER);
    assert.equal(i.start, BAR2);
    assert.equal(i.size, 0x10_0000);
    assert.equal(i.is64, true);
    assert.equal(i.driver, null);
  } finally {
    fs.cleanup();
  }
});

test('refused: registers (not prefetchable), I/O ports, unimplemented, unassigned, too small, decoding off, owned by a driver, the controller itself', () => {
  const cases: Array<[Parameters<typeof withPeer>[0], number, RegExp, { minBytes?: number; controller?: string }?]> = [
    [{}, 0, /BAR0 is not prefetchable/],
    [{}, 3, /I\/O port BAR/],
    [{}, 1, /BAR1 is not implemented/],
    [{}, 5, /BAR5 is not implemented/],
    [{ flags: MEM_PREF64 | IORESOURCE_UNSET }, 2, /no address assigned/],
    [{ flags: 0x0004_0000 }, 2, /not a memory BAR/],
    [{ size: 0x800 }, 2, /too small: 2048 bytes/],
    [{}, 2, /too small: 1048576 bytes, need at least 2097152/, { minBytes: 0x20_0000 }],
    [{ start: BAR2 + 0x800, size: 0x2000 }, 2, /not page aligned/],
    [{ command: 0x0004 }, 2, /does not decode memory.*enable/],
    [{ driver: 'ivshmem_net' }, 2, /bound to ivshmem_net, which owns that memory/],
    [{}, 2, /is the controller itself/, { controller: '00:04.0' }],
  ];
  for (const [shape, bar, re, opts] of cases) {
    const fs = withPeer(shape);
    try {
      expectPci(() => peerBarInfo(sysPaths(fs.paths), PEER, bar, opts ?? {}), re);
    } finally {
      fs.cleanup();
    }
  }
  const fs = withPeer();
  try {
    expectPci(() => peerBarInfo(sysPaths(fs.paths), '0000:00:09.0', 2), /no PCI function 0000:00:09.0/);
  } finally {
    fs.cleanup();
  }
  // uio_pci_generic leaves the BAR to user space.
  const u = withPeer({ driver: 'uio_pci_generic' });
  try {
    assert.equal(peerBarInfo(sysPaths(u.paths), PEER, 2).driver, 'uio_pci_generic');
  } finally {
    u.cleanup();
  }
});

test('mapPeerBar maps resourceN: writes through the view land in the file; a resource file of the wrong size is refused', () => {
  const fs = withPeer({ size: 0x4000 });
  try {
    const p = sysPaths(fs.paths);
    const info = peerBarInfo(p, PEER, 2);
    const r = mapPeerBar(p, info);
    assert.equal(r.busAddress, BAR2);
    assert.equal(r.bytes.byteLength, 0x4000);
    r.bytes.set([0xde, 0xad, 0xbe, 0xef], 0x1000);
    const file = readFileSync(join(fs.devDir(PEER), 'resource2'));
    assert.deepEqual([...file.subarray(0x1000, 0x1004)], [0xde, 0xad, 0xbe, 0xef]);
    r.release();
    r.release();
    expectPci(() => mapPeerBar(p, info, 0x8000), /does not fit/);
    expectPci(() => mapPeerBar(p, info, 0x1800), /does not fit/);
    writeFileSync(join(fs.devDir(PEER), 'resource2'), Buffer.alloc(0x2000));
    expectPci(() => mapPeerBar(p, info), /has 8192 bytes, the resource file says 16384/);
  } finally {
    fs.cleanup();
  }
});

/** A region over plain memory with a given bus address (the allocator never touches real devices here). */
function fakeRegion(bytes: number, busAddress: number | null): DeviceMemoryRegion & { released: number } {
  const r = {
    what: 'BAR2 of test',
    bytes: new Uint8Array(bytes),
    cpuAddress: 0x7f00_0000_0000n,
    busAddress,
    released: 0,
    release(): void {
      r.released++;
    },
  };
  return r;
}

test('bus route (uio): buffers carry bus addresses inside the BAR, PRPs point into it, the BAR does not grow', () => {
  const region = fakeRegion(0x10_0000, BAR2);
  const a = openDeviceMemory(region, { kind: 'bus' });
  assert.deepEqual(a.placement, { what: 'BAR2 of test', route: 'bus', iova: BAR2, bytes: 0x10_0000, busAddress: BAR2 });
  const b1 = a.alloc(32 * 4096);
  const b2 = a.alloc(4096, 0x1_0000);
  assert.equal(b1.iova, BAR2);
  assert.equal(b2.iova % 0x1_0000, 0);
  for (const b of [b1, b2]) assert.ok(b.iova >= BAR2 && b.iova + b.size <= BAR2 + 0x10_0000);
  // The CPU view is the region's bytes at the same offset.
  b1.bytes[5] = 7;
  assert.equal(region.bytes[5], 7);
  // Every PRP of a slot lies in the BAR; a PRP list (more than two pages) comes from the host allocator.
  const dp = dataPointer(a, b1, 4096, 4096);
  assert.equal(dp.prp1, BAR2 + 4096);
  assert.equal(dp.prp2, 0);
  assert.throws(() => a.alloc(0x10_0000), DmaAllocationError);
  a.free(b1);
  a.free(b2);
  assert.equal(a.allocatedBytes, 0);
  const all = a.alloc(0x10_0000);
  assert.equal(all.iova, BAR2);
  a.close();
  assert.equal(region.released, 1);
  a.close();
  assert.equal(region.released, 1);
});

test('iommu route (VFIO): the window is mapped at an IOVA from the shared IovaSpace, unmapped and freed on close', () => {
  const calls: string[] = [];
  const mapper = {
    mapDma: (va: bigint, iova: number, size: number): void => void calls.push(`map 0x${va.toString(16)} 0x${iova.toString(16)} ${size}`),
    unmapDma: (iova: number, size: number): void => void calls.push(`unmap 0x${iova.toString(16)} ${size}`),
  };
  const iovas = new IovaSpace();
  const hostChunk = iovas.alloc(4 << 20); // the transport's own DMA memory came first
  const region = fakeRegion(0x20_0000, BAR2);
  const a = openDeviceMemory(region, { kind: 'iommu', mapper, iovas }, 0x10_0000);
  const iova = a.placement.iova;
  assert.equal(hostChunk, VFIO_IOVA_BASE);
  assert.ok(iova >= VFIO_IOVA_BASE + (4 << 20), 'no collision with host DMA memory');
  assert.deepEqual(calls, [`map 0x7f0000000000 0x${iova.toString(16)} ${0x10_0000}`]);
  const b = a.alloc(8192);
  assert.equal(b.iova, iova);
  assert.throws(() => a.alloc(0x10_0000), /full/);
  a.close();
  assert.deepEqual(calls.slice(1), [`unmap 0x${iova.toString(16)} ${0x10_0000}`]);
  assert.equal(region.released, 1);
  // The range is free again.
  assert.equal(iovas.alloc(0x10_0000), iova);
});

test('refusals of the allocator: no bus address for uio, odd windows, a failing IOMMU map releases the region', () => {
  assert.throws(() => new DeviceMemorySource(fakeRegion(0x4000, null), { kind: 'bus' }), /no bus address/);
  assert.throws(() => new DeviceMemorySource(fakeRegion(0x4000, BAR2 + 0x10), { kind: 'bus' }), /not a page-aligned/);
  assert.throws(() => new DeviceMemorySource(fakeRegion(0x4000, BAR2), { kind: 'bus' }, 0x1001), /whole number of 4 KiB pages/);
  assert.throws(() => new DeviceMemorySource(fakeRegion(0x4000, BAR2), { kind: 'bus' }, 0x8000), /holds 16384 bytes/);
  const iovas = new IovaSpace();
  const region = fakeRegion(0x4000, BAR2);
  const bad = {
    mapDma: (): void => {
      throw new Error('VFIO_IOMMU_MAP_DMA(iova 0x100000000, 16384 bytes): EFAULT (errno 14)');
    },
    unmapDma: (): void => undefined,
  };
  assert.throws(() => openDeviceMemory(region, { kind: 'iommu', mapper: bad, iovas }), /cannot enter BAR2 of test into the IOMMU: .*EFAULT/);
  assert.equal(region.released, 1);
  assert.equal(iovas.alloc(4096), VFIO_IOVA_BASE, 'the IOVA range was given back');
});
