/**
 * The test double of emulated P2P's copy engine: a SharedArrayBuffer plays device memory, and copies are
 * TypedArray.set. A copy to the device is queued when started and performed when its fence counts as done,
 * `delayMs` after the fence was recorded (0: at the first look), so device memory changes only when a real copy
 * engine would have finished: tests see that completions wait for the copies. `fail` makes every copy fail, as a
 * copy engine error would. Copies from the device are synchronous, like the CUDA copier's.
 */
import type { DeviceCopier } from './device-window.js';

interface MemoryFence {
  seq: number;
  due: number;
  /** (offset, length) pairs. */
  ranges: number[];
}

export class MemoryCopier implements DeviceCopier {
  readonly label = 'memory test double';
  private queued: number[] = [];
  private readonly inflight: MemoryFence[] = [];
  private seq = 0;
  private done = 0;
  private readonly sleeper = new Int32Array(new SharedArrayBuffer(4));

  /**
   * @param shadow the window's shadow (the controller's view of its DMA segment), exactly the window's bytes
   * @param device the memory playing device memory, exactly the window's bytes
   */
  constructor(
    private readonly shadow: Uint8Array,
    private readonly device: Uint8Array,
    private readonly delayMs: number,
    private readonly fail: boolean,
  ) {
    if (device.byteLength !== shadow.byteLength) throw new RangeError('the device memory and the shadow differ in size');
  }

  toDevice(off: number, len: number): void {
    this.queued.push(off, len);
  }

  fromDevice(off: number, len: number): void {
    if (this.fail) throw new Error('copy from the device failed (memory test double, failCopies)');
    this.shadow.set(this.device.subarray(off, off + len), off);
  }

  fence(): number {
    this.inflight.push({ seq: ++this.seq, due: performance.now() + this.delayMs, ranges: this.queued });
    this.queued = [];
    return this.seq;
  }

  completed(): number {
    const now = performance.now();
    while (this.inflight.length !== 0 && this.inflight[0]!.due <= now) {
      const f = this.inflight.shift()!;
      if (this.fail) throw new Error('copy to the device failed (memory test double, failCopies)');
      const r = f.ranges;
      for (let i = 0; i < r.length; i += 2) this.device.set(this.shadow.subarray(r[i]!, r[i]! + r[i + 1]!), r[i]!);
      this.done = f.seq;
    }
    return this.done;
  }

  drain(): void {
    if (this.queued.length !== 0) this.fence();
    while (this.done < this.seq) {
      const wait = this.inflight[0]!.due - performance.now();
      if (wait > 0) Atomics.wait(this.sleeper, 0, 0, wait);
      this.completed();
    }
  }

  close(): void {
    this.queued = [];
    this.inflight.length = 0;
  }
}
