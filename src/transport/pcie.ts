/**
 * The PCIe transport: a real NVMe controller (a PCI function) driven from user space, through
 * uio_pci_generic (hugepages + physical addresses) or vfio-pci (type1 IOMMU, IOVAs chosen here).
 *
 * openPcie checks every precondition it can before touching the binding (device exists and is NVMe, not in
 * use, driver loaded, hugepages / VFIO group viable), then switches the driver under a DriverBinding guard,
 * maps BAR0, enables bus mastering and sets up DMA memory. close() disables the controller if it is still
 * enabled, turns bus mastering back off, releases DMA memory and the BAR, and restores the original driver.
 */
import { closeSync, constants, existsSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ChunkedDmaAllocator } from '../mem/pcie-dma.js';
import { checkHugepagePreconditions, exportHugepageMemory, HUGEPAGE_SIZE, openHugepageDma, type HugepageOptions } from '../mem/hugepage.js';
import { exportVfioMemory, importVfioDmaBuf, IovaSpace, openVfioDma } from '../mem/vfio-dma.js';
import { uioRefusal, type DmaBufHandle, type ImportedDmaBuf } from '../mem/dmabuf.js';
import { openDeviceMemory, type DeviceMemoryAllocator, type DeviceMemoryRegion } from '../mem/device-memory.js';
import { DEFAULT_PEER_BAR, mapPeerBar, peerBarInfo } from '../pci/peer-bar.js';
import { CC_EN, CSTS_RDY, REG_CAP, REG_CC, REG_CSTS, REG_DOORBELL_BASE } from '../nvme/registers.js';
import { PciError, normalizePciAddress } from '../pci/address.js';
import { bindTo, DriverBinding } from '../pci/bind.js';
import { enableBusMaster, PCI_COMMAND, PCI_COMMAND_MASTER, restoreBusMaster, sysfsConfigSpace, type ConfigSpace } from '../pci/config.js';
import { mapSysfsBar0 } from '../pci/bar.js';
import { PCI_CLASS_NVME, pciFunction, type PciFunction } from '../pci/discover.js';
import { deviceDir, driverDir, sysPaths, type SysPathOptions, type SysPaths } from '../pci/sysfs.js';
import { assertGroupViable, VfioDevice, VfioError } from '../pci/vfio.js';
import type { Mapping } from '../sys/mman.js';
import { doorbellNotifier, doorbellStrideOf } from './doorbell.js';
import { createIoQueuePair, deleteIoQueuePair, programAdminQueue } from './pcie-queues.js';
import type { AdminChannel, ExportedMemory, FdWindow, QueueExporter, QueueNotifier, QueueRings, Transport } from './transport.js';

export type PcieMode = 'uio' | 'vfio' | 'auto';

export const UIO_DRIVER = 'uio_pci_generic';
export const VFIO_DRIVER = 'vfio-pci';

export interface PcieOptions extends SysPathOptions {
  /** 'auto' (default): vfio when the function has an IOMMU group and vfio-pci is loaded, else uio. */
  mode?: PcieMode;
  /** Hugepage settings for uio (proc / uid overrides are for tests). */
  hugepages?: Omit<HugepageOptions, 'proc' | 'sys'> & { uid?: number };
  /** VFIO DMA chunk size in bytes (default 4 MiB). */
  vfioChunkBytes?: number;
  /** Allow a function whose class is not NVMe. */
  anyClass?: boolean;
  /** Skip the in-use check (dangerous). */
  force?: boolean;
  log?: (msg: string) => void;
}

const DEAD = 0xffffffff;
const PAGE = 4096;

