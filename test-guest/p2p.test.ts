// Peer-to-peer DMA INSIDE the VM harness's guest: QEMU's NVMe controller reads namespace blocks straight into a
// peer function's BAR (ivshmem-plain's BAR2, backed by a host file) and writes them back from there, driven by
// HOMI's user-space driver through uio (no IOMMU) or VFIO (IOMMU: the BAR entered into the controller's IOMMU
// domain at an IOVA HOMI chose).
//
// The host (test/vm/vm.test.ts, suite "p2p") prepares the namespace image with a random pattern the guest never
// sees (only its SHA-256, in HOMI_P2P), and after the run checks the bytes in the ivshmem file, in the namespace
// image, and that the pattern appears nowhere in the guest's RAM (a file-backed memory backend). The guest side
// checks statuses, that every PRP it submits lies inside the peer window, and hashes of the BAR contents (hashing
// reads the BAR mapping in place; nothing copies it into guest RAM).
//
//   node dist/src/vm/cli.js run --ivshmem gpu0:16M --nvme serial=HOMI-P2P,ns=64M:4096 --modules nvme,uio_pci_generic \
//     --hugepages 64 --env 'HOMI_P2P={"sha256":"...","src":4194304,"dst":8388608,"bytes":1048576}' \
//     -- node --test dist/test-guest/p2p.test.js
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { Controller } from '../src/driver/controller.js';
import { dataPointer, type DataPointer } from '../src/driver/dptr.js';
import type { QueuePair } from '../src/driver/queue-pair.js';
import type { DeviceMemoryAllocator } from '../src/mem/device-memory.js';
import type { DmaBuffer } from '../src/mem/dma.js';
import { VFIO_IOVA_BASE } from '../src/mem/vfio-dma.js';
import { NvmOpcode } from '../src/nvme/opcodes.js';
import { mapPeerBar, peerBarInfo } from '../src/pci/peer-bar.js';
import { sysPaths } from '../src/pci/sysfs.js';
import { openPcie, type PcieTransport } from '../src/transport/pcie.js';
import { STATUS_INVALID_FIELD } from '../src/daemon/mediated.js';
import { startHomidServer } from '../src/daemon/server.js';
import { config, pattern, silent } from '../test/daemon/fixtures.js';
import { asNobody, hostileSkipReason, sharedTmpDir } from '../test/daemon/hostile.js';
import { nextJson, until } from '../test/daemon/procs.js';
import { haveTool, mkExt4 } from '../test/extents/fixtures.js';
import { assertInGuest, controllerBySerial, expectedNvme, namespacesOf, pciDriver, sys, waitFor } from './helpers.js';

assertInGuest();

const IOMMU = process.env.HOMI_GUEST_IOMMU === '1';
const MODE: 'uio' | 'vfio' = IOMMU ? 'vfio' : 'uio';
const MiB = 1024 * 1024;
/** ivshmem-plain: PCI 1af4:1110, shared memory in BAR2. */
const IVSHMEM = { vendor: '0x1af4', device: '0x1110' };
/** Half a MiB per command: within QEMU's default MDTS (128 pages of 4 KiB). */
const CHUNK = 512 * 1024;

interface P2pLayout {
  sha256: string;
  /** Byte offset of the host's pattern in namespace 1. */
  src: number;
  /** Byte offset the guest writes the pattern to (from the BAR). */
  dst: number;
  bytes: number;
}

function findPeer(): string | undefined {
  const base = '/sys/bus/pci/devices';
  return readdirSync(base).find((d) => sys(`${base}/${d}/vendor`) === IVSHMEM.vendor && sys(`${base}/${d}/device`) === IVSHMEM.device);
}

const PEER = findPeer();
const LAYOUT: P2pLayout | undefined = process.env.HOMI_P2P ? (JSON.parse(process.env.HOMI_P2P) as P2pLayout) : undefined;
const NO_PEER = PEER === undefined || LAYOUT === undefined ? 'no ivshmem device in this run' : false;
const spec = expectedNvme().find((s) => s.serial.startsWith('HOMI-P2P'));
const skip = NO_PEER || (spec === undefined ? 'no HOMI-P2P controller in this run' : false);

async function nvmeBdf(): Promise<string> {
  const c = await waitFor(`controller ${spec!.serial}`, () => controllerBySerial(spec!.serial));
  return c.bdf;
}

async function pollUntil(qp: QueuePair, onDone: (tag: number, status: number) => void, done: () => boolean, ms = 30_000): Promise<void> {
  const t0 = Date.now();
  let spins = 0;
  while (!done()) {
    qp.poll(onDone);
    if (Date.now() - t0 > ms) throw new Error(`I/O did not complete within ${ms} ms on queue ${qp.qid}`);
    if (++spins % 256 === 0) await new Promise((r) => setImmediate(r));
  }
}

