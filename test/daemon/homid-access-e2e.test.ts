/**
 * What a descriptor proves, over homid's real socket, with client processes running as uid nobody (65534):
 * an O_PATH descriptor of a root-only (0600) file is refused and a mediated read of the file's LBAs is denied;
 * an O_WRONLY descriptor of it (opened by root, inherited across setpriv) gives a write-only grant: the read is
 * denied, the write lands; an O_RDONLY descriptor gives reads and no writes; O_RDWR gives both.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { HomidClient } from '../../src/client/index.js';
import { STATUS_ACCESS_DENIED } from '../../src/daemon/mediated.js';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import { WRITE_FILL } from './access-child.js';
import { config, ext4Fixture, haveTool, silent, type ImageFixture } from './fixtures.js';
import { until } from './procs.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ACCESS_CHILD = path.join(HERE, 'access-child.js');
const NOBODY = 65534;
const LBA = 4096;
const CHILD_TIMEOUT_MS = 60_000;

interface ChildResult {
  uid: number;
  resolve: { ok: boolean; code?: string; message?: string; size?: number };
  read: number;
  write: number;
}

/** Run access-child.js as uid/gid nobody; `inherit` becomes its descriptor 3. */
async function asNobody(args: string[], inherit?: number): Promise<ChildResult> {
  const stdio: ('ignore' | 'pipe' | 'inherit' | number)[] = ['ignore', 'pipe', 'inherit'];
  if (inherit !== undefined) stdio.push(inherit);
  const p = spawn('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, ACCESS_CHILD, ...args], {
    stdio,
    env: { ...process.env, HOMI_DAEMON_CHILD: '1' },
  });
  let out = '';
  p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => p.kill('SIGKILL'), CHILD_TIMEOUT_MS);
  const code = await new Promise<number | null>((r) => p.on('close', r));
  clearTimeout(timer);
  const last = out.trim().split('\n').at(-1) ?? '';
  assert.equal(code, 0, `child exited with ${code}; output: ${out}`);
  return JSON.parse(last) as ChildResult;
}

function whyNotNobody(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (to run clients as uid nobody)';
  if (!haveTool('setpriv')) return 'no setpriv';
  if (!haveTool('mkfs.ext4')) return 'no mkfs.ext4';
  return false;
}

describe('descriptor access over the socket, clients as uid nobody', { skip: whyNotNobody() }, () => {
  let fx: ImageFixture;
  let srv: HomidServer;
  let sock: string;
  let secretPath: string;
  let secretLba = -1;

  before(async () => {
    fx = ext4Fixture({ 'secret.bin': 16_384, 'public.bin': 8192 });
    secretPath = path.join(fx.tree, 'secret.bin');
    fs.chmodSync(secretPath, 0o600); // root's, 0600: nobody can neither read nor write it by path
    // nobody must reach the socket and the tree (tmpDir makes 0700 directories)
    fs.chmodSync(fx.dir, 0o755);
    fs.chmodSync(fx.tree, 0o755);
    sock = path.join(fx.dir, 'homid.sock');
    srv = await startHomidServer(
      config({
        socket: sock,
        socket_mode: '0666',
        device: [{ name: 'img', uri: `emu://${fx.image}?size=${fx.sizeMiB}MiB`, extents: 'decoder:ext4', extent_root: fx.tree }],
        class: { default: { queue_pairs: 8, per_client: 4, write: true } },
        raw: { users: [0] },
      }),
      { logger: silent() },
    );
    // root learns where secret.bin lies, then lets its grant go
    const spy = await HomidClient.connect(sock);
    const fd = fs.openSync(secretPath, 'r');
    const m = await spy.resolveExtents(fd, 'img');
    fs.closeSync(fd);
    secretLba = m.read()!.extents[0]!.physical / LBA;
    m.close();
    spy.close();
    await until(() => srv.homid.sessions.size === 0, 20_000, 'the spy session gone');
  });
  after(async () => {
    await srv?.close();
    if (fx) fs.rmSync(fx.dir, { recursive: true, force: true });
  });

  test('nobody cannot open the 0600 file for reading or writing (the precondition)', () => {
    assert.equal(fs.statSync(secretPath).mode & 0o777, 0o600);
    assert.equal(fs.statSync(secretPath).uid, 0);
    assert.ok(secretLba > 0);
  });

  test('an O_PATH descriptor of a root-only file is refused; reads and writes of its LBAs are denied', { timeout: CHILD_TIMEOUT_MS + 10_000 }, async () => {
    const denied0 = srv.homid.counters.deniedCommands;
    const r = await asNobody([sock, 'img', 'opath', String(secretLba), secretPath]);
    assert.equal(r.uid, NOBODY);
    assert.equal(r.resolve.ok, false, JSON.stringify(r.resolve));
    assert.equal(r.resolve.code, 'fd-access');
    assert.match(r.resolve.message!, /O_PATH/);
    assert.equal(r.read, STATUS_ACCESS_DENIED, 'a read of the file through a mediated queue: Access Denied');
    assert.equal(r.write, STATUS_ACCESS_DENIED);
    assert.equal(srv.homid.counters.deniedCommands - denied0, 2);
    await until(() => srv.homid.sessions.size === 0);
    assert.equal(srv.homid.extents.entries.size, 0, 'no extent entry was made');
  });

  test('an O_WRONLY descriptor of a root-only file gives a write-only grant: no read, the write lands', { timeout: CHILD_TIMEOUT_MS + 10_000 }, async () => {
    const fd = fs.openSync(secretPath, fs.constants.O_WRONLY);
    let r: ChildResult;
    try {
      r = await asNobody([sock, 'img', 'inherit', String(secretLba)], fd);
    } finally {
      fs.closeSync(fd);
    }
    assert.equal(r.uid, NOBODY);
    assert.equal(r.resolve.ok, true, JSON.stringify(r.resolve));
    assert.equal(r.resolve.size, 16_384);
    assert.equal(r.read, STATUS_ACCESS_DENIED, 'no read grant from a write-only descriptor');
    assert.equal(r.write, 0, 'the write-only grant allows the write');
    const block = Buffer.alloc(LBA);
    const ifd = fs.openSync(fx.image, 'r');
    try {
      fs.readSync(ifd, block, 0, LBA, secretLba * LBA);
    } finally {
      fs.closeSync(ifd);
    }
    assert.ok(
      block.every((b) => b === WRITE_FILL),
      'the block on the device holds what the client wrote',
    );
    await until(() => srv.homid.sessions.size === 0 && srv.homid.extents.entries.size === 0);
  });

  test('an O_RDONLY descriptor gives reads and no writes; O_RDWR gives both', { timeout: 2 * CHILD_TIMEOUT_MS + 10_000 }, async () => {
    for (const [flags, read, write] of [
      [fs.constants.O_RDONLY, 0, STATUS_ACCESS_DENIED],
      [fs.constants.O_RDWR, 0, 0],
    ] as const) {
      const fd = fs.openSync(secretPath, flags);
      let r: ChildResult;
      try {
        r = await asNobody([sock, 'img', 'inherit', String(secretLba)], fd);
      } finally {
        fs.closeSync(fd);
      }
      assert.equal(r.uid, NOBODY);
      assert.equal(r.resolve.ok, true, JSON.stringify(r.resolve));
      assert.equal(r.read, read, `flags ${flags}: read`);
      assert.equal(r.write, write, `flags ${flags}: write`);
      await until(() => srv.homid.sessions.size === 0 && srv.homid.extents.entries.size === 0);
    }
  });
});
