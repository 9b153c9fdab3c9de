/**
 * The controller's DMA engine: turns a command's data pointer (PRPs or SGLs) into a list of host memory
 * chunks (segment, offset, length), checked against the DMA segments, then moves bytes between those chunks
 * and a backing store or a scratch buffer. Chunk lists live in preallocated typed arrays: no allocation per
 * command. Errors are NVMe status fields, never exceptions.
 */
import type { DmaSegmentTable } from '../mem/shared-dma.js';
import { makeStatus } from '../nvme/cqe.js';
import { PSDT_PRP, SQE_DW_DPTR0, SQE_DW_DPTR1, SQE_DW_DPTR2, SQE_DW_DPTR3, SQE_PSDT_SHIFT, TWO_POW_32 } from '../nvme/sqe.js';
import { GenericStatus, Sct } from '../nvme/status.js';
import { PRP_ENTRY_SIZE, PrpError, walkPrps } from '../nvme/prp.js';
import type { BackingStore } from './namespace.js';

const st = (sc: number): number => makeStatus(Sct.Generic, sc, true);
export const ST_DATA_TRANSFER = makeStatus(Sct.Generic, GenericStatus.DataTransferError, false);
export const ST_PRP_OFFSET = st(GenericStatus.PrpOffsetInvalid);
export const ST_SGL_SEGMENT = st(GenericStatus.InvalidSglSegmentDescriptor);
export const ST_SGL_COUNT = st(GenericStatus.InvalidNumberOfSglDescriptors);
export const ST_SGL_LENGTH = st(GenericStatus.DataSglLengthInvalid);
export const ST_SGL_TYPE = st(GenericStatus.SglDescriptorTypeInvalid);
export const ST_INVALID_FIELD = st(GenericStatus.InvalidField);

/** SGL descriptor types (byte 15 bits 7:4). */
export const SGL_TYPE_DATA_BLOCK = 0x0;
export const SGL_TYPE_BIT_BUCKET = 0x1;
export const SGL_TYPE_SEGMENT = 0x2;
export const SGL_TYPE_LAST_SEGMENT = 0x3;
export const SGL_SUBTYPE_ADDRESS = 0x0;
export const SGL_DESCRIPTOR_SIZE = 16;

/** Most chunks one command may describe. */
export const MAX_CHUNKS = 4096;

export class DataPath {
  /** Chunk list of the last map(): segment index (0 = bit bucket: skip), offset in segment, length. */
  readonly seg = new Int32Array(MAX_CHUNKS);
  readonly off = new Float64Array(MAX_CHUNKS);
  readonly len = new Int32Array(MAX_CHUNKS);
  count = 0;
  /** Host memory page size (CC.MPS). */
  pageSize = 4096;

  constructor(private readonly dma: DmaSegmentTable) {}

  /**
   * Map the data pointer of the SQE at dword `b` of `q` for a transfer of `bytes` bytes.
   * `toHost` is true when the controller writes host memory (reads, Identify, log pages).
   * Returns 0 or a status field.
   */
  map(q: Uint32Array, b: number, bytes: number, toHost: boolean): number {
    this.count = 0;
    if (bytes === 0) return 0;
    const psdt = (q[b]! >>> SQE_PSDT_SHIFT) & 0x3;
    if (psdt === PSDT_PRP) return this.mapPrp(q[b + SQE_DW_DPTR0]! + q[b + SQE_DW_DPTR1]! * TWO_POW_32, q[b + SQE_DW_DPTR2]! + q[b + SQE_DW_DPTR3]! * TWO_POW_32, bytes);
    if (psdt === 3) return ST_INVALID_FIELD;
    return this.mapSgl(q[b + SQE_DW_DPTR0]! + q[b + SQE_DW_DPTR1]! * TWO_POW_32, q[b + SQE_DW_DPTR2]!, q[b + SQE_DW_DPTR3]! >>> 24, bytes, toHost);
  }

  /** Append a chunk, merging with the previous one when contiguous. Returns false when the list is full. */
  private push(segIdx: number, off: number, len: number): boolean {
    const n = this.count;
    if (n > 0 && this.seg[n - 1] === segIdx && segIdx !== 0 && this.off[n - 1]! + this.len[n - 1]! === off) {
      this.len[n - 1] += len;
      return true;
    }
    if (n === MAX_CHUNKS) return false;
    this.seg[n] = segIdx;
    this.off[n] = off;
    this.len[n] = len;
    this.count = n + 1;
    return true;
  }

  /** Thrown (not an Error: no stack capture) from the walker callbacks on a DMA fault or chunk overflow. */
  private static readonly FAULT = { status: ST_DATA_TRANSFER };
  private static readonly OVERFLOW = { status: ST_INVALID_FIELD };

  /** walkPrps callbacks, created once. */
  private readonly visitRange = (iova: number, length: number): void => {
    const s = this.dma.locate(iova, length);
    if (s < 0) throw DataPath.FAULT;
    if (!this.push(s, this.dma.offset, length)) throw DataPath.OVERFLOW;
  };
  private readonly readPrpEntry = (listIova: number, index: number): number => {
    const dma = this.dma;
    const s = dma.locate(listIova + index * PRP_ENTRY_SIZE, PRP_ENTRY_SIZE);
    if (s < 0) throw DataPath.FAULT;
    const u32 = dma.u32[s]!;
    const w = dma.offset >>> 2; // list pointers are qword aligned
    return u32[w]! + u32[w + 1]! * TWO_POW_32;
  };

