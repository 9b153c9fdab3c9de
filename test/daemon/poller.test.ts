/**
 * The mediated poller's stop() must leave Node's timers and immediates working. Once it cleared a Timeout with
 * clearImmediate, which unlinked the Timeout from its timer list behind Node's back: later 1 ms timers never
 * fired and a driver bring-up in the same process hung. The scenario runs in a child process so a regression
 * shows as a killed child, not as a hung test runner.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { MediatedPoller, type MediatedQueue } from '../../src/daemon/mediated.js';

const CHILD = 'HOMI_POLLER_CHILD';
const CYCLES = 200;

function tick(kind: 'timeout' | 'immediate'): Promise<void> {
  return new Promise((r) => (kind === 'timeout' ? setTimeout(r, 0) : setImmediate(r)));
}

async function child(): Promise<void> {
  // An idle queue: no work, nothing in flight; the poller backs off to 1 ms timers after spinMs.
  const idle = { pump: () => 0, inFlight: 0 } as unknown as MediatedQueue;
  const p = new MediatedPoller();
  p.spinMs = 0;
  for (let i = 0; i < CYCLES; i++) {
    p.add(idle);
    // stop in either state: spinning on an immediate (i even) or backed off on a timeout (i odd)
    if (i % 2 === 1) await new Promise((r) => setTimeout(r, 2));
    p.stop();
    p.remove(idle);
    await tick('timeout');
    await tick('immediate');
  }
  process.stdout.write(`ok ${CYCLES}\n`);
}

if (process.env[CHILD] === '1') {
  await child();
} else {
  test('stopping the mediated poller in either state leaves timers and immediates firing', () => {
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], { env: { ...process.env, [CHILD]: '1' }, timeout: 30_000, encoding: 'utf8' });
    assert.equal(r.signal, null, `the child hung (killed by ${r.signal}): timers stopped firing after poller.stop()`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), `ok ${CYCLES}`);
  });
}
