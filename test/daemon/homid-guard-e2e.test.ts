/**
 * homid over its real socket: budgets refuse cleanly and the connection keeps working; a mediated client
 * process cannot read outside its files nor write without a write grant (Access Denied, nothing reaches the
 * controller); a file grant cannot be forged with a path; and a bounded, seeded fuzz of malformed frames never
 * crashes homid nor leaks a queue pair.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HomidClient, HomidClientError } from '../../src/client/index.js';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import { STATUS_ACCESS_DENIED } from '../../src/daemon/mediated.js';
import { FLAG_FDS, IpcClient, IpcErrorCode, encodeFrame, frameHeader, type UnmatchedMessage } from '../../src/ipc/index.js';
import type { EmuTransport } from '../../src/transport/emu.js';
import { config, ext4Fixture, haveTool, silent, type ImageFixture } from './fixtures.js';
import { clientChild, nextJson, rng, until } from './procs.js';

async function refusedWith(p: Promise<unknown>, code: string | RegExp): Promise<HomidClientError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof HomidClientError, `expected HomidClientError, got ${String(e)}`);
    if (typeof code === 'string') assert.equal(e.code, code, e.message);
    else assert.match(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected a refusal ${String(code)}`);
}

describe('homid over its socket: budgets, mediation, forged grants, fuzz', { skip: !haveTool('mkfs.ext4') && 'no mkfs.ext4' }, () => {
  let fx: ImageFixture;
  let srv: HomidServer;
  let sock: string;
  const mem = () => srv.homid.registry.live('mem').controller;
  const img = () => srv.homid.registry.live('img');
  const drained = async (): Promise<void> =>
    until(
      () => srv.homid.sessions.size === 0 && mem().remoteQueuePairs.length === 0 && mem().queuePairs.length === 0 && img().controller.queuePairs.length === 0,
      30_000,
      'every session gone, every queue pair reclaimed',
    );

  before(async () => {
    fx = ext4Fixture({ 'mine.bin': 20_000, 'secret.bin': 12_288 });
    sock = path.join(fx.dir, 'homid.sock');
    srv = await startHomidServer(
      config({
        socket: sock,
        device: [
          { name: 'mem', uri: 'emu://?size=64MiB&queues=8' },
          { name: 'img', uri: `emu://${fx.image}?size=${fx.sizeMiB}MiB`, extents: 'decoder:ext4', extent_root: fx.tree },
        ],
        // a small budget; mediated clients of the class get no writes
        class: { default: { queue_pairs: 3, per_client: 2, write: false } },
        raw: { users: [process.getuid!()] },
      }),
      { logger: silent() },
    );
  });
  after(async () => {
    await srv?.close();
    fs.rmSync(fx.dir, { recursive: true, force: true });
  });

  test('per-client and class budgets refuse with a clear error; the refused connections keep working', { timeout: 90_000 }, async () => {
    const holder = clientChild([sock, 'hold', 'mem']);
    const ready = await nextJson(holder);
    assert.equal(ready.ready, true);
    const a = await HomidClient.connect(sock);
    const b = await HomidClient.connect(sock);
    try {
      const la = await a.openQueuePairs({ device: 'mem', depth: 16, count: 2, dataBytes: 1 << 16 });
      assert.equal(la.length, 2);
      const e1 = await refusedWith(a.openQueuePairs({ device: 'mem', depth: 16, dataBytes: 1 << 16 }), 'budget-client');
      assert.match(e1.message, /client budget exceeded: holds 2 of 2 queue pairs/);
      // the holder process (1) and a (2) fill the class: b is refused by the class budget
      const e2 = await refusedWith(b.openQueuePairs({ device: 'mem', depth: 16, dataBytes: 1 << 16 }), 'budget-class');
      assert.match(e2.message, /class 'default' holds 3 of 3/);
      // all or nothing: a request for more than fits grants nothing
      await refusedWith(b.openQueuePairs({ device: 'mem', depth: 16, count: 2, dataBytes: 1 << 16 }), /budget-/);
      // both connections still answer
      assert.equal((await a.status()).ok, true);
      assert.equal((await b.listDevices()).length, 2);
      // a gives one back: b now gets one; a's remaining lease still does I/O
      await a.closeQueuePair(la[0]!);
      const [lb] = await b.openQueuePairs({ device: 'mem', depth: 16, dataBytes: 1 << 16 });
      assert.equal(lb!.mode, 'raw');
      const st = await a.status();
      const clients = st.clients as { id: number; queuePairs: unknown[] }[];
      assert.equal(clients.find((c) => c.id === a.session)!.queuePairs.length, 1);
      assert.equal(clients.find((c) => c.id === b.session)!.queuePairs.length, 1);
      assert.ok(Number((st.counters as Record<string, number>).refusals) >= 3);
    } finally {
      a.close();
      b.close();
      holder.p.kill('SIGKILL');
      await holder.exited;
    }
    await drained();
  });

  test('a mediated client process cannot read outside its files nor write without a write grant', { timeout: 90_000 }, async () => {
    // learn secret.bin's LBA through another connection, then drop that grant
    const spy = await HomidClient.connect(sock);
    const sfd = fs.openSync(path.join(fx.tree, 'secret.bin'), 'r');
    const smap = await spy.resolveExtents(sfd, 'img');
    fs.closeSync(sfd);
    const secretLba = smap.read()!.extents[0]!.physical / 4096;
    smap.close();
    spy.close();
    await until(() => srv.homid.sessions.size === 0);
    // asking for writes is refused outright (class write = false)
    const w = await HomidClient.connect(sock);
    await refusedWith(w.openQueuePairs({ device: 'img', depth: 8, mode: 'mediated', write: true }), 'write-denied');
    assert.equal((await w.status()).ok, true, 'the connection keeps working after the refusal');
    w.close();

    const emu = img().transport as EmuTransport;
    const io0 = emu.stats();
    const denied0 = srv.homid.counters.deniedCommands;
    const k = clientChild([sock, 'probe', 'img', path.join(fx.tree, 'mine.bin'), String(secretLba)]);
    const r = await nextJson(k);
    // counted while the client still holds its queue (the child answered after one more round trip to homid);
    // deleting an I/O queue pair later makes the embedded controller count one spurious command (see below)
    const s1 = emu.stats();
    await k.exited;
    assert.equal(r.ok, true);
    assert.notEqual(r.own, secretLba);
    const [own, secret, lba0, write] = r.statuses as number[];
    assert.equal(own, 0, 'a read inside its own file succeeds');
    assert.equal(secret, STATUS_ACCESS_DENIED, "another file's LBA: Access Denied (SCT 2, SC 0x86)");
    assert.equal(STATUS_ACCESS_DENIED, (2 << 8) | 0x86);
    assert.equal(lba0, STATUS_ACCESS_DENIED, 'the superblock: Access Denied');
    assert.equal(write, STATUS_ACCESS_DENIED, 'a write without a write grant: Access Denied');
    assert.equal(r.statusOk, true, "the client's connection answers after the denials");
    assert.equal(s1.ioCommands - io0.ioCommands, 1, 'only the permitted read reached the controller');
    assert.equal(s1.reads - io0.reads, 1);
    assert.equal(s1.writes - io0.writes, 0, 'no write reached the medium');
    assert.equal(srv.homid.counters.deniedCommands - denied0, 3);
    await drained();
  });

  test('a file grant cannot be forged: a path instead of a descriptor, a bogus descriptor, a file outside the root', { timeout: 60_000 }, async () => {
    const c = await HomidClient.connect(sock);
    try {
      const target = path.join(fx.tree, 'secret.bin');
      // the typed request refuses a path; send one anyway, as a hostile client would, with and without the fds flag
      const r1 = await c.ipc.request({ type: 'resolveExtents', device: 'img', path: target } as never);
      assert.equal(r1.response.ok, false);
      assert.equal((r1.response as { error: { code: string } }).error.code, IpcErrorCode.MissingFds);
      const replies: UnmatchedMessage[] = [];
      const off = c.ipc.onUnmatched((m) => replies.push(m));
      const frame = (v: unknown, flags: number): Uint8Array => {
        const j = Buffer.from(JSON.stringify(v));
        const out = new Uint8Array(6 + j.length);
        out.set(frameHeader(j.length + 2, 1, flags));
        out.set(j, 6);
        return out;
      };
      c.ipc.sendRaw(frame({ id: 900_001, type: 'resolveExtents', device: 'img', fd: 3, path: target }, FLAG_FDS));
      c.ipc.sendRaw(frame({ id: 900_002, type: 'resolveExtents', device: 'img', path: target }, 0));
      await until(() => replies.length >= 2);
      off();
      for (const m of replies) assert.equal((m.message as { ok: boolean }).ok, false, JSON.stringify(m.message));
      // a descriptor that is no regular file of the tree: a pipe... (here: the socket directory) and a file outside
      const dfd = fs.openSync(fx.dir, 'r');
      try {
        await refusedWith(c.resolveExtents(dfd, 'img'), /./);
      } finally {
        fs.closeSync(dfd);
      }
      const outside = path.join(fx.dir, 'outside.bin');
      fs.writeFileSync(outside, new Uint8Array(8192).fill(7));
      const ofd = fs.openSync(outside, 'r');
      try {
        await refusedWith(c.resolveExtents(ofd, 'img'), 'outside-root');
      } finally {
        fs.closeSync(ofd);
      }
      const st = await c.status();
      const me = (st.clients as { id: number; files: number }[]).find((x) => x.id === c.session)!;
      assert.equal(me.files, 0, 'no file grant was made');
      assert.equal((st.extents as unknown[]).length, 0);
    } finally {
      c.close();
    }
    await drained();
  });

  test('fuzz: ~200 seeded malformed, oversized, truncated, random and hostile frames never crash homid nor leak a queue pair', { timeout: 120_000 }, async () => {
    const CASES = 200;
    const MAX_FRAME = 1024 * 1024;
    const r = rng(0x40a1d);
    const fileFd = fs.openSync(path.join(fx.tree, 'mine.bin'), 'r');
    const bystander = await HomidClient.connect(sock);
    const json = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v));
    const frameOf = (payload: Uint8Array, version = 1, flags = 0): Uint8Array => {
      const out = new Uint8Array(6 + payload.length);
      out.set(frameHeader(payload.length + 2, version, flags));
      out.set(payload, 6);
      return out;
    };
    const randomBytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
    type Conn = { c: IpcClient; replies: UnmatchedMessage[]; closed: boolean };
    const open = async (): Promise<Conn> => {
      const c = await IpcClient.connect(sock);
      const x: Conn = { c, replies: [], closed: false };
      c.onUnmatched((m) => x.replies.push(m));
      c.onClose(() => (x.closed = true));
      return x;
    };
    const next = async (x: Conn, ms: number): Promise<UnmatchedMessage | 'closed' | 'none'> => {
      const deadline = Date.now() + ms;
      for (;;) {
        const m = x.replies.shift();
        if (m) return m;
        if (x.closed) return 'closed';
        if (Date.now() > deadline) return 'none';
        await new Promise((res) => setTimeout(res, 2));
      }
    };
    const errorReply = async (x: Conn, what: string): Promise<string> => {
      const o = await next(x, 15_000);
      assert.ok(typeof o === 'object', `${what}: expected an error reply, got ${String(o)}`);
      const m = o.message as { ok: boolean; error: { code: string } };
      assert.equal(m.ok, false, `${what}: ${JSON.stringify(m)}`);
      return m.error.code;
    };
    const kinds = ['random', 'truncated', 'oversized', 'version', 'json', 'schema', 'fds', 'flags', 'hostile', 'leaky'] as const;
    const counts: Record<string, number> = {};
    let x = await open();
    let granted = 0;
    for (let i = 0; i < CASES; i++) {
      const kind = kinds[Math.floor(r() * kinds.length)]!;
      counts[kind] = (counts[kind] ?? 0) + 1;
      const id = 1_000 + i;
      const what = `case ${i} (${kind})`;
      if (x.closed) x = await open();
      switch (kind) {
        case 'random':
          x.c.sendRaw(randomBytes(Math.floor(r() * 400)), r() < 0.2 ? [fileFd] : []);
          await next(x, 5);
          await x.c.close();
          break;
        case 'truncated': {
          const full = encodeFrame({ id, type: 'openQueuePair', device: 'mem', nsid: 1, depth: 16, count: 1, mode: 'raw' }, false);
          x.c.sendRaw(full.subarray(0, Math.floor(r() * (full.length - 1))));
          await x.c.close();
          break;
        }
        case 'oversized': {
          const len = r() < 0.7 ? MAX_FRAME + 1 + Math.floor(r() * (2 ** 32 - MAX_FRAME - 2)) : Math.floor(r() * 2);
          x.c.sendRaw(frameHeader(len, 1, 0));
          assert.equal(await errorReply(x, what), IpcErrorCode.FrameTooLarge);
          assert.equal(await next(x, 15_000), 'closed', `${what}: connection closed after a lost frame boundary`);
          break;
        }
        case 'version':
          x.c.sendRaw(frameOf(json({ id, type: 'status' }), 2 + Math.floor(r() * 254)));
          assert.equal(await errorReply(x, what), IpcErrorCode.UnsupportedVersion);
          break;
        case 'json':
          x.c.sendRaw(frameOf([Buffer.from('{"id":1,'), Buffer.from([0xff, 0xfe, 0x7b]), Buffer.from('{"type":"status"'), Buffer.alloc(0)][Math.floor(r() * 4)]!));
          assert.equal(await errorReply(x, what), IpcErrorCode.BadJson);
          break;
        case 'schema': {
          const v = [
            { id, type: 'openQueuePair', device: 'mem', nsid: 1, depth: 'deep', count: 1, mode: 'raw' },
            { id, type: 'openQueuePair', device: 'mem', nsid: 1, depth: 16, count: 1, mode: 'root' },
            { id, type: 'openQueuePair', device: '', nsid: 1, depth: 16, count: 1, mode: 'raw' },
            { id, type: 'closeQueuePair', grantId: { $ne: null } },
            { id, type: 'hello' },
            { id, type: 'reboot' },
            [id, 'status'],
            null,
          ][Math.floor(r() * 8)];
          x.c.sendRaw(frameOf(json(v)));
          const code = await errorReply(x, what);
          assert.ok(code !== IpcErrorCode.Internal, `${what}: ${code}`);
          break;
        }
        case 'fds':
          if (r() < 0.5) {
            x.c.sendRaw(frameOf(json({ id, type: 'openQueuePair', device: 'mem', nsid: 1, depth: 16, count: 1, mode: 'raw' }), 1, FLAG_FDS), [fileFd]);
            assert.equal(await errorReply(x, what), IpcErrorCode.UnexpectedFds);
          } else {
            x.c.sendRaw(frameOf(json({ id, type: 'resolveExtents', device: 'img' }), 1, FLAG_FDS), [fileFd, fileFd]);
            assert.equal(await errorReply(x, what), IpcErrorCode.UnexpectedFds);
          }
          break;
        case 'flags':
          x.c.sendRaw(frameOf(json({ id, type: 'status' }), 1, 0x02 << Math.floor(r() * 7)));
          assert.equal(await errorReply(x, what), IpcErrorCode.BadFrame);
          break;
        case 'hostile': {
          // well-formed requests with values homid must refuse
          const v = [
            { id, type: 'openQueuePair', device: 'nope', nsid: 1, depth: 16, count: 1, mode: 'raw' },
            { id, type: 'openQueuePair', device: 'mem', nsid: 1, depth: 1 << 20, count: 1, mode: 'raw' },
            { id, type: 'openQueuePair', device: 'mem', nsid: 7, depth: 16, count: 1, mode: 'raw' },
            { id, type: 'openQueuePair', device: 'mem', nsid: 1, depth: 16, count: 500, mode: 'raw' },
            { id, type: 'openQueuePair', device: 'mem', nsid: 1, depth: 16, count: 1, mode: 'mediated', dataBytes: 2 ** 40 },
            { id, type: 'openQueuePair', device: 'img', nsid: 1, depth: 16, count: 1, mode: 'mediated', write: true },
            { id, type: 'closeQueuePair', grantId: String(Math.floor(r() * 1e6)) },
            { id, type: 'closeQueuePair', grantId: '__proto__' },
          ][Math.floor(r() * 8)];
          x.c.sendRaw(frameOf(json(v)));
          const code = await errorReply(x, what);
          assert.ok(code !== IpcErrorCode.Internal, `${what}: ${code}`);
          break;
        }
        case 'leaky': {
          // a valid grant, then the client vanishes without closing its queue pairs
          x.c.sendRaw(
            frameOf(
              json({
                id,
                type: 'openQueuePair',
                device: r() < 0.7 ? 'mem' : 'img',
                nsid: 1,
                depth: 16 + Math.floor(r() * 48),
                count: 1 + Math.floor(r() * 2),
                mode: r() < 0.6 ? 'raw' : 'mediated',
                dataBytes: 1 << 16,
              }),
            ),
          );
          const o = await next(x, 15_000);
          assert.ok(typeof o === 'object', `${what}: ${String(o)}`);
          const m = o.message as { ok: boolean; error?: { code: string } };
          if (m.ok) granted++;
          else assert.match(m.error!.code, /^budget-|device-queues/, `${what}: ${JSON.stringify(m)}`);
          await x.c.close();
          break;
        }
      }
      if (i % 20 === 0) assert.equal((await bystander.status()).ok, true, `bystander after ${what}`);
    }
    await x.c.close();
    fs.closeSync(fileFd);
    for (const k of kinds) assert.ok((counts[k] ?? 0) >= 8, `kind ${k} exercised (${counts[k]})`);
    assert.ok(granted >= 5, `some hostile clients really got queue pairs (${granted})`);
    // homid is alive, and every queue pair of every vanished client was reclaimed
    await until(() => srv.homid.sessions.size === 1, 30_000, 'only the bystander session left');
    const st = await bystander.status();
    assert.equal(st.ok, true);
    const clients = st.clients as { id: number; queuePairs: unknown[] }[];
    assert.deepEqual(
      clients.map((c) => c.id),
      [bystander.session],
    );
    assert.equal(mem().remoteQueuePairs.length + mem().queuePairs.length, 0, 'no queue pair left on mem');
    assert.equal(img().controller.queuePairs.length + img().controller.remoteQueuePairs.length, 0, 'no queue pair left on img');
    for (const d of st.devices as { queuePairsInUse: number }[]) assert.equal(d.queuePairsInUse, 0);
    // and a fresh client is served normally
    const fresh = await HomidClient.connect(sock);
    const [l] = await fresh.openQueuePairs({ device: 'mem', depth: 16, dataBytes: 1 << 16 });
    assert.equal(l!.mode, 'raw');
    fresh.close();
    bystander.close();
    await drained();
  });
});
