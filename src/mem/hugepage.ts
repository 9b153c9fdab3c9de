/**
 * DMA memory for uio_pci_generic: 2 MiB hugepages (MAP_HUGETLB | MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE,
 * mlocked) with physical addresses from /proc/self/pagemap. Each hugepage is physically contiguous; runs of
 * hugepages that happen to be physically adjacent become one chunk, so buffers never straddle a physical gap.
 *
 * Preconditions are checked up front with one clear error each: root, free hugepages, readable PFNs.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { DmaAllocationError } from './dma.js';
import { ChunkedDmaAllocator, type ChunkSource, type DmaChunk } from './pcie-dma.js';
import { MAP_ANONYMOUS, MAP_HUGETLB, MAP_HUGE_2MB, MAP_POPULATE, MAP_SHARED, PROT_READ, PROT_WRITE, mlock, mmap, type Mapping } from '../sys/mman.js';
import { createShm, type ShmRegion } from '../sys/shm.js';

export const HUGEPAGE_SIZE = 2 * 1024 * 1024;
const SMALL_PAGE = 4096;
/** pagemap entry: bit 63 present, bits 0..54 page frame number. */
const PM_PRESENT = 1n << 63n;
const PM_PFN_MASK = (1n << 55n) - 1n;

export class HugepageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HugepageError';
  }
}

export interface HugepageOptions {
  /** procfs root (default '/proc'): meminfo and self/pagemap are read from here. */
  proc?: string;
  /** sysfs root (default '/sys'): the 2 MiB pool's free_hugepages. */
  sys?: string;
  /** Effective uid (default process.geteuid()). */
  uid?: number;
  /** Hugepages to map at a time (default 4 = 8 MiB). */
  growPages?: number;
  /** Upper bound on hugepages mapped in total (default: no bound but the free pool). */
  maxPages?: number;
}

export interface HugepageStatus {
  free: number;
  total: number;
  /** Default hugepage size in bytes from meminfo. */
  defaultSize: number;
}

/** Free / total 2 MiB hugepages (sysfs pool when present, else /proc/meminfo). */
export function hugepageStatus(o: HugepageOptions = {}): HugepageStatus {
  const proc = o.proc ?? '/proc';
  const sys = o.sys ?? '/sys';
  let meminfo = '';
  try {
    meminfo = readFileText(join(proc, 'meminfo'));
  } catch {
    // treated as no hugepages
  }
  const field = (name: string): number | null => {
    const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(meminfo);
    return m ? Number(m[1]) : null;
  };
  const defaultSize = (field('Hugepagesize') ?? 2048) * 1024;
  const pool = join(sys, 'kernel', 'mm', 'hugepages', 'hugepages-2048kB');
  const fromPool = (f: string): number | null => {
    try {
      const t = readFileText(join(pool, f)).trim();
      return /^\d+$/.test(t) ? Number(t) : null;
    } catch {
      return null;
    }
  };
  const free = fromPool('free_hugepages') ?? (defaultSize === HUGEPAGE_SIZE ? (field('HugePages_Free') ?? 0) : 0);
  const total = fromPool('nr_hugepages') ?? (defaultSize === HUGEPAGE_SIZE ? (field('HugePages_Total') ?? 0) : 0);
  return { free, total, defaultSize };
}

