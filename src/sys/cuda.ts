/**
 * The CUDA driver API through koffi: `libcuda.so.1`, opened at run time on first use, its functions bound by
 * their real (versioned) symbol names, the ones cuda.h's macros map to (cuMemAlloc -> cuMemAlloc_v2, ...).
 * Thin on purpose: each function here is one driver call that throws CudaError on a non-zero result; contexts,
 * memory and launches are put together in src/gpu/. No call here belongs in a per-I/O loop: GPU kernels drive
 * the queues, the host only sets them up and waits.
 *
 * Where no driver can be loaded every entry point throws NoCudaDriverError, whose message is the one clear
 * sentence users see ("no CUDA driver: libcuda.so.1 not found").
 */
import koffi from 'koffi';

/** The driver library's file name (cuda.h's ABI major version 1). */
export const LIBCUDA = 'libcuda.so.1';
/** Where the driver is looked for: the loader path, then where NVIDIA's container images and distributions put it. */
export const LIBCUDA_PATHS: readonly string[] = [LIBCUDA, '/usr/local/nvidia/lib64/libcuda.so.1', '/usr/lib/x86_64-linux-gnu/libcuda.so.1', '/usr/lib64/libcuda.so.1'];

// ---- cuda.h constants used by HOMI ----
export const CUDA_SUCCESS = 0;
export const CUDA_ERROR_NOT_READY = 600;
export const CU_MEMHOSTREGISTER_PORTABLE = 0x01;
export const CU_MEMHOSTREGISTER_DEVICEMAP = 0x02;
/** For PCI BAR mappings (NVMe doorbells on real hardware); fails on ordinary memory. */
export const CU_MEMHOSTREGISTER_IOMEMORY = 0x04;
export const CU_STREAM_NON_BLOCKING = 0x1;
export const CU_EVENT_DEFAULT = 0x0;
export const CU_EVENT_DISABLE_TIMING = 0x2;
export const CU_DEVICE_ATTRIBUTE_CLOCK_RATE = 13;
export const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
export const CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33;
export const CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID = 34;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
export const CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED = 86;
export const CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID = 50;

/** No usable driver on this machine. */
export class NoCudaDriverError extends Error {
  readonly code = 'no-cuda-driver';
  constructor(detail?: string) {
    super(`no CUDA driver: ${LIBCUDA} not found${detail !== undefined ? ` (${detail})` : ''}`);
    this.name = 'NoCudaDriverError';
  }
}

/** A driver call that returned an error. */
export class CudaError extends Error {
  readonly result: number;
  readonly call: string;
  readonly errorName: string;
  constructor(call: string, result: number, errorName: string, description: string) {
    super(`${call} failed: ${errorName} (${result}): ${description}`);
    this.name = 'CudaError';
    this.result = result;
    this.call = call;
    this.errorName = errorName;
  }
}

/** An opaque driver handle (CUcontext, CUmodule, CUfunction, CUstream, CUevent). */
export type CuHandle = unknown;

type Fn = (...args: unknown[]) => number;
interface Api {
  cuInit: Fn;
  cuDriverGetVersion: Fn;
  cuDeviceGetCount: Fn;
  cuDeviceGet: Fn;
  cuDeviceGetName: Fn;
  cuDeviceGetAttribute: Fn;
  cuDeviceTotalMem_v2: Fn;
  cuDevicePrimaryCtxRetain: Fn;
  cuDevicePrimaryCtxRelease_v2: Fn;
  cuCtxSetCurrent: Fn;
  cuCtxSynchronize: Fn;
  cuMemAlloc_v2: Fn;
  cuMemFree_v2: Fn;
  cuMemAllocHost_v2: Fn;
  cuMemFreeHost: Fn;
  cuMemHostRegister_v2: Fn;
  cuMemHostUnregister: Fn;
  cuMemHostGetDevicePointer_v2: Fn;
  cuMemGetAddressRange_v2: Fn;
  cuMemcpyHtoD_v2: Fn;
  cuMemcpyDtoH_v2: Fn;
  cuMemcpyHtoDAsync_v2: Fn;
  cuMemcpyDtoHAsync_v2: Fn;
  cuMemsetD8_v2: Fn;
  cuModuleLoadData: Fn;
  cuModuleUnload: Fn;
  cuModuleGetFunction: Fn;
  cuLaunchKernel: Fn;
  cuStreamCreate: Fn;
  cuStreamDestroy_v2: Fn;
  cuStreamSynchronize: Fn;
  cuStreamQuery: Fn;
  cuEventCreate: Fn;
  cuEventDestroy_v2: Fn;
  cuEventRecord: Fn;
  cuEventQuery: Fn;
  cuEventSynchronize: Fn;
  cuEventElapsedTime_v2: Fn;
  cuGetErrorName: Fn;
  cuGetErrorString: Fn;
}

