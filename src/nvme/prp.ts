/**
 * Physical Region Page (PRP) data pointers (NVMe Base 2.0 section 4.1.1).
 *
 * PRP1 addresses the first page of the transfer and may carry a dword-aligned offset. If the transfer
 * ends within the first page PRP2 is unused (0); if it ends within the second page, PRP2 is that page's
 * address; otherwise PRP2 points to a PRP list. A PRP list fills the rest of its memory page (a list
 * pointer in PRP2 may carry a qword-aligned offset); when more entries follow than fit, the last entry of
 * the page points to the next list page, which must be page aligned. All entries other than PRP1 and the
 * PRP2 list pointer must have a zero page offset.
 */
import { checkSafe, isPowerOfTwo, TWO_POW_32 } from './bytes.js';
import { makeStatus } from './cqe.js';
import { toChunkList, totalLength, type DmaChunk } from './dma-chunk.js';
import { GenericStatus, Sct } from './status.js';

export type { DmaChunk } from './dma-chunk.js';

export const PRP_ENTRY_SIZE = 8;
export const PRP_PAGE_SIZE_MIN = 4096;
export const PRP_PAGE_SIZE_MAX = 2 ** 27;
/** PRP1 (and data-entry) offsets must be dword aligned. */
export const PRP_DWORD_MASK = 0x3;
/** A PRP list pointer must be qword aligned. */
export const PRP_QWORD_MASK = 0x7;

/** Why a PRP walk was rejected. */
export const PrpErrorReason = {
  /** PRP1 offset is not dword aligned. */
  Prp1Misaligned: 'PRP1 offset not dword aligned',
  /** PRP2 used as a data pointer has a non-zero page offset. */
  Prp2Offset: 'PRP2 offset not zero',
  /** PRP2 list pointer is not qword aligned. */
  ListPointerMisaligned: 'PRP list pointer not qword aligned',
  /** A chained list pointer (last entry of a list page) has a non-zero page offset. */
  ChainPointerOffset: 'chained PRP list pointer offset not zero',
  /** A data entry of a PRP list has a non-zero page offset. */
  ListEntryOffset: 'PRP list entry offset not zero',
} as const;
export type PrpErrorReason = (typeof PrpErrorReason)[keyof typeof PrpErrorReason];

/** A malformed PRP data pointer. `status` is the 15-bit CQE status field to complete the command with. */
export class PrpError extends Error {
  readonly reason: PrpErrorReason;
  /** The offending PRP entry value. */
  readonly entry: number;
  /** 15-bit status field: Generic "PRP Offset Invalid" with DNR set. */
  readonly status: number;
  readonly sct: number = Sct.Generic;
  readonly sc: number = GenericStatus.PrpOffsetInvalid;
  constructor(reason: PrpErrorReason, entry: number) {
    super(`PRP Offset Invalid: ${reason} (entry 0x${entry.toString(16)})`);
    this.name = 'PrpError';
    this.reason = reason;
    this.entry = entry;
    this.status = makeStatus(Sct.Generic, GenericStatus.PrpOffsetInvalid, true);
  }
}

/** A memory page to hold PRP list entries: `view` is at least pageSize bytes, `iova` page aligned. */
export interface PrpListPage {
  iova: number;
  view: Uint8Array;
}

export interface PrpResult {
  prp1: number;
  prp2: number;
  /** List pages used, in chain order (empty unless PRP2 is a list pointer). */
  listPages: PrpListPage[];
}

/** Throw unless pageSize is a power of two in [4 KiB, 128 MiB]. */
export function checkPageSize(pageSize: number): void {
  checkSafe('pageSize', pageSize);
  if (!isPowerOfTwo(pageSize) || pageSize < PRP_PAGE_SIZE_MIN || pageSize > PRP_PAGE_SIZE_MAX) {
    throw new RangeError(`pageSize must be a power of two in [${PRP_PAGE_SIZE_MIN}, 2^27], got ${pageSize}`);
  }
}

/** Offset of `addr` within its page (exact for addresses < 2^53; pageSize <= 2^27). */
function pageOffset(addr: number, pageSize: number): number {
  return (addr >>> 0) & (pageSize - 1);
}

/** Number of memory pages (PRP entries) a transfer touches. */
export function prpEntriesNeeded(firstOffset: number, length: number, pageSize: number): number {
  return Math.ceil((firstOffset + length) / pageSize);
}

