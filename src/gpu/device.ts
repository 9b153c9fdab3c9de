/**
 * A GPU as HOMI uses it: the primary context of one device, current on the calling thread, and everything
 * taken from it (device memory, host registrations, modules, streams, events) tracked so that close() gives
 * it all back. Control plane only: kernels drive the queues.
 */
import * as cu from '../sys/cuda.js';
import { KERNELS, MODULES, loadPtx, paramBytes, type KernelName, type ModuleName } from './kernels.js';

export { NoCudaDriverError, CudaError, cudaDriverPresent } from '../sys/cuda.js';

export interface GpuInfo {
  ordinal: number;
  name: string;
  computeCapability: string;
  multiprocessors: number;
  /** SM clock, kHz (clock64() cycles per millisecond). */
  clockKhz: number;
  totalBytes: number;
  pciBusId: string;
  driverVersion: number;
  hostNativeAtomics: boolean;
}

/** Device memory. */
export interface DeviceBuffer {
  readonly dptr: number;
  readonly bytes: number;
  free(): void;
}

export class GpuDevice {
  readonly info: GpuInfo;
  private readonly ctx: cu.CuHandle;
  private readonly dev: number;
  private readonly allocations = new Set<number>();
  private readonly registrations = new Set<number>();
  private readonly modules = new Map<ModuleName, cu.CuHandle>();
  private readonly functions = new Map<KernelName, cu.CuHandle>();
  private readonly streams: cu.CuHandle[] = [];
  private readonly events: cu.CuHandle[] = [];
  private readonly scratches = new Map<string, DeviceBuffer>();
  private readonly streamPool: cu.CuHandle[] = [];
  private closed = false;

