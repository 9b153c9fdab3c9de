/**
 * A client process for the limit tests (run as root or, through setpriv, as another uid). Prints JSON lines.
 *
 *   node limits-child.js <socket> connect <n>
 *     Opens n connections one after another, sends hello on each, prints
 *     {"results": [{"ok": true, "uid": U} | {"ok": false, "code": C, "message": M}, ...], "pid": P}
 *     and holds the accepted connections until killed.
 *   node limits-child.js <socket> partial <n> <declared> <bodyBytes> <fds>
 *     Opens n connections; on each sends a header declaring a frame of `declared` bytes and `bodyBytes` of its
 *     body, with `fds` descriptors (of /dev/null) attached, and never completes it. Prints {"ready": true,
 *     "pid": P}, then {"closed": i, "code": C, "reason": R} for each connection the server closes; holds the rest
 *     until killed.
 *
 * Without arguments (e.g. picked up by a test runner) it does nothing.
 */
import * as fs from 'node:fs';
import { IpcClient, IpcError, frameHeader } from '../../src/ipc/index.js';
import { testCatalogue } from './catalogue.js';

const print = (v: unknown): void => {
  process.stdout.write(`${JSON.stringify(v)}\n`);
};

async function connect(socket: string, n: number): Promise<void> {
  const results: unknown[] = [];
  for (let i = 0; i < n; i++) {
    const c = await IpcClient.connect(socket, { catalogue: testCatalogue });
    try {
      const r = await c.call({ type: 'hello', version: 1, client: `limits-child-${i}` }, [], { timeoutMs: 10_000 });
      results.push({ ok: true, uid: (r.response.cred as { uid: number }).uid });
    } catch (e) {
      results.push({ ok: false, code: e instanceof IpcError ? e.code : 'ERROR', message: (e as Error).message });
    }
  }
  print({ results, pid: process.pid });
}

async function partial(socket: string, n: number, declared: number, bodyBytes: number, nfds: number): Promise<void> {
  const devnull = fs.openSync('/dev/null', 'r');
  const fds = Array.from({ length: nfds }, () => devnull);
  for (let i = 0; i < n; i++) {
    const c = await IpcClient.connect(socket, { catalogue: testCatalogue });
    c.onClose((reason) => print({ closed: i, code: c.closedByServer?.code ?? null, reason }));
    const bytes = new Uint8Array(6 + bodyBytes);
    bytes.set(frameHeader(declared, 1, nfds > 0 ? 1 : 0));
    c.sendRaw(bytes, fds);
    // Let the server take this one in before the next, so that the order of charging is the order here.
    await new Promise((r) => setTimeout(r, 50));
  }
  print({ ready: true, pid: process.pid });
}

async function main(): Promise<void> {
  const [socket, mode, ...rest] = process.argv.slice(2);
  if (socket === undefined) return;
  const nums = rest.map((s) => Number.parseInt(s, 10));
  if (mode === 'connect') await connect(socket, nums[0]);
  else if (mode === 'partial') await partial(socket, nums[0], nums[1], nums[2], nums[3]);
  else throw new Error(`unknown mode ${mode}`);
  setInterval(() => {}, 1 << 30);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
});
