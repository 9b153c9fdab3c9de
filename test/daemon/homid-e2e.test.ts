/** homid end to end: the server on a socket, client processes on the embedded controller (memfd mode). */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import { config, ext4Fixture, haveTool, silent, type ImageFixture } from './fixtures.js';
import { clientChild, type Proc } from './procs.js';

async function firstLine(c: Proc): Promise<Record<string, unknown>> {
  const r = await c.lines.next();
  assert.ok(!r.done, 'child exited without output');
  return JSON.parse(r.value) as Record<string, unknown>;
}

async function until(f: () => boolean, ms = 15_000): Promise<void> {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) assert.fail('condition not reached');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('homid end to end', { skip: !haveTool('mkfs.ext4') && 'no mkfs.ext4' }, () => {
  let fx: ImageFixture;
  let srv: HomidServer;
  let sock: string;
  before(async () => {
    fx = ext4Fixture({ 'doc.bin': 50_000 });
    sock = path.join(fx.dir, 'homid.sock');
    srv = await startHomidServer(
      config({
        socket: sock,
        device: [
          { name: 'mem', uri: 'emu://?size=64MiB&queues=8' },
          { name: 'img', uri: `emu://${fx.image}?size=${fx.sizeMiB}MiB`, extents: 'decoder:ext4', extent_root: fx.tree },
        ],
        class: { default: { queue_pairs: 8, per_client: 2 } },
        raw: { users: [process.getuid!()] },
      }),
      { logger: silent() },
    );
  });
  after(async () => {
    await srv.close();
    fs.rmSync(fx.dir, { recursive: true, force: true });
  });

  test('several client processes do verified I/O concurrently on their own queue pairs', async () => {
    const kids = [0, 1, 2].map(() => clientChild([sock, 'io', 'mem']));
    const res = await Promise.all(kids.map(firstLine));
    for (const r of res) assert.equal(r.ok, true);
    // qids may repeat: a client that finishes first gives its queue back before a later one asks
    assert.ok(res.every((r) => Number(r.rounds) > 0));
    await until(() => srv.homid.sessions.size === 0);
    assert.equal(srv.homid.registry.live('mem').controller.remoteQueuePairs.length, 0);
  });

  test('a client killed with SIGKILL mid-I/O has its queues reclaimed; another client gets them', async () => {
    const k = clientChild([sock, 'hold', 'mem']);
    const r = await firstLine(k);
    const qid = r.qid as number;
    const ctrl = srv.homid.registry.live('mem').controller;
    assert.ok(ctrl.remoteQueuePairs.some((q) => q.qid === qid));
    await new Promise((res) => setTimeout(res, 100));
    k.p.kill('SIGKILL');
    await until(() => ctrl.remoteQueuePairs.length === 0 && srv.homid.sessions.size === 0);
    const n = clientChild([sock, 'io', 'mem']);
    const r2 = await firstLine(n);
    assert.equal(r2.ok, true);
    assert.equal(r2.qid, qid, 'the reclaimed qid is granted again');
  });

  test('a mediated client process reads a file through its extents', async () => {
    const k = clientChild([sock, 'readfile', 'img', path.join(fx.tree, 'doc.bin')]);
    const r = await firstLine(k);
    assert.equal(r.ok, true);
    assert.deepEqual(new Uint8Array(Buffer.from(r.bytes as string, 'base64')), fx.files['doc.bin']);
  });
});
