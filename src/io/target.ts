/**
 * Targets of the I/O interface: device URIs for the user-space driver (emu://, pci:), and paths for the kernel
 * paths: a regular file, a block device, or an NVMe generic char device (/dev/ngXnY).
 *
 *   /path/to/file.img                 an existing file or block device
 *   file:/path/to/file.img?size=1GiB  created or extended to `size` when smaller; bs=512|4096 sets the block size
 *   /dev/ng0n1                        NVMe generic char device (io_uring_cmd)
 */
import * as fs from 'node:fs';
import { resolve } from 'node:path';
import { queryKeyProblem } from '../util/query.js';
import { parseSize } from '../util/size.js';
import { ioctl } from '../sys/libc.js';
import { IoOpenError, type BackendName } from './types.js';

export type Target = { kind: 'device'; uri: string; scheme: 'emu' | 'pci' } | { kind: 'path'; uri: string; path: string; size: number | null; blockSize: number | null };

const PATH_PARAMS = ['size', 'bs'] as const;

export function parseTarget(uri: string): Target {
  if (uri.startsWith('emu://')) return { kind: 'device', uri, scheme: 'emu' };
  if (uri.startsWith('pci:')) return { kind: 'device', uri, scheme: 'pci' };
  let rest = uri;
  if (uri.startsWith('file:')) rest = uri.slice(5).replace(/^\/\/(?=\/)/, '');
  else if (/^[a-z][a-z0-9+.-]*:/i.test(uri)) {
    throw new IoOpenError(`'${uri}': unknown scheme (use emu://, pci:, file:PATH or a path to a file or block device)`);
  }
  let path = rest;
  let size: number | null = null;
  let blockSize: number | null = null;
  const q = rest.indexOf('?');
  if (q >= 0 && (uri.startsWith('file:') || !fs.existsSync(rest))) {
    path = rest.slice(0, q);
    const params = new URLSearchParams(rest.slice(q + 1));
    const problem = queryKeyProblem(params, PATH_PARAMS);
    if (problem !== null) throw new IoOpenError(`'${uri}': ${problem}`);
    const s = params.get('size');
    if (s !== null) {
      try {
        size = parseSize(s);
      } catch (e) {
        throw new IoOpenError(`'${uri}': size: ${(e as Error).message}`);
      }
    }
    const b = params.get('bs');
    if (b !== null) {
      if (b !== '512' && b !== '4096') throw new IoOpenError(`'${uri}': bs: '${b}' must be 512 or 4096`);
      blockSize = Number(b);
    }
  }
  if (path === '') throw new IoOpenError(`'${uri}': empty path`);
  return { kind: 'path', uri, path: resolve(decodeURIComponent(path)), size, blockSize };
}

/** Whether a path names an NVMe generic char device (by name; the open checks the type). */
export function isNvmeGenericPath(path: string): boolean {
  return /^\/dev\/ng\d+n\d+$/.test(path);
}

export function defaultBackend(t: Target): BackendName {
  if (t.kind === 'device') return 'driver';
  return isNvmeGenericPath(t.path) ? 'io_uring_cmd' : 'io_uring';
}

/** An open file or block device for the posix and io_uring paths. */
export interface KernelTarget {
  fd: number;
  path: string;
  type: 'file' | 'block';
  sizeBytes: number;
  blockSize: number;
  maxTransferBytes: number;
  direct: boolean;
}

const BLKSSZGET = 0x1268;
const DEFAULT_FILE_MAX_TRANSFER = 2 * 1024 * 1024;

function majorMinor(rdev: number): string {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & 0xfff00);
  return `${major}:${minor}`;
}

function readSysNumber(path: string): number | null {
  try {
    const v = Number(fs.readFileSync(path, 'utf8').trim());
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

const DEV_DIR = '/dev/';
const NVME_BLOCK_NAME = /^nvme\d+n\d+$/;

/** Paths under /dev name devices: a missing one is never created as a regular file. */
function isUnderDev(path: string): boolean {
  return path.startsWith(DEV_DIR);
}

/** A missing device under /dev: say so, and name the NVMe block devices that do exist. */
function missingDeviceMessage(path: string): string {
  let have: string[];
  try {
    have = fs.readdirSync(DEV_DIR).filter((n) => NVME_BLOCK_NAME.test(n));
  } catch {
    have = [];
  }
  const present =
    have.length === 0 ? "no /dev/nvmeXnY here at all; an embedded controller needs no device: 'emu://?size=1GiB'" : `NVMe block devices here: ${have.map((n) => `${DEV_DIR}${n}`).join(', ')}`;
  return `'${path}' does not exist: no such device on this machine (${present})`;
}

export function openKernelTarget(t: Extract<Target, { kind: 'path' }>, direct: boolean, backend: BackendName): KernelTarget {
  let st: fs.Stats | null = null;
  try {
    st = fs.statSync(t.path);
  } catch {
    st = null;
  }
  if (st === null && isUnderDev(t.path)) throw new IoOpenError(missingDeviceMessage(t.path));
  if (st === null && t.size === null) {
    throw new IoOpenError(`'${t.path}' does not exist; give a size to create it, e.g. 'file:${t.path}?size=1GiB'`);
  }
  if (st !== null && st.isCharacterDevice()) {
    throw new IoOpenError(`'${t.path}' is a character device; the ${backend} backend needs a regular file or a block device (use --backend io_uring_cmd for /dev/ngXnY)`);
  }
  if (st !== null && !st.isFile() && !st.isBlockDevice()) throw new IoOpenError(`'${t.path}' is neither a regular file nor a block device`);
  const block = st !== null && st.isBlockDevice();
  if (block && t.size !== null) throw new IoOpenError(`'${t.uri}': size= applies to regular files, not block devices`);
  const flags = fs.constants.O_RDWR | (st === null ? fs.constants.O_CREAT : 0) | (direct ? fs.constants.O_DIRECT : 0);
  let fd: number;
  try {
    fd = fs.openSync(t.path, flags, 0o644);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (direct && code === 'EINVAL') throw new IoOpenError(`'${t.path}': the file system does not support O_DIRECT (--direct)`);
    throw new IoOpenError(`cannot open '${t.path}': ${(e as Error).message}`);
  }
  try {
    let sizeBytes: number;
    let blockSize: number;
    let maxTransferBytes = DEFAULT_FILE_MAX_TRANSFER;
    if (block) {
      const b = new Uint8Array(8);
      ioctl(fd, 0x80081272, b);
      sizeBytes = Number(new DataView(b.buffer).getBigUint64(0, true));
      const s = new Uint8Array(4);
      ioctl(fd, BLKSSZGET, s);
      blockSize = new DataView(s.buffer).getInt32(0, true);
      const kb = readSysNumber(`/sys/dev/block/${majorMinor(st!.rdev)}/queue/max_sectors_kb`);
      if (kb !== null && kb > 0) maxTransferBytes = kb * 1024;
      if (t.blockSize !== null) throw new IoOpenError(`'${t.uri}': bs= applies to regular files; a block device has its own block size`);
    } else {
      blockSize = t.blockSize ?? 512;
      const cur = st?.size ?? 0;
      if (t.size !== null && cur < t.size) fs.ftruncateSync(fd, t.size);
      sizeBytes = Math.max(cur, t.size ?? 0);
    }
    if (sizeBytes < blockSize) throw new IoOpenError(`'${t.path}' is smaller than one ${blockSize}-byte block; give a size, e.g. 'file:${t.path}?size=1GiB'`);
    return { fd, path: t.path, type: block ? 'block' : 'file', sizeBytes, blockSize, maxTransferBytes, direct };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}