const SIGNATURES: Record<keyof Api, string> = {
  cuInit: 'int cuInit(unsigned int flags)',
  cuDriverGetVersion: 'int cuDriverGetVersion(_Out_ int *version)',
  cuDeviceGetCount: 'int cuDeviceGetCount(_Out_ int *count)',
  cuDeviceGet: 'int cuDeviceGet(_Out_ int *device, int ordinal)',
  cuDeviceGetName: 'int cuDeviceGetName(uint8_t *name, int len, int dev)',
  cuDeviceGetAttribute: 'int cuDeviceGetAttribute(_Out_ int *value, int attrib, int dev)',
  cuDeviceTotalMem_v2: 'int cuDeviceTotalMem_v2(_Out_ uint64_t *bytes, int dev)',
  cuDevicePrimaryCtxRetain: 'int cuDevicePrimaryCtxRetain(_Out_ void **ctx, int dev)',
  cuDevicePrimaryCtxRelease_v2: 'int cuDevicePrimaryCtxRelease_v2(int dev)',
  cuCtxSetCurrent: 'int cuCtxSetCurrent(void *ctx)',
  cuCtxSynchronize: 'int cuCtxSynchronize()',
  cuMemAlloc_v2: 'int cuMemAlloc_v2(_Out_ uint64_t *dptr, size_t bytes)',
  cuMemFree_v2: 'int cuMemFree_v2(uint64_t dptr)',
  cuMemAllocHost_v2: 'int cuMemAllocHost_v2(_Out_ void **pp, size_t bytes)',
  cuMemFreeHost: 'int cuMemFreeHost(void *p)',
  cuMemHostRegister_v2: 'int cuMemHostRegister_v2(uint64_t p, size_t bytes, unsigned int flags)',
  cuMemHostUnregister: 'int cuMemHostUnregister(uint64_t p)',
  cuMemHostGetDevicePointer_v2: 'int cuMemHostGetDevicePointer_v2(_Out_ uint64_t *dptr, uint64_t p, unsigned int flags)',
  cuMemGetAddressRange_v2: 'int cuMemGetAddressRange_v2(_Out_ uint64_t *base, _Out_ size_t *size, uint64_t dptr)',
  cuMemcpyHtoD_v2: 'int cuMemcpyHtoD_v2(uint64_t dst, const uint8_t *src, size_t bytes)',
  cuMemcpyDtoH_v2: 'int cuMemcpyDtoH_v2(uint8_t *dst, uint64_t src, size_t bytes)',
  cuMemcpyHtoDAsync_v2: 'int cuMemcpyHtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *stream)',
  cuMemcpyDtoHAsync_v2: 'int cuMemcpyDtoHAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *stream)',
  cuMemsetD8_v2: 'int cuMemsetD8_v2(uint64_t dptr, uint8_t value, size_t count)',
  cuModuleLoadData: 'int cuModuleLoadData(_Out_ void **module, const uint8_t *image)',
  cuModuleUnload: 'int cuModuleUnload(void *module)',
  cuModuleGetFunction: 'int cuModuleGetFunction(_Out_ void **fn, void *module, const char *name)',
  cuLaunchKernel:
    'int cuLaunchKernel(void *f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared, void *stream, void **params, void **extra)',
  cuStreamCreate: 'int cuStreamCreate(_Out_ void **stream, unsigned int flags)',
  cuStreamDestroy_v2: 'int cuStreamDestroy_v2(void *stream)',
  cuStreamSynchronize: 'int cuStreamSynchronize(void *stream)',
  cuStreamQuery: 'int cuStreamQuery(void *stream)',
  cuEventCreate: 'int cuEventCreate(_Out_ void **event, unsigned int flags)',
  cuEventDestroy_v2: 'int cuEventDestroy_v2(void *event)',
  cuEventRecord: 'int cuEventRecord(void *event, void *stream)',
  cuEventQuery: 'int cuEventQuery(void *event)',
  cuEventSynchronize: 'int cuEventSynchronize(void *event)',
  cuEventElapsedTime_v2: 'int cuEventElapsedTime_v2(_Out_ float *ms, void *start, void *end)',
  cuGetErrorName: 'int cuGetErrorName(int error, _Out_ const char **name)',
  cuGetErrorString: 'int cuGetErrorString(int error, _Out_ const char **text)',
};

