/**
 * GPU leases (src/daemon/leases/gpu.ts) against the embedded controller in memfd mode: the grant is a working raw
 * queue pair (driven here from the CPU, as a GPU would drive it), the controller is held awake for the lease's
 * whole life and let go exactly once, the lease is reclaimed when its client goes away, class budgets and
 * transports that export no memory are refused, and the wire refuses malformed requests and grants.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HomidClient } from '../../src/client/index.js';
import { Homid, type ClientSession } from '../../src/daemon/homid.js';
import { memfdOpener, type TransportOpener } from '../../src/daemon/registry.js';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import { memfdRegions } from '../../src/daemon/shared-region.js';
import { attachQueuePair, provisionQueuePair } from '../../src/driver/attach.js';
import { dataPointer } from '../../src/driver/dptr.js';
import { formatStatus } from '../../src/cli/status.js';
import { ConfigError, parseConfig } from '../../src/daemon/config.js';
import { GpuLeaseGrant, HomidErrorCode, IpcErrorCode, validateRawGrant, type RawQueueGrant } from '../../src/ipc/index.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import type { EmuTransport } from '../../src/transport/emu.js';
import { NOBODY_PEER, ROOT_PEER, config, pattern, refused, silent, tmpDir } from './fixtures.js';
import { until } from './procs.js';

/** Idle time over which a controller held awake must not sleep (it sleeps every few ms otherwise). */
const IDLE_MS = 200;
const DEPTH = 16;
const DATA_BYTES = 1 << 16;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The embedded controller's transport behind device `name`. */
function emuOf(h: Homid, name: string): EmuTransport {
  return h.registry.devices.get(name)!.transport as EmuTransport;
}

/** How many times the controller slept over `ms` of idle time. */
async function sleepsOver(t: EmuTransport, ms: number): Promise<number> {
  const s0 = t.stats().sleeps;
  await sleep(ms);
  return t.stats().sleeps - s0;
}

/**
 * Drive a granted queue pair from this process: write a pattern to LBAs 8.. and read it back through the same
 * queue pair (what a GPU kernel does with SQEs and doorbells, done by the driver core's QueuePair).
 */
