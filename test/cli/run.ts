/** Running the `homi` command in tests: one spawn helper and the check every usage error must pass. */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface HomiRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `homi args...` to completion (killed after `timeoutMs`). */
export function runHomi(args: string[], timeoutMs: number): HomiRun {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Run `homi args...` without blocking this process's event loop (for a server this process runs itself). */
export function runHomiAsync(args: string[], timeoutMs: number): Promise<HomiRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Each argument list fails before running with exit code 2 and one line on stderr, `homi: ...`, matching its pattern. */
export function assertUsageErrors(homi: (...args: string[]) => HomiRun, cases: Array<[string[], RegExp]>): void {
  for (const [args, re] of cases) {
    const r = homi(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, /^homi: /);
  }
}