let api: Api | null = null;
let loadFailure: NoCudaDriverError | null = null;

function openLibrary(): koffi.IKoffiLib {
  const override = process.env['HOMI_LIBCUDA'];
  const candidates = override !== undefined && override !== '' ? [override] : LIBCUDA_PATHS;
  let last = '';
  for (const c of candidates) {
    try {
      return koffi.load(c);
    } catch (e) {
      last = (e as Error).message;
    }
  }
  throw new NoCudaDriverError(override !== undefined && override !== '' ? `HOMI_LIBCUDA=${override}: ${last}` : undefined);
}

/** The bound driver API; throws NoCudaDriverError (every time, the same error) where there is none. */
function cu(): Api {
  if (api !== null) return api;
  if (loadFailure !== null) throw loadFailure;
  if (process.platform !== 'linux') throw (loadFailure = new NoCudaDriverError(`not on Linux (${process.platform})`));
  let lib: koffi.IKoffiLib;
  try {
    lib = openLibrary();
  } catch (e) {
    loadFailure = e instanceof NoCudaDriverError ? e : new NoCudaDriverError((e as Error).message);
    throw loadFailure;
  }
  const bound: Partial<Api> = {};
  for (const [name, sig] of Object.entries(SIGNATURES) as Array<[keyof Api, string]>) {
    try {
      bound[name] = lib.func(sig) as unknown as Fn;
    } catch (e) {
      loadFailure = new NoCudaDriverError(`${LIBCUDA} lacks ${name}: ${(e as Error).message}`);
      throw loadFailure;
    }
  }
  api = bound as Api;
  return api;
}

/** Whether a driver library can be loaded here (no device is touched). */
export function cudaDriverPresent(): boolean {
  try {
    cu();
    return true;
  } catch {
    return false;
  }
}

function describe(result: number): [string, string] {
  const a = cu();
  const n: unknown[] = [null];
  const s: unknown[] = [null];
  const name = a.cuGetErrorName(result, n) === CUDA_SUCCESS && typeof n[0] === 'string' ? n[0] : `CUDA error ${result}`;
  const text = a.cuGetErrorString(result, s) === CUDA_SUCCESS && typeof s[0] === 'string' ? s[0] : 'no description';
  return [name, text];
}

function check(call: string, result: number): void {
  if (result !== CUDA_SUCCESS) {
    const [name, text] = describe(result);
    throw new CudaError(call, result, name, text);
  }
}

function out<T>(call: string, f: (o: unknown[]) => number): T {
  const o: unknown[] = [null];
  check(call, f(o));
  return o[0] as T;
}

function asNumber(v: unknown): number {
  return typeof v === 'bigint' ? Number(v) : (v as number);
}

