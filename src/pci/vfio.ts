/**
 * A PCI function opened through VFIO with the type1 IOMMU: container + group + device fds, BAR0 mapped,
 * config space through the config region, and DMA mapping of process memory at IOVAs this process chooses.
 */
import { closeSync, constants, openSync } from 'node:fs';
import { join } from 'node:path';
import { ioctl, OsError } from '../sys/libc.js';
import { ioctlLong, ioctlString, mmap, MAP_SHARED, PROT_READ, PROT_WRITE, type Mapping } from '../sys/mman.js';
import {
  decodeRegionInfo,
  encodeDmaMap,
  encodeDmaUnmap,
  encodeGroupStatus,
  encodeRegionInfo,
  REGION_INFO_SIZE,
  VFIO_API_VERSION,
  VFIO_CHECK_EXTENSION,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_GET_API_VERSION,
  VFIO_GROUP_FLAGS_VIABLE,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_PCI_BAR0_REGION_INDEX,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_SET_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  type RegionInfo,
} from '../sys/vfio.js';
import { PciError } from './address.js';
import { groupPeers } from './bind.js';
import { FdConfigSpace, type ConfigSpace } from './config.js';
import type { SysPaths } from './sysfs.js';

const PAGE = 4096;

export class VfioError extends PciError {
  constructor(message: string) {
    super(message);
    this.name = 'VfioError';
  }
}

/** Drivers that leave an IOMMU group viable for VFIO (the kernel's own rule: DMA-ownership aware drivers). */
export const VFIO_VIABLE_DRIVERS = new Set(['vfio-pci', 'pci-stub', 'pcieport']);

/**
 * Check, before anything is rebound, that every other function in the group is unbound or bound to a
 * driver that keeps the group viable. Throws one VfioError naming the others.
 */
export function assertGroupViable(p: SysPaths, group: number, address: string): void {
  const bad = groupPeers(p, group, address).filter((d) => d.driver !== null && !VFIO_VIABLE_DRIVERS.has(d.driver));
  if (bad.length > 0) {
    throw new VfioError(
      `IOMMU group ${group} of ${address} also holds ${bad.map((d) => `${d.address} (bound to ${d.driver})`).join(', ')}: ` +
        `VFIO needs every function of the group bound to vfio-pci or to no driver; ${address} was left as it was`,
    );
  }
}

function wrap<T>(what: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof OsError) throw new VfioError(`${what}: ${e.code} (errno ${e.errno})`);
    throw e;
  }
}

export class VfioDevice {
  readonly address: string;
  readonly group: number;
  readonly iommuType: number;
  private container = -1;
  private groupFd = -1;
  private deviceFd = -1;
  private closed = false;
  private readonly configRegion: RegionInfo;

  private constructor(address: string, group: number, container: number, groupFd: number, deviceFd: number, iommuType: number) {
    this.address = address;
    this.group = group;
    this.container = container;
    this.groupFd = groupFd;
    this.deviceFd = deviceFd;
    this.iommuType = iommuType;
    this.configRegion = this.regionInfo(VFIO_PCI_CONFIG_REGION_INDEX);
  }

  /** Open the container, attach the group, pick the type1 IOMMU, get the device fd. */
  static open(p: SysPaths, address: string, group: number): VfioDevice {
    const fds: number[] = [];
    try {
      const containerPath = join(p.dev, 'vfio', 'vfio');
      const container = wrap(`open ${containerPath}`, () => openSync(containerPath, constants.O_RDWR));
      fds.push(container);
      const api = wrap('VFIO_GET_API_VERSION', () => ioctlLong(container, VFIO_GET_API_VERSION, 0));
      if (api !== VFIO_API_VERSION) throw new VfioError(`unknown VFIO API version ${api} (expected ${VFIO_API_VERSION})`);
      const v2 = wrap('VFIO_CHECK_EXTENSION', () => ioctlLong(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU)) > 0;
      const v1 = v2 || wrap('VFIO_CHECK_EXTENSION', () => ioctlLong(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU)) > 0;
      if (!v1) throw new VfioError('the VFIO container does not support the type1 IOMMU (is vfio_iommu_type1 loaded and the IOMMU on?)');
      const groupPath = join(p.dev, 'vfio', String(group));
      const groupFd = wrap(`open ${groupPath}`, () => openSync(groupPath, constants.O_RDWR));
      fds.push(groupFd);
      const st = encodeGroupStatus();
      wrap('VFIO_GROUP_GET_STATUS', () => ioctl(groupFd, VFIO_GROUP_GET_STATUS, st));
      const flags = new DataView(st.buffer).getUint32(4, true);
      if ((flags & VFIO_GROUP_FLAGS_VIABLE) === 0) {
        const peers = groupPeers(p, group, address).map((d) => `${d.address} (${d.driver ?? 'no driver'})`);
        throw new VfioError(`IOMMU group ${group} is not viable: every function in it must be bound to vfio-pci or to no driver${peers.length ? `; it also holds ${peers.join(', ')}` : ''}`);
      }
      const cfd = new Uint8Array(4);
      new DataView(cfd.buffer).setInt32(0, container, true);
      wrap('VFIO_GROUP_SET_CONTAINER', () => ioctl(groupFd, VFIO_GROUP_SET_CONTAINER, cfd));
      const type = v2 ? VFIO_TYPE1v2_IOMMU : VFIO_TYPE1_IOMMU;
      wrap('VFIO_SET_IOMMU', () => ioctlLong(container, VFIO_SET_IOMMU, type));
      const deviceFd = wrap(`VFIO_GROUP_GET_DEVICE_FD(${address})`, () => ioctlString(groupFd, VFIO_GROUP_GET_DEVICE_FD, address));
      fds.push(deviceFd);
      return new VfioDevice(address, group, container, groupFd, deviceFd, type);
    } catch (e) {
      for (const fd of fds.reverse()) {
        try {
          closeSync(fd);
        } catch {
          // ignore
        }
      }
      throw e;
    }
  }

