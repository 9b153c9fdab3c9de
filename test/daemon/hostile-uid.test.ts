/**
 * The hostile-client suite: homid runs as root (this process, or a homid process it starts), every client is
 * a separate process dropped to uid 65534 (setpriv). Each test is one attack from the security review and
 * asserts what homid did about it: refused with a clear error, or contained (other tenants keep their
 * service, nothing reaches the device, nothing leaks).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HomidClient } from '../../src/client/index.js';
import { STATUS_HOMID_GONE } from '../../src/client/mediated-queue.js';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import { STATUS_CID_CONFLICT } from '../../src/daemon/mediated.js';
import { dbPaths, resetIdentityCache } from '../../src/daemon/principals.js';
import { Homid } from '../../src/daemon/homid.js';
import { IpcErrorCode } from '../../src/ipc/errors.js';
import type { HomidError } from '../../src/daemon/errors.js';
import { memfdOpener, type TransportOpener } from '../../src/daemon/registry.js';
import { memfdRegions } from '../../src/daemon/shared-region.js';
import type { EmuTransport } from '../../src/transport/emu.js';
import { config, haveTool, NOBODY_PEER, pattern, ROOT_PEER, silent } from './fixtures.js';
import { asNobody, ext4TreeFixture, hostileSkipReason, sharedTmpDir, NOBODY_UID } from './hostile.js';
import { CLI_DIR, nextJson, until } from './procs.js';

const skip = hostileSkipReason() ?? (!haveTool('mkfs.ext4') ? 'mkfs.ext4 is not installed' : null);

interface Fixture {
  dir: string;
  tree: string;
  image: string;
  mine: string;
  secret: string;
}

/** A tree with a world-readable file and a root-only one, and an ext4 image of it. */
function fixture(): Fixture {
  const f = ext4TreeFixture('homid-hostile-', {
    'mine.bin': { bytes: pattern(16_384, 1), mode: 0o644 },
    'secret.bin': { bytes: pattern(12_288, 2), mode: 0o600 },
  });
  return { dir: f.dir, tree: f.tree, image: f.image, mine: f.files['mine.bin']!, secret: f.files['secret.bin']! };
}

