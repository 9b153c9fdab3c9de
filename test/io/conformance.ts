/**
 * The conformance checks of the I/O interface, shared by the host suite (test/io/conformance.test.ts: files and
 * the embedded controller) and the guest suite (test-guest/io-conformance.test.ts: a real kernel and QEMU's NVMe
 * controller). A suite opens one device for a target, runs every check against it in order, and closes it.
 *
 * The checks write anywhere on the target (first and last LBA included): never point them at data you keep.
 */
import assert from 'node:assert/strict';
import { isSynchronousBackend, runPerf } from '../../src/bench/perf.js';
import { openIo } from '../../src/io/open.js';
import { IoError, IoOp, IoRangeError, type IoBuffer, type IoDevice, type IoOpenOptions, type IoQueue } from '../../src/io/types.js';

export interface ConformanceTarget {
  /** What to open (openIo's uri); a function is called at open (for names known only then). */
  uri: string | (() => string);
  opts: IoOpenOptions;
  /** The target's capacity in bytes, checked by 'geometry' (default: not checked). */
  expectBytes?: number;
  /**
   * The target can be opened by one process at a time (a pci: controller): the suite's device is closed before
   * the 'perf --verify' check opens the target again.
   */
  exclusive?: boolean;
}

export interface ConformanceCheck {
  name: string;
  run: () => Promise<void> | void;
}

export interface ConformanceSuite {
  /** Opens the device and allocates the check buffers. */
  open(): Promise<void>;
  /** Closes the device (idempotent). */
  close(): Promise<void>;
  /** The device, once open. */
  readonly device: IoDevice;
  /** The checks, in the order they are meant to run (the last one may close the device: see `exclusive`). */
  checks: ConformanceCheck[];
}

/** Fill with a pattern unique to (lba, seed). */
export function fillPattern(b: Uint8Array, lba: number, seed: number): void {
  for (let i = 0; i < b.length; i += 4) {
    const v = (Math.imul(lba + (i >>> 9), 2654435761) ^ Math.imul(i + seed, 40503)) >>> 0;
    b[i] = v & 0xff;
    b[i + 1] = (v >>> 8) & 0xff;
    b[i + 2] = (v >>> 16) & 0xff;
    b[i + 3] = v >>> 24;
  }
}

export function allZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** Ring and poll a queue until nothing is outstanding, collecting (tag -> status). */
export async function drainQueue(q: Pick<IoQueue, 'ring' | 'poll' | 'outstanding'>, into: Map<number, number>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (q.outstanding > 0) {
    q.ring();
    if (q.poll((tag, status) => into.set(tag, status)) === 0) await new Promise<void>((r) => setImmediate(r));
    if (Date.now() > deadline) throw new Error('completions did not arrive');
  }
}

