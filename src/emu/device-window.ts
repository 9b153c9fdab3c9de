/**
 * Emulated P2P: device windows of the embedded controller. A software controller cannot DMA into GPU memory, so
 * a window is a range of the controller's IOVA space that stands for device memory, backed by a host "shadow"
 * segment at the window's IOVA: the data path (datapath.ts) moves bytes into and out of the shadow unchanged,
 * and a copier moves them between the shadow and device memory:
 *
 * - Read (controller -> host memory): once the data is in the shadow, the controller starts a copy shadow ->
 *   device for each chunk of the window the command touched and holds the completion until the copies are done.
 *   All copies a window gets in one polling round share one fence (a CUDA event), recorded at the round's end.
 * - Write (host memory -> controller): the scanner copies device -> shadow synchronously, right after the data
 *   pointer is mapped and before the data path reads the shadow.
 *
 * A failed copy or fence marks the window failed (sticky: a copy engine error leaves the stream unusable): the
 * commands waiting on it, and every later command touching it, complete with Data Transfer Error, and the
 * controller logs the cause once. Nothing waits forever.
 *
 * Copiers: memory-copier.ts (the test double: a SharedArrayBuffer playing device memory) and cuda-copier.ts (the
 * CUDA copy engine), which the controller imports dynamically, only when a cuda window is added.
 */
import { SEGMENT_SPAN } from '../mem/shared-dma.js';
import { ST_DATA_TRANSFER, type DataPath, type WindowScanner } from './datapath.js';

/** Moves bytes between a window's shadow and its device memory; offsets are relative to the window's start. */
export interface DeviceCopier {
  /** What the window stands for, in messages ("cuda device 0", "memory test double"). */
  readonly label: string;
  /** Start copying shadow [off, off + len) to device [off, off + len); done at a later fence. Throws on failure. */
  toDevice(off: number, len: number): void;
  /** Copy device [off, off + len) into the shadow; done when this returns. Throws on failure. */
  fromDevice(off: number, len: number): void;
  /** Record a fence after every copy started so far; returns its number (1, 2, ...: fences complete in order). */
  fence(): number;
  /** The number of the last fence whose copies are all done (0: none yet). Throws when a copy failed. */
  completed(): number;
  /** Wait until every copy started so far is done (fencing them first). Throws when a copy failed. */
  drain(): void;
  /** Release what the copier holds (streams, events, registrations). */
  close(): void;
}

/** The fence a window's copies of one polling round share; commands hold it until it is done. */
export class Fence {
  /** The copier's fence number; -1 until the round ends. */
  seq = -1;
  /** The fence could not be recorded. */
  failed = false;
  constructor(readonly w: DeviceWindow) {}
}

/** One device window: segment `index` of the DMA table is its shadow, the first `bytes` of it. */
export class DeviceWindow {
  /** The last fence the copier reported done. */
  doneSeq = 0;
  /** The last fence recorded. */
  lastSeq = 0;
  /** Why the window failed (sticky), or null. */
  error: string | null = null;
  /** This polling round's fence, while the round has started copies to the device. */
  roundFence: Fence | null = null;
  constructor(
    readonly index: number,
    readonly bytes: number,
    readonly copier: DeviceCopier,
  ) {}
  /** IOVA of the window's first byte. */
  get iova(): number {
    return this.index * SEGMENT_SPAN;
  }
  /** Fences recorded but not yet reported done (and not failed). */
  get outstanding(): boolean {
    return this.error === null && this.doneSeq < this.lastSeq;
  }
}

/** fencesState: every copy is done. */
export const COPIES_DONE = 0;
/** fencesState: some copy is still running. */
export const COPIES_PENDING = 1;
/** fencesState: some copy failed. */
export const COPIES_FAILED = 2;

/** Where the copies a command waits for stand. */
export function fencesState(fences: readonly Fence[]): number {
  for (let i = 0; i < fences.length; i++) {
    const f = fences[i]!;
    if (f.failed) return COPIES_FAILED;
    if (f.seq >= 0 && f.w.doneSeq >= f.seq) continue;
    if (f.w.error !== null) return COPIES_FAILED;
    return COPIES_PENDING;
  }
  return COPIES_DONE;
}

/**
 * The controller's device windows by segment index, and the data path's window scanner: chunks of a read in a
 * window are recorded (hitWin / hitOff / hitLen, `dp.windowHits` counts them) for the controller to copy to the
 * device once the data is in the shadow; chunks of a write are filled from the device at once.
 */
export class DeviceWindows implements WindowScanner {
  /** Windows by DMA segment index. */
  private readonly bySeg: Array<DeviceWindow | undefined> = [];
  /** Live windows. */
  readonly list: DeviceWindow[] = [];
  /** Recorded chunks to copy to the device: window, offset in the window, length. */
  readonly hitWin: DeviceWindow[] = [];
  readonly hitOff: number[] = [];
  readonly hitLen: number[] = [];
  /** Device -> shadow copies so far (the controller publishes them in its statistics). */
  copiesFromDevice = 0;
  bytesFromDevice = 0;

  /** @param onFailure a copy failed in window `w` (the controller marks it failed and logs). */
  constructor(private readonly onFailure: (w: DeviceWindow, e: unknown) => void) {}

  get count(): number {
    return this.list.length;
  }

  get(index: number): DeviceWindow | undefined {
    return index < this.bySeg.length ? this.bySeg[index] : undefined;
  }

  add(w: DeviceWindow): void {
    while (this.bySeg.length <= w.index) this.bySeg.push(undefined);
    this.bySeg[w.index] = w;
    this.list.push(w);
  }

  remove(index: number): void {
    const w = this.get(index);
    if (w === undefined) return;
    this.bySeg[index] = undefined;
    this.list.splice(this.list.indexOf(w), 1);
  }

  mapped(dp: DataPath, toHost: boolean): number {
    const by = this.bySeg;
    for (let i = 0; i < dp.count; i++) {
      const s = dp.seg[i]!;
      const w = s < by.length ? by[s] : undefined;
      if (w === undefined) continue;
      const off = dp.off[i]!;
      const len = dp.len[i]!;
      if (toHost) {
        this.hitWin.push(w);
        this.hitOff.push(off);
        this.hitLen.push(len);
        dp.windowHits++;
        continue;
      }
      if (w.error !== null) return ST_DATA_TRANSFER;
      try {
        w.copier.fromDevice(off, len);
      } catch (e) {
        this.onFailure(w, e);
        return ST_DATA_TRANSFER;
      }
      this.copiesFromDevice++;
      this.bytesFromDevice += len;
    }
    return 0;
  }

  clearHits(): void {
    this.hitWin.length = 0;
    this.hitOff.length = 0;
    this.hitLen.length = 0;
  }
}
