/**
 * DMA memory for VFIO: anonymous shared memory mapped into the IOMMU (VFIO_IOMMU_MAP_DMA) at IOVAs chosen from
 * one IovaSpace per container, from 4 GiB up. Each mapping is one device-contiguous chunk; unmapped on release.
 *
 * The same IovaSpace hands out the IOVAs of memory exported to other processes (exportVfioMemory: a memfd the
 * owner maps into the IOMMU and a client maps from the fd, for queue pairs a daemon grants), so the transport's
 * own chunks and exported memory never collide.
 */
import { DmaAllocationError } from './dma.js';
import { DmaBufImportError, describeDmaBuf, mapDmaBufForImport, type DmaBufHandle, type ImportedDmaBuf } from './dmabuf.js';
import { insertFree, takeFirstFit, type FreeRange } from './free-list.js';
import { ChunkedDmaAllocator, type ChunkSource, type DmaChunk } from './pcie-dma.js';
import { MAP_ANONYMOUS, MAP_POPULATE, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, type Mapping } from '../sys/mman.js';
import { createShm, type ShmRegion } from '../sys/shm.js';

/** Where IOVAs start: above the 32-bit space (MSI window, low reserved ranges). */
export const VFIO_IOVA_BASE = 0x1_0000_0000;
/**
 * Where IOVAs end: 2^39 (512 GiB), the smallest input address width of common IOMMUs (QEMU's intel-iommu
 * default aw-bits=39).
 */
export const VFIO_IOVA_LIMIT = 2 ** 39;
/** IOVA ranges are 2 MiB aligned so the IOMMU can use large pages where it likes. */
export const VFIO_IOVA_ALIGN = 0x20_0000;
const DEFAULT_CHUNK = 4 * 1024 * 1024;
const MAX_CHUNK = 1024 * 1024 * 1024;
const PAGE = 4096;

export interface DmaMapper {
  mapDma(vaddr: bigint, iova: number, size: number): void;
  unmapDma(iova: number, size: number): void;
}

/** IOVA ranges of one container: first fit, 2 MiB aligned, freed ranges reused. */
export class IovaSpace {
  private readonly free_: FreeRange[];
  constructor(
    readonly base = VFIO_IOVA_BASE,
    readonly limit = VFIO_IOVA_LIMIT,
  ) {
    this.free_ = [{ start: 0, end: limit - base }];
  }

  /** Reserve `bytes` (rounded up to 2 MiB); returns the IOVA. */
  alloc(bytes: number): number {
    const need = Math.ceil(bytes / VFIO_IOVA_ALIGN) * VFIO_IOVA_ALIGN;
    if (!Number.isSafeInteger(need) || need <= 0) throw new DmaAllocationError(`invalid IOVA range size ${bytes}`);
    const start = takeFirstFit(this.free_, need, VFIO_IOVA_ALIGN, this.base);
    if (start < 0) throw new DmaAllocationError(`no free IOVA range of ${need} bytes below 0x${this.limit.toString(16)}`);
    return this.base + start;
  }

  /** Give back a range `alloc` returned (same `bytes`). */
  free(iova: number, bytes: number): void {
    const need = Math.ceil(bytes / VFIO_IOVA_ALIGN) * VFIO_IOVA_ALIGN;
    insertFree(this.free_, iova - this.base, iova - this.base + need);
  }
}

export class VfioDmaSource implements ChunkSource {
  readonly maxChunkBytes = MAX_CHUNK;
  private readonly maps: Array<{ m: Mapping; iova: number }> = [];

  constructor(
    private readonly mapper: DmaMapper,
    private readonly chunkBytes = DEFAULT_CHUNK,
    readonly iovas = new IovaSpace(),
  ) {}

  grow(minBytes: number): DmaChunk[] {
    const size = Math.max(this.chunkBytes, Math.ceil(minBytes / PAGE) * PAGE);
    let m: Mapping;
    try {
      m = mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0, 'VFIO DMA memory');
    } catch (e) {
      throw new DmaAllocationError(`cannot allocate ${size} bytes of DMA memory: ${(e as Error).message}`);
    }
    let iova: number;
    try {
      iova = this.iovas.alloc(size);
    } catch (e) {
      m.retire();
      throw e;
    }
    try {
      this.mapper.mapDma(m.address, iova, size);
    } catch (e) {
      this.iovas.free(iova, size);
      m.retire();
      throw new DmaAllocationError(`cannot map DMA memory into the IOMMU: ${(e as Error).message}`);
    }
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
      this.iovas.free(iova, m.length);
      m.retire();
    }
    this.maps.length = 0;
  }
}