/** Every address the controller will follow for `dp`: PRP1, PRP2 or the entries of its PRP list. */
function prpTargets(dp: DataPointer, pageSize: number): number[] {
  const pages = Math.ceil(((dp.prp1 % pageSize) + dp.length) / pageSize);
  const out = [dp.prp1];
  if (dp.list === null) {
    if (dp.prp2 !== 0) out.push(dp.prp2);
    return out;
  }
  const v = new DataView(dp.list.bytes.buffer, dp.list.bytes.byteOffset, dp.list.bytes.byteLength);
  for (let i = 0; i < pages - 1; i++) out.push(Number(v.getBigUint64(i * 8, true)));
  return out;
}

/** One command over `len` bytes of buf at `off`; asserts every PRP lies in the device-memory window. */
async function rw(t: PcieTransport, dm: DeviceMemoryAllocator, qp: QueuePair, op: number, byteOffset: number, buf: DmaBuffer, off: number, len: number, lbs: number): Promise<number> {
  const dp = dataPointer(t.dma, buf, off, len);
  try {
    const pl = dm.placement;
    for (const a of prpTargets(dp, t.dma.pageSize)) {
      assert.ok(a >= pl.iova && a < pl.iova + pl.bytes, `PRP 0x${a.toString(16)} outside the device-memory window 0x${pl.iova.toString(16)}+${pl.bytes}`);
    }
    let st = -1;
    assert.ok(qp.submitIo(op, 1, byteOffset / lbs, len / lbs, dp.prp1, dp.prp2, 9) >= 0);
    qp.ring();
    await pollUntil(
      qp,
      (_t, s) => (st = s),
      () => st >= 0,
    );
    return st;
  } finally {
    dp.release();
  }
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

async function withPeerDma<T>(windowBytes: number | undefined, fn: (t: PcieTransport, c: Controller, dm: DeviceMemoryAllocator, qp: QueuePair) => Promise<T>): Promise<T> {
  const bdf = await nvmeBdf();
  const t = await openPcie(bdf, { mode: MODE });
  try {
    const dm = t.peerBarDma(PEER!, 2, windowBytes);
    const c = await Controller.open(t, { ioQueues: 1 });
    try {
      const qp = await c.createQueuePair({ entries: 16 });
      return await fn(t, c, dm, qp);
    } finally {
      await c.close();
    }
  } finally {
    await t.close();
    await waitFor(`${bdf} back on nvme`, () => pciDriver(bdf) === 'nvme');
  }
}

// Runs before the others: homid zeroes its lease buffers (BAR offsets 0..128 KiB) when the lease ends, and the
// tests after it leave in the BAR what the host checks. The namespace's first 3 MiB get a small ext4 (the client
// needs a file grant); the host's pattern starts at 4 MiB.
test(
  `${MODE}: homid lends device memory in the peer BAR: a client of uid 65534 reads a file into it; PRPs outside its buffer are denied`,
  { skip: skip || hostileSkipReason() || (!haveTool('mkfs.ext4') ? 'mkfs.ext4 is not installed' : false), timeout: 400_000 },
  async () => {
    const bdf = await nvmeBdf();
    const ctrl = await waitFor(`controller ${spec!.serial}`, () => controllerBySerial(spec!.serial));
    const blk = await waitFor('namespace 1 block device', () => namespacesOf(ctrl).get(1));
    const dir = sharedTmpDir('homid-devmem-');
    const tree = path.join(dir, 'tree');
    fs.mkdirSync(tree, { mode: 0o755 });
    fs.chmodSync(tree, 0o755);
    const mine = path.join(tree, 'mine.bin');
    fs.writeFileSync(mine, pattern(32 * 1024, 11), { mode: 0o644 });
    fs.chmodSync(mine, 0o644);
    const image = path.join(dir, 'fs.img');
    mkExt4(image, tree, 3);
    const img = fs.readFileSync(image);
    assert.ok(img.length <= 3 * MiB && LAYOUT!.src >= 3 * MiB, 'the file system stays clear of the host pattern');
    const fd = fs.openSync(`/dev/${blk}`, 'r+');
    try {
      fs.writeSync(fd, img, 0, img.length, 0);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    const sock = path.join(dir, 'homid.sock');
    const srv = await startHomidServer(
      config({
        socket: sock,
        socket_mode: '0666',
        device: [{ name: 'p2p', uri: `pci:${bdf}?mode=${MODE}`, extents: 'decoder:ext4', extent_root: tree, io_queues: 4, device_memory: `peer:${PEER!}`, device_memory_users: [65534] }],
        class: { default: { queue_pairs: 4, per_client: 4, write: false } },
      }),
      { logger: silent() },
    );
    try {
      const child = asNobody([sock, 'devmem-lease', 'p2p', mine], 'pipe');
      const r = await nextJson(child, 240_000);
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.zeroAtStart, true);
      assert.equal(r.status, 0);
      assert.equal(r.match, true, 'the file arrived in the client mapping of its BAR buffer');
      assert.equal(r.outside, STATUS_INVALID_FIELD, 'a read aimed past its buffer (at its other buffer in the BAR) is denied by the mediated check');
      assert.equal(srv.homid.counters.deniedCommands, 1, 'homid denied exactly that command');
      assert.equal(r.bUntouched, true);
      const da = r.dataDevice as { fd: number; offset: number; what: string };
      assert.equal(da.what, `BAR2 of ${PEER!}`);
      // the bytes are in the BAR itself: read them through a mapping of our own while the client holds the lease
      const info = peerBarInfo(sysPaths(), PEER!, 2);
      const bar = mapPeerBar(sysPaths(), info);
      try {
        const want = fs.readFileSync(mine).subarray(0, 16 * 1024);
        assert.ok(Buffer.from(bar.bytes.subarray(da.offset, da.offset + want.length)).equals(want), 'the BAR holds the file bytes at the lease offset');
        child.p.stdin!.end();
        await child.exited;
        await until(() => srv.homid.counters.reclaimedQueuePairs >= 2, 30_000, 'both leases released on disconnect');
        assert.ok(
          bar.bytes.subarray(da.offset, da.offset + 128 * 1024).every((b) => b === 0),
          'homid zeroed the buffers in the BAR when the client went away',
        );
      } finally {
        bar.release();
      }
      process.stdout.write(`P2P ${MODE}: homid lease data buffer in ${da.what} at offset ${da.offset}, read by uid 65534, denied outside: status 0x${Number(r.outside).toString(16)}\n`);
    } finally {
      await srv.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    await waitFor(`${bdf} back on nvme`, () => pciDriver(bdf) === 'nvme', 60_000);
  },
);

// Runs first: its buffers sit at the start of the BAR too, and the host checks what the next test leaves there.
test(`${MODE}: homi perf --buffers peer: reads with --verify into the peer BAR and says where the buffers were`, { skip }, async () => {
  const bdf = await nvmeBdf();
  const r = spawnSync(
    process.execPath,
    [
      'dist/src/cli/main.js',
      'perf',
      `pci:${bdf}?mode=${MODE}`,
      '--buffers',
      `peer:${PEER!}`,
      '--rw',
      'randrw',
      '--bs',
      '4k',
      '--qd',
      '8',
      '--ios',
      '200',
      '--verify',
      '--verify-span',
      '256KiB',
      '--json',
    ],
    {
      encoding: 'utf8',
      timeout: 400_000,
    },
  );
  assert.equal(r.status, 0, `status ${r.status} signal ${r.signal}\n${r.stdout}\n${r.stderr}`);
  const rep = JSON.parse(r.stdout.trim().split('\n').pop()!) as { buffers: string; errors: number; verifyErrors: number; verified: number; ios: number };
  assert.match(rep.buffers, new RegExp(`^device memory: BAR2 of ${PEER!.replace(/\./g, '\\.')}, \\d+ bytes at ${IOMMU ? 'IOVA' : 'bus address'} 0x`));
  assert.equal(rep.errors, 0);
  assert.equal(rep.verifyErrors, 0);
  assert.ok(rep.verified > 0);
  await waitFor(`${bdf} back on nvme`, () => pciDriver(bdf) === 'nvme');
});

test(`${MODE}: namespace -> peer BAR -> namespace by peer-to-peer DMA; every PRP in the BAR window`, { skip }, async () => {
  const L = LAYOUT!;
  const info = peerBarInfo(sysPaths(), PEER!, 2);
  await withPeerDma(undefined, async (t, c, dm, qp) => {
    const pl = dm.placement;
    const lbs = c.namespace(1).blockSize;
    if (IOMMU) {
      assert.equal(pl.route, 'iommu');
      assert.ok(pl.iova >= VFIO_IOVA_BASE, 'an IOVA HOMI chose, not the bus address');
    } else {
      assert.equal(pl.route, 'bus');
      assert.equal(pl.iova, info.start, 'uio: the bus address from sysfs');
    }
    assert.equal(pl.busAddress, info.start);
    assert.equal(pl.bytes, info.size);
    const a = dm.alloc(L.bytes);
    const b = dm.alloc(L.bytes);
    // First fit: the host checks the file at these offsets.
    assert.equal(a.iova - pl.iova, 0);
    assert.equal(b.iova - pl.iova, L.bytes);
    for (let o = 0; o < L.bytes; o += CHUNK) assert.equal(await rw(t, dm, qp, NvmOpcode.Read, L.src + o, a, o, CHUNK, lbs), 0, `read into the BAR at +${o}`);
    assert.equal(sha256(a.bytes), L.sha256, 'the BAR holds the namespace pattern');
    for (let o = 0; o < L.bytes; o += CHUNK) assert.equal(await rw(t, dm, qp, NvmOpcode.Write, L.dst + o, a, o, CHUNK, lbs), 0, `write from the BAR at +${o}`);
    for (let o = 0; o < L.bytes; o += CHUNK) assert.equal(await rw(t, dm, qp, NvmOpcode.Read, L.dst + o, b, o, CHUNK, lbs), 0, `read back into the BAR at +${L.bytes + o}`);
    assert.equal(sha256(b.bytes), L.sha256, 'written from the BAR and read back into it');
    process.stdout.write(
      `P2P ${MODE}: peer ${PEER} BAR2 bus 0x${info.start.toString(16)} (${info.size} bytes), window at ${pl.route === 'iommu' ? 'IOVA' : 'bus address'} 0x${pl.iova.toString(16)}\n`,
    );
  });
});

test(`${MODE}: a peer that is not device memory is refused before anything is bound`, { skip }, async () => {
  const bdf = await nvmeBdf();
  const t = await openPcie(bdf, { mode: MODE });
  try {
    assert.throws(() => t.peerBarDma(PEER!, 0), /BAR0 is not prefetchable/);
    assert.throws(() => t.peerBarDma(bdf, 2), /is the controller itself/);
    assert.throws(() => t.peerBarDma(PEER!, 2, 1024 * MiB), /too small/);
  } finally {
    await t.close();
  }
  await waitFor(`${bdf} back on nvme`, () => pciDriver(bdf) === 'nvme');
});

// QEMU 7.2's NVMe model maps I/O data through dma_memory_map: a translation the vIOMMU refuses is bounced through
// unassigned memory, so the command completes with success while the IOMMU blocks the access and records a DMAR
// fault. What this test holds to: the fault is reported by the IOMMU for exactly that address, the BAR behind it
// is not written (the host checks the file: test/vm/vm.test.ts), and the controller keeps working. The status
// the controller returned is printed, not asserted (a controller that checks its DMA would fail the command).
test(
  `vfio: a PRP into a part of the peer BAR that was not entered into the IOMMU is blocked by the IOMMU and writes nothing`,
  { skip: skip || (IOMMU ? false : 'needs the IOMMU (vfio)') },
  async () => {
    const L = LAYOUT!;
    const info = peerBarInfo(sysPaths(), PEER!, 2);
    // Map only the first 4 MiB of the BAR; the unmapped part starts there.
    const WINDOW = 4 * MiB;
    assert.ok(info.size >= 2 * WINDOW, 'the BAR is larger than the window');
    // The bus address of the BAR at +4 MiB: real device memory, but no IOVA of the controller's domain leads there.
    const target = info.start + WINDOW;
    const faultRe = new RegExp(`DMAR: \\[DMA Write[^\\]]*\\] Request device \\[[0-9a-f:.]+\\] fault addr 0x0*${target.toString(16)}`, 'i');
    const faultsBefore = (spawnSync('dmesg', [], { encoding: 'utf8' }).stdout ?? '').split('\n').filter((l) => faultRe.test(l)).length;
    await withPeerDma(WINDOW, async (t, c, dm, qp) => {
      const lbs = c.namespace(1).blockSize;
      assert.equal(dm.placement.bytes, WINDOW);
      let st = -1;
      assert.ok(qp.submitIo(NvmOpcode.Read, 1, L.src / lbs, 4096 / lbs, target, 0, 3) >= 0);
      qp.ring();
      await pollUntil(
        qp,
        (_t, s) => (st = s),
        () => st >= 0,
      );
      process.stdout.write(`P2P vfio: read into the unmapped BAR part (bus address 0x${target.toString(16)}) completed with status 0x${st.toString(16)}\n`);
      // The controller still works: a good read into the window afterwards lands there.
      const buf = dm.alloc(4096);
      assert.equal(await rw(t, dm, qp, NvmOpcode.Read, L.src, buf, 0, 4096, lbs), 0);
    });
    const lines = await waitFor('the IOMMU fault in the kernel log', () => {
      const l = (spawnSync('dmesg', [], { encoding: 'utf8' }).stdout ?? '').split('\n').filter((x) => faultRe.test(x));
      return l.length > faultsBefore ? l : undefined;
    });
    process.stdout.write(`P2P vfio: ${lines[lines.length - 1]!.trim()}\n`);
  },
);