  /** Open device `ordinal` (its primary context becomes current on this thread). */
  static open(ordinal = 0): GpuDevice {
    cu.cuInit();
    const count = cu.cuDeviceGetCount();
    if (ordinal < 0 || ordinal >= count) throw new RangeError(`GPU ${ordinal} does not exist (${count} device${count === 1 ? '' : 's'})`);
    const dev = cu.cuDeviceGet(ordinal);
    const ctx = cu.cuDevicePrimaryCtxRetain(dev);
    cu.cuCtxSetCurrent(ctx);
    const attr = (a: number): number => cu.cuDeviceGetAttribute(a, dev);
    const hex = (n: number, w: number): string => n.toString(16).padStart(w, '0');
    const info: GpuInfo = {
      ordinal,
      name: cu.cuDeviceGetName(dev),
      computeCapability: `${attr(cu.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)}.${attr(cu.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)}`,
      multiprocessors: attr(cu.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
      clockKhz: attr(cu.CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
      totalBytes: cu.cuDeviceTotalMem(dev),
      pciBusId: `${hex(attr(cu.CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID), 4)}:${hex(attr(cu.CU_DEVICE_ATTRIBUTE_PCI_BUS_ID), 2)}:${hex(attr(cu.CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID), 2)}.0`,
      driverVersion: cu.cuDriverGetVersion(),
      hostNativeAtomics: attr(cu.CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED) !== 0,
    };
    return new GpuDevice(info, ctx, dev);
  }

  private constructor(info: GpuInfo, ctx: cu.CuHandle, dev: number) {
    this.dev = dev;
    this.info = info;
    this.ctx = ctx;
  }

  /** Make this device's context current on the calling thread. */
  makeCurrent(): void {
    cu.cuCtxSetCurrent(this.ctx);
  }

  /** Zeroed device memory. */
  alloc(bytes: number): DeviceBuffer {
    const dptr = cu.cuMemAlloc(bytes);
    this.allocations.add(dptr);
    cu.cuMemsetD8(dptr, 0, bytes);
    return {
      dptr,
      bytes,
      free: () => {
        if (this.allocations.delete(dptr)) cu.cuMemFree(dptr);
      },
    };
  }

  /**
   * Register host memory (a mapping of a memfd, say) with the GPU (page-locked, mapped into the GPU's address
   * space); returns the device pointer of its first byte and the unregister function.
   */
  registerHost(address: number, bytes: number, ioMemory = false): { dptr: number; unregister: () => void } {
    const flags = cu.CU_MEMHOSTREGISTER_DEVICEMAP | cu.CU_MEMHOSTREGISTER_PORTABLE | (ioMemory ? cu.CU_MEMHOSTREGISTER_IOMEMORY : 0);
    cu.cuMemHostRegister(address, bytes, flags);
    this.registrations.add(address);
    const dptr = cu.cuMemHostGetDevicePointer(address);
    return {
      dptr,
      unregister: () => {
        if (this.registrations.delete(address)) cu.cuMemHostUnregister(address);
      },
    };
  }

  /**
   * A device buffer kept for the device's life under `name` (zeroed on each call): for what launches need
   * again and again, since freeing device memory may wait for every kernel, a persistent one included.
   */
  scratch(name: string, bytes: number): DeviceBuffer {
    let b = this.scratches.get(name);
    if (b === undefined || b.bytes < bytes) {
      b = this.alloc(bytes);
      this.scratches.set(name, b);
    } else cu.cuMemsetD8(b.dptr, 0, b.bytes);
    return b;
  }

  /** The device pointer of host memory already mapped for the GPU (cuMemAllocHost, or registered). */
  hostPointer(address: number): number {
    return cu.cuMemHostGetDevicePointer(address);
  }

  copyToDevice(dptr: number, bytes: Uint8Array): void {
    cu.cuMemcpyHtoD(dptr, bytes);
  }
  /** Copy `bytes` from pinned (registered) host memory at `hostAddress` to `dptr` on `stream`, asynchronously. */
  copyToDeviceAsync(dptr: number, hostAddress: number, bytes: number, stream: cu.CuHandle): void {
    cu.cuMemcpyHtoDAsync(dptr, hostAddress, bytes, stream);
  }
  copyFromDevice(dptr: number, bytes: number): Uint8Array {
    const out = new Uint8Array(bytes);
    cu.cuMemcpyDtoH(out, dptr);
    return out;
  }
  memset(dptr: number, value: number, bytes: number): void {
    cu.cuMemsetD8(dptr, value, bytes);
  }

  stream(): cu.CuHandle {
    const s = cu.cuStreamCreate();
    this.streams.push(s);
    return s;
  }
  /** The stream initiator launches go on (one, reused). */
  launchStream(): cu.CuHandle {
    if (this.streamPool.length === 0) this.streamPool.push(this.stream());
    return this.streamPool[0]!;
  }
  event(timing = true): cu.CuHandle {
    const e = cu.cuEventCreate(timing ? cu.CU_EVENT_DEFAULT : cu.CU_EVENT_DISABLE_TIMING);
    this.events.push(e);
    return e;
  }

  /** Launch a kernel of KERNELS with its parameters' bytes (checked against the kernel's parameter list). */
  launch(name: KernelName, grid: number, block: number, stream: cu.CuHandle, params: readonly Uint8Array[]): void {
    const spec = KERNELS[name];
    if (params.length !== spec.params.length) throw new RangeError(`${spec.name} takes ${spec.params.length} parameters, got ${params.length}`);
    spec.params.forEach((p, i) => {
      if (params[i]!.byteLength !== paramBytes(p)) throw new RangeError(`${spec.name} parameter ${p.name}: ${params[i]!.byteLength} bytes, expected ${paramBytes(p)}`);
    });
    if (!Number.isInteger(grid) || grid < 1 || !Number.isInteger(block) || block < 1 || block > 1024) throw new RangeError(`${spec.name}: bad launch shape ${grid} x ${block}`);
    cu.cuLaunchKernel(this.fn(name), grid, block, 0, stream, params);
  }

  private fn(name: KernelName): cu.CuHandle {
    let f = this.functions.get(name);
    if (f === undefined) {
      const spec = KERNELS[name];
      let m = this.modules.get(spec.module);
      if (m === undefined) {
        m = cu.cuModuleLoadData(loadPtx(spec.module));
        this.modules.set(spec.module, m);
      }
      f = cu.cuModuleGetFunction(m, spec.name);
      this.functions.set(name, f);
    }
    return f;
  }

  /** Load every module now (the driver's JIT compile takes ~100 ms; keep it out of timed runs). */
  preload(): void {
    for (const k of Object.keys(KERNELS) as KernelName[]) this.fn(k);
    void MODULES;
  }

  synchronize(): void {
    cu.cuCtxSynchronize();
  }

  /** Give back everything taken from the device (after the kernels are done). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const attempt = (f: () => void): void => {
      try {
        f();
      } catch {
        // a context already in error keeps its resources until the process ends; nothing more to do here
      }
    };
    attempt(() => cu.cuCtxSynchronize());
    for (const e of this.events) attempt(() => cu.cuEventDestroy(e));
    for (const s of this.streams) attempt(() => cu.cuStreamDestroy(s));
    for (const m of this.modules.values()) attempt(() => cu.cuModuleUnload(m));
    for (const a of this.registrations) attempt(() => cu.cuMemHostUnregister(a));
    for (const d of this.allocations) attempt(() => cu.cuMemFree(d));
    this.registrations.clear();
    this.allocations.clear();
    attempt(() => cu.cuDevicePrimaryCtxRelease(this.dev));
  }
}

/** Re-exports for callers that poll or time work on the GPU. */
export const gpuEvents = {
  record: cu.cuEventRecord,
  query: cu.cuEventQuery,
  synchronize: cu.cuEventSynchronize,
  elapsedMs: cu.cuEventElapsedTime,
  streamQuery: cu.cuStreamQuery,
  streamSynchronize: cu.cuStreamSynchronize,
};
