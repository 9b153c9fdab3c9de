// homid serving a real PCIe NVMe controller (QEMU's) to raw client processes, run INSIDE the VM harness's guest:
// vfio-pci when the guest has an IOMMU, else uio_pci_generic with hugepages. Client processes get queue pairs
// over homid's socket, map the doorbell page and their memory from the fds in the grant, and drive the
// controller themselves. Every test puts the function back on the kernel's nvme driver afterwards, also after
// failures (and after a homid that was SIGKILLed and left it bound to uio / vfio).
//
//   node dist/src/vm/cli.js run --nvme serial=HOMIA,ns=64M,qpairs=8 --modules nvme,uio_pci_generic \
//     --hugepages 64 -- node --test dist/test-guest/homid-raw.test.js
//   node dist/src/vm/cli.js run --iommu --nvme serial=HOMIA,ns=64M,qpairs=8 --modules nvme,vfio-pci \
//     --hugepages 64 -- node --test dist/test-guest/homid-raw.test.js
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { HomidClient, HomidClientError, type RawLease } from '../src/client/index.js';
import { configFromObject } from '../src/daemon/config.js';
import { startHomidServer, type HomidServer } from '../src/daemon/server.js';
import { dataPointer } from '../src/driver/dptr.js';
import { NvmOpcode } from '../src/nvme/opcodes.js';
import { REG_DOORBELL_BASE } from '../src/nvme/registers.js';
import { CLI_DIR, nextJson, spawnNode, until, type Proc } from '../test/daemon/procs.js';
import { fillPattern } from './homid-raw-client.js';
import { assertInGuest, controllerBySerial, expectedNvme, namespacesOf, pciDriver, rebind, sys, waitFor } from './helpers.js';

assertInGuest();

const IOMMU = process.env.HOMI_GUEST_IOMMU === '1';
const MODE: 'uio' | 'vfio' = IOMMU ? 'vfio' : 'uio';
const DRIVER = IOMMU ? 'vfio-pci' : 'uio_pci_generic';
const spec = expectedNvme()[0]!;
const kctrl = await waitFor(`controller ${spec.serial}`, () => controllerBySerial(spec.serial));
const BDF = kctrl.bdf;
const kdisk = await waitFor('namespace 1', () => namespacesOf(kctrl).get(1));
/** Logical block size of namespace 1, as the kernel reports it (read before anything is unbound). */
const LBS = Number(sys(`/sys/block/${kdisk}/queue/logical_block_size`));
const URI = `pci:${BDF}?mode=${MODE}`;
const CLIENT = fileURLToPath(new URL('./homid-raw-client.js', import.meta.url));
/** Blocks each client queue pair writes and verifies (8 KiB commands). */
const PER_QUEUE_BYTES = 256 << 10;
const uid = process.getuid!();
/** A script (argv: startFile config; written to a .mjs file: worker threads refuse an -e parent). Loads the daemon's code, waits for startFile, then runs homid (dist/src/cli/daemon.js). */
const HOMID_AHEAD = [
  `const d = await import(${JSON.stringify(new URL('file://' + join(CLI_DIR, 'daemon.js')).href)});`,
  `const fs = await import('node:fs');`,
  `while (!fs.existsSync(process.argv[2])) await new Promise((r) => setTimeout(r, 20));`,
  `process.exitCode = await d.daemonCommand({ config: process.argv[3] });`,
].join('\n');

function configDoc(sock: string, k: { queuePairs: number; perClient: number }): Record<string, unknown> {
  return {
    socket: sock,
    log_level: 'warn',
    device: [{ name: 'nv', uri: URI, extents: 'none', io_queues: 64 }],
    class: { default: { queue_pairs: k.queuePairs, per_client: k.perClient, max_depth: 64 } },
    raw: { users: [uid] },
  };
}

