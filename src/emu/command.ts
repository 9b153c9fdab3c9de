/**
 * The boundary between the embedded controller (controller.ts) and its command handlers (admin.ts, io.ts): what
 * a handler may read and do (AdminTarget, IoTarget: read-only state and named operations), and what it hands
 * back (its status as the return value, the rest in a CommandOutcome). Handlers never write controller fields;
 * the controller applies an outcome when it posts the completion. This module imports neither side, so the
 * controller and its handlers do not import each other in a loop.
 */
import type { DmaSegmentTable } from '../mem/shared-dma.js';
import type { EmuConfig } from './config.js';
import type { DataPath } from './datapath.js';
import type { ErrorEntry, SmartCounters } from './logs.js';
import type { Namespace } from './namespace.js';
import type { CompletionQueue, SubmissionQueue } from './queues.js';

/** CommandOutcome.transfer: the command moved no user data (admin commands, Flush, ...). */
export const TRANSFER_NONE = 0;
/** CommandOutcome.transfer: a Read (counted in the SMART log's host reads). */
export const TRANSFER_READ = 1;
/** CommandOutcome.transfer: a Write (counted in the SMART log's host writes). */
export const TRANSFER_WRITE = 2;

/**
 * What a handler hands back besides its status. One instance is reused for every command (the fast path
 * allocates nothing): the controller clears it before a handler runs and reads it after.
 */
export class CommandOutcome {
  /** CQE dword 0. */
  result = 0;
  /** The LBA an error-log entry names when the command fails on one (0: none). */
  errorLba = 0;
  /** TRANSFER_NONE, TRANSFER_READ or TRANSFER_WRITE. */
  transfer = TRANSFER_NONE;
  /** Data transferred by a Read or Write, in 512-byte units (the SMART data units' base). */
  units512 = 0;

  clear(): void {
    this.result = 0;
    this.errorLba = 0;
    this.transfer = TRANSFER_NONE;
    this.units512 = 0;
  }
}

/** What the NVM command set handlers (io.ts) read: namespaces, limits, the data path. */
export interface IoTarget {
  /** Namespaces by NSID (slot 0 unused). */
  readonly ns: ReadonlyArray<Namespace | undefined>;
  /** Number of namespaces (NN). */
  readonly nn: number;
  /** Null backing: commands succeed without moving data. */
  readonly nullMode: boolean;
  /** Largest data transfer in bytes. */
  readonly mdtsBytes: number;
  readonly dp: DataPath;
  /** Flush every namespace's backing store. */
  flushAll(): void;
}

/** What the admin command set handlers (admin.ts) read, and the controller operations they may ask for. */
export interface AdminTarget extends IoTarget {
  readonly cfg: EmuConfig;
  readonly dma: DmaSegmentTable;
  /** Host memory page size (CC.MPS). */
  readonly pageSize: number;
  /** CC.IOSQES / CC.IOCQES as last enabled. */
  readonly iosqes: number;
  readonly iocqes: number;
  /** Queues by qid (undefined where none exists). */
  readonly sqs: ReadonlyArray<SubmissionQueue | undefined>;
  readonly cqs: ReadonlyArray<CompletionQueue | undefined>;
  /** Number of Queues as allocated (0's based counts of I/O SQs and CQs). */
  readonly nsqa: number;
  readonly ncqa: number;
  /** Volatile Write Cache: 1 enabled, 0 disabled. */
  readonly volatileWriteCache: number;
  /** Arbitration feature value. */
  readonly arbitration: number;
  /** Error Information log, newest first. */
  readonly errorLog: readonly ErrorEntry[];

  addSq(sq: SubmissionQueue): void;
  addCq(cq: CompletionQueue): void;
  /** Delete an SQ: its outstanding commands complete with "Command Aborted due to SQ Deletion". */
  deleteSq(sq: SubmissionQueue): void;
  deleteCq(cq: CompletionQueue): void;
  /** Set Features Number of Queues: the counts allocated (0's based). */
  setQueueCounts(nsqa: number, ncqa: number): void;
  /** Set Features Volatile Write Cache (disabling it flushes). */
  setVolatileWriteCache(enabled: number): void;
  setArbitration(value: number): void;
  /** Abort of (sqid, cid): true when the command will complete as aborted. */
  abortCommand(sqid: number, cid: number): boolean;
  /** The oldest queued asynchronous event's result, or -1 when none is queued. */
  takeAsyncEvent(): number;
  /** Park an Asynchronous Event Request until an event comes; false when AER_LIMIT requests are parked. */
  parkAsyncEventRequest(cid: number): boolean;
  /** The SMART / Health counters as of now. */
  smart(): SmartCounters;
}
