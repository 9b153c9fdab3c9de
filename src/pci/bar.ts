/** BAR0 mapping through sysfs (resource0), for uio_pci_generic and any driver that lets sysfs map the BAR. */
import { closeSync, constants, openSync } from 'node:fs';
import { join } from 'node:path';
import { MAP_SHARED, PROT_READ, PROT_WRITE, mmap, type Mapping } from '../sys/mman.js';
import { PciError } from './address.js';
import { deviceDir, fileSize, type SysPaths } from './sysfs.js';

/** mmap /sys/bus/pci/devices/<addr>/resource0 (O_RDWR | O_SYNC, MAP_SHARED). */
export function mapSysfsBar0(p: SysPaths, addr: string): Mapping {
  const path = join(deviceDir(p, addr), 'resource0');
  const size = fileSize(path);
  if (size === null || size <= 0) throw new PciError(`${addr}: BAR0 is not mappable (${path} missing or empty)`);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_SYNC);
  } catch (e) {
    throw new PciError(`cannot open ${path}: ${(e as Error).message}`);
  }
  try {
    return mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, `${addr} BAR0`);
  } catch (e) {
    throw new PciError(`cannot map ${path}: ${(e as Error).message}`);
  } finally {
    closeSync(fd); // the mapping stays valid
  }
}
