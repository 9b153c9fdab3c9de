/**
 * A hostile homid client for test/daemon/hostile-uid.test.ts, run as another uid (setpriv). argv: socket mode
 * [args...]; prints one JSON line per result. Each mode is one attack; the test asserts on what it printed and on
 * what homid did. Without HOMI_HOSTILE_CHILD=1 (the test runner loads every file under dist/test/) it does nothing.
 */
import * as fs from 'node:fs';
import { HomidClient, HomidClientError, type MediatedLease } from '../../src/client/index.js';
import { H_CQ_HEAD, H_HWCQ_HEAD, H_SQ_TAIL, openRing } from '../../src/ipc/mediated-ring.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { CQE_CID_MASK, CQE_PHASE_BIT, CQE_STATUS_SHIFT } from '../../src/nvme/cqe.js';

if (process.env['HOMI_HOSTILE_CHILD'] !== '1') process.exit(0);
const [socket, mode, ...rest] = process.argv.slice(2) as [string, string, ...string[]];
const out = (o: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify(o) + '\n');
};
const errOf = (e: unknown): { code: string; message: string } => ({ code: (e as HomidClientError).code ?? (e as Error).name, message: (e as Error).message });

async function connect(): Promise<Awaited<ReturnType<typeof HomidClient.connect>>> {
  return HomidClient.connect(socket);
}

/** A mediated lease over `file` (opened read-only by this uid): the map and the first LBA of the file. */
async function leaseOver(c: HomidClient, device: string, file: string): Promise<{ l: MediatedLease; lba: number }> {
  const fd = fs.openSync(file, 'r');
  const map = await c.resolveExtents(fd, device);
  fs.closeSync(fd);
  const snap = map.read()!;
  const [l] = await c.openQueuePairs({ device, depth: 16, mode: 'mediated', dataBytes: 1 << 16 });
  const m = l as MediatedLease;
  return { l: m, lba: snap.extents[0]!.physical / m.grant.blockSize };
}

