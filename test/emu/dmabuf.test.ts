/**
 * dma-buf import on the embedded controller (src/mem/dmabuf.ts, ShmDmaMemory.importDmaBuf): the imported buffer
 * becomes a DMA segment of the controller, so NVMe reads whose PRPs point into it land in the buffer's pages, which
 * the test checks through a second mapping of the memory behind it (the memfd). Where the kernel has udmabuf the
 * buffer is a real udmabuf over a memfd; everywhere the importer logic also runs on a MEMFD STAND-IN (a sealed
 * memfd presented through the same interface), which is all a kernel without /dev/udmabuf allows.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { dataPointer } from '../../src/driver/dptr.js';
import type { DmaBuffer } from '../../src/mem/dma.js';
import { DmaBufImportError, MEMFD_STAND_IN_EXPORTER, describeDmaBuf, memfdStandIn, openDmaBuf, uioRefusal, type DmaBufHandle, type ImportedDmaBuf } from '../../src/mem/dmabuf.js';
import { IovaSpace, VFIO_IOVA_BASE, importVfioDmaBuf, type DmaMapper } from '../../src/mem/vfio-dma.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { createUdmabuf, hasUdmabuf, inspectDmaBuf } from '../../src/sys/dmabuf.js';
import { closeFd, createShm, type ShmRegion } from '../../src/sys/shm.js';
import { BS, KiB, P2pRig, isTransferError, pattern } from './p2p-rig.js';
import { firstDiff } from '../driver/helpers.js';

const NO_UDMABUF = hasUdmabuf() ? false : 'no /dev/udmabuf on this kernel';
const SIZE = 64 * KiB;

describe('dma-buf import on the embedded controller (memfd mode)', () => {
  let rig: P2pRig;
  const logs: string[] = [];
  let slba = 0;

  before(async () => {
    rig = await P2pRig.open((m) => logs.push(m));
  });
  after(async () => {
    await rig.close();
  });

  const asBuffer = (imp: ImportedDmaBuf): DmaBuffer => ({ iova: imp.iova, size: imp.size, bytes: imp.view });

  /** Write `data` at LBA `lba` from ordinary DMA memory. */
  async function writeLbas(lba: number, data: Uint8Array): Promise<void> {
    rig.host.bytes.set(data);
    const dp = dataPointer(rig.emu.dma, rig.host, 0, data.length);
    try {
      assert.equal((await rig.io(NvmOpcode.Write, lba, data.length, dp)).status, 0);
    } finally {
      dp.release();
    }
  }

  /** Read `len` bytes at LBA `lba` into [off, off + len) of the imported buffer; returns the status. */
  async function readInto(imp: ImportedDmaBuf, off: number, lba: number, len: number): Promise<number> {
    const dp = dataPointer(rig.emu.dma, asBuffer(imp), off, len);
    try {
      return (await rig.io(NvmOpcode.Read, lba, len, dp)).status;
    } finally {
      dp.release();
    }
  }

  /** The whole exercise on one handle whose pages are also mapped as `backing` (the memfd). */
  async function exercise(h: DmaBufHandle, backing: ShmRegion): Promise<void> {
    const imp = rig.emu.queueExporter()!.importDmaBuf(h, 'test');
    try {
      assert.equal(imp.transport, 'emu-memfd');
      assert.equal(imp.size, SIZE);
      assert.equal(imp.iova % 2 ** 32, 0, 'a segment of its own');
      const mem = new Uint8Array(backing.buffer, 0, SIZE);
      // read: NVMe -> dma-buf (PRP list: 16 pages), checked through the memfd
      const data = pattern(SIZE, 41);
      const lba = slba;
      slba += SIZE / BS;
      await writeLbas(lba, data);
      mem.fill(0);
      assert.equal(await readInto(imp, 0, lba, SIZE), 0);
      assert.equal(firstDiff(mem, data), -1, 'the read landed in the dma-buf pages (seen through the memfd)');
      assert.equal(firstDiff(imp.view, data), -1, 'and through the import mapping');
      // write: dma-buf -> NVMe, the data put there through the memfd
      const out = pattern(8 * KiB, 42);
      mem.set(out, 16 * KiB);
      const dp = dataPointer(rig.emu.dma, asBuffer(imp), 16 * KiB, out.length);
      try {
        assert.equal((await rig.io(NvmOpcode.Write, lba + 1, out.length, dp)).status, 0);
      } finally {
        dp.release();
      }
      rig.host.bytes.fill(0);
      const back = dataPointer(rig.emu.dma, rig.host, 0, out.length);
      try {
        assert.equal((await rig.io(NvmOpcode.Read, lba + 1, out.length, back)).status, 0);
      } finally {
        back.release();
      }
      assert.equal(firstDiff(rig.host.bytes.subarray(0, out.length), out), -1, 'the write took its data from the dma-buf');
      // a PRP running past the buffer's end is a transfer error and writes nothing outside
      const past: DmaBuffer = { iova: imp.iova + SIZE - BS, size: 2 * BS, bytes: new Uint8Array(0) };
      const pdp = dataPointer(rig.emu.dma, past, 0, 2 * BS);
      try {
        assert.ok(isTransferError((await rig.io(NvmOpcode.Read, lba, 2 * BS, pdp)).status), 'PRP past the end: Data Transfer Error');
      } finally {
        pdp.release();
      }
    } finally {
      imp.release();
    }
    // released: the controller forgot the segment
    const gone: DmaBuffer = { iova: imp.iova, size: BS, bytes: new Uint8Array(0) };
    const gdp = dataPointer(rig.emu.dma, gone, 0, BS);
    try {
      assert.ok(isTransferError((await rig.io(NvmOpcode.Read, 0, BS, gdp)).status), 'a PRP into a released import is a DMA fault');
    } finally {
      gdp.release();
    }
  }

  it('MEMFD STAND-IN: reads land in the imported pages, writes take data from them, PRPs past the end or after release fault', async () => {
    const backing = createShm('dmabuf-stand-in', SIZE);
    try {
      const h = memfdStandIn(backing.fd);
      assert.equal(h.exporter, MEMFD_STAND_IN_EXPORTER);
      assert.equal(h.standIn, true);
      assert.match(describeDmaBuf(h), /^memfd stand-in for a dma-buf/);
      await exercise(h, backing);
    } finally {
      backing.close();
    }
  });

  it('a real udmabuf over a sealed memfd: the same, and the kernel reports it as a dma-buf', { skip: NO_UDMABUF }, async () => {
    const backing = createShm('dmabuf-udmabuf', SIZE);
    const fd = createUdmabuf([{ memfd: backing.fd, offset: 0, size: SIZE }]);
    try {
      const f = inspectDmaBuf(fd);
      assert.equal(f.exporter, 'udmabuf');
      assert.equal(f.size, SIZE);
      const h = openDmaBuf(fd);
      assert.equal(h.standIn, false);
      await exercise(h, backing);
    } finally {
      closeFd(fd);
      backing.close();
    }
  });

  it('a stand-in that is not a size-sealed memfd, or a size not a page multiple, is refused with one error', () => {
    const odd = createShm('dmabuf-odd', 6000);
    try {
      // createShm rounds nothing: a 6000-byte memfd is sealed but not page sized
      const h = memfdStandIn(odd.fd);
      assert.throws(
        () => rig.emu.queueExporter()!.importDmaBuf(h, 'odd'),
        (e: unknown) => e instanceof DmaBufImportError && /not a multiple of 4096/.test(e.message),
      );
    } finally {
      odd.close();
    }
  });

  it('GPU exporters are routed to the copy-engine path and uio is refused, each naming what an import needs', () => {
    // A handle that claims a GPU exporter: the importer refuses it by exporter before touching the fd.
    const backing = createShm('dmabuf-gpu-claim', SIZE);
    try {
      const gpu: DmaBufHandle = { fd: backing.fd, size: SIZE, exporter: 'nv_dmabuf', standIn: false, close: () => undefined };
      assert.throws(
        () => rig.emu.queueExporter()!.importDmaBuf(gpu, 'gpu'),
        (e: unknown) => e instanceof DmaBufImportError && e.transport === 'emu-memfd' && e.exporter === 'nv_dmabuf' && /copy-engine path/.test(e.message) && /out-of-tree/.test(e.needs),
      );
      const u = uioRefusal(gpu);
      assert.equal(u.transport, 'pcie-uio');
      assert.match(u.message, /no upstream interface gives user space the bus addresses of a dma-buf/);
      assert.match(u.needs, /out-of-tree dma-buf importer/);
    } finally {
      backing.close();
    }
  });
});

