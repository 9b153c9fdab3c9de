/**
 * Running homid clients as another uid: homid (the test process) stays root, each client is a node process
 * dropped to uid/gid 65534 with setpriv. Used by the hostile-client suite.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkExt4 } from '../extents/fixtures.js';
import { spawnProc, type Proc } from './procs.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const HOSTILE_CHILD = path.join(HERE, 'hostile-child.js');
export const NOBODY_UID = 65534;
export const NOBODY_GID = 65534;
const SETPRIV = ['--reuid', String(NOBODY_UID), '--regid', String(NOBODY_GID), '--clear-groups', '--'];

/**
 * Why hostile clients cannot run here (null when they can): the suite needs root (to drop privileges), setpriv,
 * and the compiled tests, node_modules and node readable by uid 65534.
 */
export function hostileSkipReason(): string | null {
  if (process.platform !== 'linux') return 'needs Linux';
  if (process.getuid?.() !== 0) return 'needs root (homid runs as root; clients are dropped to uid 65534)';
  try {
    execFileSync('setpriv', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'setpriv (util-linux) is not installed';
  }
  try {
    execFileSync(
      'setpriv',
      [...SETPRIV, process.execPath, '-e', `require('fs').accessSync(${JSON.stringify(HOSTILE_CHILD)}, require('fs').constants.R_OK); require.resolve('koffi', { paths: [${JSON.stringify(HERE)}] })`],
      { stdio: 'pipe' },
    );
  } catch (e) {
    const err = (e as { stderr?: Buffer }).stderr?.toString().trim().split('\n').pop() ?? String(e);
    return `uid ${NOBODY_UID} cannot read the compiled tests or node_modules here (${err}); make the checkout world-readable`;
  }
  return null;
}

/** A world-searchable temporary directory (mkdtemp makes 0700 ones, which uid 65534 cannot enter). */
export function sharedTmpDir(prefix: string): string {
  const d = fs.mkdtempSync(path.join('/tmp', prefix));
  fs.chmodSync(d, 0o755);
  return d;
}

/**
 * A shared temporary folder (sharedTmpDir) holding tree/ (mode 0755) with the given files, each with exactly its
 * mode whatever the umask, and disk.img: an ext4 image of the tree of `imageMiB` MiB. Returns the folder, the
 * tree, the image and each file's path by name.
 */
export function ext4TreeFixture(
  prefix: string,
  files: Record<string, { bytes: Uint8Array; mode: number }>,
  imageMiB = 16,
): { dir: string; tree: string; image: string; files: Record<string, string> } {
  const dir = sharedTmpDir(prefix);
  const tree = path.join(dir, 'tree');
  fs.mkdirSync(tree, { mode: 0o755 });
  fs.chmodSync(tree, 0o755);
  const paths: Record<string, string> = {};
  for (const [name, f] of Object.entries(files)) {
    const p = path.join(tree, name);
    fs.writeFileSync(p, f.bytes, { mode: f.mode });
    fs.chmodSync(p, f.mode);
    paths[name] = p;
  }
  const image = path.join(dir, 'disk.img');
  mkExt4(image, tree, imageMiB);
  return { dir, tree, image, files: paths };
}

/** Run hostile-child.js as uid 65534. */
export function asNobody(args: string[], stdin: 'ignore' | 'pipe' = 'ignore'): Proc {
  return spawnProc('setpriv', [...SETPRIV, process.execPath, HOSTILE_CHILD, ...args], { env: { HOMI_HOSTILE_CHILD: '1' }, stdin });
}
