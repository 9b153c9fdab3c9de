/**
 * Raw grants map only the doorbell page(s) of BAR0, never the register page: checked on the mappings the client
 * made (the kernel's /proc/<pid>/maps file offsets), in process and in a client process of homid, on the embedded
 * controller in memfd mode; and every field of a grant is validated before anything is mapped.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { attachQueuePair, provisionQueuePair, validateGrant } from '../../src/driver/attach.js';
import { GRANT_VERSION, type RawQueueGrant as QueuePairGrant } from '../../src/ipc/raw-grant.js';
import { Controller } from '../../src/driver/controller.js';
import { dataPointer } from '../../src/driver/dptr.js';
import { HomidClient, type RawLease } from '../../src/client/index.js';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { REG_CC, REG_CSTS, REG_DOORBELL_BASE } from '../../src/nvme/registers.js';
import { openEmu, type EmuTransport } from '../../src/transport/emu.js';
import { config, silent, tmpDir } from '../daemon/fixtures.js';
import { clientChild, nextJson } from '../daemon/procs.js';

interface MapLine {
  start: number;
  end: number;
  offset: number;
  path: string;
}

function maps(pid: number | 'self'): MapLine[] {
  return fs
    .readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => {
      const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s*(.*)$/.exec(l);
      assert.ok(m, `unparsable maps line: ${l}`);
      return { start: parseInt(m[1]!, 16), end: parseInt(m[2]!, 16), offset: parseInt(m[3]!, 16), path: m[4]! };
    });
}

/** Every mapping of the embedded controller's BAR memfd starts at or after 0x1000: CC and CSTS are never mapped. */
function assertNoRegisterPage(lines: MapLine[]): MapLine[] {
  const bar = lines.filter((l) => l.path.includes('memfd:homi-bar'));
  for (const l of bar) {
    assert.ok(l.offset >= REG_DOORBELL_BASE, `BAR memfd mapped from file offset 0x${l.offset.toString(16)}`);
    for (const reg of [REG_CC, REG_CSTS]) assert.ok(!(l.offset <= reg && reg < l.offset + (l.end - l.start)), `the mapping covers register 0x${reg.toString(16)}`);
  }
  return bar;
}

