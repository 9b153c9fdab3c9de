/**
 * Where a FIEMAP map lands on a homid device. FIEMAP's physical offsets are byte offsets on the kernel block
 * device that holds the file's file system (the file's st_dev). They are offsets of namespace 1 of a homid
 * device only when that block device IS the namespace, which homid recognises in two cases:
 *
 *  - the device is a file-backed emu:// device (`emu:///path/img`), and st_dev is a loop device (or a
 *    partition of one) whose backing file is that image: the same file by st_dev and st_ino. The embedded
 *    controller reads and writes the image at byte (LBA * block size), so namespace offset = loop offset +
 *    partition start + FIEMAP offset.
 *  - the device's config names the kernel block device that is its namespace 1 (`block_device`), and st_dev is
 *    that device (offset 0) or one of its partitions (offset = the partition's start).
 *  - st_dev is a ublk block device homid itself serves from an LBA range of namespace 1 (ublk-service.ts), or a
 *    partition of one: namespace offset = range start * LBA size + partition start + FIEMAP offset, and every
 *    extent must end inside the range (`limit`). The ublk device's logical block size is the namespace's, so
 *    the byte offsets convert exactly.
 *
 * Everything else (another disk, tmpfs, overlayfs, btrfs's anonymous devices, a loop device over some other
 * file) is refused with 'wrong-device'. The facts come from sysfs (/sys/dev/block/MAJ:MIN: `dev`, `partition`,
 * `start` in 512-byte sectors, `loop/backing_file`, `loop/offset` in bytes; Documentation/ABI/testing/
 * sysfs-block and sysfs-block-loop). Runs in homid's resolver threads (synchronous file-system reads).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HomidError } from './errors.js';

/** sysfs counts a partition's `start` in 512-byte sectors whatever the device's block size. */
export const SYSFS_SECTOR_BYTES = 512;
/** Where the block devices are listed by number. */
export const SYS_DEV_BLOCK = '/sys/dev/block';
/** Longest sysfs attribute homid reads (a backing file path is at most PATH_MAX). */
const MAX_ATTR_BYTES = 8192;

/** What a FIEMAP map must land on: namespace 1 of one homid device. */
export interface PlacementTarget {
  /** homid's name of the device (for messages). */
  device: string;
  /** The image file of a file-backed emu:// device, else null. */
  imageFile: string | null;
  /** The configured `block_device`, else null. */
  blockDevice: string | null;
  /** Namespace 1: size in bytes and LBA size. */
  namespaceBytes: number;
  lbaSize: number;
  /** ublk block devices homid serves from ranges of namespace 1: the range's first byte and its length. */
  ublk?: { blockDevice: string; offset: number; bytes: number }[];
}

export interface Placement {
  /** Add to every FIEMAP physical offset to get the namespace byte offset. */
  offset: number;
  /** How the file's device was matched (for logs). */
  via: string;
  /** Every extent must end at or before this namespace byte offset (the end of a ublk device's range). */
  limit?: number;
}

export interface DevNumber {
  major: number;
  minor: number;
}

/** Split a dev_t as glibc's makedev builds it (what Node's stat returns) into major and minor numbers. */
export function devNumber(dev: bigint | number): DevNumber {
  const d = BigInt(dev);
  if (d < 0n || d > 0xffff_ffff_ffff_ffffn) throw new RangeError(`bad device number ${d}`);
  const major = Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn & 0xffff_ffffn));
  const minor = Number((d & 0xffn) | ((d >> 12n) & ~0xffn & 0xffff_ffffn));
  return { major, minor };
}

function devText(d: DevNumber): string {
  return `${d.major}:${d.minor}`;
}

/** A sysfs attribute as text (trailing newline removed), or null when absent. */
function attr(file: string): string | null {
  let b: Buffer;
  try {
    b = fs.readFileSync(file);
  } catch {
    return null;
  }
  if (b.length > MAX_ATTR_BYTES) throw new HomidError('wrong-device', `${file}: unexpectedly long (${b.length} bytes)`);
  return b.toString('utf8').replace(/\n$/, '');
}

/** A sysfs attribute holding one non-negative decimal integer (validated), or null when absent. */
function intAttr(file: string): number | null {
  const t = attr(file);
  if (t === null) return null;
  if (!/^\d{1,16}$/.test(t)) throw new HomidError('wrong-device', `${file}: not a non-negative integer: ${JSON.stringify(t.slice(0, 40))}`);
  const v = Number(t);
  if (!Number.isSafeInteger(v)) throw new HomidError('wrong-device', `${file}: ${t} is too large`);
  return v;
}

/** A sysfs `dev` attribute ("MAJ:MIN"), validated. */
function devAttr(file: string): DevNumber | null {
  const t = attr(file);
  if (t === null) return null;
  const m = /^(\d{1,10}):(\d{1,10})$/.exec(t);
  if (!m) throw new HomidError('wrong-device', `${file}: not MAJ:MIN: ${JSON.stringify(t.slice(0, 40))}`);
  return { major: Number(m[1]), minor: Number(m[2]) };
}

interface BlockInfo {
  /** The device the file system is on (maybe a partition). */
  dev: DevNumber;
  /** Its kernel name, e.g. loop3p1. */
  name: string;
  /** The whole device (itself when not a partition). */
  whole: DevNumber;
  wholeDir: string;
  wholeName: string;
  /** The partition's start in bytes on the whole device (0 when not a partition). */
  partStart: number;
}