describe('hostile clients (uid 65534) against homid as root', { skip: skip ?? false }, () => {
  let fx: Fixture;
  let srv: HomidServer;
  let sock: string;

  before(async () => {
    fx = fixture();
    sock = path.join(fx.dir, 'homid.sock');
    srv = await startHomidServer(
      config({
        socket: sock,
        socket_mode: '0666',
        device: [
          { name: 'img', uri: `emu://${fx.image}?size=16MiB`, extents: 'decoder:ext4', extent_root: fx.tree },
          // FIEMAP over a memory namespace: no file lives on it, so every file must be refused
          { name: 'mem', uri: 'emu://?size=16MiB', extents: 'fiemap' },
        ],
        class: { default: { queue_pairs: 8, per_client: 4, write: false } },
        raw: { users: [0] },
        limits: { connections_per_uid: 3 },
      }),
      { logger: silent() },
    );
  });
  after(async () => {
    await srv?.close();
    if (fx) fs.rmSync(fx.dir, { recursive: true, force: true });
  });

  test('status shows a non-root client only its own session and files', { timeout: 60_000 }, async () => {
    // root holds a grant on the secret file and a queue pair: none of it may show to uid 65534
    const root = await HomidClient.connect(sock);
    try {
      const fd = fs.openSync(fx.secret, 'r');
      await root.resolveExtents(fd, 'img');
      fs.closeSync(fd);
      await root.openQueuePairs({ device: 'img', depth: 8, mode: 'mediated', dataBytes: 1 << 16 });
      const child = asNobody([sock, 'status-after-resolve', 'img', fx.mine]);
      const r = await nextJson(child);
      await child.exited;
      assert.equal(r.ok, true, JSON.stringify(r));
      const st = r.status as { clients: { id: number; uid: number; pid: number }[]; extents: { path: string }[] };
      assert.deepEqual(
        st.clients.map((c) => c.id),
        [r.session],
        'only its own session',
      );
      assert.equal(st.clients[0]!.uid, NOBODY_UID);
      assert.deepEqual(
        st.extents.map((e) => e.path),
        [fx.mine],
        'only the file it holds',
      );
      assert.equal('ipc' in (r.status as object), false, 'the socket accounting is root’s');
      // root sees both sessions and both files, and the socket's accounting
      const all = (await root.status()) as unknown as typeof st & { ipc: { limits: { maxConnectionsPerUid: number }; total: { connections: number } } };
      assert.ok(all.clients.length >= 1 && all.extents.some((e) => e.path === fx.secret));
      assert.equal(all.ipc.limits.maxConnectionsPerUid, 3, '[limits] connections_per_uid reached the socket');
      assert.ok(all.ipc.total.connections >= 1);
    } finally {
      root.close();
    }
  });

  test('FIEMAP extents of a file on another file system are refused, not mapped onto the device', { timeout: 60_000 }, async () => {
    const child = asNobody([sock, 'resolve', 'mem', fx.mine]);
    const r = await nextJson(child);
    await child.exited;
    assert.equal(r.ok, false, JSON.stringify(r));
    assert.equal(r.code, 'wrong-device');
    assert.match(String(r.message), /not on namespace 1 of device 'mem'/);
    // the same file through the device it lives on is granted
    const ok = asNobody([sock, 'resolve', 'img', fx.mine]);
    const g = await nextJson(ok);
    await ok.exited;
    assert.equal(g.ok, true, JSON.stringify(g));
    assert.ok((g.extents as unknown[]).length > 0);
  });

  test('connections per uid are bounded by [limits]: the one over gets too-many-connections, root is still served', { timeout: 60_000 }, async () => {
    const child = asNobody([sock, 'connections', '5']);
    const r = await nextJson(child);
    await child.exited;
    const codes = r.codes as string[];
    assert.equal(codes.filter((c) => c === 'ok').length, 3, JSON.stringify(codes));
    assert.deepEqual(
      codes.filter((c) => c !== 'ok'),
      [IpcErrorCode.TooManyConnections, IpcErrorCode.TooManyConnections],
      JSON.stringify(codes),
    );
    const root = await HomidClient.connect(sock);
    assert.equal((await root.status()).ok, true);
    root.close();
  });

  test('a command id reused while in flight is refused with Command ID Conflict, never forwarded twice', { timeout: 60_000 }, async () => {
    const before = srv.homid.counters.deniedCommands;
    const child = asNobody([sock, 'dup-cid', 'img', fx.mine]);
    const r = await nextJson(child);
    await child.exited;
    assert.equal(r.ok, true, JSON.stringify(r));
    const got = r.completions as { where: string; cid: number; status: number }[];
    assert.equal(got.length, 2, JSON.stringify(got));
    const ok = got.filter((c) => c.status === 0);
    const conflict = got.filter((c) => c.status === STATUS_CID_CONFLICT);
    assert.equal(ok.length, 1, `one of the two ran: ${JSON.stringify(got)}`);
    assert.equal(conflict.length, 1, `the other was refused: ${JSON.stringify(got)}`);
    assert.equal(conflict[0]!.where, 'ring', 'the refusal is homid’s own completion');
    assert.equal(conflict[0]!.cid, 5);
    assert.equal(srv.homid.counters.deniedCommands, before + 1);
  });

  test('a peer whose identity cannot be established is refused, never put into the default class', { timeout: 60_000 }, async () => {
    const saved = dbPaths.passwd;
    dbPaths.passwd = path.join(fx.dir, 'no-such-passwd');
    resetIdentityCache();
    try {
      const child = asNobody([sock, 'whoami']);
      const r = await nextJson(child);
      await child.exited;
      assert.equal(r.ok, false, JSON.stringify(r));
      assert.equal(r.code, 'identity');
      assert.match(String(r.message), /user and group database is unreadable/);
      assert.equal(srv.homid.sessions.size, 0, 'no session was made for it');
    } finally {
      dbPaths.passwd = saved;
      resetIdentityCache();
    }
    const child = asNobody([sock, 'whoami']);
    const r = await nextJson(child);
    await child.exited;
    assert.equal(r.ok, true, JSON.stringify(r));
  });
});

