// PCI P2PDMA on the kernel I/O path, run INSIDE the VM harness's guest (the 'p2p' kernel: CONFIG_PCI_P2PDMA):
// QEMU's NVMe controller with a CMB publishes it as p2pmem; HOMI's io_uring backend reads with O_DIRECT from
// ANOTHER controller's namespace (both behind one emulated PCIe switch) into an mmap of that p2pmem, and the
// bytes are checked through the mapping. Runs without that topology (the 6.12 suites) skip with the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { openIo } from '../src/io/open.js';
import { readP2pmem } from '../src/io/p2pmem.js';
import { physicalAddresses } from '../src/mem/hugepage.js';
import type { IoDevice } from '../src/io/types.js';
import { assertInGuest, controllerBySerial, expectedNvme, namespacesOf, waitFor, type NvmeCtrl } from './helpers.js';

assertInGuest();

const MiB = 1024 * 1024;
/** The NVMe CMB is BAR2 in QEMU 7.2 (NVME_CMB_BIR). */
const CMB_BAR = 2;
const specs = expectedNvme();
const cmbSpec = specs.find((s) => s.cmbMiB !== undefined && s.pcieSwitch !== undefined);
const srcSpec = cmbSpec ? specs.find((s) => s !== cmbSpec && s.pcieSwitch === cmbSpec.pcieSwitch && (s.namespaces ?? [{}]).length > 0) : undefined;
const skip = cmbSpec && srcSpec ? false : 'this run has no NVMe controller with a CMB behind a PCIe switch with a peer controller';

async function ctrl(serial: string): Promise<NvmeCtrl> {
  return waitFor(`controller ${serial}`, () => controllerBySerial(serial));
}

async function setup(): Promise<{ cmb: NvmeCtrl; src: NvmeCtrl; dev: string; lbs: number }> {
  const cmb = await ctrl(cmbSpec!.serial);
  const src = await ctrl(srcSpec!.serial);
  const ns = await waitFor(`a namespace of ${src.name}`, () => namespacesOf(src).get(1));
  const lbs = Number(readFileSync(`/sys/block/${ns}/queue/logical_block_size`, 'utf8').trim());
  return { cmb, src, dev: `/dev/${ns}`, lbs };
}

/** BAR n of a function from its sysfs `resource` file: [start, end] bus/CPU addresses. */
function barRange(bdf: string, bar: number): [number, number] {
  const line = readFileSync(`/sys/bus/pci/devices/${bdf}/resource`, 'utf8').split('\n')[bar]!;
  const [start, end] = line.split(/\s+/).map((x) => Number(BigInt(x)));
  return [start!, end!];
}

function kernelSays(pattern: RegExp): string[] {
  return execFileSync('dmesg', { encoding: 'utf8' })
    .split('\n')
    .filter((l) => pattern.test(l));
}

test('p2pmem: the controller with a CMB publishes it as p2pmem (size, available, published, allocate)', { skip }, async () => {
  const { cmb, src } = await setup();
  const info = readP2pmem(cmb.bdf);
  assert.equal(info.sizeBytes, cmbSpec!.cmbMiB! * MiB, 'the whole CMB (BAR2) is p2pmem');
  assert.ok(info.published, 'published (the nvme driver publishes a CMB with CMBSZ.WDS and RDS)');
  assert.ok(info.allocatable, 'allocate exists (Linux 6.2+)');
  assert.ok(info.availableBytes > 0 && info.availableBytes <= info.sizeBytes);
  const [start] = barRange(cmb.bdf, CMB_BAR);
  const added = kernelSays(/added peer-to-peer DMA memory/);
  assert.ok(
    added.some((l) => l.includes(cmb.bdf) && l.includes(`0x${start.toString(16)}`)),
    `dmesg names the CMB's BAR as peer-to-peer memory: ${added.join(' | ')}`,
  );
  // The other controller (no CMB) has none: refused at open, naming what is missing.
  await assert.rejects(openIo(`/dev/${namespacesOf(src).get(1)}`, { backend: 'io_uring', direct: true, p2pmem: { bdf: src.bdf } }), new RegExp(`^IoOpenError: p2pmem: ${src.bdf} has no p2pmem `));
});

