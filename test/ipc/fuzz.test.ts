/**
 * Bounded fuzz of the IPC server (fixed seed, 500 cases): random bytes, truncated frames, bad lengths, bad
 * versions, reserved flags, non-JSON payloads, schema violations, descriptors where none are expected. The
 * server must never crash, must answer with an error or close that connection, must keep serving a bystander
 * client, and must not leak descriptors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { FLAG_FDS, IpcClient, IpcErrorCode, IpcServer, encodeFrame, frameHeader, type IpcHandler, type UnmatchedMessage } from '../../src/ipc/index.js';
import { openFdCount, rng, socketPath, tempFile, waitFor } from './helpers.js';
import { testCatalogue, type TestCatalogue } from './catalogue.js';

const CASES = 500;
const MAX_FRAME = 64 * 1024;

const handler: IpcHandler<TestCatalogue> = async (req) => {
  switch (req.request.type) {
    case 'hello':
      return { response: { ok: true, version: 1, server: 'fuzz' } };
    case 'resolveExtents':
      return { response: { ok: true, size: 0, extents: [] } };
    case 'openQueuePair':
      return { response: { ok: true, grantId: 'g' } };
    default:
      return { response: { ok: true } };
  }
};

type Outcome = { kind: 'reply'; m: UnmatchedMessage } | { kind: 'closed' } | { kind: 'none' };

/** A raw connection: send bytes, wait for one reply or the close. */
class Raw {
  replies: UnmatchedMessage[] = [];
  closed = false;
  private constructor(readonly c: IpcClient<TestCatalogue>) {
    c.onUnmatched((m) => this.replies.push(m));
    c.onClose(() => (this.closed = true));
  }
  static async open(path: string): Promise<Raw> {
    return new Raw(await IpcClient.connect(path, { catalogue: testCatalogue }));
  }
  async next(timeoutMs: number): Promise<Outcome> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.replies.shift();
      if (m) return { kind: 'reply', m };
      if (this.closed) return { kind: 'closed' };
      if (Date.now() > deadline) return { kind: 'none' };
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

function randomBytes(r: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

function frameOf(payload: Uint8Array, version = 1, flags = 0): Uint8Array {
  const out = new Uint8Array(6 + payload.length);
  out.set(frameHeader(payload.length + 2, version, flags));
  out.set(payload, 6);
  return out;
}

const json = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v));

/** Requests that violate the schemas (each is definitely invalid). */
function schemaViolation(r: () => number, id: number): unknown {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const weird = pick<unknown>([null, true, -1, 1.5, 'x', [], {}, 2 ** 60, '']);
  return pick<unknown>([
    { id, type: 'hello' },
    { id, type: 'hello', version: weird === 1 ? 'one' : typeof weird === 'number' && weird > 0 && Number.isInteger(weird) && weird < 2 ** 53 ? 'v' : weird },
    { id, type: 'openQueuePair', device: '', nsid: 1, depth: 8, count: 1, mode: 'raw' },
    { id, type: 'openQueuePair', device: 'd', nsid: 0, depth: 8, count: 1, mode: 'raw' },
    { id, type: 'openQueuePair', device: 'd', nsid: 1, depth: 1, count: 1, mode: 'raw' },
    { id, type: 'openQueuePair', device: 'd', nsid: 1, depth: 8, count: 1, mode: 'other' },
    { id, type: 'openQueuePair', device: 'd', nsid: 1, depth: 8, count: 1, mode: 'raw', write: 'yes' },
    { id, type: 'closeQueuePair' },
    { id, type: 'closeQueuePair', grantId: 7 },
    { id, type: 'no-such-type' },
    { id, type: weird },
    { id, type: 'resolveExtents', sync: 'sometimes' },
    { id: -5, type: 'status' },
    { id: 'seven', type: 'status' },
    { type: 'status' },
    [id, 'status'],
    'status',
    42,
    null,
  ]);
}