/** GPU leases: raw trust plus a controller held busy polling, so a class gets none unless it is given gpu_queues. */
describe('hostile clients (uid 65534) asking for GPU queue pairs', { skip: skip ?? false }, () => {
  let dir: string;
  let srv: HomidServer;
  let sock: string;

  before(async () => {
    dir = sharedTmpDir('homid-hostile-gpu-');
    sock = path.join(dir, 'homid.sock');
    srv = await startHomidServer(
      config({
        socket: sock,
        socket_mode: '0666',
        device: [{ name: 'mem', uri: 'emu://?size=16MiB', extents: 'none' }],
        // uid 65534 may even hold raw queues here: only its class's GPU budget (0, the default) stands in its way
        class: { default: { queue_pairs: 8, per_client: 4 }, gpu: { users: [0], queue_pairs: 2, per_client: 2, gpu_queues: 1 } },
        raw: { users: [0, NOBODY_UID] },
      }),
      { logger: silent() },
    );
  });
  after(async () => {
    await srv?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a GPU lease in a class whose gpu_queues is 0 is refused; nothing is held, root is still served', { timeout: 60_000 }, async () => {
    const refusals = srv.homid.counters.refusals;
    const child = asNobody([sock, 'gpu-lease', 'mem']);
    const r = await nextJson(child);
    await child.exited;
    assert.equal(r.ok, false, JSON.stringify(r));
    assert.equal(r.code, 'budget-class');
    assert.match(String(r.message), /class 'default' holds 0 of 0 GPU queue pairs \(gpu_queues\)/);
    assert.equal(srv.homid.counters.refusals, refusals + 1);
    const t = srv.homid.registry.devices.get('mem')!.transport as EmuTransport;
    assert.equal(t.awakeHolds(), 0, 'the refusal took no awake hold');
    assert.equal(srv.homid.status().classes.find((k) => k.name === 'default')!.gpuHeld, 0);
    // root's class has a GPU budget: granted
    const root = await HomidClient.connect(sock);
    try {
      const g = await root.openGpuQueue({ device: 'mem', depth: 8, dataBytes: 1 << 16 });
      assert.equal(t.awakeHolds(), 1);
      await g.close();
      assert.equal(t.awakeHolds(), 0);
    } finally {
      root.close();
    }
  });

  test('without raw permission a GPU lease is refused as raw-denied', { timeout: 60_000 }, async () => {
    // a homid whose [raw] leaves uid 65534 out: a class with gpu_queues does not make its members trusted
    const cfgSock = path.join(dir, 'noraw.sock');
    const other = await startHomidServer(
      config({ socket: cfgSock, socket_mode: '0666', device: [{ name: 'mem', uri: 'emu://?size=16MiB', extents: 'none' }], class: { default: { gpu_queues: 1 } }, raw: { users: [0] } }),
      { logger: silent() },
    );
    try {
      const child = asNobody([cfgSock, 'gpu-lease', 'mem']);
      const r = await nextJson(child);
      await child.exited;
      assert.equal(r.ok, false, JSON.stringify(r));
      assert.equal(r.code, 'raw-denied');
      assert.match(String(r.message), /may not hold GPU queues/);
    } finally {
      await other.close();
    }
  });
});

