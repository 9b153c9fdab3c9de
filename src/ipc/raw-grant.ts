/**
 * The raw grant: everything a client needs to drive an I/O queue pair itself, as plain JSON (the descriptors
 * travel separately, by SCM_RIGHTS or inheritance, and the grant names them by index). homid (or any owner)
 * writes it with driver/attach.ts provisionQueuePair; the client checks it with validateRawGrant before it maps
 * anything (attachQueuePair does).
 *
 * The client never maps BAR0's register page: the grant names the doorbell page(s) (BAR0 offset 0x1000 onward)
 * as a window of a 'bar' fd (the embedded controller's BAR memfd, the VFIO device fd, sysfs resource0), and, for
 * a software controller that sleeps, its wake word's page; then one window of a 'memory' fd holding the SQ, the
 * CQ and the data region (buffers and PRP lists), with the controller's address of the data region.
 */
import { z } from 'zod';
import { CQE_SIZE, REG_DOORBELL_BASE, SQE_SIZE, cqHeadDoorbellOffset, sqTailDoorbellOffset } from '../nvme/registers.js';
import { WireFormatError, count, intIn, multipleIn, parseWire, pow2In, record, show } from './validate.js';

/** The grant format this file writes and reads. */
export const GRANT_VERSION = 2;
/** mmap granularity: every window's offset and length are multiples of it. */
export const GRANT_MAP_PAGE = 4096;
/** Upper bound of one window (sanity check on what a grant asks the client to map). */
export const GRANT_MAX_WINDOW_BYTES = 1 << 30;
/** Descriptor indices an owner's grant uses: the doorbells' 'bar' fd, then the queue memory; a wake page on
 * another fd (a 'bar' role too) comes after. */
export const GRANT_FD_DOORBELLS = 0;
export const GRANT_FD_MEMORY = 1;
/** Descriptors one grant may name. */
export const GRANT_MIN_FDS = 2;
export const GRANT_MAX_FDS = 8;
const MAX_QID = 0xffff;
const MAX_ENTRIES = 0x10000;
const MIN_ENTRIES = 2;
/** CC.MPS page sizes: 4 KiB .. 128 MiB. */
const MAX_PAGE_SIZE = 1 << 27;
/** CAP.DSTRD: 4 << 0 .. 4 << 15 bytes. */
const MIN_STRIDE = 4;
const MAX_STRIDE = 4 << 15;
const DOORBELL_BYTES = 4;
const MAX_NSID = 0xffff_fffe;
const MIN_BLOCK = 512;
const MAX_BLOCK = 1 << 16;

const FdRole = z.enum(['bar', 'memory'], { error: (iss) => `${show(iss.input)} is not 'bar' or 'memory'` });

/** A window of one of the granted fds: mmap(bytes, fd, offset). */
const GrantWindow = record({
  /** Index into the grant's fd array. */
  fd: count('is not an fd index'),
  /** File offset, a multiple of 4096. */
  offset: multipleIn(GRANT_MAP_PAGE, 0, Number.MAX_SAFE_INTEGER, 'is not a page-aligned file offset'),
  /** Bytes, a multiple of 4096. */
  bytes: multipleIn(GRANT_MAP_PAGE, GRANT_MAP_PAGE, GRANT_MAX_WINDOW_BYTES, `bytes is not a whole number of pages up to ${GRANT_MAX_WINDOW_BYTES}`),
});
export type GrantWindow = z.infer<typeof GrantWindow>;

/** A byte range inside the memory window (page-aligned). */
const GrantRange = record({
  offset: multipleIn(GRANT_MAP_PAGE, 0, Number.MAX_SAFE_INTEGER, `is not ${GRANT_MAP_PAGE}-byte aligned inside the memory window`),
  bytes: intIn(1, Number.MAX_SAFE_INTEGER, 'is not a positive byte count'),
});
export type GrantRange = z.infer<typeof GrantRange>;

const RawQueueGrantShape = record(
  {
    version: z.literal(GRANT_VERSION),
    qid: intIn(1, MAX_QID),
    entries: intIn(MIN_ENTRIES, MAX_ENTRIES),
    /** Memory page size for PRPs (CC.MPS). */
    pageSize: pow2In(GRANT_MAP_PAGE, MAX_PAGE_SIZE, `is not a power of two >= ${GRANT_MAP_PAGE}`),
    /** Per fd index: 'bar' (BAR0 or a file holding its doorbells: only windows at or after 0x1000 are mapped) or 'memory'. */
    fds: z
      .array(record({ role: FdRole }), { error: () => `must list ${GRANT_MIN_FDS}..${GRANT_MAX_FDS} descriptors` })
      .min(GRANT_MIN_FDS, `must list ${GRANT_MIN_FDS}..${GRANT_MAX_FDS} descriptors`)
      .max(GRANT_MAX_FDS, `must list ${GRANT_MIN_FDS}..${GRANT_MAX_FDS} descriptors`),
    doorbell: record({
      /** The doorbell page(s): BAR0 [barOffset, barOffset + map.bytes) as a window of a 'bar' fd. */
      map: GrantWindow,
      /** BAR0 offset of the window's first byte: always REG_DOORBELL_BASE (0x1000) in this version. */
      barOffset: multipleIn(REG_DOORBELL_BASE, REG_DOORBELL_BASE, REG_DOORBELL_BASE, `must be 0x${REG_DOORBELL_BASE.toString(16)}`),
      /** BAR0 byte offsets of this queue's SQ tail and CQ head doorbells. */
      sqTailOffset: count(),
      cqHeadOffset: count(),
      /** Doorbell stride (CAP.DSTRD) in bytes. */
      stride: pow2In(MIN_STRIDE, MAX_STRIDE),
    }),
    /** The controller's wake word (futex) for software controllers that sleep: a page of its own; null for hardware. */
    wake: record({ map: GrantWindow, offset: count() }).nullable(),
    /** The queue pair's memory (SQ, CQ, data region): one window of a 'memory' fd. */
    memory: GrantWindow,
    sq: GrantRange,
    cq: GrantRange,
    /** The client's data region: buffers and PRP lists; `iova` is the controller's address of its first byte. */
    data: record({ ...GrantRange.shape, iova: count('is not an address') }),
    nsid: intIn(1, MAX_NSID, `is not in 1..0x${MAX_NSID.toString(16)}`),
    blockSize: pow2In(MIN_BLOCK, MAX_BLOCK),
    /** Namespace size in blocks. */
    blocks: intIn(1, Number.MAX_SAFE_INTEGER, 'is not a positive integer'),
    /** Largest transfer in bytes (0: no limit). */
    maxTransferBytes: count('is not a non-negative integer'),
  },
  'the grant is not an object',
);