/** Number of PRP list pages needed for a transfer starting at `firstOffset` within its first page. */
export function prpListPagesNeeded(firstOffset: number, length: number, pageSize: number): number {
  checkPageSize(pageSize);
  checkSafe('firstOffset', firstOffset);
  if (firstOffset >= pageSize) throw new RangeError(`firstOffset must be less than pageSize (${pageSize}), got ${firstOffset}`);
  checkSafe('length', length);
  const entries = prpEntriesNeeded(firstOffset, length, pageSize);
  if (entries <= 2) return 0;
  const listEntries = entries - 1;
  const perPage = pageSize / PRP_ENTRY_SIZE;
  if (listEntries <= perPage) return 1;
  return 1 + Math.ceil((listEntries - perPage) / (perPage - 1));
}

function writeEntry(view: Uint8Array, slot: number, value: number): void {
  const at = slot * PRP_ENTRY_SIZE;
  const lo = value >>> 0;
  const hi = Math.floor(value / TWO_POW_32);
  view[at] = lo & 0xff;
  view[at + 1] = (lo >>> 8) & 0xff;
  view[at + 2] = (lo >>> 16) & 0xff;
  view[at + 3] = lo >>> 24;
  view[at + 4] = hi & 0xff;
  view[at + 5] = (hi >>> 8) & 0xff;
  view[at + 6] = (hi >>> 16) & 0xff;
  view[at + 7] = hi >>> 24;
}

function checkChunkLayout(chunks: readonly DmaChunk[], pageSize: number): void {
  if ((chunks[0]!.iova & PRP_DWORD_MASK) !== 0) {
    throw new RangeError(`chunks[0].iova must be dword aligned for PRP1, got 0x${chunks[0]!.iova.toString(16)}`);
  }
  const last = chunks.length - 1;
  for (let i = 0; i <= last; i++) {
    const c = chunks[i]!;
    if (i > 0 && pageOffset(c.iova, pageSize) !== 0) {
      throw new RangeError(`chunks[${i}].iova must be page aligned (pageSize ${pageSize}), got 0x${c.iova.toString(16)}`);
    }
    if (i < last && pageOffset(c.iova + c.length, pageSize) !== 0) {
      throw new RangeError(`chunks[${i}] must end on a page boundary (pageSize ${pageSize}) since another chunk follows`);
    }
  }
}

/**
 * Build PRP1/PRP2 (and PRP list pages) for a buffer given as one chunk or as a list of chunks.
 * Only the first chunk may start inside a page (dword aligned) and only the last may end inside one.
 * `allocListPage` is called once per list page needed; pages are filled in chain order.
 */
export function buildPrps(chunks: DmaChunk | readonly DmaChunk[], pageSize: number, allocListPage: () => PrpListPage): PrpResult {
  checkPageSize(pageSize);
  const list = toChunkList(chunks);
  checkChunkLayout(list, pageSize);
  const first = list[0]!;
  const firstOffset = pageOffset(first.iova, pageSize);
  const entries = prpEntriesNeeded(firstOffset, totalLength(list), pageSize);
  const result: PrpResult = { prp1: first.iova, prp2: 0, listPages: [] };
  if (entries === 1) return result;

  const perPage = pageSize / PRP_ENTRY_SIZE;
  let page: PrpListPage | undefined;
  let slot = 0;
  let written = 0; // entries after PRP1 written so far
  const listEntries = entries - 1;
  const newPage = (): PrpListPage => {
    const p = allocListPage();
    if (!p || !(p.view instanceof Uint8Array)) throw new TypeError('allocListPage must return {iova, view: Uint8Array}');
    checkSafe('list page iova', p.iova);
    if (pageOffset(p.iova, pageSize) !== 0) throw new RangeError(`list page iova must be page aligned, got 0x${p.iova.toString(16)}`);
    if (p.view.length < pageSize) throw new RangeError(`list page view must be at least ${pageSize} bytes, got ${p.view.length}`);
    result.listPages.push(p);
    return p;
  };
  const emit = (addr: number): void => {
    if (listEntries === 1) {
      result.prp2 = addr;
      return;
    }
    if (page === undefined) {
      page = newPage();
      result.prp2 = page.iova;
    } else if (slot === perPage - 1 && listEntries - written > 1) {
      const next = newPage();
      writeEntry(page.view, slot, next.iova);
      page = next;
      slot = 0;
    }
    writeEntry(page.view, slot++, addr);
    written++;
  };

  // Page addresses after the first: every page boundary crossed by the transfer.
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!;
    const end = c.iova + c.length;
    let addr = i === 0 ? c.iova - firstOffset + pageSize : c.iova;
    for (; addr < end; addr += pageSize) emit(addr);
  }
  return result;
}

