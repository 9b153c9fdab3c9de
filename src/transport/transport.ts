/**
 * The interface every transport implements for the driver core (src/driver): register access, DMA-visible
 * memory, and the queues themselves: a transport sets up the admin queue, creates and deletes I/O queue pairs,
 * and owns how a queue tells the controller about new submissions and consumed completions (the notifier).
 * The core decides what queues exist (qid, size, the ring memory from `dma`) and drives them; the transport
 * decides how they come to exist on the controller and how their doorbells are rung.
 *
 * Implementations: src/transport/pcie.ts (uio / vfio: registers and doorbells in BAR0, queues made with Create
 * I/O CQ / SQ at the rings' IOVAs) and src/transport/emu.ts (the embedded controller: the same, plus waking its
 * thread when it sleeps). The PCIe-style queue commands they share are in src/transport/pcie-queues.ts.
 *
 * How NVMe over TCP plugs in (no code yet; the shape is what matters):
 *
 * - Registers: `read32` / `write32` become Fabrics Property Get / Set on the admin queue. They are synchronous
 *   here, so a TCP transport keeps its sockets in a worker thread (as the embedded controller keeps its state
 *   machine) and waits on a shared word for the property's response; the core reads CSTS only at bring-up,
 *   shutdown and in rate-limited health checks, which the worker can answer from a CSTS it refreshes with its
 *   Keep Alive traffic.
 * - `setupAdminQueue`: open the admin connection (ICReq / ICResp) and send Fabrics Connect for qid 0 with the
 *   admin queue's size. It runs before CC.EN, as AQA / ASQ / ACQ do on PCIe.
 * - `createIoQueues` / `deleteIoQueues`: one connection per I/O queue pair, Fabrics Connect with qid and SQ
 *   size; deletion closes the connection (after `afterSq`, the drain of what the target already answered). No
 *   Create / Delete I/O SQ / CQ admin command, no IOVA reaches the target.
 * - The rings stay where the core put them (memory from `dma`): the worker reads the SQ entries between the old
 *   and the new tail when `notifier(qid).sqTail` is called and sends them as command capsules; it writes each
 *   response capsule's completion into the CQ with the phase tag, as a controller would. `cqHead` only frees CQ
 *   room (TCP has no CQ head doorbell; the target learns the SQ head from SQHD). The core's fast path
 *   (submitIo / ring / poll) is then unchanged.
 * - Data: `dma` hands out host memory with addresses the transport itself assigned; the worker resolves PRP1 /
 *   PRP2 (and PRP lists) of an outgoing command through that table into in-capsule data or an SGL Transport
 *   Data Block, and moves the bytes with H2CData / C2HData PDUs.
 * - `queueExporter`: null (queues cannot be mapped by another process).
 */
import type { DmaAllocator } from '../mem/dma.js';
import type { DmaBufHandle, ImportedDmaBuf } from '../mem/dmabuf.js';
import type { Sqe } from '../nvme/sqe.js';

/** Where a queue pair's rings live: what the core allocated, in the transport's address space (IOVAs). */
export interface QueueRings {
  readonly qid: number;
  /** SQ and CQ entries (the same for both). */
  readonly entries: number;
  readonly sqIova: number;
  readonly cqIova: number;
}

/**
 * How a queue publishes to the controller. Called on the fast path, once per batch: implementations allocate
 * nothing. PCIe: a doorbell store; the embedded controller: the store plus a wake when it sleeps.
 */
export interface QueueNotifier {
  /** Entries up to (not including) slot `tail` of the SQ are ready. */
  sqTail(tail: number): void;
  /** Entries up to (not including) slot `head` of the CQ were consumed. */
  cqHead(head: number): void;
}

/** What a transport needs from the core to manage queues: running admin commands, and a log. */
export interface AdminChannel {
  /** Run one admin command on the admin queue; resolves on success, rejects with the core's typed error. */
  run(sqe: Sqe): Promise<unknown>;
  log(msg: string): void;
}

export interface Transport {
  /** Short kind, e.g. "emu", "pcie-uio", "pcie-vfio". */
  readonly kind: string;
  /** Human description of the device (URI or PCI address). */
  readonly description: string;
  /** Read a 32-bit controller register (byte offset into BAR0 on PCIe, a property on fabrics). */
  read32(offset: number): number;
  /** Write a 32-bit controller register. */
  write32(offset: number, value: number): void;
  /** DMA-visible memory for queues, PRP lists and data buffers. */
  readonly dma: DmaAllocator;
  /**
   * Tell the disabled controller where the admin queue lives, before CC.EN is set (PCIe: AQA, ASQ, ACQ). Called
   * again after every controller reset.
   */
  setupAdminQueue(rings: QueueRings): Promise<void>;
  /**
   * Create I/O queue pair `rings.qid` on the enabled controller (PCIe: Create I/O CQ, then Create I/O SQ bound
   * to it, at the rings' IOVAs). On failure nothing of it is left on the controller.
   */
  createIoQueues(admin: AdminChannel, rings: QueueRings): Promise<void>;
  /**
   * Delete I/O queue pair `qid` (PCIe: Delete I/O SQ, then `afterSq` (the core reaps what the controller
   * completed while deleting the SQ), then Delete I/O CQ). Rejects with the first failure.
   */
  deleteIoQueues(admin: AdminChannel, qid: number, afterSq?: () => void): Promise<void>;
  /**
   * The notifier of queue `qid` (0: the admin queue). Throws RangeError when the transport has no doorbell for
   * it (e.g. a BAR too small for that many queues).
   */
  notifier(qid: number): QueueNotifier;
  /** Release the transport (stop the emulator, unmap BARs, restore drivers). Idempotent. */
  close(): Promise<void>;
  /**
   * How to hand queues to another process (src/driver/attach.ts), or null when this transport cannot (an
   * embedded controller over SharedArrayBuffers). Absent means null.
   */
  queueExporter?(): QueueExporter | null;
  /**
   * A software controller that sleeps when idle: keep it polling until the returned release is called, for
   * initiators that store doorbells but cannot wake a thread (GPU kernels). Absent: the device never sleeps
   * (hardware) and nothing needs holding.
   */
  holdAwake?(): () => void;
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
  /**
   * Make a dma-buf the device can reach (src/mem/dmabuf.ts): its IOVA and a CPU view, or DmaBufImportError saying
   * why this transport cannot and what it would need (uio: always refused).
   */
  importDmaBuf(buf: DmaBufHandle, name: string): ImportedDmaBuf;
}
