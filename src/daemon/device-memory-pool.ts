/**
 * Device memory for mediated leases (openQueuePair `dataMemory: 'device'`): one pool per device, over the
 * device-memory source its config names (`device_memory = "peer:<bdf>[:bar]"`: a memory BAR of a peer PCI
 * function, attached to the device's transport by pcie.ts `peerBarDma`, so uio reaches it at its bus address and
 * VFIO through the IOMMU). A lease's data buffer is carved from it; the mediated checks (daemon/mediated.ts)
 * already keep every PRP of the lease inside that buffer, so a command aimed at another part of the BAR is
 * denied like any other data range outside the buffer.
 *
 * The client's CPU view. The kernel has no per-range descriptor of a BAR here (sysfs `resourceN` maps the whole
 * BAR; a per-range dma-buf of a BAR, VFIO_DEVICE_FEATURE_DMA_BUF, is Linux 6.19 and only for vfio-pci-bound
 * devices), so the descriptor homid hands out reaches ALL of the pool's memory, not just the lease's window, and
 * neither the descriptor nor a mapping made from it can be taken back: a client may keep both after its lease and
 * its connection are gone. homid therefore fails closed:
 * - only root and the uids the config lists (`device_memory_users`) get device memory at all ('device-memory-denied'):
 *   whoever ever held it must be trusted with everything anyone later puts in it;
 * - a pool serves ONE uid at a time (another uid is refused 'device-memory-busy' until the holder's last
 *   device-memory lease is gone), so two listed users never hold buffers side by side;
 * - every buffer is zeroed when handed out and again when given back (after its queue is deleted);
 * - a lease without a write grant gets a read-only descriptor (O_RDONLY: the kernel refuses a writable shared
 *   mapping of it).
 *
 * Limits: bytes per uid (`device_memory_per_client`), and the pool's size (allocator exhaustion: 'no-memory').
 */
import { constants, openSync } from 'node:fs';
import { join } from 'node:path';
import type { DmaBuffer } from '../mem/dma.js';
import type { DeviceMemoryAllocator } from '../mem/device-memory.js';
import { deviceDir, sysPaths } from '../pci/sysfs.js';
import { PcieTransport } from '../transport/pcie.js';
import type { Transport } from '../transport/transport.js';
import { HomidError } from './errors.js';

const PAGE = 4096;

/** What homid's config names as a device's device memory. */
export interface DeviceMemoryConfig {
  /** The peer PCI function (normalised) and its BAR. */
  address: string;
  bar: number;
  /** Bytes of the BAR to use from its start (undefined: all of it). */
  bytes?: number;
  /** Bytes one uid may hold. */
  perClient: number;
  /** Who may use it besides root (user names or uids). */
  users: (string | number)[];
}

/** A device-memory source attached to a device's transport, as the pool uses it. */
export interface DeviceMemorySupply {
  readonly what: string;
  readonly allocator: DeviceMemoryAllocator;
  /** A new descriptor onto the memory (read-only unless `write`), for a client; the caller closes it. */
  clientFd(write: boolean): number;
  /** Offset in that descriptor of device address `iova` of the allocator. */
  fdOffsetOf(iova: number): number;
  /** Give the source back (detach from the transport). */
  close(): void;
}

/** How homid gets a device's supply (tests: a stand-in on the embedded controller). */
export type DeviceMemorySupplier = (device: string, transport: Transport, cfg: DeviceMemoryConfig) => DeviceMemorySupply;

/** Production: a peer PCI function's BAR on a user-space PCIe transport (pci/peer-bar.ts checks the BAR). */
export const peerBarSupplier: DeviceMemorySupplier = (device, t, cfg) => {
  if (!(t instanceof PcieTransport)) {
    throw new HomidError('no-device-memory', `device '${device}' (${t.kind}) cannot reach a peer BAR: device memory needs the user-space PCIe driver (uio or vfio)`);
  }
  const allocator = t.peerBarDma(cfg.address, cfg.bar, cfg.bytes);
  const path = join(deviceDir(sysPaths(), cfg.address), `resource${cfg.bar}`);
  const base = allocator.placement.iova;
  return {
    what: allocator.placement.what,
    allocator,
    clientFd: (write) => openSync(path, (write ? constants.O_RDWR : constants.O_RDONLY) | constants.O_SYNC),
    fdOffsetOf: (iova) => iova - base,
    close: () => t.detachDeviceMemory(allocator),
  };
};

/** One lease's data buffer in device memory. */
export interface DeviceMemoryBuffer {
  /** Device address (bus address / IOVA) and homid's CPU view. */
  readonly buffer: DmaBuffer;
  readonly what: string;
  /** Page-aligned offset of the buffer in the descriptor clientFd gives. */
  readonly fdOffset: number;
  clientFd(write: boolean): number;
  /** Zero it and give it back (idempotent). */
  release(): void;
}

/** The device memory of one device, lent to one uid at a time (see the module comment). */
export class DeviceMemoryPool {
  /** The uid whose leases hold buffers, or null. */
  private holder: number | null = null;
  private heldBytes = 0;
  private buffers = 0;
  private closed = false;

  constructor(
    readonly device: string,
    readonly transport: Transport,
    private readonly supply: DeviceMemorySupply,
    private readonly perClient: number,
  ) {}

  get what(): string {
    return this.supply.what;
  }
  /** The uid holding it (null: free). */
  get holderUid(): number | null {
    return this.holder;
  }
  get bytesHeld(): number {
    return this.heldBytes;
  }

  /** A zeroed buffer of `bytes` (rounded up to pages) for a client of `uid` (allowed by homid); HomidError when refused. */
  take(uid: number, bytes: number): DeviceMemoryBuffer {
    if (this.closed) throw new HomidError('device-down', `device '${this.device}': its device memory is gone`);
    if (this.holder !== null && this.holder !== uid) {
      throw new HomidError(
        'device-memory-busy',
        `device '${this.device}': ${this.supply.what} is lent to another user; device memory serves one uid at a time (a holder's descriptor reaches all of it)`,
      );
    }
    const size = Math.ceil(bytes / PAGE) * PAGE;
    if (this.heldBytes + size > this.perClient) {
      throw new HomidError(
        'limit-device-memory',
        `device '${this.device}': uid ${uid} may hold ${this.perClient} bytes of device memory (device_memory_per_client); it holds ${this.heldBytes} and asked for ${size} more`,
      );
    }
    let buf: DmaBuffer;
    try {
      buf = this.supply.allocator.alloc(size, PAGE);
    } catch (e) {
      throw new HomidError('no-memory', `device '${this.device}': ${(e as Error).message}`);
    }
    buf.bytes.fill(0);
    this.holder = uid;
    this.heldBytes += size;
    this.buffers++;
    let released = false;
    return {
      buffer: buf,
      what: this.supply.what,
      fdOffset: this.supply.fdOffsetOf(buf.iova),
      clientFd: (write) => this.supply.clientFd(write),
      release: () => {
        if (released) return;
        released = true;
        if (!this.closed) {
          // nothing of this client's stays for the next holder
          buf.bytes.fill(0);
          this.supply.allocator.free(buf);
        }
        this.heldBytes -= size;
        if (--this.buffers === 0) this.holder = null;
      },
    };
  }

  /** Detach the source (homid stopping, or the device's transport replaced). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.supply.close();
    } catch {
      // the transport may be closed already, which released the source
    }
  }
}