function blockInfo(dev: DevNumber, sysDevBlock: string): BlockInfo | null {
  let dir: string;
  try {
    dir = fs.realpathSync(path.join(sysDevBlock, devText(dev)));
  } catch {
    return null; // not a block device the kernel lists (tmpfs, overlayfs, btrfs's anonymous devices, NFS...)
  }
  const name = path.basename(dir);
  if (!fs.existsSync(path.join(dir, 'partition'))) return { dev, name, whole: dev, wholeDir: dir, wholeName: name, partStart: 0 };
  const start = intAttr(path.join(dir, 'start'));
  if (start === null) throw new HomidError('wrong-device', `${dir}: a partition without a start`);
  const wholeDir = path.dirname(dir);
  const whole = devAttr(path.join(wholeDir, 'dev'));
  if (whole === null) throw new HomidError('wrong-device', `${wholeDir}: no dev attribute for the disk of partition ${name}`);
  const partStart = start * SYSFS_SECTOR_BYTES;
  if (!Number.isSafeInteger(partStart)) throw new HomidError('wrong-device', `${dir}: partition start ${start} is too large`);
  return { dev, name, whole, wholeDir, wholeName: path.basename(wholeDir), partStart };
}

function sameDev(a: DevNumber, b: DevNumber): boolean {
  return a.major === b.major && a.minor === b.minor;
}

/**
 * Where on namespace 1 of `t` the FIEMAP offsets of a file on device `fileDev` (its st_dev) land, or a
 * 'wrong-device' refusal saying where the file lives instead.
 */
export function fiemapPlacement(fileDev: bigint | number, t: PlacementTarget, sysDevBlock = SYS_DEV_BLOCK): Placement {
  const dev = devNumber(fileDev);
  const info = dev.major === 0 ? null : blockInfo(dev, sysDevBlock);
  const where = info ? `block device ${devText(dev)} (${info.name})` : `device ${devText(dev)}, which is no block device`;
  const refuse = (why: string): never => {
    throw new HomidError('wrong-device', `the file lives on ${where}, not on namespace 1 of device '${t.device}'${why ? `: ${why}` : ''}`);
  };
  const ublk = t.ublk ?? [];
  if (t.imageFile === null && t.blockDevice === null && ublk.length === 0) {
    refuse(`'${t.device}' is neither a file-backed emu:// device nor configured with a block_device, nor serves a ublk device, so no FIEMAP offset addresses it`);
  }
  if (info === null) refuse('');
  const i = info!;
  let placement: Placement | null = null;
  const reasons: string[] = [];
  if (t.blockDevice !== null) {
    let st: fs.BigIntStats | null = null;
    try {
      st = fs.statSync(t.blockDevice, { bigint: true });
    } catch (e) {
      reasons.push(`block_device ${t.blockDevice}: ${(e as Error).message}`);
    }
    if (st && !st.isBlockDevice()) reasons.push(`block_device ${t.blockDevice} is not a block device`);
    else if (st) {
      const bd = devNumber(st.rdev);
      if (sameDev(bd, i.dev)) placement = { offset: 0, via: `block_device ${t.blockDevice}` };
      else if (sameDev(bd, i.whole)) placement = { offset: i.partStart, via: `partition ${i.name} of block_device ${t.blockDevice}` };
      else reasons.push(`block_device ${t.blockDevice} is ${devText(bd)}`);
    }
  }
  for (const u of ublk) {
    if (placement !== null) break;
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(u.blockDevice, { bigint: true });
    } catch {
      continue; // not started (yet), or removed
    }
    if (!st.isBlockDevice()) continue;
    const bd = devNumber(st.rdev);
    if (sameDev(bd, i.dev)) placement = { offset: u.offset, via: `ublk device ${u.blockDevice}`, limit: u.offset + u.bytes };
    else if (sameDev(bd, i.whole)) placement = { offset: u.offset + i.partStart, via: `partition ${i.name} of ublk device ${u.blockDevice}`, limit: u.offset + u.bytes };
    else reasons.push(`ublk device ${u.blockDevice} is ${devText(bd)}`);
  }
  if (placement === null && t.imageFile !== null) {
    const loopDir = path.join(i.wholeDir, 'loop');
    const backing = attr(path.join(loopDir, 'backing_file'));
    if (backing === null) reasons.push(`${i.wholeName} is no loop device over the image ${t.imageFile}`);
    else {
      const loopOffset = intAttr(path.join(loopDir, 'offset')) ?? 0;
      let same = false;
      try {
        const a = fs.statSync(backing, { bigint: true });
        const b = fs.statSync(t.imageFile, { bigint: true });
        same = a.dev === b.dev && a.ino === b.ino;
      } catch {
        same = false; // a deleted or unreachable backing file is not the image
      }
      if (same) placement = { offset: loopOffset + i.partStart, via: `${i.name === i.wholeName ? '' : `partition ${i.name} of `}loop device ${i.wholeName} over ${t.imageFile}` };
      else reasons.push(`loop device ${i.wholeName} is backed by ${backing}, not by the image ${t.imageFile}`);
    }
  }
  if (placement === null) return refuse(reasons.join('; '));
  const p = placement;
  if (!Number.isSafeInteger(p.offset) || p.offset % t.lbaSize !== 0) {
    refuse(`its offset ${p.offset} on the namespace is not a multiple of the LBA size ${t.lbaSize}`);
  }
  return p;
}
