import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { IpcClient, IpcError, IpcErrorCode, IpcServer, RequestSchema, encodeFrame, type IpcConnection, type IpcHandler, type IpcServerOptions } from '../../src/ipc/index.js';
import { createShm } from '../../src/sys/shm.js';
import { fdTarget, socketPath, tempFile, waitFor, within } from './helpers.js';
import { testCatalogue, type TestCatalogue } from './catalogue.js';

const T = 15_000;

/** A handler for the catalogue: echoes enough for the tests to check. */
const handler: IpcHandler<TestCatalogue> = async (req) => {
  const r = req.request;
  switch (r.type) {
    case 'hello':
      return { response: { ok: true, version: 1, server: 'test', cred: req.cred, client: r.client ?? null } };
    case 'listDevices':
      return { response: { ok: true, devices: [{ device: 'emu://?size=1GiB', model: 'HOMI' }] } };
    case 'status':
      return { response: { ok: true, conn: req.conn.id } };
    case 'resolveExtents': {
      const fd = req.fds[0];
      const st = fs.fstatSync(fd);
      const b = Buffer.alloc(Math.min(st.size, 4096));
      const n = fs.readSync(fd, b, 0, b.length, 0);
      return { response: { ok: true, size: st.size, extents: [], content: b.subarray(0, n).toString('utf8') } };
    }
    case 'openQueuePair':
      return { response: { ok: true, grantId: `g-${r.device}-${r.nsid}` } };
    case 'closeQueuePair':
      throw new IpcError('NO_SUCH_GRANT', `no grant ${r.grantId}`);
  }
};

async function withServer(opts: Partial<IpcServerOptions<TestCatalogue>>, fn: (server: IpcServer<TestCatalogue>, path: string) => Promise<void>): Promise<void> {
  const path = socketPath('t');
  const server = await IpcServer.listen({ catalogue: testCatalogue, path, handler, ...opts });
  try {
    await fn(server, path);
  } finally {
    await server.close();
  }
}

test('round trips for every request type; ids echoed; errors as responses', { timeout: T }, async () => {
  await withServer({}, async (_server, path) => {
    const c = await IpcClient.connect(path, { catalogue: testCatalogue });
    try {
      const hello = await c.request({ type: 'hello', version: 1, client: 'unit' });
      assert.equal(hello.response.ok, true);
      assert.equal(typeof hello.response.id, 'number');
      if (hello.response.ok) {
        assert.equal(hello.response.version, 1);
        assert.equal(hello.response.server, 'test');
        assert.equal(hello.response.client, 'unit');
      }
      const ld = await c.call({ type: 'listDevices' });
      assert.equal(ld.response.devices[0].device, 'emu://?size=1GiB');
      const own = await c.request({ type: 'status', id: 4242 });
      assert.equal(own.response.id, 4242);
      const qp = await c.call({ type: 'openQueuePair', device: 'emu0', nsid: 1, depth: 64, count: 2, mode: 'raw' });
      assert.equal(qp.response.grantId, 'g-emu0-1');
      const cq = await c.request({ type: 'closeQueuePair', grantId: 'nope' });
      assert.equal(cq.response.ok, false);
      if (!cq.response.ok) assert.equal(cq.response.error.code, 'NO_SUCH_GRANT');
      await assert.rejects(c.call({ type: 'closeQueuePair', grantId: 'nope' }), (e: unknown) => e instanceof IpcError && e.code === 'NO_SUCH_GRANT');
      // Schema violations are answered, not fatal.
      const bad = await c.request({ type: 'openQueuePair', device: 'emu0', nsid: 0, depth: 1, count: 1, mode: 'raw' } as never);
      assert.equal(bad.response.ok, false);
      if (!bad.response.ok) assert.equal(bad.response.error.code, IpcErrorCode.InvalidRequest);
      const missing = await c.request({ type: 'resolveExtents' });
      assert.equal(missing.response.ok, false);
      if (!missing.response.ok) assert.equal(missing.response.error.code, IpcErrorCode.MissingFds);
      // The connection still works.
      assert.equal((await c.request({ type: 'status' })).response.ok, true);
    } finally {
      await c.close();
    }
  });
});

test('schemas: requests drop unknown fields, reject wrong types', () => {
  const ok = RequestSchema.safeParse({ id: 1, type: 'hello', version: 1, extra: 'x' });
  assert.ok(ok.success);
  assert.equal((ok.data as Record<string, unknown>).extra, undefined);
  for (const v of [
    { id: -1, type: 'status' },
    { id: 1.5, type: 'status' },
    { type: 'status' },
    { id: 1, type: 'openQueuePair', device: 'd', nsid: 1, depth: 8, count: 1, mode: 'other' },
    { id: 1, type: 'hello', version: '1' },
    { id: 1, type: 'nope' },
  ]) {
    assert.equal(RequestSchema.safeParse(v).success, false, JSON.stringify(v));
  }
});

