/**
 * The IPC limits (src/ipc/limits.ts) against hostile clients: connections per uid and in total, partial frames
 * that trickle or never complete, descriptors held in partial frames, the descriptor reserve and the EMFILE path,
 * requests in flight per uid. Every test ends with everything released (the counters at zero, the descriptors
 * closed) and a fresh client served. Limits are small so that each test takes a few seconds.
 *
 * Parts that need a second uid run a child as uid 65534 (setpriv); they are skipped, saying why, when that is
 * impossible (not root, no setpriv, or the child cannot read the test files).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  IpcClient,
  IpcError,
  IpcErrorCode,
  IpcServer,
  encodeFrame,
  frameHeader,
  type IpcHandler,
  type IpcLimitStats,
  type IpcRefusal,
  type IpcServerOptions,
  type IpcUidUsage,
} from '../../src/ipc/index.js';
import { getNofileLimit, raiseNofileLimit, setNofileLimit } from '../../src/sys/rlimit.js';
import { MsgIo, closeFd, connectUnix, unixSocket } from '../../src/sys/socket.js';
import { openFdCount, socketPath, waitFor, within } from './helpers.js';
import { testCatalogue, type TestCatalogue } from './catalogue.js';

const T = 30_000;
/** Longest wait for one thing inside a test (well below T, so that a failure says what it waited for). */
const W = 10_000;
const NOBODY = 65534;
const ME = process.getuid!();
const MIB = 1024 * 1024;
/** A frame length field of 1 MiB (the default maxFrame): a body of 1 MiB - 2. */
const DECLARED_1MIB = MIB;
/** The worker's smallest body growth step (reactor-worker.ts BODY_STEP_MIN). */
const BODY_STEP_MIN = 16 * 1024;

const childScript = fileURLToPath(new URL('./limits-child.js', import.meta.url));

const handler: IpcHandler<TestCatalogue> = async (req) => {
  switch (req.request.type) {
    case 'hello':
      return { response: { ok: true, version: 1, server: 'limits', cred: req.cred } };
    default:
      return { response: { ok: true } };
  }
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Why a child cannot run as uid 65534 here, or null when it can. */
function nobodyUnavailable(): string | null {
  if (ME !== 0) return `not root (uid ${ME}): cannot switch a child to uid ${NOBODY}`;
  const r = spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, '-e', `require('fs').accessSync(${JSON.stringify(childScript)}, 4)`], {
    encoding: 'utf8',
    cwd: os.tmpdir(),
  });
  if (r.error) return `setpriv unavailable: ${r.error.message}`;
  if (r.status !== 0) return `uid ${NOBODY} cannot run ${childScript}: ${r.stderr.trim()}`;
  return null;
}
const nobodySkip = nobodyUnavailable();

type Line = Record<string, unknown>;

/** Run limits-child.js (as `uid` through setpriv when given) and collect its JSON lines. */
function spawnChild(args: string[], uid?: number) {
  const argv = [childScript, ...args];
  const child =
    uid === undefined
      ? spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], cwd: os.tmpdir() });
  const lines: Line[] = [];
  let buf = '';
  let err = '';
  let exited = false;
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (l.startsWith('{')) lines.push(JSON.parse(l) as Line);
    }
  });
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<void>((resolve) =>
    child.on('exit', () => {
      exited = true;
      resolve();
    }),
  );
  return {
    lines,
    async line(pred: (l: Line) => boolean, what: string): Promise<Line> {
      await waitFor(() => lines.some(pred) || exited, W, what);
      const l = lines.find(pred);
      if (l === undefined) throw new Error(`child exited before ${what}: ${err}`);
      return l;
    },
    async kill(): Promise<void> {
      if (!exited) child.kill('SIGKILL');
      await within(exit, W, 'child exit');
    },
  };
}

async function withServer(opts: Partial<IpcServerOptions<TestCatalogue>>, fn: (server: IpcServer<TestCatalogue>, path: string) => Promise<void>): Promise<void> {
  const path = socketPath('lim');
  const server = await IpcServer.listen({ catalogue: testCatalogue, path, handler, ...opts });
  try {
    await fn(server, path);
  } finally {
    await server.close();
  }
}

/**
 * This process's descriptors that a client's connection or its passed descriptors account for (sockets, and
 * /dev/null, which the child passes), by kind. Node opens descriptors of its own on the first spawn (a signal
 * pipe, event fds), so a plain count would not come back to its value before the test.
 */
