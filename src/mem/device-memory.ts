/**
 * DMA buffers in device memory: a DmaAllocator over one region of another device's memory (a peer PCI
 * function's BAR today; a p2pmem mapping or an imported dma-buf plug in the same way), for payloads the NVMe
 * controller writes straight into that device (peer-to-peer DMA) instead of host memory.
 *
 * A source supplies a `DeviceMemoryRegion` (a CPU view and, when it has one, the bus address). How the
 * controller reaches it is the `DeviceMemoryRoute`:
 * - 'bus': no IOMMU translation (uio, IOMMU off or passthrough): the controller uses the bus address itself.
 * - 'iommu': the region's CPU mapping is entered into the controller's IOMMU domain (VFIO_IOMMU_MAP_DMA) at an
 *   IOVA from the transport's own IovaSpace, so device memory and host DMA memory never collide; unmapped on
 *   close. Only the window that was mapped is reachable: a PRP anywhere else in the device faults.
 *
 * The region is one device-contiguous chunk; buffers are carved from it by ChunkedDmaAllocator and the
 * allocator refuses anything beyond it (device memory does not grow).
 */
import { DmaAllocationError } from './dma.js';
import { ChunkedDmaAllocator, type ChunkSource, type DmaChunk } from './pcie-dma.js';
import type { DmaMapper, IovaSpace } from './vfio-dma.js';

const PAGE = 4096;

/** One span of another device's memory, mapped into this process. */
export interface DeviceMemoryRegion {
  /** What it is, for messages and reports (e.g. "BAR2 of 0000:00:04.0"). */
  readonly what: string;
  /** CPU view of exactly the region (an uncached or write-combined MMIO mapping for a BAR). */
  readonly bytes: Uint8Array;
  /** Process virtual address of bytes[0] (what VFIO_IOMMU_MAP_DMA takes). */
  readonly cpuAddress: bigint;
  /**
   * The address a bus master uses for bytes[0] without IOMMU translation; null when the source has none (an
   * imported buffer known only through a mapping).
   */
  readonly busAddress: number | null;
  /** Unmap and close what the source opened. Idempotent. */
  release(): void;
}

export type DeviceMemoryRoute = { kind: 'bus' } | { kind: 'iommu'; mapper: DmaMapper; iovas: IovaSpace };

/** Where buffers of one device-memory allocator live, for reports and for homid's mediated checks. */
export interface DeviceMemoryPlacement {
  readonly what: string;
  /** 'bus' or 'iommu' (the route). */
  readonly route: 'bus' | 'iommu';
  /** First device address (bus address or IOVA) of the window the controller reaches. */
  readonly iova: number;
  readonly bytes: number;
  /** The bus address of the region, when the source knows it. */
  readonly busAddress: number | null;
}

/** A ChunkSource of exactly one chunk: the device-memory window. */
export class DeviceMemorySource implements ChunkSource {
  readonly maxChunkBytes: number;
  readonly placement: DeviceMemoryPlacement;
  private handedOut = false;
  private released = false;
  private readonly mappedIova: number | null;

  /**
   * Take `bytes` (a whole number of pages, default the region's size) of the region from offset 0 and make
   * them reachable by the controller along `route`. Throws DmaAllocationError (and releases nothing: the caller
   * owns the region until this returns) when the window does not fit or cannot be mapped.
   */
  constructor(
    private readonly region: DeviceMemoryRegion,
    private readonly route: DeviceMemoryRoute,
    bytes = region.bytes.byteLength,
  ) {
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % PAGE !== 0)
      throw new DmaAllocationError(`${region.what}: a device-memory window must be a positive whole number of 4 KiB pages, got ${bytes}`);
    if (bytes > region.bytes.byteLength) throw new DmaAllocationError(`${region.what} holds ${region.bytes.byteLength} bytes; cannot use ${bytes}`);
    if (region.cpuAddress % BigInt(PAGE) !== 0n) throw new DmaAllocationError(`${region.what}: the CPU mapping is not page aligned`);
    let iova: number;
    if (route.kind === 'bus') {
      const bus = region.busAddress;
      if (bus === null) throw new DmaAllocationError(`${region.what} has no bus address: it can reach the controller only through the IOMMU`);
      if (!Number.isSafeInteger(bus) || bus <= 0 || bus % PAGE !== 0) throw new DmaAllocationError(`${region.what}: bus address 0x${bus.toString(16)} is not a page-aligned address below 2^53`);
      iova = bus;
      this.mappedIova = null;
    } else {
      iova = route.iovas.alloc(bytes);
      try {
        route.mapper.mapDma(region.cpuAddress, iova, bytes);
      } catch (e) {
        route.iovas.free(iova, bytes);
        throw new DmaAllocationError(`cannot enter ${region.what} into the IOMMU: ${(e as Error).message}`);
      }
      this.mappedIova = iova;
    }
    this.maxChunkBytes = bytes;
    this.placement = { what: region.what, route: route.kind, iova, bytes, busAddress: region.busAddress };
  }

  grow(minBytes: number): DmaChunk[] {
    if (this.released) throw new DmaAllocationError(`${this.region.what} is released`);
    if (this.handedOut || minBytes > this.maxChunkBytes) {
      throw new DmaAllocationError(`${this.region.what} is full: its ${this.maxChunkBytes}-byte window has no free block of ${minBytes} bytes (device memory does not grow)`);
    }
    this.handedOut = true;
    return [{ iova: this.placement.iova, bytes: this.region.bytes.subarray(0, this.maxChunkBytes) }];
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    if (this.route.kind === 'iommu' && this.mappedIova !== null) {
      try {
        this.route.mapper.unmapDma(this.mappedIova, this.maxChunkBytes);
      } catch {
        // the container may be gone already: closing it drops every mapping
      }
      this.route.iovas.free(this.mappedIova, this.maxChunkBytes);
    }
    this.region.release();
  }
}

/** A ChunkedDmaAllocator whose only chunk is device memory; it releases the region on close(). */
export class DeviceMemoryAllocator extends ChunkedDmaAllocator {
  constructor(private readonly dev: DeviceMemorySource) {
    super(dev, PAGE, dev.placement.what);
  }
  get placement(): DeviceMemoryPlacement {
    return this.dev.placement;
  }
}

/**
 * Open a device-memory allocator over `region` along `route` (window: `bytes`, default all of it). On failure
 * the region is released.
 */
export function openDeviceMemory(region: DeviceMemoryRegion, route: DeviceMemoryRoute, bytes?: number): DeviceMemoryAllocator {
  let src: DeviceMemorySource;
  try {
    src = new DeviceMemorySource(region, route, bytes);
  } catch (e) {
    region.release();
    throw e;
  }
  return new DeviceMemoryAllocator(src);
}
