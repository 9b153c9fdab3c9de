/**
 * Configuration of the embedded NVMe controller, and the layout of the shared control block that the
 * host-side transport (src/transport/emu.ts) and the controller worker (src/emu/worker.ts) both use.
 * Everything in EmuConfig is structured-clonable: it travels to the worker as workerData.
 */
import { REG_DOORBELL_BASE } from '../nvme/registers.js';

export interface EmuNamespaceConfig {
  /** Namespace size in bytes (a multiple of the LBA data size). */
  sizeBytes: number;
  /** log2 of the LBA data size: 9 (512 B) or 12 (4 KiB). */
  lbads: 9 | 12;
}

/** A memory namespace's smallest chunk (allocated on its first write): 1 MiB. */
export const MEMORY_MIN_CHUNK_SHIFT = 20;
/** Chunks per memory namespace at most (the chunk size grows with the namespace to stay below this). */
export const MEMORY_MAX_CHUNKS = 1 << 16;
/** A memory namespace's largest chunk: 1 GiB (one Buffer). */
export const MEMORY_MAX_CHUNK_SHIFT = 30;
/** The largest memory namespace: 64 TiB (file-backed and null namespaces have no such bound). */
export const MAX_MEMORY_NAMESPACE_BYTES = MEMORY_MAX_CHUNKS * 2 ** MEMORY_MAX_CHUNK_SHIFT;

/** 'memory': RAM in the worker; 'null': no data kept (like null_blk); { file }: a file holding all namespaces back to back. */
export type EmuBacking = 'memory' | 'null' | { file: string };

export interface EmuConfig {
  namespaces: EmuNamespaceConfig[];
  backing: EmuBacking;
  /** Number of I/O queue pairs the controller supports (I/O qids 1..maxQueuePairs). */
  maxQueuePairs: number;
  /** CAP.MQES: maximum queue entries, 0's based (1023 = 1024 entries). */
  mqes: number;
  serial: string;
  model: string;
  firmware: string;
  vendorId: number;
  subsystemVendorId: number;
  /** Controller ID reported by Identify. */
  cntlid: number;
  /** MDTS in units of the minimum page size (2^mdts pages); 0 = no limit. */
  mdts: number;
  /** Delay between CC.EN=1 and CSTS.RDY=1. */
  readyDelayMs: number;
  /** CAP.TO in 500 ms units. */
  timeoutUnits: number;
  /** Idle time spent spinning before sleeping on the wake word, in microseconds. */
  spinUs: number;
  /** Upper bound of the adaptive idle spin (the spin doubles each time a doorbell wakes the controller), microseconds. */
  spinMaxUs: number;
  /** Longest sleep between polls of CC while idle, in milliseconds. */
  sleepMs: number;
}

export const EMU_DEFAULTS: Omit<EmuConfig, 'namespaces' | 'backing'> = {
  maxQueuePairs: 64,
  mqes: 1023,
  serial: 'HOMIEMU0001',
  model: 'HOMI Embedded NVMe Controller',
  firmware: '0.1.0',
  vendorId: 0x1b36, // the id QEMU's emulated devices use (Red Hat); harmless for a software device
  subsystemVendorId: 0x1af4,
  cntlid: 1,
  mdts: 5,
  readyDelayMs: 0,
  timeoutUnits: 2,
  spinUs: 50,
  spinMaxUs: 2000,
  sleepMs: 5,
};

/** Size of BAR0 for a controller with `maxQueuePairs` I/O queue pairs (doorbell stride 4 bytes). */
export function barSize(maxQueuePairs: number): number {
  return REG_DOORBELL_BASE + 8 * (maxQueuePairs + 1);
}

/** Number of 32-bit doorbell cells (SQ tail + CQ head per queue, admin included). */
export function doorbellCells(maxQueuePairs: number): number {
  return 2 * (maxQueuePairs + 1);
}

// ---- Control block: an Int32Array over a small SharedArrayBuffer ----

