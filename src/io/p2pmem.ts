/**
 * PCI P2PDMA memory (p2pmem) as the data buffers of the kernel I/O path: a driver publishes device memory (an
 * NVMe controller its CMB, when CMBSZ says it holds data) under /sys/bus/pci/devices/<bdf>/p2pmem/
 * (size, available, published, and since 6.2 `allocate`, whose mmap hands out a piece of it). O_DIRECT reads
 * and writes into such a mapping go device to device when the kernel allows the path between the two
 * functions (pci_p2pdma_distance: always behind one PCIe switch; through a host bridge only when it is listed).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { freeHostMemory, type HostMemory } from '../sys/fileio.js';
import { OsError } from '../sys/libc.js';
import { mapP2pmem } from '../sys/p2pmem.js';
import type { MemorySource } from './common.js';
import { IoOpenError, type BufferPlacement } from './types.js';

/** The files of a p2pmem folder. */
export const P2PMEM_DIR = 'p2pmem';
export const P2PMEM_FILES = { size: 'size', available: 'available', published: 'published', allocate: 'allocate' } as const;
/** Page granularity of p2pmem allocations (the kernel maps it page by page). */
export const P2PMEM_PAGE = 4096;

/** A PCI function's address as sysfs names it: DDDD:BB:DD.F (a BB:DD.F form gets domain 0000). Null when malformed. */
export function normalizeBdf(text: string): string | null {
  const t = text.trim().toLowerCase();
  const m = /^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/.exec(t);
  if (!m) return null;
  return `${m[1] ?? '0000'}:${m[2]}:${m[3]}.${m[4]}`;
}

export interface P2pmemInfo {
  bdf: string;
  /** /sys/bus/pci/devices/<bdf>/p2pmem */
  dir: string;
  sizeBytes: number;
  availableBytes: number;
  /** The driver published it for other users (pci_p2pmem_publish); unpublished memory is the driver's own. */
  published: boolean;
  /** The `allocate` file (mmap from user space) exists: Linux 6.2 or later. */
  allocatable: boolean;
}

function readDecimal(path: string, what: string): number {
  const text = fs.readFileSync(path, 'utf8');
  if (!/^\d{1,16}\n?$/.test(text)) throw new Error(`${path}: ${what} is not a decimal number: ${JSON.stringify(text.slice(0, 40))}`);
  return Number(text.trim());
}

/** The PCI function's folder in sysfs. */
export function pciDeviceDir(bdf: string, sysfsRoot = '/sys'): string {
  return join(sysfsRoot, 'bus', 'pci', 'devices', bdf);
}

/**
 * Reads a function's p2pmem folder. Throws IoOpenError naming what is missing: the function, its p2pmem (no
 * CONFIG_PCI_P2PDMA, or its driver published none), or a file whose content is not what the kernel writes.
 */
export function readP2pmem(bdfText: string, sysfsRoot = '/sys'): P2pmemInfo {
  const bdf = normalizeBdf(bdfText);
  if (bdf === null) throw new IoOpenError(`p2pmem: '${bdfText}' is not a PCI address (DDDD:BB:DD.F)`);
  const dev = pciDeviceDir(bdf, sysfsRoot);
  if (!fs.existsSync(dev)) throw new IoOpenError(`p2pmem: there is no PCI function ${bdf} (${dev})`);
  const dir = join(dev, P2PMEM_DIR);
  if (!fs.existsSync(dir)) {
    throw new IoOpenError(`p2pmem: ${bdf} has no p2pmem (${dir} is missing): the kernel lacks CONFIG_PCI_P2PDMA, or the function's driver registered no peer-to-peer memory`);
  }
  try {
    const sizeBytes = readDecimal(join(dir, P2PMEM_FILES.size), 'size');
    const availableBytes = readDecimal(join(dir, P2PMEM_FILES.available), 'available');
    const pub = fs.readFileSync(join(dir, P2PMEM_FILES.published), 'utf8').trim();
    if (pub !== '0' && pub !== '1') throw new Error(`${join(dir, P2PMEM_FILES.published)}: expected 0 or 1, got ${JSON.stringify(pub.slice(0, 40))}`);
    if (availableBytes > sizeBytes) throw new Error(`${dir}: available (${availableBytes}) is more than size (${sizeBytes})`);
    return { bdf, dir, sizeBytes, availableBytes, published: pub === '1', allocatable: fs.existsSync(join(dir, P2PMEM_FILES.allocate)) };
  } catch (e) {
    if (e instanceof IoOpenError) throw e;
    throw new IoOpenError(`p2pmem: ${(e as Error).message}`);
  }
}

/**
 * Data buffers carved from a function's published p2pmem: each allocation is one mmap of `allocate` (rounded up
 * to pages), freed with munmap. Refuses (IoOpenError) memory that is not published or cannot be mapped from user
 * space (before 6.2).
 */
export function p2pmemSource(bdfText: string, sysfsRoot = '/sys'): MemorySource {
  const info = readP2pmem(bdfText, sysfsRoot);
  if (!info.published) throw new IoOpenError(`p2pmem: ${info.bdf}'s p2pmem is not published (its driver keeps it for itself)`);
  if (!info.allocatable) throw new IoOpenError(`p2pmem: ${info.dir}/${P2PMEM_FILES.allocate} is missing: mapping p2pmem from user space needs Linux 6.2 or later`);
  const allocate = join(info.dir, P2PMEM_FILES.allocate);
  return {
    describe: `p2pmem ${info.bdf}`,
    alloc(length: number): HostMemory {
      const bytes = Math.ceil(length / P2PMEM_PAGE) * P2PMEM_PAGE;
      try {
        return mapP2pmem(allocate, bytes);
      } catch (e) {
        if (e instanceof OsError) {
          let avail = '';
          try {
            avail = `; ${readDecimal(join(info.dir, P2PMEM_FILES.available), 'available')} of ${info.sizeBytes} bytes available`;
          } catch {
            /* the message stands without it */
          }
          throw new Error(`p2pmem ${info.bdf}: mapping ${bytes} bytes of ${allocate} failed: ${e.code}${avail}`);
        }
        throw e;
      }
    },
    free: freeHostMemory,
  };
}

/** `--buffers`: `host` or `p2pmem:<bdf>`. Throws with one line naming the accepted forms. */
export function parseBufferPlacement(text: string): Extract<BufferPlacement, { kind: 'host' | 'p2pmem' }> {
  if (text === 'host') return { kind: 'host' };
  if (text.startsWith('p2pmem:')) {
    const bdf = normalizeBdf(text.slice('p2pmem:'.length));
    if (bdf === null) throw new Error(`'${text}': the PCI address after p2pmem: must be DDDD:BB:DD.F (or BB:DD.F)`);
    return { kind: 'p2pmem', bdf };
  }
  throw new Error(`'${text}' is not host or p2pmem:<DDDD:BB:DD.F>`);
}