  private mapPrp(prp1: number, prp2: number, bytes: number): number {
    // Fast path: the whole transfer within PRP1's page.
    const o1 = prp1 % this.pageSize;
    if ((o1 & 3) === 0 && o1 + bytes <= this.pageSize) {
      const s = this.dma.locate(prp1, bytes);
      if (s < 0) return ST_DATA_TRANSFER;
      this.push(s, this.dma.offset, bytes);
      return 0;
    }
    try {
      walkPrps(prp1, prp2, bytes, this.pageSize, this.readPrpEntry, this.visitRange);
      return 0;
    } catch (e) {
      if (e instanceof PrpError) return e.status;
      if (e === DataPath.FAULT || e === DataPath.OVERFLOW) return (e as { status: number }).status;
      throw e;
    }
  }

  private mapSgl(addr: number, length: number, type: number, bytes: number, toHost: boolean): number {
    const dma = this.dma;
    let need = bytes;
    // The descriptor in the SQE.
    let dtype = type >>> 4;
    if ((type & 0xf) !== SGL_SUBTYPE_ADDRESS) return ST_SGL_TYPE;
    let segs = 0;
    for (;;) {
      if (dtype === SGL_TYPE_DATA_BLOCK || dtype === SGL_TYPE_BIT_BUCKET) {
        const r = this.sglData(dtype, addr, length, need, toHost);
        if (r < 0) return -r;
        need -= r;
        return need > 0 ? ST_SGL_LENGTH : 0;
      }
      if (dtype !== SGL_TYPE_SEGMENT && dtype !== SGL_TYPE_LAST_SEGMENT) return ST_SGL_TYPE;
      if (length === 0 || length % SGL_DESCRIPTOR_SIZE !== 0) return ST_SGL_SEGMENT;
      if (++segs > MAX_CHUNKS) return ST_SGL_COUNT;
      const ls = dma.locate(addr, length);
      if (ls < 0) return ST_DATA_TRANSFER;
      const u32 = dma.u32[ls]!;
      const u8 = dma.u8[ls]!;
      const base = dma.offset;
      if ((base & 3) !== 0) return ST_SGL_SEGMENT;
      const nd = length / SGL_DESCRIPTOR_SIZE;
      const last = dtype === SGL_TYPE_LAST_SEGMENT;
      let next = -1;
      for (let i = 0; i < nd; i++) {
        const at = base + i * SGL_DESCRIPTOR_SIZE;
        const w = at >>> 2;
        const t = u8[at + 15]!;
        const dt = t >>> 4;
        if ((t & 0xf) !== SGL_SUBTYPE_ADDRESS) return ST_SGL_TYPE;
        const da = u32[w]! + u32[w + 1]! * TWO_POW_32;
        const dl = u32[w + 2]!;
        if (dt === SGL_TYPE_DATA_BLOCK || dt === SGL_TYPE_BIT_BUCKET) {
          const r = this.sglData(dt, da, dl, need, toHost);
          if (r < 0) return -r;
          need -= r;
        } else if (dt === SGL_TYPE_SEGMENT || dt === SGL_TYPE_LAST_SEGMENT) {
          // A segment pointer must be the last descriptor of a (non-last) segment.
          if (last || i !== nd - 1) return ST_SGL_SEGMENT;
          next = i;
          dtype = dt;
          addr = da;
          length = dl;
        } else {
          return ST_SGL_TYPE;
        }
      }
      if (next < 0) return need > 0 ? ST_SGL_LENGTH : 0;
      if (need === 0) return 0;
    }
  }

  /** Add a data block or bit bucket; returns bytes consumed (>= 0) or -status. */
  private sglData(dtype: number, addr: number, length: number, need: number, toHost: boolean): number {
    const n = length < need ? length : need;
    if (dtype === SGL_TYPE_BIT_BUCKET) {
      if (!toHost) return -ST_SGL_TYPE; // a bit bucket has no data to write to media
      if (n > 0 && !this.push(0, 0, n)) return -ST_SGL_COUNT;
      return n;
    }
    if (n === 0) return 0;
    const s = this.dma.locate(addr, n);
    if (s < 0) return -ST_DATA_TRANSFER;
    if (!this.push(s, this.dma.offset, n)) return -ST_SGL_COUNT;
    return n;
  }

  /** Media → host: copy the mapped chunks from `store` starting at media offset `mediaOff`. */
  readToHost(store: BackingStore, mediaOff: number): void {
    const bufs = this.dma.buf;
    for (let i = 0; i < this.count; i++) {
      const s = this.seg[i]!;
      const l = this.len[i]!;
      if (s !== 0) store.read(mediaOff, bufs[s]!, this.off[i]!, l);
      mediaOff += l;
    }
  }

  /** Host → media. */
  writeFromHost(store: BackingStore, mediaOff: number): void {
    const bufs = this.dma.buf;
    for (let i = 0; i < this.count; i++) {
      const s = this.seg[i]!;
      const l = this.len[i]!;
      if (s !== 0) store.write(mediaOff, bufs[s]!, this.off[i]!, l);
      mediaOff += l;
    }
  }

  /** Scratch buffer → host (Identify data, log pages). */
  copyToHost(src: Buffer, srcOff: number): void {
    const bufs = this.dma.buf;
    for (let i = 0; i < this.count; i++) {
      const s = this.seg[i]!;
      const l = this.len[i]!;
      if (s !== 0) src.copy(bufs[s]!, this.off[i]!, srcOff, srcOff + l);
      srcOff += l;
    }
  }

  /** Host → scratch buffer (DSM ranges). */
  copyFromHost(dst: Buffer, dstOff: number): void {
    const bufs = this.dma.buf;
    for (let i = 0; i < this.count; i++) {
      const s = this.seg[i]!;
      const l = this.len[i]!;
      if (s !== 0) bufs[s]!.copy(dst, dstOff, this.off[i]!, this.off[i]! + l);
      dstOff += l;
    }
  }
}
