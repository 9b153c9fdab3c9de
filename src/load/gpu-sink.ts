/**
 * The GPU sink: every file gets a 4 KiB-aligned slot in one device allocation (cuMemAlloc); CPU-initiated paths
 * deliver through the copy engine (cuMemcpyHtoD, synchronous, so the path may reuse its staging at once). A path
 * that hands over its staging memory with its address has it registered with CUDA (page-locked, DEVICEMAP), so
 * the copies run as DMA from pinned memory; other memory is copied from pageable memory (the driver stages it),
 * and the description says which. The gpu path writes into the slots itself (deviceAddress).
 *
 * The mirror (when the files fit in MIRROR_MAX_BYTES and the memory can be pinned): a host arena laid out like
 * the device one, registered with CUDA; a path that reads straight into host memory (hostAddress, the io_uring
 * path) reads there, says what landed, and the sink queues an asynchronous copy of exactly those bytes to the
 * same offset in GPU memory (cuMemcpyHtoDAsync on one stream): the disk, the CPU and the copy engine work at
 * once, and drain() waits for the copies.
 */
import { GpuDevice, gpuEvents, type DeviceBuffer } from '../gpu/device.js';
import { MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PROT_READ, PROT_WRITE, type Mapping, mmap, munmap } from '../sys/mman.js';
import { ARENA_ALIGN, alignUp, arenaLayout } from './host-sink.js';
import type { LoadFile, LoadSink } from './types.js';

/** Largest pinned host mirror (bytes of files): beyond it, paths stage and deliver. */
export const MIRROR_MAX_BYTES = 16 * 1024 ** 3;

export class GpuSink implements LoadSink {
  readonly target = 'gpu' as const;
  private readonly buf: DeviceBuffer;
  private readonly offsets: number[];
  private readonly sizes: number[];
  private readonly unregister: (() => void)[] = [];
  private registered = 0;
  private pageable = false;
  private closed = false;
  /** The pinned host mirror (null: none; deliver() copies synchronously). */
  private mirror: { map: Mapping; unregister: () => void } | null = null;
  private mirrorNote = '';
  private stream: ReturnType<GpuDevice['stream']> | null = null;
  private asyncCopies = 0;
  private syncCopies = 0;

  /** Files into GPU `gpu` (opened here when not given; closed with the sink when opened here). */
  constructor(
    files: readonly LoadFile[],
    readonly gpu: GpuDevice = GpuDevice.open(0),
    private readonly ownsGpu = true,
    opts: { mirror?: boolean } = {},
  ) {
    const { offsets, bytes } = arenaLayout(files);
    this.offsets = offsets;
    this.sizes = files.map((f) => f.size);
    try {
      this.buf = gpu.alloc(bytes);
    } catch (e) {
      if (ownsGpu) gpu.close();
      throw new Error(`GPU memory for ${files.length} files (${bytes} bytes) could not be allocated on ${gpu.info.name}: ${(e as Error).message}`);
    }
    if (opts.mirror !== false) {
      if (bytes > MIRROR_MAX_BYTES) this.mirrorNote = `no pinned mirror: ${bytes} bytes is more than ${MIRROR_MAX_BYTES}`;
      else {
        let map: Mapping | null = null;
        try {
          map = mmap(bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, 'homi load GPU mirror');
          new Uint8Array(map.buffer).fill(0); // touch every page before the clock (see host-sink.ts)
          const r = gpu.registerHost(map.addressNumber, bytes);
          this.mirror = { map, unregister: r.unregister };
          this.stream = gpu.stream();
          const base = map.addressNumber;
          this.hostAddress = (file: number): number => base + this.offsets[file]!;
        } catch (e) {
          if (map) munmap(map);
          this.mirrorNote = `no pinned mirror: ${(e as Error).message}`;
        }
      }
    }
  }

  hostAddress?(file: number): number;

  /** Queue the copy of bytes that landed in the mirror to the same place in GPU memory. */
  landed(file: number, offset: number, length: number): void {
    if (!this.mirror || length <= 0) return;
    const at = this.offsets[file]! + offset;
    this.gpu.copyToDeviceAsync(this.buf.dptr + at, this.mirror.map.addressNumber + at, length, this.stream!);
    this.asyncCopies++;
  }

  get describe(): string {
    if (this.asyncCopies > 0)
      return `GPU memory on ${this.gpu.info.name} (${this.gpu.info.pciBusId}), read into a pinned host mirror and copied by the copy engine as each read lands (${this.asyncCopies} cuMemcpyHtoDAsync)`;
    if (this.syncCopies === 0) return `GPU memory on ${this.gpu.info.name} (${this.gpu.info.pciBusId}), written by the path itself (no host copies)`;
    const how = this.registered > 0 ? `from registered (pinned) staging${this.pageable ? ', some from pageable memory' : ''}` : 'from pageable memory';
    return `GPU memory on ${this.gpu.info.name} (${this.gpu.info.pciBusId}), cuMemcpyHtoD ${how}`;
  }

  /** Device address of file `file`'s bytes. */
  deviceAddress(file: number): bigint {
    return BigInt(this.buf.dptr + this.offsets[file]!);
  }

  /** The whole allocation (base, bytes): where the gpu path may write. */
  get region(): { dptr: number; bytes: number } {
    return { dptr: this.buf.dptr, bytes: this.buf.bytes };
  }

  adoptStaging(mem: Uint8Array, address?: number): void {
    if (address === undefined || mem.byteLength === 0) return;
    try {
      const r = this.gpu.registerHost(address, mem.byteLength);
      this.unregister.push(r.unregister);
      this.registered += mem.byteLength;
    } catch {
      // memory CUDA will not register (already registered by another part, say): copies still work, pageable
      this.pageable = true;
    }
  }

  deliver(file: number, offset: number, data: Uint8Array): void {
    const size = this.sizes[file]!;
    if (offset < 0 || offset + data.length > alignUp(Math.max(size, 1), ARENA_ALIGN)) {
      throw new RangeError(`deliver of bytes ${offset}..${offset + data.length} is outside file ${file} (${size} bytes)`);
    }
    if (data.length > 0) {
      this.gpu.copyToDevice(this.buf.dptr + this.offsets[file]! + offset, data);
      this.syncCopies++;
    }
  }

  drain(): void {
    if (this.stream) gpuEvents.streamSynchronize(this.stream);
    this.gpu.synchronize();
  }

  readBack(file: number): Uint8Array {
    const n = this.sizes[file]!;
    return n === 0 ? new Uint8Array(0) : this.gpu.copyFromDevice(this.buf.dptr + this.offsets[file]!, n);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const u of this.unregister) u();
    if (this.mirror) {
      this.mirror.unregister();
      munmap(this.mirror.map);
      this.mirror = null;
    }
    this.buf.free();
    if (this.ownsGpu) this.gpu.close();
  }
}
