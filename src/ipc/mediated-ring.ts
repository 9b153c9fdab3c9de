/**
 * The software queue pair of a mediated client: NVMe-format SQ and CQ rings in shared memory that homid polls.
 * The client writes standard 64-byte SQEs and advances the SQ tail; homid checks each command against the
 * client's grant, forwards it to a hardware queue, and posts a standard 16-byte CQE (phase tag, the client's
 * CID, SQ head) to the CQ. Data pointers are not bus addresses: PRP1 is a byte offset into the grant's data
 * buffer (shared memory the device can reach), PRP2 is ignored; homid builds the real PRPs.
 *
 * Layout: header page (Int32 cells below, each on its own 64-byte line), then the SQ (entries * 64 bytes) at
 * RING_SQ_OFFSET, then the CQ (entries * 16 bytes) at a page-aligned offset after it (ringCqOffset). The
 * client checks the ring's identity once, when it maps it (openRing); homid, which lays it out (initRing),
 * bounds-checks each cell the client writes as it reads it. Nothing on the client's fast path validates.
 *
 * Direct completions (H_FLAGS bit RING_FLAG_DIRECT_CQ): where the client can map the hardware queue's CQ
 * (memory-shared devices), homid forwards the client's CID as the hardware CID and the controller's
 * completions go straight to that CQ, which the client reaps itself; it publishes how far it consumed in
 * H_HWCQ_HEAD and homid, after checking it, passes that on to the CQ head doorbell. Only commands homid
 * answers itself (denied, malformed) arrive on the ring's own CQ. homid then touches no completion on the
 * data path: the check on submission is where the trust boundary is.
 */
import { CQE_DW_RESULT_HI } from '../nvme/cqe.js';
import { CQE_SIZE, SQE_SIZE } from '../nvme/registers.js';

export const RING_MAGIC = 0x51444d48; // 'HMDQ'
export const RING_VERSION = 2;
/** The header's size, and the granularity of the SQ and CQ areas. */
export const RING_PAGE = 4096;
/** Byte offset of the SQ: right after the header page. */
export const RING_SQ_OFFSET = RING_PAGE;
/** Entries per ring (the NVMe queue limits: 2..65536). */
export const RING_MIN_ENTRIES = 2;
export const RING_MAX_ENTRIES = 0x10000;
/** Bytes per header cell (an Int32). */
const CELL_BYTES = 4;
/** Int32 cells of the header page. */
export const RING_HEADER_CELLS = RING_PAGE / CELL_BYTES;
/** Int32 indices into the header. The first three are written once (initRing); the others each have one writer. */
export const H_MAGIC = 0;
export const H_VERSION = 1;
export const H_ENTRIES = 2;
/** Cells a client reads to recognise the ring (H_MAGIC, H_VERSION, H_ENTRIES). */
const H_IDENTITY_CELLS = 3;
/** Client writes: next free SQ slot. */
export const H_SQ_TAIL = 16;
/** homid writes: SQ slots consumed. */
export const H_SQ_HEAD = 32;
/** Client writes: CQ slots consumed. */
export const H_CQ_HEAD = 48;
/** homid writes: RING_STATE_OPEN, or RING_STATE_REVOKED once the lease ended. */
export const H_STATE = 64;
export const RING_STATE_OPEN = 0;
export const RING_STATE_REVOKED = 1;
/** Client writes (direct mode): hardware CQ slots consumed. */
export const H_HWCQ_HEAD = 80;
/** homid writes: RING_FLAG_* bits. */
export const H_FLAGS = 96;
/** homid writes (direct mode): the hardware queue id (CQE SQID of direct completions). */
export const H_HW_QID = 112;
export const RING_FLAG_DIRECT_CQ = 1;
/**
 * CQEs homid posts to the ring's CQ carry, in DW1 (reserved for reads and writes), the part of the completion
 * status above the 15-bit field (src/nvme/status.ts: status >>> 16, the host cause and errno) so that a host
 * outcome on homid's hardware queue (a timeout, a reset) reaches the client whole; 0 for a controller's status.
 */
export const RING_CQE_DW_HOST = CQE_DW_RESULT_HI;
/** Uint32 words of one SQ slot and one CQ slot (standard NVMe entries). */
export const RING_SQE_WORDS = SQE_SIZE / 4;
export const RING_CQE_WORDS = CQE_SIZE / 4;

function pageRound(n: number): number {
  return Math.ceil(n / RING_PAGE) * RING_PAGE;
}

/** Byte offset of the CQ: the first page after the SQ. */
export function ringCqOffset(entries: number): number {
  return RING_SQ_OFFSET + pageRound(entries * SQE_SIZE);
}

/** Bytes of a ring of `entries` entries: header page, SQ, CQ (each page-rounded). */
export function ringBytes(entries: number): number {
  return ringCqOffset(entries) + pageRound(entries * CQE_SIZE);
}

export interface RingViews {
  header: Int32Array;
  sq: Uint32Array;
  cq: Uint32Array;
  entries: number;
}

export function ringViews(bytes: Uint8Array, entries: number): RingViews {
  if (bytes.byteLength < ringBytes(entries)) throw new RangeError(`ring region of ${bytes.byteLength} bytes is too small for ${entries} entries`);
  const b = bytes.buffer;
  const o = bytes.byteOffset;
  return {
    header: new Int32Array(b, o, RING_HEADER_CELLS),
    sq: new Uint32Array(b, o + RING_SQ_OFFSET, entries * RING_SQE_WORDS),
    cq: new Uint32Array(b, o + ringCqOffset(entries), entries * RING_CQE_WORDS),
    entries,
  };
}

/** homid: lay out a fresh ring (zeroed memory) and publish its identity. */
export function initRing(bytes: Uint8Array, entries: number, direct: { hwQid: number } | null = null): RingViews {
  const v = ringViews(bytes, entries);
  v.header[H_FLAGS] = direct ? RING_FLAG_DIRECT_CQ : 0;
  v.header[H_HW_QID] = direct ? direct.hwQid : 0;
  v.header[H_MAGIC] = RING_MAGIC;
  v.header[H_VERSION] = RING_VERSION;
  v.header[H_ENTRIES] = entries;
  return v;
}

/** Client: check a mapped ring's identity and entry count (once, when it is opened) and return its views. */
export function openRing(bytes: Uint8Array): RingViews {
  const h = new Int32Array(bytes.buffer, bytes.byteOffset, H_IDENTITY_CELLS);
  if (h[H_MAGIC] !== RING_MAGIC || h[H_VERSION] !== RING_VERSION) throw new Error('not a homid mediated ring (bad magic or version)');
  const entries = h[H_ENTRIES]!;
  if (!Number.isInteger(entries) || entries < RING_MIN_ENTRIES || entries > RING_MAX_ENTRIES) throw new Error(`homid mediated ring: bad entry count ${entries}`);
  return ringViews(bytes, entries);
}
