/**
 * Active Namespace ID list (Identify CNS 02h): up to 1024 little-endian NSIDs in ascending order,
 * terminated by a zero entry when fewer than 1024 are listed (NVMe Base 2.0 section 5.17.2.2).
 */
import { checkBuffer, checkUint, readU32, writeU32 } from './bytes.js';
import { IDENTIFY_DATA_SIZE } from './identify-controller.js';

export const NSID_LIST_MAX_ENTRIES = 1024;
export const NSID_ENTRY_SIZE = 4;
/** Largest valid NSID (FFFFFFFFh is the broadcast value). */
export const NSID_MAX = 0xffff_fffe;
export const NSID_BROADCAST = 0xffff_ffff;

/** Encode `nsids` (ascending, each 1..FFFFFFFEh, at most 1024) into `out` (>= 4096 bytes). */
export function encodeActiveNamespaceList(nsids: readonly number[], out: Uint8Array): void {
  checkBuffer('out', out, IDENTIFY_DATA_SIZE);
  if (!Array.isArray(nsids)) throw new TypeError('nsids must be an array');
  if (nsids.length > NSID_LIST_MAX_ENTRIES) {
    throw new RangeError(`nsids must hold at most ${NSID_LIST_MAX_ENTRIES} entries, got ${nsids.length}`);
  }
  let prev = 0;
  for (let i = 0; i < nsids.length; i++) {
    const id = checkUint(`nsids[${i}]`, nsids[i], NSID_MAX);
    if (id <= prev) throw new RangeError(`nsids[${i}] must be non-zero and greater than the previous entry, got ${id}`);
    prev = id;
  }
  out.fill(0, 0, IDENTIFY_DATA_SIZE);
  for (let i = 0; i < nsids.length; i++) writeU32(out, i * NSID_ENTRY_SIZE, `nsids[${i}]`, nsids[i]!);
}

/** Decode an active namespace list; validates ascending order and the NSID range. */
export function decodeActiveNamespaceList(bytes: Uint8Array): number[] {
  checkBuffer('namespace list data', bytes, IDENTIFY_DATA_SIZE);
  const ids: number[] = [];
  let prev = 0;
  for (let i = 0; i < NSID_LIST_MAX_ENTRIES; i++) {
    const id = readU32(bytes, i * NSID_ENTRY_SIZE);
    if (id === 0) break;
    if (id > NSID_MAX) throw new RangeError(`namespace list entry ${i} is the broadcast NSID FFFFFFFFh`);
    if (id <= prev) throw new RangeError(`namespace list entry ${i} (${id}) is not greater than entry ${i - 1} (${prev})`);
    ids.push(id);
    prev = id;
  }
  return ids;
}

/**
 * The list a controller returns for CNS 02h: the active NSIDs greater than `afterNsid` (CDW1.NSID),
 * ascending, at most 1024. `active` need not be sorted.
 */
export function activeNamespacesAfter(active: Iterable<number>, afterNsid: number): number[] {
  checkUint('afterNsid', afterNsid, NSID_BROADCAST);
  const ids = [...active].filter((id) => id > afterNsid).sort((a, b) => a - b);
  return ids.slice(0, NSID_LIST_MAX_ENTRIES);
}
