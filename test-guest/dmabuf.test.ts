// dma-buf import (src/mem/dmabuf.ts) with real udmabufs, run INSIDE the VM harness's guest (Debian 6.12 has
// CONFIG_UDMABUF=y): a udmabuf over a sealed memfd is imported by the embedded controller, by the user-space driver
// on QEMU's NVMe controller (vfio with the IOMMU; uio is refused, with the reason), and by homid as the data buffer
// of a mediated lease that a client of uid 65534 reads through. NVMe reads are checked through the memfd, i.e. a
// second mapping of the pages behind the dma-buf. The controller is back on nvme after each test.
//
//   node dist/src/vm/cli.js run --nvme serial=HOMIA,ns=64M --modules nvme,uio_pci_generic \
//     --hugepages 64 -- node --test dist/test-guest/dmabuf.test.js
//   node dist/src/vm/cli.js run --iommu --nvme serial=HOMIA,ns=64M:4096 --modules nvme,vfio-pci \
//     --hugepages 64 -- node --test dist/test-guest/dmabuf.test.js
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Controller } from '../src/driver/controller.js';
import { dataPointer } from '../src/driver/dptr.js';
import type { QueuePair } from '../src/driver/queue-pair.js';
import type { DmaBuffer } from '../src/mem/dma.js';
import { DmaBufImportError, openDmaBuf, type ImportedDmaBuf } from '../src/mem/dmabuf.js';
import { NvmOpcode } from '../src/nvme/opcodes.js';
import { createUdmabuf, hasUdmabuf, inspectDmaBuf } from '../src/sys/dmabuf.js';
import { closeFd, createShm, type ShmRegion } from '../src/sys/shm.js';
import { openEmu } from '../src/transport/emu.js';
import { openPcie } from '../src/transport/pcie.js';
import { startHomidServer } from '../src/daemon/server.js';
import { config, pattern, silent } from '../test/daemon/fixtures.js';
import { asNobody, hostileSkipReason, sharedTmpDir } from '../test/daemon/hostile.js';
import { nextJson, until } from '../test/daemon/procs.js';
import { haveTool, mkExt4 } from '../test/extents/fixtures.js';
import { assertInGuest, controllerBySerial, expectedNvme, namespacesOf, pciDriver, sys, waitFor } from './helpers.js';

assertInGuest();

const IOMMU = process.env.HOMI_GUEST_IOMMU === '1';
const MODE: 'uio' | 'vfio' = IOMMU ? 'vfio' : 'uio';
const KiB = 1024;
const SIZE = 256 * KiB;
/** Bytes per command (below the embedded controller's 128 KiB MDTS). */
const CHUNK = 64 * KiB;
const NO_UDMABUF = hasUdmabuf() ? false : 'no /dev/udmabuf on this kernel';
const spec = expectedNvme()[0]!;
const kctrl = await waitFor(`controller ${spec.serial}`, () => controllerBySerial(spec.serial));
const BDF = kctrl.bdf;

/** A sealed memfd of SIZE and a udmabuf over it. */
function udmabuf(name: string): { backing: ShmRegion; fd: number; close(): void } {
  const backing = createShm(name, SIZE);
  const fd = createUdmabuf([{ memfd: backing.fd, offset: 0, size: SIZE }]);
  return {
    backing,
    fd,
    close: () => {
      closeFd(fd);
      backing.close();
    },
  };
}

async function pollOne(qp: QueuePair): Promise<number> {
  let st = -1;
  const t0 = Date.now();
  let spins = 0;
  while (st < 0) {
    qp.poll((_t, s) => void (st = s));
    if (Date.now() - t0 > 20_000) throw new Error(`no completion on queue ${qp.qid}`);
    if (++spins % 256 === 0) await new Promise((r) => setImmediate(r));
  }
  return st;
}