test('fuzz: malformed, oversized, truncated and random frames never hurt the server', { timeout: 120_000 }, async () => {
  const path = socketPath('fuzz');
  const fdFile = tempFile('fuzzfd', 'fd payload');
  let serverCloses = 0;
  const server = await IpcServer.listen({ catalogue: testCatalogue, path, handler, maxFrame: MAX_FRAME, onClose: () => serverCloses++ });
  const bystander = await IpcClient.connect(path, { catalogue: testCatalogue });
  assert.equal((await bystander.request({ type: 'hello', version: 1 })).response.ok, true);
  // Warm up the client side (shared I/O thread) before counting descriptors.
  const baseline = openFdCount();
  const fileFd = fs.openSync(fdFile, 'r');

  const r = rng(0x5eed1234);
  let raw = await Raw.open(path);
  let opened = 1;
  const counts: Record<string, number> = {};
  const reopen = async (): Promise<void> => {
    await raw.c.close();
    raw = await Raw.open(path);
    opened++;
  };
  const expectError = async (what: string, code: string | RegExp, id: number | null): Promise<void> => {
    const o = await raw.next(10_000);
    assert.equal(o.kind, 'reply', `${what}: expected an error reply, got ${o.kind}`);
    if (o.kind !== 'reply') return;
    const m = o.m.message as { id: unknown; ok: unknown; error: { code: string } };
    assert.equal(m.ok, false, `${what}: ${JSON.stringify(m)}`);
    if (typeof code === 'string') assert.equal(m.error.code, code, `${what}: ${JSON.stringify(m)}`);
    else assert.match(m.error.code, code, `${what}: ${JSON.stringify(m)}`);
    if (id !== null) assert.equal(m.id, id, what);
  };

  for (let i = 0; i < CASES; i++) {
    const kind = Math.floor(r() * 10);
    const id = 1_000_000 + i;
    const name = ['random', 'truncated', 'oversized', 'version', 'json', 'schema', 'fds', 'flags', 'valid', 'burst'][kind];
    counts[name] = (counts[name] ?? 0) + 1;
    const what = `case ${i} (${name})`;
    if (raw.closed) await reopen();
    switch (name) {
      case 'random': {
        // Anything at all, possibly with a descriptor; then hang up. The server may answer, wait or close.
        raw.c.sendRaw(randomBytes(r, Math.floor(r() * 300)), r() < 0.2 ? [fileFd] : []);
        await raw.next(5);
        await reopen();
        break;
      }
      case 'truncated': {
        const full = encodeFrame({ id, type: 'hello', version: 1 }, false);
        raw.c.sendRaw(full.subarray(0, Math.floor(r() * (full.length - 1))));
        await reopen();
        break;
      }
      case 'oversized': {
        const len = r() < 0.5 ? MAX_FRAME + 1 + Math.floor(r() * (2 ** 32 - MAX_FRAME - 2)) : Math.floor(r() * 2);
        raw.c.sendRaw(frameHeader(len, 1, 0));
        await expectError(what, IpcErrorCode.FrameTooLarge, null);
        const o = await raw.next(10_000);
        assert.equal(o.kind, 'closed', `${what}: connection closed after a lost frame boundary`);
        break;
      }
      case 'version': {
        const v = 2 + Math.floor(r() * 254);
        raw.c.sendRaw(frameOf(json({ id, type: 'status' }), v === 1 ? 0 : v));
        await expectError(what, IpcErrorCode.UnsupportedVersion, null);
        break;
      }
      case 'json': {
        const bad = [Buffer.from('{"id":1,'), Buffer.from([0xff, 0xfe, 0x7b]), randomBytes(r, 1 + Math.floor(r() * 50)), Buffer.alloc(0)][Math.floor(r() * 4)];
        let isJson = true;
        try {
          JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bad));
        } catch {
          isJson = false;
        }
        raw.c.sendRaw(frameOf(bad));
        await expectError(what, isJson ? new RegExp(`^(${IpcErrorCode.InvalidRequest}|${IpcErrorCode.UnknownType})$`) : IpcErrorCode.BadJson, null);
        break;
      }
      case 'schema': {
        const v = schemaViolation(r, id);
        raw.c.sendRaw(frameOf(json(v)));
        const validId = typeof v === 'object' && v !== null && !Array.isArray(v) && (v as { id?: unknown }).id === id;
        await expectError(what, new RegExp(`^(${IpcErrorCode.InvalidRequest}|${IpcErrorCode.UnknownType})$`), validId ? id : null);
        break;
      }
      case 'fds': {
        const variant = Math.floor(r() * 4);
        if (variant === 0) {
          raw.c.sendRaw(frameOf(json({ id, type: 'status' }), 1, FLAG_FDS), [fileFd]);
          await expectError(what, IpcErrorCode.UnexpectedFds, id);
        } else if (variant === 1) {
          raw.c.sendRaw(frameOf(json({ id, type: 'hello', version: 1 }), 1, 0), [fileFd, fileFd]);
          await expectError(what, IpcErrorCode.UnexpectedFds, id);
        } else if (variant === 2) {
          raw.c.sendRaw(frameOf(json({ id, type: 'resolveExtents' }), 1, FLAG_FDS));
          await expectError(what, IpcErrorCode.MissingFds, id);
        } else {
          raw.c.sendRaw(frameOf(json({ id, type: 'resolveExtents' }), 1, FLAG_FDS), [fileFd, fileFd, fileFd]);
          await expectError(what, IpcErrorCode.UnexpectedFds, id);
        }
        break;
      }
      case 'flags': {
        raw.c.sendRaw(frameOf(json({ id, type: 'status' }), 1, 0x02 << Math.floor(r() * 7)));
        await expectError(what, IpcErrorCode.BadFrame, id);
        break;
      }
      case 'valid': {
        // A well-formed request on the same (abused) connection still works.
        raw.c.sendRaw(frameOf(json({ id, type: 'resolveExtents' }), 1, FLAG_FDS), [fileFd]);
        const o = await raw.next(10_000);
        assert.equal(o.kind, 'reply', what);
        if (o.kind === 'reply') assert.deepEqual(o.m.message, { id, ok: true, size: 0, extents: [] });
        break;
      }
      case 'burst': {
        // Several frames in one write: each gets its own answer, in order.
        const a = frameOf(json({ id, type: 'status' }));
        const b = frameOf(json({ id: id + 0.5, type: 'status' }));
        const c = frameOf(json({ id: id + 1, type: 'hello', version: 1 }));
        const all = new Uint8Array(a.length + b.length + c.length);
        all.set(a);
        all.set(b, a.length);
        all.set(c, a.length + b.length);
        raw.c.sendRaw(all);
        const o1 = await raw.next(10_000);
        assert.equal(o1.kind === 'reply' && (o1.m.message as { id: number }).id, id, what);
        await expectError(what, IpcErrorCode.InvalidRequest, null);
        const o3 = await raw.next(10_000);
        assert.equal(o3.kind === 'reply' && (o3.m.message as { ok: boolean }).ok, true, what);
        break;
      }
    }
    if (i % 25 === 0) {
      const s = await bystander.request({ type: 'status' });
      assert.equal(s.response.ok, true, `bystander after case ${i}`);
    }
  }
  await raw.c.close();
  assert.equal((await bystander.call({ type: 'hello', version: 1 })).response.server, 'fuzz');
  for (const k of ['random', 'truncated', 'oversized', 'version', 'json', 'schema', 'fds', 'flags', 'valid', 'burst']) {
    assert.ok((counts[k] ?? 0) > 10, `case kind ${k} exercised (${counts[k]})`);
  }
  // Every abused connection closed on the server too; nothing leaked.
  await waitFor(() => serverCloses === opened, 20_000, `server saw ${opened} connections close (${serverCloses})`);
  assert.equal(server.connections.size, 1);
  fs.closeSync(fileFd);
  await waitFor(() => openFdCount() <= baseline, 10_000, `descriptor count back to ${baseline} (now ${openFdCount()})`);
  assert.equal(openFdCount(), baseline);
  await bystander.close();
  await server.close();
  fs.unlinkSync(fdFile);
});