export function cuInit(): void {
  check('cuInit', cu().cuInit(0));
}
export function cuDriverGetVersion(): number {
  return out<number>('cuDriverGetVersion', (o) => cu().cuDriverGetVersion(o));
}
export function cuDeviceGetCount(): number {
  return out<number>('cuDeviceGetCount', (o) => cu().cuDeviceGetCount(o));
}
export function cuDeviceGet(ordinal: number): number {
  return out<number>('cuDeviceGet', (o) => cu().cuDeviceGet(o, ordinal));
}
export function cuDeviceGetName(dev: number): string {
  const b = Buffer.alloc(256);
  check('cuDeviceGetName', cu().cuDeviceGetName(b, b.length, dev));
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
}
export function cuDeviceGetAttribute(attrib: number, dev: number): number {
  return out<number>('cuDeviceGetAttribute', (o) => cu().cuDeviceGetAttribute(o, attrib, dev));
}
export function cuDeviceTotalMem(dev: number): number {
  return asNumber(out<number | bigint>('cuDeviceTotalMem', (o) => cu().cuDeviceTotalMem_v2(o, dev)));
}
export function cuDevicePrimaryCtxRetain(dev: number): CuHandle {
  return out<CuHandle>('cuDevicePrimaryCtxRetain', (o) => cu().cuDevicePrimaryCtxRetain(o, dev));
}
export function cuDevicePrimaryCtxRelease(dev: number): void {
  check('cuDevicePrimaryCtxRelease', cu().cuDevicePrimaryCtxRelease_v2(dev));
}
export function cuCtxSetCurrent(ctx: CuHandle): void {
  check('cuCtxSetCurrent', cu().cuCtxSetCurrent(ctx));
}
export function cuCtxSynchronize(): void {
  check('cuCtxSynchronize', cu().cuCtxSynchronize());
}
/** Device memory; returns the device pointer. */
export function cuMemAlloc(bytes: number): number {
  return asNumber(out<number | bigint>('cuMemAlloc', (o) => cu().cuMemAlloc_v2(o, bytes)));
}
export function cuMemFree(dptr: number): void {
  check('cuMemFree', cu().cuMemFree_v2(dptr));
}
/** Pinned host memory; returns its host address. */
export function cuMemAllocHost(bytes: number): { handle: CuHandle; address: number } {
  const p = out<CuHandle>('cuMemAllocHost', (o) => cu().cuMemAllocHost_v2(o, bytes));
  return { handle: p, address: asNumber(koffi.address(p)) };
}
export function cuMemFreeHost(handle: CuHandle): void {
  check('cuMemFreeHost', cu().cuMemFreeHost(handle));
}
/** Page-lock and map host memory [address, address + bytes) for the GPU. */
export function cuMemHostRegister(address: number, bytes: number, flags: number): void {
  check('cuMemHostRegister', cu().cuMemHostRegister_v2(address, bytes, flags));
}
export function cuMemHostUnregister(address: number): void {
  check('cuMemHostUnregister', cu().cuMemHostUnregister(address));
}
export function cuMemHostGetDevicePointer(address: number): number {
  return asNumber(out<number | bigint>('cuMemHostGetDevicePointer', (o) => cu().cuMemHostGetDevicePointer_v2(o, address, 0)));
}
/** The allocation (cuMemAlloc) that device pointer `dptr` lies in: its base and size in bytes. */
export function cuMemGetAddressRange(dptr: number): { base: number; bytes: number } {
  const base: unknown[] = [null];
  const size: unknown[] = [null];
  check('cuMemGetAddressRange', cu().cuMemGetAddressRange_v2(base, size, dptr));
  return { base: asNumber(base[0]), bytes: asNumber(size[0]) };
}
export function cuMemcpyHtoD(dst: number, src: Uint8Array): void {
  check('cuMemcpyHtoD', cu().cuMemcpyHtoD_v2(dst, src, src.byteLength));
}
export function cuMemcpyDtoH(dst: Uint8Array, src: number): void {
  check('cuMemcpyDtoH', cu().cuMemcpyDtoH_v2(dst, src, dst.byteLength));
}
/** Asynchronous copy from pinned (registered) host memory at `src` to device memory. */
export function cuMemcpyHtoDAsync(dst: number, src: number, bytes: number, stream: CuHandle): void {
  check('cuMemcpyHtoDAsync', cu().cuMemcpyHtoDAsync_v2(dst, src, bytes, stream));
}
/** Asynchronous copy from device memory to pinned (registered) host memory at `dst`. */
export function cuMemcpyDtoHAsync(dst: number, src: number, bytes: number, stream: CuHandle): void {
  check('cuMemcpyDtoHAsync', cu().cuMemcpyDtoHAsync_v2(dst, src, bytes, stream));
}
export function cuMemsetD8(dptr: number, value: number, bytes: number): void {
  check('cuMemsetD8', cu().cuMemsetD8_v2(dptr, value, bytes));
}
/** Load a module from PTX text (the driver JIT-compiles it for the device). */
export function cuModuleLoadData(ptx: string): CuHandle {
  const image = Buffer.from(`${ptx}\0`, 'utf8');
  return out<CuHandle>('cuModuleLoadData', (o) => cu().cuModuleLoadData(o, image));
}
export function cuModuleUnload(mod: CuHandle): void {
  check('cuModuleUnload', cu().cuModuleUnload(mod));
}
export function cuModuleGetFunction(mod: CuHandle, name: string): CuHandle {
  return out<CuHandle>(`cuModuleGetFunction(${name})`, (o) => cu().cuModuleGetFunction(o, mod, name));
}
/**
 * Launch `fn` on grid x block (1-D each) on `stream`; `params` holds each kernel parameter's bytes, in order
 * (the driver copies them at launch).
 */
