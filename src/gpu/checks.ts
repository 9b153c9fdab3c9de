/**
 * What a GPU perf run is checked against before the GPU is touched: the target as its URI describes it (an
 * embedded controller's emu:// URI, or the GPU-resident controller's gpuctl:// URI; of a homid:<device> URI
 * only its form, the device being homid's to describe). Every refusal is a RangeError with one line that says why.
 */
import { parseDeviceUri } from '../device/uri.js';
import { EMU_DEFAULTS } from '../emu/config.js';
import { queryKeyProblem } from '../util/query.js';
import type { GpuPerfOptions } from './options.js';

/** The embedded controller's page: MDTS counts in these. */
const EMU_PAGE_BYTES = 4096;

/** The target of a GPU run, as its URI describes it. */
export interface GpuTargetFacts {
  kind: 'emu' | 'gpu-resident';
  uri: string;
  /** A null namespace keeps no data. */
  nullMode: boolean;
  blockSize: number;
  namespaceBytes: number;
  namespaces: number;
  /** I/O queue pairs the controller offers (null: no bound short of GPU memory). */
  maxQueuePairs: number | null;
  /** SQ/CQ entries per queue at most (null: no bound). */
  maxEntries: number | null;
  /** Largest transfer of one command (null: no bound). */
  maxTransferBytes: number | null;
}

/** The scheme of GPU leases from a running homid (src/gpu/perf.ts openHomidUri). */
const HOMID_SCHEME = 'homid:';
const HOMID_PARAMS = ['socket'] as const;

/** The target's facts; null for homid:<device> (known only once homid grants the leases: its URI's form is checked). */
export async function gpuTargetFacts(uri: string): Promise<GpuTargetFacts | null> {
  if (uri.startsWith(HOMID_SCHEME)) {
    const problem = queryKeyProblem(new URL(uri).searchParams, HOMID_PARAMS);
    if (problem !== null) throw new RangeError(`homid: URI: ${problem}`);
    return null;
  }
  if (uri.startsWith('gpuctl:')) {
    const r = (await import('./resident.js')).parseResidentUri(uri);
    return {
      kind: 'gpu-resident',
      uri,
      nullMode: r.nullMode,
      blockSize: 1 << r.lbads,
      namespaceBytes: r.sizeBytes,
      namespaces: 1,
      maxQueuePairs: null,
      maxEntries: null,
      maxTransferBytes: null,
    };
  }
  const u = parseDeviceUri(uri);
  if (u.kind !== 'emu') throw new RangeError(`--initiator gpu: '${uri}' is not an emu:// or gpuctl:// URI`);
  return {
    kind: 'emu',
    uri,
    nullMode: u.nullMode,
    blockSize: 1 << u.lbads,
    namespaceBytes: u.namespaceSize,
    namespaces: u.namespaces,
    maxQueuePairs: u.maxQueuePairs,
    maxEntries: EMU_DEFAULTS.mqes + 1,
    maxTransferBytes: EMU_DEFAULTS.mdts === 0 ? null : 2 ** EMU_DEFAULTS.mdts * EMU_PAGE_BYTES,
  };
}

/** Check one run (one sweep point) against its target; `entries` is the SQ/CQ size the run will use. */
export function checkGpuTarget(o: GpuPerfOptions, entries: number, t: GpuTargetFacts | null): void {
  if (o.uri.startsWith(HOMID_SCHEME) && (o.placement ?? 'host') !== 'host') {
    throw new RangeError('homid: GPU leases carry payloads in host memory (--placement device is for emu:// targets)');
  }
  if (t === null) return;
  if (o.verify === true && t.nullMode) {
    const hint = t.kind === 'gpu-resident' ? 'null=0 gives a namespace in GPU memory (gpuctl:// is null unless null=0)' : 'drop null=1 (a memory namespace)';
    throw new RangeError(`--verify: '${t.uri}' is a null namespace: it keeps no data, so no read can return what was written; ${hint}, or drop --verify`);
  }
  const nsid = o.nsid ?? 1;
  if (nsid > t.namespaces) throw new RangeError(`--nsid ${nsid}: '${t.uri}' has ${t.namespaces === 1 ? 'one namespace (nsid 1)' : `namespaces 1..${t.namespaces}`}`);
  if (o.bs % t.blockSize !== 0) throw new RangeError(`--bs ${o.bs} is not a multiple of the ${t.blockSize}-byte LBAs of '${t.uri}'`);
  if (o.bs > t.namespaceBytes) throw new RangeError(`--bs ${o.bs}: the namespace of '${t.uri}' holds only ${t.namespaceBytes} bytes`);
  if (t.maxTransferBytes !== null && o.bs > t.maxTransferBytes) throw new RangeError(`--bs ${o.bs} exceeds the controller's maximum transfer size of ${t.maxTransferBytes} bytes`);
  if (t.maxQueuePairs !== null && o.nqueues > t.maxQueuePairs) {
    throw new RangeError(`--nqueues ${o.nqueues}: the controller offers ${t.maxQueuePairs} I/O queue pairs (queues=N in the URI raises it)`);
  }
  if (t.maxEntries !== null && entries > t.maxEntries) throw new RangeError(`--entries ${entries}: the controller allows at most ${t.maxEntries} entries per queue`);
}
