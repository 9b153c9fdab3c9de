/** What a ublk device's I/O thread (worker.ts) and homid say to each other. */

/** Index in the control Int32Array: non-zero asks the thread to leave. */
export const CTRL_STOP = 0;
export const CONTROL_WORDS = 1;

/** Per-queue counters the thread publishes (Float64Array, STATS_FIELDS per queue). */
export const StatsField = { reads: 0, writes: 1, flushes: 2, discards: 3, errors: 4, refused: 5, bytesRead: 6, bytesWritten: 7 } as const;
export const STATS_FIELDS = 8;

export type WorkerMessage =
  /** Every tag's FETCH_REQ is in the kernel: START_DEV / END_USER_RECOVERY may go. */
  | { type: 'ready' }
  | { type: 'warn'; message: string }
  /** The thread failed (before or while serving) and has released what it held. */
  | { type: 'error'; message: string }
  /** The thread left: every tag retired (the device stopped) or homid asked it to stop. */
  | { type: 'exit'; retired: number; stopped: boolean };