test('20 concurrent clients x 50 requests each', { timeout: T }, async () => {
  const closed: number[] = [];
  await withServer({ onClose: (conn) => closed.push(conn.id) }, async (server, path) => {
    const clients = await Promise.all(Array.from({ length: 20 }, () => IpcClient.connect(path, { catalogue: testCatalogue })));
    await waitFor(() => server.connections.size === 20, T, '20 connections');
    const seen = new Set<number>();
    await Promise.all(
      clients.map(async (c) => {
        const rs = await Promise.all(Array.from({ length: 50 }, (_, i) => c.call({ type: 'status', id: i + 1 })));
        const conns = new Set(rs.map((r) => r.response.conn as number));
        assert.equal(conns.size, 1, 'all responses from one server connection');
        assert.deepEqual(
          rs.map((r) => r.response.id),
          Array.from({ length: 50 }, (_, i) => i + 1),
        );
        seen.add([...conns][0]);
      }),
    );
    assert.equal(seen.size, 20);
    await Promise.all(clients.map((c) => c.close()));
    await waitFor(() => closed.length === 20, T, 'onClose for 20 connections');
    assert.equal(server.connections.size, 0);
  });
});

test('SO_PEERCRED of an in-process client', { timeout: T }, async () => {
  const conns: IpcConnection[] = [];
  await withServer({ onConnection: (c) => conns.push(c) }, async (_server, path) => {
    const c = await IpcClient.connect(path, { catalogue: testCatalogue });
    const r = await c.call({ type: 'hello', version: 1 });
    assert.deepEqual(r.response.cred, { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    await waitFor(() => conns.length === 1, T, 'onConnection');
    assert.deepEqual({ ...conns[0].cred }, { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    await c.close();
  });
});

const childScript = fileURLToPath(new URL('./child-client.js', import.meta.url));

function spawnChild(path: string, mode: 'hold' | 'exit') {
  const child = spawn(process.execPath, [childScript, path, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const ready = new Promise<{ pid: number; response: { cred: unknown } }>((resolve, reject) => {
    child.stdout.on('data', () => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line !== undefined && out.includes('\n')) resolve(JSON.parse(line));
    });
    child.on('exit', (code) => {
      if (!out.includes('\n')) reject(new Error(`child exited (${code}) before ready: ${err}`));
    });
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return { child, ready, exited };
}

test('SO_PEERCRED of a spawned client is the child pid; peer exit fires onClose', { timeout: T }, async () => {
  const closed: IpcConnection[] = [];
  await withServer({ onClose: (c) => closed.push(c) }, async (_server, path) => {
    const { child, ready, exited } = spawnChild(path, 'exit');
    const r = await within(ready, T, 'child ready');
    assert.equal(r.pid, child.pid);
    assert.deepEqual(r.response.cred, { pid: child.pid, uid: process.getuid!(), gid: process.getgid!() });
    await within(exited, T, 'child exit');
    await waitFor(() => closed.some((c) => c.cred.pid === child.pid), T, 'onClose for the child');
  });
});

test('a SIGKILLed client: onClose fires, with its credentials and reason', { timeout: T }, async () => {
  const closed: Array<{ conn: IpcConnection; reason: string }> = [];
  const perConn: string[] = [];
  await withServer(
    {
      onClose: (conn, reason) => closed.push({ conn, reason }),
      onConnection: (conn) => conn.onClose((_c, reason) => perConn.push(reason)),
    },
    async (server, path) => {
      const { child, ready, exited } = spawnChild(path, 'hold');
      const r = await within(ready, T, 'child ready');
      const conn = [...server.connections].find((c) => c.cred.pid === r.pid);
      assert.ok(conn, 'the child connection is listed');
      assert.equal(conn.closed, false);
      child.kill('SIGKILL');
      await within(exited, T, 'child killed');
      await waitFor(() => closed.some((c) => c.conn === conn), T, 'onClose after SIGKILL');
      assert.equal(conn.closed, true);
      assert.equal(perConn.length, 1);
      assert.ok(!server.connections.has(conn));
    },
  );
});

test('fd passing client -> server: the server reads the file through the descriptor', { timeout: T }, async () => {
  const file = tempFile('pass', 'content seen through the fd');
  let seenFd = -1;
  const h: IpcHandler<TestCatalogue> = async (req) => {
    seenFd = req.fds[0];
    return handler(req);
  };
  await withServer({ handler: h }, async (_server, path) => {
    const c = await IpcClient.connect(path, { catalogue: testCatalogue });
    const fd = fs.openSync(file, 'r');
    const p = c.call({ type: 'resolveExtents', sync: false }, [fd]);
    fs.closeSync(fd); // the client duplicated it
    const r = await p;
    assert.equal(r.response.content, 'content seen through the fd');
    assert.equal(r.response.size, 27);
    // The server closed the descriptor it did not take.
    assert.notEqual(fdTarget(seenFd), file);
    await c.close();
  });
  fs.unlinkSync(file);
});

test('fd passing: a handler that takes the descriptor keeps it open', { timeout: T }, async () => {
  const file = tempFile('take', 'kept');
  const taken: number[] = [];
  const h: IpcHandler<TestCatalogue> = async (req) => {
    taken.push(...req.takeFds());
    return { response: { ok: true, size: 4, extents: [] } };
  };
  await withServer({ handler: h }, async (_server, path) => {
    const c = await IpcClient.connect(path, { catalogue: testCatalogue });
    const fd = fs.openSync(file, 'r');
    await c.call({ type: 'resolveExtents' }, [fd]);
    fs.closeSync(fd);
    assert.equal(taken.length, 1);
    assert.equal(fdTarget(taken[0]), file);
    assert.equal(fs.readFileSync(taken[0], 'utf8'), 'kept');
    fs.closeSync(taken[0]);
    await c.close();
  });
  fs.unlinkSync(file);
});

test('fd passing server -> client: a memfd and a file descriptor', { timeout: T }, async () => {
  const file = tempFile('back', 'file from the server');
  const shm = createShm('homi-ipc-test', 4096);
  new Uint8Array(shm.buffer).set(Buffer.from('queue memory'), 0);
  const h: IpcHandler<TestCatalogue> = async (req) => {
    if (req.request.type !== 'openQueuePair') return handler(req);
    const f = fs.openSync(file, 'r');
    // The memfd stays the server's (duplicated for the send); the file fd is closed by the server.
    return { response: { ok: true, grantId: 'g1', sizes: [4096] }, fds: [shm.fd, f], closeFds: false };
  };
  await withServer({ handler: h }, async (_server, path) => {
    const c = await IpcClient.connect(path, { catalogue: testCatalogue });
    const r = await c.call({ type: 'openQueuePair', device: 'emu0', nsid: 1, depth: 16, count: 1, mode: 'raw', write: true });
    assert.equal(r.fds.length, 2);
    assert.notEqual(r.fds[0], shm.fd);
    const b = Buffer.alloc(12);
    fs.readSync(r.fds[0], b, 0, 12, 0);
    assert.equal(b.toString(), 'queue memory');
    assert.match(fdTarget(r.fds[0]) ?? '', /memfd:homi-ipc-test/);
    assert.equal(fs.readFileSync(r.fds[1], 'utf8'), 'file from the server');
    for (const fd of r.fds) fs.closeSync(fd);
    await c.close();
  });
  shm.close();
  fs.unlinkSync(file);
});

test('handler failures and invalid handler responses become error responses', { timeout: T }, async () => {
  const errors: string[] = [];
  const h: IpcHandler<TestCatalogue> = async (req) => {
    if (req.request.type === 'status') throw new Error('boom');
    if (req.request.type === 'listDevices') return { response: { ok: true, devices: 'not an array' } } as never;
    return handler(req);
  };
  await withServer({ handler: h, onProtocolError: (e) => errors.push(e.code) }, async (_server, path) => {
    const c = await IpcClient.connect(path, { catalogue: testCatalogue });
    const s = await c.request({ type: 'status' });
    assert.equal(s.response.ok, false);
    if (!s.response.ok) {
      assert.equal(s.response.error.code, IpcErrorCode.Internal);
      assert.match(s.response.error.message, /boom/);
    }
    const l = await c.request({ type: 'listDevices' });
    assert.equal(l.response.ok, false);
    if (!l.response.ok) assert.equal(l.response.error.code, IpcErrorCode.Internal);
    assert.equal((await c.request({ type: 'hello', version: 1 })).response.ok, true);
    assert.ok(errors.length >= 2);
    await c.close();
  });
});

test('client: request timeout, connection loss, connect failure', { timeout: T }, async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const h: IpcHandler<TestCatalogue> = async (req) => {
    if (req.request.type === 'status') await gate;
    return handler(req);
  };
  const path = socketPath('t');
  const server = await IpcServer.listen({ catalogue: testCatalogue, path, handler: h });
  const c = await IpcClient.connect(path, { catalogue: testCatalogue });
  await assert.rejects(c.request({ type: 'status' }, [], { timeoutMs: 100 }), (e: unknown) => e instanceof IpcError && e.code === IpcErrorCode.Timeout && /no response within 100 ms/.test(e.message));
  // A late response is dropped; the connection keeps working.
  release();
  assert.equal((await c.request({ type: 'hello', version: 1 })).response.ok, true);

  // Connection loss rejects what is pending.
  let release2!: () => void;
  const gate2 = new Promise<void>((r) => (release2 = r));
  const server2Path = socketPath('t');
  const server2 = await IpcServer.listen({
    catalogue: testCatalogue,
    path: server2Path,
    handler: async (req) => {
      await gate2;
      return handler(req);
    },
  });
  const c2 = await IpcClient.connect(server2Path, { catalogue: testCatalogue });
  const pending = c2.request({ type: 'status' });
  await waitFor(() => server2.connections.size === 1, T, 'connection');
  const closing = server2.close();
  await assert.rejects(pending, (e: unknown) => e instanceof IpcError && e.code === IpcErrorCode.ConnectionClosed);
  await closing;
  release2();
  assert.equal(c2.isClosed, true);
  await assert.rejects(c2.request({ type: 'status' }), (e: unknown) => e instanceof IpcError && e.code === IpcErrorCode.ConnectionClosed);
  assert.equal(fs.existsSync(server2Path), false, 'socket file removed');

  await assert.rejects(
    IpcClient.connect(server2Path, { catalogue: testCatalogue }),
    (e: unknown) => e instanceof IpcError && e.code === IpcErrorCode.ConnectFailed && /ENOENT|ECONNREFUSED/.test(e.message),
  );
  await c.close();
  await server.close();
});

test('server: socket mode, stale socket replaced, live socket refused', { timeout: T }, async () => {
  const path = socketPath('mode');
  const s1 = await IpcServer.listen({ catalogue: testCatalogue, path, handler, mode: 0o600 });
  assert.equal(fs.statSync(path).mode & 0o777, 0o600);
  await assert.rejects(IpcServer.listen({ catalogue: testCatalogue, path, handler }), /another server is listening/);
  // Simulate a crashed server: the socket file stays, nobody listens.
  const ino = fs.statSync(path).ino;
  const s1Close = s1.close();
  await s1Close;
  assert.equal(fs.existsSync(path), false);
  fs.writeFileSync(path, 'not a socket');
  await assert.rejects(IpcServer.listen({ catalogue: testCatalogue, path, handler }), /not a socket/);
  fs.unlinkSync(path);
  void ino;
  // A stale socket file (bound, never listened, closed).
  const { unixSocket, bindUnix, closeFd } = await import('../../src/sys/socket.js');
  const fd = unixSocket();
  bindUnix(fd, path);
  closeFd(fd);
  assert.equal(fs.statSync(path).isSocket(), true);
  const s2 = await IpcServer.listen({ catalogue: testCatalogue, path, handler });
  const c = await IpcClient.connect(path, { catalogue: testCatalogue });
  assert.equal((await c.request({ type: 'status' })).response.ok, true);
  await c.close();
  await s2.close();
});

test('frames: oversized responses and requests are refused cleanly', { timeout: T }, async () => {
  const h: IpcHandler<TestCatalogue> = async (req) => {
    if (req.request.type === 'status') return { response: { ok: true, blob: 'x'.repeat(4096) } };
    return handler(req);
  };
  await withServer({ handler: h, maxFrame: 2048 }, async (_server, path) => {
    const c = await IpcClient.connect(path, { maxFrame: 2048, catalogue: testCatalogue });
    const r = await c.request({ type: 'status' });
    assert.equal(r.response.ok, false);
    if (!r.response.ok) assert.match(r.response.error.message, /too large/);
    const long = await c.request({ type: 'hello', version: 1, client: 'y'.repeat(300) });
    assert.equal(long.response.ok, false);
    await assert.rejects(c.request({ type: 'hello', version: 1, client: 'y'.repeat(3000) }), /exceeds the frame limit/);
    assert.equal(encodeFrame({ a: 1 }, false).length, 6 + 7);
    await c.close();
  });
});

test('large frames both ways (partial writes, multi-read bodies) with a descriptor', { timeout: T }, async () => {
  const file = tempFile('large', 'small file');
  const big = 'z'.repeat(900 * 1024);
  const h: IpcHandler<TestCatalogue> = async (req) => {
    if (req.request.type === 'resolveExtents') {
      const b = Buffer.alloc(10);
      fs.readSync(req.fds[0], b, 0, 10, 0);
      return { response: { ok: true, size: 10, extents: [], content: b.toString(), blob: big } };
    }
    return handler(req);
  };
  await withServer({ handler: h }, async (_server, path) => {
    const c = await IpcClient.connect(path, { catalogue: testCatalogue });
    const fd = fs.openSync(file, 'r');
    const rs = await Promise.all(Array.from({ length: 4 }, () => c.call({ type: 'resolveExtents', padding: big } as never, [fd])));
    fs.closeSync(fd);
    for (const r of rs) {
      const resp = r.response as unknown as { content: string; blob: string };
      assert.equal(resp.content, 'small file');
      assert.equal(resp.blob.length, big.length);
    }
    await c.close();
  });
  fs.unlinkSync(file);
});
