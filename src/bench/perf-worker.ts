/** One thread of a multi-threaded `homi perf`: opens the target itself, waits at the gate, runs, reports. */
import { parentPort, workerData } from 'node:worker_threads';
import { openIo } from '../io/open.js';
import { perfRegion, runPerf, type PerfOptions } from './perf.js';

interface Data {
  opts: PerfOptions;
  gate: Int32Array;
  verifySplit: boolean;
}

const { opts, gate, verifySplit } = workerData as Data;
const port = parentPort!;

async function main(): Promise<void> {
  const region = opts.region!;
  if (verifySplit) {
    // Disjoint regions for --verify: thread i owns blocks [i * span, (i + 1) * span) of the run's region.
    const probe = await openIo(opts.uri, { ...(opts.backend ? { backend: opts.backend } : {}), direct: opts.direct ?? false });
    const blocks = perfRegion(opts, probe.geometry).blocks;
    await probe.close();
    const span = Math.floor(blocks / region.count);
    region.base = region.index * span;
    region.blocks = span;
  }
  const r = await runPerf({
    ...opts,
    region,
    onProgress: (p) => port.postMessage({ type: 'progress', p }),
    beforeRun: () => {
      port.postMessage({ type: 'ready' });
      Atomics.wait(gate, 0, 0);
    },
  });
  port.postMessage({ type: 'result', r });
}

main().catch((e: unknown) => {
  const err = e instanceof Error ? e : new Error(String(e));
  port.postMessage({ type: 'error', name: err.name, message: err.message });
});
