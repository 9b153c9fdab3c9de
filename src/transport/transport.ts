/**
 * The one small interface every transport implements for the driver core (src/driver):
 * register access to BAR0, a doorbell view, and DMA-visible memory.
 * Implementations: src/transport/emu.ts (embedded controller in a worker thread), later pcie (uio/vfio).
 */
import type { DmaAllocator } from '../mem/dma.js';

export interface Transport {
  /** Short kind, e.g. "emu", "pcie-uio", "pcie-vfio". */
  readonly kind: string;
  /** Human description of the device (URI or PCI address). */
  readonly description: string;
  /** Read a 32-bit controller register at byte offset `offset` of BAR0. */
  read32(offset: number): number;
  /** Write a 32-bit controller register at byte offset `offset` of BAR0. */
  write32(offset: number, value: number): void;
  /**
   * Doorbell registers as 32-bit cells starting at BAR0 offset 0x1000 (REG_DOORBELL_BASE):
   * cell index = (doorbellOffset - 0x1000) / 4. Written with Atomics.store on the fast path.
   */
  readonly doorbells: Int32Array;
  /**
   * Wake word for software controllers that sleep when idle (null for hardware). After writing a batch of
   * doorbells the driver calls wakeDevice(transport.wake) (see below).
   */
  readonly wake: Int32Array | null;
  /** DMA-visible memory for queues, PRP lists and data buffers. */
  readonly dma: DmaAllocator;
  /** Release the transport (stop the emulator, unmap BARs, restore drivers). Idempotent. */
  close(): Promise<void>;
  /**
   * How to hand queues to another process (src/driver/attach.ts), or null when this transport cannot (an
   * embedded controller over SharedArrayBuffers). Absent means null.
   */
  queueExporter?(): QueueExporter | null;
}

/** A byte range of a file descriptor another process can mmap (offset page aligned). */
export interface FdWindow {
  fd: number;
  offset: number;
  bytes: number;
}

/**
 * Memory for one queue pair handed to another process: the device reaches it contiguously at
 * [iova, iova + bytes), the other process maps it from `fd` (offset 0, `bytes`), the owner sees it in `view`.
 */
export interface ExportedMemory {
  readonly fd: number;
  readonly bytes: number;
  readonly iova: number;
  /** The owner's CPU view of all `bytes` (zeroed when exported). */
  readonly view: Uint8Array;
  /** The device no longer reaches it (IOMMU unmap, forget the segment); unmapped here, fd closed. Idempotent. */
  release(): void;
}

/**
 * What a transport supplies so that a queue pair can be driven by another process: memory the process can map
 * and the device can reach, the doorbell page(s) of BAR0 (never the register page) as an fd range, and, for a
 * software controller that sleeps, the page of its wake word.
 */
export interface QueueExporter {
  /** 'emu-memfd', 'pcie-uio' or 'pcie-vfio'. */
  readonly kind: string;
  /** Largest `exportMemory` this transport can supply (uio: one 2 MiB hugepage). */
  readonly maxExportBytes: number;
  /**
   * Whether exported memory stays safe when a client that may write it punches holes in it (fallocate): true where
   * the freed page is only the client's loss (an emulated controller's shmem refaults as zeros; VFIO keeps the
   * pages it mapped pinned), false for uio, whose hugetlb page goes back to the pool while the device still holds
   * its physical address. Where false, homid hands writable exported memory to root only.
   */
  readonly writableExportSafe: boolean;
  /** Fresh zeroed memory of at least `bytes` (rounded up to the mapping granularity). Throws with the reason. */
  exportMemory(bytes: number, name: string): ExportedMemory;
  /**
   * BAR0 [REG_DOORBELL_BASE, REG_DOORBELL_BASE + bytes) as a window of an fd (bytes a multiple of 4096). The fd
   * stays the transport's.
   */
  doorbellWindow(bytes: number): FdWindow;
  /** The 4096-byte page holding the wake word and the word's offset in it; null when the device never sleeps. */
  wakeWindow(): (FdWindow & { word: number }) | null;
}

/** Value of wake[0] while the device sleeps waiting for a doorbell. */
export const WAKE_SLEEPING = 1;
export const WAKE_AWAKE = 0;

/**
 * Wake a sleeping software device after doorbell writes. Costs one Atomics.load when the device is awake.
 * Protocol: the device stores WAKE_SLEEPING, re-checks its doorbells, then Atomics.wait(wake, 0, WAKE_SLEEPING);
 * the driver stores WAKE_AWAKE before notifying, so a wake that races the wait is never lost.
 */
export function wakeDevice(wake: Int32Array | null): void {
  if (wake !== null && Atomics.load(wake, 0) === WAKE_SLEEPING) {
    Atomics.store(wake, 0, WAKE_AWAKE);
    Atomics.notify(wake, 0);
  }
}