  /**
   * A device from descriptors another process set up and passed (SCM_RIGHTS): the container with the group
   * attached and the type1 IOMMU set, the group, the device. This object owns them from now on (close()).
   */
  static fromDescriptors(address: string, group: number, fds: { container: number; group: number; device: number }): VfioDevice {
    return new VfioDevice(address, group, fds.container, fds.group, fds.device, VFIO_TYPE1v2_IOMMU);
  }

  /** The three descriptors, to pass to another process (still owned by this object). */
  descriptors(): { container: number; group: number; device: number } {
    if (this.closed) throw new VfioError(`${this.address}: the VFIO device is closed`);
    return { container: this.container, group: this.groupFd, device: this.deviceFd };
  }

  regionInfo(index: number): RegionInfo {
    let buf = encodeRegionInfo(index);
    wrap(`VFIO_DEVICE_GET_REGION_INFO(${index})`, () => ioctl(this.deviceFd, VFIO_DEVICE_GET_REGION_INFO, buf));
    let info = decodeRegionInfo(buf);
    if (info.argsz > REGION_INFO_SIZE && info.argsz <= 65536) {
      buf = encodeRegionInfo(index, info.argsz);
      wrap(`VFIO_DEVICE_GET_REGION_INFO(${index})`, () => ioctl(this.deviceFd, VFIO_DEVICE_GET_REGION_INFO, buf));
      info = decodeRegionInfo(buf);
    }
    return info;
  }

  /**
   * Map BAR0. When the whole BAR cannot be mapped (a sparse region hiding the MSI-X table), map the sparse
   * area that starts at offset 0, which holds the registers and doorbells.
   */
  mapBar0(): Mapping {
    const r = this.regionInfo(VFIO_PCI_BAR0_REGION_INDEX);
    if (r.size === 0) throw new VfioError(`${this.address}: BAR0 is not implemented`);
    if ((r.flags & VFIO_REGION_INFO_FLAG_MMAP) === 0) throw new VfioError(`${this.address}: VFIO does not allow mapping BAR0`);
    let len = r.size;
    if (r.sparse !== null) {
      const first = r.sparse.find((a) => a.offset === 0);
      if (!first) throw new VfioError(`${this.address}: BAR0's mappable areas do not include the registers at offset 0`);
      len = first.size;
    }
    try {
      return mmap(len, PROT_READ | PROT_WRITE, MAP_SHARED, this.deviceFd, r.offset, `${this.address} BAR0 (VFIO)`);
    } catch (e) {
      throw new VfioError(`cannot map BAR0 of ${this.address} through VFIO: ${(e as Error).message}`);
    }
  }

  /**
   * A page-aligned window [barOffset, barOffset + bytes) of BAR0 as a range of the device fd, for another
   * process to mmap (the fd stays this device's). Refused unless VFIO allows mapping that range (the region's
   * MMAP flag and, when it lists sparse areas, one area covering it).
   */
  bar0Window(barOffset: number, bytes: number): { fd: number; offset: number; bytes: number } {
    if (this.closed) throw new VfioError(`${this.address}: the VFIO device is closed`);
    if (!Number.isSafeInteger(barOffset) || barOffset < 0 || barOffset % PAGE !== 0 || !Number.isSafeInteger(bytes) || bytes <= 0 || bytes % PAGE !== 0) {
      throw new VfioError(`${this.address}: BAR0 window [${barOffset}, +${bytes}) is not page aligned`);
    }
    const r = this.regionInfo(VFIO_PCI_BAR0_REGION_INDEX);
    if ((r.flags & VFIO_REGION_INFO_FLAG_MMAP) === 0) throw new VfioError(`${this.address}: VFIO does not allow mapping BAR0`);
    const end = barOffset + bytes;
    const fits = r.sparse === null ? end <= r.size : r.sparse.some((a) => a.offset <= barOffset && end <= a.offset + a.size);
    if (!fits) throw new VfioError(`${this.address}: BAR0 [0x${barOffset.toString(16)}, 0x${end.toString(16)}) is not in a mappable area of the region`);
    return { fd: this.deviceFd, offset: r.offset + barOffset, bytes };
  }

  /** Config space through the config region (pread / pwrite on the device fd). */
  configSpace(): ConfigSpace {
    return new FdConfigSpace(this.deviceFd, this.configRegion.offset, `${this.address} config (VFIO)`, false);
  }

  /** Map [vaddr, vaddr + size) at `iova` for device reads and writes (pins the pages). */
  mapDma(vaddr: bigint, iova: number, size: number): void {
    wrap(`VFIO_IOMMU_MAP_DMA(iova 0x${iova.toString(16)}, ${size} bytes)`, () => ioctl(this.container, VFIO_IOMMU_MAP_DMA, encodeDmaMap(vaddr, iova, size)));
  }

  unmapDma(iova: number, size: number): void {
    if (this.closed) return;
    wrap(`VFIO_IOMMU_UNMAP_DMA(iova 0x${iova.toString(16)})`, () => ioctl(this.container, VFIO_IOMMU_UNMAP_DMA, encodeDmaUnmap(iova, size)));
  }

  /** Close device, group and container (the group leaves the container; the IOMMU drops every mapping). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of [this.deviceFd, this.groupFd, this.container]) {
      try {
        if (fd >= 0) closeSync(fd);
      } catch {
        // ignore
      }
    }
    this.deviceFd = this.groupFd = this.container = -1;
  }
}