switch (mode) {
  case 'whoami': {
    // identity and status as this uid sees them
    try {
      const c = await connect();
      const st = await c.status();
      out({ ok: true, uid: process.getuid!(), session: c.session, status: st });
      c.close();
    } catch (e) {
      out({ ok: false, uid: process.getuid!(), ...errOf(e) });
    }
    break;
  }
  case 'status-after-resolve': {
    // hold a grant of our own, then look at status: only our session and our file must be visible
    const [device, file] = rest as [string, string];
    const c = await connect();
    const fd = fs.openSync(file, 'r');
    await c.resolveExtents(fd, device);
    fs.closeSync(fd);
    const st = await c.status();
    out({ ok: true, session: c.session, status: st });
    c.close();
    break;
  }
  case 'dup-cid': {
    // two reads of our own file with the same command identifier, written straight into the ring
    const [device, file] = rest as [string, string];
    const c = await connect();
    const { l, lba } = await leaseOver(c, device, file);
    const v = openRing(new Uint8Array(l.regions[0]!.buffer));
    const CID = 5;
    for (let slot = 0; slot < 2; slot++) {
      const at = slot << 4;
      v.sq.fill(0, at, at + 16);
      v.sq[at] = (NvmOpcode.Read | (CID << 16)) >>> 0;
      v.sq[at + 1] = 1;
      v.sq[at + 6] = slot * 4096;
      v.sq[at + 10] = lba;
      v.sq[at + 12] = 0;
    }
    Atomics.store(v.header, H_SQ_TAIL, 2);
    // completions: ring CQ (answered by homid: denials) and the hardware CQ (forwarded commands)
    const hw = l.grant.hwCq ? new Uint32Array(l.regions[1]!.buffer, l.grant.hwCq.offset, l.grant.entries * 4) : null;
    const got: { where: string; cid: number; status: number }[] = [];
    let ringHead = 0;
    let hwHead = 0;
    const t0 = Date.now();
    while (got.length < 2 && Date.now() - t0 < 20_000) {
      const d3 = Atomics.load(v.cq, ringHead * 4 + 3);
      if ((d3 & CQE_PHASE_BIT) !== 0) {
        got.push({ where: 'ring', cid: d3 & CQE_CID_MASK, status: d3 >>> CQE_STATUS_SHIFT });
        Atomics.store(v.header, H_CQ_HEAD, ++ringHead);
      }
      if (hw) {
        const h3 = Atomics.load(hw, hwHead * 4 + 3);
        if ((h3 & CQE_PHASE_BIT) !== 0) {
          got.push({ where: 'hw', cid: h3 & CQE_CID_MASK, status: h3 >>> CQE_STATUS_SHIFT });
          Atomics.store(v.header, H_HWCQ_HEAD, ++hwHead);
        }
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    out({ ok: true, lba, completions: got });
    c.close();
    break;
  }
  case 'pending-read': {
    // a mediated read submitted while homid is stopped (SIGSTOP); report how the read ends once homid is gone
    const [device, file] = rest as [string, string];
    const c = await connect();
    const { l, lba } = await leaseOver(c, device, file);
    out({ ready: true, lba });
    // the test stops homid, then says go on stdin
    await new Promise<void>((r) => process.stdin.once('data', () => r()));
    const q = l.qp;
    if (q.submitIo(NvmOpcode.Read, 1, lba, 1, 0, 0, 7) < 0) {
      out({ ok: false, code: 'submit', message: 'queue full or revoked' });
      break;
    }
    q.ring();
    out({ submitted: true });
    const t0 = Date.now();
    let status = -1;
    let tag = -1;
    const keep = setInterval(() => undefined, 1000);
    while (status < 0 && Date.now() - t0 < 30_000) {
      q.poll((t, s) => {
        tag = t;
        status = s;
      });
      await new Promise((r) => setTimeout(r, 2));
    }
    clearInterval(keep);
    out({ ok: true, tag, status, ms: Date.now() - t0, abandoned: q.abandoned });
    break;
  }
  case 'resolve': {
    // pass a descriptor of `file` (opened read-only by this uid) for `device`; report the grant or the refusal
    const [device, file] = rest as [string, string];
    const c = await connect();
    const fd = fs.openSync(file, 'r');
    try {
      const map = await c.resolveExtents(fd, device);
      out({ ok: true, extents: map.read()?.extents ?? null });
    } catch (e) {
      out({ ok: false, ...errOf(e) });
    } finally {
      fs.closeSync(fd);
      c.close();
    }
    break;
  }
  case 'connections': {
    // open N connections at once and keep them; report which were served
    const n = Number(rest[0]);
    const got = await Promise.allSettled(Array.from({ length: n }, () => connect()));
    const codes = got.map((g) => (g.status === 'fulfilled' ? 'ok' : errOf(g.reason).code));
    out({ ok: true, codes });
    for (const g of got) if (g.status === 'fulfilled') g.value.close();
    break;
  }
  case 'gpu-lease': {
    // ask for a GPU queue pair (raw trust, a busy-polling controller): report what homid answered
    const [device] = rest as [string];
    const c = await connect();
    try {
      const g = await c.openGpuQueue({ device, depth: 8, dataBytes: 1 << 16 });
      out({ ok: true, qid: g.qid, busyPoll: g.busyPoll });
      await g.close();
    } catch (e) {
      out({ ok: false, ...errOf(e) });
    } finally {
      c.close();
    }
    break;
  }
  case 'dmabuf-lease': {
    // A mediated lease whose data buffer is our own buffer: 'stand-in' (a sealed memfd; the test's homid accepts
    // it as the memfd stand-in for a dma-buf), 'udmabuf' (a real one over that memfd), or attacks: 'regular' (a
    // file), 'memfd-other' (a memfd not named as a stand-in), 'size-lie' (dataBytes beyond the buffer). Reads the
    // file's first 16 KiB into data offset 0 and checks them through the memfd; then reads 8 KiB at data offset
    // 60 KiB (past the 64 KiB buffer) and reports that status.
    const [device, file, kind] = rest as [string, string, string];
    const SIZE = 64 * 1024;
    const { createShm, closeFd } = await import('../../src/sys/shm.js');
    const { createUdmabuf } = await import('../../src/sys/dmabuf.js');
    const backing = createShm(kind === 'memfd-other' ? 'other' : 'homi-dmabuf-stand-in', SIZE);
    let fd = backing.fd;
    let own = -1;
    if (kind === 'udmabuf') fd = own = createUdmabuf([{ memfd: backing.fd, offset: 0, size: SIZE }]);
    if (kind === 'regular') fd = own = fs.openSync(file, 'r');
    const c = await connect();
    try {
      const [l] = await c.openQueuePairs({ device, depth: 16, mode: 'mediated', dataBytes: kind === 'size-lie' ? 2 * SIZE : SIZE, dataDmaBuf: fd });
      const m = l as MediatedLease;
      const ffd = fs.openSync(file, 'r');
      const map = await c.resolveExtents(ffd, device);
      fs.closeSync(ffd);
      const lba = map.read()!.extents[0]!.physical / m.grant.blockSize;
      const nlb = (16 * 1024) / m.grant.blockSize;
      const statuses: number[] = [];
      const submit = async (off: number, n: number): Promise<number> => {
        if (m.qp.submitIo(NvmOpcode.Read, 1, lba, n, off, 0, statuses.length) < 0) throw new Error('queue full');
        m.qp.ring();
        let st = -1;
        const t0 = Date.now();
        while (st < 0) {
          m.qp.poll((_t, s) => void (st = s));
          if (Date.now() - t0 > 30_000) throw new Error('no completion');
          await new Promise((r) => setImmediate(r));
        }
        return st;
      };
      const mem = new Uint8Array(backing.buffer, 0, SIZE);
      mem.fill(0xee);
      const status = await submit(0, nlb);
      const want = fs.readFileSync(file).subarray(0, 16 * 1024);
      const match = Buffer.compare(Buffer.from(mem.subarray(0, want.length)), want) === 0;
      const outside = await submit(60 * 1024, (8 * 1024) / m.grant.blockSize);
      out({ ok: true, status, match, outside, dataDmaBuf: m.grant.dataDmaBuf === true, dataBytes: m.grant.dataBytes, untouchedTail: mem.subarray(16 * 1024).every((b) => b === 0xee) });
    } catch (e) {
      out({ ok: false, ...errOf(e) });
    } finally {
      c.close();
      if (own >= 0) closeFd(own);
      backing.close();
    }
    break;
  }
  case 'devmem-lease': {
    // Two mediated leases A and B whose data buffers are in the device's device memory (dataMemory 'device'), each
    // 64 KiB, B right after A in that memory. Reads the file's first 16 KiB into A at offset 0 and checks them
    // through A's mapping; then aims a read at A's data offset 64 KiB, which is where B lies in the device memory:
    // the mediated checks must deny it and leave B untouched. Then holds the leases until stdin closes.
    const [device, file] = rest as [string, string];
    const SIZE = 64 * 1024;
    const c = await connect();
    try {
      const [a, b] = (await c.openQueuePairs({ device, depth: 16, mode: 'mediated', dataBytes: SIZE, count: 2, dataMemory: 'device' })) as MediatedLease[];
      const ffd = fs.openSync(file, 'r');
      const map = await c.resolveExtents(ffd, device);
      fs.closeSync(ffd);
      const lba = map.read()!.extents[0]!.physical / a!.grant.blockSize;
      const nlb = (16 * 1024) / a!.grant.blockSize;
      let tag = 0;
      const submit = async (off: number, n: number): Promise<number> => {
        if (a!.qp.submitIo(NvmOpcode.Read, 1, lba, n, off, 0, tag++) < 0) throw new Error('queue full');
        a!.qp.ring();
        let st = -1;
        const t0 = Date.now();
        while (st < 0) {
          a!.qp.poll((_t, s) => void (st = s));
          if (Date.now() - t0 > 30_000) throw new Error('no completion');
          await new Promise((r) => setImmediate(r));
        }
        return st;
      };
      const mine = a!.qp.data;
      const zeroAtStart = mine.every((x) => x === 0) && b!.qp.data.every((x) => x === 0);
      const status = await submit(0, nlb);
      const want = fs.readFileSync(file).subarray(0, 16 * 1024);
      const match = Buffer.compare(Buffer.from(mine.subarray(0, want.length)), want) === 0;
      const outside = await submit(SIZE, nlb);
      out({
        ok: true,
        status,
        match,
        outside,
        zeroAtStart,
        bUntouched: b!.qp.data.every((x) => x === 0),
        dataDevice: a!.grant.dataDevice ?? null,
        dataDeviceB: b!.grant.dataDevice ?? null,
        write: a!.grant.write,
      });
      // hold the leases until the test closes stdin
      for await (const _ of process.stdin) void _;
    } catch (e) {
      out({ ok: false, ...errOf(e) });
    } finally {
      c.close();
    }
    break;
  }
  case 'devmem-one': {
    // One 64 KiB device-memory lease: report the refusal, or that its buffer was all zero when granted.
    const [device] = rest as [string];
    const c = await connect();
    try {
      const [l] = (await c.openQueuePairs({ device, depth: 16, mode: 'mediated', dataBytes: 64 * 1024, dataMemory: 'device' })) as MediatedLease[];
      out({ ok: true, zero: l!.qp.data.every((x) => x === 0), dataDevice: l!.grant.dataDevice ?? null });
    } catch (e) {
      out({ ok: false, ...errOf(e) });
    } finally {
      c.close();
    }
    break;
  }
  default:
    out({ ok: false, code: 'usage', message: `unknown mode ${mode}` });
}
process.exit(0);
