/**
 * The conformance suite of the I/O interface: the same checks against every backend that runs on this machine
 * (posix buffered and O_DIRECT on a temporary file, io_uring buffered / O_DIRECT / registered buffers on a
 * temporary file, the user-space driver over the embedded controller, memory- and file-backed, and the emu
 * backend name). io_uring_cmd needs /dev/ngXnY and runs in the VM suite.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openIo, IoRangeError, IoError, IoOp, type IoDevice, type IoOpenOptions, type IoBuffer } from '../../src/io/index.js';
import { runPerf } from '../../src/bench/perf.js';

const dir = mkdtempSync(join(tmpdir(), 'homi-io-conf-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

interface Case {
  name: string;
  uri: () => string;
  opts: IoOpenOptions;
}

const SIZE = '16MiB';
const cases: Case[] = [
  { name: 'posix (buffered file)', uri: () => `file:${join(dir, 'posix.img')}?size=${SIZE}`, opts: { backend: 'posix' } },
  { name: 'posix O_DIRECT', uri: () => `file:${join(dir, 'posix-direct.img')}?size=${SIZE}`, opts: { backend: 'posix', direct: true } },
  { name: 'io_uring (buffered file)', uri: () => `file:${join(dir, 'uring.img')}?size=${SIZE}&bs=4096`, opts: { backend: 'io_uring' } },
  { name: 'io_uring O_DIRECT', uri: () => `file:${join(dir, 'uring-direct.img')}?size=${SIZE}`, opts: { backend: 'io_uring', direct: true } },
  { name: 'io_uring O_DIRECT fixed buffers', uri: () => `file:${join(dir, 'uring-fixed.img')}?size=${SIZE}`, opts: { backend: 'io_uring', direct: true, fixedBuffers: true } },
  { name: 'driver on emu memory (4 KiB blocks)', uri: () => `emu://?size=${SIZE}`, opts: { backend: 'driver' } },
  { name: 'driver on emu memory (512 B blocks)', uri: () => `emu://?size=${SIZE}&lbads=9`, opts: {} },
  { name: 'driver on emu file-backed', uri: () => `emu://${join(dir, 'emu-file.img')}?size=${SIZE}`, opts: { backend: 'driver' } },
  { name: 'emu backend', uri: () => `emu://?size=${SIZE}`, opts: { backend: 'emu' } },
];

/** Fill with a pattern unique to (lba, seed). */
function fill(b: Uint8Array, lba: number, seed: number): void {
  for (let i = 0; i < b.length; i += 4) {
    const v = (Math.imul(lba + (i >>> 9), 2654435761) ^ Math.imul(i + seed, 40503)) >>> 0;
    b[i] = v & 0xff;
    b[i + 1] = (v >>> 8) & 0xff;
    b[i + 2] = (v >>> 16) & 0xff;
    b[i + 3] = v >>> 24;
  }
}

function allZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** Submit raw operations on a queue and collect their statuses. */
async function drain(q: { ring(): void; poll(cb: (tag: number, status: number) => void): number; outstanding: number }, into: Map<number, number>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (q.outstanding > 0) {
    q.ring();
    if (q.poll((tag, status) => into.set(tag, status)) === 0) await new Promise<void>((r) => setImmediate(r));
    if (Date.now() > deadline) throw new Error('completions did not arrive');
  }
}

