/**
 * The driver backend: HOMI's user-space NVMe driver core over a transport (the embedded controller for emu://
 * URIs today, PCIe for pci: later). Buffers come from the transport's DMA allocator with prebuilt PRPs
 * (h1 = PRP1, h2 = PRP2); queue sets are I/O queue pairs, and the benchmark engine drives the QueuePair itself.
 */
import type { Controller } from '../driver/controller.js';
import { openController, type OpenedController } from '../device/controller.js';
import { dataPointer, type DataPointer } from '../driver/dptr.js';
import type { QueuePair } from '../driver/queue-pair.js';
import { parseDeviceUri } from '../device/uri.js';
import type { DmaAllocator, DmaBuffer } from '../mem/dma.js';
import type { DeviceMemoryAllocator } from '../mem/device-memory.js';
import { PcieTransport } from '../transport/pcie.js';
import { writeCmdSqe } from '../nvme/sqe.js';
import { statusName } from '../nvme/status.js';
import type { Transport } from '../transport/transport.js';
import type { QueueContract } from '../queue/contract.js';
import { PromiseIoDevice, checkBufferFor, checkRange, checkSlice } from './common.js';
import {
  IoOp,
  IoOpenError,
  type BackendName,
  type BufferPlacement,
  type IoBuffer,
  type IoCompletionHandler,
  type IoDevice,
  type IoFeatures,
  type IoGeometry,
  type IoOpcode,
  type IoQueue,
} from './types.js';

const DSM_ATTR_DEALLOCATE = 1 << 2;
const DSM_SLOTS = 256;

class DriverBuffer implements IoBuffer {
  constructor(
    private readonly dev: DriverDevice,
    readonly dma: DmaBuffer,
    readonly bytes: Uint8Array,
    readonly offset: number,
    private readonly dp: DataPointer,
  ) {}
  get size(): number {
    return this.bytes.length;
  }
  get h1(): number {
    return this.dp.prp1;
  }
  get h2(): number {
    return this.dp.prp2;
  }
  slice(offset: number, length: number): IoBuffer {
    checkSlice(this.size, offset, length);
    return this.dev.sliceOf(this, offset, length);
  }
  release(): void {
    this.dp.release();
  }
  pagesSpanned(pageSize: number): number {
    const first = (this.dma.iova + this.offset) % pageSize;
    return Math.ceil((first + this.size) / pageSize);
  }
}

export class DriverDevice extends PromiseIoDevice implements IoDevice {
  readonly transport: string;
  readonly model: string;
  readonly geometry: IoGeometry;
  readonly features: IoFeatures;
  private readonly queues = new Set<IoQueue>();
  /** Data pointers of every buffer and slice, by parent DMA buffer. */
  private readonly buffers = new Map<DmaBuffer, DriverBuffer[]>();
  private closed = false;
  /** Where data buffers come from: the transport's host DMA memory, or device memory attached to it. */
  private readonly data: DmaAllocator;
  readonly bufferPlacement: string;
  /** The device-memory allocator of --buffers peer:..., or null for host memory. */
  readonly deviceMemory: DeviceMemoryAllocator | null;

  readonly t: Transport;
  readonly c: Controller;

  private constructor(
    readonly backend: BackendName,
    readonly uri: string,
    private readonly opened: OpenedController,
    nsid: number,
    deviceMemory: DeviceMemoryAllocator | null,
  ) {
    super();
    const c = opened.controller;
    this.t = opened.transport;
    this.c = c;
    this.deviceMemory = deviceMemory;
    this.data = deviceMemory ?? this.t.dma;
    if (deviceMemory === null) this.bufferPlacement = 'host memory';
    else {
      const pl = deviceMemory.placement;
      this.bufferPlacement = `device memory: ${pl.what}, ${pl.bytes} bytes at ${pl.route === 'iommu' ? 'IOVA' : 'bus address'} 0x${pl.iova.toString(16)}${pl.route === 'iommu' && pl.busAddress !== null ? ` (bus address 0x${pl.busAddress.toString(16)})` : ''}`;
    }
    const ns = c.namespace(nsid);
    const mdts = Number.isFinite(c.identity.mdts) ? c.identity.mdts : 65536 * ns.blockSize;
    this.geometry = { blockSize: ns.blockSize, blocks: ns.blocks, maxTransferBytes: Math.min(mdts, 65536 * ns.blockSize), nsid, maxQueueDepth: c.cap.maxQueueEntries - 1 };
    this.model = c.identity.model;
    this.transport = this.t.kind;
    this.features = { flush: true, writeZeroes: true, deallocate: true };
  }