function clientFds(): { sockets: number; devnull: number } {
  let sockets = 0;
  let devnull = 0;
  for (const f of fs.readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${f}`);
    } catch {
      continue; // the directory listing's own descriptor, closed by now
    }
    if (target.startsWith('socket:')) sockets++;
    else if (target === '/dev/null') devnull++;
  }
  return { sockets, devnull };
}
const usage = (s: IpcLimitStats, uid: number): IpcUidUsage | undefined => s.uids.find((u) => u.uid === uid);

/** Poll stats() until `pred` holds. */
async function waitStats(server: IpcServer<TestCatalogue>, pred: (s: IpcLimitStats) => boolean, what: string): Promise<IpcLimitStats> {
  const deadline = Date.now() + W;
  for (;;) {
    const s = await server.stats();
    if (pred(s)) return s;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify({ total: s.total, uids: s.uids })}`);
    await sleep(20);
  }
}

/** (d) Nothing is held any more, and a fresh client is served. */
async function assertAllReleased(server: IpcServer<TestCatalogue>, path: string): Promise<void> {
  const s = await waitStats(server, (x) => x.uids.length === 0 && x.total.connections === 0, 'all connections gone');
  assert.deepEqual(s.total, { uid: -1, connections: 0, partialBytes: 0, transitBytes: 0, heldFds: 0, inFlight: 0, queuedBytes: 0 });
  const c = await IpcClient.connect(path, { catalogue: testCatalogue });
  const r = await c.call({ type: 'hello', version: 1 });
  assert.equal(r.response.server, 'limits');
  await c.close();
}

const isIpcError = (code: string, message: RegExp) => (e: unknown) => e instanceof IpcError && e.code === code && message.test(e.message);

test('(a) connections over the per-uid limit are refused with too-many-connections and closed; the others keep working', { timeout: T }, async () => {
  const refused: IpcRefusal[] = [];
  await withServer({ maxConnectionsPerUid: 3, maxConnectionsRoot: 3, onRefused: (e) => refused.push(e) }, async (server, path) => {
    const clients: IpcClient<TestCatalogue>[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await IpcClient.connect(path, { catalogue: testCatalogue });
      clients.push(c);
      assert.equal((await c.call({ type: 'hello', version: 1 })).response.ok, true);
    }
    const limitName = ME === 0 ? 'maxConnectionsRoot' : 'maxConnectionsPerUid';
    const extra = await IpcClient.connect(path, { catalogue: testCatalogue });
    await assert.rejects(extra.request({ type: 'hello', version: 1 }), isIpcError(IpcErrorCode.TooManyConnections, new RegExp(`uid ${ME} has 3 connections open, ${limitName} is 3`)));
    await waitFor(() => extra.isClosed, W, 'the refused client is closed');
    assert.equal(extra.closedByServer?.code, IpcErrorCode.TooManyConnections);
    // The three admitted connections still work.
    for (const c of clients) assert.equal((await c.request({ type: 'status' })).response.ok, true);
    const s = await server.stats();
    assert.equal(s.total.connections, 3);
    assert.equal(usage(s, ME)?.connections, 3);
    assert.equal(s.refusals.connectionsPerUid, 1);
    assert.equal(server.connections.size, 3, 'the refused connection never reached the server');
    assert.equal(refused.length, 1);
    assert.equal(refused[0].cred?.uid, ME);
    assert.equal(refused[0].reason, 'connectionsPerUid');
    assert.equal(refused[0].code, IpcErrorCode.TooManyConnections);
    // A slot given back is available again.
    await clients[0].close();
    await waitStats(server, (x) => x.total.connections === 2, 'two connections');
    const again = await IpcClient.connect(path, { catalogue: testCatalogue });
    assert.equal((await again.call({ type: 'hello', version: 1 })).response.ok, true);
    await again.close();
    for (const c of clients) await c.close();
    await assertAllReleased(server, path);
  });
});

