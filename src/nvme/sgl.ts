/**
 * Scatter Gather Lists (NVMe Base 2.0 section 4.1.2): a host-side builder and a controller-side walker.
 *
 * An SGL starts with the descriptor in the SQE data pointer (SGL1). A Segment / Last Segment descriptor
 * points to a qword-aligned SGL segment (an array of descriptors); only the last descriptor of a segment
 * may point to another segment, and a Last Segment's segment contains no segment descriptors.
 */
import { checkSafe, TWO_POW_32 } from './bytes.js';
import { makeStatus } from './cqe.js';
import { toChunkList, type DmaChunk } from './dma-chunk.js';
import { PSDT_SGL_MPTR_CONTIG } from './sqe.js';
import {
  SGL_DESCRIPTOR_SIZE,
  SGL_DESC_ID_OFFSET,
  SGL_SEGMENT_ALIGN_MASK,
  SGL_SUBTYPE_MASK,
  SGL_TYPE_SHIFT,
  SGL_DW3_ID_SHIFT,
  SglSubtype,
  SglType,
  encodeSglDescriptor,
  sglDescriptorDwords,
} from './sgl-descriptor.js';
import { GenericStatus, Sct } from './status.js';

export * from './sgl-descriptor.js';
export type { DmaChunk } from './dma-chunk.js';

/** Largest length the builder puts in one Data Block descriptor (longer chunks are split). */
export const SGL_DATA_BLOCK_MAX_BUILD = 0x8000_0000;
/** Default bound on descriptors examined per walk (guards against SGL segment loops). */
export const SGL_WALK_MAX_DESCRIPTORS = 1 << 16;

/** Walker flags. */
export const SglWalkFlags = {
  /** Accept an SGL describing more data than the transfer (Identify Controller SGLS bit 16). */
  AllowExcess: 1 << 0,
  /** Data Block address and length must be dword aligned (SGLS bits 1:0 = 10b). */
  DwordAligned: 1 << 1,
  /** Host-to-controller transfer (e.g. Write): Bit Bucket descriptors are invalid. */
  HostToController: 1 << 2,
} as const;

export type SglErrorReason =
  | 'descriptor type invalid'
  | 'descriptor subtype invalid'
  | 'data SGL shorter than transfer'
  | 'data SGL longer than transfer'
  | 'segment descriptor not last in segment'
  | 'segment descriptor in last segment'
  | 'segment length invalid'
  | 'segment address not qword aligned'
  | 'data block not dword aligned'
  | 'too many descriptors';

/** A malformed SGL. `status` is the 15-bit CQE status field (DNR set) the command completes with. */
export class SglError extends Error {
  readonly reason: SglErrorReason;
  readonly sct: number = Sct.Generic;
  readonly sc: number;
  readonly status: number;
  constructor(reason: SglErrorReason, sc: number, detail: string) {
    super(`${reason}: ${detail}`);
    this.name = 'SglError';
    this.reason = reason;
    this.sc = sc;
    this.status = makeStatus(Sct.Generic, sc, true);
  }
}

/** Memory for one SGL segment: `view.length / 16` descriptors fit; `iova` qword aligned. */
export interface SglSegmentPage {
  iova: number;
  view: Uint8Array;
}

export interface SglResult {
  /** SGL1 as the SQE data pointer dwords 6..9 (use as `Sqe.dptr`). */
  dptr: [number, number, number, number];
  /** PSDT value to put in CDW0 (SGL, MPTR a contiguous buffer). */
  psdt: number;
  /** Segments filled, in chain order. */
  segments: SglSegmentPage[];
}

function dataBlocks(chunks: readonly DmaChunk[]): Array<{ address: number; length: number }> {
  const out: Array<{ address: number; length: number }> = [];
  for (const c of chunks) {
    for (let off = 0; off < c.length; off += SGL_DATA_BLOCK_MAX_BUILD) {
      out.push({ address: c.iova + off, length: Math.min(SGL_DATA_BLOCK_MAX_BUILD, c.length - off) });
    }
  }
  return out;
}