/** Pick the mode for 'auto' and check the explicit ones can work. */
export function resolvePcieMode(p: SysPaths, f: PciFunction, mode: PcieMode): 'uio' | 'vfio' {
  const vfioReady = f.iommuGroup !== null && existsSync(join(p.dev, 'vfio', 'vfio')) && (existsSync(driverDir(p, VFIO_DRIVER)) || f.driver === VFIO_DRIVER);
  if (mode === 'auto') return vfioReady ? 'vfio' : 'uio';
  if (mode === 'vfio') {
    if (f.iommuGroup === null) {
      throw new VfioError(`${f.address} has no IOMMU group: VFIO needs an enabled IOMMU (e.g. intel_iommu=on); use mode=uio`);
    }
    if (!existsSync(join(p.dev, 'vfio', 'vfio'))) throw new VfioError(`${join(p.dev, 'vfio', 'vfio')} is missing: load vfio-pci (modprobe vfio-pci)`);
    return 'vfio';
  }
  if (f.iommuGroup !== null) {
    let type = '';
    try {
      type = readFileSync(join(p.sys, 'kernel', 'iommu_groups', String(f.iommuGroup), 'type'), 'utf8').trim();
    } catch {
      // older kernels: unknown
    }
    if (type.startsWith('DMA')) {
      throw new PciError(`${f.address} sits behind a translating IOMMU (group ${f.iommuGroup}, type ${type}): physical addresses from uio would fault; use mode=vfio (or boot with iommu=pt)`);
    }
  }
  return 'uio';
}

export class PcieTransport implements Transport {
  readonly kind: string;
  readonly description: string;
  /** BAR0's doorbell registers as 32-bit cells from REG_DOORBELL_BASE on (what the notifiers store into). */
  readonly doorbells: Int32Array;
  readonly dma: ChunkedDmaAllocator;
  readonly mode: 'uio' | 'vfio';
  readonly address: string;
  readonly info: PciFunction;
  readonly binding: DriverBinding;
  private readonly regs: Int32Array;
  private closed = false;
  private closing: Promise<void> | null = null;
  /** uio: resource0 opened for clients to map the doorbell page(s) from (lazily, kept until close). */
  private resourceFd = -1;
  private exporter: QueueExporter | null = null;
  /** CAP.DSTRD in bytes, read at the first notifier (0 until then). */
  private stride = 0;
  /** Device-memory allocators attached (closed before the host DMA memory). */
  private readonly deviceMemory: DeviceMemoryAllocator[] = [];

  /** Use openPcie(). */
  constructor(
    mode: 'uio' | 'vfio',
    info: PciFunction,
    binding: DriverBinding,
    private readonly bar: Mapping,
    private readonly cfg: ConfigSpace,
    private readonly commandBefore: number,
    dma: ChunkedDmaAllocator,
    private readonly vfio: VfioDevice | null,
    private readonly log: (m: string) => void,
    private readonly exportOpts: { resource0: string; hugepages: HugepageOptions; iovas: IovaSpace | null; sys: SysPaths },
  ) {
    this.mode = mode;
    this.kind = `pcie-${mode}`;
    this.address = info.address;
    this.info = info;
    this.binding = binding;
    this.description = `pci:${info.address} (${binding.driver})`;
    this.dma = dma;
    this.regs = new Int32Array(bar.buffer, 0, bar.length >>> 2);
    this.doorbells = new Int32Array(bar.buffer, REG_DOORBELL_BASE, (bar.length - REG_DOORBELL_BASE) >>> 2);
  }

  /**
   * A DMA allocator over device memory (a peer BAR, a p2pmem mapping, an imported dma-buf): uio reaches it at
   * its bus address, VFIO through this container's IOMMU at an IOVA from the transport's own IOVA space. The
   * transport owns it from now on (closed with the transport, before the host DMA memory); on failure the
   * region is released.
   */
  attachDeviceMemory(region: DeviceMemoryRegion, bytes?: number): DeviceMemoryAllocator {
    if (this.closed) {
      region.release();
      throw new PciError(`${this.address} is closed`);
    }
    const iovas = this.exportOpts.iovas;
    const a =
      this.mode === 'vfio' && this.vfio !== null && iovas !== null ? openDeviceMemory(region, { kind: 'iommu', mapper: this.vfio, iovas }, bytes) : openDeviceMemory(region, { kind: 'bus' }, bytes);
    this.deviceMemory.push(a);
    return a;
  }

  /**
   * Data buffers in BAR `bar` (default 2) of the peer function `peer` (see pci/peer-bar.ts for what a BAR must
   * be), its first `bytes` (default all of it).
   */
  peerBarDma(peer: string, bar = DEFAULT_PEER_BAR, bytes?: number): DeviceMemoryAllocator {
    const info = peerBarInfo(this.exportOpts.sys, peer, bar, { controller: this.address, ...(bytes !== undefined ? { minBytes: bytes } : {}) });
    return this.attachDeviceMemory(mapPeerBar(this.exportOpts.sys, info, bytes ?? info.size), bytes);
  }