describe('dma-buf import for VFIO (importVfioDmaBuf) against a recording DMA mapper', () => {
  /** A DmaMapper that records map/unmap calls, or refuses maps with `refuse`. */
  function mapper(refuse: Error | null): DmaMapper & { maps: Array<[bigint, number, number]>; unmaps: Array<[number, number]> } {
    const maps: Array<[bigint, number, number]> = [];
    const unmaps: Array<[number, number]> = [];
    return {
      maps,
      unmaps,
      mapDma(vaddr: bigint, iova: number, size: number): void {
        if (refuse) throw refuse;
        maps.push([vaddr, iova, size]);
      },
      unmapDma(iova: number, size: number): void {
        unmaps.push([iova, size]);
      },
    };
  }

  it('MEMFD STAND-IN: the mapping of the buffer is what goes into the IOMMU, at an IOVA of the space, and comes out on release', () => {
    const backing = createShm('dmabuf-vfio', SIZE);
    try {
      const m = mapper(null);
      const iovas = new IovaSpace();
      const imp = importVfioDmaBuf(m, iovas, memfdStandIn(backing.fd), 'vfio');
      assert.equal(imp.transport, 'pcie-vfio');
      assert.equal(m.maps.length, 1);
      const [vaddr, iova, size] = m.maps[0]!;
      assert.equal(iova, imp.iova);
      assert.equal(size, SIZE);
      assert.ok(iova >= VFIO_IOVA_BASE);
      assert.ok(vaddr > 0n);
      new Uint8Array(backing.buffer)[123] = 0x5a;
      assert.equal(imp.view[123], 0x5a, 'the imported view maps the same pages');
      imp.release();
      imp.release();
      assert.deepEqual(m.unmaps, [[iova, SIZE]], 'unmapped once');
      assert.equal(iovas.alloc(SIZE), iova, 'the IOVA range is free again');
    } finally {
      backing.close();
    }
  });

  it('a kernel refusal of the map is one DmaBufImportError with the errno, naming IOMMU_IOAS_MAP_FILE; nothing stays reserved', () => {
    const backing = createShm('dmabuf-vfio-refused', SIZE);
    try {
      const iovas = new IovaSpace();
      const first = iovas.alloc(SIZE);
      iovas.free(first, SIZE);
      const refusal = new Error('VFIO_IOMMU_MAP_DMA(iova 0x100000000, 65536 bytes): EFAULT (errno 14)');
      assert.throws(
        () => importVfioDmaBuf(mapper(refusal), iovas, memfdStandIn(backing.fd), 'vfio'),
        (e: unknown) => e instanceof DmaBufImportError && e.transport === 'pcie-vfio' && /EFAULT \(errno 14\)/.test(e.message) && /IOMMU_IOAS_MAP_FILE/.test(e.needs),
      );
      assert.equal(iovas.alloc(SIZE), first, 'the IOVA range was given back');
    } finally {
      backing.close();
    }
  });
});