function tomlOf(doc: Record<string, unknown>): string {
  const k = (doc.class as { default: { queue_pairs: number; per_client: number } }).default;
  return [
    `socket = "${doc.socket as string}"`,
    'log_level = "warn"',
    '[[device]]',
    'name = "nv"',
    `uri = "${URI}"`,
    'extents = "none"',
    'io_queues = 64',
    '[class.default]',
    `queue_pairs = ${k.queue_pairs}`,
    `per_client = ${k.per_client}`,
    'max_depth = 64',
    '[raw]',
    `users = [${uid}]`,
    '',
  ].join('\n');
}

/** Back on nvme, live, with its namespace block device; override cleared. */
async function assertNvmeBack(): Promise<void> {
  await waitFor(`${BDF} back on nvme`, () => pciDriver(BDF) === 'nvme');
  assert.equal(sys(`/sys/bus/pci/devices/${BDF}/driver_override`), '(null)');
  const c = await waitFor(`kernel controller ${spec.serial} back`, () => controllerBySerial(spec.serial));
  await waitFor(`${c.name} live`, () => sys(`/sys/class/nvme/${c.name}/state`) === 'live');
  await waitFor('namespace block device back', () => {
    const n = namespacesOf(c).get(1);
    return n !== undefined && existsSync(`/dev/${n}`);
  });
}

let lapT = Date.now();
/** Phase timings, printed as test diagnostics (the guest is emulated: watch the budget of the VM suite). */
function lap(what: string): void {
  const now = Date.now();
  console.log(`#   ${what}: ${now - lapT} ms`);
  lapT = now;
}

interface Ctx {
  dir: string;
  sock: string;
  procs: Proc[];
  /** Clients in this process: closed (their raw queues detached) before homid goes or the binding changes. */
  clients: HomidClient[];
  /** Connect a client of this process. */
  connect(): Promise<HomidClient>;
}

/**
 * Run `fn` with a scratch folder; afterwards kill every process it started (they hold device mappings: a VFIO
 * device cannot be unbound while one is mapped), then put the function back on nvme, whatever happened.
 */
async function withDevice(fn: (ctx: Ctx) => Promise<void>): Promise<void> {
  assert.equal(pciDriver(BDF), 'nvme', `${BDF} must start on nvme`);
  const dir = mkdtempSync('/tmp/homid-raw-');
  const ctx: Ctx = {
    dir,
    sock: join(dir, 'homid.sock'),
    procs: [],
    clients: [],
    async connect() {
      const c = await HomidClient.connect(this.sock);
      this.clients.push(c);
      return c;
    },
  };
  lap('(start)');
  try {
    await fn(ctx);
  } finally {
    lap('test body');
    await closeClients(ctx);
    for (const p of ctx.procs) if (p.p.exitCode === null && p.p.signalCode === null) p.p.kill('SIGKILL');
    await Promise.all(ctx.procs.map((p) => p.exited));
    if (pciDriver(BDF) !== 'nvme' || sys(`/sys/bus/pci/devices/${BDF}/driver_override`) !== '(null)') await rebind(BDF, null);
    rmSync(dir, { recursive: true, force: true });
  }
  await assertNvmeBack();
  lap('cleanup and nvme back');
}

/**
 * Close this process's clients and wait until each connection is gone (the client library then unmaps their
 * doorbells and memory): unbinding vfio-pci waits for every mapping of the device, this process's included.
 */
async function closeClients(ctx: Ctx): Promise<void> {
  for (const c of ctx.clients.splice(0)) await c.ipc.close();
}

/** homid in this process (its DriverBinding restores nvme on close). */
async function inProcessHomid(sock: string, k: { queuePairs: number; perClient: number }): Promise<HomidServer> {
  const srv = await startHomidServer(configFromObject(configDoc(sock, k), 'homid-raw'), { logger: pino({ level: 'silent' }) });
  const d = srv.homid.listDevices()[0]!;
  assert.equal(d.state, 'live', `device did not come up: ${d.error}`);
  assert.equal(pciDriver(BDF), DRIVER);
  lap('homid up (in process)');
  return srv;
}

