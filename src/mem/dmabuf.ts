/**
 * Importing a dma-buf: a dma-buf fd in; out, for one transport, the address the controller reaches its bytes at
 * (an IOVA), together with a CPU mapping of the same pages, or one DmaBufImportError that names the transport,
 * the exporter and what an import would need.
 *
 * Which importer each case has (docs/DMABUF.md holds the full table):
 * - emu-memfd (the embedded controller): any dma-buf this process can mmap. The mapping becomes a DMA segment of
 *   the controller (ShmDmaMemory.importDmaBuf), so PRPs into the segment's IOVAs land in the dma-buf's pages.
 * - pcie-vfio: mmap the dma-buf and VFIO_IOMMU_MAP_DMA the mapping (importVfioDmaBuf in vfio-dma.ts). Type1
 *   pins what pin_user_pages can pin, or follows PFNMAP ranges of non-RAM (device BARs); whatever the kernel says
 *   about the exporter's mapping is passed on in the error. The upstream importer for vfio-pci exporters is
 *   iommufd IOMMU_IOAS_MAP_FILE (Linux 6.19+).
 * - pcie-uio: refused. uio hands out physical addresses, and there is no upstream way for user space to learn the
 *   bus addresses of a dma-buf's pages (it needs an out-of-tree importer module that attaches and maps it).
 * - GPU exporters (nv_dmabuf, amdgpu, ...): their memory is reached through the copy-engine path (emulated P2P,
 *   src/emu/device-window.ts) and is not imported here; a direct import needs an out-of-tree importer.
 *
 * A "memfd stand-in" (memfdStandIn) is a sealed memfd presented through this interface where the kernel has no
 * udmabuf (CI): it exercises the importers' logic with the same pages semantics, and is named as a stand-in in
 * every description and error. inspectDmaBuf never accepts one as a dma-buf.
 */
import * as fs from 'node:fs';
import { DmaBufError, inspectDmaBuf, mapDmaBuf } from '../sys/dmabuf.js';
import type { Mapping } from '../sys/mman.js';
import { closeFd, mapShmFd, requireSizeSealed, ShmRegion, ShmSealError } from '../sys/shm.js';

/** Exporters whose buffers are GPU (device) memory: routed to the copy-engine path, never imported here. */
export const GPU_DMABUF_EXPORTERS: readonly string[] = ['nv_dmabuf', 'nvidia', 'amdgpu', 'i915', 'xe', 'habanalabs'];
/** The exporter name a memfd stand-in reports. */
export const MEMFD_STAND_IN_EXPORTER = 'memfd-stand-in';

/** A dma-buf fd with the facts the kernel reported for it (or a memfd stand-in). */
export interface DmaBufHandle {
  readonly fd: number;
  readonly size: number;
  /** fdinfo exp_name ("udmabuf", "nv_dmabuf", ...), or MEMFD_STAND_IN_EXPORTER. */
  readonly exporter: string;
  /** A memfd presented as a dma-buf where the kernel has no udmabuf (tests); never a real dma-buf. */
  readonly standIn: boolean;
  /** Close the fd if this handle owns it. Idempotent. */
  close(): void;
}

/** A transport cannot import this dma-buf. */
export class DmaBufImportError extends Error {
  constructor(
    readonly transport: string,
    readonly exporter: string,
    /** What an import would need (a kernel feature, an out-of-tree module, another path). */
    readonly needs: string,
    message: string,
  ) {
    super(message);
    this.name = 'DmaBufImportError';
  }
}

/** A dma-buf the controller of one transport can reach. */
export interface ImportedDmaBuf {
  /** Which importer made it ('emu-memfd', 'pcie-vfio'). */
  readonly transport: string;
  /** Device-visible address of byte 0 (the buffer is contiguous in the controller's address space). */
  readonly iova: number;
  readonly size: number;
  /** The CPU mapping of the same pages. */
  readonly view: Uint8Array;
  readonly exporter: string;
  /** The controller no longer reaches it (segment forgotten / IOMMU unmapped); unmapped here. Idempotent. */
  release(): void;
}

/** What one transport does with dma-bufs. */
export interface DmaBufImporter {
  readonly transport: string;
  /** Import `buf` (named `name` in messages); throws DmaBufImportError when this transport cannot. */
  importDmaBuf(buf: DmaBufHandle, name: string): ImportedDmaBuf;
}

function handle(fd: number, size: number, exporter: string, standIn: boolean, ownFd: boolean): DmaBufHandle {
  let open = true;
  return {
    fd,
    size,
    exporter,
    standIn,
    close(): void {
      if (!open || !ownFd) return;
      open = false;
      closeFd(fd);
    },
  };
}

