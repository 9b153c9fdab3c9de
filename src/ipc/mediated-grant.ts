/**
 * The mediated grant: what a client needs to map a mediated queue pair (homid writes it in
 * daemon/leases/mediated.ts; client/index.ts checks it with validateMediatedGrant before it maps anything).
 *
 * Descriptors, by index: 0 the ring (mediated-ring.ts layout, `ringBytes` long); 1 the segment (`segmentBytes`),
 * holding the data buffer at [dataOffset, +dataBytes) and, in direct mode, the hardware CQ at `hwCq`. Without a
 * write grant, descriptor 1 is read-only and the client maps it read-only. With `dataDmaBuf` the data buffer is the
 * client's own dma-buf (sent with the request) and descriptor 1 holds only the hardware CQ. With `dataDevice` the data
 * buffer is in device memory, in descriptor 2 (MEDIATED_FD_DEVICE_MEMORY), and descriptor 1 holds only the hardware CQ.
 */
import { z } from 'zod';
import { CQE_SIZE } from '../nvme/registers.js';
import { RING_MAX_ENTRIES, RING_MIN_ENTRIES, ringBytes } from './mediated-ring.js';
import { WireFormatError, count, intIn, parseWire, pow2In, record, show } from './validate.js';

export const MEDIATED_GRANT_VERSION = 2;
/** Descriptor indices of a mediated grant. */
export const MEDIATED_FD_RING = 0;
export const MEDIATED_FD_SEGMENT = 1;
/** With dataDevice: the device memory holding the data buffer. */
export const MEDIATED_FD_DEVICE_MEMORY = 2;
/** Descriptors a mediated grant comes with at least (ring, segment). */
export const MEDIATED_MIN_FDS = 2;
const MAX_QID = 0xffff;
const MAX_NSID = 0xffff_fffe;

const MediatedQueueGrantShape = record(
  {
    version: z.literal(MEDIATED_GRANT_VERSION),
    /** Entries of the ring's SQ and CQ (and of the hardware CQ in direct mode). */
    entries: intIn(RING_MIN_ENTRIES, RING_MAX_ENTRIES),
    /** Bytes of the ring (descriptor 0). */
    ringBytes: count(),
    dataBytes: count(),
    /** Offset of the data buffer in the segment (descriptor 1). */
    dataOffset: count(),
    /** Bytes of the segment (descriptor 1). */
    segmentBytes: count(),
    /** Direct completions: the hardware CQ (fd index, byte range, hardware queue id); null in relay mode. */
    hwCq: record({ fd: count('is not an fd index'), offset: count(), bytes: count(), qid: intIn(1, MAX_QID) }).nullable(),
    nsid: intIn(1, MAX_NSID, `is not in 1..0x${MAX_NSID.toString(16)}`),
    blockSize: pow2In(512, 1 << 16),
    blocks: count(),
    /** Largest transfer in bytes. */
    maxTransferBytes: count(),
    /** Whether writes may be granted (and the segment is writable). */
    write: z.boolean({ error: (iss) => `${show(iss.input)} is not a boolean` }),
    /**
     * The data buffer is the dma-buf the client passed with its request ([dataOffset, +dataBytes) of it), not part
     * of the segment; the segment then holds the hardware CQ only.
     */
    dataDmaBuf: z.literal(true, { error: (iss) => `${show(iss.input)} is not true` }).optional(),
    /**
     * The data buffer is in device memory: descriptor `fd` (a peer BAR's sysfs resource file, read-only without a
     * write grant) holds it at the page-aligned `offset`, `dataBytes` long; the segment then holds the hardware CQ
     * only. The descriptor may reach more than the buffer: map only [offset, +dataBytes).
     */
    dataDevice: record({ fd: count('is not an fd index'), offset: count(), what: z.string().max(200) }).optional(),
  },
  'the grant is not an object',
);

type Shape = z.infer<typeof MediatedQueueGrantShape>;

function crossCheck(g: Shape, ctx: z.RefinementCtx): void {
  const issue = (path: (string | number)[], message: string): void => ctx.addIssue({ code: 'custom', path, message });
  if (g.ringBytes < ringBytes(g.entries)) return issue(['ringBytes'], `${g.ringBytes} is too small for ${g.entries} entries`);
  if (g.dataDevice !== undefined) {
    if (g.dataDmaBuf === true) return issue(['dataDevice'], 'a data buffer cannot be both a dma-buf and device memory');
    if (g.dataDevice.fd <= MEDIATED_FD_SEGMENT || g.dataDevice.offset % 4096 !== 0 || g.dataOffset !== 0) return issue(['dataDevice'], 'bad device-memory region');
  }
  if (g.dataDmaBuf !== true && g.dataDevice === undefined && g.dataOffset + g.dataBytes > g.segmentBytes) return issue([], 'data buffer lies outside its segment');
  const c = g.hwCq;
  if (c !== null) {
    if (c.fd < MEDIATED_FD_SEGMENT || c.bytes < g.entries * CQE_SIZE) return issue(['hwCq'], 'bad hardware CQ region');
    if (c.fd === MEDIATED_FD_SEGMENT && c.offset + c.bytes > g.segmentBytes) return issue(['hwCq'], 'hardware CQ lies outside its segment');
  }
}

/** The mediated grant's schema. */
export const MediatedQueueGrant = MediatedQueueGrantShape.superRefine(crossCheck);
export type MediatedQueueGrant = z.infer<typeof MediatedQueueGrant>;

/** Check a mediated grant from homid, and that `fdCount` descriptors came with it. Throws WireFormatError. */
export function validateMediatedGrant(input: unknown, fdCount: number): MediatedQueueGrant {
  if (typeof input === 'object' && input !== null && !Array.isArray(input)) {
    const v = (input as { version?: unknown }).version;
    if (v !== MEDIATED_GRANT_VERSION) throw new WireFormatError(`mediated grant: unsupported version ${show(v)}`, 'version');
  }
  const g = parseWire(MediatedQueueGrant, input, 'mediated grant');
  if (fdCount < MEDIATED_MIN_FDS) throw new WireFormatError(`mediated grant: expected at least ${MEDIATED_MIN_FDS} descriptors, got ${fdCount}`, 'fds');
  if (g.dataDevice !== undefined && g.dataDevice.fd >= fdCount) throw new WireFormatError('mediated grant: dataDevice: no such descriptor', 'dataDevice');
  if (g.hwCq !== null && g.hwCq.fd >= fdCount) throw new WireFormatError('mediated grant: hwCq: bad hardware CQ region', 'hwCq');
  return g;
}