function checkSegment(p: SglSegmentPage): number {
  if (!p || !(p.view instanceof Uint8Array)) throw new TypeError('allocSegment must return {iova, view: Uint8Array}');
  checkSafe('segment iova', p.iova);
  if ((p.iova & SGL_SEGMENT_ALIGN_MASK) !== 0) {
    throw new RangeError(`segment iova must be qword aligned, got 0x${p.iova.toString(16)}`);
  }
  const cap = Math.floor(p.view.length / SGL_DESCRIPTOR_SIZE);
  if (cap < 2) throw new RangeError(`segment view must hold at least 2 descriptors (32 bytes), got ${p.view.length} bytes`);
  return cap;
}

/**
 * Build an SGL for the buffer: one chunk gives a single Data Block in SGL1; several give a Last Segment
 * descriptor pointing to Data Block descriptors in segments from `allocSegment`, chained through Segment
 * descriptors when they do not fit in one. Chunks have no alignment requirement.
 */
export function buildSgl(chunks: DmaChunk | readonly DmaChunk[], allocSegment: () => SglSegmentPage): SglResult {
  const blocks = dataBlocks(toChunkList(chunks));
  const result: SglResult = { dptr: [0, 0, 0, 0], psdt: PSDT_SGL_MPTR_CONTIG, segments: [] };
  if (blocks.length === 1) {
    const b = blocks[0]!;
    result.dptr = sglDescriptorDwords({ type: SglType.DataBlock, subtype: SglSubtype.Address, ...b });
    return result;
  }
  let seg = allocSegment();
  let cap = checkSegment(seg);
  result.segments.push(seg);
  const pointerTo = (page: SglSegmentPage, capacity: number, left: number) =>
    left <= capacity
      ? { type: SglType.LastSegment, subtype: SglSubtype.Address, address: page.iova, length: left * SGL_DESCRIPTOR_SIZE }
      : { type: SglType.Segment, subtype: SglSubtype.Address, address: page.iova, length: capacity * SGL_DESCRIPTOR_SIZE };
  result.dptr = sglDescriptorDwords(pointerTo(seg, cap, blocks.length));
  let next = 0;
  for (;;) {
    const left = blocks.length - next;
    const fit = left <= cap ? left : cap - 1;
    for (let i = 0; i < fit; i++) {
      const b = blocks[next++]!;
      encodeSglDescriptor({ type: SglType.DataBlock, subtype: SglSubtype.Address, ...b }, seg.view, i * SGL_DESCRIPTOR_SIZE);
    }
    if (next === blocks.length) return result;
    const nextSeg = allocSegment();
    const nextCap = checkSegment(nextSeg);
    result.segments.push(nextSeg);
    encodeSglDescriptor(pointerTo(nextSeg, nextCap, blocks.length - next), seg.view, fit * SGL_DESCRIPTOR_SIZE);
    seg = nextSeg;
    cap = nextCap;
  }
}

/** Read the 16-byte descriptor at `iova` into `into` (16 bytes, reused between calls). */
export type SglDescriptorReader = (iova: number, into: Uint8Array) => void;
/** Receives data ranges in order; for a Bit Bucket `discard` is true and `iova` is 0. */
export type SglRangeVisitor = (iova: number, length: number, discard: boolean) => void;

const scratch = new Uint8Array(SGL_DESCRIPTOR_SIZE);

function le32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

/**
 * Walk the SGL whose first descriptor (SGL1) is the four dwords `dw[at..at+3]` (e.g. the SQE dwords with
 * at = SQE_DW_DPTR0) for a transfer of `length` bytes, calling `visit` for each range in order.
 * Allocation free. Returns the number of descriptors processed. Throws SglError for invalid SGLs.
 */
