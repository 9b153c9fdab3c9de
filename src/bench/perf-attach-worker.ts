/**
 * One thread of a multi-threaded `homi perf --backend driver` (emu://): attaches the queue pairs the calling
 * thread provisioned for it (src/driver/attach.ts), builds its slot buffers in their data regions, waits at the
 * gate, runs the engine over its queues, detaches and reports. The fds belong to the calling thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { attachQueuePair, type AttachedQueuePair } from '../driver/attach.js';
import { dataPointer, type DataPointer } from '../driver/dptr.js';
import type { DmaBuffer } from '../mem/dma.js';
import { runEngine, threadConfig, type EngineBuffer } from './engine.js';
import type { AttachWorkerData } from './perf.js';

const { opts: o, grants, fds, region, gate } = workerData as AttachWorkerData & { gate: Int32Array };
const port = parentPort!;

async function main(): Promise<void> {
  const qps: AttachedQueuePair[] = [];
  const held: Array<{ qp: AttachedQueuePair; buf: DmaBuffer; dptrs: DataPointer[] }> = [];
  try {
    for (let k = 0; k < grants.length; k++) qps.push(attachQueuePair(grants[k]!, fds[k]!, { closeFds: false }));
    const engineBuffers: EngineBuffer[][] = [];
    for (const qp of qps) {
      const buf = qp.dma.alloc(o.qd * o.bs, qp.dma.pageSize);
      const h = { qp, buf, dptrs: [] as DataPointer[] };
      held.push(h);
      const slots: EngineBuffer[] = [];
      for (let s = 0; s < o.qd; s++) {
        const d = dataPointer(qp.dma, buf, s * o.bs, o.bs);
        h.dptrs.push(d);
        slots.push({ words: new Uint32Array(buf.bytes.buffer, buf.bytes.byteOffset + s * o.bs, o.bs >>> 2), prp1: d.prp1, prp2: d.prp2 });
      }
      engineBuffers.push(slots);
    }
    const g = grants[0]!;
    port.postMessage({ type: 'ready' });
    Atomics.wait(gate, 0, 0);
    const r = await runEngine(qps, engineBuffers, {
      ...threadConfig(o, g, region.base, region.blocks, region.index),
      exportHistogram: true,
      onProgress: (p) => port.postMessage({ type: 'progress', p }),
    });
    port.postMessage({ type: 'result', r });
  } finally {
    for (const h of held) {
      for (const d of h.dptrs) d.release();
      h.qp.dma.free(h.buf);
    }
    for (const qp of qps) qp.detach();
  }
}

main().catch((e: unknown) => {
  const err = e instanceof Error ? e : new Error(String(e));
  port.postMessage({ type: 'error', name: err.name, message: err.message });
});
