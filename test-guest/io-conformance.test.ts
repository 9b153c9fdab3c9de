// The I/O interface's conformance checks (test/io/conformance.ts, the same ones test/io runs on files and the
// embedded controller) on a real kernel and QEMU's NVMe controller, run INSIDE the VM harness's guest:
//   posix (buffered, O_DIRECT) and io_uring (buffered, O_DIRECT, fixed buffers) on /dev/nvmeXnY;
//   io_uring_cmd (plain, fixed buffers) on /dev/ngXnY;
//   io_uring O_DIRECT with IORING_SETUP_IOPOLL (--hipri), and io_uring_cmd with IOPOLL, on a poll queue;
//   the user-space driver through pci: (uio without an IOMMU, vfio with one).
// The first namespace of the first configured controller is the target; its data is overwritten, then zeroed
// over its whole range at the end (other guest files expect a fresh, all-zero namespace). The kernel nvme
// binding, nvme.poll_queues and the controller's queue layout are restored afterwards.
//
//   node dist/src/vm/cli.js run --nvme serial=HOMIA,ns=64M,qpairs=8 --modules nvme,uio_pci_generic \
//     --hugepages 64 -- node --test dist/test-guest/io-conformance.test.js
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { conformanceSuite, type ConformanceTarget } from '../test/io/conformance.js';
import { openIo } from '../src/io/open.js';
import type { IoOpenOptions } from '../src/io/types.js';
import { allZero } from '../test/io/conformance.js';
import { assertInGuest, controllerBySerial, expectedNvme, namespacesOf, pciDriver, rebind, sys, waitFor } from './helpers.js';

assertInGuest();

const MiB = 1024 * 1024;
const IOMMU = process.env.HOMI_GUEST_IOMMU === '1';
const MODE: 'uio' | 'vfio' = IOMMU ? 'vfio' : 'uio';
const spec = expectedNvme()[0]!;
const nsSpec = (spec.namespaces ?? [{}])[0]!;
const NSID = nsSpec.nsid ?? 1;
const BYTES = nsSpec.image ? undefined : (nsSpec.sizeMiB ?? 64) * MiB;
const kctrl = await waitFor(`controller ${spec.serial}`, () => controllerBySerial(spec.serial));
const BDF = kctrl.bdf;
const POLL_PARAM = '/sys/module/nvme/parameters/poll_queues';
const ORIG_POLL_QUEUES = readFileSync(POLL_PARAM, 'utf8').trim();

/** The namespace's block device name (nvmeXnY) as the kernel has it now (names may change across rebinds). */
async function blockName(): Promise<string> {
  const c = await waitFor(`controller ${spec.serial} (kernel)`, () => controllerBySerial(spec.serial));
  await waitFor(`${c.name} live`, () => sys(`/sys/class/nvme/${c.name}/state`) === 'live');
  return waitFor(`namespace ${NSID} of ${c.name}`, () => {
    const n = namespacesOf(c).get(NSID);
    return n && existsSync(`/dev/${n}`) ? n : undefined;
  });
}

/** The NVMe generic char device of the namespace (/dev/ngXnY for /dev/nvmeXnY). */
async function charName(): Promise<string> {
  const ng = (await blockName()).replace(/^nvme/, 'ng');
  return waitFor(`/dev/${ng}`, () => existsSync(`/dev/${ng}`) && ng);
}

let blk = await blockName();
let ng = await charName();

/** Whether the namespace's request queue has poll queues (IORING_SETUP_IOPOLL works). */
function hasPollQueues(): boolean {
  try {
    return sys(`/sys/block/${blk}/queue/io_poll`) === '1';
  } catch {
    return false;
  }
}

/** Unbind and re-probe the controller with the kernel nvme driver (it reads poll_queues at probe time). */
async function reprobe(): Promise<void> {
  await rebind(BDF, null);
  await waitFor(`${BDF} back on nvme`, () => pciDriver(BDF) === 'nvme');
  blk = await blockName();
  ng = await charName();
}

interface Case {
  name: string;
  target: ConformanceTarget;
  /** Poll queues needed (the controller is re-probed with nvme.poll_queues=1 first when it has none). */
  poll?: boolean;
}

