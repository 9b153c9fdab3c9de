// homid serving an LBA range of namespace 1 to the kernel as a ublk block device, run INSIDE the VM harness's
// guest (the guest kernel has ublk_drv; the harness loads it with --modules). homid takes the controller (uio
// without an IOMMU, vfio with one); the kernel gets /dev/ublkb0 from a queue pair homid keeps for it; an ext4
// made and mounted there is used by ordinary programs (dd, sha256sum, e2fsck) while homid's extent service
// resolves its files and a mediated client reads them through its own queue, and a raw client does I/O on
// another LBA range at the same time. Then homid is SIGKILLed with the file system mounted and a writer
// running, restarted, and recovers the device (UBLK_F_USER_RECOVERY): the fsync'd file is intact and e2fsck is
// clean. A clean stop removes the device. Every test gives the controller back to nvme and zeroes what it wrote.
//
//   node dist/src/vm/cli.js run --nvme serial=HOMIA,ns=64M,qpairs=8 \
//     --modules nvme,uio_pci_generic,ext4,ublk_drv --hugepages 64 -- node --test dist/test-guest/ublk.test.js
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MediatedQueuePair } from '../src/client/mediated-queue.js';
import type { HomidConfig } from '../src/daemon/config.js';
import { Homid, type ClientSession, type HomidLogger } from '../src/daemon/homid.js';
import { attachQueuePair } from '../src/driver/attach.js';
import { dataPointer } from '../src/driver/dptr.js';
import { toLbaRanges } from '../src/extents/types.js';
import { NvmOpcode } from '../src/nvme/opcodes.js';
import { UblkControl } from '../src/ublk/control.js';
import { UblkState } from '../src/sys/ublk.js';
import { spawnNode, until, type Proc } from '../test/daemon/procs.js';
import { fillPattern } from './homid-raw-client.js';
import { assertInGuest, controllerBySerial, expectedNvme, namespacesOf, pciDriver, rebind, sys, waitFor } from './helpers.js';

assertInGuest();

const IOMMU = process.env.HOMI_GUEST_IOMMU === '1';
const MODE: 'uio' | 'vfio' = IOMMU ? 'vfio' : 'uio';
const KiB = 1024;
const MiB = 1024 * KiB;
const SKIP = fs.existsSync('/dev/ublk-control') ? false : 'ublk_drv is not loaded in this run';
/** The ublk device shows namespace bytes [16 MiB, 40 MiB); the raw client works in [0, 1 MiB). */
const RANGE_OFFSET = 16 * MiB;
const RANGE_BYTES = 24 * MiB;
const RAW_BYTES = 1 * MiB;
const DEVICE = 'nvme';
const UBLK_ID = 0;
const BLOCK = `/dev/ublkb${UBLK_ID}`;
const NOBODY = { pid: process.pid, uid: 65534, gid: 65534 };
const ROOT = { pid: process.pid, uid: 0, gid: 0 };
const IO_TIMEOUT_MS = 30_000;
const CLI_DIR = fileURLToPath(new URL('../src/cli/', import.meta.url));

const spec = expectedNvme()[0];
const kctrl = spec ? await waitFor(`controller ${spec.serial}`, () => controllerBySerial(spec.serial)) : undefined;
const BDF = kctrl?.bdf ?? '';
const work = fs.mkdtempSync('/tmp/homi-ublk-vm-');
const mnt = join(work, 'mnt');
fs.mkdirSync(mnt);
/** The crash test's homid process is started now and loads its code while the first test runs (a minute under
 * TCG); it runs homid (dist/src/cli/daemon.js) once START_FILE exists, with the configuration in argv[3]. */