/**
 * A client process (homid-raw-client.ts). It connects once homid listens, or, with `startFile`, once that file
 * exists (started ahead: node itself takes seconds to start under TCG).
 */
function client(ctx: Ctx, args: { count: number; firstLba: number; seed: number; then: 'exit' | 'hold' | 'wait-go'; blockSize: number; startFile?: string }): Proc {
  const env: Record<string, string> = { HOMI_RAW_CHILD: '1' };
  if (args.startFile) env.HOMI_RAW_START_FILE = args.startFile;
  const p = spawnNode([CLIENT, ctx.sock, 'nv', String(args.count), String(args.firstLba), String(PER_QUEUE_BYTES / args.blockSize), String(args.seed), args.then], env);
  ctx.procs.push(p);
  return p;
}

/** Write the pattern of `seed` over 8 KiB at `lba` through a raw lease of this process, or read it and compare. */
async function rawPattern(l: RawLease, op: 'write' | 'verify', lba: number, seed: number): Promise<void> {
  const qp = l.qp;
  const bs = l.grant.blockSize;
  const buf = qp.dma.alloc(8192);
  const dp = dataPointer(qp.dma, buf);
  try {
    const words = new Uint32Array(buf.bytes.buffer, buf.bytes.byteOffset, 2048);
    const want = new Uint32Array(2048);
    fillPattern(want, lba, bs, seed);
    if (op === 'write') words.set(want);
    const c = await qp.exec({ opcode: op === 'write' ? NvmOpcode.Write : NvmOpcode.Read, nsid: l.grant.nsid, cdw10: lba, cdw11: 0, cdw12: 8192 / bs - 1, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
    assert.equal(c.status, 0, `${op} at LBA ${lba} on qid ${qp.qid}`);
    if (op === 'verify') assert.deepEqual(words, want, `pattern ${seed} at LBA ${lba} read on qid ${qp.qid}`);
  } finally {
    dp.release();
    qp.dma.free(buf);
  }
}

async function heldQids(c: HomidClient): Promise<number[]> {
  const st = await c.status();
  return (st.clients as { queuePairs: { qid: number }[] }[]).flatMap((x) => x.queuePairs.map((q) => q.qid)).sort((a, b) => a - b);
}

async function inUse(c: HomidClient): Promise<number> {
  const st = await c.status();
  return (st.devices as { queuePairsInUse: number }[])[0]!.queuePairsInUse;
}

async function connectWhenUp(ctx: Ctx, homid: Proc): Promise<HomidClient> {
  const t0 = Date.now();
  for (;;) {
    try {
      return await ctx.connect();
    } catch (e) {
      if (homid.p.exitCode !== null || homid.p.signalCode !== null) throw new Error(`homid exited before listening: ${(e as Error).message}`);
      if (Date.now() - t0 > 60_000) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

test(`${MODE}: client processes do verified raw I/O concurrently on their own queue pairs; budget refusals are clean`, async () => {
  await withDevice(async (ctx) => {
    const t0 = Date.now();
    const blockSize = LBS;
    const span = (PER_QUEUE_BYTES / blockSize) * 2;
    // the clients start first (node takes seconds to start under TCG) and connect once homid listens
    const kids = [0, 1, 2].map((i) => client(ctx, { count: 2, firstLba: (1 << 20) / blockSize + i * span, seed: 11 + i, then: 'wait-go', blockSize }));
    const srv = await inProcessHomid(ctx.sock, { queuePairs: 6, perClient: 3 });
    try {
      const me = await ctx.connect();
      assert.equal(((await me.listDevices())[0]!.namespaces as { blockSize: number }[])[0]!.blockSize, blockSize);
      const ready = await Promise.all(kids.map((k) => nextJson(k)));
      for (const r of ready) assert.equal(r.ready, true, JSON.stringify(r));
      lap('3 clients ready');
      // six queue pairs live at once, each its own qid, all on the controller
      const qids = ready.flatMap((r) => r.qids as number[]).sort((a, b) => a - b);
      assert.equal(new Set(qids).size, 6, `qids ${qids.join(',')}`);
      assert.deepEqual(await heldQids(me), qids);
      assert.equal(await inUse(me), 6);
      const ctrl = srv.homid.registry.live('nv').controller;
      assert.deepEqual(
        ctrl.remoteQueuePairs.map((q) => q.qid),
        qids,
      );

      // refusals while the class is full: typed, one line, nothing created, the session goes on
      const refused = async (o: Parameters<HomidClient['openQueuePairs']>[0], code: string, re: RegExp): Promise<void> => {
        const err = await me.openQueuePairs(o).then(
          () => null,
          (e: unknown) => e as HomidClientError,
        );
        assert.ok(err instanceof HomidClientError, `expected a refusal (${code})`);
        assert.equal(err.code, code, err.message);
        assert.match(err.message, re);
        assert.ok(!err.message.includes('\n'));
      };
      await refused({ device: 'nv', depth: 16, count: 4 }, 'budget-client', /client budget exceeded: holds 0 of 3/);
      await refused({ device: 'nv', depth: 16 }, 'budget-class', /class budget exceeded: class 'default' holds 6 of 6/);
      assert.deepEqual(await heldQids(me), qids, 'a refusal creates nothing');
      assert.equal(ctrl.remoteQueuePairs.length, 6);

      writeFileSync(`${ctx.sock}.go`, '');
      const done = await Promise.all(kids.map((k) => nextJson(k)));
      for (const r of done) assert.equal(r.ok, true, JSON.stringify(r));
      lap('verified I/O');
      assert.ok(done.every((r) => Number(r.ios) === (PER_QUEUE_BYTES / 8192) * 2 * 2));
      assert.deepEqual(await Promise.all(kids.map((k) => k.exited)), [0, 0, 0]);
      await until(async () => (await heldQids(me)).length === 0 && (await inUse(me)) === 0, 20_000, 'leases of exited clients reclaimed');
      lap('clients exited, reclaimed');

      // the same session now gets queue pairs within its budget
      const mine = (await me.openQueuePairs({ device: 'nv', depth: 16, count: 3, dataBytes: 1 << 16 })) as RawLease[];
      assert.deepEqual(
        mine.map((l) => l.qid),
        [1, 2, 3],
      );
      for (const l of mine) {
        // the grant maps the doorbell page only, through the transport's fd (vfio device fd / sysfs resource0)
        assert.equal(l.grant.doorbell.map.offset % 4096, 0);
        assert.ok(l.grant.doorbell.map.offset >= REG_DOORBELL_BASE);
        assert.equal(l.grant.wake, null);
      }
      // what client 0 wrote reads back through another process's queue pair
      const l = mine[0]!;
      const buf = l.qp.dma.alloc(8192);
      const dp = dataPointer(l.qp.dma, buf);
      const lba = (1 << 20) / blockSize;
      const c = await l.qp.exec({ opcode: NvmOpcode.Read, nsid: 1, cdw10: lba, cdw11: 0, cdw12: 8192 / blockSize - 1, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
      assert.equal(c.status, 0);
      const want = new Uint32Array(2048);
      fillPattern(want, lba, blockSize, 11);
      assert.deepEqual(new Uint32Array(buf.bytes.buffer, buf.bytes.byteOffset, 2048), want);
      dp.release();
      l.qp.dma.free(buf);

      if (MODE === 'uio') {
        // no free hugepage: a clear refusal, nothing created
        const nr = readFileSync('/proc/sys/vm/nr_hugepages', 'utf8').trim();
        const other = await ctx.connect();
        writeFileSync('/proc/sys/vm/nr_hugepages', '0');
        try {
          const err = await other.openQueuePairs({ device: 'nv', depth: 16 }).then(
            () => null,
            (e: unknown) => e as HomidClientError,
          );
          assert.ok(err instanceof HomidClientError);
          assert.equal(err.code, 'no-hugepages', err.message);
          assert.match(err.message, /no free 2 MiB hugepage .*nr_hugepages/);
        } finally {
          writeFileSync('/proc/sys/vm/nr_hugepages', nr);
          await other.ipc.close();
        }
        assert.equal(ctrl.remoteQueuePairs.length, 3);
      }
      await me.ipc.close();
      assert.ok(
        mine.every((x) => x.qp.isDetached),
        'closing the connection unmaps the raw queue pairs',
      );
      await until(() => ctrl.remoteQueuePairs.length === 0, 20_000, 'reclaim on close');
    } finally {
      await closeClients(ctx);
      await srv.close();
    }
    console.log(`# ${MODE}: concurrent raw clients + refusals: ${Date.now() - t0} ms`);
  });
});

test(`${MODE}: a client SIGKILLed mid-I/O has its queues reclaimed; the next client gets the same qids`, async () => {
  await withDevice(async (ctx) => {
    const t0 = Date.now();
    const blockSize = LBS;
    const k = client(ctx, { count: 2, firstLba: (8 << 20) / blockSize, seed: 5, then: 'hold', blockSize });
    const srv = await inProcessHomid(ctx.sock, { queuePairs: 4, perClient: 2 });
    try {
      const me = await ctx.connect();
      const ready = await nextJson(k);
      assert.equal(ready.ready, true, JSON.stringify(ready));
      const qids = ready.qids as number[];
      const first = await nextJson(k); // one verified round done; the next is in flight
      assert.equal(first.ok, true, JSON.stringify(first));
      assert.deepEqual(await heldQids(me), qids);
      lap('client ready, I/O in flight');
      k.p.kill('SIGKILL');
      assert.equal(await k.exited, null);
      await until(async () => (await heldQids(me)).length === 0 && (await inUse(me)) === 0, 20_000, "the killed client's queues reclaimed");
      const ctrl = srv.homid.registry.live('nv').controller;
      assert.equal(ctrl.remoteQueuePairs.length, 0);
      assert.equal(ctrl.state, 'live');
      // another client gets the same qids, and they work (what the killed client wrote reads back)
      const again = (await me.openQueuePairs({ device: 'nv', depth: 16, count: 2, dataBytes: 1 << 16 })) as RawLease[];
      assert.deepEqual(
        again.map((l) => l.qid).sort((a, b) => a - b),
        [...qids].sort((a, b) => a - b),
        'the reclaimed qids are granted again',
      );
      for (const [i, l] of again.entries()) {
        await rawPattern(l, 'verify', (8 << 20) / blockSize, 5);
        await rawPattern(l, 'write', (12 << 20) / blockSize + i * 16, 6);
        await rawPattern(l, 'verify', (12 << 20) / blockSize + i * 16, 6);
      }
    } finally {
      await closeClients(ctx);
      await srv.close();
    }
    console.log(`# ${MODE}: SIGKILLed client reclaimed: ${Date.now() - t0} ms`);
  });
});

test(`${MODE}: homid SIGKILLed under clients holding raw queues; a new homid on the device finds no orphan queue`, async () => {
  await withDevice(async (ctx) => {
    const t0 = Date.now();
    const cfg = join(ctx.dir, 'homid.toml');
    writeFileSync(cfg, tomlOf(configDoc(ctx.sock, { queuePairs: 64, perClient: 64 })));
    const ahead = join(ctx.dir, 'homid-ahead.mjs');
    writeFileSync(ahead, HOMID_AHEAD);
    const startHomid = (startFile?: string): Proc => {
      // A homid process; with startFile, one started ahead that loads its code and waits for the file before it
      // runs the daemon (node takes seconds to start under TCG): the daemon itself starts only after the go.
      const args = startFile === undefined ? [join(CLI_DIR, 'homid.js'), '--config', cfg] : [ahead, startFile, cfg];
      const p = spawnNode(args);
      ctx.procs.push(p);
      return p;
    };
    const blockSize = LBS;
    const span = (PER_QUEUE_BYTES / blockSize) * 2;
    const base = (16 << 20) / blockSize;
    const secondGo = join(ctx.dir, 'second.go');
    const first = startHomid();
    // two clients: a process with I/O in flight when homid dies, and this process
    const kids = [client(ctx, { count: 2, firstLba: base, seed: 21, then: 'hold', blockSize })];
    const second = startHomid(secondGo);
    const probe = await connectWhenUp(ctx, first);
    lap('homid up (child)');
    const dev = (await probe.listDevices())[0]!;
    assert.equal(dev.state, 'live', String(dev.error));
    const maxQ = dev.maxQueuePairs as number;
    assert.ok(maxQ >= 4, `the controller grants ${maxQ} I/O queue pairs`);
    const mine = (await probe.openQueuePairs({ device: 'nv', depth: 16, count: 2, dataBytes: 1 << 16 })) as RawLease[];
    for (const [q, l] of mine.entries()) await rawPattern(l, 'write', base + span + q * (PER_QUEUE_BYTES / blockSize), 22);
    const ready = await Promise.all(kids.map((k) => nextJson(k)));
    const oldQids = [...ready.flatMap((r) => r.qids as number[]), ...mine.map((l) => l.qid)].sort((a, b) => a - b);
    assert.deepEqual(oldQids, [1, 2, 3, 4]);
    lap('2 clients ready');
    const wrote = await Promise.all(kids.map((k) => nextJson(k)));
    lap('verified I/O');
    for (const w of wrote) assert.equal(w.ok, true, JSON.stringify(w));

    first.p.kill('SIGKILL'); // the clients' queue pairs stay created on the controller, I/O in flight
    await first.exited;
    const gone = await Promise.all(kids.map((k) => nextJson(k)));
    for (const g of gone) assert.deepEqual(g, { closed: true, detached: true });
    assert.deepEqual(await Promise.all(kids.map((k) => k.exited)), [0]);
    await until(() => mine.every((l) => l.qp.isDetached), 10_000, "this process's raw queues detached when homid died");
    await closeClients(ctx);
    assert.equal(pciDriver(BDF), DRIVER, 'a SIGKILLed homid leaves the binding as it was');

    writeFileSync(secondGo, '');
    lap('homid killed, clients gone');
    const c = await connectWhenUp(ctx, second);
    lap('second homid up');
    assert.deepEqual(await heldQids(c), []);
    assert.equal(await inUse(c), 0);
    // every I/O queue pair the controller granted can be created again, the old qids included
    const all = (await c.openQueuePairs({ device: 'nv', depth: 16, count: maxQ, dataBytes: 1 << 16 })) as RawLease[];
    assert.deepEqual(
      all.map((l) => l.qid),
      Array.from({ length: maxQ }, (_, i) => i + 1),
    );
    assert.equal(await inUse(c), maxQ);
    // each works, and what the old clients wrote reads back
    for (const [i, l] of all.entries()) {
      const q = i % 4;
      await rawPattern(l, 'verify', base + Math.floor(q / 2) * span + (q % 2) * (PER_QUEUE_BYTES / blockSize), 21 + Math.floor(q / 2));
    }
    await closeClients(ctx);
    assert.ok(all.every((l) => l.qp.isDetached));
    const s = await ctx.connect();
    await until(async () => (await inUse(s)) === 0, 20_000, 'the new homid reclaimed every queue pair');
    await closeClients(ctx);
    lap('all queue pairs read back');
    second.p.kill('SIGTERM');
    assert.equal(await second.exited, 0, 'the new homid stops cleanly');
    console.log(`# ${MODE}: homid SIGKILLed and restarted: ${Date.now() - t0} ms`);
  });
});