test('(a) another uid (65534) is accepted while root is at its limit, and has its own limit', { timeout: T, skip: nobodySkip ?? false }, async () => {
  await withServer({ maxConnectionsPerUid: 3, maxConnectionsRoot: 2, mode: 0o666 }, async (server, path) => {
    const mine = [await IpcClient.connect(path, { catalogue: testCatalogue }), await IpcClient.connect(path, { catalogue: testCatalogue })];
    for (const c of mine) assert.equal((await c.call({ type: 'hello', version: 1 })).response.ok, true);
    const over = await IpcClient.connect(path, { catalogue: testCatalogue });
    await assert.rejects(over.request({ type: 'hello', version: 1 }), isIpcError(IpcErrorCode.TooManyConnections, /uid 0 has 2 connections open, maxConnectionsRoot is 2/));
    const child = spawnChild([path, 'connect', '4'], NOBODY);
    try {
      const out = (await child.line((l) => 'results' in l, 'child results')).results as Array<{ ok: boolean; uid?: number; code?: string; message?: string }>;
      assert.equal(out.length, 4);
      for (const r of out.slice(0, 3)) assert.deepEqual(r, { ok: true, uid: NOBODY });
      assert.equal(out[3].ok, false);
      assert.equal(out[3].code, IpcErrorCode.TooManyConnections);
      assert.match(out[3].message ?? '', /uid 65534 has 3 connections open, maxConnectionsPerUid is 3/);
      const s = await waitStats(server, (x) => usage(x, NOBODY)?.connections === 3, 'uid 65534 holds 3 connections');
      assert.equal(usage(s, 0)?.connections, 2);
      assert.equal(s.total.connections, 5);
      assert.equal(s.refusals.connectionsPerUid, 2);
      for (const c of mine) assert.equal((await c.request({ type: 'status' })).response.ok, true);
    } finally {
      await child.kill();
    }
    await waitStats(server, (x) => usage(x, NOBODY) === undefined, 'uid 65534 gone');
    for (const c of mine) await c.close();
    await assertAllReleased(server, path);
  });
});

test('(a) maxConnections bounds all uids together', { timeout: T }, async () => {
  await withServer({ maxConnections: 2 }, async (server, path) => {
    const a = await IpcClient.connect(path, { catalogue: testCatalogue });
    const b = await IpcClient.connect(path, { catalogue: testCatalogue });
    for (const c of [a, b]) assert.equal((await c.call({ type: 'hello', version: 1 })).response.ok, true);
    const c = await IpcClient.connect(path, { catalogue: testCatalogue });
    await assert.rejects(c.request({ type: 'hello', version: 1 }), isIpcError(IpcErrorCode.TooManyConnections, /2 connections open, maxConnections is 2; connection from uid \d+ refused/));
    assert.equal((await server.stats()).refusals.connections, 1);
    await a.close();
    await b.close();
    await assertAllReleased(server, path);
  });
});

test('(b) a trickled 1 MiB frame: bounded partial-frame memory, closed with frame-timeout at the age limit', { timeout: T }, async () => {
  const serverCloses: string[] = [];
  const protocolErrors: string[] = [];
  const FRAME_TIMEOUT_MS = 1500;
  await withServer({ frameTimeoutMs: FRAME_TIMEOUT_MS, onClose: (_c, reason) => serverCloses.push(reason), onProtocolError: (e) => protocolErrors.push(e.code) }, async (server, path) => {
    const c = await IpcClient.connect(path, { catalogue: testCatalogue });
    const started = Date.now();
    c.sendRaw(frameHeader(DECLARED_1MIB));
    let sent = 0;
    let maxPartial = 0;
    while (!c.isClosed && Date.now() - started < W) {
      try {
        c.sendRaw(new Uint8Array(4096));
        sent += 4096;
      } catch {
        break; // closed meanwhile
      }
      await sleep(50);
      const u = usage(await server.stats(), ME);
      if (u === undefined) continue;
      maxPartial = Math.max(maxPartial, u.partialBytes);
      // The buffer follows the bytes that came, never the declared length.
      assert.ok(u.partialBytes <= 2 * sent + BODY_STEP_MIN, `partialBytes ${u.partialBytes} after ${sent} bytes sent`);
    }
    const elapsed = Date.now() - started;
    assert.ok(c.isClosed, 'the server closed the connection');
    assert.ok(elapsed >= FRAME_TIMEOUT_MS - 50, `closed after ${elapsed} ms`);
    assert.ok(maxPartial > 0, 'the partial frame was accounted');
    assert.ok(maxPartial < MIB / 4, `partial-frame memory stayed bounded (${maxPartial} bytes at most, ${sent} sent)`);
    assert.equal(c.closedByServer?.code, IpcErrorCode.FrameTimeout);
    assert.match(c.closedByServer?.message ?? '', new RegExp(`a frame of uid ${ME} stayed incomplete for \\d+ ms, over frameTimeoutMs ${FRAME_TIMEOUT_MS}`));
    await waitFor(() => serverCloses.length === 1, W, 'server onClose');
    assert.match(serverCloses[0], new RegExp(`^${IpcErrorCode.FrameTimeout}: `));
    assert.ok(protocolErrors.includes(IpcErrorCode.FrameTimeout));
    const s = await waitStats(server, (x) => x.total.connections === 0, 'connection gone');
    assert.equal(s.refusals.frameTimeout, 1);
    await assertAllReleased(server, path);
  });
});

