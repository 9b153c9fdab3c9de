/**
 * `homi load`: files into host or GPU memory. The contract between the runner (runner.ts: discovery, stats,
 * progress, verify, per-file errors), the read paths (paths/*.ts: how bytes leave the device) and the sinks
 * (sinks.ts: where bytes go).
 *
 * A path reads file bytes into memory of its own (staging: registered io_uring buffers, a queue pair's DMA
 * memory) and hands each finished chunk to the sink with deliver(); the sink copies it to its destination (host:
 * the file's slot in one pinned arena; gpu: device memory through the copy engine) before deliver() returns, so
 * the path may reuse its staging memory at once. A path that can write straight into the destination (the gpu
 * path into device memory) asks the sink for it instead (LoadSink.direct).
 *
 * Errors are per file: a path reports a file that failed with fileDone(i, error) and goes on with the rest; only
 * an error that stops every file (the device is gone, homid refused the lease) rejects run().
 */

export const LOAD_PATHS = ['posix', 'io_uring', 'driver', 'gpu'] as const;
export type LoadPath = (typeof LOAD_PATHS)[number];
export const LOAD_TARGETS = ['host', 'gpu'] as const;
export type LoadTarget = (typeof LOAD_TARGETS)[number];

/** One file to load, as the runner planned it (stat taken before the load). */
export interface LoadFile {
  /** Index in the plan: the key every callback uses. */
  readonly index: number;
  /** Absolute path. */
  readonly path: string;
  /** Size in bytes at plan time. */
  readonly size: number;
  /** st_dev / st_ino / st_mtimeMs at plan time (a change during the load fails the file). */
  readonly dev: number;
  readonly ino: number;
  readonly mtimeMs: number;
}

/** Where file bytes go. */
export interface LoadSink {
  readonly target: LoadTarget;
  /** One line for reports, e.g. "pinned host memory (mlock)", "GPU memory (cuMemcpyHtoD from registered staging)". */
  readonly describe: string;
  /**
   * The path's staging memory, handed over once before any deliver() from it (the gpu sink registers it with
   * CUDA so copies run at DMA speed; it needs the memory's virtual address for that, and copies from
   * pageable memory without it). Optional to call; deliver() works on any memory.
   */
  adoptStaging(mem: Uint8Array, address?: number): void;
  /** Bytes [offset, offset + data.length) of file `file` are in `data`; copied before this returns. */
  deliver(file: number, offset: number, data: Uint8Array): void;
  /** Every byte delivered so far has landed (gpu: the stream is synchronized). */
  drain(): void;
  /** The loaded bytes of a file, read back to the host (for --verify). */
  readBack(file: number): Uint8Array;
  /**
   * Virtual address of file `file`'s destination in this process, page-aligned and sized to the file rounded up
   * to 4 KiB, for paths that can read straight into it (host target): the bytes then need no deliver().
   */
  hostAddress?(file: number): number;
  /**
   * A path that read straight into hostAddress() says which bytes are there: [offset, offset + length) of file
   * `file` (the gpu sink then copies them on to GPU memory, asynchronously; drain() waits for the copies).
   */
  landed?(file: number, offset: number, length: number): void;
  /** Device address of file `file`'s destination, for paths that write there themselves (gpu target only). */
  deviceAddress?(file: number): bigint;
  close(): void;
}

/** What a path tells the runner while it works (all synchronous, allocation-free where the path is hot). */
export interface LoadEvents {
  /** The path starts reading file `file` (latency runs from here). */
  fileStart(file: number): void;
  /**
   * File `file` is finished: every byte delivered (error null), or it failed (the rest of the load goes on).
   * A path that timed the file itself (the gpu path, on the GPU's clock) passes its latency in milliseconds.
   */
  fileDone(file: number, error: Error | null, latencyMs?: number): void;
  /** `n` more bytes were delivered (progress). */
  bytes(n: number): void;
}

/** Options every path receives (a path refuses, at open, an option it cannot honour). */
export interface LoadPathOptions {
  /** I/Os in flight (queue depth). */
  depth: number;
  /** Largest single read in bytes (the path may use less: MDTS, the kernel's limits). */
  chunkBytes: number;
  /** posix / io_uring: O_DIRECT (io_uring's default is true; posix's false). */
  direct: boolean;
  /** driver / gpu: homid socket and device name. */
  socket?: string;
  device?: string;
  /** driver: raw (the queue pair in this process) or mediated lease. */
  mode?: 'raw' | 'mediated';
}

export interface LoadPathEngine {
  readonly path: LoadPath;
  /** What really runs, for every report (never a silent fallback), e.g. "io_uring O_DIRECT, registered buffers, qd 64, 1 MiB reads". */
  readonly describe: string;
  /**
   * Set-up that belongs before the clock (queue leases, GPU registrations, kernel modules), given the files and
   * the sink; the runner reports its duration apart (setupSeconds). Optional.
   */
  prepare?(files: readonly LoadFile[], sink: LoadSink): Promise<void>;
  /** Read every file of `files` into `sink`, reporting through `events`. Resolves when all are done (ok or failed). */
  run(files: readonly LoadFile[], sink: LoadSink, events: LoadEvents): Promise<void>;
  close(): Promise<void>;
}

/** A file that could not be loaded; `file` is its plan index (or -1 for an argument that named no file). */
export class LoadFileError extends Error {
  constructor(
    readonly filePath: string,
    readonly reason: string,
  ) {
    super(`${filePath}: ${reason}`);
    this.name = 'LoadFileError';
  }
}
