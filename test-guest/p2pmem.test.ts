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

/** 'equal', or where and how two buffers differ (for the assertion message). */
function describeMismatch(got: Buffer, want: Buffer): string {
  if (got.equals(want)) return 'equal';
  let first = -1;
  let n = 0;
  let fill = 0;
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      if (first < 0) first = i;
      n++;
      if (got[i] === 0xa5) fill++;
    }
  }
  const pages = new Set<number>();
  for (let i = 0; i < want.length; i += 4096) if (!got.subarray(i, i + 4096).equals(want.subarray(i, i + 4096))) pages.add(i / 4096);
  return `${n} bytes differ (${fill} still 0xa5), first at ${first}; pages ${[...pages].join(',')}; got ${got.subarray(first, first + 16).toString('hex')} want ${want.subarray(first, first + 16).toString('hex')}`;
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
  // The pattern goes to the namespace through the kernel with host memory (dd, O_DIRECT; fullblock: a pipe may
  // deliver less than bs at once, and GNU dd writes a short last block without O_DIRECT, into the page cache).
  execFileSync('dd', [`of=${dev}`, `bs=${len}`, `seek=${(lba * lbs) / len}`, 'count=1', 'iflag=fullblock', 'oflag=direct', 'status=none'], { input: pattern });
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
    assert.equal(describeMismatch(Buffer.from(buf.bytes), pattern), 'equal', 'the bytes read through the p2pmem mapping are the pattern written to the namespace');
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
  const r = JSON.parse(out) as { errors: number; verifyErrors: number; verified: number; transport: string; buffers: string; options: { buffers: unknown } };
  assert.deepEqual(r.options.buffers, { kind: 'p2pmem', bdf: cmb.bdf });
  assert.match(r.buffers, new RegExp(`p2pmem ${cmb.bdf}`));
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

const farSpec = cmbSpec ? specs.find((s) => s.pcieSwitch === undefined && (s.namespaces ?? [{}]).length > 0) : undefined;
const skipFar = skip !== false ? skip : farSpec ? false : "this run has no NVMe controller outside the CMB controller's PCIe switch";

test('p2pmem: a controller on another root port (the path crosses the host bridge) cannot read into it; the kernel says why', { skip: skipFar }, async () => {
  const cmb = await ctrl(cmbSpec!.serial);
  const far = await ctrl(farSpec!.serial);
  const ns = await waitFor(`a namespace of ${far.name}`, () => namespacesOf(far).get(1));
  const io = await openIo(`/dev/${ns}`, { backend: 'io_uring', direct: true, p2pmem: { bdf: cmb.bdf } });
  let err: unknown = null;
  try {
    const buf = io.allocBuffer(4096);
    buf.bytes.fill(0xa5);
    try {
      await io.read(0, 4096 / io.geometry.blockSize, buf);
    } catch (e) {
      err = e;
    }
    assert.ok(
      buf.bytes.every((b) => b === 0xa5),
      'nothing landed in the p2pmem',
    );
  } finally {
    await io.close();
  }
  // Seen on 7.2.13 (docs/results/p2pmem/README.md): the read completes with EINVAL, and the kernel logs the
  // distance check's verdict for the pair, then the block layer's "invalid error" for the request.
  assert.match(String(err), /^IoError: read failed: EINVAL \(errno 22\)$/);
  const said = kernelSays(/peer-to-peer DMA as the client and provider/);
  assert.ok(
    said.some((l) => l.includes(`nvme ${far.bdf}: cannot be used for peer-to-peer DMA as the client and provider (${cmb.bdf}) do not share an upstream bridge or whitelisted host bridge`)),
    said.join(' | '),
  );
  assert.ok(kernelSays(new RegExp(`invalid error, dev ${ns}, sector 0 op 0x0:\\(READ\\)`)).length > 0, 'the block layer logged the refused read');
});