/**
 * A handle on dma-buf `fd`, checked with the kernel (inspectDmaBuf): throws DmaBufError when `fd` is not a dma-buf,
 * or is smaller than `minBytes`. With `ownFd` the handle closes the fd (also when this throws).
 */
export function openDmaBuf(fd: number, opts: { minBytes?: number; ownFd?: boolean } = {}): DmaBufHandle {
  try {
    const f = inspectDmaBuf(fd);
    if (opts.minBytes !== undefined && f.size < opts.minBytes) throw new DmaBufError(`dma-buf fd ${fd} (${f.exporter}) holds ${f.size} bytes, fewer than the ${opts.minBytes} asked for`);
    return handle(fd, f.size, f.exporter, false, opts.ownFd === true);
  } catch (e) {
    if (opts.ownFd === true) closeFd(fd);
    throw e;
  }
}

/**
 * STAND-IN: memfd `fd`, sealed against shrinking and growing (createShm makes them so), presented through the
 * dma-buf interface for machines whose kernel has no udmabuf. Its size is the file's. With `ownFd` the handle
 * closes the fd (also when this throws ShmSealError).
 */
export function memfdStandIn(fd: number, opts: { ownFd?: boolean } = {}): DmaBufHandle {
  try {
    const size = fs.fstatSync(fd).size;
    requireSizeSealed(fd, size);
    if (size <= 0) throw new ShmSealError(fd, `memfd ${fd} is empty`);
    return handle(fd, size, MEMFD_STAND_IN_EXPORTER, true, opts.ownFd === true);
  } catch (e) {
    if (opts.ownFd === true) closeFd(fd);
    throw e;
  }
}

/** One line on a handle, for messages: "udmabuf dma-buf (fd 7, 65536 bytes)". */
export function describeDmaBuf(buf: DmaBufHandle): string {
  return buf.standIn ? `memfd stand-in for a dma-buf (fd ${buf.fd}, ${buf.size} bytes)` : `${buf.exporter} dma-buf (fd ${buf.fd}, ${buf.size} bytes)`;
}

/** Whether the exporter hands out GPU memory. */
export function isGpuExporter(exporter: string): boolean {
  return GPU_DMABUF_EXPORTERS.includes(exporter);
}

/** The refusal for GPU memory on any importer of this module: it goes through the copy-engine path. */
export function gpuExporterRefusal(transport: string, buf: DmaBufHandle): DmaBufImportError {
  return new DmaBufImportError(
    transport,
    buf.exporter,
    'the copy-engine path (emulated P2P device window) or an out-of-tree importer',
    `${transport} cannot import ${describeDmaBuf(buf)}: it is GPU memory; payloads for it go through the copy-engine path ` +
      `(a device window of the embedded controller, src/emu/device-window.ts); a controller DMAing into it directly needs an out-of-tree dma-buf importer (no upstream importer takes GPU exporters)`,
  );
}

/** uio's refusal: it works with physical addresses, and nothing upstream gives user space a dma-buf's bus addresses. */
export function uioRefusal(buf: DmaBufHandle): DmaBufImportError {
  return new DmaBufImportError(
    'pcie-uio',
    buf.exporter,
    'an out-of-tree dma-buf importer module (attach + map for bus addresses), or vfio with an IOMMU',
    `pcie-uio cannot import ${describeDmaBuf(buf)}: uio programs physical addresses, and no upstream interface gives user space the bus addresses of a dma-buf's pages; ` +
      `that needs an out-of-tree importer module (attach and map the dma-buf); use the device through vfio instead`,
  );
}

/**
 * A CPU mapping of a dma-buf (or stand-in), MAP_SHARED, as a ShmRegion that does not own the fd. Throws
 * DmaBufImportError naming `transport` when the exporter refuses mmap (GPU exporters: the copy-engine refusal).
 */
export function mapDmaBufForImport(transport: string, buf: DmaBufHandle): ShmRegion {
  if (buf.standIn) {
    try {
      return mapShmFd(buf.fd, buf.size, { requireSizeSeals: true });
    } catch (e) {
      if (e instanceof ShmSealError) throw new DmaBufImportError(transport, buf.exporter, 'a memfd sealed against size changes', `${transport} cannot import ${describeDmaBuf(buf)}: ${e.message}`);
      throw e;
    }
  }
  if (isGpuExporter(buf.exporter)) throw gpuExporterRefusal(transport, buf);
  let m: Mapping;
  try {
    m = mapDmaBuf(buf.fd, buf.size);
  } catch (e) {
    throw new DmaBufImportError(transport, buf.exporter, 'an exporter that supports mmap', `${transport} cannot import ${describeDmaBuf(buf)}: the exporter refuses mmap (${(e as Error).message})`);
  }
  return new ShmRegion(buf.fd, buf.size, m.buffer, m, false, false);
}
