// Single-thread micro benchmark (docs/BENCHMARKS.md, issue 10) of the ring code paths, same API at the base commit and on arch-ring:
//   driver: QueuePair.submitIo / ring / poll against a synchronous fake controller (the wake function completes
//           every new SQE at once), so only the host side's cost is measured.
//   mediated: MediatedQueuePair -> MediatedQueue.pump -> QueuePair (fake controller) -> pump -> client poll.
//   direct: direct completions (DirectHwQueue; the client reaps the hardware CQ, homid checks its head claim).
// Imported as './harness.mjs?<url-encoded dist root>' by inproc.mjs and gc.mjs (one module instance per root).
const root = decodeURIComponent(new URL(import.meta.url).search.slice(1));
const { QueuePair } = await import(`${root}/src/driver/queue-pair.js`);
const ENTRIES = 256;
let qd = 32;
/** The mediated ring layout moved from daemon/ to ipc/ (arch-wire). */
async function importRing() {
  try {
    return await import(`${root}/src/ipc/mediated-ring.js`);
  } catch {
    return await import(`${root}/src/daemon/mediated-ring.js`);
  }
}
export function setQd(q) { qd = q; }

function fakeHost() {
  const doorbells = new Int32Array(new SharedArrayBuffer(4096));
  let nextIova = 0x100000;
  const dma = {
    pageSize: 4096,
    alloc(size) { const s = Math.ceil(size / 4096) * 4096; const b = { iova: nextIova, size: s, bytes: new Uint8Array(new SharedArrayBuffer(s)) }; nextIova += s + 4096; return b; },
    free() {},
  };
  const ctl = { sq: null, cq: null, sqHead: 0, cqTail: 0, phase: 1 << 16, qid: 1, entries: ENTRIES };
  const wakeFn = () => {
    if (ctl.sq === null) return;
    const tail = Atomics.load(doorbells, 2 * ctl.qid);
    const sq = ctl.sq, cq = ctl.cq;
    while (ctl.sqHead !== tail) {
      const cid = sq[ctl.sqHead << 4] >>> 16;
      ctl.sqHead = ctl.sqHead + 1 === ctl.entries ? 0 : ctl.sqHead + 1;
      const at = ctl.cqTail << 2;
      cq[at] = 0; cq[at + 1] = 0; cq[at + 2] = ctl.sqHead | (ctl.qid << 16);
      Atomics.store(cq, at + 3, (cid | ctl.phase) >>> 0);
      if (++ctl.cqTail === ctl.entries) { ctl.cqTail = 0; ctl.phase ^= 1 << 16; }
    }
  };
  // before arch-xport the queue pair rang doorbells itself (doorbells, wakeFn); after, through notifier(qid)
  const notifier = (qid) => ({
    sqTail(t) {
      Atomics.store(doorbells, 2 * qid, t);
      wakeFn();
    },
    cqHead(h) {
      Atomics.store(doorbells, 2 * qid + 1, h);
    },
  });
  return { host: { doorbells, wake: null, dma, wakeFn, notifier }, ctl };
}

function makeQp() {
  const { host, ctl } = fakeHost();
  const qp = new QueuePair(host, { qid: 1, entries: ENTRIES, timeoutMs: 0 });
  qp._activate();
  const sqb = qp.sqIova, cqb = qp.cqIova; void sqb; void cqb;
  // reach the queue memory the way a controller would: through the debug view of the CQ and the SQ buffer
  ctl.cq = qp._debugCompletionQueue().dw;
  ctl.sq = qp['sq'];
  return { qp, host };
}

let done = 0;
const onDone = (_t, s) => { if (s !== 0) throw new Error(`status ${s}`); done++; };

export function runDriver(n) {
  const { qp } = makeQp();
  const t0 = process.cpuUsage();
  const w0 = performance.now();
  let submitted = 0; done = 0;
  while (done < n) {
    while (submitted - done < qd && submitted < n && qp.submitIo(2, 1, submitted & 0xffff, 1, 0x200000, 0, submitted) >= 0) submitted++;
    qp.ring();
    qp.poll(onDone);
  }
  const c = process.cpuUsage(t0);
  return { cpuNs: ((c.user + c.system) * 1000) / n, wallNs: ((performance.now() - w0) * 1e6) / n };
}