  /** Give back one device-memory allocator before the transport closes (unmapped from the IOMMU, region released). */
  detachDeviceMemory(a: DeviceMemoryAllocator): void {
    const i = this.deviceMemory.indexOf(a);
    if (i < 0) throw new PciError(`${this.address}: that device memory is not attached here`);
    this.deviceMemory.splice(i, 1);
    a.close();
  }

  /** Bytes of BAR0 mapped. */
  get barBytes(): number {
    return this.bar.length;
  }

  /**
   * Queue pairs for other processes: vfio, memfd memory mapped into this container's IOMMU at IOVAs from the
   * transport's own IOVA space, doorbells through the VFIO device fd; uio, one 2 MiB hugetlb memfd per queue
   * pair (physically contiguous, the IOVA is its physical address), doorbells through sysfs resource0.
   */
  queueExporter(): QueueExporter {
    if (this.exporter) return this.exporter;
    const vfio = this.vfio;
    const iovas = this.exportOpts.iovas;
    const checkWindow = (bytes: number): void => {
      if (this.closed) throw new PciError(`${this.address} is closed`);
      if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % PAGE !== 0) throw new PciError(`doorbell window of ${bytes} bytes is not a whole number of pages`);
      if (REG_DOORBELL_BASE + bytes > this.bar.length) throw new PciError(`${this.address}: doorbell window of ${bytes} bytes runs past BAR0's ${this.bar.length} mapped bytes`);
    };
    if (this.mode === 'vfio' && vfio !== null && iovas !== null) {
      this.exporter = {
        kind: 'pcie-vfio',
        maxExportBytes: 1 << 30,
        writableExportSafe: true,
        exportMemory: (bytes: number, name: string): ExportedMemory => {
          if (this.closed) throw new PciError(`${this.address} is closed`);
          const m = exportVfioMemory(vfio, iovas, bytes, name);
          return { fd: m.region.fd, bytes: m.region.size, iova: m.iova, view: new Uint8Array(m.region.buffer), release: () => m.release() };
        },
        doorbellWindow: (bytes: number): FdWindow => {
          checkWindow(bytes);
          return vfio.bar0Window(REG_DOORBELL_BASE, bytes);
        },
        wakeWindow: () => null,
        importDmaBuf: (buf: DmaBufHandle, name: string): ImportedDmaBuf => {
          if (this.closed) throw new PciError(`${this.address} is closed`);
          return importVfioDmaBuf(vfio, iovas, buf, name);
        },
      };
    } else {
      const hp = this.exportOpts.hugepages;
      this.exporter = {
        kind: 'pcie-uio',
        maxExportBytes: HUGEPAGE_SIZE,
        writableExportSafe: false,
        exportMemory: (bytes: number, name: string): ExportedMemory => {
          if (this.closed) throw new PciError(`${this.address} is closed`);
          if (bytes > HUGEPAGE_SIZE) throw new RangeError(`${this.address} (uio): a queue pair's SQ, CQ and data must fit one 2 MiB hugepage, asked for ${bytes} bytes`);
          const m = exportHugepageMemory(name, hp);
          return { fd: m.region.fd, bytes: m.region.size, iova: m.iova, view: new Uint8Array(m.region.buffer), release: () => m.release() };
        },
        doorbellWindow: (bytes: number): FdWindow => {
          checkWindow(bytes);
          if (this.resourceFd < 0) {
            try {
              this.resourceFd = openSync(this.exportOpts.resource0, constants.O_RDWR | constants.O_SYNC);
            } catch (e) {
              throw new PciError(`cannot open ${this.exportOpts.resource0}: ${(e as Error).message}`);
            }
          }
          return { fd: this.resourceFd, offset: REG_DOORBELL_BASE, bytes };
        },
        wakeWindow: () => null,
        importDmaBuf: (buf: DmaBufHandle): ImportedDmaBuf => {
          throw uioRefusal(buf);
        },
      };
    }
    return this.exporter;
  }

  private closeResourceFd(): void {
    if (this.resourceFd >= 0) {
      const fd = this.resourceFd;
      this.resourceFd = -1;
      closeSync(fd);
    }
  }

  setupAdminQueue(rings: QueueRings): Promise<void> {
    programAdminQueue((off, v) => this.write32(off, v), rings);
    return Promise.resolve();
  }

  createIoQueues(admin: AdminChannel, rings: QueueRings): Promise<void> {
    return createIoQueuePair(admin, rings);
  }

  deleteIoQueues(admin: AdminChannel, qid: number, afterSq?: () => void): Promise<void> {
    return deleteIoQueuePair(admin, qid, afterSq);
  }

  /** A doorbell store into BAR0; nothing else (hardware never sleeps). */
  notifier(qid: number): QueueNotifier {
    if (this.stride === 0) this.stride = doorbellStrideOf((off) => this.read32(off));
    return doorbellNotifier(this.doorbells, qid, this.stride, null);
  }

  read32(offset: number): number {
    if (this.closed) return DEAD;
    return Atomics.load(this.regs, offset >> 2) >>> 0;
  }

  write32(offset: number, value: number): void {
    if (this.closed) return;
    Atomics.store(this.regs, offset >> 2, value | 0);
  }

  /**
   * Synchronous release for exit paths (process exit, fatal signal), run just before the original driver is
   * rebound: bus mastering off (no more DMA), BAR unmapped and VFIO fds closed. vfio-pci's unbind waits until
   * every user of the device is gone, so a process that still held its VFIO fds or BAR mapping while
   * unbinding would wait for itself forever.
   */
  releaseSync(): void {
    this.closed = true;
    try {
      const cur = this.cfg.read16(PCI_COMMAND);
      if ((cur & PCI_COMMAND_MASTER) !== 0) this.cfg.write16(PCI_COMMAND, cur & ~PCI_COMMAND_MASTER);
    } catch {
      // device gone
    }
    for (const f of [...this.deviceMemory.splice(0).map((a) => () => a.close()), () => this.bar.retire(), () => this.closeResourceFd(), () => this.cfg.close(), () => this.vfio?.close()]) {
      try {
        f();
      } catch {
        // keep releasing
      }
    }
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = this.performClose();
    return this.closing;
  }

  private async performClose(): Promise<void> {
    const errors: string[] = [];
    const step = (what: string, f: () => void): void => {
      try {
        f();
      } catch (e) {
        errors.push(`${what}: ${(e as Error).message}`);
      }
    };
    // A controller still enabled (driver not closed, or crashed) must stop before its memory goes away.
    try {
      const cc = this.read32(REG_CC);
      if (cc !== DEAD && (cc & CC_EN) !== 0) {
        this.log(`${this.address}: controller still enabled at close; disabling`);
        this.write32(REG_CC, cc & ~CC_EN);
        const toMs = Math.min(((this.read32(REG_CAP) >>> 24) & 0xff) * 500 || 500, 5000);
        const deadline = Date.now() + toMs;
        while ((this.read32(REG_CSTS) & CSTS_RDY) !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
      }
    } catch (e) {
      errors.push(`disable: ${(e as Error).message}`);
    }
    this.closed = true;
    step('bus master', () => restoreBusMaster(this.cfg, this.commandBefore));
    for (const a of this.deviceMemory.splice(0)) step('device memory', () => a.close());
    step('DMA memory', () => this.dma.close());
    step('BAR0', () => this.bar.retire());
    step('resource0', () => this.closeResourceFd());
    step('config', () => this.cfg.close());
    if (this.vfio) step('VFIO', () => this.vfio!.close());
    this.binding.beforeRestore = undefined;
    step('driver binding', () => this.binding.restore());
    if (errors.length > 0) throw new PciError(`closing ${this.address}: ${errors.join('; ')}`);
  }
}

