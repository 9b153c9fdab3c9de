/**
 * VFIO ioctl numbers and struct layouts (linux/vfio.h, type1 IOMMU). VFIO defines every request with
 * _IO(VFIO_TYPE, VFIO_BASE + n): no size or direction bits, so request = (';' << 8) | (100 + n).
 */

/** _IO(type, nr) = (type << 8) | nr (direction and size bits are zero). */
export function _IO(type: number, nr: number): number {
  return ((type & 0xff) << 8) | (nr & 0xff);
}

export const VFIO_TYPE = 0x3b; // ';'
export const VFIO_BASE = 100;
const vfioIo = (n: number): number => _IO(VFIO_TYPE, VFIO_BASE + n);

export const VFIO_API_VERSION = 0;
/** Extensions / IOMMU types (VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU). */
export const VFIO_TYPE1_IOMMU = 1;
export const VFIO_TYPE1v2_IOMMU = 3;

// Container (/dev/vfio/vfio)
export const VFIO_GET_API_VERSION = vfioIo(0); // 0x3b64
export const VFIO_CHECK_EXTENSION = vfioIo(1); // 0x3b65
export const VFIO_SET_IOMMU = vfioIo(2); // 0x3b66
// Group (/dev/vfio/<n>)
export const VFIO_GROUP_GET_STATUS = vfioIo(3); // 0x3b67
export const VFIO_GROUP_SET_CONTAINER = vfioIo(4); // 0x3b68
export const VFIO_GROUP_UNSET_CONTAINER = vfioIo(5); // 0x3b69
export const VFIO_GROUP_GET_DEVICE_FD = vfioIo(6); // 0x3b6a
// Device
export const VFIO_DEVICE_GET_INFO = vfioIo(7); // 0x3b6b
export const VFIO_DEVICE_GET_REGION_INFO = vfioIo(8); // 0x3b6c
export const VFIO_DEVICE_RESET = vfioIo(11); // 0x3b6f
// Type1 IOMMU (container)
export const VFIO_IOMMU_GET_INFO = vfioIo(12); // 0x3b70
export const VFIO_IOMMU_MAP_DMA = vfioIo(13); // 0x3b71
export const VFIO_IOMMU_UNMAP_DMA = vfioIo(14); // 0x3b72

/** struct vfio_group_status { u32 argsz; u32 flags; } */
export const GROUP_STATUS_SIZE = 8;
export const VFIO_GROUP_FLAGS_VIABLE = 1 << 0;
export const VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1;

/** struct vfio_region_info { u32 argsz, flags, index, cap_offset; u64 size, offset; } */
export const REGION_INFO_SIZE = 32;
export const VFIO_REGION_INFO_FLAG_READ = 1 << 0;
export const VFIO_REGION_INFO_FLAG_WRITE = 1 << 1;
export const VFIO_REGION_INFO_FLAG_MMAP = 1 << 2;
export const VFIO_REGION_INFO_FLAG_CAPS = 1 << 3;
/** Capability id of the sparse mmap areas: { header(id u16, version u16, next u32), u32 nr_areas, u32 pad, {u64 offset, u64 size}[] } */
export const VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1;

/** vfio-pci region indices. */
export const VFIO_PCI_BAR0_REGION_INDEX = 0;
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;

/** struct vfio_iommu_type1_dma_map { u32 argsz, flags; u64 vaddr, iova, size; } */
export const DMA_MAP_SIZE = 32;
export const VFIO_DMA_MAP_FLAG_READ = 1 << 0;
export const VFIO_DMA_MAP_FLAG_WRITE = 1 << 1;
/** struct vfio_iommu_type1_dma_unmap { u32 argsz, flags; u64 iova, size; } */
export const DMA_UNMAP_SIZE = 24;

export function encodeGroupStatus(): Uint8Array {
  const b = new Uint8Array(GROUP_STATUS_SIZE);
  new DataView(b.buffer).setUint32(0, GROUP_STATUS_SIZE, true);
  return b;
}

export function encodeRegionInfo(index: number, argsz = REGION_INFO_SIZE): Uint8Array {
  const b = new Uint8Array(argsz);
  const v = new DataView(b.buffer);
  v.setUint32(0, argsz, true);
  v.setUint32(8, index, true);
  return b;
}

export interface RegionInfo {
  argsz: number;
  flags: number;
  index: number;
  capOffset: number;
  size: number;
  offset: number;
  /** Sparse mmap areas (offsets within the region), when the region lists them. */
  sparse: Array<{ offset: number; size: number }> | null;
}

export function decodeRegionInfo(b: Uint8Array): RegionInfo {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const info: RegionInfo = {
    argsz: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    index: v.getUint32(8, true),
    capOffset: v.getUint32(12, true),
    size: Number(v.getBigUint64(16, true)),
    offset: Number(v.getBigUint64(24, true)),
    sparse: null,
  };
  if ((info.flags & VFIO_REGION_INFO_FLAG_CAPS) !== 0 && info.capOffset !== 0 && b.byteLength > REGION_INFO_SIZE) {
    let off = info.capOffset;
    for (let guard = 0; off !== 0 && off + 8 <= b.byteLength && guard < 64; guard++) {
      const id = v.getUint16(off, true);
      const next = v.getUint32(off + 4, true);
      if (id === VFIO_REGION_INFO_CAP_SPARSE_MMAP && off + 16 <= b.byteLength) {
        const n = v.getUint32(off + 8, true);
        const areas: Array<{ offset: number; size: number }> = [];
        for (let i = 0; i < n && off + 16 + 16 * (i + 1) <= b.byteLength; i++) {
          const a = off + 16 + 16 * i;
          areas.push({ offset: Number(v.getBigUint64(a, true)), size: Number(v.getBigUint64(a + 8, true)) });
        }
        info.sparse = areas;
      }
      off = next;
    }
  }
  return info;
}

export function encodeDmaMap(vaddr: bigint, iova: number, size: number, flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE): Uint8Array {
  const b = new Uint8Array(DMA_MAP_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, DMA_MAP_SIZE, true);
  v.setUint32(4, flags, true);
  v.setBigUint64(8, vaddr, true);
  v.setBigUint64(16, BigInt(iova), true);
  v.setBigUint64(24, BigInt(size), true);
  return b;
}

export function encodeDmaUnmap(iova: number, size: number): Uint8Array {
  const b = new Uint8Array(DMA_UNMAP_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, DMA_UNMAP_SIZE, true);
  v.setBigUint64(8, BigInt(iova), true);
  v.setBigUint64(16, BigInt(size), true);
  return b;
}
