/**
 * Running homid clients as another uid: homid (the test process) stays root, each client is a node process
 * dropped to uid/gid 65534 with setpriv. Used by the hostile-client suite.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
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

/** Run hostile-child.js as uid 65534. */
export function asNobody(args: string[], stdin: 'ignore' | 'pipe' = 'ignore'): Proc {
  return spawnProc('setpriv', [...SETPRIV, process.execPath, HOSTILE_CHILD, ...args], { env: { HOMI_HOSTILE_CHILD: '1' }, stdin });
}