/** Commands of at most CHUNK over [off, off + len) of `buf` from LBA `slba`, one at a time; the first non-zero status, or 0. */
async function io(dma: Parameters<typeof dataPointer>[0], qp: QueuePair, op: number, slba: number, buf: DmaBuffer, off: number, len: number, lbs: number): Promise<number> {
  for (let at = 0; at < len; at += CHUNK) {
    const n = Math.min(CHUNK, len - at);
    const dp = dataPointer(dma, buf, off + at, n);
    try {
      assert.ok(qp.submitIo(op, 1, slba + at / lbs, n / lbs, dp.prp1, dp.prp2, 1) >= 0);
      qp.ring();
      const st = await pollOne(qp);
      if (st !== 0) return st;
    } finally {
      dp.release();
    }
  }
  return 0;
}

const asBuffer = (imp: ImportedDmaBuf): DmaBuffer => ({ iova: imp.iova, size: imp.size, bytes: imp.view });

test('udmabuf: the guest kernel makes a dma-buf of a sealed memfd, and it is recognised as one', { skip: NO_UDMABUF }, () => {
  const u = udmabuf('guest-udmabuf');
  try {
    assert.deepEqual(inspectDmaBuf(u.fd), { size: SIZE, exporter: 'udmabuf', name: '' });
    assert.throws(() => inspectDmaBuf(u.backing.fd), /is not a dma-buf/);
  } finally {
    u.close();
  }
});

test('udmabuf imported by the embedded controller: NVMe reads land in it (seen through the memfd)', { skip: NO_UDMABUF }, async () => {
  const emu = await openEmu({ namespaces: [{ sizeBytes: 4 << 20, lbads: 12 }], backing: 'memory', sharedMemory: 'memfd' });
  const u = udmabuf('guest-emu-udmabuf');
  try {
    const c = await Controller.open(emu, { log: () => undefined });
    try {
      const qp = await c.createQueuePair({ entries: 16 });
      const imp = emu.queueExporter()!.importDmaBuf(openDmaBuf(u.fd), 'guest');
      try {
        const src = emu.dma.alloc(SIZE);
        src.bytes.set(pattern(SIZE, 11));
        assert.equal(await io(emu.dma, qp, NvmOpcode.Write, 0, src, 0, SIZE, 4096), 0);
        const mem = new Uint8Array(u.backing.buffer, 0, SIZE);
        mem.fill(0);
        assert.equal(await io(emu.dma, qp, NvmOpcode.Read, 0, asBuffer(imp), 0, SIZE, 4096), 0);
        assert.ok(Buffer.from(mem).equals(Buffer.from(src.bytes)), 'the read landed in the udmabuf pages');
        emu.dma.free(src);
      } finally {
        imp.release();
      }
    } finally {
      await c.close();
    }
  } finally {
    u.close();
    await emu.close();
  }
});

