// A homid raw client process for homid-raw.test.ts (spawned by it; does nothing unless HOMI_RAW_CHILD=1, since
// the guest runner loads every file of dist/test-guest/).
//
//   argv: socket device count firstLba blocksPerQueue seed then
//   count raw queue pairs (depth 16); queue q owns LBAs [firstLba + q * blocksPerQueue, + blocksPerQueue).
//   Prints {ready, qids, pid}; waits for the file `${socket}.go` when then = 'wait-go'; writes a pattern
//   (seeded by LBA and seed) through every queue pair at once, reads it back and compares; prints
//   {ok, qids, ios}. then = 'exit': close and exit 0. then = 'hold': keep rewriting and verifying the same pattern
//   until killed or homid goes away (then prints {closed} and exits 0).
//   Env HOMI_RAW_START_FILE: wait for that file before connecting (a process started ahead of time; node's
//   start-up is slow under TCG). The connection is retried until homid listens.
import { existsSync } from 'node:fs';
import { HomidClient, type RawLease } from '../src/client/index.js';
import { dataPointer, type DataPointer } from '../src/driver/dptr.js';
import type { DmaBuffer } from '../src/mem/dma.js';
import { NvmOpcode } from '../src/nvme/opcodes.js';

const IO_BYTES = 8192;
const QD = 8;
const DEPTH = 16;
/** Set when the connection to homid ends (the client library has then detached the queue pairs). */
let closed = false;

/** The pattern word i of block `lba`. */
export function patternWord(lba: number, seed: number, i: number): number {
  return (Math.imul(lba + 1, 0x9e3779b1) ^ Math.imul(seed + 7, 0x85ebca6b) ^ Math.imul(i + 1, 0xc2b2ae35)) >>> 0;
}

export function fillPattern(words: Uint32Array, firstLba: number, blockSize: number, seed: number): void {
  const per = blockSize >>> 2;
  for (let i = 0; i < words.length; i++) words[i] = patternWord(firstLba + Math.floor(i / per), seed, i % per);
}

interface Slot {
  buf: DmaBuffer;
  dp: DataPointer;
  words: Uint32Array;
}

/** Write (or read and verify) [first, first + blocks) through one queue pair, QD commands of IO_BYTES in flight. */
async function pass(l: RawLease, slots: Slot[], op: number, first: number, blocks: number, seed: number): Promise<number> {
  const qp = l.qp;
  const bs = l.grant.blockSize;
  const nlb = IO_BYTES / bs;
  const ios = Math.floor(blocks / nlb);
  let next = 0;
  let done = 0;
  let failure: string | null = null;
  const lbaOf = new Array<number>(slots.length).fill(0);
  const submit = (s: number): void => {
    const lba = first + next * nlb;
    next++;
    lbaOf[s] = lba;
    const sl = slots[s]!;
    if (op === NvmOpcode.Write) fillPattern(sl.words, lba, bs, seed);
    else sl.words.fill(0);
    if (qp.submitIo(op, l.grant.nsid, lba, nlb, sl.dp.prp1, sl.dp.prp2, s) < 0) throw new Error(`queue ${qp.qid} full`);
  };
  for (let s = 0; s < slots.length && next < ios; s++) submit(s);
  qp.ring();
  const want = new Uint32Array(IO_BYTES >>> 2);
  const t0 = Date.now();
  while (done < ios) {
    const n = qp.poll((tag, status) => {
      done++;
      if (status !== 0) failure ??= `status 0x${status.toString(16)} at LBA ${lbaOf[tag]} on queue ${qp.qid}`;
      else if (op === NvmOpcode.Read) {
        fillPattern(want, lbaOf[tag]!, bs, seed);
        const got = slots[tag]!.words;
        for (let i = 0; i < want.length; i++) {
          if (got[i] !== want[i]) {
            failure ??= `mismatch at LBA ${lbaOf[tag]! + Math.floor((i * 4) / bs)} word ${i} on queue ${qp.qid}`;
            break;
          }
        }
      }
      if (next < ios) submit(tag);
    });
    if (closed) throw new Error('homid went away');
    if (n > 0) qp.ring();
    else if (Date.now() - t0 > 60_000) throw new Error(`I/O on queue ${qp.qid} stalled (${done} of ${ios})`);
    else await new Promise((r) => setImmediate(r));
  }
  if (failure) throw new Error(failure);
  return ios;
}

async function main(): Promise<void> {
  const [socket, device, countS, firstS, perQS, seedS, then] = process.argv.slice(2) as [string, string, string, string, string, string, string];
  const count = Number(countS);
  const firstLba = Number(firstS);
  const perQ = Number(perQS);
  const seed = Number(seedS);
  const startFile = process.env.HOMI_RAW_START_FILE;
  if (startFile) while (!existsSync(startFile)) await new Promise((r) => setTimeout(r, 20));
  let c: HomidClient;
  for (const t0 = Date.now(); ;) {
    try {
      c = await HomidClient.connect(socket);
      break;
    } catch (e) {
      if (Date.now() - t0 > 60_000) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const leases = (await c.openQueuePairs({ device, depth: DEPTH, count, mode: 'raw', dataBytes: 256 << 10 })) as RawLease[];
  c.ipc.onClose(() => (closed = true));
  const slots = leases.map((l) =>
    Array.from({ length: QD }, () => {
      const buf = l.qp.dma.alloc(IO_BYTES);
      return { buf, dp: dataPointer(l.qp.dma, buf), words: new Uint32Array(buf.bytes.buffer, buf.bytes.byteOffset, IO_BYTES >>> 2) };
    }),
  );
  const qids = leases.map((l) => l.qid);
  process.stdout.write(JSON.stringify({ ready: true, qids, pid: process.pid }) + '\n');
  if (then === 'wait-go') {
    while (!existsSync(`${socket}.go`)) await new Promise((r) => setTimeout(r, 20));
  }
  const round = async (): Promise<number> => {
    const w = await Promise.all(leases.map((l, q) => pass(l, slots[q]!, NvmOpcode.Write, firstLba + q * perQ, perQ, seed)));
    const r = await Promise.all(leases.map((l, q) => pass(l, slots[q]!, NvmOpcode.Read, firstLba + q * perQ, perQ, seed)));
    return [...w, ...r].reduce((a, b) => a + b, 0);
  };
  const ios = await round();
  process.stdout.write(JSON.stringify({ ok: true, qids, ios }) + '\n');
  if (then === 'hold') {
    // Keep I/O in flight until killed or homid goes away (the client library then detaches the queues).
    for (;;) {
      if (closed) break;
      try {
        await round();
      } catch (e) {
        if (closed) break;
        throw e;
      }
    }
    process.stdout.write(JSON.stringify({ closed: true, detached: leases.every((l) => l.qp.isDetached) }) + '\n');
    process.exit(0);
  }
  c.close();
  process.exit(0);
}

if (process.env.HOMI_RAW_CHILD === '1') {
  main().catch((e: Error) => {
    process.stdout.write(JSON.stringify({ ok: false, error: e.message }) + '\n');
    process.exit(1);
  });
}
