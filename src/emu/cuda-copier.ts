/**
 * Emulated P2P's copier for CUDA device memory: the copy engine moves bytes between a window's shadow (the
 * controller worker's mapping of the shadow memfd, page-locked here with cuMemHostRegister so copies can be
 * asynchronous) and the device memory at `dptr` (cuMemAlloc memory in the primary context of device `ordinal`,
 * in this process). Copies to the device are cuMemcpyHtoDAsync on one non-blocking stream, fenced by CUDA events
 * (cuEventRecord / cuEventQuery); copies from the device are cuMemcpyDtoHAsync on the same stream, then a
 * stream synchronize (ordered after the copies to the device already queued).
 *
 * Runs in the controller worker thread. The controller imports this module dynamically, only when a cuda window
 * is added: a machine without a driver never loads libcuda (src/sys/cuda.ts loads it at first use, and throws
 * NoCudaDriverError when there is none).
 */
import {
  CU_EVENT_DISABLE_TIMING,
  CU_MEMHOSTREGISTER_PORTABLE,
  CU_STREAM_NON_BLOCKING,
  cuCtxSetCurrent,
  cuDeviceGet,
  cuDevicePrimaryCtxRelease,
  cuDevicePrimaryCtxRetain,
  cuEventCreate,
  cuEventDestroy,
  cuEventQuery,
  cuEventRecord,
  cuInit,
  cuMemGetAddressRange,
  cuMemHostRegister,
  cuMemHostUnregister,
  cuMemcpyDtoHAsync,
  cuMemcpyHtoDAsync,
  cuStreamCreate,
  cuStreamDestroy,
  cuStreamSynchronize,
  type CuHandle,
} from '../sys/cuda.js';
import type { DeviceCopier } from './device-window.js';

export interface CudaCopierOptions {
  /** CUDA device ordinal. */
  ordinal: number;
  /** Device pointer of the window's first byte. */
  dptr: number;
  /** Window bytes (all inside the allocation `dptr` lies in). */
  bytes: number;
  /** Address of the shadow's mapping in this process. */
  hostAddress: number;
  /** Bytes of that mapping (page-rounded; all of it is registered). */
  hostBytes: number;
}

/** The context this module last made current on this thread (the worker is one thread). */
let current: CuHandle = null;

export class CudaCopier implements DeviceCopier {
  readonly label: string;
  /** Copy-engine copies issued (after coalescing). */
  issued = 0;
  private pendingOff = 0;
  private pendingLen = 0;
  private readonly dev: number;
  private readonly ctx: CuHandle;
  private readonly stream: CuHandle;
  private readonly dptr: number;
  private readonly host: number;
  /** Recorded fences not yet seen done, oldest first, and their numbers. */
  private readonly inflight: CuHandle[] = [];
  private readonly inflightSeq: number[] = [];
  /** Events free for the next fence. */
  private readonly spare: CuHandle[] = [];
  private seq = 0;
  private done = 0;
  private closed = false;

  constructor(o: CudaCopierOptions) {
    this.label = `cuda device ${o.ordinal}`;
    this.dptr = o.dptr;
    this.host = o.hostAddress;
    cuInit();
    this.dev = cuDeviceGet(o.ordinal);
    this.ctx = cuDevicePrimaryCtxRetain(this.dev);
    let registered = false;
    try {
      this.use();
      const range = cuMemGetAddressRange(o.dptr);
      if (o.dptr + o.bytes > range.base + range.bytes) {
        throw new RangeError(`the window's ${o.bytes} bytes at device pointer 0x${o.dptr.toString(16)} run past the end of its allocation (0x${range.base.toString(16)}, ${range.bytes} bytes)`);
      }
      cuMemHostRegister(o.hostAddress, o.hostBytes, CU_MEMHOSTREGISTER_PORTABLE);
      registered = true;
      this.stream = cuStreamCreate(CU_STREAM_NON_BLOCKING);
    } catch (e) {
      if (registered) ignore(() => cuMemHostUnregister(o.hostAddress));
      ignore(() => cuDevicePrimaryCtxRelease(this.dev));
      if (current === this.ctx) current = null;
      throw e;
    }
  }

  private use(): void {
    if (current !== this.ctx) {
      cuCtxSetCurrent(this.ctx);
      current = this.ctx;
    }
  }

  /**
   * Copies to the device are coalesced: a range that starts where the pending one ends extends it (commands of
   * one polling round on consecutive slots are consecutive in the window), and the pending range is issued as
   * one copy when a range does not follow it, or at the round's fence. One FFI call per run of commands.
   */
  toDevice(off: number, len: number): void {
    if (this.pendingLen !== 0 && off === this.pendingOff + this.pendingLen) {
      this.pendingLen += len;
      return;
    }
    this.flush();
    this.pendingOff = off;
    this.pendingLen = len;
  }

  /** Issue the pending copy to the device, if any. */
  private flush(): void {
    if (this.pendingLen === 0) return;
    const off = this.pendingOff;
    const len = this.pendingLen;
    this.pendingLen = 0;
    this.use();
    cuMemcpyHtoDAsync(this.dptr + off, this.host + off, len, this.stream);
    this.issued++;
  }

  fromDevice(off: number, len: number): void {
    this.flush();
    this.use();
    cuMemcpyDtoHAsync(this.host + off, this.dptr + off, len, this.stream);
    cuStreamSynchronize(this.stream);
  }

  fence(): number {
    this.flush();
    this.use();
    const ev = this.spare.pop() ?? cuEventCreate(CU_EVENT_DISABLE_TIMING);
    try {
      cuEventRecord(ev, this.stream);
    } catch (e) {
      this.spare.push(ev);
      throw e;
    }
    this.inflight.push(ev);
    this.inflightSeq.push(++this.seq);
    return this.seq;
  }

  completed(): number {
    if (this.inflight.length === 0) return this.done;
    this.use();
    while (this.inflight.length !== 0 && cuEventQuery(this.inflight[0])) {
      this.spare.push(this.inflight.shift());
      this.done = this.inflightSeq.shift()!;
    }
    return this.done;
  }

  drain(): void {
    this.flush();
    this.use();
    cuStreamSynchronize(this.stream);
    this.completed();
  }

  /** Wait for the stream, then free events, the stream, the registration and the context; the first error is thrown. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    let first: unknown = null;
    const step = (f: () => void): void => {
      try {
        f();
      } catch (e) {
        first ??= e;
      }
    };
    step(() => this.use());
    step(() => cuStreamSynchronize(this.stream));
    for (const ev of [...this.inflight, ...this.spare]) step(() => cuEventDestroy(ev));
    this.inflight.length = 0;
    this.spare.length = 0;
    step(() => cuStreamDestroy(this.stream));
    step(() => cuMemHostUnregister(this.host));
    step(() => cuDevicePrimaryCtxRelease(this.dev));
    if (current === this.ctx) current = null;
    if (first !== null) throw first;
  }
}

function ignore(f: () => void): void {
  try {
    f();
  } catch {
    // cleanup after a failure: the first error is the one reported
  }
}

/** A copier for a cuda window; throws NoCudaDriverError (src/sys/cuda.ts) where there is no driver. */
export function createCudaCopier(o: CudaCopierOptions): CudaCopier {
  return new CudaCopier(o);
}