export async function runMediated(n) {
  const { MediatedQueue, LbaSet } = await import(`${root}/src/daemon/mediated.js`);
  const { ringBytes } = await importRing();
  const { MediatedQueuePair } = await import(`${root}/src/client/mediated-queue.js`);
  const { qp, host } = makeQp();
  const E = 64;
  const ringBuf = new Uint8Array(new SharedArrayBuffer(ringBytes(E)));
  const data = host.dma.alloc(qd * 4096);
  const mq = new MediatedQueue({
    id: 1, entries: E, ring: { bytes: ringBuf, size: ringBuf.byteLength, fd: null, close() {} }, data, hw: qp, dma: host.dma,
    grant: { nsid: 1, lbaSize: 4096, maxTransfer: 1 << 20, write: false, readable: LbaSet.of([{ lba: 0, count: 1 << 20 }]), writable: new LbaSet() },
    onDenied: () => { throw new Error('denied'); },
  });
  const client = new MediatedQueuePair(ringBuf, data.bytes, 1);
  const t0 = process.cpuUsage();
  const w0 = performance.now();
  let submitted = 0; done = 0;
  while (done < n) {
    while (submitted - done < qd && submitted < n && client.submitIo(2, 1, submitted & 0xffff, 1, (submitted % qd) * 4096, 0, submitted) >= 0) submitted++;
    client.ring();
    mq.pump();
    mq.pump();
    client.poll(onDone);
  }
  const c = process.cpuUsage(t0);
  return { cpuNs: ((c.user + c.system) * 1000) / n, wallNs: ((performance.now() - w0) * 1e6) / n };
}


/** Direct completions: homid writes hardware SQEs (DirectHwQueue), the fake controller posts to the hardware CQ,
 * the client reaps it and publishes its head, homid checks the claim and passes it on. */
export async function runDirect(n) {
  const { MediatedQueue, LbaSet } = await import(`${root}/src/daemon/mediated.js`);
  const { DirectHwQueue } = await import(`${root}/src/daemon/direct-hw.js`);
  const { ringBytes } = await importRing();
  const { MediatedQueuePair } = await import(`${root}/src/client/mediated-queue.js`);
  const E = 64;
  const { host, ctl } = fakeHost();
  ctl.entries = E;
  const sq = host.dma.alloc(E * 64), cq = host.dma.alloc(E * 16);
  ctl.sq = new Uint32Array(sq.bytes.buffer); ctl.cq = new Uint32Array(cq.bytes.buffer);
  const remote = { qid: 1, entries: E, sq, cq, doorbellStride: 4, state: 'live' };
  const hw = new DirectHwQueue({ doorbells: host.doorbells, wake: null, wakeFn: host.wakeFn, notifier: host.notifier }, remote);
  const ringBuf = new Uint8Array(new SharedArrayBuffer(ringBytes(E)));
  const data = host.dma.alloc(qd * 4096);
  const mq = new MediatedQueue({
    id: 1, entries: E, ring: { bytes: ringBuf, size: ringBuf.byteLength, fd: null, close() {} }, data, hw, dma: host.dma,
    grant: { nsid: 1, lbaSize: 4096, maxTransfer: 1 << 20, write: false, readable: LbaSet.of([{ lba: 0, count: 1 << 20 }]), writable: new LbaSet() },
    onDenied: () => { throw new Error('denied'); },
  });
  const client = new MediatedQueuePair(ringBuf, data.bytes, 1, cq.bytes);
  const t0 = process.cpuUsage();
  const w0 = performance.now();
  let submitted = 0; done = 0;
  while (done < n) {
    while (submitted - done < qd && submitted < n && client.submitIo(2, 1, submitted & 0xffff, 1, (submitted % qd) * 4096, 0, submitted) >= 0) submitted++;
    client.ring();
    mq.pump();
    client.poll(onDone);
  }
  const c = process.cpuUsage(t0);
  return { cpuNs: ((c.user + c.system) * 1000) / n, wallNs: ((performance.now() - w0) * 1e6) / n };
}
