/**
 * The `homi extents` verb:
 *   homi extents <file> [--json] [--sync]                                  FIEMAP on a mounted file system
 *   homi extents --image <device-or-image> --fs xfs|ext4 <path> [--json]    on-disk decoder
 */
import { fiemapPath } from './fiemap.js';
import { openImage } from './open.js';
import { ExtentError, fileMapJson, holes, type FileMap } from './types.js';

export interface ExtentsCommandOptions {
  file?: string;
  image?: string;
  fs?: 'xfs' | 'ext4';
  path?: string;
  json: boolean;
  sync: boolean;
}

const EXIT_OK = 0;
const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;

export const EXTENTS_USAGE = 'usage: homi extents <file> [--json] [--sync]\n' + '       homi extents --image <device-or-image> [--fs xfs|ext4] <path-inside> [--json]';

/** A readable table of a file map. */
export function renderFileMap(map: FileMap): string {
  const rows = map.extents.map((e, i) => [
    String(i),
    String(e.logical),
    String(e.physical),
    String(e.length),
    e.flags.includes('inline') ? '-' : String(Math.floor(e.physical / 512)),
    e.flags.join(',') || '-',
  ]);
  const header = ['#', 'logical', 'physical', 'length', 'lba512', 'flags'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  const hs = holes(map);
  const lines = [
    `${map.path}: ${map.size} bytes, ${map.extents.length} extent${map.extents.length === 1 ? '' : 's'}, ${hs.length} hole${hs.length === 1 ? '' : 's'}${map.ino ? `, inode ${map.ino}` : ''}`,
  ];
  if (rows.length > 0) lines.push(fmt(header), ...rows.map(fmt));
  return lines.join('\n');
}

/** Run the verb; returns the exit status. Errors are written through `out` (prefixed with 'homi: ') or `err`. */
export async function extentsCommand(opts: ExtentsCommandOptions, out: (s: string) => void, err: (s: string) => void = (s) => process.stderr.write(s + '\n')): Promise<number> {
  try {
    let map: FileMap;
    if (opts.image !== undefined) {
      if (opts.path === undefined) {
        err(`homi: extents: --image needs a path inside the image\n${EXTENTS_USAGE}`);
        return EXIT_USAGE;
      }
      if (opts.fs !== undefined && opts.fs !== 'xfs' && opts.fs !== 'ext4') {
        err(`homi: extents: --fs must be xfs or ext4`);
        return EXIT_USAGE;
      }
      const img = openImage(opts.image, opts.fs !== undefined ? { fs: opts.fs } : {});
      try {
        map = img.mapPath(opts.path);
      } finally {
        img.close();
      }
    } else {
      if (opts.file === undefined) {
        err(`homi: extents: missing file\n${EXTENTS_USAGE}`);
        return EXIT_USAGE;
      }
      map = fiemapPath(opts.file, { sync: opts.sync });
    }
    out(opts.json ? JSON.stringify(fileMapJson(map)) : renderFileMap(map));
    return EXIT_OK;
  } catch (e) {
    if (e instanceof ExtentError) {
      err(`homi: extents: ${e.message}`);
      return EXIT_RUNTIME;
    }
    const ne = e as NodeJS.ErrnoException;
    if (ne && typeof ne.code === 'string' && typeof ne.message === 'string') {
      err(`homi: extents: ${ne.message}`);
      return EXIT_RUNTIME;
    }
    throw e;
  }
}

/** Parse `homi extents` arguments (everything after the verb). Throws a message string on bad usage. */
export function parseExtentsArgs(args: string[]): ExtentsCommandOptions {
  const o: ExtentsCommandOptions = { json: false, sync: false };
  const pos: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const val = (): string => {
      const eq = a.indexOf('=');
      if (eq >= 0) return a.slice(eq + 1);
      const v = args[++i];
      if (v === undefined) throw `option ${a} needs a value`;
      return v;
    };
    if (a === '--json') o.json = true;
    else if (a === '--sync') o.sync = true;
    else if (a === '--image' || a.startsWith('--image=')) o.image = val();
    else if (a === '--fs' || a.startsWith('--fs=')) {
      const v = val();
      if (v !== 'xfs' && v !== 'ext4') throw `--fs must be xfs or ext4, not '${v}'`;
      o.fs = v;
    } else if (a === '--') {
      pos.push(...args.slice(i + 1));
      i = args.length;
    } else if (a.startsWith('-') && a !== '-') throw `unknown option ${a}`;
    else pos.push(a);
  }
  if (pos.length !== 1) throw pos.length === 0 ? 'missing file' : `unexpected argument '${pos[1]}'`;
  if (o.image !== undefined) o.path = pos[0];
  else {
    if (o.fs !== undefined) throw '--fs needs --image';
    o.file = pos[0];
  }
  return o;
}

/** `homi extents ...`: parse, run, return the exit status. */
export async function runExtentsCommand(
  args: string[],
  out: (s: string) => void = (s) => process.stdout.write(s + '\n'),
  err: (s: string) => void = (s) => process.stderr.write(s + '\n'),
): Promise<number> {
  let opts: ExtentsCommandOptions;
  try {
    opts = parseExtentsArgs(args);
  } catch (m) {
    err(`homi: extents: ${String(m)}\n${EXTENTS_USAGE}`);
    return EXIT_USAGE;
  }
  return extentsCommand(opts, out, err);
}
