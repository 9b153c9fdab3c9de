/**
 * The byte layouts shared by host code and the CUDA kernels (src/gpu/kernels/nvme_queue.cuh and
 * gpu_controller.cu): each struct's size and field offsets, mirrored here. The headers mark each struct with
 * a `// HOMI_LAYOUT <name> <bytes>` line and each field with its offset in a comment; test/gpu/layout.test.ts
 * reads them and fails when the two sides disagree.
 */

export interface Field {
  readonly offset: number;
  readonly type: 'u32' | 'u64';
}
export interface Layout<F extends string> {
  readonly name: string;
  readonly bytes: number;
  readonly fields: Readonly<Record<F, Field>>;
}

const u64 = (offset: number): Field => ({ offset, type: 'u64' });
const u32 = (offset: number): Field => ({ offset, type: 'u32' });

export const HomiQueueState = {
  name: 'HomiQueueState',
  bytes: 64,
  fields: { ticket: u32(0), sq_lock: u32(4), tail_ticket: u32(8), cq_lock: u32(12), cq_head: u32(16), completed: u32(20), broken: u32(24) },
} as const satisfies Layout<string>;

export const HomiGpuQueue = {
  name: 'HomiGpuQueue',
  bytes: 128,
  fields: {
    sq: u64(0),
    cq: u64(8),
    sq_db: u64(16),
    cq_db: u64(24),
    data: u64(32),
    data_bus: u64(40),
    prp2: u64(48),
    state: u64(56),
    turn: u64(64),
    filled: u64(72),
    done: u64(80),
    status: u64(88),
    entries: u32(96),
    nsid: u32(100),
    lba_shift: u32(104),
    slot_bytes: u32(108),
    page_bytes: u32(112),
    flags: u32(116),
  },
} as const satisfies Layout<string>;

/** Latency histogram of HomiGpuResult: log-linear, 2^4 sub-buckets per power of two, in clock64 cycles. */
export const LAT_SUB_BITS = 4;
export const LAT_BUCKETS = 1024;
export const HomiGpuResult = {
  name: 'HomiGpuResult',
  bytes: 64 + 4 * LAT_BUCKETS,
  fields: {
    ios: u64(0),
    errors: u64(8),
    timeouts: u64(16),
    mismatches: u64(24),
    bytes: u64(32),
    lat_sum: u64(40),
    lat_max: u64(48),
    first_status: u32(56),
    first_mismatch_lba: u32(60),
    hist: u32(64),
  },
} as const satisfies Layout<string>;

export const HomiGpuJob = {
  name: 'HomiGpuJob',
  bytes: 80,
  fields: {
    queues: u64(0),
    result: u64(8),
    lba_base: u64(16),
    lba_span: u64(24),
    seed: u64(32),
    timeout_cycles: u64(40),
    nqueues: u32(48),
    ios_per_thread: u32(52),
    blocks_per_io: u32(56),
    read_percent: u32(60),
    flags: u32(64),
    threads_per_queue: u32(68),
  },
} as const satisfies Layout<string>;

/** One read of a file load (homi_list_io). */
export const HomiListCmd = {
  name: 'HomiListCmd',
  bytes: 48,
  fields: { slba: u64(0), dst: u64(8), start_ns: u64(16), end_ns: u64(24), nlb: u32(32), bytes: u32(36), file: u32(40), status: u32(44) },
} as const satisfies Layout<string>;

export const HomiListJob = {
  name: 'HomiListJob',
  bytes: 48,
  fields: { queues: u64(0), result: u64(8), cmds: u64(16), timeout_cycles: u64(24), nqueues: u32(32), ncmds: u32(36) },
} as const satisfies Layout<string>;
/** HomiListCmd.status before the launch, and when its wait timed out. */
export const LIST_NOT_RUN = 0xffffffff;
export const LIST_TIMEOUT = 0xfffffffe;

export const HomiCtrlQueue = {
  name: 'HomiCtrlQueue',
  bytes: 48,
  fields: { sq: u64(0), cq: u64(8), sq_db: u64(16), cq_db: u64(24), entries: u32(32), qid: u32(36), sq_head: u32(40), cq_tail: u32(44) },
} as const satisfies Layout<string>;

export const HomiCtrlJob = {
  name: 'HomiCtrlJob',
  bytes: 64,
  fields: {
    queues: u64(0),
    stop: u64(8),
    media: u64(16),
    ns_blocks: u64(24),
    stats: u64(32),
    nqueues: u32(40),
    lba_shift: u32(44),
    page_bytes: u32(48),
    nsid: u32(52),
  },
} as const satisfies Layout<string>;

export const LAYOUTS = [HomiQueueState, HomiGpuQueue, HomiGpuResult, HomiGpuJob, HomiListCmd, HomiListJob, HomiCtrlQueue, HomiCtrlJob] as const;

/** HomiGpuQueue.flags: queues and doorbells in GPU memory (GPU-scope ordering). */
export const QF_GPU_SCOPE = 1;
/** HomiGpuJob.flags. */
export const JOB_RANDOM = 1;
export const JOB_VERIFY = 2;

/** Values for one struct: numbers (u64 fields hold addresses below 2^53). */
export type Values<L extends Layout<string>> = Partial<Record<keyof L['fields'], number>>;

/** Encode one struct into `out` (default: a fresh zeroed buffer of its size) at `at`. */
export function encode<L extends Layout<string>>(layout: L, values: Values<L>, out: Uint8Array = new Uint8Array(layout.bytes), at = 0): Uint8Array {
  const dv = new DataView(out.buffer, out.byteOffset + at, layout.bytes);
  for (const [k, v] of Object.entries(values) as Array<[string, number | undefined]>) {
    if (v === undefined) continue;
    const f = (layout.fields as Record<string, Field>)[k];
    if (f === undefined) throw new RangeError(`${layout.name} has no field ${k}`);
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${layout.name}.${k}: ${v} is not a non-negative integer`);
    if (f.type === 'u32') {
      if (v > 0xffff_ffff) throw new RangeError(`${layout.name}.${k}: ${v} does not fit 32 bits`);
      dv.setUint32(f.offset, v, true);
    } else dv.setBigUint64(f.offset, BigInt(v), true);
  }
  return out;
}

/** Read one field of a struct in `bytes` at `at`. */
export function field<L extends Layout<string>>(layout: L, bytes: Uint8Array, name: keyof L['fields'] & string, at = 0): number {
  const f = (layout.fields as Record<string, Field>)[name]!;
  const dv = new DataView(bytes.buffer, bytes.byteOffset + at, layout.bytes);
  return f.type === 'u32' ? dv.getUint32(f.offset, true) : Number(dv.getBigUint64(f.offset, true));
}
