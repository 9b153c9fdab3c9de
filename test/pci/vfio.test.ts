import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as V from '../../src/sys/vfio.js';

test('VFIO ioctl numbers: _IO(";", 100 + n) as in linux/vfio.h', () => {
  assert.equal(V.VFIO_TYPE, ';'.charCodeAt(0));
  assert.equal(V.VFIO_GET_API_VERSION, 0x3b64);
  assert.equal(V.VFIO_CHECK_EXTENSION, 0x3b65);
  assert.equal(V.VFIO_SET_IOMMU, 0x3b66);
  assert.equal(V.VFIO_GROUP_GET_STATUS, 0x3b67);
  assert.equal(V.VFIO_GROUP_SET_CONTAINER, 0x3b68);
  assert.equal(V.VFIO_GROUP_UNSET_CONTAINER, 0x3b69);
  assert.equal(V.VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
  assert.equal(V.VFIO_DEVICE_GET_INFO, 0x3b6b);
  assert.equal(V.VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
  assert.equal(V.VFIO_DEVICE_RESET, 0x3b6f);
  assert.equal(V.VFIO_IOMMU_GET_INFO, 0x3b70);
  assert.equal(V.VFIO_IOMMU_MAP_DMA, 0x3b71);
  assert.equal(V.VFIO_IOMMU_UNMAP_DMA, 0x3b72);
  assert.equal(V.VFIO_TYPE1_IOMMU, 1);
  assert.equal(V.VFIO_TYPE1v2_IOMMU, 3);
  assert.equal(V.VFIO_PCI_CONFIG_REGION_INDEX, 7);
});

test('VFIO struct layouts: dma_map 32 bytes, dma_unmap 24, region_info 32 with sparse mmap caps', () => {
  const m = V.encodeDmaMap(0x7f00_1234_5000n, 0x1_0000_0000, 0x40_0000);
  const dv = new DataView(m.buffer);
  assert.equal(m.length, 32);
  assert.equal(dv.getUint32(0, true), 32);
  assert.equal(dv.getUint32(4, true), 3, 'READ | WRITE');
  assert.equal(dv.getBigUint64(8, true), 0x7f00_1234_5000n);
  assert.equal(dv.getBigUint64(16, true), 0x1_0000_0000n);
  assert.equal(dv.getBigUint64(24, true), 0x40_0000n);
  const u = V.encodeDmaUnmap(0x1_0000_0000, 4096);
  assert.equal(u.length, 24);
  assert.equal(new DataView(u.buffer).getUint32(0, true), 24);
  assert.equal(new DataView(u.buffer).getBigUint64(16, true), 4096n);

  const r = V.encodeRegionInfo(0, 80);
  const rv = new DataView(r.buffer);
  assert.equal(rv.getUint32(0, true), 80);
  // As the kernel fills it: flags READ|WRITE|MMAP|CAPS, cap at 32: sparse mmap with 2 areas.
  rv.setUint32(4, 0xf, true);
  rv.setUint32(12, 32, true);
  rv.setBigUint64(16, 0x4000n, true);
  rv.setBigUint64(24, 0n, true);
  rv.setUint16(32, V.VFIO_REGION_INFO_CAP_SPARSE_MMAP, true);
  rv.setUint16(34, 1, true);
  rv.setUint32(36, 0, true);
  rv.setUint32(40, 2, true);
  rv.setBigUint64(48, 0n, true);
  rv.setBigUint64(56, 0x2000n, true);
  rv.setBigUint64(64, 0x3000n, true);
  rv.setBigUint64(72, 0x1000n, true);
  const info = V.decodeRegionInfo(r);
  assert.equal(info.size, 0x4000);
  assert.deepEqual(info.sparse, [
    { offset: 0, size: 0x2000 },
    { offset: 0x3000, size: 0x1000 },
  ]);
  const plain = V.decodeRegionInfo(V.encodeRegionInfo(7));
  assert.equal(plain.index, 7);
  assert.equal(plain.sparse, null);
});