  static async open(uri: string, backend: BackendName, nsid: number, maxQueues: number, buffers?: BufferPlacement): Promise<DriverDevice> {
    const parsed = parseDeviceUri(uri);
    if (backend === 'emu' && parsed.kind !== 'emu') throw new IoOpenError(`--backend emu needs an emu:// URI; '${uri}' is not one`);
    const opened = await openController(parsed, {
      ioQueues: maxQueues,
      check: (c) => {
        try {
          c.namespace(nsid);
        } catch (e) {
          throw new IoOpenError(`${uri}: namespace ${nsid}: ${(e as Error).message}`);
        }
      },
    });
    let dm: DeviceMemoryAllocator | null = null;
    if (buffers !== undefined && buffers.kind === 'peer') {
      const t = opened.transport;
      try {
        if (!(t instanceof PcieTransport)) throw new IoOpenError(`--buffers peer: ${uri} is not a PCIe controller`);
        dm = t.peerBarDma(buffers.address, buffers.bar);
      } catch (e) {
        await opened.close();
        if (e instanceof IoOpenError) throw e;
        throw new IoOpenError(`--buffers peer:${buffers.address}:${buffers.bar}: ${(e as Error).message}`);
      }
    }
    return new DriverDevice(backend, uri, opened, nsid, dm);
  }

  get maxQueuePairs(): number {
    return this.c.maxIoQueuePairs;
  }

  allocBuffer(size: number): IoBuffer {
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`buffer size must be a positive integer, got ${size}`);
    const dma = this.data.alloc(size);
    const b = new DriverBuffer(this, dma, dma.bytes.subarray(0, size), 0, dataPointer(this.t.dma, dma, 0, size));
    this.buffers.set(dma, [b]);
    return b;
  }

  sliceOf(parent: DriverBuffer, offset: number, length: number): IoBuffer {
    const off = parent.offset + offset;
    const s = new DriverBuffer(this, parent.dma, parent.dma.bytes.subarray(off, off + length), off, dataPointer(this.t.dma, parent.dma, off, length));
    this.buffers.get(parent.dma)!.push(s);
    return s;
  }

  freeBuffer(buf: IoBuffer): void {
    const b = buf as DriverBuffer;
    const list = b instanceof DriverBuffer ? this.buffers.get(b.dma) : undefined;
    if (!list || list[0] !== b) throw new RangeError('freeBuffer: not a buffer allocated (and not yet freed) by this device; free the parent, not a slice');
    for (const x of list) x.release();
    this.buffers.delete(b.dma);
    this.data.free(b.dma);
  }

  override async createQueue(depth: number): Promise<IoQueue> {
    if (!Number.isInteger(depth) || depth < 1 || depth > this.geometry.maxQueueDepth) {
      throw new RangeError(`queue depth must be 1..${this.geometry.maxQueueDepth} (the controller allows ${this.geometry.maxQueueDepth + 1} queue entries), got ${depth}`);
    }
    const qp = await this.c.createQueuePair({ entries: depth + 1 });
    const q = new DriverQueue(this, qp);
    this.queues.add(q);
    return q;
  }

  async deleteQueue(q: DriverQueue, qp: QueuePair): Promise<void> {
    this.queues.delete(q);
    if (this.c.state === 'live') await this.c.deleteQueuePair(qp);
  }

  override statusName(status: number): string {
    return statusName(status);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.promises.close();
      for (const q of [...this.queues]) await q.close();
      await this.c.close();
    } finally {
      for (const [dma, list] of this.buffers) {
        for (const x of list) x.release();
        this.data.free(dma);
      }
      this.buffers.clear();
      await this.opened.close();
    }
  }
}