test('p2pmem: io_uring O_DIRECT reads from the other controller land in the p2pmem mapping; writes from it reach the namespace', { skip }, async () => {
  const { cmb, dev, lbs } = await setup();
  const len = 256 * 1024;
  const lba = Math.floor((3 * MiB) / lbs);
  const pattern = randomBytes(len);
  // The pattern goes to the namespace through the kernel with host memory (dd, O_DIRECT).
  execFileSync('dd', [`of=${dev}`, `bs=${len}`, `seek=${(lba * lbs) / len}`, 'count=1', 'oflag=direct', 'status=none'], { input: pattern });
  const before = readP2pmem(cmb.bdf).availableBytes;
  let io: IoDevice | null = await openIo(dev, { backend: 'io_uring', direct: true, p2pmem: { bdf: cmb.bdf } });
  try {
    assert.match(io.transport, new RegExp(`buffers in p2pmem ${cmb.bdf}`));
    const buf = io.allocBuffer(len);
    assert.equal(readP2pmem(cmb.bdf).availableBytes, before - len, 'the mapping took its bytes out of the p2pmem pool');
    // The mapping is the CMB: its pages' physical addresses lie in BAR2.
    const [start, end] = barRange(cmb.bdf, CMB_BAR);
    const phys = physicalAddresses('/proc/self/pagemap', [buf.h1, buf.h1 + len - 4096]);
    for (const p of phys) assert.ok(p >= start && p <= end, `page at 0x${p.toString(16)} is in BAR2 0x${start.toString(16)}-0x${end.toString(16)}`);
    buf.bytes.fill(0xa5);
    await io.read(lba, len / lbs, buf);
    assert.ok(Buffer.from(buf.bytes).equals(pattern), 'the bytes read through the p2pmem mapping are the pattern written to the namespace');
    // The other direction: a write from p2pmem to the namespace, read back by dd (host memory).
    const back = randomBytes(len);
    buf.bytes.set(back);
    await io.write(lba + len / lbs, len / lbs, buf);
    const got = execFileSync('dd', [`if=${dev}`, `bs=${len}`, `skip=${(lba * lbs) / len + 1}`, 'count=1', 'iflag=direct', 'status=none'], { maxBuffer: 4 * MiB });
    assert.ok(got.equals(back), 'the namespace holds what was written from p2pmem');
  } finally {
    await io.close();
    io = null;
  }
  assert.equal(readP2pmem(cmb.bdf).availableBytes, before, 'closing the device gave the p2pmem back');
  // What the kernel said about P2P between the two functions (nothing: no refusal).
  assert.deepEqual(
    kernelSays(/p2pdma|peer-to-peer DMA.*(not supported|disabled|fail)/i).filter((l) => !/added peer-to-peer DMA memory/.test(l)),
    [],
  );
});

test('p2pmem: homi perf --backend io_uring --direct --buffers p2pmem:<bdf> --verify, qd 32, random 4 KiB reads and writes', { skip }, async () => {
  const { cmb, dev } = await setup();
  const out = execFileSync(
    process.execPath,
    [
      'dist/src/cli/main.js',
      'perf',
      dev,
      '--backend',
      'io_uring',
      '--direct',
      '--buffers',
      `p2pmem:${cmb.bdf}`,
      '--rw',
      'randrw',
      '--bs',
      '4k',
      '--qd',
      '32',
      '--ios',
      '1000',
      '--verify',
      '--verify-span',
      '512KiB',
      '--json',
    ],
    { encoding: 'utf8', maxBuffer: 16 * MiB },
  );
  const r = JSON.parse(out) as { errors: number; verifyErrors: number; verified: number; transport: string; options: { buffers: string } };
  assert.equal(r.options.buffers, `p2pmem:${cmb.bdf}`);
  assert.match(r.transport, /buffers in p2pmem/);
  assert.equal(r.errors, 0);
  assert.equal(r.verifyErrors, 0);
  assert.ok(r.verified > 0, `blocks verified: ${r.verified}`);
  // Without O_DIRECT the page cache would be in the path: refused, exit 2.
  let status = 0;
  let stderr = '';
  try {
    execFileSync(process.execPath, ['dist/src/cli/main.js', 'perf', dev, '--backend', 'io_uring', '--buffers', `p2pmem:${cmb.bdf}`, '--ios', '10'], { encoding: 'utf8', stdio: 'pipe' });
  } catch (e) {
    status = (e as { status: number }).status;
    stderr = String((e as { stderr: string }).stderr);
  }
  assert.equal(status, 2, stderr);
  assert.match(stderr, /p2pmem buffers need --direct/);
});
