/**
 * What a GPU perf run is asked for, and what it runs against (the targets: emu in perf.ts, gpuctl in
 * resident.ts, homid leases in homid.ts).
 */

export const GPU_MODES = ['block', 'ticket'] as const;
export type GpuMode = (typeof GPU_MODES)[number];
export const GPU_RW = ['read', 'write', 'randread', 'randwrite', 'randrw'] as const;
export type GpuRw = (typeof GPU_RW)[number];

export interface GpuPerfOptions {
  /** emu://... (the embedded controller) or gpuctl://... (the GPU-resident controller). */
  uri: string;
  mode: GpuMode;
  rw: GpuRw;
  bs: number;
  /** Commands in flight per queue: threads per queue (block mode: the block size). */
  qd: number;
  nqueues: number;
  /** SQ/CQ entries per queue (a power of two; above qd in block mode; default the smallest power of two > qd, at least 64). */
  entries?: number;
  /** Threads per block in ticket mode (default min(qd, 256)). */
  blockThreads?: number;
  /** Total I/Os (rounded up to whole I/Os per thread), or a time bound. */
  ios?: number | null;
  timeSec?: number | null;
  rwmixread?: number;
  verify?: boolean;
  /** Where payloads land: host memory read in place by GPU threads, or GPU memory (emulated P2P on emu). */
  placement?: 'host' | 'device';
  nsid?: number;
  seed?: number;
  /** Deadline of one wait in the kernels, ms (default 2000). */
  timeoutMs?: number;
  /** GPU ordinal (default 0). */
  gpu?: number;
  /** LBAs of the region used (default: the namespace, capped so that --verify's write pass is short). */
  spanBytes?: number;
  /** Progress lines (verify passes, calibration). */
  log?: (line: string) => void;
}

/** What a launch needs from the target: the queue table, and the namespace geometry. */
export interface GpuTarget {
  readonly kind: 'emu' | 'gpu-resident';
  readonly description: string;
  readonly table: number;
  readonly nqueues: number;
  readonly entries: number;
  readonly blockSize: number;
  readonly blocks: number;
  readonly placement: string;
  /** Counters of the controller since the target was opened. */
  counters(): Record<string, number>;
  /** Stop and release everything (after the last launch). */
  close(): Promise<void>;
  /** Queue health after a launch. */
  broken(): boolean;
}