export function walkSgl(dw: ArrayLike<number>, at: number, length: number, readDescriptor: SglDescriptorReader, visit: SglRangeVisitor, flags = 0, maxDescriptors = SGL_WALK_MAX_DESCRIPTORS): number {
  if (!(length >= 0 && Number.isSafeInteger(length))) throw new RangeError(`length must be a non-negative integer, got ${length}`);
  const allowExcess = (flags & SglWalkFlags.AllowExcess) !== 0;
  let id = (dw[at + 3]! >>> SGL_DW3_ID_SHIFT) & 0xff;
  let address = (dw[at + 1]! >>> 0) * TWO_POW_32 + (dw[at]! >>> 0);
  let dlen = dw[at + 2]! >>> 0;
  let remaining = length;
  let segIova = 0;
  let segLeft = 0;
  let inLastSegment = false;
  let count = 0;
  for (;;) {
    count++;
    if (count > maxDescriptors) {
      throw new SglError('too many descriptors', GenericStatus.InvalidNumberOfSglDescriptors, `more than ${maxDescriptors}`);
    }
    const type = id >>> SGL_TYPE_SHIFT;
    if ((id & SGL_SUBTYPE_MASK) !== SglSubtype.Address) {
      throw new SglError('descriptor subtype invalid', GenericStatus.SglDescriptorTypeInvalid, `identifier 0x${id.toString(16)}`);
    }
    if (type === SglType.DataBlock || type === SglType.BitBucket) {
      const discard = type === SglType.BitBucket;
      if (discard && (flags & SglWalkFlags.HostToController) !== 0) {
        throw new SglError('descriptor type invalid', GenericStatus.SglDescriptorTypeInvalid, 'Bit Bucket in a host-to-controller transfer');
      }
      if (!discard && (flags & SglWalkFlags.DwordAligned) !== 0 && ((address | dlen) & 0x3) !== 0) {
        throw new SglError('data block not dword aligned', GenericStatus.SglDataBlockGranularityInvalid, `address 0x${address.toString(16)} length ${dlen}`);
      }
      if (dlen > remaining) {
        if (!allowExcess) {
          throw new SglError('data SGL longer than transfer', GenericStatus.DataSglLengthInvalid, `transfer is ${length} bytes`);
        }
        dlen = remaining;
      }
      if (dlen > 0) {
        visit(discard ? 0 : address, dlen, discard);
        remaining -= dlen;
      }
      if (remaining === 0 && allowExcess) return count;
    } else if (type === SglType.Segment || type === SglType.LastSegment) {
      if (segLeft !== 0) {
        throw new SglError('segment descriptor not last in segment', GenericStatus.InvalidSglSegmentDescriptor, `at 0x${(segIova - SGL_DESCRIPTOR_SIZE).toString(16)}`);
      }
      if (inLastSegment) {
        throw new SglError('segment descriptor in last segment', GenericStatus.InvalidSglSegmentDescriptor, `at 0x${(segIova - SGL_DESCRIPTOR_SIZE).toString(16)}`);
      }
      if (dlen === 0 || dlen % SGL_DESCRIPTOR_SIZE !== 0) {
        throw new SglError('segment length invalid', GenericStatus.InvalidSglSegmentDescriptor, `length ${dlen} is not a non-zero multiple of 16`);
      }
      if ((address & SGL_SEGMENT_ALIGN_MASK) !== 0) {
        throw new SglError('segment address not qword aligned', GenericStatus.InvalidSglSegmentDescriptor, `address 0x${address.toString(16)}`);
      }
      segIova = address;
      segLeft = dlen / SGL_DESCRIPTOR_SIZE;
      inLastSegment = type === SglType.LastSegment;
    } else {
      throw new SglError('descriptor type invalid', GenericStatus.SglDescriptorTypeInvalid, `type 0x${type.toString(16)}`);
    }
    if (segLeft === 0) break;
    readDescriptor(segIova, scratch);
    segIova += SGL_DESCRIPTOR_SIZE;
    segLeft--;
    id = scratch[SGL_DESC_ID_OFFSET]!;
    address = le32(scratch, 4) * TWO_POW_32 + le32(scratch, 0);
    dlen = le32(scratch, 8);
  }
  if (remaining > 0) {
    throw new SglError('data SGL shorter than transfer', GenericStatus.DataSglLengthInvalid, `${length - remaining} of ${length} bytes described`);
  }
  return count;
}