/**
 * A PCIe NVMe function through VFIO descriptors another process (homid) set up and passed: the function is
 * already bound to vfio-pci by that process, which also puts its binding back; this transport never touches
 * the binding. It owns the descriptors (closed on close()).
 */
export async function openPcieVfioFds(address: string, group: number, fds: { container: number; group: number; device: number }, opts: PcieOptions = {}): Promise<PcieTransport> {
  const p = sysPaths(opts);
  const log = opts.log ?? (() => undefined);
  const addr = normalizePciAddress(address);
  const f = pciFunction(addr, p);
  const binding = new DriverBinding(p, addr, f.driver, f.driverOverride, f.driver ?? VFIO_DRIVER, true);
  const dev = VfioDevice.fromDescriptors(addr, group, fds);
  const undo: Array<() => void> = [() => dev.close()];
  try {
    const bar = dev.mapBar0();
    undo.push(() => bar.retire());
    const cfg = dev.configSpace();
    const iovas = new IovaSpace();
    const dma = openVfioDma(dev, opts.vfioChunkBytes, iovas);
    undo.push(() => dma.close());
    const before = enableBusMaster(cfg);
    undo.push(() => restoreBusMaster(cfg, before));
    if (bar.length <= REG_DOORBELL_BASE) throw new PciError(`${addr}: BAR0 is only ${bar.length} bytes, too small for NVMe doorbells`);
    const hp: HugepageOptions = { ...opts.hugepages, proc: p.proc, sys: p.sys };
    const t = new PcieTransport('vfio', f, binding, bar, cfg, before, dma, dev, log, { resource0: join(deviceDir(p, addr), 'resource0'), hugepages: hp, iovas, sys: p });
    await Promise.resolve();
    return t;
  } catch (e) {
    for (const u of undo.reverse()) {
      try {
        u();
      } catch {
        // keep undoing
      }
    }
    throw e;
  }
}

