/**
 * The descriptor limit through koffi: getrlimit / setrlimit(RLIMIT_NOFILE), and a count of this process's open
 * descriptors (readdir of /proc/self/fd: O(open descriptors), so callers sample it rarely, never per operation).
 *
 * ABI facts (x86-64 and arm64 Linux, LP64): struct rlimit is 16 bytes, rlim_cur u64 at 0, rlim_max u64 at 8;
 * RLIMIT_NOFILE is 7 on both (the generic resource numbers); RLIM_INFINITY is ~0UL. The kernel never lets
 * RLIMIT_NOFILE exceed fs.nr_open, so an infinite value is reported as Number.MAX_SAFE_INTEGER here.
 */
import * as fs from 'node:fs';
import koffi from 'koffi';
import { ERRNO, OsError } from './libc.js';

export const RLIMIT_NOFILE = 7;
const RLIMIT_SIZE = 16;
const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

/** A resource limit: soft (what the kernel enforces) and hard (the ceiling the soft limit may be raised to). */
export interface Rlimit {
  soft: number;
  hard: number;
}

interface RlimitLib {
  getrlimit: (resource: number, rlim: Uint8Array) => number;
  setrlimit: (resource: number, rlim: Uint8Array) => number;
}
let lib: RlimitLib | null = null;

function rlimitLib(): RlimitLib {
  if (lib === null) {
    if (process.platform !== 'linux') throw new OsError('dlopen(libc)', ERRNO.EOPNOTSUPP);
    const l = koffi.load('libc.so.6');
    lib = {
      getrlimit: l.func('getrlimit', 'int', ['int', 'void *']) as RlimitLib['getrlimit'],
      setrlimit: l.func('setrlimit', 'int', ['int', 'void *']) as RlimitLib['setrlimit'],
    };
  }
  return lib;
}

function fromRlim(v: bigint): number {
  return v === RLIM_INFINITY || v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

function toRlim(v: number): bigint {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`rlimit value ${v} is not a non-negative integer`);
  return v === Number.MAX_SAFE_INTEGER ? RLIM_INFINITY : BigInt(v);
}

/** getrlimit(RLIMIT_NOFILE). Throws OsError. */
export function getNofileLimit(): Rlimit {
  const b = new Uint8Array(RLIMIT_SIZE);
  if (rlimitLib().getrlimit(RLIMIT_NOFILE, b) < 0) throw new OsError('getrlimit(RLIMIT_NOFILE)', koffi.errno());
  const dv = new DataView(b.buffer);
  return { soft: fromRlim(dv.getBigUint64(0, true)), hard: fromRlim(dv.getBigUint64(8, true)) };
}

/** setrlimit(RLIMIT_NOFILE). Throws OsError (EPERM: raising the hard limit without CAP_SYS_RESOURCE). */
export function setNofileLimit(limit: Rlimit): void {
  const b = new Uint8Array(RLIMIT_SIZE);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, toRlim(limit.soft), true);
  dv.setBigUint64(8, toRlim(limit.hard), true);
  if (rlimitLib().setrlimit(RLIMIT_NOFILE, b) < 0) throw new OsError('setrlimit(RLIMIT_NOFILE)', koffi.errno());
}

/**
 * Raise the soft RLIMIT_NOFILE to the hard limit (always allowed). Returns the limit before and after.
 * Throws OsError when the kernel refuses.
 */
export function raiseNofileLimit(): { before: Rlimit; after: Rlimit } {
  const before = getNofileLimit();
  if (before.soft < before.hard) setNofileLimit({ soft: before.hard, hard: before.hard });
  return { before, after: getNofileLimit() };
}

/**
 * Open descriptors of this process (entries of /proc/self/fd, less the one the listing itself holds).
 * Throws when /proc cannot be read (e.g. EMFILE: no descriptor left to open the directory with).
 */
export function countOpenFds(): number {
  return Math.max(0, fs.readdirSync('/proc/self/fd').length - 1);
}
