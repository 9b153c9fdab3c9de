/**
 * homid killed (SIGKILL) while clients hold raw queue pairs, then started again on the same configuration.
 *
 * What this can and cannot prove: the embedded controller (emu://) lives inside the homid process, so SIGKILL
 * takes the controller and its queue state with it; the new homid gets a new controller instance over the same
 * file-backed medium. So this checks that clients see a clear connection error, that the new homid replaces the
 * stale socket, brings the device up and starts with an empty lease table (no queue pair on the controller but
 * the ones it grants afterwards), and that the medium is the same (data written before the kill reads back).
 * Orphaned queues on a controller that survives homid (a PCIe device) are not exercised here.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HomidClient, type RawLease } from '../../src/client/index.js';
import { dataPointer } from '../../src/driver/dptr.js';
import { IpcErrorCode } from '../../src/ipc/errors.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { tmpDir } from './fixtures.js';
import { CLI_DIR, clientChild, nextJson, spawnNode, until, type Proc } from './procs.js';

async function connectWhenUp(sock: string, homid: Proc): Promise<HomidClient & { session: number; raw: boolean }> {
  let exited = false;
  void homid.exited.then(() => (exited = true));
  const t0 = Date.now();
  for (;;) {
    try {
      return await HomidClient.connect(sock);
    } catch (e) {
      if (exited) throw new Error(`homid exited before listening: ${(e as Error).message}`);
      if (Date.now() - t0 > 60_000) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function homiStatus(sock: string): Promise<Record<string, unknown>> {
  const p = spawnNode([path.join(CLI_DIR, 'main.js'), 'status', '--json', '--socket', sock]);
  const s = await nextJson(p);
  assert.equal(await p.exited, 0);
  return s;
}

async function rawIo(l: RawLease, op: number, lba: number, fill: number | null): Promise<Uint8Array> {
  const qp = l.qp;
  const buf = qp.dma.alloc(4096);
  const dp = dataPointer(qp.dma, buf);
  try {
    if (fill !== null) buf.bytes.fill(fill);
    await qp.exec({ opcode: op, nsid: 1, cdw10: lba, cdw11: 0, cdw12: 0, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
    return buf.bytes.slice();
  } finally {
    dp.release();
    qp.dma.free(buf);
  }
}

describe('homid restarted under its clients', () => {
  let dir: string;
  let sock: string;
  let cfg: string;
  let homid: Proc | null = null;
  const startHomid = (): Proc => spawnNode([path.join(CLI_DIR, 'homid.js'), '--config', cfg], {}, 'ignore');
  before(() => {
    dir = tmpDir('homid-restart-');
    sock = path.join(dir, 'homid.sock');
    const disk = path.join(dir, 'disk.img');
    fs.writeFileSync(disk, '');
    fs.truncateSync(disk, 64 << 20);
    cfg = path.join(dir, 'homid.toml');
    fs.writeFileSync(
      cfg,
      [
        `socket = "${sock}"`,
        'log_level = "warn"',
        '[[device]]',
        'name = "disk"',
        `uri = "emu://${disk}?size=64MiB&queues=8"`,
        'extents = "none"',
        '[class.default]',
        'queue_pairs = 8',
        'per_client = 4',
        '[raw]',
        `users = [${process.getuid!()}]`,
        '',
      ].join('\n'),
    );
  });
  after(async () => {
    if (homid && homid.p.exitCode === null) {
      homid.p.kill('SIGKILL');
      await homid.exited;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('SIGKILL homid while clients hold raw queues; a new homid starts clean on the same device', { timeout: 120_000 }, async () => {
    homid = startHomid();
    const first = homid;
    const a = await connectWhenUp(sock, first);
    const [la] = (await a.openQueuePairs({ device: 'disk', depth: 16, count: 2, dataBytes: 1 << 16 })) as RawLease[];
    await rawIo(la!, NvmOpcode.Write, 100, 0x5c);
    const watcher = clientChild([sock, 'watch', 'disk']);
    const w = await nextJson(watcher);
    assert.equal(w.ready, true);
    const before = await homiStatus(sock);
    const held = (before.clients as { queuePairs: unknown[] }[]).reduce((n, c) => n + c.queuePairs.length, 0);
    assert.equal(held, 3, 'two clients hold three raw queue pairs: ' + JSON.stringify(before.clients));

    let aClosed: string | null = null;
    a.ipc.onClose((r) => (aClosed = r));
    first.p.kill('SIGKILL');
    await first.exited;

    // the clients learn it clearly: the connection is lost, the next request says so
    const gone = await nextJson(watcher);
    assert.equal(gone.closed, true);
    const err = gone.err as { code: string; message: string };
    assert.equal(err.code, IpcErrorCode.ConnectionClosed);
    assert.match(err.message, /closed|lost/);
    await watcher.exited;
    await until(() => aClosed !== null, 10_000, 'in-process client sees the close');
    await assert.rejects(a.status(), (e: Error & { code?: string }) => e.code === IpcErrorCode.ConnectionClosed && /lost|closed/.test(e.message));
    a.close();

    // the same configuration again: the stale socket file is replaced, the device comes up, nothing is leased
    homid = startHomid();
    const b = await connectWhenUp(sock, homid);
    const st = await homiStatus(sock);
    const devs = st.devices as { name: string; state: string; queuePairsInUse: number }[];
    assert.deepEqual(
      devs.map((d) => [d.name, d.state, d.queuePairsInUse]),
      [['disk', 'live', 0]],
    );
    for (const c of st.clients as { queuePairs: unknown[] }[]) assert.equal(c.queuePairs.length, 0, 'no lease survives the restart');
    assert.equal((st.classes as { held: number }[])[0]!.held, 0);
    const [lb] = (await b.openQueuePairs({ device: 'disk', depth: 16, dataBytes: 1 << 16 })) as RawLease[];
    assert.equal(lb!.qid, 1, 'the first queue id is free again: the controller holds no queue of the old homid');
    const after = await homiStatus(sock);
    const leases = (after.clients as { queuePairs: { qid: number }[] }[]).flatMap((c) => c.queuePairs.map((q) => q.qid));
    assert.deepEqual(leases, [1], 'only the newly granted queue pair exists');
    // the same medium: what the old client wrote reads back through the new controller
    const data = await rawIo(lb!, NvmOpcode.Read, 100, 0);
    assert.ok(data.every((x) => x === 0x5c));
    b.close();
    homid.p.kill('SIGTERM');
    assert.equal(await homid.exited, 0, 'homid stops cleanly on SIGTERM');
  });
});