async function writeRead(qp: ReturnType<typeof attachQueuePair>, lba: number, fill: number): Promise<Uint8Array> {
  const buf = qp.dma.alloc(4096);
  const dp = dataPointer(qp.dma, buf);
  try {
    buf.bytes.fill(fill);
    const w = await qp.exec({ opcode: NvmOpcode.Write, nsid: 1, cdw10: lba, cdw11: 0, cdw12: 0, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
    assert.equal(w.status, 0);
    buf.bytes.fill(0);
    const r = await qp.exec({ opcode: NvmOpcode.Read, nsid: 1, cdw10: lba, cdw11: 0, cdw12: 0, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
    assert.equal(r.status, 0);
    return buf.bytes.slice();
  } finally {
    dp.release();
    qp.dma.free(buf);
  }
}

describe('raw grants: doorbell pages only', () => {
  let emu: EmuTransport;
  let ctrl: Controller;
  before(async () => {
    emu = await openEmu({ namespaces: [{ sizeBytes: 16 << 20, lbads: 12 }], backing: 'memory', sharedMemory: 'memfd', maxQueuePairs: 8 });
    ctrl = await Controller.open(emu, { ioQueues: 8 });
  });
  after(async () => {
    await ctrl?.close();
    await emu?.close();
  });

  test('the grant names the doorbell page(s) and the wake page as windows at or after 0x1000; I/O works', async () => {
    const p = await provisionQueuePair(ctrl, emu, { entries: 32, dataBytes: 1 << 16 });
    try {
      const g = p.grant;
      assert.equal(g.version, GRANT_VERSION);
      assert.deepEqual(g.doorbell.map, { fd: 0, offset: REG_DOORBELL_BASE, bytes: 4096 });
      assert.equal(g.doorbell.barOffset, REG_DOORBELL_BASE);
      assert.ok(g.wake !== null && g.wake.map.fd === 0 && g.wake.map.offset >= REG_DOORBELL_BASE + g.doorbell.map.bytes && g.wake.map.bytes === 4096);
      assert.deepEqual(JSON.parse(JSON.stringify(g)), g, 'plain JSON');
      const qp = attachQueuePair(g, p.fds, { closeFds: false });
      try {
        const db = qp.mappings.find((m) => m.role === 'doorbells')!;
        assert.equal(db.offset, REG_DOORBELL_BASE);
        assert.deepEqual(qp.mappings.map((m) => m.role).sort(), ['doorbells', 'memory', 'wake']);
        // what the kernel says about those very mappings
        const lines = maps('self');
        for (const m of qp.mappings.filter((x) => x.role !== 'memory')) {
          const l = lines.find((x) => x.start === m.address);
          assert.ok(l, `mapping at 0x${m.address.toString(16)} not in /proc/self/maps`);
          assert.match(l.path, /memfd:homi-bar/);
          assert.equal(l.offset, m.offset);
          assert.ok(l.offset >= REG_DOORBELL_BASE);
          assert.equal(l.end - l.start, m.bytes);
        }
        const data = await writeRead(qp, 7, 0x3c);
        assert.ok(data.every((x) => x === 0x3c));
      } finally {
        qp.detach();
      }
    } finally {
      await p.reclaim();
    }
    assert.equal(ctrl.remoteQueuePairs.length, 0);
  });

  test('a doorbell window grows to the page of a high qid, and still starts at 0x1000', async () => {
    const ps = [];
    try {
      for (let i = 0; i < 3; i++) ps.push(await provisionQueuePair(ctrl, emu, { entries: 16, dataBytes: 1 << 14 }));
      for (const p of ps) {
        const qp = attachQueuePair(p.grant, p.fds, { closeFds: false });
        try {
          assert.equal(p.grant.doorbell.map.offset, REG_DOORBELL_BASE);
          assert.ok(p.grant.doorbell.cqHeadOffset + 4 <= REG_DOORBELL_BASE + p.grant.doorbell.map.bytes);
          const d = await writeRead(qp, 100 + p.grant.qid, p.grant.qid);
          assert.ok(d.every((x) => x === p.grant.qid));
        } finally {
          qp.detach();
        }
      }
    } finally {
      for (const p of ps) await p.reclaim();
    }
  });

  test('forged grants are refused before anything is mapped, naming the field', async () => {
    const p = await provisionQueuePair(ctrl, emu, { entries: 16, dataBytes: 1 << 14 });
    try {
      const good = p.grant;
      assert.doesNotThrow(() => validateGrant(good, p.fds.length));
      const forge = (f: (g: QueuePairGrant & Record<string, unknown>) => void): QueuePairGrant => {
        const g = JSON.parse(JSON.stringify(good)) as QueuePairGrant & Record<string, unknown>;
        f(g);
        return g;
      };
      const cases: Array<[string, QueuePairGrant, RegExp]> = [
        ['the register page', forge((g) => (g.doorbell.map.offset = 0)), /register page/],
        ['the wake window on the register page', forge((g) => (g.wake!.map.offset = 0)), /register page/],
        ['a memory fd as the doorbells', forge((g) => (g.doorbell.map.fd = 1)), /'memory' fd, expected 'bar'/],
        ['a BAR fd as memory', forge((g) => (g.memory.fd = 0)), /'bar' fd, expected 'memory'/],
        ['version 1', forge((g) => ((g as { version: number }).version = 1)), /unsupported version 1/],
        ['an fd index out of range', forge((g) => (g.memory.fd = 5)), /fd index 5 out of range/],
        ['an unaligned offset', forge((g) => (g.doorbell.map.offset = REG_DOORBELL_BASE + 8)), /page-aligned/],
        [
          'a doorbell outside the window',
          forge((g) => ((g.doorbell.map.bytes = 4096), (g.qid = 600), (g.doorbell.sqTailOffset = REG_DOORBELL_BASE + 8 * 600), (g.doorbell.cqHeadOffset = REG_DOORBELL_BASE + 8 * 600 + 4))),
          /outside the doorbell window/,
        ],
        ['doorbells not matching the qid', forge((g) => (g.qid = g.qid + 1)), /do not match qid/],
        ['a barOffset other than 0x1000', forge((g) => (g.doorbell.barOffset = 0)), /barOffset/],
        ['overlapping sq and cq', forge((g) => (g.cq.offset = g.sq.offset)), /overlap/],
        ['data past the window', forge((g) => (g.data.bytes = g.memory.bytes)), /outside the .*memory window/],
        ['a string where a number goes', forge((g) => ((g.sq as { offset: unknown }).offset = '0')), /sq: offset/],
        ['a wake word outside its page', forge((g) => (g.wake!.offset = 4096)), /wake.offset/],
        ['a non-power-of-two stride', forge((g) => (g.doorbell.stride = 12)), /stride/],
        ['a missing doorbell', forge((g) => delete (g as Record<string, unknown>).doorbell), /doorbell is not an object/],
      ];
      for (const [what, g, re] of cases) {
        assert.throws(() => attachQueuePair(g, p.fds, { closeFds: false }), re, what);
      }
      assert.throws(() => attachQueuePair(good, [p.fds[0]!]), /names 2 fds, got 1/);
      assert.throws(() => attachQueuePair(null as unknown as QueuePairGrant, p.fds), /not an object/);
    } finally {
      await p.reclaim();
    }
  });
});

describe('raw grants through homid: a client process maps no register page', () => {
  let srv: HomidServer;
  let dir: string;
  let sock: string;
  before(async () => {
    dir = tmpDir('homid-db-');
    sock = path.join(dir, 'homid.sock');
    srv = await startHomidServer(
      config({
        socket: sock,
        device: [{ name: 'mem', uri: 'emu://?size=16MiB&queues=4', extents: 'none' }],
        class: { default: { queue_pairs: 4, per_client: 2 } },
        raw: { users: [process.getuid!()] },
      }),
      { logger: silent() },
    );
  });
  after(async () => {
    await srv?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the client maps the doorbell and wake pages of the BAR memfd, at or after 0x1000, and does verified I/O', async () => {
    const k = clientChild([sock, 'hold', 'mem']);
    try {
      const r = await nextJson(k);
      assert.equal(r.ready, true);
      const bar = assertNoRegisterPage(maps(k.p.pid!));
      assert.ok(bar.length >= 1, 'the client maps its doorbells from the BAR memfd');
      assert.ok(
        bar.some((l) => l.offset === REG_DOORBELL_BASE),
        'one mapping starts at the doorbells',
      );
      // homid itself maps the whole BAR (offset 0): the check above is about the client only
      assert.ok(maps('self').some((l) => l.path.includes('memfd:homi-bar') && l.offset === 0));
      await new Promise((res) => setTimeout(res, 150)); // the client is doing verified I/O meanwhile
      assert.equal(k.p.exitCode, null, 'the client is still running its verified I/O');
    } finally {
      k.p.kill('SIGKILL');
      await k.exited;
    }
    const ctrl = srv.homid.registry.live('mem').controller;
    const t0 = Date.now();
    while (ctrl.remoteQueuePairs.length !== 0 && Date.now() - t0 < 10_000) await new Promise((res) => setTimeout(res, 20));
    assert.equal(ctrl.remoteQueuePairs.length, 0);
  });

  test('closing the connection detaches the raw queue pairs: their windows are unmapped, homid reclaims them', async () => {
    const c = await HomidClient.connect(sock);
    const [l] = (await c.openQueuePairs({ device: 'mem', depth: 16, dataBytes: 1 << 14 })) as RawLease[];
    const data = await writeRead(l!.qp, 3, 0x77);
    assert.ok(data.every((x) => x === 0x77));
    const addrs = l!.qp.mappings.map((m) => m.address);
    const mapped = (): MapLine[] => maps('self').filter((x) => addrs.includes(x.start) && x.path.includes('memfd:'));
    assert.equal(mapped().length, 3);
    await c.ipc.close();
    assert.equal(l!.qp.isDetached, true);
    assert.deepEqual(mapped(), [], 'no memfd left mapped at the windows');
    const ctrl = srv.homid.registry.live('mem').controller;
    const t0 = Date.now();
    while (ctrl.remoteQueuePairs.length !== 0 && Date.now() - t0 < 10_000) await new Promise((res) => setTimeout(res, 20));
    assert.equal(ctrl.remoteQueuePairs.length, 0);
  });
});
