/**
 * Messages between homid's main thread and its resolver threads (resolver.ts, resolve-worker.ts), and the
 * layout of the shared buffer through which a resolver thread's decoder reads namespace blocks that the main
 * thread fetches on homid's metadata queue pair.
 *
 * Block channel (one SharedArrayBuffer per resolver thread), Int32 words:
 *   [0] state   CH_PENDING while a read is asked for; CH_DONE or CH_FAILED when the main thread answered
 *   [1] seq     sequence number of the read being answered (the worker checks it against its request)
 *   [2] reason  on CH_FAILED: 1 status, 2 timeout, 3 queue, 4 other
 *   [3] status  on CH_FAILED: the NVMe / driver status (-1 when none)
 *   [4] message length in bytes (UTF-8) at CH_MESSAGE_OFFSET
 * then the message area, then the data area (CH_DATA_OFFSET, CH_DATA_BYTES bytes).
 */
import type { FileMap } from '../extents/types.js';
import type { HomidErrorCode } from './errors.js';
import type { PlacementTarget } from './placement.js';

export const CH_PENDING = 0;
export const CH_DONE = 1;
export const CH_FAILED = 2;
export const CH_STATE = 0;
export const CH_SEQ = 1;
export const CH_REASON = 2;
export const CH_STATUS = 3;
export const CH_MESSAGE_LEN = 4;
export const CH_HEADER_BYTES = 64;
export const CH_MESSAGE_OFFSET = CH_HEADER_BYTES;
export const CH_MESSAGE_BYTES = 1024;
export const CH_DATA_OFFSET = CH_MESSAGE_OFFSET + CH_MESSAGE_BYTES;
/** One block read of a resolver thread at most (larger reads are split): the metadata queue's largest read. */
export const CH_DATA_BYTES = 256 * 1024;
export const CH_TOTAL_BYTES = CH_DATA_OFFSET + CH_DATA_BYTES;

export const READ_REASONS = ['status', 'timeout', 'queue', 'other'] as const;
export type ReadReason = (typeof READ_REASONS)[number];

/** How a decoder job reads namespace 1. */
export type JobSource =
  /** A file-backed emu:// device: its image file, read by the worker directly. */
  | { kind: 'file'; path: string }
  /** Through homid's metadata queue pair: the worker asks the main thread for blocks. */
  | { kind: 'device'; size: number; blockSize: number; maxReadBytes: number; timeoutMs: number };

export type ResolveJob =
  | {
      kind: 'fiemap';
      /** homid's duplicate of the client's descriptor (descriptor numbers are process-wide). */
      fd: number;
      /** Path for messages. */
      path: string;
      target: PlacementTarget;
    }
  | {
      kind: 'decoder';
      fd: number;
      path: string;
      /** homid's name of the device (for messages). */
      device: string;
      fs: 'ext4' | 'xfs';
      /** The file's path inside the image. */
      imagePath: string;
      source: JobSource;
    };

/** Main thread to worker. */
export interface JobMessage {
  type: 'job';
  id: number;
  job: ResolveJob;
}

/** Worker to main thread. */
export type WorkerMessage =
  | { type: 'read'; id: number; seq: number; offset: number; length: number }
  | { type: 'done'; id: number; map: FileMap; via: string | null }
  | { type: 'failed'; id: number; code: HomidErrorCode; message: string };

export interface WorkerInit {
  channel: SharedArrayBuffer;
}