test('(b) several partial frames over the per-uid byte limit: the one over it is closed with limit-exceeded', { timeout: T }, async () => {
  const LIMIT = 256 * 1024;
  const BODY = 90_000;
  await withServer({ maxPartialBytesPerUid: LIMIT }, async (server, path) => {
    const clients: IpcClient<TestCatalogue>[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await IpcClient.connect(path, { catalogue: testCatalogue });
      clients.push(c);
      const before = usage(await server.stats(), ME)?.partialBytes ?? 0;
      const bytes = new Uint8Array(6 + BODY);
      bytes.set(frameHeader(DECLARED_1MIB));
      c.sendRaw(bytes);
      await waitStats(server, (x) => c.isClosed || (usage(x, ME)?.partialBytes ?? 0) >= before + BODY, `connection ${i} charged or closed`);
    }
    await waitFor(() => clients[2].isClosed, W, 'the third connection closed');
    assert.equal(clients[0].isClosed, false);
    assert.equal(clients[1].isClosed, false);
    assert.equal(clients[2].closedByServer?.code, IpcErrorCode.LimitExceeded);
    assert.match(clients[2].closedByServer?.message ?? '', new RegExp(`uid ${ME} would hold \\d+ bytes of incomplete frames, over maxPartialBytesPerUid ${LIMIT}`));
    const s = await waitStats(server, (x) => x.total.connections === 2, 'two connections left');
    const u = usage(s, ME)!;
    assert.ok(u.partialBytes >= 2 * BODY && u.partialBytes <= LIMIT, `partialBytes ${u.partialBytes}`);
    assert.equal(s.refusals.partialBytesPerUid, 1);
    for (const c of clients) await c.close();
    await assertAllReleased(server, path);
  });
});

test('(c) descriptors in partial frames never completed: bounded per uid, all closed when the client leaves', { timeout: T }, async () => {
  const uid = nobodySkip === null ? NOBODY : ME;
  const FDS = 6;
  const LIMIT = 16;
  await withServer({ maxHeldFdsPerUid: LIMIT, mode: 0o666 }, async (server, path) => {
    const before = clientFds();
    const child = spawnChild([path, 'partial', '3', String(DECLARED_1MIB), '1000', String(FDS)], nobodySkip === null ? NOBODY : undefined);
    try {
      await child.line((l) => l.ready === true, 'child ready');
      const closed = await child.line((l) => 'closed' in l, 'one connection closed by the server');
      assert.equal(closed.closed, 2, 'the third connection, whose descriptors went over the limit');
      assert.equal(closed.code, IpcErrorCode.LimitExceeded);
      assert.match(String(closed.reason), new RegExp(`uid ${uid} holds ${3 * FDS} descriptors in frames not yet processed, over maxHeldFdsPerUid ${LIMIT}`));
      const s = await waitStats(server, (x) => usage(x, uid)?.connections === 2 && usage(x, uid)?.heldFds === 2 * FDS, 'two connections holding 12 descriptors');
      assert.equal(s.total.heldFds, 2 * FDS);
      assert.equal(s.refusals.heldFdsPerUid, 1);
      assert.ok(usage(s, uid)!.partialBytes > 0 && usage(s, uid)!.partialBytes < MIB / 4);
      // The server process really holds them, and the two sockets.
      const during = clientFds();
      assert.equal(during.devnull, before.devnull + 2 * FDS, `descriptors received: ${JSON.stringify({ before, during })}`);
      assert.ok(during.sockets >= before.sockets + 2, `sockets: ${JSON.stringify({ before, during })}`);
      assert.equal(child.lines.filter((l) => 'closed' in l).length, 1, 'only one connection closed');
    } finally {
      await child.kill();
    }
    await waitStats(server, (x) => x.total.heldFds === 0 && x.total.connections === 0, 'descriptors released');
    await waitFor(
      () => {
        const now = clientFds();
        return now.devnull === before.devnull && now.sockets === before.sockets;
      },
      W,
      `received descriptors and sockets back to ${JSON.stringify(before)} (now ${JSON.stringify(clientFds())})`,
    );
    await assertAllReleased(server, path);
  });
});

