/**
 * Files into the caller's own buffers: one Uint8Array per planned file, at least as long as the file. Paths stage
 * their reads and deliver them here (the caller's memory is not assumed to be page-aligned or pinned).
 */
import type { LoadFile, LoadSink } from './types.js';

export class CallerSink implements LoadSink {
  readonly target = 'host' as const;
  readonly describe = "the caller's buffers";

  constructor(
    files: readonly LoadFile[],
    private readonly buffers: readonly Uint8Array[],
  ) {
    if (buffers.length !== files.length) throw new RangeError(`${files.length} files need ${files.length} buffers, got ${buffers.length}`);
    files.forEach((f, i) => {
      if (buffers[i]!.length < f.size) throw new RangeError(`buffer ${i} holds ${buffers[i]!.length} bytes; ${f.path} has ${f.size}`);
    });
    this.sizes = files.map((f) => f.size);
  }
  private readonly sizes: number[];

  adoptStaging(): void {}

  deliver(file: number, offset: number, data: Uint8Array): void {
    const n = Math.min(data.length, this.sizes[file]! - offset);
    if (offset < 0 || n < 0) throw new RangeError(`deliver of bytes ${offset}..${offset + data.length} is outside file ${file} (${this.sizes[file]} bytes)`);
    this.buffers[file]!.set(n === data.length ? data : data.subarray(0, n), offset);
  }

  drain(): void {}

  readBack(file: number): Uint8Array {
    return this.buffers[file]!.subarray(0, this.sizes[file]!);
  }

  close(): void {}
}