export function openVfioDma(mapper: DmaMapper, chunkBytes?: number, iovas?: IovaSpace): ChunkedDmaAllocator {
  return new ChunkedDmaAllocator(new VfioDmaSource(mapper, chunkBytes, iovas), PAGE, 'VFIO DMA memory');
}

/** Shared memory another process can map (its memfd) that the device reaches at `iova` through the IOMMU. */
export interface VfioExportedMemory {
  readonly region: ShmRegion;
  readonly iova: number;
  /** VFIO_IOMMU_UNMAP_DMA, free the IOVA range, unmap here and close the memfd. Idempotent. */
  release(): void;
}

/**
 * A fresh memfd of `bytes` (rounded up to 4 KiB), mapped here and into the IOMMU at an IOVA from `iovas`
 * (the pages are pinned while mapped). The device stops reaching it on release(); another process that mapped
 * the memfd keeps its (now unpinned) memory until it unmaps.
 */
export function exportVfioMemory(mapper: DmaMapper, iovas: IovaSpace, bytes: number, name: string): VfioExportedMemory {
  const size = Math.ceil(bytes / PAGE) * PAGE;
  let region: ShmRegion;
  try {
    region = createShm(name, size);
  } catch (e) {
    throw new DmaAllocationError(`cannot create ${size} bytes of shared memory: ${(e as Error).message}`);
  }
  let iova: number;
  try {
    iova = iovas.alloc(size);
  } catch (e) {
    region.close();
    throw e;
  }
  try {
    mapper.mapDma(region.mapping.address, iova, size);
  } catch (e) {
    iovas.free(iova, size);
    region.close();
    throw new DmaAllocationError(`cannot map shared memory into the IOMMU: ${(e as Error).message}`);
  }
  let released = false;
  return {
    region,
    iova,
    release(): void {
      if (released) return;
      released = true;
      try {
        mapper.unmapDma(iova, size);
      } catch {
        // the container may be gone already: closing it drops every mapping
      }
      iovas.free(iova, size);
      region.close();
    },
  };
}

/**
 * Import a dma-buf for a VFIO container: mmap it (src/mem/dmabuf.ts) and VFIO_IOMMU_MAP_DMA the mapping at an IOVA
 * from `iovas`. Whether type1 accepts the mapping is the kernel's call (it pins pages pin_user_pages can pin, and
 * follows PFNMAP ranges only over non-RAM such as device BARs); a refusal comes back as a DmaBufImportError that
 * carries the kernel's errno and names the upstream importer (iommufd IOMMU_IOAS_MAP_FILE).
 */
export function importVfioDmaBuf(mapper: DmaMapper, iovas: IovaSpace, buf: DmaBufHandle, name: string): ImportedDmaBuf {
  if (buf.size % PAGE !== 0)
    throw new DmaBufImportError('pcie-vfio', buf.exporter, `a size that is a multiple of ${PAGE}`, `pcie-vfio cannot import ${describeDmaBuf(buf)} (${name}): its size is not a multiple of ${PAGE}`);
  const r = mapDmaBufForImport('pcie-vfio', buf);
  let iova: number;
  try {
    iova = iovas.alloc(buf.size);
  } catch (e) {
    r.close();
    throw e;
  }
  try {
    mapper.mapDma(r.mapping.address, iova, buf.size);
  } catch (e) {
    iovas.free(iova, buf.size);
    r.close();
    throw new DmaBufImportError(
      'pcie-vfio',
      buf.exporter,
      'iommufd IOMMU_IOAS_MAP_FILE (Linux 6.19+, vfio-pci exporters only) or an out-of-tree importer',
      `pcie-vfio cannot import ${describeDmaBuf(buf)} (${name}): VFIO_IOMMU_MAP_DMA of its mapping was refused by the kernel (${(e as Error).message}); ` +
        `type1 cannot pin this exporter's pages; the upstream importer is iommufd IOMMU_IOAS_MAP_FILE (6.19+, dma-bufs exported by vfio-pci only)`,
    );
  }
  let released = false;
  return {
    transport: 'pcie-vfio',
    iova,
    size: buf.size,
    view: new Uint8Array(r.buffer, 0, buf.size),
    exporter: buf.exporter,
    release(): void {
      if (released) return;
      released = true;
      try {
        mapper.unmapDma(iova, buf.size);
      } catch {
        // the container is gone: nothing is mapped any more
      }
      iovas.free(iova, buf.size);
      r.close();
    },
  };
}