test('descriptor reserve: new connections are refused with descriptors-exhausted near RLIMIT_NOFILE, served again after', { timeout: T }, async () => {
  const { after } = raiseNofileLimit();
  const base = openFdCount();
  // Refuse once more than base + MARGIN descriptors are open.
  const MARGIN = 40;
  const EXTRA = 60;
  await withServer({ fdReserve: after.soft - (base + MARGIN) }, async (server, path) => {
    const c1 = await IpcClient.connect(path, { catalogue: testCatalogue });
    assert.equal((await c1.call({ type: 'hello', version: 1 })).response.ok, true);
    const files = Array.from({ length: EXTRA }, () => fs.openSync('/dev/null', 'r'));
    try {
      await sleep(1100); // older than the worker's sample period: the next accept counts afresh
      const c2 = await IpcClient.connect(path, { catalogue: testCatalogue });
      await assert.rejects(
        c2.request({ type: 'hello', version: 1 }),
        isIpcError(IpcErrorCode.DescriptorsExhausted, /descriptors open, fewer than fdReserve \d+ left; connection from uid \d+ refused/),
      );
      // The connection already in is still served.
      assert.equal((await c1.request({ type: 'status' })).response.ok, true);
      const s = await server.stats();
      assert.ok(s.refusals.descriptorReserve >= 1);
      assert.equal(s.fds.limit, after.soft);
      assert.ok(s.fds.open > base + MARGIN, `estimate ${s.fds.open}`);
    } finally {
      for (const f of files) fs.closeSync(f);
    }
    // Back under the reserve: accepted again (once the count is resampled).
    let served = false;
    for (const deadline = Date.now() + 5000; !served && Date.now() < deadline; await sleep(150)) {
      const c = await IpcClient.connect(path, { catalogue: testCatalogue });
      served = (await c.request({ type: 'hello', version: 1 }).catch(() => null))?.response.ok === true;
      await c.close();
    }
    assert.ok(served, 'a new connection is served once descriptors are free again');
    await c1.close();
    await assertAllReleased(server, path);
  });
});

test('out of descriptors (EMFILE): connections are still accepted with the spare descriptor, told why and closed', { timeout: T }, async () => {
  const original = getNofileLimit();
  // Which refusal path a connection meets depends on when the reactor last sampled its descriptor table: on a
  // loaded machine the estimate can cross the (lowered) limit before accept4 itself fails, and the connection is
  // refused on the reserve path instead. Each round checks every refusal; at least one round of three must have
  // taken the EMFILE path (the spare descriptor).
  let emfileRefusals = 0;
  for (let round = 0; round < 3 && emfileRefusals === 0; round++) {
    await withServer({ fdReserve: 0, raiseFdLimit: false }, async (server, path) => {
      const bystander = await IpcClient.connect(path, { catalogue: testCatalogue });
      assert.equal((await bystander.call({ type: 'hello', version: 1 })).response.ok, true);
      const child = spawnChild([path, 'connect', '12']);
      let out: Array<{ ok: boolean; code?: string; message?: string }>;
      try {
        // Leave this process only a few free descriptors before the child starts connecting.
        setNofileLimit({ soft: openFdCount() + 4, hard: original.hard });
        out = (await child.line((l) => 'results' in l, 'child results')).results as typeof out;
        // The bystander is still served while the table is full.
        assert.equal((await bystander.request({ type: 'status' })).response.ok, true);
      } finally {
        setNofileLimit(original);
      }
      try {
        const refused = out.filter((r) => !r.ok);
        assert.ok(
          out.some((r) => r.ok),
          'some connections fit',
        );
        assert.ok(refused.length >= 1, 'some connections were refused');
        for (const r of refused) {
          assert.equal(r.code, IpcErrorCode.DescriptorsExhausted, JSON.stringify(r));
          assert.match(r.message ?? '', /out of descriptors|fewer than fdReserve/);
        }
        const s = await server.stats();
        assert.equal(s.refusals.descriptorsExhausted + s.refusals.descriptorReserve, refused.length);
        emfileRefusals = s.refusals.descriptorsExhausted;
      } finally {
        await child.kill();
      }
      await bystander.close();
      await assertAllReleased(server, path);
    });
  }
  assert.ok(emfileRefusals >= 1, 'accept4 hit EMFILE and the spare descriptor took the connection (in one of three rounds)');
});