/** Wake word (see src/transport/transport.ts). */
export const CTL_WAKE = 0;
/** Incremented by the host after posting a control message to the worker's mailbox. */
export const CTL_SEQ = 1;
/** Set by the worker to the last CTL_SEQ value whose messages it processed. */
export const CTL_ACK = 2;
/** Set to 1 by the host to ask the worker to stop. */
export const CTL_STOP = 3;
/** Worker state, one of WORKER_*. */
export const CTL_STATE = 4;
/**
 * Holders of "stay awake": while it is above zero the controller busy-polls and never sleeps on the wake word
 * (a GPU feeding a queue cannot futex-wake a thread; see EmuTransport.holdAwake).
 */
export const CTL_AWAKE_HOLDS = 5;
/**
 * Emulated P2P: incremented (and notified) by the worker after it posted an 'addWindow' answer to its mailbox, so
 * the host can wait for the answer synchronously (EmuTransport.addDeviceWindow).
 */
export const CTL_WINDOW_ANSWERS = 6;
/** Int32 cells in the control block before the statistics. */
export const CTL_INT_CELLS = 16;
/** Byte offset of the Float64 statistics in the control block. */
export const CTL_STATS_BYTE_OFFSET = CTL_INT_CELLS * 4;

export const WORKER_STARTING = 0;
export const WORKER_RUNNING = 1;
export const WORKER_STOPPED = 2;
export const WORKER_CRASHED = 3;

/** Float64 statistics cells. */
export const STAT_COMMANDS = 0;
export const STAT_ADMIN_COMMANDS = 1;
export const STAT_IO_COMMANDS = 2;
export const STAT_READS = 3;
export const STAT_WRITES = 4;
export const STAT_ERRORS = 5;
export const STAT_SLEEPS = 6;
export const STAT_INVALID_DOORBELLS = 7;
/** Emulated P2P (device windows, src/emu/device-window.ts): bytes and copies from the shadow to device memory. */
export const STAT_EP2P_BYTES_TO_DEVICE = 8;
export const STAT_EP2P_COPIES_TO_DEVICE = 9;
/** Emulated P2P: bytes and copies from device memory into the shadow (writes whose data is in a window). */
export const STAT_EP2P_BYTES_FROM_DEVICE = 10;
export const STAT_EP2P_COPIES_FROM_DEVICE = 11;
/** Emulated P2P: copy fences recorded (one per polling round and window that issued copies to the device). */
export const STAT_EP2P_FENCES = 12;
/** Emulated P2P: failed copies and fences (each completes its commands with Data Transfer Error). */
export const STAT_EP2P_ERRORS = 13;
export const STAT_CELLS = 16;

export const CONTROL_BLOCK_BYTES = CTL_STATS_BYTE_OFFSET + STAT_CELLS * 8;

/**
 * A DMA segment for the controller: a SharedArrayBuffer (in-process mode), or a memfd the worker maps
 * (memfd mode: fd numbers are process-wide, so the worker thread maps the very fd the host created).
 */
/** A DMA segment: a SharedArrayBuffer, or an fd the controller maps (a sealed memfd, or a dma-buf when `dmabuf`). */
export type SegmentSource = { index: number; sab: SharedArrayBuffer } | { index: number; fd: number; size: number; dmabuf?: boolean };

/**
 * What a device window (emulated P2P, src/emu/device-window.ts) stands for:
 * - 'cuda': `bytes` of device memory at device pointer `dptr` (cuMemAlloc memory in the primary context of
 *   device `ordinal`, in this process); the controller worker copies with the CUDA copy engine.
 * - 'memory': the test double: a SharedArrayBuffer playing device memory, copies by TypedArray.set, each
 *   counting as done `copyDelayMs` after its fence (default 0); `failCopies` makes every copy fail (as a copy
 *   engine error would), to test the error path.
 */
export type DeviceWindowTarget = { kind: 'cuda'; ordinal: number; dptr: number } | { kind: 'memory'; memory: SharedArrayBuffer; copyDelayMs?: number; failCopies?: boolean };

/** Messages posted to the worker's mailbox. */
export type ControlMessage =
  | ({ type: 'segment' } & SegmentSource)
  | { type: 'dropSegment'; index: number }
  | { type: 'inject'; rule: import('./faults.js').FaultRule }
  | { type: 'clearFaults' }
  | { type: 'setFatal' }
  /**
   * Make the first `bytes` of (known) segment `index`, the shadow, a device window; answered by a WindowAnswer
   * posted back on the mailbox (then CTL_WINDOW_ANSWERS is bumped).
   */
  | { type: 'addWindow'; index: number; bytes: number; target: DeviceWindowTarget }
  /** Settle the window's outstanding copies, complete the commands waiting on them, forget the window. */
  | { type: 'dropWindow'; index: number };

