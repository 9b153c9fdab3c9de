/**
 * Queue pairs handed to another process: the embedded controller in memfd mode, a queue pair provisioned by
 * this (owner) process and driven by a child node process that got the fds through spawn's stdio array and
 * the grant on stdin.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Controller } from '../../src/driver/controller.js';
import { attachQueuePair, provisionQueuePair, type ProvisionedQueuePair } from '../../src/driver/attach.js';
import { createShm, futexWait, futexWake, mapShmFd } from '../../src/sys/shm.js';
import { openEmu, type EmuTransport } from '../../src/transport/emu.js';
import { OP_READ, OP_WRITE, runLoop } from './loop.js';

const CHILD = fileURLToPath(new URL('./child.js', import.meta.url));

interface ChildRun {
  proc: ChildProcess;
  lines: AsyncIterator<string>;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>;
}

function startChild(p: ProvisionedQueuePair, args: string[]): ChildRun {
  const proc = spawn(process.execPath, [CHILD, ...args], {
    stdio: ['pipe', 'pipe', 'inherit', ...p.fds],
    env: { ...process.env, HOMI_SHM_CHILD: '1' },
  });
  proc.stdin!.end(JSON.stringify(p.grant));
  let out = '';
  const waiting: Array<(s: string) => void> = [];
  const queued: string[] = [];
  proc.stdout!.setEncoding('utf8');
  proc.stdout!.on('data', (d: string) => {
    out += d;
    for (const line of d.split('\n').filter((l) => l.length > 0)) {
      const w = waiting.shift();
      if (w) w(line);
      else queued.push(line);
    }
  });
  const lines: AsyncIterator<string> = {
    next: () => (queued.length ? Promise.resolve({ value: queued.shift()!, done: false }) : new Promise((r) => waiting.push((v) => r({ value: v, done: false })))),
  };
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>((resolve) => {
    proc.on('exit', (code, signal) => resolve({ code, signal, out }));
  });
  return { proc, lines, done };
}

describe('shared memory primitives', () => {
  it('memfd regions map in the same bytes; futex wait/wake across mappings', () => {
    const a = createShm('t', 8192);
    const b = mapShmFd(a.fd, 8192);
    new Uint32Array(a.buffer)[100] = 0xdeadbeef;
    assert.equal(new Uint32Array(b.buffer)[100], 0xdeadbeef);
    assert.equal(futexWait(b.address + 8, 1, 5), 'not-equal');
    assert.equal(futexWait(b.address + 8, 0, 5), 'timed-out');
    assert.equal(futexWake(a.address + 8), 0);
    b.close();
    a.close();
    assert.equal(new Uint32Array(a.buffer)[100], 0, 'a closed region reads zeros, never faults');
  });
});

describe('embedded controller in memfd mode: queue pairs driven by another process', () => {
  let emu: EmuTransport;
  let ctrl: Controller;
  const BS = 4096;

  before(async () => {
    emu = await openEmu({ namespaces: [{ sizeBytes: 64 << 20, lbads: 12 }], backing: 'memory', sharedMemory: 'memfd', maxQueuePairs: 8, sleepMs: 1000 });
    ctrl = await Controller.open(emu, { ioQueues: 8 });
  });
  after(async () => {
    await ctrl?.close();
    await emu?.close();
  });

  it('the owner drives its own queue pair over memfd memory (in-process, futex wakes)', async () => {
    assert.equal(emu.sharedMemory, 'memfd');
    const qp = await ctrl.createQueuePair({ entries: 64 });
    const loc = emu.shmLocation(qp.sqIova);
    assert.ok(loc.fd >= 0 && loc.offset % 4096 === 0);
    const w = runLoop(qp, emu.dma, { nsid: 1, blockSize: BS, qd: 16, op: OP_WRITE, firstLba: 10000, count: 500, seed: 3 });
    const r = runLoop(qp, emu.dma, { nsid: 1, blockSize: BS, qd: 16, op: OP_READ, firstLba: 10000, count: 500, seed: 3, verify: true });
    assert.equal(w.errors + r.errors + r.mismatches, 0, r.firstError ?? '');
    // let the controller fall asleep, then one command must still wake it (futex)
    await new Promise((res) => setTimeout(res, 30));
    const before_ = emu.stats().sleeps;
    assert.ok(before_ > 0);
    const again = runLoop(qp, emu.dma, { nsid: 1, blockSize: BS, qd: 1, op: OP_READ, firstLba: 10000, count: 1, seed: 3, verify: true });
    assert.equal(again.mismatches, 0);
    // The controller sleeps up to 1 s (sleepMs) between polls: only a futex wake makes this fast.
    assert.ok(again.elapsedMs < 500, `woken by futex, not by the sleep timeout (${again.elapsedMs.toFixed(2)} ms)`);
    await ctrl.deleteQueuePair(qp);
  });

  it('a child process attaches, writes and verifies patterned blocks at qd 16; the owner reads the same bytes', async () => {
    const p = await provisionQueuePair(ctrl, emu, { entries: 128, dataBytes: 1 << 20 });
    assert.deepEqual(JSON.parse(JSON.stringify(p.grant)), p.grant, 'the grant is plain JSON');
    const COUNT = 2048;
    const SEED = 0x5eed;
    const c = startChild(p, ['verify', String(COUNT), String(SEED), '0']);
    const { code, out } = await c.done;
    const res = JSON.parse(out.trim().split('\n').pop()!);
    assert.equal(code, 0, out);
    assert.equal(res.write.ios, COUNT);
    assert.equal(res.read.ios, COUNT);
    assert.equal(res.write.errors + res.read.errors + res.read.mismatches, 0, res.read.firstError);
    assert.equal(res.flushStatus, 0);
    // the owner reads what the child wrote, through its own queue pair
    const qp = await ctrl.createQueuePair({ entries: 64 });
    const mine = runLoop(qp, emu.dma, { nsid: 1, blockSize: BS, qd: 16, op: OP_READ, firstLba: 0, count: COUNT, seed: SEED, verify: true });
    assert.equal(mine.errors + mine.mismatches, 0, mine.firstError ?? '');
    assert.equal(mine.ios, COUNT);
    await ctrl.deleteQueuePair(qp);
    await p.reclaim();
    assert.equal(p.remote.state, 'deleted');
  });

  it('reclaim while the client is SIGKILLed mid-I/O; the qid is reused by a new queue pair', async () => {
    const p = await provisionQueuePair(ctrl, emu, { entries: 64, dataBytes: 1 << 20 });
    const qid = p.grant.qid;
    const c = startChild(p, ['hang']);
    const first = JSON.parse((await c.lines.next()).value as string);
    assert.equal(first.running, true, JSON.stringify(first));
    await new Promise((r) => setTimeout(r, 30));
    c.proc.kill('SIGKILL');
    const { signal } = await c.done;
    assert.equal(signal, 'SIGKILL');
    await p.reclaim();
    assert.equal(p.remote.state, 'deleted');
    assert.equal(ctrl.remoteQueuePairs.length, 0);
    assert.equal(ctrl.state, 'live');
    // a new grant gets the freed qid, and works
    const p2 = await provisionQueuePair(ctrl, emu, { entries: 64, dataBytes: 1 << 20 });
    assert.equal(p2.grant.qid, qid);
    const qp = attachQueuePair(p2.grant, p2.fds, { closeFds: false }); // in-process attach works too
    const r = runLoop(qp, qp.dma, { nsid: 1, blockSize: BS, qd: 16, op: OP_WRITE, firstLba: 5000, count: 300, seed: 9 });
    const v = runLoop(qp, qp.dma, { nsid: 1, blockSize: BS, qd: 16, op: OP_READ, firstLba: 5000, count: 300, seed: 9, verify: true });
    assert.equal(r.errors + v.errors + v.mismatches, 0, v.firstError ?? '');
    qp.detach();
    await p2.reclaim();
  });

  it('memory registered at runtime from an fd (a client-made region) becomes DMA-visible, and stops being so', async () => {
    const clientRegion = createShm('client-data', 1 << 20); // as if received from a client over the socket
    const seg = emu.shmDma.registerFd(clientRegion.fd, clientRegion.size);
    const qp = await ctrl.createQueuePair({ entries: 16 });
    const buf = seg.allocator.alloc(BS);
    buf.bytes.fill(0xab);
    const done: number[] = [];
    qp.submitIo(OP_WRITE, 1, 777, 1, buf.iova, 0, 1);
    qp.ring();
    while (done.length === 0) qp.poll((_t, st) => done.push(st));
    assert.equal(done[0], 0);
    const rd = emu.dma.alloc(BS);
    done.length = 0;
    qp.submitIo(OP_READ, 1, 777, 1, rd.iova, 0, 2);
    qp.ring();
    while (done.length === 0) qp.poll((_t, st) => done.push(st));
    assert.equal(rd.bytes[100], 0xab);
    const off = buf.iova - seg.iovaBase;
    assert.equal(new Uint8Array(clientRegion.buffer)[off + 5], 0xab, 'the client sees the bytes in its own mapping');
    seg.release();
    done.length = 0;
    qp.submitIo(OP_WRITE, 1, 777, 1, buf.iova, 0, 3);
    qp.ring();
    while (done.length === 0) qp.poll((_t, st) => done.push(st));
    assert.notEqual(done[0], 0, 'after release the segment is a DMA fault');
    emu.dma.free(rd);
    await ctrl.deleteQueuePair(qp);
    clientRegion.close();
  });

  it('reclaim with the client alive: its outstanding commands end, the controller stays healthy', async () => {
    const p = await provisionQueuePair(ctrl, emu, { entries: 64, dataBytes: 1 << 20 });
    const qp = attachQueuePair(p.grant, p.fds, { closeFds: false, timeoutMs: 200 });
    for (let i = 0; i < 32; i++) qp.submitIo(OP_READ, 1, i, 1, qp.dma.alloc(BS).iova, 0, i);
    qp.ring();
    await p.reclaim();
    // Each command was completed by the controller (possibly "aborted due to SQ deletion") or, if the
    // deletion caught it unfetched, times out on the client's side: none stays outstanding.
    let seen = 0;
    const until = performance.now() + 3000;
    while (qp.outstanding !== 0 && performance.now() < until) {
      qp.poll(() => void seen++);
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(qp.outstanding, 0);
    assert.equal(seen, 32);
    qp.detach();
    const probe = await ctrl.createQueuePair({ entries: 16 });
    const ok = runLoop(probe, emu.dma, { nsid: 1, blockSize: BS, qd: 4, op: OP_READ, firstLba: 0, count: 16 });
    assert.equal(ok.errors, 0);
    await ctrl.deleteQueuePair(probe);
  });
});

describe('figures: child process vs in-process, null backing, qd 32 (reported, not asserted)', () => {
  it('measures IOPS', async () => {
    const emu = await openEmu({ namespaces: [{ sizeBytes: 1 << 30, lbads: 12 }], backing: 'null', sharedMemory: 'memfd' });
    const ctrl = await Controller.open(emu, { ioQueues: 4 });
    try {
      const MS = Number(process.env.HOMI_SHM_BENCH_MS ?? 1000);
      const qp = await ctrl.createQueuePair({ entries: 256 });
      runLoop(qp, emu.dma, { nsid: 1, blockSize: 4096, qd: 32, op: OP_READ, durationMs: 200, lbaRange: 1 << 18 });
      const inproc = runLoop(qp, emu.dma, { nsid: 1, blockSize: 4096, qd: 32, op: OP_READ, durationMs: MS, lbaRange: 1 << 18 });
      await ctrl.deleteQueuePair(qp);
      const p = await provisionQueuePair(ctrl, emu, { entries: 256, dataBytes: 1 << 20 });
      const c = startChild(p, ['bench', String(MS)]);
      const { code, out } = await c.done;
      assert.equal(code, 0, out);
      const child = JSON.parse(out.trim().split('\n').pop()!).bench;
      await p.reclaim();
      const line = `shm figures (null, 4 KiB randread, qd 32, ${MS} ms): in-process ${Math.round(inproc.iops)} IOPS, child process ${Math.round(child.iops)} IOPS`;
      console.log(line);
      assert.equal(inproc.errors + child.errors, 0);
    } finally {
      await ctrl.close();
      await emu.close();
    }
  });
});