/** An I/O queue pair behind the unified interface. Deallocate (DSM) uses a per-queue page of range slots. */
class DriverQueue implements IoQueue {
  readonly engineQueue: QueueContract;
  private dsmPage: DmaBuffer | null = null;
  private readonly dsmFree: number[] = [];
  private readonly dsmByTag = new Map<number, number>();
  private cb: IoCompletionHandler | null = null;
  private readonly inner: IoCompletionHandler = (tag, status, result) => {
    const slot = this.dsmByTag.get(tag);
    if (slot !== undefined) {
      this.dsmByTag.delete(tag);
      this.dsmFree.push(slot);
    }
    this.cb!(tag, status, result);
  };
  private closed = false;

  constructor(
    private readonly dev: DriverDevice,
    private readonly qp: QueuePair,
  ) {
    this.engineQueue = qp;
  }

  get capacity(): number {
    return this.qp.capacity;
  }
  get outstanding(): number {
    return this.qp.outstanding;
  }

  submitIo(opcode: number, nsid: number, slba: number, nlb: number, h1: number, h2: number, tag: number): number {
    if (opcode === IoOp.Deallocate) return this.submitDsm(nsid, slba, nlb, tag);
    if (opcode === IoOp.Flush) return this.qp.submitIo(opcode, nsid, 0, 1, 0, 0, tag);
    return this.qp.submitIo(opcode, nsid, slba, nlb, h1, h2, tag);
  }

  private submitDsm(nsid: number, slba: number, nlb: number, tag: number): number {
    if (this.dsmPage === null) {
      this.dsmPage = this.dev.t.dma.alloc(DSM_SLOTS * 16);
      for (let i = DSM_SLOTS - 1; i >= 0; i--) this.dsmFree.push(i);
    }
    if (this.dsmFree.length === 0 || this.dsmByTag.has(tag)) return -1;
    const slot = this.dsmFree.pop()!;
    const page = this.dsmPage;
    const v = new DataView(page.bytes.buffer, page.bytes.byteOffset + slot * 16, 16);
    v.setUint32(0, 0, true);
    v.setUint32(4, nlb >>> 0, true);
    v.setUint32(8, slba >>> 0, true);
    v.setUint32(12, Math.floor(slba / 4294967296) >>> 0, true);
    const prp1 = page.iova + slot * 16;
    // CDW10 NR = 0: one range (0's based); CDW11: the Deallocate attribute
    const cid = this.qp.submitSqe((dw, at) => writeCmdSqe(dw, at, IoOp.Deallocate, nsid >>> 0, prp1, 0, 0, DSM_ATTR_DEALLOCATE, 0), tag);
    if (cid < 0) {
      this.dsmFree.push(slot);
      return -1;
    }
    this.dsmByTag.set(tag, slot);
    return cid;
  }

  submit(op: IoOpcode, lba: number, nlb: number, buf: IoBuffer | null, tag: number): number {
    const g = this.dev.geometry;
    checkRange(op, lba, nlb, g.blocks);
    checkBufferFor(op, nlb, g.blockSize, buf);
    if ((op === IoOp.Read || op === IoOp.Write) && nlb * g.blockSize > g.maxTransferBytes) {
      throw new RangeError(`${nlb * g.blockSize}-byte transfer exceeds the controller's maximum of ${g.maxTransferBytes} bytes`);
    }
    if (buf instanceof DriverBuffer && buf.size !== nlb * g.blockSize && buf.pagesSpanned(this.dev.t.dma.pageSize) > 2) {
      // The prebuilt PRP2 of a buffer over more than two pages is a PRP list pointer; a shorter transfer would
      // need another one.
      throw new RangeError(`a ${nlb * g.blockSize}-byte transfer on a ${buf.size}-byte buffer: pass a slice of exactly the transfer length (buf.slice(0, ${nlb * g.blockSize}))`);
    }
    return this.submitIo(op, g.nsid, lba, nlb, buf ? buf.h1 : 0, buf ? buf.h2 : 0, tag);
  }

  ring(): void {
    this.qp.ring();
  }

  poll(onComplete: IoCompletionHandler, max?: number): number {
    if (this.dsmByTag.size === 0) return this.qp.poll(onComplete, max);
    this.cb = onComplete;
    return this.qp.poll(this.inner, max);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const deadline = performance.now() + 10_000;
    while (this.qp.outstanding > 0 && performance.now() < deadline) {
      this.poll(() => undefined);
      await new Promise<void>((r) => setImmediate(r));
    }
    await this.dev.deleteQueue(this, this.qp);
    if (this.dsmPage) this.dev.t.dma.free(this.dsmPage);
  }
}
