/**
 * Issue 16, "refuse nonsense up front": options the chosen mode or backend would ignore, --verify where nothing
 * can be verified, missing devices, repeated URI keys, sweep grids with points the device cannot run. Each is
 * refused before anything runs: exit 2, one line that says why.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { assertUsageErrors, runHomi, type HomiRun } from './run.js';

const homi = (...args: string[]): HomiRun => runHomi(args, 60_000);

test('a missing device under /dev is said not to exist; no file under /dev is suggested or created', () => {
  assertUsageErrors(homi, [
    [['perf', '/dev/nvme9n9'], /^homi: '\/dev\/nvme9n9' does not exist: no such device on this machine/],
    [['perf', 'file:/dev/homi-test-missing?size=1GiB', '--backend', 'posix'], /'\/dev\/homi-test-missing' does not exist: no such device/],
  ]);
  const r = homi('perf', '/dev/nvme9n9');
  assert.doesNotMatch(r.stderr, /file:|give a size/);
  assert.equal(existsSync('/dev/homi-test-missing'), false);
});