test(`${MODE}: a udmabuf for the user-space driver on QEMU's NVMe controller`, { skip: NO_UDMABUF, timeout: 120_000 }, async (t) => {
  const lbs = Number(sys(`/sys/block/${namespacesOf(kctrl).get(1)!}/queue/logical_block_size`));
  const u = udmabuf('guest-pcie-udmabuf');
  const tr = await openPcie(BDF, { mode: MODE });
  try {
    const c = await Controller.open(tr, { ioQueues: 1 });
    try {
      let imp: ImportedDmaBuf | undefined; // undefined: the kernel refused, and its answer is asserted below
      try {
        imp = tr.queueExporter().importDmaBuf(openDmaBuf(u.fd), 'guest');
      } catch (e) {
        assert.ok(e instanceof DmaBufImportError, String(e));
        if (MODE === 'uio') {
          assert.equal(e.transport, 'pcie-uio');
          assert.match(e.message, /no upstream interface gives user space the bus addresses of a dma-buf/);
          t.diagnostic(`uio refuses: ${e.message}`);
        } else {
          // vfio: the kernel refused the mapping; its answer is the result of this test, recorded here
          assert.match(e.message, /VFIO_IOMMU_MAP_DMA of its mapping was refused by the kernel \(.*errno \d+/);
          assert.match(e.needs, /IOMMU_IOAS_MAP_FILE/);
          t.diagnostic(`KERNEL ANSWER (vfio type1 on ${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}): ${e.message}`);
        }
      }
      if (imp !== undefined) {
        assert.equal(MODE, 'vfio', 'uio must refuse');
        t.diagnostic(
          `KERNEL ANSWER (vfio type1 on ${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}): VFIO_IOMMU_MAP_DMA accepted the udmabuf mapping at IOVA 0x${imp.iova.toString(16)}`,
        );
        try {
          const qp = await c.createQueuePair({ entries: 16 });
          const src = tr.dma.alloc(SIZE);
          src.bytes.set(pattern(SIZE, 12));
          const slba = 64;
          assert.equal(await io(tr.dma, qp, NvmOpcode.Write, slba, src, 0, SIZE, lbs), 0);
          const mem = new Uint8Array(u.backing.buffer, 0, SIZE);
          mem.fill(0);
          assert.equal(await io(tr.dma, qp, NvmOpcode.Read, slba, asBuffer(imp), 0, SIZE, lbs), 0);
          assert.ok(Buffer.from(mem).equals(Buffer.from(src.bytes)), 'the device DMA landed in the udmabuf pages');
          tr.dma.free(src);
          await c.deleteQueuePair(qp);
        } finally {
          imp.release();
        }
      }
    } finally {
      await c.close();
    }
  } finally {
    await tr.close();
    u.close();
  }
  assert.equal(pciDriver(BDF), 'nvme');
});

const homidSkip = NO_UDMABUF || hostileSkipReason() || (!haveTool('mkfs.ext4') ? 'mkfs.ext4 is not installed' : null);

test('homid: a mediated lease whose data buffer is a udmabuf, read by a client of uid 65534', { skip: homidSkip ?? false, timeout: 300_000 }, async () => {
  const dir = sharedTmpDir('homid-udmabuf-');
  const tree = path.join(dir, 'tree');
  fs.mkdirSync(tree, { mode: 0o755 });
  fs.chmodSync(tree, 0o755);
  const mine = path.join(tree, 'mine.bin');
  fs.writeFileSync(mine, pattern(32 * KiB, 5), { mode: 0o644 });
  fs.chmodSync(mine, 0o644);
  const image = path.join(dir, 'disk.img');
  mkExt4(image, tree, 16);
  const sock = path.join(dir, 'homid.sock');
  // the production dma-buf check: no stand-in here
  const srv = await startHomidServer(
    config({
      socket: sock,
      socket_mode: '0666',
      device: [{ name: 'img', uri: `emu://${image}?size=16MiB`, extents: 'decoder:ext4', extent_root: tree }],
      class: { default: { queue_pairs: 4, per_client: 2, write: false } },
    }),
    { logger: silent() },
  );
  // /dev/udmabuf is root's only in this guest (distributions open it to a group); the client of uid 65534 makes its
  // own udmabuf, so the test opens the device to it for the test's length
  const mode = fs.statSync('/dev/udmabuf').mode & 0o777;
  fs.chmodSync('/dev/udmabuf', 0o666);
  try {
    const child = asNobody([sock, 'dmabuf-lease', 'img', mine, 'udmabuf']);
    // a TCG guest on a loaded host starts a node process slowly
    const r = await nextJson(child, 180_000);
    await child.exited;
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.dataDmaBuf, true);
    assert.equal(r.status, 0);
    assert.equal(r.match, true, 'the file arrived in the client udmabuf, seen through its memfd');
    assert.notEqual(r.outside, 0, 'a transfer past the udmabuf is refused by the mediated checks');
    assert.equal(r.untouchedTail, true);
    await until(() => srv.homid.counters.reclaimedQueuePairs === 1, 20_000, 'the lease released on disconnect');
  } finally {
    fs.chmodSync('/dev/udmabuf', mode);
    await srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