const START_FILE = join(work, 'start-homid');
const AHEAD_SCRIPT = join(work, 'homid-ahead.mjs');
fs.writeFileSync(
  AHEAD_SCRIPT,
  [
    `const d = await import(${JSON.stringify(new URL('file://' + join(CLI_DIR, 'daemon.js')).href)});`,
    `const fs = await import('node:fs');`,
    `while (!fs.existsSync(process.argv[2])) await new Promise((r) => setTimeout(r, 20));`,
    `process.exitCode = await d.daemonCommand({ config: process.argv[3] });`,
  ].join('\n'),
);
const ahead: Proc | null = SKIP ? null : spawnNode([AHEAD_SCRIPT, START_FILE, join(work, 'homid.toml')], {});

function run(cmd: string, args: string[], input?: Buffer): Buffer {
  try {
    return execFileSync(cmd, args, { input, maxBuffer: 64 * MiB, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: Buffer; stdout?: Buffer; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${err.stdout?.toString() ?? ''}${err.stderr?.toString() ?? ''}`);
  }
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
/** sha256 of a file as an ordinary program reads it (the kernel's read path, through the page cache). */
const kernelSha = (p: string): string => run('sha256sum', [p]).toString().split(' ')[0]!;
const dropCaches = (): void => fs.writeFileSync('/proc/sys/vm/drop_caches', '3');

let lapT = Date.now();
function lap(what: string): void {
  const now = Date.now();
  console.log(`#   ${what}: ${now - lapT} ms`);
  lapT = now;
}

/** The namespace's block device as the kernel has it now. */
async function nvmeBlock(): Promise<string> {
  const c = await waitFor(`kernel controller ${spec!.serial}`, () => controllerBySerial(spec!.serial));
  await waitFor(`${c.name} live`, () => sys(`/sys/class/nvme/${c.name}/state`) === 'live');
  const n = await waitFor('namespace 1 block device', () => {
    const d = namespacesOf(c).get(1);
    return d && fs.existsSync(`/dev/${d}`) ? d : undefined;
  });
  return `/dev/${n}`;
}

/** Zero the namespace bytes the tests wrote (other guest files expect a zeroed namespace). */
async function zeroWritten(): Promise<void> {
  if (pciDriver(BDF) !== 'nvme') await rebind(BDF, null);
  const dev = await nvmeBlock();
  run('dd', ['if=/dev/zero', `of=${dev}`, `bs=${MiB}`, `count=${(RANGE_OFFSET + RANGE_BYTES) / MiB}`, 'oflag=direct', 'conv=fsync,notrunc', 'status=none']);
}

after(async () => {
  if (ahead && ahead.p.exitCode === null && ahead.p.signalCode === null) {
    ahead.p.kill('SIGKILL');
    await ahead.exited;
  }
  try {
    if (!SKIP && spec) {
      if (isMounted()) run('umount', ['-l', mnt]);
      await zeroWritten();
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

function isMounted(): boolean {
  return fs.readFileSync('/proc/self/mounts', 'utf8').includes(` ${mnt} `);
}

function config(lbs: number): HomidConfig {
  return {
    socket: join(work, 'homid.sock'),
    socketMode: 0o600,
    logLevel: 'info',
    devices: [{ name: DEVICE, uri: `pci:${BDF}?mode=${MODE}`, extents: 'fiemap', ioQueues: 4 }],
    sriov: [],
    classes: new Map([['default', { name: 'default', queuePairs: 4, perClient: 4, gpuQueues: 0, vfs: 0, maxDepth: 64, users: [], groups: [], write: true }]]),
    raw: { users: [0], groups: [] },
    limits: { fileGrantsPerClient: 4096, fileGrantsPerUid: 16384 },
    ublk: [{ device: DEVICE, nsid: 1, id: UBLK_ID, start: RANGE_OFFSET / lbs, count: RANGE_BYTES / lbs, queues: 1, depth: 16, maxIoBytes: 64 * KiB }],
  };
}

/** The same configuration as TOML, for a homid process. */
function toml(lbs: number): string {
  return [
    `socket = "${join(work, 'homid.sock')}"`,
    'log_level = "info"',
    '[[device]]',
    `name = "${DEVICE}"`,
    `uri = "pci:${BDF}?mode=${MODE}"`,
    'io_queues = 4',
    '[[ublk]]',
    `device = "${DEVICE}"`,
    `id = ${UBLK_ID}`,
    `start = ${RANGE_OFFSET / lbs}`,
    `count = ${RANGE_BYTES / lbs}`,
    'depth = 16',
    'max_io_kib = 64',
    '',
  ].join('\n');
}

function logger(lines: string[]): HomidLogger {
  const rec =
    (lvl: string) =>
    (o: object, m: string): void =>
      void lines.push(`${lvl} ${m} ${JSON.stringify(o)}`);
  return { debug: () => undefined, info: rec('info'), warn: rec('warn'), error: rec('error') };
}

function lbaSizeOfNs1(): number {
  const c = controllerBySerial(spec!.serial)!;
  return Number(sys(`/sys/block/${namespacesOf(c).get(1)}/queue/logical_block_size`));
}

/** Largest read one mediated command may carry here (under the mediated limit and MDTS). */
const PIECE_BYTES = 256 * KiB;
/** The mediated lease's data buffer. */
const MEDIATED_DATA = 1 * MiB;

/** Reads covering a file's map through a mediated queue, in batches that fit its data buffer; the file's bytes. */
async function mediatedRead(mq: MediatedQueuePair, ranges: { lba: number; count: number; logical: number }[], lbs: number, size: number): Promise<Buffer> {
  const out = Buffer.alloc(size);
  const pieces: { lba: number; count: number; logical: number }[] = [];
  const per = PIECE_BYTES / lbs;
  for (const r of ranges) for (let o = 0; o < r.count; o += per) pieces.push({ lba: r.lba + o, count: Math.min(per, r.count - o), logical: r.logical + o * lbs });
  for (let i = 0; i < pieces.length;) {
    const batch: typeof pieces = [];
    let bytes = 0;
    while (i < pieces.length && bytes + pieces[i]!.count * lbs <= MEDIATED_DATA) {
      batch.push(pieces[i]!);
      bytes += pieces[i]!.count * lbs;
      i++;
    }
    const st: number[] = [];
    let off = 0;
    const offs = batch.map((p) => {
      const o = off;
      off += p.count * lbs;
      return o;
    });
    batch.forEach((p, j) => assert.ok(mq.submitIo(NvmOpcode.Read, 1, p.lba, p.count, offs[j]!, 0, j) >= 0, `mediated queue full at ${j}`));
    mq.ring();
    const t0 = Date.now();
    let done = 0;
    while (done < batch.length) {
      done += mq.poll((tag, s) => void (st[tag] = s));
      if (Date.now() - t0 > IO_TIMEOUT_MS) assert.fail(`mediated reads did not complete (${done}/${batch.length})`);
      await new Promise((r) => setImmediate(r));
    }
    assert.deepEqual(
      st,
      batch.map(() => 0),
    );
    batch.forEach((p, j) => {
      const n = Math.min(p.count * lbs, size - p.logical);
      if (n > 0) out.set(mq.data.subarray(offs[j]!, offs[j]! + n), p.logical);
    });
  }
  return out;
}

/** The file's bytes as a mediated client of uid 65534 reads them through its own queue (homid resolved them by FIEMAP). */
async function readThroughMediated(h: Homid, s: ClientSession, file: string, lbs: number, range: { first: number; end: number }): Promise<Buffer> {
  const fd = fs.openSync(file, 'r');
  let grant;
  try {
    ({ grant } = await h.resolveExtents(s, DEVICE, fd));
  } finally {
    fs.closeSync(fd);
  }
  const size = fs.statSync(file).size;
  const ranges = toLbaRanges(grant.entry.map, lbs);
  assert.ok(ranges.length > 0);
  for (const r of ranges) assert.ok(r.lba >= range.first && r.lba + r.count <= range.end, `extent LBA ${r.lba}+${r.count} outside the ublk range ${range.first}..${range.end}`);
  const [lease] = await h.openQueuePairs(s, { device: DEVICE, depth: 16, mode: 'mediated', write: false, dataBytes: MEDIATED_DATA });
  const l = lease!;
  const mq = new MediatedQueuePair(l.ring!.bytes, l.data!.bytes, l.id, l.hwCq !== null ? l.hwCq.bytes : undefined);
  const out = await mediatedRead(mq, ranges, lbs, size);
  await h.closeQueuePair(s, l.id);
  h.releaseFile(s, grant.id);
  return out;
}

test(
  `${MODE} ublk: ext4 on /dev/ublkb0 (an LBA range of namespace 1) used by ordinary programs; its files read through a mediated client with the kernel's sha256; a raw client on another range concurrently; a clean stop removes the device`,
  { skip: SKIP },
  async () => {
    assert.equal(pciDriver(BDF), 'nvme', `${BDF} must start on nvme`);
    lapT = Date.now();
    const lbs = lbaSizeOfNs1();
    const range = { first: RANGE_OFFSET / lbs, end: (RANGE_OFFSET + RANGE_BYTES) / lbs };
    const log: string[] = [];
    let h: Homid | undefined;
    try {
      h = await Homid.start(config(lbs), { logger: logger(log) });
      assert.equal(h.listDevices()[0]!.state, 'live', `homid could not bring up ${BDF}: ${h.listDevices()[0]!.error}`);
      const u = h.status().ublk![0]!;
      assert.equal(u.state, 'live', `ublk: ${u.error}\n${log.join('\n')}`);
      assert.equal(u.blockDevice, BLOCK);
      assert.equal(u.qids.length, 1, 'one NVMe queue pair serves the one ublk queue');
      assert.equal(u.rangeStart, range.first);
      lap(`homid up with ${BLOCK}`);
      await waitFor(`${BLOCK}`, () => fs.existsSync(BLOCK));
      assert.equal(Number(run('blockdev', ['--getsize64', BLOCK]).toString().trim()), RANGE_BYTES);
      assert.equal(Number(run('blockdev', ['--getss', BLOCK]).toString().trim()), lbs, "the ublk device's logical block size is the namespace's");

      run('mkfs.ext4', ['-q', '-F', '-b', '4096', BLOCK]);
      run('mount', ['-t', 'ext4', BLOCK, mnt]);
      lap('mkfs.ext4 + mount');
      const a = join(mnt, 'a.bin');
      const aData = randomBytes(200 * KiB);
      fs.writeFileSync(join(work, 'a.src'), aData);
      run('cp', [join(work, 'a.src'), a]);
      run('sync', [a]);
      dropCaches();
      assert.equal(kernelSha(a), sha(aData), 'the kernel reads back what cp wrote');

      // a mediated client of another uid reads the file through its own queue: homid flushed and FIEMAPped it
      const s = h.connect(NOBODY);
      const viaMediated = await readThroughMediated(h, s, a, lbs, range);
      assert.equal(sha(viaMediated), sha(aData), "the mediated client's read has the kernel's sha256");
      lap('mediated read of a file on the ublk file system');

      // kernel writes (dd, fsync'd) while a raw client writes and verifies patterns on LBAs outside the range
      const raw = h.connect(ROOT);
      const [rl] = await h.openQueuePairs(raw, { device: DEVICE, depth: 8, mode: 'raw', dataBytes: 256 * KiB });
      const lease = rl!;
      assert.ok(lease.kind === 'raw' && lease.exported, 'a pci raw lease is exported');
      const qp = attachQueuePair(lease.grant, lease.fds, { closeFds: false });
      const big = join(mnt, 'big.bin');
      const dd = spawn('dd', ['if=/dev/urandom', `of=${big}`, 'bs=256k', 'count=24', 'conv=fsync', 'status=none'], { stdio: 'ignore' });
      const ddDone = new Promise<number | null>((res) => dd.on('exit', (code) => res(code)));
      let rawOps = 0;
      let ddExit: number | null | undefined;
      void ddDone.then((c) => (ddExit = c));
      const buf = qp.dma.alloc(8192);
      const dp = dataPointer(qp.dma, buf);
      const words = new Uint32Array(buf.bytes.buffer, buf.bytes.byteOffset, 2048);
      const want = new Uint32Array(2048);
      let sawOverlap = false;
      for (let i = 0; ddExit === undefined || i < 8; i++) {
        const lba = ((i * 8192) % RAW_BYTES) / lbs;
        fillPattern(want, lba, lbs, 77 + i);
        words.set(want);
        const w = await qp.exec({ opcode: NvmOpcode.Write, nsid: 1, cdw10: lba, cdw11: 0, cdw12: 8192 / lbs - 1, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
        assert.equal(w.status, 0);
        words.fill(0);
        const r = await qp.exec({ opcode: NvmOpcode.Read, nsid: 1, cdw10: lba, cdw11: 0, cdw12: 8192 / lbs - 1, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
        assert.equal(r.status, 0);
        assert.deepEqual(words, want, `raw pattern at LBA ${lba}`);
        rawOps += 2;
        if (ddExit === undefined) sawOverlap = true;
        if (i > 10_000) assert.fail('dd did not finish');
        await new Promise((res) => setImmediate(res));
      }
      assert.equal(await ddDone, 0, 'dd on the ublk file system failed');
      dp.release();
      qp.dma.free(buf);
      qp.detach();
      await h.closeQueuePair(raw, lease.id);
      console.log(`#   raw client: ${rawOps} verified commands, ${sawOverlap ? 'while dd was writing' : 'dd had already finished'}`);
      const bigSha = kernelSha(big);
      dropCaches();
      assert.equal(kernelSha(big), bigSha, 'big.bin reads the same after the page cache is dropped');
      const bigMediated = await readThroughMediated(h, s, big, lbs, range);
      assert.equal(sha(bigMediated), bigSha, 'the mediated client reads big.bin with the kernel sha256');
      lap('concurrent kernel + raw I/O, mediated read of big.bin');

      const st = h.status().ublk![0]!;
      assert.ok(st.io.writes > 0 && st.io.reads > 0 && st.io.flushes > 0, `ublk counters: ${JSON.stringify(st.io)}`);
      assert.equal(st.io.errors, 0);
      run('umount', [mnt]);
      run('e2fsck', ['-fn', BLOCK]);
      lap('umount + e2fsck -fn clean');
    } catch (e) {
      console.log(`# homid log:\n# ${log.slice(-40).join('\n# ')}`);
      if (isMounted()) run('umount', ['-l', mnt]);
      throw e;
    } finally {
      if (h) await h.stop();
    }
    assert.equal(fs.existsSync(BLOCK), false, 'a clean stop removes /dev/ublkb0');
    assert.equal(fs.existsSync(`/sys/class/ublk-char/ublkc${UBLK_ID}`), false, 'a clean stop deletes the ublk device');
    await waitFor(`${BDF} back on nvme`, () => pciDriver(BDF) === 'nvme');
    lap('clean stop');
  },
);

test(`${MODE} ublk: homid SIGKILLed with the file system mounted and a writer running; a new homid recovers the device, fsync'd data intact, e2fsck clean`, { skip: SKIP }, async () => {
  if (pciDriver(BDF) !== 'nvme') await rebind(BDF, null);
  lapT = Date.now();
  const lbs = lbaSizeOfNs1();
  const cfg = join(work, 'homid.toml');
  fs.writeFileSync(cfg, toml(lbs));
  const procs: Proc[] = [];
  const startHomid = (): Proc => {
    const p = ahead!;
    fs.writeFileSync(START_FILE, '');
    // its log (stdout) goes to the test's output
    void (async () => {
      for await (const l of p.lines) console.log(`# homid: ${l.slice(0, 400)}`);
    })();
    procs.push(p);
    return p;
  };
  const ctl = UblkControl.open();
  let writer: ReturnType<typeof spawn> | null = null;
  try {
    const h1 = startHomid();
    await until(async () => h1.p.exitCode !== null || (fs.existsSync(BLOCK) && (await refresh(ctl)) === UblkState.Live), 400_000, 'homid 1 serving /dev/ublkb0');
    assert.equal(h1.p.exitCode, null, 'homid 1 exited (its log is above)');
    lap('homid 1 up');
    run('mkfs.ext4', ['-q', '-F', '-b', '4096', BLOCK]);
    run('mount', ['-t', 'ext4', BLOCK, mnt]);
    const keep = join(mnt, 'keep.bin');
    const keepData = randomBytes(300 * KiB);
    fs.writeFileSync(keep, keepData);
    const fd = fs.openSync(keep, 'r+');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    // a writer that keeps going (new files, each fsync'd) while homid dies
    writer = spawn('sh', ['-c', `i=0; while true; do dd if=/dev/urandom of=${mnt}/w$i bs=64k count=4 conv=fsync status=none || exit 3; i=$((i+1)); done`], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 1500));
    h1.p.kill('SIGKILL');
    await h1.exited;
    lap('homid 1 SIGKILLed');
    // the kernel keeps the device, quiesced: I/O waits for a server
    await until(async () => (await refresh(ctl)) === UblkState.Quiesced, 30_000, 'ublk 0 quiesced');
    assert.ok(fs.existsSync(BLOCK), '/dev/ublkb0 stays while its server is gone');
    assert.ok(isMounted(), 'the file system stays mounted');
    lap('device quiesced, still mounted');

    // the second homid runs in this process (a second process start costs a minute under TCG)
    const log: string[] = [];
    let h2: Homid | undefined;
    try {
      h2 = await Homid.start(config(lbs), { logger: logger(log) });
      const u = h2.status().ublk![0]!;
      assert.equal(u.state, 'live', `recovery failed: ${u.error}\n${log.join('\n')}`);
      assert.equal(u.recovered, true, 'the new homid recovered the kernel device instead of adding one');
      assert.equal(await refresh(ctl), UblkState.Live);
      lap('homid 2 recovered the device');
      const info = await ctl.getDevInfo(UBLK_ID);
      assert.equal(info?.ublksrvPid, process.pid, 'the new homid serves the device');
      // the writer carries on through the new server
      await new Promise((r) => setTimeout(r, 1000));
      writer.kill('SIGKILL');
      await new Promise((r) => writer!.on('exit', r));
      writer = null;
      dropCaches();
      assert.equal(kernelSha(keep), sha(keepData), "the fsync'd file is intact after the crash and recovery");
      run('umount', [mnt]);
      run('e2fsck', ['-fn', BLOCK]);
      lap("fsync'd file intact, umount, e2fsck -fn clean");
    } catch (e) {
      console.log(`# homid 2 log:\n# ${log.slice(-40).join('\n# ')}`);
      throw e;
    } finally {
      // the clean stop (what SIGTERM runs): the device goes
      if (h2) await h2.stop();
    }
    assert.equal(fs.existsSync(BLOCK), false, 'a clean stop removes /dev/ublkb0');
    assert.equal(await ctl.getDevInfo(UBLK_ID), null, 'a clean stop deletes the ublk device');
    lap('clean stop');
  } finally {
    if (writer) writer.kill('SIGKILL');
    if (isMounted()) run('umount', ['-l', mnt]);
    for (const p of procs) if (p.p.exitCode === null && p.p.signalCode === null) p.p.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
    // a device a failed run left behind
    if ((await ctl.getDevInfo(UBLK_ID).catch(() => null)) !== null) {
      await ctl.stopDev(UBLK_ID).catch(() => undefined);
      await ctl.delDev(UBLK_ID).catch(() => undefined);
    }
    ctl.close();
    if (pciDriver(BDF) !== 'nvme') await rebind(BDF, null);
  }
});

/** The kernel's state of ublk device UBLK_ID (GET_DEV_INFO), null when there is none. */
async function refresh(ctl: UblkControl): Promise<number | null> {
  return (await ctl.getDevInfo(UBLK_ID))?.state ?? null;
}