for (const c of cases) {
  describe(`conformance: ${c.name}`, () => {
    let dev: IoDevice;
    let buf: IoBuffer;
    let back: IoBuffer;
    before(async () => {
      dev = await openIo(c.uri(), c.opts);
      buf = dev.allocBuffer(256 * 1024);
      back = dev.allocBuffer(256 * 1024);
    });
    after(async () => {
      await dev.close();
    });

    test('geometry', () => {
      const g = dev.geometry;
      assert.ok(g.blockSize === 512 || g.blockSize === 4096, `block size ${g.blockSize}`);
      assert.equal(g.blocks * g.blockSize, 16 << 20);
      assert.ok(g.maxTransferBytes >= 64 * 1024);
      assert.ok(g.maxQueueDepth >= 32);
      assert.equal(typeof dev.transport, 'string');
    });

    test('read after write at several sizes', async () => {
      const bsz = dev.geometry.blockSize;
      let seed = 1;
      for (const bytes of [bsz, 8 * bsz, 64 * 1024, 128 * 1024]) {
        const nlb = bytes / bsz;
        for (const lba of [0, 17 * (4096 / bsz), dev.geometry.blocks - nlb]) {
          const w = buf.slice(0, bytes);
          const r = back.slice(0, bytes);
          fill(w.bytes, lba, seed++);
          await dev.write(lba, nlb, w);
          r.bytes.fill(0xee);
          await dev.read(lba, nlb, r);
          assert.deepEqual(Buffer.from(r.bytes), Buffer.from(w.bytes), `${bytes} bytes at LBA ${lba}`);
        }
      }
    });

    test('first and last LBA', async () => {
      const bsz = dev.geometry.blockSize;
      const last = dev.geometry.blocks - 1;
      const w = buf.slice(0, bsz);
      const r = back.slice(0, bsz);
      for (const lba of [0, last]) {
        fill(w.bytes, lba, 99);
        await dev.write(lba, 1, w);
        await dev.read(lba, 1, r);
        assert.deepEqual(Buffer.from(r.bytes), Buffer.from(w.bytes), `LBA ${lba}`);
      }
    });

    test('out-of-range I/O is refused with a clear error and status', async () => {
      const bsz = dev.geometry.blockSize;
      const blocks = dev.geometry.blocks;
      await assert.rejects(dev.read(blocks, 1, buf.slice(0, bsz)), (e: unknown) => e instanceof IoRangeError && /outside the device/.test((e as Error).message));
      await assert.rejects(dev.write(blocks - 1, 2, buf.slice(0, 2 * bsz)), IoRangeError);
      await assert.rejects(dev.writeZeroes(blocks, 4), IoRangeError);
      // The raw fast path does not check: the device (or the kernel path on its behalf) reports the status.
      const q = await dev.createQueue(4);
      try {
        const s = buf.slice(0, 2 * bsz);
        assert.ok(q.submitIo(IoOp.Read, dev.geometry.nsid, blocks - 1, 2, s.h1, s.h2, 5) >= 0);
        const st = new Map<number, number>();
        await drain(q, st);
        assert.notEqual(st.get(5), 0);
        assert.match(dev.statusName(st.get(5)!), /LBA Out of Range/);
      } finally {
        await q.close();
      }
    });

    test('several in flight on several queue sets', async () => {
      const bsz = dev.geometry.blockSize;
      const per = 16;
      const queues = [await dev.createQueue(per), await dev.createQueue(per)];
      const io = dev.allocBuffer(2 * per * 4096);
      try {
        const nlb = 4096 / bsz;
        const st = new Map<number, number>();
        for (let qi = 0; qi < 2; qi++) {
          for (let s = 0; s < per; s++) {
            const tag = qi * per + s;
            const sl = io.slice(tag * 4096, 4096);
            fill(sl.bytes, 1000 + tag * nlb, 7);
            assert.ok(queues[qi]!.submit(IoOp.Write, 1000 + tag * nlb, nlb, sl, tag) >= 0);
          }
        }
        for (const q of queues) q.ring();
        for (const q of queues) await drain(q, st);
        assert.equal(st.size, 2 * per);
        for (const [tag, s] of st) assert.equal(s, 0, `write ${tag}: ${dev.statusName(s)}`);
        const expect = Buffer.from(io.bytes.slice(0, 2 * per * 4096));
        io.bytes.fill(0);
        st.clear();
        for (let qi = 0; qi < 2; qi++) {
          for (let s = 0; s < per; s++) {
            const tag = qi * per + s;
            assert.ok(queues[1 - qi]!.submit(IoOp.Read, 1000 + tag * nlb, nlb, io.slice(tag * 4096, 4096), tag) >= 0);
          }
        }
        for (const q of queues) q.ring();
        for (const q of queues) await drain(q, st);
        for (const [tag, s] of st) assert.equal(s, 0, `read ${tag}: ${dev.statusName(s)}`);
        assert.deepEqual(Buffer.from(io.bytes.slice(0, 2 * per * 4096)), expect);
      } finally {
        for (const q of queues) await q.close();
        dev.freeBuffer(io);
      }
    });

    test('flush', async () => {
      assert.equal(dev.features.flush, true);
      await dev.flush();
    });

    test('write zeroes reads back zeros', async () => {
      const bsz = dev.geometry.blockSize;
      const nlb = 32768 / bsz;
      const w = buf.slice(0, 32768);
      fill(w.bytes, 300, 3);
      await dev.write(300, nlb, w);
      await dev.writeZeroes(300 + 1, nlb - 2);
      const r = back.slice(0, 32768);
      await dev.read(300, nlb, r);
      assert.deepEqual(Buffer.from(r.bytes.subarray(0, bsz)), Buffer.from(w.bytes.subarray(0, bsz)), 'block before the range kept');
      assert.ok(allZero(r.bytes.subarray(bsz, 32768 - bsz)), 'range zeroed');
      assert.deepEqual(Buffer.from(r.bytes.subarray(32768 - bsz)), Buffer.from(w.bytes.subarray(32768 - bsz)), 'block after the range kept');
    });

    test('deallocate: reads return zeros, or the backend says clearly that it cannot', async () => {
      const bsz = dev.geometry.blockSize;
      const nlb = 65536 / bsz;
      const lba = 2048 * (4096 / bsz);
      const w = buf.slice(0, 65536);
      fill(w.bytes, lba, 4);
      await dev.write(lba, nlb, w);
      try {
        await dev.deallocate(lba, nlb);
      } catch (e) {
        assert.ok(e instanceof IoError, String(e));
        assert.match((e as Error).message, /deallocate failed: \S+/);
        return;
      }
      const r = back.slice(0, 65536);
      await dev.read(lba, nlb, r);
      assert.ok(allZero(r.bytes), 'deallocated blocks read as zeros');
    });

    test('perf --verify (randrw, 2 queue sets)', async () => {
      const r = await runPerf({
        uri: c.uri(),
        ...(c.opts.backend ? { backend: c.opts.backend } : {}),
        direct: c.opts.direct ?? false,
        fixedBuffers: c.opts.fixedBuffers ?? false,
        rw: 'randrw',
        bs: 8192,
        qd: 8,
        nqueues: 2,
        timeSec: null,
        ios: 3000,
        warmupSec: 0,
        rwmixread: 50,
        nsid: 1,
        verify: true,
        verifySpan: 4 << 20,
        seed: 3,
      });
      assert.equal(r.errors, 0, JSON.stringify(r.errorsByStatus));
      assert.equal(r.verifyErrors, 0, JSON.stringify(r.firstMismatch));
      assert.ok(r.verified > 0);
      assert.ok(r.reads > 0 && r.writes > 0);
      assert.equal(r.backend, c.opts.backend ?? 'driver');
    });
  });
}
