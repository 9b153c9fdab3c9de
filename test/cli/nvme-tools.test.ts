/**
 * `homi list`, `identify`, `smart-log`, `error-log` (issue 16): on the embedded controller, in this process (its
 * SMART counters and error log after real I/O and injected faults) and through the command; `list` on this
 * machine, on a fake sysfs tree, and with a homid that answers, one that does not, and none.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controllerTarget, type AdminTarget } from '../../src/cli/admin-target.js';
import { errorLogOf, formatErrorLog } from '../../src/cli/error-log.js';
import { ID_CTRL_FIELDS, formatIdentify, identifyTarget } from '../../src/cli/identify.js';
import { formatList, listReport } from '../../src/cli/list.js';
import { formatSmartLog, smartLogOf } from '../../src/cli/smart-log.js';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import type { QueuePair } from '../../src/driver/queue-pair.js';
import type { DmaBuffer } from '../../src/mem/dma.js';
import { makeStatus } from '../../src/nvme/cqe.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { GenericStatus, MediaStatus, Sct, statusField } from '../../src/nvme/status.js';
import { listNvmeFunctions } from '../../src/pci/discover.js';
import { NS1, openRig, pollUntil, type Rig } from '../driver/helpers.js';
import { config, silent } from '../daemon/fixtures.js';
import { FakeSys } from '../pci/fake-sysfs.js';
import { assertUsageErrors, runHomi, runHomiAsync, type HomiRun } from './run.js';

const homi = (...args: string[]): HomiRun => runHomi(args, 60_000);
const NS1_BLOCK = 2 ** NS1.lbads;
const NS1_BLOCKS = NS1.sizeBytes / NS1_BLOCK;

describe('on the embedded controller, in this process', () => {
  let rig: Rig;
  let t: AdminTarget;
  let qp: QueuePair;
  let buf: DmaBuffer;

  before(async () => {
    rig = await openRig();
    t = controllerTarget('emu-test', rig.ctrl, rig.emu);
    qp = await rig.ctrl.createQueuePair({ entries: 16 });
    buf = rig.emu.dma.alloc(NS1_BLOCK);
  });
  after(async () => {
    rig.emu.dma.free(buf);
    await rig.close();
  });

  /** One one-block command on namespace 1: its CID and completion status. */
  async function io(opcode: number, slba: number): Promise<{ cid: number; status: number }> {
    let status = -1;
    const cid = qp.submitIo(opcode, 1, slba, 1, buf.iova, 0, 7);
    assert.ok(cid >= 0);
    qp.ring();
    await pollUntil(
      qp,
      (_tag, st) => (status = st),
      () => status >= 0,
    );
    return { cid, status };
  }

  test('identify: every decoded Identify field by its nvme-cli name, and the LBA format list', async () => {
    const r = await identifyTarget(t);
    assert.deepEqual(Object.keys(r.idCtrl).sort(), ID_CTRL_FIELDS.map(([k]) => k).sort(), 'the table names every field the decoder returns');
    assert.equal(r.idCtrl.sn, 'HOMIEMU0001');
    assert.equal(r.idCtrl.nn, 2);
    assert.equal(r.idCtrl.ver, 0x10400);
    assert.equal(r.controller.version, '1.4.0');
    assert.equal(r.controller.transport, 'emu');
    assert.equal(r.controller.mdtsBytes, 2 ** r.idCtrl.mdts * 4096);
    assert.deepEqual(
      r.namespaces.map((n) => [n.nsid, n.blockSize, n.blocks, n.formatIndex, n.idNs.nsze, n.idNs.nlbaf, n.idNs.lbafs]),
      [
        [1, 4096, NS1_BLOCKS, 0, NS1_BLOCKS, 0, [{ ms: 0, ds: 12, rp: 0 }]],
        [2, 512, (16 << 20) / 512, 0, (16 << 20) / 512, 0, [{ ms: 0, ds: 9, rp: 0 }]],
      ],
    );
    assert.match(r.namespaces[0]!.idNs.eui64, /^[0-9a-f]{16}$/);
    const text = formatIdentify(r);
    assert.match(text, /^sqes\s+: 0x66$/m);
    assert.match(text, /^subnqn\s+: nqn\./m);
    assert.match(text, /^lbaf {2}0 : ms:0 {3}lbads:12 rp:0 \(in use\)$/m);
  });

  test('smart-log counts the reads and writes this test did, in commands and data units', async () => {
    const before = await smartLogOf(t);
    for (let i = 0; i < 3; i++) assert.equal((await io(NvmOpcode.Write, i)).status, 0);
    for (let i = 0; i < 2; i++) assert.equal((await io(NvmOpcode.Read, i)).status, 0);
    const s = await smartLogOf(t);
    assert.equal(s.host_write_commands - before.host_write_commands, 3);
    assert.equal(s.host_read_commands - before.host_read_commands, 2);
    // a data unit is 1000 x 512 bytes, rounded up: 24 and 16 units of 512 bytes make one each
    assert.equal(s.data_units_written, Math.ceil((3 * NS1_BLOCK) / 512 / 1000));
    assert.equal(s.data_units_read, 1);
    assert.equal(s.temperature, 313);
    assert.equal(s.avail_spare, 100);
    assert.equal(s.num_err_log_entries, 0);
    const text = formatSmartLog('emu-test', 0xffffffff, s);
    assert.match(text, /^temperature\s+: 40 °C \(313 K\)$/m);
    assert.match(text, /^host_write_commands\s+: 3$/m);
  });

  test('error-log shows an injected media error and an LBA out of range, newest first, with sqid, cmdid, status and LBA', async () => {
    assert.deepEqual((await errorLogOf(t)).errors, []);
    rig.emu.inject({ qid: qp.qid, opcode: NvmOpcode.Read, action: { kind: 'status', sct: Sct.MediaDataIntegrity, sc: MediaStatus.UnrecoveredReadError, dnr: true } });
    const injected = await io(NvmOpcode.Read, 3);
    assert.equal(statusField(injected.status), makeStatus(Sct.MediaDataIntegrity, MediaStatus.UnrecoveredReadError, true));
    const outOfRange = await io(NvmOpcode.Read, NS1_BLOCKS);
    assert.equal(statusField(outOfRange.status) & 0x7ff, GenericStatus.LbaOutOfRange);

    const r = await errorLogOf(t);
    assert.equal(r.entries, 64, 'ELPE + 1 entries read');
    assert.equal(r.errors.length, 2);
    const [newest, older] = r.errors as [(typeof r.errors)[0], (typeof r.errors)[0]];
    assert.deepEqual(
      { count: newest.error_count, sqid: newest.sqid, cmdid: newest.cmdid, sf: newest.status_field, lba: newest.lba, nsid: newest.nsid, pel: newest.parm_err_loc },
      { count: 2, sqid: qp.qid, cmdid: outOfRange.cid, sf: statusField(outOfRange.status), lba: NS1_BLOCKS, nsid: 1, pel: 0xffff },
    );
    assert.equal(newest.status_name, 'LBA Out of Range (DNR)');
    assert.deepEqual(
      { count: older.error_count, sqid: older.sqid, cmdid: older.cmdid, sf: older.status_field, nsid: older.nsid },
      { count: 1, sqid: qp.qid, cmdid: injected.cid, sf: makeStatus(Sct.MediaDataIntegrity, MediaStatus.UnrecoveredReadError, true), nsid: 1 },
    );
    assert.equal(older.status_name, 'Unrecovered Read Error (DNR)');
    assert.equal((await smartLogOf(t)).num_err_log_entries, 2);
    assert.equal((await errorLogOf(t, 1)).errors.length, 1, '--entries 1 reads only the newest');

    const text = formatErrorLog('emu-test', r);
    assert.match(text, /^Error Information log of emu-test: 2 of 64 entries in use$/m);
    assert.match(text, /^error_count\s+sqid\s+cmdid\s+status_field\s+status\s+parm_err_loc\s+lba\s+nsid\s+cs$/m);
    assert.match(text, /Unrecovered Read Error \(DNR\)/);
  });
});

