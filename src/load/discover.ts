/**
 * What `homi load` is asked to load: files, directories (every regular file below, in path order) and globs
 * (tinyglobby; a pattern is any argument with * ? [ or { that does not name an existing file). Every argument
 * that names nothing loadable becomes one clear per-argument error (missing, empty directory, not a regular file,
 * no match), and the rest is still loaded.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { globSync } from 'tinyglobby';
import type { LoadFile } from './types.js';

export interface DiscoveryError {
  /** The argument (or the file under it) that could not be loaded. */
  path: string;
  reason: string;
}

export interface Discovery {
  files: LoadFile[];
  errors: DiscoveryError[];
}

const GLOB_CHARS = /[*?[{]/;

/** What a non-regular file is, in words ("a FIFO", "a directory", ...). */
export function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

function errText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ENOENT') return 'no such file or directory';
  if (err.code === 'EACCES') return 'permission denied';
  return err.code ?? err.message;
}

/** Every regular file below `dir`, sorted by path; unreadable subdirectories become errors. */
function walk(dir: string, out: string[], errors: DiscoveryError[]): void {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    errors.push({ path: dir, reason: `cannot read the directory: ${errText(e)}` });
    return;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const d of entries) {
    const p = path.join(dir, d.name);
    if (d.isDirectory()) walk(p, out, errors);
    else if (d.isFile()) out.push(p);
    // symlinks, FIFOs, sockets and devices under a directory are not walked into (a link could leave the tree)
  }
}

/** Expand arguments into the plan: each file once (first mention wins), with its stat at plan time. */
export function discover(args: readonly string[], cwd = process.cwd()): Discovery {
  const errors: DiscoveryError[] = [];
  const paths: string[] = [];
  for (const arg of args) {
    const abs = path.resolve(cwd, arg);
    let st: fs.Stats | null = null;
    try {
      st = fs.statSync(abs);
    } catch (e) {
      if (GLOB_CHARS.test(arg)) {
        const matched = globSync(arg, { cwd, absolute: true, onlyFiles: true, dot: false }).sort();
        if (matched.length === 0) errors.push({ path: arg, reason: 'the pattern matches no file' });
        paths.push(...matched);
        continue;
      }
      errors.push({ path: arg, reason: errText(e) });
      continue;
    }
    if (st.isDirectory()) {
      const under: string[] = [];
      walk(abs, under, errors);
      if (under.length === 0) errors.push({ path: arg, reason: 'the directory holds no regular file' });
      paths.push(...under);
    } else if (st.isFile()) {
      paths.push(abs);
    } else {
      errors.push({ path: arg, reason: `${kindOf(st)}, not a regular file` });
    }
  }
  const seen = new Set<string>();
  const files: LoadFile[] = [];
  for (const p of paths) {
    if (seen.has(p)) continue;
    seen.add(p);
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch (e) {
      errors.push({ path: p, reason: errText(e) });
      continue;
    }
    if (!st.isFile()) {
      errors.push({ path: p, reason: `${kindOf(st)}, not a regular file` });
      continue;
    }
    files.push({ index: files.length, path: p, size: st.size, dev: st.dev, ino: st.ino, mtimeMs: st.mtimeMs });
  }
  return { files, errors };
}

/** Whether a file is still the one planned (same inode, size and modification time). */
export function changedSince(f: LoadFile): string | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(f.path);
  } catch (e) {
    return `the file went away during the load (${errText(e)})`;
  }
  if (st.ino !== f.ino || st.dev !== f.dev) return 'the file was replaced during the load';
  if (st.size !== f.size) return `the file changed during the load (size ${f.size} -> ${st.size})`;
  if (st.mtimeMs !== f.mtimeMs) return 'the file changed during the load (modified)';
  return null;
}