/** The answer to 'addWindow', posted back on the mailbox: error null when the window is live. */
export interface WindowAnswer {
  type: 'window';
  index: number;
  error: { name: string; message: string; code?: string } | null;
}

/** Messages the worker posts to the host through parentPort (besides 'ready' / 'error' at start). */
export type WorkerMessage =
  /** Something the controller wants a person to read (a failed copy, ...). */
  { type: 'log'; message: string };

/** Data handed to the worker at start. */
export interface WorkerInit {
  config: EmuConfig;
  /** BAR0 in a SharedArrayBuffer (in-process mode), or null in memfd mode (see `shm`). */
  bar: SharedArrayBuffer | null;
  control: SharedArrayBuffer;
  mailbox: import('node:worker_threads').MessagePort;
  segments: SegmentSource[];
  /**
   * memfd mode: BAR0 lives in the memfd `barFd` (`barBytes` mapped), and the wake word is the 32-bit cell at
   * `wakeOffset` of that memfd: the controller sleeps on it with a process-shared futex, so a driver in any
   * process that maps the BAR can wake it (CTL_WAKE of the control block is unused).
   */
  shm?: { barFd: number; barBytes: number; wakeOffset: number } | null;
}

/** BAR memfd layout in memfd mode: BAR0 (registers, doorbells) padded to a page, then a page with the wake word. */
export function shmBarLayout(maxQueuePairs: number): { barBytes: number; wakeOffset: number; totalBytes: number } {
  const barBytes = barSize(maxQueuePairs);
  const wakeOffset = Math.ceil(barBytes / 4096) * 4096;
  return { barBytes, wakeOffset, totalBytes: wakeOffset + 4096 };
}

/** Validate and complete a partial configuration; throws RangeError with the field name. */
export function resolveConfig(c: Partial<EmuConfig> & Pick<EmuConfig, 'namespaces' | 'backing'>): EmuConfig {
  const cfg: EmuConfig = { ...EMU_DEFAULTS, ...stripUndefined(c) } as EmuConfig;
  if (!Array.isArray(cfg.namespaces) || cfg.namespaces.length === 0) throw new RangeError('namespaces: at least one is required');
  if (cfg.namespaces.length > 1024) throw new RangeError('namespaces: at most 1024');
  cfg.namespaces.forEach((ns, i) => {
    if (ns.lbads !== 9 && ns.lbads !== 12) throw new RangeError(`namespaces[${i}].lbads must be 9 or 12`);
    const bs = 1 << ns.lbads;
    if (!Number.isSafeInteger(ns.sizeBytes) || ns.sizeBytes < bs || ns.sizeBytes % bs !== 0) {
      throw new RangeError(`namespaces[${i}].sizeBytes must be a positive multiple of ${bs}`);
    }
    if (cfg.backing === 'memory' && ns.sizeBytes > MAX_MEMORY_NAMESPACE_BYTES) {
      throw new RangeError(`namespaces[${i}].sizeBytes: a memory namespace holds at most ${MAX_MEMORY_NAMESPACE_BYTES} bytes (64 TiB)`);
    }
  });
  if (!Number.isInteger(cfg.maxQueuePairs) || cfg.maxQueuePairs < 1 || cfg.maxQueuePairs > 0xfffe) {
    throw new RangeError('maxQueuePairs must be in [1, 65534]');
  }
  if (!Number.isInteger(cfg.mqes) || cfg.mqes < 1 || cfg.mqes > 0xffff) throw new RangeError('mqes must be in [1, 65535]');
  if (!Number.isInteger(cfg.mdts) || cfg.mdts < 0 || cfg.mdts > 15) throw new RangeError('mdts must be in [0, 15]');
  const b = cfg.backing;
  if (b !== 'memory' && b !== 'null' && !(typeof b === 'object' && b !== null && typeof b.file === 'string')) {
    throw new RangeError("backing must be 'memory', 'null' or { file }");
  }
  return cfg;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const r: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (r as Record<string, unknown>)[k] = v;
  return r;
}