/**
 * The one PRP list writer of the data paths (the driver's data pointers, homid's mediated forwarding): PRP1/PRP2
 * for one IOVA-contiguous transfer of `length` bytes at `addr`, with no allocation. PRP1 is `addr` (dword
 * aligned); the return value is PRP2: 0 when the transfer ends in its first memory page, the second page's
 * address when it ends there, else `listIova`, the PRP list. The list is written as little-endian qwords into
 * `list` (32-bit words of the list memory) from word `listAt` on; that memory is `listIova` (page aligned) and
 * the pages after it, one after another: when a list page fills up with entries still to come, its last entry
 * points to the next page. Size the memory with prpListPagesNeeded(). Arguments are not checked here (the
 * callers check them once, off the fast path).
 */
export function writePrps(addr: number, length: number, pageSize: number, list: Uint32Array, listAt: number, listIova: number): number {
  const inFirst = pageSize - ((addr >>> 0) & (pageSize - 1));
  if (length <= inFirst) return 0;
  const second = addr + inFirst;
  if (length <= inFirst + pageSize) return second;
  const lastSlot = pageSize / PRP_ENTRY_SIZE - 1;
  const pageWords = pageSize / Uint32Array.BYTES_PER_ELEMENT;
  let at = listAt;
  let slot = 0;
  let pageIova = listIova;
  let remaining = length - inFirst;
  for (let a = second; remaining > 0; a += pageSize, remaining -= pageSize) {
    if (slot === lastSlot && remaining > pageSize) {
      // the page is full and more than this one entry remains: chain to the next list page
      pageIova += pageSize;
      list[at] = pageIova >>> 0;
      list[at + 1] = (pageIova / TWO_POW_32) >>> 0;
      listAt += pageWords;
      at = listAt;
      slot = 0;
    }
    list[at] = a >>> 0;
    list[at + 1] = (a / TWO_POW_32) >>> 0;
    at += 2;
    slot++;
  }
  return listIova;
}

/**
 * Read the 64-bit PRP entry number `index` of the list that starts at `listIova`
 * (i.e. the little-endian qword at listIova + 8 * index).
 */
export type PrpEntryReader = (listIova: number, index: number) => number;
/** Receives the data ranges of a transfer in order; physically adjacent pages are merged. */
export type PrpRangeVisitor = (iova: number, length: number) => void;

/**
 * Walk the PRPs of a command for a transfer of `length` bytes, calling `visit` for each contiguous range
 * in transfer order. Allocation free. Returns the number of list entries read (data entries and chain
 * pointers). Throws PrpError for malformed pointers (its `status` is "PRP Offset Invalid", DNR).
 */
export function walkPrps(prp1: number, prp2: number, length: number, pageSize: number, readListEntry: PrpEntryReader, visit: PrpRangeVisitor): number {
  if (!(pageSize >= PRP_PAGE_SIZE_MIN && pageSize <= PRP_PAGE_SIZE_MAX && (pageSize & (pageSize - 1)) === 0)) {
    checkPageSize(pageSize);
  }
  if (!(length > 0 && Number.isSafeInteger(length))) throw new RangeError(`length must be a positive integer, got ${length}`);
  if ((prp1 & PRP_DWORD_MASK) !== 0) throw new PrpError(PrpErrorReason.Prp1Misaligned, prp1);
  const mask = pageSize - 1;
  let runStart = prp1;
  let runLen = Math.min(pageSize - ((prp1 >>> 0) & mask), length);
  let remaining = length - runLen;
  let reads = 0;
  if (remaining > 0) {
    if (remaining <= pageSize) {
      if (((prp2 >>> 0) & mask) !== 0) throw new PrpError(PrpErrorReason.Prp2Offset, prp2);
      if (prp2 === runStart + runLen) runLen += remaining;
      else {
        visit(runStart, runLen);
        runStart = prp2;
        runLen = remaining;
      }
      remaining = 0;
    } else {
      if ((prp2 & PRP_QWORD_MASK) !== 0) throw new PrpError(PrpErrorReason.ListPointerMisaligned, prp2);
      let list = prp2;
      let slot = 0;
      let slots = (pageSize - ((prp2 >>> 0) & mask)) / PRP_ENTRY_SIZE;
      while (remaining > 0) {
        const e = readListEntry(list, slot);
        reads++;
        if (slot === slots - 1 && remaining > pageSize) {
          if (((e >>> 0) & mask) !== 0) throw new PrpError(PrpErrorReason.ChainPointerOffset, e);
          list = e;
          slot = 0;
          slots = pageSize / PRP_ENTRY_SIZE;
          continue;
        }
        if (((e >>> 0) & mask) !== 0) throw new PrpError(PrpErrorReason.ListEntryOffset, e);
        slot++;
        const n = remaining < pageSize ? remaining : pageSize;
        remaining -= n;
        if (e === runStart + runLen) runLen += n;
        else {
          visit(runStart, runLen);
          runStart = e;
          runLen = n;
        }
      }
    }
  }
  visit(runStart, runLen);
  return reads;
}
