/**
 * DMA-visible memory as the driver core sees it: a CPU view plus the address the controller uses (IOVA).
 * Each transport supplies an allocator: shared memory segments for the embedded controller,
 * hugepages + physical addresses for uio, IOMMU-mapped memory for VFIO.
 */

/** A block of memory the controller can read and write by DMA. */
export interface DmaBuffer {
  /** Address as seen by the controller (bus address / IOVA). Always < 2^53. */
  readonly iova: number;
  /** Size in bytes. */
  readonly size: number;
  /** CPU view of exactly this buffer. */
  readonly bytes: Uint8Array;
}

export interface DmaAllocator {
  /** The memory page size (CC.MPS) the driver must use for PRPs with this allocator, in bytes. */
  readonly pageSize: number;
  /**
   * Allocate `size` bytes aligned to `align` (default: pageSize). The memory is zeroed.
   * Throws DmaAllocationError when the memory cannot be provided.
   */
  alloc(size: number, align?: number): DmaBuffer;
  /** Return a buffer obtained from alloc. Freeing twice or a foreign buffer throws. */
  free(buf: DmaBuffer): void;
  /** Bytes currently allocated (for leak checks and status). */
  readonly allocatedBytes: number;
}

export class DmaAllocationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DmaAllocationError';
  }
}