export function conformanceSuite(t: ConformanceTarget): ConformanceSuite {
  let dev: IoDevice | null = null;
  let uri = '';
  let buf: IoBuffer;
  let back: IoBuffer;
  const d = (): IoDevice => {
    if (!dev) throw new Error(`conformance: ${uri || 'the target'} is not open`);
    return dev;
  };
  const suite: ConformanceSuite = {
    async open() {
      uri = typeof t.uri === 'string' ? t.uri : t.uri();
      dev = await openIo(uri, t.opts);
      buf = dev.allocBuffer(256 * 1024);
      back = dev.allocBuffer(256 * 1024);
    },
    async close() {
      const x = dev;
      dev = null;
      if (x) await x.close();
    },
    get device() {
      return d();
    },
    checks: [],
  };
  const check = (name: string, run: () => Promise<void> | void): void => void suite.checks.push({ name, run });

  check('geometry', () => {
    const g = d().geometry;
    assert.ok(g.blockSize === 512 || g.blockSize === 4096, `block size ${g.blockSize}`);
    if (t.expectBytes !== undefined) assert.equal(g.blocks * g.blockSize, t.expectBytes);
    assert.ok(g.blocks * g.blockSize >= 16 << 20, `capacity ${g.blocks * g.blockSize} bytes: the checks need at least 16 MiB`);
    assert.ok(g.maxTransferBytes >= 64 * 1024);
    assert.ok(g.maxQueueDepth >= 32);
    assert.equal(typeof d().transport, 'string');
  });

  check('read after write at several sizes', async () => {
    const dv = d();
    const bsz = dv.geometry.blockSize;
    let seed = 1;
    for (const bytes of [bsz, 8 * bsz, 64 * 1024, 128 * 1024]) {
      const nlb = bytes / bsz;
      for (const lba of [0, 17 * (4096 / bsz), dv.geometry.blocks - nlb]) {
        const w = buf.slice(0, bytes);
        const r = back.slice(0, bytes);
        fillPattern(w.bytes, lba, seed++);
        await dv.write(lba, nlb, w);
        r.bytes.fill(0xee);
        await dv.read(lba, nlb, r);
        assert.deepEqual(Buffer.from(r.bytes), Buffer.from(w.bytes), `${bytes} bytes at LBA ${lba}`);
      }
    }
  });

  check('first and last LBA', async () => {
    const dv = d();
    const bsz = dv.geometry.blockSize;
    const last = dv.geometry.blocks - 1;
    const w = buf.slice(0, bsz);
    const r = back.slice(0, bsz);
    for (const lba of [0, last]) {
      fillPattern(w.bytes, lba, 99);
      await dv.write(lba, 1, w);
      await dv.read(lba, 1, r);
      assert.deepEqual(Buffer.from(r.bytes), Buffer.from(w.bytes), `LBA ${lba}`);
    }
  });

  check('out-of-range I/O is refused with a clear error and status', async () => {
    const dv = d();
    const bsz = dv.geometry.blockSize;
    const blocks = dv.geometry.blocks;
    await assert.rejects(dv.read(blocks, 1, buf.slice(0, bsz)), (e: unknown) => e instanceof IoRangeError && /outside the device/.test((e as Error).message));
    await assert.rejects(dv.write(blocks - 1, 2, buf.slice(0, 2 * bsz)), IoRangeError);
    await assert.rejects(dv.writeZeroes(blocks, 4), IoRangeError);
    // The raw fast path does not check: the device (or the kernel path on its behalf) reports the status.
    const q = await dv.createQueue(4);
    try {
      const s = buf.slice(0, 2 * bsz);
      assert.ok(q.submitIo(IoOp.Read, dv.geometry.nsid, blocks - 1, 2, s.h1, s.h2, 5) >= 0);
      const st = new Map<number, number>();
      await drainQueue(q, st);
      assert.notEqual(st.get(5), 0);
      assert.match(dv.statusName(st.get(5)!), /LBA Out of Range/);
    } finally {
      await q.close();
    }
  });

  check('several in flight on several queue sets', async () => {
    const dv = d();
    const bsz = dv.geometry.blockSize;
    const per = 16;
    const queues = [await dv.createQueue(per), await dv.createQueue(per)];
    const io = dv.allocBuffer(2 * per * 4096);
    try {
      const nlb = 4096 / bsz;
      const st = new Map<number, number>();
      for (let qi = 0; qi < 2; qi++) {
        for (let s = 0; s < per; s++) {
          const tag = qi * per + s;
          const sl = io.slice(tag * 4096, 4096);
          fillPattern(sl.bytes, 1000 + tag * nlb, 7);
          assert.ok(queues[qi]!.submit(IoOp.Write, 1000 + tag * nlb, nlb, sl, tag) >= 0);
        }
      }
      for (const q of queues) q.ring();
      for (const q of queues) await drainQueue(q, st);
      assert.equal(st.size, 2 * per);
      for (const [tag, s] of st) assert.equal(s, 0, `write ${tag}: ${dv.statusName(s)}`);
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
      for (const q of queues) await drainQueue(q, st);
      for (const [tag, s] of st) assert.equal(s, 0, `read ${tag}: ${dv.statusName(s)}`);
      assert.deepEqual(Buffer.from(io.bytes.slice(0, 2 * per * 4096)), expect);
    } finally {
      for (const q of queues) await q.close();
      dv.freeBuffer(io);
    }
  });

  check('flush', async () => {
    assert.equal(d().features.flush, true);
    await d().flush();
  });

  check('write zeroes reads back zeros', async () => {
    const dv = d();
    const bsz = dv.geometry.blockSize;
    const nlb = 32768 / bsz;
    const w = buf.slice(0, 32768);
    fillPattern(w.bytes, 300, 3);
    await dv.write(300, nlb, w);
    await dv.writeZeroes(300 + 1, nlb - 2);
    const r = back.slice(0, 32768);
    await dv.read(300, nlb, r);
    assert.deepEqual(Buffer.from(r.bytes.subarray(0, bsz)), Buffer.from(w.bytes.subarray(0, bsz)), 'block before the range kept');
    assert.ok(allZero(r.bytes.subarray(bsz, 32768 - bsz)), 'range zeroed');
    assert.deepEqual(Buffer.from(r.bytes.subarray(32768 - bsz)), Buffer.from(w.bytes.subarray(32768 - bsz)), 'block after the range kept');
  });

  check('deallocate: reads return zeros, or the backend says clearly that it cannot', async () => {
    const dv = d();
    const bsz = dv.geometry.blockSize;
    const nlb = 65536 / bsz;
    const lba = 2048 * (4096 / bsz);
    const w = buf.slice(0, 65536);
    fillPattern(w.bytes, lba, 4);
    await dv.write(lba, nlb, w);
    try {
      await dv.deallocate(lba, nlb);
    } catch (e) {
      assert.ok(e instanceof IoError, String(e));
      assert.match((e as Error).message, /deallocate failed: \S+/);
      return;
    }
    const r = back.slice(0, 65536);
    await dv.read(lba, nlb, r);
    assert.ok(allZero(r.bytes), 'deallocated blocks read as zeros');
  });

  check('perf --verify (randrw, 2 queue sets; one on posix)', async () => {
    const backend = d().backend;
    if (t.exclusive) await suite.close();
    const r = await runPerf({
      uri,
      ...(t.opts.backend ? { backend: t.opts.backend } : {}),
      direct: t.opts.direct ?? false,
      fixedBuffers: t.opts.fixedBuffers ?? false,
      hipri: t.opts.hipri ?? false,
      rw: 'randrw',
      bs: 8192,
      // a synchronous backend (posix) runs one I/O at a time: depth 1, one queue set (deeper is refused)
      qd: isSynchronousBackend(backend) ? 1 : 8,
      nqueues: isSynchronousBackend(backend) ? 1 : 2,
      timeSec: null,
      ios: 3000,
      warmupSec: 0,
      rwmixread: 50,
      nsid: t.opts.nsid ?? 1,
      verify: true,
      verifySpan: 4 << 20,
      seed: 3,
    });
    assert.equal(r.errors, 0, JSON.stringify(r.errorsByStatus));
    assert.equal(r.verifyErrors, 0, JSON.stringify(r.firstMismatch));
    assert.ok(r.verified > 0);
    assert.ok(r.reads > 0 && r.writes > 0);
    assert.equal(r.backend, backend);
  });

  return suite;
}
