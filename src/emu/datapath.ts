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
import { SGL_DESCRIPTOR_SIZE, SglError, SglWalkFlags, walkSgl } from '../nvme/sgl.js';
import type { BackingStore } from './namespace.js';

const st = (sc: number): number => makeStatus(Sct.Generic, sc, true);
export const ST_DATA_TRANSFER = makeStatus(Sct.Generic, GenericStatus.DataTransferError, false);
export const ST_PRP_OFFSET = st(GenericStatus.PrpOffsetInvalid);
export const ST_INVALID_FIELD = st(GenericStatus.InvalidField);

/** Most chunks one command may describe. */
export const MAX_CHUNKS = 4096;

/**
 * Device windows (emulated P2P, src/emu/device-window.ts) as the data path sees them: after a successful map()
 * the scanner looks at the chunk list. Chunks in a window whose data goes to the controller (writes) are filled
 * from device memory right there; chunks whose data goes to host memory (reads) are recorded, to be copied to
 * the device once the data is in the shadow, and counted in `windowHits`. Returns 0 or a status.
 */
export interface WindowScanner {
  mapped(dp: DataPath, toHost: boolean): number;
}

export class DataPath {
  /** Chunk list of the last map(): segment index (0 = bit bucket: skip), offset in segment, length. */
  readonly seg = new Int32Array(MAX_CHUNKS);
  readonly off = new Float64Array(MAX_CHUNKS);
  readonly len = new Int32Array(MAX_CHUNKS);
  count = 0;
  /** Host memory page size (CC.MPS). */
  pageSize = 4096;
  /** Device windows, or null while there are none (then map() costs one null check more). */
  windows: WindowScanner | null = null;
  /**
   * Window chunks recorded by the scanner for a copy to the device since the controller last consumed them
   * (the controller checks this one number after each command; see WindowScanner).
   */
  windowHits = 0;

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
    let st: number;
    if (psdt === PSDT_PRP) st = this.mapPrp(q[b + SQE_DW_DPTR0]! + q[b + SQE_DW_DPTR1]! * TWO_POW_32, q[b + SQE_DW_DPTR2]! + q[b + SQE_DW_DPTR3]! * TWO_POW_32, bytes);
    else if (psdt === 3) return ST_INVALID_FIELD;
    else st = this.mapSgl(q, b, bytes, toHost);
    if (st !== 0 || this.windows === null) return st;
    return this.windows.mapped(this, toHost);
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

  private sglDescriptorReader = (iova: number, into: Uint8Array): void => {
    const dma = this.dma;
    const s = dma.locate(iova, SGL_DESCRIPTOR_SIZE);
    if (s < 0) throw DataPath.FAULT;
    const u8 = dma.u8[s]!;
    const o = dma.offset;
    for (let i = 0; i < SGL_DESCRIPTOR_SIZE; i++) into[i] = u8[o + i]!;
  };
  private sglVisit = (iova: number, length: number, discard: boolean): void => {
    if (discard) {
      if (!this.push(0, 0, length)) throw DataPath.OVERFLOW;
      return;
    }
    const s = this.dma.locate(iova, length);
    if (s < 0) throw DataPath.FAULT;
    if (!this.push(s, this.dma.offset, length)) throw DataPath.OVERFLOW;
  };

  private mapSgl(q: Uint32Array, b: number, bytes: number, toHost: boolean): number {
    try {
      walkSgl(q, b + SQE_DW_DPTR0, bytes, this.sglDescriptorReader, this.sglVisit, toHost ? 0 : SglWalkFlags.HostToController, MAX_CHUNKS);
      return 0;
    } catch (e) {
      if (e instanceof SglError) return e.status;
      if (e === DataPath.FAULT || e === DataPath.OVERFLOW) return (e as { status: number }).status;
      throw e;
    }
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