describe('the commands', () => {
  test('identify --json: the summary, idCtrl with nvme-cli names, idNs with lbafs', () => {
    const r = homi('identify', 'emu://?size=64MiB&namespaces=2&lbads=9&serial=SN7', '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.controller.serial, 'SN7');
    assert.equal(j.idCtrl.sn, 'SN7');
    for (const k of ['vid', 'ssvid', 'mn', 'fr', 'mdts', 'cntlid', 'ver', 'oacs', 'nn', 'sqes', 'cqes', 'oncs', 'vwc', 'sgls', 'elpe']) assert.ok(k in j.idCtrl, k);
    assert.deepEqual(Object.keys(j.namespaces[0].idNs), ['nsze', 'ncap', 'nuse', 'nsfeat', 'nlbaf', 'flbas', 'mc', 'dpc', 'dps', 'nmic', 'nguid', 'eui64', 'lbafs']);
    assert.deepEqual(j.namespaces[1].idNs.lbafs, [{ ms: 0, ds: 9, rp: 0 }]);
  });

  test('smart-log and error-log, --json with nvme-cli names and as tables', () => {
    const s = homi('smart-log', 'emu://?size=16MiB', '--json');
    assert.equal(s.code, 0, s.stderr);
    assert.deepEqual(Object.keys(JSON.parse(s.stdout)), [
      'critical_warning',
      'temperature',
      'avail_spare',
      'spare_thresh',
      'percent_used',
      'endurance_grp_critical_warning_summary',
      'data_units_read',
      'data_units_written',
      'host_read_commands',
      'host_write_commands',
      'controller_busy_time',
      'power_cycles',
      'power_on_hours',
      'unsafe_shutdowns',
      'media_errors',
      'num_err_log_entries',
      'warning_temp_time',
      'critical_comp_time',
    ]);
    const st = homi('smart-log', 'emu://?size=16MiB', '--nsid', '1');
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /^SMART \/ Health Information log of emu:\/\/\?size=16MiB \(namespace 1\):$/m);
    const e = homi('error-log', 'emu://?size=16MiB', '--json');
    assert.equal(e.code, 0, e.stderr);
    assert.deepEqual(JSON.parse(e.stdout), { entries: 64, errors: [] });
    const et = homi('error-log', 'emu://?size=16MiB', '--entries', '4');
    assert.equal(et.stdout.trim(), 'Error Information log of emu://?size=16MiB: 0 of 4 entries in use (no errors logged)');
  });

  test('bad input and paths that are no NVMe device: one line, exit status 2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'homi-nvme-tools-'));
    try {
      assertUsageErrors(homi, [
        [['identify', '/dev/null'], /^homi: \/dev\/null is not an NVMe device \(char device 1:3/],
        [['smart-log', dir], /is not a device node: give a controller \/dev\/nvmeX/],
        [['error-log', join(dir, 'nvme0')], /nvme0: no such file: give a controller/],
        [['smart-log', 'emu://?size=16MiB', '--nsid', '0'], /--nsid: '0' is not a namespace id/],
        [['error-log', 'emu://?size=16MiB', '--entries', '300'], /--entries: 300 is out of range \(1\.\.256\)/],
        [['smart-log', 'nvme://x'], /unknown scheme/],
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('list', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'homi-list-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('on this machine: the real sysfs, and no homid on the socket', () => {
    const r = homi('list', '--socket', join(dir, 'none.sock'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /homid is not running at .*none\.sock \(connect: ENOENT\)\.$/m);
    const j = JSON.parse(homi('list', '--json', '--socket', join(dir, 'none.sock')).stdout);
    assert.equal(j.homid.running, false);
    assert.deepEqual(j.homid.devices, []);
    assert.equal(j.pci.length, listNvmeFunctions().length);
    if (listNvmeFunctions().length === 0 && !existsSync('/sys/class/nvme')) {
      // this development machine: no NVMe, and the output says so first, plainly
      assert.match(r.stdout, /^No NVMe device on this machine: no PCI function of class 0x010802 \(NVM Express\) in \/sys\/bus\/pci\/devices, and no kernel NVMe controller/);
      assert.deepEqual(j.controllers, []);
    }
  });

  test('on a fake sysfs: PCI functions with driver and IOMMU group, controllers and namespaces', async () => {
    const f = new FakeSys();
    try {
      f.addDevice({ address: '0000:01:00.0', driver: 'nvme', iommuGroup: 5, numaNode: 0 });
      f.addDevice({ address: '0000:02:00.0', driver: 'vfio-pci', iommuGroup: 6 });
      f.addKernelController({ instance: 0, address: '0000:01:00.0', serial: 'HOMI-A', namespaces: [{ head: 1, nsid: 1, sizeBytes: 64 << 20, lbaSize: 512 }] });
      const r = await listReport({ sys: f.paths, socket: join(dir, 'none.sock') });
      assert.deepEqual(
        r.pci.map((p) => [p.address, p.driver, p.iommuGroup, p.homidDevice]),
        [
          ['0000:01:00.0', 'nvme', 5, null],
          ['0000:02:00.0', 'vfio-pci', 6, null],
        ],
      );
      assert.deepEqual(
        r.controllers.map((c) => [c.name, c.serial, c.pciAddress, c.namespaces.map((n) => [n.nsid, n.blockDevice, n.genericDevice, n.sizeBytes, n.lbaSize])]),
        [['nvme0', 'HOMI-A', '0000:01:00.0', [[1, join(f.dev, 'nvme0n1'), join(f.dev, 'ng0n1'), 64 << 20, 512]]]],
      );
      assert.deepEqual(r.notes, [`homid is not running at ${join(dir, 'none.sock')} (connect: ENOENT)`]);
      const text = formatList(r);
      assert.match(text, /^0000:01:00\.0\s+1b36:0010\s+nvme\s+5\s+0\s+nvme0\s+-$/m);
      assert.match(text, /^0000:02:00\.0\s+1b36:0010\s+vfio-pci\s+6\s+-\s+-\s+-$/m);
      assert.match(text, new RegExp(`^${join(f.dev, 'nvme0n1')}\\s+${join(f.dev, 'ng0n1')}\\s+nvme0\\s+HOMI-A\\s+QEMU NVMe Ctrl\\s+8\\.0\\.0\\s+1\\s+64 MiB\\s+512\\s+live\\s+0000:01:00\\.0$`, 'm'));
      assert.doesNotMatch(text, /No NVMe device/);
    } finally {
      f.cleanup();
    }
  });

  test('a socket that accepts but never answers: a note after the timeout, not a hang', async () => {
    const sock = join(dir, 'mute.sock');
    const server: Server = createServer(() => undefined);
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const f = new FakeSys();
      try {
        const t0 = Date.now();
        const r = await listReport({ sys: f.paths, socket: sock, homidTimeoutMs: 300 });
        assert.ok(Date.now() - t0 < 5000);
        assert.equal(r.homid.running, false);
        assert.equal(r.homid.note, `homid did not answer on ${sock} within 300 ms`);
      } finally {
        f.cleanup();
      }
    } finally {
      server.close();
    }
  });

  describe('with a homid serving the embedded controller', () => {
    let srv: HomidServer;
    let sock: string;
    before(async () => {
      sock = join(dir, 'homid.sock');
      srv = await startHomidServer(config({ socket: sock, device: [{ name: 'mem', uri: 'emu://?size=64MiB&queues=4' }], class: { default: { queue_pairs: 4, per_client: 2 } } }), { logger: silent() });
    });
    after(async () => {
      await srv.close();
    });

    test('homi list names homid and its devices', async () => {
      // asynchronous spawns: homid answers from this process's event loop
      const r = await runHomiAsync(['list', '--json', '--socket', sock], 60_000);
      assert.equal(r.code, 0, r.stderr);
      const j = JSON.parse(r.stdout);
      assert.equal(j.homid.running, true);
      assert.equal(j.homid.note, null);
      assert.deepEqual(
        j.homid.devices.map((d: { device: string; state: string; uri: string; namespaces: Array<{ size: number }> }) => [d.device, d.state, d.uri, d.namespaces.map((n) => n.size)]),
        [['mem', 'live', 'emu://?size=64MiB&queues=4', [64 << 20]]],
      );
      const text = (await runHomiAsync(['list', '--socket', sock], 60_000)).stdout;
      assert.match(text, new RegExp(`^homid \\(${sock.replace(/[.]/g, '\\.')}\\):$`, 'm'));
      assert.match(text, /^mem\s+live\s+HOMI Embedded NVMe Controller\s+HOMIEMU0001\s+1: 64 MiB\s+0\/\d+\s+emu:\/\/\?size=64MiB&queues=4$/m);
    });
  });
});
