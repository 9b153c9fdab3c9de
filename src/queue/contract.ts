/**
 * The queue contract: the one shape every initiator and every backend of HOMI shares.
 *
 * A queue is a submission/completion pair owned by one thread. Its fast path has three steps, kept apart so a
 * caller can batch: `submitIo` fills one slot (no doorbell), `ring` publishes everything queued since the last
 * ring (one doorbell write, or one system call on the kernel paths), and `poll` reaps completions and hands each
 * to one completion handler as `(tag, status, result)`. None of the three allocates, creates a Promise or makes
 * an FFI call per I/O on the paths that can avoid it.
 *
 * Who implements it: the driver's I/O queue pair (src/driver/queue-pair.ts), a queue pair attached in another
 * process (src/driver/attach.ts), the mediated client queue (src/client/mediated-queue.ts), and every backend of
 * the unified I/O API (src/io: posix, io_uring, io_uring_cmd, driver), whose IoQueue extends this contract.
 * Who drives it: the benchmark engine (src/bench/engine.ts), the I/O API's Promise helpers, and applications.
 *
 * This module sits directly above the protocol layer (src/nvme) and below everything that has queues, so the
 * driver, the backends, the client library and the benchmark can all import it without an upward import.
 */

/**
 * A completion status in HOMI's one status space (src/nvme/status.ts defines it). 0 is success; a value below
 * 0x8000 is the 15-bit NVMe status field of a CQE (SCT and SC; DNR and More included), as a controller posts it.
 * Host-side outcomes (a command timeout, a command lost to a controller reset, a removed device, homid gone, a
 * kernel errno on the kernel paths) are SCT 3 path-related statuses in bits 14:0 with their cause in bits 19:16
 * and the errno in bits 30:20: never negative. statusName(status) (and every device's statusName) names any value
 * of it. A number below 2^31, so that the completion path never boxes or allocates.
 */
export type QueueStatus = number;

/**
 * The completion handler: called once per completed command with the caller's tag (as given to submitIo), the
 * status (see QueueStatus) and the command-specific result (CQE dword 0 on NVMe paths; 0 where there is none).
 * The handler may submit new commands on the same queue; it must not call poll on it.
 */
export type CompletionHandler = (tag: number, status: QueueStatus, result: number) => void;

/** What submitIo returns when no slot is free right now (or the queue does not accept commands). */
export const QUEUE_FULL = -1;

/** The fast-path contract of one queue. */
export interface QueueContract {
  /** Commands the queue can hold in flight at once. */
  readonly capacity: number;
  /** Commands submitted and not yet delivered to a completion handler. */
  readonly outstanding: number;
  /**
   * Queue one command with an NVMe NVM opcode (read 0x02, write 0x01, flush 0x00, ...), namespace, starting LBA,
   * block count, the data pointer's two handles (PRP1/PRP2 on NVMe paths, address/buffer id on the kernel paths)
   * and a caller tag. Returns a non-negative command id when queued, QUEUE_FULL (-1) when no slot is free. Does not
   * publish: call ring() once after a batch.
   */
  submitIo(opcode: number, nsid: number, slba: number, nlb: number, h1: number, h2: number, tag: number): number;
  /** Publish every command queued since the last ring (the doorbell write / the submitting system call). */
  ring(): void;
  /** Reap up to `max` completions (default: all available), calling onComplete for each; returns how many. */
  poll(onComplete: CompletionHandler, max?: number): number;
}
