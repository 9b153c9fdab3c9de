/** Raw throughput sanity check: 4 KiB random reads at qd 128 against null and memory backing. No timing assertion. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestHost } from './helper.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { CQE_DW_STATUS, CQE_PHASE_BIT, CQE_STATUS_SHIFT } from '../../src/nvme/cqe.js';
import { wakeDevice } from '../../src/emu/wake.js';

const QD = 128;
const QSIZE = 256;

async function measure(backing: 'null' | 'memory', ms: number): Promise<{ iops: number; errors: number; n: number }> {
  const h = await TestHost.open({ namespaces: [{ sizeBytes: 256 << 20, lbads: 12 }], backing, spinUs: Number(process.env.SPIN_US ?? 50), spinMaxUs: Number(process.env.SPIN_MAX_US ?? 2000) });
  try {
    const qp = await h.createQueuePair(1, QSIZE);
    const bufs = h.t.dma.alloc(QD * 4096);
    const nlba = (256 << 20) / 4096;
    const sq = qp.sqDw;
    const cq = qp.cqDw;
    const db = h.t.doorbells;
    const wake = h.t.wake;
    let tail = 0;
    let head = 0;
    let phase = CQE_PHASE_BIT;
    let seed = 12345;
    const put = (cid: number): void => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const b = tail * 16;
      sq[b] = (NvmOpcode.Read | (cid << 16)) >>> 0;
      sq[b + 1] = 1;
      sq.fill(0, b + 2, b + 16);
      const iova = bufs.iova + cid * 4096;
      sq[b + 6] = iova >>> 0;
      sq[b + 7] = Math.floor(iova / 2 ** 32);
      sq[b + 10] = seed % nlba;
      tail = tail + 1 === QSIZE ? 0 : tail + 1;
    };
    for (let i = 0; i < QD; i++) put(i);
    Atomics.store(db, 2, tail);
    wakeDevice(wake);
    let n = 0;
    let errors = 0;
    const t0 = performance.now();
    const end = t0 + ms;
    let iter = 0;
    for (;;) {
      let reaped = 0;
      for (;;) {
        const d3 = Atomics.load(cq, head * 4 + CQE_DW_STATUS);
        if ((d3 & CQE_PHASE_BIT) !== phase) break;
        if (d3 >>> CQE_STATUS_SHIFT !== 0) errors++;
        head = head + 1 === QSIZE ? 0 : head + 1;
        if (head === 0) phase ^= CQE_PHASE_BIT;
        put(d3 & 0xffff);
        reaped++;
      }
      if (reaped !== 0) {
        n += reaped;
        Atomics.store(db, 3, head);
        Atomics.store(db, 2, tail);
        wakeDevice(wake);
      }
      if ((++iter & 1023) === 0 && performance.now() > end) break;
    }
    const el = performance.now() - t0;
    if (process.env.EMU_DEBUG) console.log('# stats', JSON.stringify(h.t.stats()));
    return { iops: (n / el) * 1000, errors, n };
  } finally {
    await h.close();
  }
}

describe('emu throughput', () => {
  it('null backing, 4 KiB random reads, qd 128', async () => {
    const r = await measure('null', 1000);
    console.log(`# emu null randread 4k qd${QD}: ${(r.iops / 1e6).toFixed(2)} M IOPS (${r.n} I/Os)`);
    assert.equal(r.errors, 0);
    assert.ok(r.n > 0);
  });
  it('memory backing, 4 KiB random reads, qd 128', async () => {
    const r = await measure('memory', 500);
    console.log(`# emu memory randread 4k qd${QD}: ${(r.iops / 1e6).toFixed(2)} M IOPS (${r.n} I/Os)`);
    assert.equal(r.errors, 0);
    assert.ok(r.n > 0);
  });
});
