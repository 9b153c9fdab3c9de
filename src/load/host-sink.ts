/**
 * The host sink: every file gets a page-aligned slot in one anonymous mapping (the arena), locked in memory
 * (mlock) when the process may lock that much; the report says which. Callers of the library may read the
 * loaded bytes straight from `view(i)`.
 */
import { MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, PROT_READ, PROT_WRITE, type Mapping, mlock, mmap, munmap } from '../sys/mman.js';
import type { LoadFile, LoadSink } from './types.js';

export const ARENA_ALIGN = 4096;

export function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Slot offsets of `files` in an arena (each slot page-aligned, sized to the file rounded up to a page). */
export function arenaLayout(files: readonly Pick<LoadFile, 'size'>[]): { offsets: number[]; bytes: number } {
  const offsets: number[] = [];
  let at = 0;
  for (const f of files) {
    offsets.push(at);
    at += alignUp(Math.max(f.size, 1), ARENA_ALIGN);
  }
  return { offsets, bytes: Math.max(at, ARENA_ALIGN) };
}

export class HostSink implements LoadSink {
  readonly target = 'host' as const;
  readonly describe: string;
  /** Whether the arena is locked in memory. */
  readonly pinned: boolean;
  private readonly map: Mapping;
  private readonly bytes: Uint8Array;
  private readonly offsets: number[];
  private readonly sizes: number[];

  constructor(files: readonly LoadFile[], opts: { pin?: boolean } = {}) {
    const { offsets, bytes } = arenaLayout(files);
    this.offsets = offsets;
    this.sizes = files.map((f) => f.size);
    this.map = mmap(bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0, 'homi load host arena');
    this.bytes = new Uint8Array(this.map.buffer);
    // Touch every page before the load: on a virtual machine the first write to a page can cost far more than the
    // copy itself (the hypervisor backs guest memory lazily; seen here: 220 MB took 0.34 s on first touch, 0.017 s
    // after), and that cost belongs to allocating the destination, not to loading into it.
    this.bytes.fill(0);
    let note = 'not locked';
    let pinned = false;
    if (opts.pin !== false) {
      try {
        mlock(this.map);
        pinned = true;
        note = 'mlock';
      } catch (e) {
        note = `not locked: ${(e as Error).message}`;
      }
    }
    this.pinned = pinned;
    this.describe = `host memory, ${pinned ? 'pinned' : 'pageable'} (${note})`;
  }

  /** Virtual address of the arena's first byte (for registering it with a GPU). */
  get address(): number {
    return this.map.addressNumber;
  }
  hostAddress(file: number): number {
    return this.map.addressNumber + this.offsets[file]!;
  }
  /** Offset of file `file`'s slot in the arena. */
  offsetOf(file: number): number {
    return this.offsets[file]!;
  }
  /** Bytes of the arena. */
  get bytesTotal(): number {
    return this.map.length;
  }

  /** The loaded bytes of file `file` (a view into the arena, valid until close()). */
  view(file: number): Uint8Array {
    const off = this.offsets[file]!;
    return this.bytes.subarray(off, off + this.sizes[file]!);
  }

  /** The page-aligned slot of file `file` (its size rounded up to a page): paths may read into it directly. */
  slot(file: number): Uint8Array {
    const off = this.offsets[file]!;
    return this.bytes.subarray(off, off + alignUp(Math.max(this.sizes[file]!, 1), ARENA_ALIGN));
  }

  adoptStaging(): void {}

  deliver(file: number, offset: number, data: Uint8Array): void {
    const size = this.sizes[file]!;
    if (offset < 0 || offset + data.length > alignUp(Math.max(size, 1), ARENA_ALIGN)) {
      throw new RangeError(`deliver of bytes ${offset}..${offset + data.length} is outside file ${file} (${size} bytes)`);
    }
    this.bytes.set(data, this.offsets[file]! + offset);
  }

  drain(): void {}

  readBack(file: number): Uint8Array {
    return this.view(file);
  }

  close(): void {
    munmap(this.map);
  }
}