async function writeReadBack(grant: RawQueueGrant, fds: readonly number[], seed: number): Promise<void> {
  const qp = attachQueuePair(grant, fds, { closeFds: false });
  try {
    const bytes = 2 * grant.blockSize;
    const lba = 8;
    const nlb = bytes / grant.blockSize;
    const out = qp.dma.alloc(bytes);
    const back = qp.dma.alloc(bytes);
    const want = pattern(bytes, seed);
    out.bytes.set(want);
    for (const [opcode, buf] of [
      [NvmOpcode.Write, out],
      [NvmOpcode.Read, back],
    ] as const) {
      const dp = dataPointer(qp.dma, buf);
      try {
        await qp.exec({ opcode, nsid: grant.nsid, cdw10: lba, cdw11: 0, cdw12: nlb - 1, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
      } finally {
        dp.release();
      }
    }
    assert.deepEqual(back.bytes.slice(), want, 'the pattern read back through the GPU queue pair');
  } finally {
    qp.detach();
  }
}

/** memfd-mode controllers whose awake holds are counted (taken, let go), optionally with small exports. */
function countingHolds(maxExportBytes?: number): { opener: TransportOpener; taken: number; released: number } {
  const c = {
    taken: 0,
    released: 0,
    opener: async (cfg: Parameters<TransportOpener>[0]) => {
      const t = await memfdOpener(cfg);
      const hold = t.holdAwake!.bind(t);
      t.holdAwake = () => {
        c.taken++;
        const release = hold();
        return () => {
          c.released++;
          release();
        };
      };
      if (maxExportBytes !== undefined) {
        const exporter = t.queueExporter!.bind(t);
        t.queueExporter = () => {
          const x = exporter();
          return x === null ? null : { ...x, maxExportBytes };
        };
      }
      return t;
    },
  };
  return c;
}

describe('gpu leases in homid', () => {
  test('config: gpu_queues defaults to 0 and cannot exceed queue_pairs', () => {
    const c = parseConfig('[class.gpu]\ngpu_queues = 2\nusers = [0]');
    assert.equal(c.classes.get('default')!.gpuQueues, 0, 'no GPU queue pairs unless a class says so');
    assert.equal(c.classes.get('gpu')!.gpuQueues, 2);
    assert.throws(
      () => parseConfig('[class.x]\nqueue_pairs = 2\nper_client = 2\ngpu_queues = 3', 'x.toml'),
      (e: unknown) => e instanceof ConfigError && /class\.x\.gpu_queues: gpu_queues \(3\) exceeds queue_pairs \(2\)/.test(e.message),
    );
  });

  test('a gpu lease is a working raw queue pair; the controller is held awake while it lives and let go at reclaim', { timeout: 60_000 }, async () => {
    const holds = countingHolds();
    const h = await Homid.start(config({ device: [{ name: 'm', uri: 'emu://?size=8MiB' }], raw: { users: [ROOT_PEER.uid] }, class: { default: { gpu_queues: 2 } } }), {
      logger: silent(),
      opener: holds.opener,
      regions: memfdRegions,
    });
    try {
      const t = emuOf(h, 'm');
      assert.equal(t.awakeHolds(), 0);
      assert.ok((await sleepsOver(t, IDLE_MS)) > 0, 'an idle controller sleeps');
      const s = h.connect(ROOT_PEER);
      const [l] = await h.openQueuePairs(s, { device: 'm', depth: DEPTH, mode: 'gpu', dataBytes: DATA_BYTES });
      assert.equal(l!.kind, 'gpu');
      const w = l!.wire()!;
      assert.equal(w.grant.mode, 'gpu');
      if (w.grant.mode !== 'gpu') return;
      assert.equal(w.grant.busyPoll, true, 'the embedded controller sleeps when idle: held awake');
      assert.equal(w.grant.device, 'emu');
      const grant = validateRawGrant(w.grant.grant, w.fds.length);
      assert.equal(grant.qid, l!.qid);
      assert.equal(grant.entries, DEPTH);
      assert.ok(grant.wake !== null, 'the wake page is granted too (a CPU driver of the queue may still use it)');
      assert.ok(GpuLeaseGrant.safeParse({ ...w.grant, grantId: '1', qid: l!.qid, fdBase: 0, fdCount: w.fds.length }).success, 'what homid sends passes the wire schema');
      // held: one hold, and no sleep over an idle stretch
      assert.equal(t.awakeHolds(), 1);
      assert.equal(holds.taken, 1);
      await sleep(20);
      assert.equal(await sleepsOver(t, IDLE_MS), 0, 'a controller held awake never sleeps');
      // status: kind gpu, holding the controller awake; the class counts it in both budgets
      const st = h.status();
      assert.deepEqual(
        st.clients[0]!.queuePairs.map((q) => [q.mode, q.holdsAwake, q.io]),
        [['gpu', true, null]],
      );
      const k = st.classes.find((c) => c.name === 'default')!;
      assert.deepEqual([k.held, k.gpuHeld, k.gpuQueues], [1, 1, 2]);
      const text = formatStatus(st);
      assert.match(text, /gpu held\s+gpu budget/);
      assert.match(text, new RegExp(`\\b${l!.qid}\\s+gpu\\s+${DEPTH}\\s+GPU-driven; controller held awake`));
      // the grant works: a write and a read back from this process
      await writeReadBack(grant, l!.fds, 11);
      // while held, its qid is taken on the controller
      const c = h.registry.devices.get('m')!.controller!;
      await assert.rejects(provisionQueuePair(c, t, { entries: DEPTH, qid: l!.qid, dataBytes: 4096 }), new RegExp(`qid ${l!.qid} is in use`));
      // the client goes away: reclaimed, the hold let go exactly once, the controller sleeps again
      await h.disconnect(s);
      assert.equal(t.awakeHolds(), 0);
      assert.equal(holds.released, 1, 'revoke and release let the hold go once');
      assert.deepEqual(h.status().clients, []);
      assert.equal(h.status().classes.find((x) => x.name === 'default')!.gpuHeld, 0);
      assert.equal(h.counters.reclaimedQueuePairs, 1);
      assert.ok((await sleepsOver(t, IDLE_MS)) > 0, 'let go: the idle controller sleeps again');
      // the queues were deleted on the controller: Create I/O CQ / SQ of that qid succeed again
      const again = await provisionQueuePair(c, t, { entries: DEPTH, qid: l!.qid, dataBytes: 4096 });
      assert.equal(again.grant.qid, l!.qid);
      await again.reclaim();
    } finally {
      await h.stop();
    }
  });

  test('budgets: gpu_queues per class, raw permission, and the queue-pair budgets every lease counts in', { timeout: 60_000 }, async () => {
    const h = await Homid.start(
      config({
        device: [{ name: 'm', uri: 'emu://?size=8MiB' }],
        raw: { users: [ROOT_PEER.uid, NOBODY_PEER.uid] },
        class: { default: { queue_pairs: 3, per_client: 3, gpu_queues: 1 }, nogpu: { users: [NOBODY_PEER.uid], queue_pairs: 2, per_client: 2 } },
      }),
      { logger: silent(), opener: memfdOpener, regions: memfdRegions },
    );
    const sessions: ClientSession[] = [];
    try {
      const t = emuOf(h, 'm');
      const a = h.connect(ROOT_PEER);
      const b = h.connect(ROOT_PEER);
      const nobody = h.connect(NOBODY_PEER);
      sessions.push(a, b, nobody);
      assert.equal(nobody.klass.name, 'nogpu');
      const e0 = await refused(h.openQueuePairs(nobody, { device: 'm', depth: 8, mode: 'gpu', dataBytes: DATA_BYTES }), HomidErrorCode.BudgetClass);
      assert.match(e0.message, /class 'nogpu' holds 0 of 0 GPU queue pairs \(gpu_queues\), asked for 1 more/);
      // the same client may hold raw queues: the refusal is the GPU budget's
      await h.openQueuePairs(nobody, { device: 'm', depth: 8, mode: 'raw', dataBytes: DATA_BYTES });
      await refused(h.openQueuePairs(a, { device: 'm', depth: 8, mode: 'gpu', count: 2, dataBytes: DATA_BYTES }), HomidErrorCode.BudgetClass);
      await h.openQueuePairs(a, { device: 'm', depth: 8, mode: 'gpu', dataBytes: DATA_BYTES });
      const e1 = await refused(h.openQueuePairs(b, { device: 'm', depth: 8, mode: 'gpu', dataBytes: DATA_BYTES }), HomidErrorCode.BudgetClass);
      assert.match(e1.message, /class 'default' holds 1 of 1 GPU queue pairs/);
      // GPU queue pairs count in queue_pairs too: 1 gpu + 2 raw fill the class's 3
      await h.openQueuePairs(b, { device: 'm', depth: 8, mode: 'raw', count: 2, dataBytes: DATA_BYTES });
      await refused(h.openQueuePairs(a, { device: 'm', depth: 8, mode: 'raw', dataBytes: DATA_BYTES }), HomidErrorCode.BudgetClass);
      assert.equal(t.awakeHolds(), 1, 'refusals take no hold');
      // concurrent asks cannot both pass the GPU budget
      await h.disconnect(a);
      await h.disconnect(b);
      const c = h.connect(ROOT_PEER);
      sessions.push(c);
      const both = await Promise.allSettled([0, 1].map(() => h.openQueuePairs(c, { device: 'm', depth: 8, mode: 'gpu', dataBytes: DATA_BYTES })));
      assert.deepEqual(both.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
      assert.equal(t.awakeHolds(), 1);
    } finally {
      for (const s of sessions) await h.disconnect(s);
      await h.stop();
    }
  });

  test('a client without raw permission is refused: a GPU drives its queue pair unchecked', async () => {
    const h = await Homid.start(config({ device: [{ name: 'm', uri: 'emu://?size=8MiB' }], raw: { users: [ROOT_PEER.uid] }, class: { default: { gpu_queues: 1 } } }), {
      logger: silent(),
      opener: memfdOpener,
      regions: memfdRegions,
    });
    try {
      const e = await refused(h.openQueuePairs(h.connect(NOBODY_PEER), { device: 'm', depth: 8, mode: 'gpu' }), HomidErrorCode.RawDenied);
      assert.match(e.message, /may not hold GPU queues/);
    } finally {
      await h.stop();
    }
  });

  test('a transport that exports no memory is refused with gpu-unsupported, saying why; nothing is held', async () => {
    // the library's own opener: the embedded controller over SharedArrayBuffers (in-process memory only)
    const h = await Homid.start(config({ device: [{ name: 'sab', uri: 'emu://?size=8MiB' }], raw: { users: [ROOT_PEER.uid] }, class: { default: { gpu_queues: 1 } } }), { logger: silent() });
    try {
      const s = h.connect(ROOT_PEER);
      const e = await refused(h.openQueuePairs(s, { device: 'sab', depth: 8, mode: 'gpu' }), HomidErrorCode.GpuUnsupported);
      assert.match(e.message, /^device 'sab' cannot give a GPU a queue pair: its transport \(emu\) exports no queue memory another process can map; GPU leases need/);
      assert.equal(emuOf(h, 'sab').awakeHolds(), 0);
      assert.equal(s.leases.size + s.reserved + s.reservedGpu, 0);
      // raw queues still work there (in process)
      const [raw] = await h.openQueuePairs(s, { device: 'sab', depth: 8, mode: 'raw' });
      assert.equal(raw!.exported, false);
    } finally {
      await h.stop();
    }
  });

  test('a creation that fails midway lets the hold go, exactly once', async () => {
    const holds = countingHolds(64 << 10);
    const h = await Homid.start(config({ device: [{ name: 'm', uri: 'emu://?size=8MiB' }], raw: { users: [ROOT_PEER.uid] }, class: { default: { gpu_queues: 2 } } }), {
      logger: silent(),
      opener: holds.opener,
      regions: memfdRegions,
    });
    try {
      const s = h.connect(ROOT_PEER);
      const e = await refused(h.openQueuePairs(s, { device: 'm', depth: 8, mode: 'gpu', dataBytes: 1 << 20 }), HomidErrorCode.BadRequest);
      assert.match(e.message, /exceed the 65536 bytes one export can hold; ask for less dataBytes or depth/);
      assert.deepEqual([holds.taken, holds.released, emuOf(h, 'm').awakeHolds()], [1, 1, 0]);
      // two that fit, then closed one by one
      const ls = await h.openQueuePairs(s, { device: 'm', depth: 8, mode: 'gpu', count: 2, dataBytes: 16 << 10 });
      assert.deepEqual([holds.taken, holds.released, emuOf(h, 'm').awakeHolds()], [3, 1, 2]);
      await h.closeQueuePair(s, ls[0]!.id);
      assert.deepEqual([holds.released, emuOf(h, 'm').awakeHolds()], [2, 1]);
      ls[0]!.release();
      ls[0]!.revoke();
      assert.equal(holds.released, 2, 'a second revoke or release lets nothing go');
      await h.disconnect(s);
      assert.deepEqual([holds.released, emuOf(h, 'm').awakeHolds()], [3, 0]);
    } finally {
      await h.stop();
    }
  });
});

describe('gpu leases over the socket (HomidClient.openGpuQueue)', () => {
  let dir: string;
  let sock: string;
  let srv: HomidServer;
  before(async () => {
    dir = tmpDir('homid-gpu-');
    sock = path.join(dir, 'homid.sock');
    srv = await startHomidServer(
      config({ socket: sock, device: [{ name: 'm', uri: 'emu://?size=8MiB' }], raw: { users: [ROOT_PEER.uid] }, class: { default: { queue_pairs: 4, per_client: 4, gpu_queues: 2 } } }),
      { logger: silent() },
    );
  });
  after(async () => {
    await srv?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the client gets a checked grant and its descriptors, drives it, sees it in status, and closes it', { timeout: 60_000 }, async () => {
    const t = emuOf(srv.homid, 'm');
    const c = await HomidClient.connect(sock);
    try {
      const g = await c.openGpuQueue({ device: 'm', depth: DEPTH, dataBytes: DATA_BYTES });
      assert.equal(g.mode, 'gpu');
      assert.equal(g.busyPoll, true);
      assert.equal(g.device, 'emu');
      assert.equal(g.gone, null);
      assert.equal(g.fds.length, g.grant.fds.length, 'one descriptor per grant fd, received by SCM_RIGHTS');
      assert.equal(g.grant.qid, g.qid);
      assert.equal(t.awakeHolds(), 1);
      await writeReadBack(g.grant, g.fds, 12);
      const st = await c.status();
      assert.deepEqual(
        st.clients.flatMap((x) => x.queuePairs.map((q) => [q.mode, q.qid, q.holdsAwake])),
        [['gpu', g.qid, true]],
      );
      await g.close();
      await g.close();
      assert.equal(g.gone, 'closed');
      assert.equal(t.awakeHolds(), 0);
      assert.deepEqual((await c.status()).clients[0]!.queuePairs, []);
      for (const fd of g.fds) assert.throws(() => fs.fstatSync(fd), /EBADF/, 'close() closed the descriptors');
    } finally {
      c.close();
    }
  });

  test('the client going away reclaims the lease and lets the controller sleep again', { timeout: 60_000 }, async () => {
    const t = emuOf(srv.homid, 'm');
    const c = await HomidClient.connect(sock);
    const g = await c.openGpuQueue({ device: 'm', depth: DEPTH, dataBytes: DATA_BYTES });
    assert.equal(t.awakeHolds(), 1);
    const reclaimed = srv.homid.counters.reclaimedQueuePairs;
    c.close();
    await until(() => srv.homid.sessions.size === 0, 20_000, 'the session reclaimed');
    assert.equal(srv.homid.counters.reclaimedQueuePairs, reclaimed + 1);
    assert.equal(t.awakeHolds(), 0);
    await until(() => g.gone !== null, 5_000, 'the lease told it is gone');
    assert.match(g.gone!, /homid connection closed/);
    await g.close();
    assert.ok((await sleepsOver(t, IDLE_MS)) > 0, 'the idle controller sleeps again');
  });

  test('malformed gpu lease requests are refused by the schema', { timeout: 60_000 }, async () => {
    const c = await HomidClient.connect(sock);
    try {
      const base = { type: 'openQueuePair', device: 'm', nsid: 1, depth: DEPTH, count: 1, mode: 'gpu' } as const;
      const bad: Array<[string, Record<string, unknown>, RegExp]> = [
        ['depth 1', { depth: 1 }, /depth/],
        ['count 0', { count: 0 }, /count/],
        ['mode in capitals', { mode: 'GPU' }, /mode/],
        ['nsid 0', { nsid: 0 }, /nsid/],
        ['dataBytes as a string', { dataBytes: '65536' }, /dataBytes/],
        ['no device', { device: undefined }, /device/],
      ];
      for (const [what, change, re] of bad) {
        const { response, fds } = await c.ipc.request({ ...base, ...change } as typeof base);
        assert.equal(fds.length, 0, what);
        assert.equal(response.ok, false, what);
        if (response.ok) continue;
        assert.equal(response.error.code, IpcErrorCode.InvalidRequest, `${what}: ${response.error.message}`);
        assert.match(response.error.message, re, what);
      }
      assert.equal(emuOf(srv.homid, 'm').awakeHolds(), 0, 'nothing was held for them');
    } finally {
      c.close();
    }
  });

  test('the gpu grant on the wire is exact: a missing hint, an unknown one or another controller kind is refused', async () => {
    const c = await HomidClient.connect(sock);
    try {
      const g = await c.openGpuQueue({ device: 'm', depth: DEPTH, dataBytes: DATA_BYTES });
      const good = { grantId: g.grantId, qid: g.qid, fdBase: 0, fdCount: g.fds.length, mode: 'gpu', grant: g.grant, busyPoll: g.busyPoll, device: g.device };
      assert.ok(GpuLeaseGrant.safeParse(good).success);
      const { busyPoll, ...noBusyPoll } = good;
      void busyPoll;
      assert.equal(GpuLeaseGrant.safeParse(noBusyPoll).success, false, 'busyPoll is required');
      assert.equal(GpuLeaseGrant.safeParse({ ...good, device: 'cuda' }).success, false, 'emu or pcie');
      assert.equal(GpuLeaseGrant.safeParse({ ...good, extra: 1 }).success, false, 'strict');
      assert.equal(GpuLeaseGrant.safeParse({ ...good, grant: { ...g.grant, qid: 0 } }).success, false, 'the raw grant is checked as raw');
      await g.close();
    } finally {
      c.close();
    }
  });
});
