/**
 * Mapping PCI P2PDMA memory (p2pmem) into the process: each mmap of a function's
 * /sys/bus/pci/devices/<bdf>/p2pmem/allocate (Linux 6.2+) allocates that many bytes of the device's published
 * memory and maps them; munmap gives them back. The kernel takes only shared mappings at offset 0.
 */
import * as fs from 'node:fs';
import type { HostMemory } from './fileio.js';
import { mmap, MAP_SHARED, PROT_READ, PROT_WRITE } from './mman.js';

/** mmap(length, RW, MAP_SHARED) of a p2pmem `allocate` file at offset 0; the descriptor is closed again. */
export function mapP2pmem(allocatePath: string, length: number): HostMemory {
  const fd = fs.openSync(allocatePath, 'r+');
  try {
    const m = mmap(length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, `p2pmem ${allocatePath}`);
    return { ptr: m.ptr, address: m.addressNumber, length: m.length, buffer: m.buffer };
  } finally {
    fs.closeSync(fd);
  }
}
