/**
 * `homi perf`: open a device, bring the controller up through the driver core, create queue pairs with
 * preallocated buffers and data pointers, run the engine, tear everything down.
 */
import { Controller } from '../driver/controller.js';
import { dataPointer, type DataPointer } from '../driver/dptr.js';
import type { QueuePair } from '../driver/queue-pair.js';
import { openDevice } from '../device/open.js';
import { parseDeviceUri } from '../device/uri.js';
import type { DmaBuffer } from '../mem/dma.js';
import { runEngine, type EngineBuffer, type EngineProgress, type EngineResult } from './engine.js';
import type { RwMode } from './workload.js';

export interface PerfOptions {
  uri: string;
  rw: RwMode;
  bs: number;
  qd: number;
  nqueues: number;
  timeSec: number | null;
  ios: number | null;
  warmupSec: number;
  rwmixread: number;
  nsid: number;
  verify: boolean;
  verifySpan: number;
  seed: number;
  onProgress?: (p: EngineProgress) => void;
}

export interface PerfReport extends EngineResult {
  device: string;
  transport: string;
  backend: string;
  threads: number;
  rw: RwMode;
  bs: number;
  qd: number;
  nqueues: number;
  nsid: number;
  blockSize: number;
  model: string;
}

export async function runPerf(o: PerfOptions): Promise<PerfReport> {
  const parsed = parseDeviceUri(o.uri);
  const t = await openDevice(parsed);
  const buffers: DmaBuffer[] = [];
  const pointers: DataPointer[] = [];
  let c: Controller | null = null;
  try {
    c = await Controller.open(t, { ioQueues: o.nqueues });
    if (c.maxIoQueuePairs < o.nqueues) {
      throw new RangeError(`--nqueues ${o.nqueues}: the controller grants only ${c.maxIoQueuePairs} I/O queue pairs`);
    }
    const ns = c.namespace(o.nsid);
    if (Number.isFinite(c.identity.mdts) && o.bs > c.identity.mdts) {
      throw new RangeError(`--bs ${o.bs} exceeds the controller's maximum transfer size of ${c.identity.mdts} bytes`);
    }
    const entries = o.qd + 1;
    if (entries > c.cap.maxQueueEntries) {
      throw new RangeError(`--qd ${o.qd} needs ${entries} queue entries; the controller allows ${c.cap.maxQueueEntries}`);
    }
    const qps: QueuePair[] = [];
    const engineBuffers: EngineBuffer[][] = [];
    for (let q = 0; q < o.nqueues; q++) {
      qps.push(await c.createQueuePair({ entries }));
      const buf = t.dma.alloc(o.qd * o.bs);
      buffers.push(buf);
      const slots: EngineBuffer[] = [];
      for (let s = 0; s < o.qd; s++) {
        const p = dataPointer(t.dma, buf, s * o.bs, o.bs);
        pointers.push(p);
        slots.push({ words: new Uint32Array(buf.bytes.buffer, buf.bytes.byteOffset + s * o.bs, o.bs >>> 2), prp1: p.prp1, prp2: p.prp2 });
      }
      engineBuffers.push(slots);
    }
    const result = await runEngine(qps, engineBuffers, {
      rw: o.rw,
      bs: o.bs,
      qd: o.qd,
      rwmixread: o.rwmixread,
      nsid: o.nsid,
      blockSize: ns.blockSize,
      blocks: ns.blocks,
      timeSec: o.timeSec,
      ios: o.ios,
      warmupSec: o.warmupSec,
      verify: o.verify,
      verifySpan: o.verifySpan,
      seed: o.seed,
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    });
    return {
      device: o.uri,
      transport: t.kind,
      backend: parsed.kind === 'emu' ? 'emu' : 'driver',
      threads: 1,
      rw: o.rw,
      bs: o.bs,
      qd: o.qd,
      nqueues: o.nqueues,
      nsid: o.nsid,
      blockSize: ns.blockSize,
      model: c.identity.model,
      ...result,
    };
  } finally {
    try {
      if (c) await c.close();
    } finally {
      for (const p of pointers) p.release();
      for (const b of buffers) t.dma.free(b);
      await t.close();
    }
  }
}
