/**
 * DMA memory for VFIO: anonymous shared memory mapped into the IOMMU (VFIO_IOMMU_MAP_DMA) at IOVAs chosen by
 * a bump allocator from 4 GiB up. Each mapping is one device-contiguous chunk; unmapped on release.
 */
import { DmaAllocationError } from './dma.js';
import { ChunkedDmaAllocator, type ChunkSource, type DmaChunk } from './pcie-dma.js';
import { MAP_ANONYMOUS, MAP_POPULATE, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, type Mapping } from '../sys/mman.js';

/** Where IOVAs start: above the 32-bit space (MSI window, low reserved ranges). */
export const VFIO_IOVA_BASE = 0x1_0000_0000;
const DEFAULT_CHUNK = 4 * 1024 * 1024;
const MAX_CHUNK = 1024 * 1024 * 1024;

export interface DmaMapper {
  mapDma(vaddr: bigint, iova: number, size: number): void;
  unmapDma(iova: number, size: number): void;
}

export class VfioDmaSource implements ChunkSource {
  readonly maxChunkBytes = MAX_CHUNK;
  private nextIova = VFIO_IOVA_BASE;
  private readonly maps: Array<{ m: Mapping; iova: number }> = [];

  constructor(
    private readonly mapper: DmaMapper,
    private readonly chunkBytes = DEFAULT_CHUNK,
  ) {}

  grow(minBytes: number): DmaChunk[] {
    const size = Math.max(this.chunkBytes, Math.ceil(minBytes / 4096) * 4096);
    let m: Mapping;
    try {
      m = mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0, 'VFIO DMA memory');
    } catch (e) {
      throw new DmaAllocationError(`cannot allocate ${size} bytes of DMA memory: ${(e as Error).message}`);
    }
    // Keep IOVAs 2 MiB aligned so the IOMMU can use large pages where it likes.
    const iova = this.nextIova;
    try {
      this.mapper.mapDma(m.address, iova, size);
    } catch (e) {
      m.retire();
      throw new DmaAllocationError(`cannot map DMA memory into the IOMMU: ${(e as Error).message}`);
    }
    this.nextIova += Math.ceil(size / 0x20_0000) * 0x20_0000;
    this.maps.push({ m, iova });
    return [{ iova, bytes: new Uint8Array(m.buffer) }];
  }

  release(): void {
    for (const { m, iova } of this.maps) {
      try {
        this.mapper.unmapDma(iova, m.length);
      } catch {
        // the container may be gone already: closing it drops every mapping
      }
      m.retire();
    }
    this.maps.length = 0;
  }
}

export function openVfioDma(mapper: DmaMapper, chunkBytes?: number): ChunkedDmaAllocator {
  return new ChunkedDmaAllocator(new VfioDmaSource(mapper, chunkBytes), 4096, 'VFIO DMA memory');
}