/** Open a PCIe NVMe function as a Transport. Errors leave the device bound as it was. */
export async function openPcie(address: string, opts: PcieOptions = {}): Promise<PcieTransport> {
  const p = sysPaths(opts);
  const log = opts.log ?? (() => undefined);
  const addr = normalizePciAddress(address);
  const f = pciFunction(addr, p);
  if (f.classCode !== PCI_CLASS_NVME && !opts.anyClass) {
    throw new PciError(`${addr} is not an NVMe controller (class 0x${f.classCode.toString(16).padStart(6, '0')}, NVMe is 0x010802)`);
  }
  const mode = resolvePcieMode(p, f, opts.mode ?? 'auto');
  const hp: HugepageOptions = { ...opts.hugepages, proc: p.proc, sys: p.sys };
  if (mode === 'uio') checkHugepagePreconditions(hp, 1);
  else assertGroupViable(p, f.iommuGroup!, addr);
  const driver = mode === 'uio' ? UIO_DRIVER : VFIO_DRIVER;
  const binding = bindTo(addr, driver, { ...p, force: opts.force });
  log(`${addr}: bound to ${driver} (was ${f.driver ?? 'no driver'})`);
  const undo: Array<() => void> = [];
  try {
    let bar: Mapping;
    let cfg: ConfigSpace;
    let dma: ChunkedDmaAllocator;
    let vfio: VfioDevice | null = null;
    let iovas: IovaSpace | null = null;
    if (mode === 'uio') {
      bar = mapSysfsBar0(p, addr);
      undo.push(() => bar.retire());
      cfg = sysfsConfigSpace(p, addr);
      undo.push(() => cfg.close());
      dma = openHugepageDma(hp);
    } else {
      const groupDev = join(p.dev, 'vfio', String(f.iommuGroup));
      for (let i = 0; i < 200 && !existsSync(groupDev); i++) await new Promise((r) => setTimeout(r, 5));
      const dev = VfioDevice.open(p, addr, f.iommuGroup!);
      vfio = dev;
      undo.push(() => dev.close());
      bar = dev.mapBar0();
      undo.push(() => bar.retire());
      cfg = dev.configSpace();
      iovas = new IovaSpace();
      dma = openVfioDma(dev, opts.vfioChunkBytes, iovas);
    }
    undo.push(() => dma.close());
    const before = enableBusMaster(cfg);
    undo.push(() => restoreBusMaster(cfg, before));
    if (bar.length <= REG_DOORBELL_BASE) throw new PciError(`${addr}: BAR0 is only ${bar.length} bytes, too small for NVMe doorbells`);
    const t = new PcieTransport(mode, pciFunction(addr, p), binding, bar, cfg, before, dma, vfio, log, { resource0: join(deviceDir(p, addr), 'resource0'), hugepages: hp, iovas, sys: p });
    binding.beforeRestore = () => t.releaseSync();
    return t;
  } catch (e) {
    for (const u of undo.reverse()) {
      try {
        u();
      } catch {
        // keep undoing
      }
    }
    try {
      binding.restore();
    } catch (e2) {
      throw new PciError(`${(e as Error).message}; restoring the original driver of ${addr} failed too: ${(e2 as Error).message}`);
    }
    throw e;
  }
}
