/** Spawning homid client processes (client-child.js) and homid itself, for the end-to-end tests. */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const CLIENT_CHILD = path.join(HERE, 'client-child.js');
/** dist/src/cli/ (homid.js, main.js), next to dist/test/daemon/. */
export const CLI_DIR = path.join(HERE, '..', '..', 'src', 'cli');

export interface Proc {
  p: ChildProcess;
  lines: AsyncIterableIterator<string>;
  exited: Promise<number | null>;
}

/** Spawn node with `args`; stdout is read as lines. */
export function spawnNode(args: string[], env: Record<string, string> = {}, stderr: 'inherit' | 'ignore' = 'inherit'): Proc {
  return spawnProc(process.execPath, args, { env, stderr });
}

export interface SpawnOptions {
  env?: Record<string, string>;
  stderr?: 'inherit' | 'ignore';
  /** 'pipe': the child reads stdin until p.stdin is ended (default 'ignore'). */
  stdin?: 'ignore' | 'pipe';
  /** Descriptors the child inherits as fd 3, 4, ... */
  fds?: number[];
}

/** Spawn `command` with `args`; stdout is read as lines. */
export function spawnProc(command: string, args: string[], o: SpawnOptions = {}): Proc {
  const p = spawn(command, args, { stdio: [o.stdin ?? 'ignore', 'pipe', o.stderr ?? 'inherit', ...(o.fds ?? [])], env: { ...process.env, ...o.env } });
  const q: string[] = [];
  let wake: (() => void) | null = null;
  let done = false;
  let buf = '';
  p.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      q.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
    wake?.();
  });
  const exited = new Promise<number | null>((r) =>
    p.on('close', (code) => {
      done = true;
      wake?.();
      r(code);
    }),
  );
  const lines = (async function* () {
    for (;;) {
      if (q.length) yield q.shift()!;
      else if (done) return;
      else await new Promise<void>((r) => (wake = r));
    }
  })();
  return { p, lines, exited };
}

/** A client-child.js process (HOMI_DAEMON_CHILD=1). */
export function clientChild(args: string[]): Proc {
  return spawnNode([CLIENT_CHILD, ...args], { HOMI_DAEMON_CHILD: '1' });
}

/** The next JSON line of a child (fails after `ms`). */
export async function nextJson(c: Proc, ms = 60_000): Promise<Record<string, unknown>> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`no output from child within ${ms} ms`)), ms)));
  try {
    const r = await Promise.race([c.lines.next(), timeout]);
    assert.ok(!r.done, 'child exited without output');
    return JSON.parse(r.value) as Record<string, unknown>;
  } finally {
    clearTimeout(t);
  }
}

export async function until(f: () => boolean | Promise<boolean>, ms = 20_000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!(await f())) {
    if (Date.now() - t0 > ms) assert.fail(`${what} not reached within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The seeded PRNG of the IPC tests (the daemon's fuzz run uses the same generator). */
export { rng } from '../ipc/helpers.js';
