/**
 * A file's extents (from homid) as the gpu path's list of device reads, each with one destination: the client
 * library's read plan (client/read-file.ts planRead: adjacent extents coalesced up to the largest command, holes
 * and unwritten extents as zeros, inline / delalloc / encoded extents and LBAs past the namespace refused) with
 * each command turned into reads that land contiguously in the file. Holes and unwritten extents need no read
 * (every destination starts zeroed). A command whose pieces scatter over the file becomes one read per piece; a
 * piece that does not start on a block of the device cannot be a read of its own and is refused.
 */
import { planRead } from '../client/index.js';
import type { TableExtent } from '../ipc/extent-table.js';

export interface PlannedRead {
  /** First LBA. */
  slba: number;
  /** Blocks read. */
  nlb: number;
  /** Offset in the file of the first byte read. */
  fileOffset: number;
  /** Bytes of the read that belong to the file (the last read of a file may be cut). */
  bytes: number;
}

/**
 * Reads for a file of `size` bytes on a namespace of `blocks` blocks of `blockSize` bytes, none over `maxBytes`;
 * throws an Error naming the reason when the extents cannot be read so.
 */
export function planReads(size: number, extents: readonly TableExtent[], blockSize: number, maxBytes: number, blocks = Number.MAX_SAFE_INTEGER): PlannedRead[] {
  const plan = planRead({ generation: 0, valid: true, size, ino: 0, dev: 0, extents: [...extents] }, blockSize, blocks, maxBytes);
  const out: PlannedRead[] = [];
  for (const c of plan.commands) {
    const s = c.segs; // triples: byte offset in the command, file offset, bytes
    let contiguous = s[0] === 0;
    for (let i = 3; contiguous && i < s.length; i += 3) contiguous = s[i] === s[i - 3]! + s[i - 1]! && s[i + 1] === s[i - 2]! + s[i - 1]!;
    if (contiguous) {
      let bytes = 0;
      for (let i = 2; i < s.length; i += 3) bytes += s[i]!;
      out.push({ slba: c.lba, nlb: c.nlb, fileOffset: s[1]!, bytes });
      continue;
    }
    for (let i = 0; i < s.length; i += 3) {
      const at = s[i]!;
      if (at % blockSize !== 0) throw new Error(`extent at file offset ${s[i + 1]} is not aligned to the ${blockSize}-byte block`);
      out.push({ slba: c.lba + at / blockSize, nlb: Math.ceil(s[i + 2]! / blockSize), fileOffset: s[i + 1]!, bytes: s[i + 2]! });
    }
  }
  return out;
}
