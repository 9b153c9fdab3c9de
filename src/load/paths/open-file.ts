/**
 * Opening a planned file, shared by the kernel-file paths (posix, io_uring): the open flags, the checks that the
 * open file is still the one the runner planned (a regular file, same device and inode, same size and mtime), and
 * one-line reasons for every way that fails.
 *
 * Files are opened with O_NONBLOCK so that a FIFO (which would block open(2) until a writer came) fails at once
 * instead of hanging the load; the io_uring path clears O_NONBLOCK again after the checks (io_uring fails a
 * buffered read on an O_NONBLOCK file with EAGAIN when the data is not cached).
 */
import * as fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open as openAsync } from 'node:fs/promises';
import { setFdStatusFlags } from '../../sys/fileio.js';
import { kindOf } from '../discover.js';
import { LoadFileError, type LoadFile } from '../types.js';

/** Offset and length alignment of O_DIRECT reads (a page: enough for 512- and 4096-byte logical blocks). */
export const DIRECT_ALIGN = 4096;

const { O_RDONLY, O_NONBLOCK, O_DIRECT } = fs.constants;

function openFlags(direct: boolean): number {
  return O_RDONLY | O_NONBLOCK | (direct ? O_DIRECT : 0);
}

function errCode(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  return typeof code === 'string' ? code : (e as Error).message;
}

/** The error for an open(2) that failed (`e`: the fs error). */
export function openFailure(file: LoadFile, e: unknown, direct: boolean): LoadFileError {
  const code = errCode(e);
  if (direct && code === 'EINVAL') {
    // EINVAL from an O_DIRECT open: the file system has no O_DIRECT, or the path is no regular file at all.
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(file.path);
    } catch {}
    if (st !== undefined && !st.isFile()) return new LoadFileError(file.path, `not a regular file (${kindOf(st)})`);
    return new LoadFileError(file.path, 'open with O_DIRECT failed (EINVAL): this file system does not support O_DIRECT (e.g. sysfs, or tmpfs before Linux 6.6); load it without O_DIRECT');
  }
  return new LoadFileError(file.path, `open: ${code}`);
}

/** Null when the open file (`st`: its fstat) is still what the plan saw; otherwise the reason it is not. */
export function checkOpened(file: LoadFile, st: fs.Stats): LoadFileError | null {
  if (!st.isFile()) return new LoadFileError(file.path, `not a regular file (${kindOf(st)})`);
  if (st.dev !== file.dev || st.ino !== file.ino) return new LoadFileError(file.path, 'replaced since it was planned (another device / inode)');
  if (st.size !== file.size) return new LoadFileError(file.path, `changed since it was planned: ${st.size} bytes now, ${file.size} planned`);
  if (st.mtimeMs !== file.mtimeMs) return new LoadFileError(file.path, 'modified since it was planned (mtime changed)');
  return null;
}

/**
 * Open `file` read-only for the io_uring path (synchronously: open, fstat, fcntl), O_DIRECT when `direct`, and
 * check it against the plan. Returns the descriptor; throws LoadFileError (the descriptor closed) on any failure.
 */
export function openPlannedSync(file: LoadFile, direct: boolean): number {
  let fd: number;
  try {
    fd = fs.openSync(file.path, openFlags(direct));
  } catch (e) {
    throw openFailure(file, e, direct);
  }
  try {
    const bad = checkOpened(file, fs.fstatSync(fd));
    if (bad !== null) throw bad;
    setFdStatusFlags(fd, direct ? O_DIRECT : 0);
  } catch (e) {
    fs.closeSync(fd);
    throw e instanceof LoadFileError ? e : new LoadFileError(file.path, (e as Error).message);
  }
  return fd;
}

/** The same through node:fs/promises (the posix path): a FileHandle, or a LoadFileError (the handle closed). */
export async function openPlanned(file: LoadFile, direct: boolean): Promise<FileHandle> {
  let h: FileHandle;
  try {
    h = await openAsync(file.path, openFlags(direct));
  } catch (e) {
    throw openFailure(file, e, direct);
  }
  try {
    const bad = checkOpened(file, await h.stat());
    if (bad !== null) throw bad;
  } catch (e) {
    await h.close();
    throw e instanceof LoadFileError ? e : new LoadFileError(file.path, (e as Error).message);
  }
  return h;
}

/** The reason for a read that failed with `errno` / fs error code `code` at byte `offset`. */
export function readFailure(file: LoadFile, offset: number, code: string): LoadFileError {
  return new LoadFileError(file.path, `read at offset ${offset}: ${code}`);
}

/** The reason for a file that ended before its planned size. */
export function shortFile(file: LoadFile, at: number): LoadFileError {
  return new LoadFileError(file.path, `the file ended at byte ${at}; it had ${file.size} bytes when planned`);
}

/** Bytes of `file` a read at `offset` asks for: up to `chunk`, the tail rounded up to DIRECT_ALIGN when `direct`. */
export function readLength(file: LoadFile, offset: number, chunk: number, direct: boolean): number {
  const rest = file.size - offset;
  if (rest >= chunk) return chunk;
  return direct ? Math.ceil(rest / DIRECT_ALIGN) * DIRECT_ALIGN : rest;
}

/** Checks shared by both paths' options: depth and chunk size (an O_DIRECT chunk must be a multiple of DIRECT_ALIGN). */
export function checkPathOptions(path: string, depth: number, chunk: number, direct: boolean): void {
  if (!Number.isSafeInteger(depth) || depth < 1 || depth > 4096) throw new RangeError(`${path}: depth must be 1..4096, got ${depth}`);
  if (!Number.isSafeInteger(chunk) || chunk < 1 || chunk > 1 << 30) throw new RangeError(`${path}: read size must be 1 B..1 GiB, got ${chunk}`);
  if (direct && chunk % DIRECT_ALIGN !== 0) throw new RangeError(`${path}: O_DIRECT reads must be a multiple of ${DIRECT_ALIGN} bytes, got ${chunk}`);
}