type Shape = z.infer<typeof RawQueueGrantShape>;

/** The rules across fields, in the order a reader would check them (the first failure is reported). */
function crossCheck(g: Shape, ctx: z.RefinementCtx): void {
  const issue = (path: (string | number)[], message: string): void => ctx.addIssue({ code: 'custom', path, message });
  /** A window's problem (reported at `path`), or null when it is one of `role`'s fds and maps no register page. */
  const windowProblem = (w: GrantWindow, role: 'bar' | 'memory'): [string, string] | null => {
    if (w.fd >= g.fds.length) return ['fd', `index ${w.fd} out of range (${g.fds.length} fds)`];
    const has = g.fds[w.fd]!.role;
    if (has !== role) return ['fd', `${w.fd} is a '${has}' fd, expected '${role}'`];
    // A 'bar' fd is never mapped below the doorbells: the register page (CC, CSTS, AQA, ...) stays the owner's.
    if (role === 'bar' && w.offset < REG_DOORBELL_BASE) return ['offset', `0x${w.offset.toString(16)} would map BAR0's register page`];
    return null;
  };
  const window = (w: GrantWindow, path: string[], role: 'bar' | 'memory'): boolean => {
    const p = windowProblem(w, role);
    if (p !== null) issue([...path, p[0]], p[1]);
    return p === null;
  };
  const db = g.doorbell;
  if (!window(db.map, ['doorbell', 'map'], 'bar')) return;
  if (db.sqTailOffset !== sqTailDoorbellOffset(g.qid, db.stride) || db.cqHeadOffset !== cqHeadDoorbellOffset(g.qid, db.stride)) {
    return issue(['doorbell'], 'offsets do not match qid and stride');
  }
  if (db.cqHeadOffset + DOORBELL_BYTES > REG_DOORBELL_BASE + db.map.bytes) {
    return issue(['doorbell', 'cqHeadOffset'], `0x${db.cqHeadOffset.toString(16)} (the CQ head doorbell) lies outside the doorbell window`);
  }
  if (g.wake !== null) {
    const w = g.wake;
    if (!window(w.map, ['wake', 'map'], 'bar')) return;
    if (w.offset > w.map.bytes - DOORBELL_BYTES || w.offset % DOORBELL_BYTES !== 0) return issue(['wake'], `offset ${w.offset} is not an aligned word inside its window`);
    if (w.map.fd === db.map.fd && w.map.offset < db.map.offset + db.map.bytes && db.map.offset < w.map.offset + w.map.bytes) {
      return issue(['wake', 'map'], 'overlaps the doorbell window');
    }
  }
  if (!window(g.memory, ['memory'], 'memory')) return;
  const mb = g.memory.bytes;
  for (const k of ['sq', 'cq', 'data'] as const) {
    const r = g[k];
    if (r.offset > mb) return issue([k, 'offset'], `${r.offset} is not ${GRANT_MAP_PAGE}-byte aligned inside the memory window`);
    if (r.offset + r.bytes > mb) return issue([k], `[${r.offset}, +${r.bytes}) is outside the ${mb}-byte memory window`);
  }
  if (g.sq.bytes < g.entries * SQE_SIZE || g.cq.bytes < g.entries * CQE_SIZE) return issue([], 'queue memory too small for its entries');
  if (g.data.iova % g.pageSize !== 0) return issue(['data', 'iova'], `${g.data.iova} is not a page-aligned address`);
  const ranges = [g.sq, g.cq, g.data].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < ranges.length; i++) if (ranges[i - 1]!.offset + ranges[i - 1]!.bytes > ranges[i]!.offset) return issue([], 'sq, cq and data overlap');
}

/** The raw grant's schema (every field, and the rules across fields). */
export const RawQueueGrant = RawQueueGrantShape.superRefine(crossCheck);
/** Everything a client needs to drive a queue pair itself; plain JSON (fds travel separately, by index). */
export type RawQueueGrant = z.infer<typeof RawQueueGrant>;

/**
 * Check every field of a grant that came from another process, and that `fdCount` descriptors came with it;
 * returns the checked copy. Throws WireFormatError naming the first bad field.
 */
export function validateRawGrant(input: unknown, fdCount: number): RawQueueGrant {
  // the version first: another version is another shape, and saying so beats naming its first odd field
  if (typeof input === 'object' && input !== null && !Array.isArray(input)) {
    const v = (input as { version?: unknown }).version;
    if (v !== GRANT_VERSION) throw new WireFormatError(`grant: unsupported version ${show(v)} (this client reads ${GRANT_VERSION})`, 'version');
  }
  const g = parseWire(RawQueueGrant, input, 'grant');
  if (fdCount < g.fds.length) throw new WireFormatError(`grant: names ${g.fds.length} fds, got ${fdCount}`, 'fds');
  return g;
}
