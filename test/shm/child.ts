// Client process for attach.test.ts: reads a QueuePairGrant (JSON) on stdin, gets its fds at 3, 4, ...
// (spawn's stdio array), attaches, runs what argv[2] says, prints one JSON line. Does nothing unless
// HOMI_SHM_CHILD=1 (node --test loads every .js under dist/test/).
import { attachQueuePair } from '../../src/driver/attach.js';
import type { RawQueueGrant as QueuePairGrant } from '../../src/ipc/raw-grant.js';
import { flush } from '../../src/nvme/commands.js';
import { OP_READ, OP_WRITE, runLoop } from './loop.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function main(): Promise<void> {
  const mode = process.argv[2];
  const grant = JSON.parse(await readStdin()) as QueuePairGrant;
  const fds = grant.fds.map((_, i) => 3 + i);
  const qp = attachQueuePair(grant, fds);
  const common = { nsid: grant.nsid, blockSize: grant.blockSize };
  const out: Record<string, unknown> = { pid: process.pid, qid: qp.qid };
  if (mode === 'verify') {
    const count = Number(process.argv[3]);
    const seed = Number(process.argv[4]);
    const firstLba = Number(process.argv[5]);
    out.write = runLoop(qp, qp.dma, { ...common, qd: 16, op: OP_WRITE, firstLba, count, seed });
    out.read = runLoop(qp, qp.dma, { ...common, qd: 16, op: OP_READ, firstLba, count, seed, verify: true });
    // One exec() through the same queue pair: Flush.
    const c = await qp.exec(flush(grant.nsid));
    out.flushStatus = c.status;
  } else if (mode === 'bench') {
    const ms = Number(process.argv[3]);
    runLoop(qp, qp.dma, { ...common, qd: 32, op: OP_READ, durationMs: 200, lbaRange: grant.blocks });
    out.bench = runLoop(qp, qp.dma, { ...common, qd: 32, op: OP_READ, durationMs: ms, lbaRange: grant.blocks });
  } else if (mode === 'hang') {
    // Keep qd 32 in flight until killed.
    const r = runLoop(qp, qp.dma, { ...common, qd: 32, op: OP_WRITE, firstLba: 0, count: 256, seed: 7 });
    process.stdout.write(JSON.stringify({ running: true, pid: process.pid, ios: r.ios }) + '\n');
    runLoop(qp, qp.dma, { ...common, qd: 32, op: OP_WRITE, durationMs: 1e9, lbaRange: 256, seed: 7 });
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  out.stats = qp.stats;
  qp.detach();
  process.stdout.write(JSON.stringify(out) + '\n');
}

if (process.env.HOMI_SHM_CHILD === '1') {
  main().catch((e: Error) => {
    process.stdout.write(JSON.stringify({ error: e.stack ?? e.message }) + '\n');
    process.exit(1);
  });
}