test('requests in flight per uid: reading pauses at the limit and resumes as replies go out', { timeout: T }, async () => {
  let entered = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const h: IpcHandler<TestCatalogue> = async (req) => {
    if (req.request.type === 'status') {
      entered++;
      await gate;
    }
    return handler(req);
  };
  await withServer({ handler: h, maxInFlightPerUid: 3 }, async (server, path) => {
    const a = await IpcClient.connect(path, { catalogue: testCatalogue });
    const b = await IpcClient.connect(path, { catalogue: testCatalogue });
    const pending = [a, a, b, b].map((c) => c.call({ type: 'status' }));
    await waitFor(() => entered === 3, W, 'three requests in the handler');
    await sleep(200);
    assert.equal(entered, 3, 'the fourth request is not read while the uid has 3 in flight');
    const s = await server.stats();
    assert.equal(usage(s, ME)?.inFlight, 3);
    release();
    const rs = await Promise.all(pending);
    assert.equal(rs.length, 4);
    assert.equal(entered, 4);
    await a.close();
    await b.close();
    await assertAllReleased(server, path);
  });
});

test('queued replies per uid: a client that does not read stops being read, and is read again once it drains', { timeout: T }, async () => {
  const LIMIT = 256 * 1024;
  const BLOB = 'x'.repeat(100_000);
  const BATCH = 10;
  let entered = 0;
  const h: IpcHandler<TestCatalogue> = async (req) => {
    if (req.request.type !== 'status') return handler(req);
    entered++;
    return { response: { ok: true, blob: BLOB } };
  };
  await withServer({ handler: h, maxQueuedBytesPerUid: LIMIT }, async (server, path) => {
    // A raw socket, so that nothing reads the replies until the test does.
    const fd = unixSocket();
    const io = new MsgIo(64 * 1024);
    try {
      assert.equal(connectUnix(fd, path), 0);
      const send = (first: number): void => {
        for (let i = first; i < first + BATCH; i++) {
          const f = encodeFrame({ id: i, type: 'status' }, false);
          assert.equal(io.send(fd, f, 0, f.length), f.length);
        }
      };
      send(1);
      const handlersDone = (): boolean => entered === BATCH && [...server.connections].every((c) => c.inFlight === 0);
      const s1 = await waitStats(server, (x) => handlersDone() && (usage(x, ME)?.queuedBytes ?? 0) >= LIMIT, 'the first batch answered into the queue');
      // Unread replies hold their requests in flight; the kernel took some, the worker queues the rest.
      assert.ok(usage(s1, ME)!.inFlight > 0 && usage(s1, ME)!.inFlight <= BATCH);
      send(1 + BATCH);
      await sleep(300);
      assert.equal(entered, BATCH, 'no request is read while the replies queued for the uid are over the limit');
      // Read everything: the queue drains, reading resumes, the second batch is answered too.
      let got = 0;
      const deadline = Date.now() + W;
      for (;;) {
        const r = io.recv(fd);
        if (typeof r !== 'number' && r.n > 0) got += r.n;
        else await sleep(5);
        if (entered === 2 * BATCH && (await server.stats()).total.queuedBytes === 0) break;
        assert.ok(Date.now() < deadline, `draining: ${got} bytes read, ${entered} requests seen`);
      }
      assert.ok(got >= BATCH * BLOB.length, `${got} bytes of replies read`);
    } finally {
      io.free();
      closeFd(fd);
    }
    await assertAllReleased(server, path);
  });
});

test('limits: listen raises RLIMIT_NOFILE to the hard limit and rejects invalid limits before binding', { timeout: T }, async () => {
  const path = socketPath('lim');
  await assert.rejects(IpcServer.listen({ catalogue: testCatalogue, path, handler, maxConnectionsPerUid: 0 }), /maxConnectionsPerUid must be an integer >= 1/);
  await assert.rejects(IpcServer.listen({ catalogue: testCatalogue, path, handler, frameTimeoutMs: 1.5 }), /frameTimeoutMs must be an integer >= 1/);
  assert.equal(fs.existsSync(path), false);
  const server = await IpcServer.listen({ catalogue: testCatalogue, path, handler, maxConnectionsRoot: 0 });
  try {
    const lim = getNofileLimit();
    assert.equal(lim.soft, lim.hard);
    assert.equal(server.fdLimit?.after.soft, lim.hard);
    assert.equal(server.limits.maxConnectionsPerUid, 64);
    assert.equal(server.limits.fdReserve, 64);
    const s = await server.stats();
    assert.deepEqual(s.limits, server.limits);
    assert.equal(s.fds.limit, lim.soft);
  } finally {
    await server.close();
  }
});
