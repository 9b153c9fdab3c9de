/**
 * `homi load` as a library: files into host or GPU memory through one of the read paths.
 *
 *   const r = await loadFiles(['/data/shards'], { path: 'io_uring', to: 'host' });
 *   r.view(0)            // the first file's bytes (host), or r.deviceAddress(0) (gpu)
 *   r.report             // files, bytes, seconds, MiB/s, per-file latency, errors
 *   r.close()            // frees the memory
 *
 * A caller with buffers of its own passes `sink` (any LoadSink: bytes are delivered into it).
 */
import { dropCaches } from './cache.js';
import { DEFAULT_CHUNK_BYTES, DEFAULT_DEPTH } from './defaults.js';
import { discover, type DiscoveryError } from './discover.js';
import { GpuSink } from './gpu-sink.js';
import { HostSink } from './host-sink.js';
import { runLoad, type LoadProgress, type LoadReport } from './runner.js';
import type { LoadFile, LoadPath, LoadPathEngine, LoadPathOptions, LoadSink, LoadTarget } from './types.js';

export * from './types.js';
export type { LoadReport, LoadProgress } from './runner.js';
export { HostSink } from './host-sink.js';
export { GpuSink } from './gpu-sink.js';
export { CallerSink } from './caller-sink.js';
export { discover, type Discovery, type DiscoveryError } from './discover.js';

export interface LoadOptions extends Partial<LoadPathOptions> {
  path: LoadPath;
  to?: LoadTarget;
  /** Compare every loaded file with a normal read. */
  verify?: boolean;
  /** Drop each file's page cache before the load (default: for buffered paths only). */
  cold?: boolean;
  /** GPU queue pairs of the gpu path. */
  queues?: number;
  /** Deliver into this sink instead of one made for `to`. */
  sink?: LoadSink;
  onProgress?: (p: LoadProgress) => void;
  progressMs?: number;
}

export interface Loaded {
  report: LoadReport;
  files: LoadFile[];
  sink: LoadSink;
  /** Host target: the bytes of file i. */
  view(i: number): Uint8Array;
  /** GPU target: the device address of file i. */
  deviceAddress(i: number): bigint;
  close(): void;
}

/** Open a read path (each module is loaded only when asked for: the gpu one needs no CUDA until used). */
export async function openLoadPath(path: LoadPath, o: LoadPathOptions & { queues?: number }): Promise<LoadPathEngine> {
  switch (path) {
    case 'posix':
      return (await import('./paths/posix.js')).openPosixPath(o);
    case 'io_uring':
      return (await import('./paths/io-uring.js')).openUringPath(o);
    case 'driver':
      return (await import('./paths/driver.js')).openDriverPath(o);
    case 'gpu':
      return (await import('./paths/gpu.js')).openGpuPath(o);
  }
}

/** Whether a path goes through the page cache (and so needs its cache dropped for a cold run). */
export function pathIsBuffered(path: LoadPath, direct: boolean): boolean {
  return path === 'posix' ? !direct : path === 'io_uring' ? !direct : false;
}

/** What the page cache meant for a run (for the report). */
export function cacheNote(path: LoadPath, direct: boolean, dropped: ReturnType<typeof dropCaches> | null): string {
  if (path === 'driver' || path === 'gpu') return "read from the device by homid's queue pairs: the host page cache is not in the path";
  if (direct) return 'O_DIRECT: the page cache is bypassed';
  if (dropped === null) return 'warm: the page cache was left as it was';
  return dropped.note === null ? `cold: the page cache of ${dropped.dropped} file(s) was dropped (mincore: 0 of ${dropped.pages} pages resident)` : `not entirely cold: ${dropped.note}`;
}

export async function loadFiles(inputs: readonly string[], o: LoadOptions): Promise<Loaded> {
  const { files, errors } = discover(inputs);
  return loadPlanned(files, errors, o);
}

/** Load files already planned (discover()) with their discovery errors. */
export async function loadPlanned(files: LoadFile[], errors: DiscoveryError[], o: LoadOptions): Promise<Loaded> {
  const direct = o.direct ?? o.path === 'io_uring';
  const popts: LoadPathOptions & { queues?: number } = {
    depth: o.depth ?? DEFAULT_DEPTH,
    chunkBytes: o.chunkBytes ?? DEFAULT_CHUNK_BYTES,
    direct,
    ...(o.socket !== undefined ? { socket: o.socket } : {}),
    ...(o.device !== undefined ? { device: o.device } : {}),
    ...(o.mode !== undefined ? { mode: o.mode } : {}),
    ...(o.queues !== undefined ? { queues: o.queues } : {}),
  };
  const engine = await openLoadPath(o.path, popts);
  let sink: LoadSink | null = o.sink ?? null;
  try {
    sink ??= (o.to ?? 'host') === 'gpu' ? new GpuSink(files) : new HostSink(files);
    const cold = o.cold ?? pathIsBuffered(o.path, direct);
    const dropped = cold && pathIsBuffered(o.path, direct) ? dropCaches(files.map((f) => f.path)) : null;
    const report = await runLoad(files, engine, sink, {
      verify: o.verify ?? false,
      cache: cacheNote(o.path, direct, dropped),
      errors,
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
      ...(o.progressMs !== undefined ? { progressMs: o.progressMs } : {}),
    });
    const s = sink;
    return {
      report,
      files,
      sink: s,
      view: (i) => {
        if (s instanceof HostSink) return s.view(i);
        throw new Error('view() is for the host target; the gpu target gives deviceAddress()');
      },
      deviceAddress: (i) => {
        if (s.deviceAddress) return s.deviceAddress(i);
        throw new Error('deviceAddress() is for the gpu target');
      },
      close: () => s.close(),
    };
  } catch (e) {
    if (!o.sink) sink?.close();
    throw e;
  } finally {
    await engine.close();
  }
}