function readFileText(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const chunks: Buffer[] = [];
    const b = Buffer.alloc(65536);
    for (;;) {
      const n = readSync(fd, b, 0, b.length, null);
      if (n <= 0) break;
      chunks.push(Buffer.from(b.subarray(0, n)));
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** Check root and hugepage availability; throws HugepageError naming the fix. */
export function checkHugepagePreconditions(o: HugepageOptions = {}, pagesNeeded = 1): HugepageStatus {
  const uid = o.uid ?? (typeof process.geteuid === 'function' ? process.geteuid() : -1);
  if (uid !== 0) {
    throw new HugepageError('the uio PCIe transport needs root: physical addresses from /proc/self/pagemap and the sysfs BAR / config files are root-only');
  }
  const s = hugepageStatus(o);
  if (s.free < pagesNeeded) {
    throw new HugepageError(`the uio PCIe transport needs ${pagesNeeded} free 2 MiB hugepage(s), ${s.free} free of ${s.total} ` + `(reserve some: echo 64 > /proc/sys/vm/nr_hugepages)`);
  }
  return s;
}

/**
 * Physical addresses of the pages at `vaddrs` (4 KiB page granularity) from a pagemap file. Throws
 * HugepageError when a page is not present or the PFN reads zero (no CAP_SYS_ADMIN).
 */
export function physicalAddresses(pagemapPath: string, vaddrs: readonly number[]): number[] {
  let fd: number;
  try {
    fd = openSync(pagemapPath, 'r');
  } catch (e) {
    throw new HugepageError(`cannot open ${pagemapPath}: ${(e as Error).message}`);
  }
  try {
    const b = Buffer.alloc(8);
    return vaddrs.map((va) => {
      const page = Math.floor(va / SMALL_PAGE);
      const n = readSync(fd, b, 0, 8, page * 8);
      if (n !== 8) throw new HugepageError(`${pagemapPath}: short read for address 0x${va.toString(16)}`);
      const e = b.readBigUInt64LE(0);
      if ((e & PM_PRESENT) === 0n) throw new HugepageError(`page at 0x${va.toString(16)} is not present in memory (${pagemapPath})`);
      const pfn = e & PM_PFN_MASK;
      if (pfn === 0n) {
        throw new HugepageError(`${pagemapPath} hides physical frame numbers (reads 0): the uio transport needs root with CAP_SYS_ADMIN`);
      }
      return Number(pfn) * SMALL_PAGE + (va % SMALL_PAGE);
    });
  } finally {
    closeSync(fd);
  }
}

/** Chunks of hugepage memory: each mapping is split into runs of physically contiguous hugepages. */
export class HugepageSource implements ChunkSource {
  readonly maxChunkBytes: number;
  private readonly maps: Mapping[] = [];
  private readonly proc: string;
  private readonly growPages: number;
  private readonly maxPages: number;
  private pages = 0;
  private readonly opts: HugepageOptions;

  constructor(o: HugepageOptions = {}) {
    this.opts = o;
    this.proc = o.proc ?? '/proc';
    this.growPages = Math.max(1, o.growPages ?? 4);
    this.maxPages = o.maxPages ?? Number.POSITIVE_INFINITY;
    // Larger blocks only when hugepages happen to be adjacent; promise one hugepage.
    this.maxChunkBytes = HUGEPAGE_SIZE * this.growPages;
  }

  grow(minBytes: number): DmaChunk[] {
    const minPages = Math.ceil(minBytes / HUGEPAGE_SIZE);
    let n = Math.max(this.growPages, minPages);
    if (this.pages + n > this.maxPages) n = this.maxPages - this.pages;
    if (n < minPages) throw new DmaAllocationError(`hugepage DMA memory limit reached (${this.maxPages} hugepages)`);
    const st = hugepageStatus(this.opts);
    if (st.free < n) {
      if (st.free >= minPages) n = st.free;
      else throw new DmaAllocationError(`out of hugepages: need ${minPages} more 2 MiB hugepage(s), ${st.free} free (raise /proc/sys/vm/nr_hugepages)`);
    }
    let m: Mapping;
    try {
      m = mmap(n * HUGEPAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB | MAP_POPULATE, -1, 0, `${n} hugepage(s)`);
    } catch (e) {
      throw new DmaAllocationError(`cannot map ${n} 2 MiB hugepage(s): ${(e as Error).message}`);
    }
    try {
      mlock(m);
      const u8 = new Uint8Array(m.buffer);
      // Touch every hugepage so it is present even if MAP_POPULATE was ignored.
      for (let i = 0; i < n; i++) u8[i * HUGEPAGE_SIZE] = 0;
      const base = m.addressNumber;
      const vaddrs: number[] = [];
      for (let i = 0; i < n; i++) vaddrs.push(base + i * HUGEPAGE_SIZE, base + (i + 1) * HUGEPAGE_SIZE - SMALL_PAGE);
      const pa = physicalAddresses(join(this.proc, 'self', 'pagemap'), vaddrs);
      const chunks: DmaChunk[] = [];
      let runStart = 0;
      for (let i = 0; i < n; i++) {
        const first = pa[2 * i]!;
        const last = pa[2 * i + 1]!;
        if (first % HUGEPAGE_SIZE !== 0 || last !== first + HUGEPAGE_SIZE - SMALL_PAGE) {
          throw new HugepageError(`mapping is not backed by 2 MiB hugepages (physical 0x${first.toString(16)} .. 0x${last.toString(16)})`);
        }
        const contiguousWithNext = i + 1 < n && pa[2 * (i + 1)] === first + HUGEPAGE_SIZE;
        if (!contiguousWithNext) {
          chunks.push({ iova: pa[2 * runStart]!, bytes: new Uint8Array(m.buffer, runStart * HUGEPAGE_SIZE, (i + 1 - runStart) * HUGEPAGE_SIZE) });
          runStart = i + 1;
        }
      }
      this.maps.push(m);
      this.pages += n;
      return chunks;
    } catch (e) {
      m.retire();
      if (e instanceof HugepageError || e instanceof DmaAllocationError) throw e;
      throw new DmaAllocationError(`hugepage setup failed: ${(e as Error).message}`);
    }
  }

  release(): void {
    for (const m of this.maps) m.retire();
    this.maps.length = 0;
    this.pages = 0;
  }
}

/** A DmaAllocator over hugepages with physical addresses (for uio_pci_generic). Checks preconditions first. */
export function openHugepageDma(o: HugepageOptions = {}): ChunkedDmaAllocator {
  checkHugepagePreconditions(o, 1);
  return new ChunkedDmaAllocator(new HugepageSource(o), 4096, 'hugepage DMA memory');
}

/** One 2 MiB hugepage in a memfd another process can map: physically contiguous, at physical address `iova`. */
export interface HugepageExportedMemory {
  readonly region: ShmRegion;
  /** Physical address of byte 0 (what a device behind no translating IOMMU uses). */
  readonly iova: number;
  /** Unmap here and close the memfd (the page returns to the pool once no process maps it). Idempotent. */
  release(): void;
}

/**
 * One 2 MiB hugetlb memfd (memfd_create(MFD_HUGETLB | MFD_HUGE_2MB)), populated, locked, its physical address
 * read from pagemap. Throws HugepageError naming the fix when no hugepage is free or PFNs are hidden.
 */
export function exportHugepageMemory(name: string, o: HugepageOptions = {}): HugepageExportedMemory {
  const st = hugepageStatus(o);
  if (st.free < 1) {
    throw new HugepageError(`no free 2 MiB hugepage for ${name}: ${st.free} free of ${st.total} (raise /proc/sys/vm/nr_hugepages)`);
  }
  let region: ShmRegion;
  try {
    region = createShm(name, HUGEPAGE_SIZE, { hugetlb: true });
  } catch (e) {
    throw new HugepageError(`cannot get a 2 MiB hugepage for ${name}: ${(e as Error).message} (raise /proc/sys/vm/nr_hugepages)`);
  }
  try {
    const u8 = new Uint8Array(region.buffer);
    u8[0] = 0; // present even if MAP_POPULATE was ignored
    const base = region.address;
    const [first, last] = physicalAddresses(join(o.proc ?? '/proc', 'self', 'pagemap'), [base, base + HUGEPAGE_SIZE - SMALL_PAGE]);
    if (first! % HUGEPAGE_SIZE !== 0 || last !== first! + HUGEPAGE_SIZE - SMALL_PAGE) {
      throw new HugepageError(`${name} is not backed by one 2 MiB hugepage (physical 0x${first!.toString(16)} .. 0x${last!.toString(16)})`);
    }
    return { region, iova: first!, release: () => region.close() };
  } catch (e) {
    region.close();
    throw e;
  }
}
