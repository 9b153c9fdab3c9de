/**
 * A client process for the IPC tests: `node child-client.js <socket> <hold|exit>`. Connects, sends hello,
 * prints one JSON line `{"ready": true, "pid": N, "response": ...}`, then holds the connection open until killed
 * (hold) or closes it and exits (exit). Without arguments (e.g. picked up by a test runner) it does nothing.
 */
import { IpcClient } from '../../src/ipc/index.js';
import { testCatalogue } from './catalogue.js';

async function main(): Promise<void> {
  const [socket, mode] = process.argv.slice(2);
  if (socket === undefined) return;
  const client = await IpcClient.connect(socket, { catalogue: testCatalogue });
  const { response } = await client.request({ type: 'hello', version: 1, client: 'child' });
  process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid, response })}\n`);
  if (mode === 'hold') {
    setInterval(() => {}, 1 << 30);
    return;
  }
  await client.close();
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
});