const dev = (p: () => string, opts: IoOpenOptions): Pick<ConformanceTarget, 'uri' | 'opts'> => ({ uri: p, opts });
const cases: Case[] = [
  { name: 'posix (buffered) on the block device', target: { ...dev(() => `/dev/${blk}`, { backend: 'posix' }) } },
  { name: 'posix O_DIRECT on the block device', target: { ...dev(() => `/dev/${blk}`, { backend: 'posix', direct: true }) } },
  { name: 'io_uring (buffered) on the block device', target: { ...dev(() => `/dev/${blk}`, { backend: 'io_uring' }) } },
  { name: 'io_uring O_DIRECT on the block device', target: { ...dev(() => `/dev/${blk}`, { backend: 'io_uring', direct: true }) } },
  { name: 'io_uring O_DIRECT fixed buffers', target: { ...dev(() => `/dev/${blk}`, { backend: 'io_uring', direct: true, fixedBuffers: true }) } },
  { name: 'io_uring_cmd on the generic char device', target: { ...dev(() => `/dev/${ng}`, { backend: 'io_uring_cmd' }) } },
  { name: 'io_uring_cmd fixed buffers', target: { ...dev(() => `/dev/${ng}`, { backend: 'io_uring_cmd', fixedBuffers: true }) } },
  { name: 'io_uring O_DIRECT --hipri (IOPOLL on a poll queue)', poll: true, target: { ...dev(() => `/dev/${blk}`, { backend: 'io_uring', direct: true, hipri: true }) } },
  { name: 'io_uring_cmd --hipri (IOPOLL on a poll queue)', poll: true, target: { ...dev(() => `/dev/${ng}`, { backend: 'io_uring_cmd', hipri: true }) } },
  { name: `user-space driver through pci: (${MODE})`, target: { uri: `pci:${BDF}?mode=${MODE}`, opts: { backend: 'driver', nsid: NSID, maxQueues: 4 }, exclusive: true } },
];

for (const c of cases) {
  describe(`guest conformance: ${c.name}`, () => {
    const suite = conformanceSuite({ ...c.target, ...(BYTES !== undefined ? { expectBytes: BYTES } : {}) });
    before(async () => {
      if (c.poll && !hasPollQueues()) {
        // Poll queues are sized at probe: set the module parameter and re-probe (restored at the end).
        writeFileSync(POLL_PARAM, '1');
        await reprobe();
        assert.ok(hasPollQueues(), `${blk} has no poll queues after re-probing with nvme.poll_queues=1`);
      }
      if (c.target.exclusive) assert.equal(pciDriver(BDF), 'nvme');
      await suite.open();
    });
    after(async () => {
      await suite.close();
    });
    for (const k of suite.checks) test(k.name, () => k.run());
  });
}

describe('guest conformance: restore', () => {
  test('the controller is back on nvme, without poll queues unless it had them, and the namespace reads as zeros', async () => {
    if (readFileSync(POLL_PARAM, 'utf8').trim() !== ORIG_POLL_QUEUES) writeFileSync(POLL_PARAM, ORIG_POLL_QUEUES);
    await waitFor(`${BDF} on nvme`, () => pciDriver(BDF) === 'nvme');
    blk = await blockName();
    // The pci: case re-probed the controller after the poll cases; re-probe here only if it did not run.
    if (hasPollQueues() !== Number(ORIG_POLL_QUEUES) > 0) await reprobe();
    assert.equal(hasPollQueues(), Number(ORIG_POLL_QUEUES) > 0, 'poll queue layout not restored');
    assert.equal(sys(`/sys/bus/pci/devices/${BDF}/driver_override`), '(null)');
    // Zero every block the checks may have written (the whole namespace), then check a few.
    const d = await openIo(`/dev/${blk}`, { backend: 'posix', direct: true });
    try {
      await d.writeZeroes(0, d.geometry.blocks);
      const b = d.allocBuffer(64 * 1024);
      const n = (64 * 1024) / d.geometry.blockSize;
      for (const lba of [0, 1000, 2048 * (4096 / d.geometry.blockSize), d.geometry.blocks - n]) {
        b.bytes.fill(0xa5);
        await d.read(lba, n, b);
        assert.ok(allZero(b.bytes), `LBA ${lba} not zero after the final write-zeroes`);
      }
    } finally {
      await d.close();
    }
  });
});