export function cuLaunchKernel(fn: CuHandle, grid: number, block: number, sharedBytes: number, stream: CuHandle, params: readonly Uint8Array[]): void {
  check('cuLaunchKernel', cu().cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, sharedBytes, stream, params as Uint8Array[], null));
}
export function cuStreamCreate(flags = CU_STREAM_NON_BLOCKING): CuHandle {
  return out<CuHandle>('cuStreamCreate', (o) => cu().cuStreamCreate(o, flags));
}
export function cuStreamDestroy(stream: CuHandle): void {
  check('cuStreamDestroy', cu().cuStreamDestroy_v2(stream));
}
export function cuStreamSynchronize(stream: CuHandle): void {
  check('cuStreamSynchronize', cu().cuStreamSynchronize(stream));
}
/** True when everything queued on `stream` is done. */
export function cuStreamQuery(stream: CuHandle): boolean {
  const r = cu().cuStreamQuery(stream);
  if (r === CUDA_ERROR_NOT_READY) return false;
  check('cuStreamQuery', r);
  return true;
}
export function cuEventCreate(flags = CU_EVENT_DEFAULT): CuHandle {
  return out<CuHandle>('cuEventCreate', (o) => cu().cuEventCreate(o, flags));
}
export function cuEventDestroy(event: CuHandle): void {
  check('cuEventDestroy', cu().cuEventDestroy_v2(event));
}
export function cuEventRecord(event: CuHandle, stream: CuHandle): void {
  check('cuEventRecord', cu().cuEventRecord(event, stream));
}
/** True once the work before the event's record is done. */
export function cuEventQuery(event: CuHandle): boolean {
  const r = cu().cuEventQuery(event);
  if (r === CUDA_ERROR_NOT_READY) return false;
  check('cuEventQuery', r);
  return true;
}
export function cuEventSynchronize(event: CuHandle): void {
  check('cuEventSynchronize', cu().cuEventSynchronize(event));
}
export function cuEventElapsedTime(start: CuHandle, end: CuHandle): number {
  return out<number>('cuEventElapsedTime', (o) => cu().cuEventElapsedTime_v2(o, start, end));
}
/** A CPU view of pinned host memory from cuMemAllocHost (no copy). */
export function hostView(handle: CuHandle, bytes: number): ArrayBuffer {
  return koffi.view(handle as never, bytes) as ArrayBuffer;
}
