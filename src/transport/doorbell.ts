/**
 * Queue notifiers over memory-mapped doorbells (PCIe BAR0, the embedded controller's BAR, a client's mapped
 * doorbell page): the SQ tail / CQ head store, and for a controller that sleeps (src/emu/wake.ts) the wake that
 * follows it. Shared by the PCIe and emu transports and by queue pairs attached in another process
 * (src/driver/attach.ts). Each notifier is bound to one queue's two cells at creation, so a notification is one
 * Atomics.store (plus one Atomics.load of the wake word where there is one) and allocates nothing.
 *
 * Shadow doorbells (Doorbell Buffer Config, with EventIdx) would be one more QueueNotifier here: store the value
 * into the queue's shadow cell, and store into the doorbell register only when the controller's EventIdx for
 * that queue says it is waiting for a value in (old, new]; the buffers would be set up by the transport right
 * after the controller is enabled. Not implemented yet.
 */
import { WAKE_AWAKE, WAKE_SLEEPING } from '../emu/wake.js';
import { REG_CAP, REG_DOORBELL_BASE, cqHeadDoorbellOffset, decodeCap, sqTailDoorbellOffset } from '../nvme/registers.js';
import type { QueueNotifier } from './transport.js';

/** Bytes per doorbell cell (one 32-bit register). */
const CELL_BYTES = 4;

/** Wakes a controller that sleeps on a wake word (src/emu/wake.ts). */
export interface Waker {
  /** The wake word: reads WAKE_SLEEPING while the controller sleeps. */
  readonly word: Int32Array;
  /** Store WAKE_AWAKE and notify the sleeper (unconditionally: a caller checks the word first when it wants). */
  wake(): void;
}

/** The wake word in a SharedArrayBuffer (the controller thread waits with Atomics.wait). */
export class AtomicsWaker implements Waker {
  constructor(readonly word: Int32Array) {}
  wake(): void {
    Atomics.store(this.word, 0, WAKE_AWAKE);
    Atomics.notify(this.word, 0);
  }
}

/** The wake word in shared memory another process may map (the controller waits with a process-shared futex). */
export class FutexWaker implements Waker {
  /**
   * `address`: the word's virtual address in this process; `futexWake`: src/sys/shm.ts futexWake (passed in, so
   * that this module never loads the FFI).
   */
  constructor(
    readonly word: Int32Array,
    private readonly address: number,
    private readonly futexWake: (address: number, count: number) => number,
  ) {}
  wake(): void {
    Atomics.store(this.word, 0, WAKE_AWAKE);
    this.futexWake(this.address, 1);
  }
}

/** Hardware doorbells: a store is the notification. */
export class MmioDoorbells implements QueueNotifier {
  constructor(
    private readonly cells: Int32Array,
    private readonly sqCell: number,
    private readonly cqCell: number,
  ) {}
  sqTail(tail: number): void {
    Atomics.store(this.cells, this.sqCell, tail);
  }
  cqHead(head: number): void {
    Atomics.store(this.cells, this.cqCell, head);
  }
}

/** Doorbells of a controller that sleeps when idle: the store, then a wake if the wake word says it sleeps. */
export class WakingDoorbells implements QueueNotifier {
  private readonly word: Int32Array;
  constructor(
    private readonly cells: Int32Array,
    private readonly sqCell: number,
    private readonly cqCell: number,
    private readonly waker: Waker,
  ) {
    this.word = waker.word;
  }
  sqTail(tail: number): void {
    Atomics.store(this.cells, this.sqCell, tail);
    if (Atomics.load(this.word, 0) === WAKE_SLEEPING) this.waker.wake();
  }
  cqHead(head: number): void {
    Atomics.store(this.cells, this.cqCell, head);
    if (Atomics.load(this.word, 0) === WAKE_SLEEPING) this.waker.wake();
  }
}

/**
 * The notifier of queue `qid` over `cells` (32-bit cells from BAR0 offset REG_DOORBELL_BASE on), with doorbells
 * `stride` bytes apart; `waker` for a controller that sleeps, null for hardware. Throws RangeError when the
 * queue's doorbells lie beyond the cells.
 */
export function doorbellNotifier(cells: Int32Array, qid: number, stride: number, waker: Waker | null): QueueNotifier {
  const sqCell = (sqTailDoorbellOffset(qid, stride) - REG_DOORBELL_BASE) / CELL_BYTES;
  const cqCell = (cqHeadDoorbellOffset(qid, stride) - REG_DOORBELL_BASE) / CELL_BYTES;
  if (cqCell >= cells.length) throw new RangeError(`doorbell index ${cqCell} is beyond the transport's ${cells.length} doorbell cells`);
  return waker === null ? new MmioDoorbells(cells, sqCell, cqCell) : new WakingDoorbells(cells, sqCell, cqCell, waker);
}

/** What a register reads on a device that is gone. */
const ALL_ONES = 0xffffffff;

/** The doorbell stride in bytes from CAP.DSTRD, read through `read32`. Throws RangeError when CAP reads all ones. */
export function doorbellStrideOf(read32: (offset: number) => number): number {
  const lo = read32(REG_CAP) >>> 0;
  const hi = read32(REG_CAP + 4) >>> 0;
  if (lo === ALL_ONES && hi === ALL_ONES) throw new RangeError('CAP reads all ones (the device is gone): no doorbell stride');
  return decodeCap(lo, hi).doorbellStride;
}