/** A homid process (root) on its own socket, for the attacks that stop or duplicate homid itself. */
describe('hostile clients (uid 65534) and homid going away', { skip: skip ?? false }, () => {
  let fx: Fixture;
  let sock: string;
  let cfg: string;
  let homid: ReturnType<typeof spawn> | null = null;

  before(async () => {
    fx = fixture();
    sock = path.join(fx.dir, 'homid.sock');
    cfg = path.join(fx.dir, 'homid.toml');
    fs.writeFileSync(
      cfg,
      [
        `socket = "${sock}"`,
        'socket_mode = "0666"',
        'log_level = "warn"',
        '[[device]]',
        'name = "img"',
        `uri = "emu://${fx.image}?size=16MiB"`,
        'extents = "decoder:ext4"',
        `extent_root = "${fx.tree}"`,
        '[class.default]',
        'write = false',
      ].join('\n') + '\n',
    );
    homid = spawn(process.execPath, [path.join(CLI_DIR, 'homid.js'), '--config', cfg], { stdio: ['ignore', 'ignore', 'inherit'] });
    await until(
      async () => {
        try {
          const c = await HomidClient.connect(sock);
          c.close();
          return true;
        } catch {
          return false;
        }
      },
      60_000,
      'homid answering on its socket',
    );
  });
  after(() => {
    if (homid && homid.exitCode === null) {
      homid.kill('SIGCONT');
      homid.kill('SIGKILL');
    }
    if (fx) fs.rmSync(fx.dir, { recursive: true, force: true });
  });

  test('a second homid fails on the socket before it touches any device', { timeout: 60_000 }, async () => {
    const never = path.join(fx.dir, 'never.img');
    const cfg2 = path.join(fx.dir, 'second.toml');
    fs.writeFileSync(cfg2, [`socket = "${sock}"`, '[[device]]', 'name = "x"', `uri = "emu://${never}?size=16MiB"`, 'extents = "none"'].join('\n') + '\n');
    const p = spawn(process.execPath, [path.join(CLI_DIR, 'homid.js'), '--config', cfg2], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => p.on('close', r));
    assert.notEqual(code, 0);
    assert.match(err, /another server is listening/);
    assert.equal(fs.existsSync(never), false, 'the second homid never opened its device (the image file was never created)');
  });

  test('a mediated client is told at once when homid dies: its read in flight fails with Command Aborted By Host', { timeout: 90_000 }, async () => {
    const child = asNobody([sock, 'pending-read', 'img', fx.mine], 'pipe');
    const ready = await nextJson(child);
    assert.equal(ready.ready, true, JSON.stringify(ready));
    // homid stops serving (SIGSTOP): the read submitted now stays in the ring
    homid!.kill('SIGSTOP');
    child.p.stdin!.write('go\n');
    const sub = await nextJson(child);
    assert.equal(sub.submitted, true, JSON.stringify(sub));
    homid!.kill('SIGKILL');
    const r = await nextJson(child);
    await child.exited;
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.tag, 7);
    assert.equal(r.status, STATUS_HOMID_GONE, `status 0x${Number(r.status).toString(16)}`);
    assert.match(String(r.abandoned), /homid connection closed/);
  });
});

describe('writable exported memory where a hole punch would free it under the device (uio)', () => {
  test('a non-root client gets no mediated write lease there; root does; read leases come as read-only descriptors', { timeout: 60_000 }, async () => {
    // the embedded controller's exporter, marked as uio's is (hugetlb pages return to the pool when punched)
    const opener: TransportOpener = async (cfg) => {
      const t = await memfdOpener(cfg);
      const real = t.queueExporter!.bind(t);
      t.queueExporter = () => {
        const x = real();
        return x === null ? null : { ...x, kind: 'pcie-uio (stand-in)', writableExportSafe: false };
      };
      return t;
    };
    const h = await Homid.start(config({ device: [{ name: 'u', uri: 'emu://?size=16MiB' }], class: { default: { write: true } } }), { logger: silent(), opener, regions: memfdRegions });
    try {
      const nobody = h.connect(NOBODY_PEER);
      await assert.rejects(
        h.openQueuePairs(nobody, { device: 'u', depth: 8, mode: 'mediated', write: true, dataBytes: 1 << 16 }),
        (e: Error) => (e as HomidError).code === 'write-denied' && /hole punch/.test(e.message),
      );
      // without write: granted, and the data memory it would receive is a read-only descriptor
      const [l] = await h.openQueuePairs(nobody, { device: 'u', depth: 8, mode: 'mediated', dataBytes: 1 << 16 });
      const flags = fs.readFileSync(`/proc/self/fdinfo/${l!.fds[1]}`, 'utf8');
      assert.equal(parseInt(/flags:\s*([0-7]+)/.exec(flags)![1]!, 8) & 3, fs.constants.O_RDONLY, 'data descriptor handed out O_RDONLY');
      const root = h.connect(ROOT_PEER);
      const [w] = await h.openQueuePairs(root, { device: 'u', depth: 8, mode: 'mediated', write: true, dataBytes: 1 << 16 });
      assert.equal((w!.grant as { write: boolean }).write, true);
      await h.disconnect(nobody);
      await h.disconnect(root);
    } finally {
      await h.stop();
    }
  });
});
