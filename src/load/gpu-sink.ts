/**
 * The GPU sink: every file gets a 4 KiB-aligned slot in one device allocation (cuMemAlloc); CPU-initiated paths
 * deliver through the copy engine (cuMemcpyHtoD, synchronous, so the path may reuse its staging at once). A path
 * that hands over its staging memory with its address has it registered with CUDA (page-locked, DEVICEMAP), so
 * the copies run as DMA from pinned memory; other memory is copied from pageable memory (the driver stages it),
 * and the description says which. The gpu path writes into the slots itself (deviceAddress).
 */
import { GpuDevice, type DeviceBuffer } from '../gpu/device.js';
import { ARENA_ALIGN, alignUp, arenaLayout } from './host-sink.js';
import type { LoadFile, LoadSink } from './types.js';

export class GpuSink implements LoadSink {
  readonly target = 'gpu' as const;
  private readonly buf: DeviceBuffer;
  private readonly offsets: number[];
  private readonly sizes: number[];
  private readonly unregister: (() => void)[] = [];
  private registered = 0;
  private pageable = false;
  private closed = false;

  /** Files into GPU `gpu` (opened here when not given; closed with the sink when opened here). */
  constructor(
    files: readonly LoadFile[],
    readonly gpu: GpuDevice = GpuDevice.open(0),
    private readonly ownsGpu = true,
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
  }

  get describe(): string {
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
    if (data.length > 0) this.gpu.copyToDevice(this.buf.dptr + this.offsets[file]! + offset, data);
  }

  drain(): void {
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
    this.buf.free();
    if (this.ownsGpu) this.gpu.close();
  }
}
