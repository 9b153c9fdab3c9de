/**
 * What the benchmark engine itself costs per I/O, with no device behind it:
 * `node dist/src/bench/engine-cost.js [--ios 20000000] [--qd 128] [--runs 5]`
 *
 * An in-thread queue (InstantQueue) completes every command on the next poll, with the driver's own data
 * structures in miniature (typed arrays, a CID stack, no allocation). The same queue is driven twice: by a lean
 * closed loop (what homid-bench.ts's raw client does: random LBA, submit, ring, poll, resubmit) and by the engine
 * (runEngine, latency recorded). Per I/O: lean ns, engine ns, and the difference, which is the engine's own cost
 * on top of what any client of the queue pays. Medians over --runs, runs interleaved.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { NvmOpcode } from '../nvme/opcodes.js';
import type { CompletionHandler, QueueContract } from '../queue/contract.js';
import { runEngine, type EngineBuffer } from './engine.js';

/** A queue that completes each command on the next poll; its per-command cost is a few typed-array stores. */
export class InstantQueue implements QueueContract {
  readonly capacity: number;
  private readonly tags: Int32Array;
  private head = 0;
  private tail = 0;
  private rung = 0;
  private count = 0;
  constructor(capacity: number) {
    this.capacity = capacity;
    this.tags = new Int32Array(capacity + 1);
  }
  get outstanding(): number {
    return this.count;
  }
  submitIo(_opcode: number, _nsid: number, slba: number, _nlb: number, _h1: number, _h2: number, tag: number): number {
    if (this.count === this.capacity || slba < 0) return -1;
    const t = this.tail;
    this.tags[t] = tag;
    this.tail = t === this.capacity ? 0 : t + 1;
    this.count++;
    return t;
  }
  ring(): void {
    this.rung = this.tail;
  }
  poll(onComplete: CompletionHandler, max: number = this.capacity): number {
    let n = 0;
    const end = this.rung;
    while (this.head !== end && n < max) {
      const h = this.head;
      this.head = h === this.capacity ? 0 : h + 1;
      this.count--;
      n++;
      onComplete(this.tags[h]!, 0, 0);
    }
    return n;
  }
}

/** The lean client loop of homid-bench.ts over a queue: returns ns per I/O. */
export function leanLoop(q: QueueContract, qd: number, ios: number, blocks: number): number {
  const done = new Int32Array(qd);
  let nd = 0;
  let seed = 0x12345678;
  const onDone = (tag: number): void => {
    done[nd++] = tag;
  };
  const t0 = performance.now();
  for (let i = 0; i < qd; i++) {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    q.submitIo(NvmOpcode.Read, 1, (seed >>> 0) % blocks, 1, 0, 0, i);
  }
  q.ring();
  let issued = qd;
  let completed = 0;
  while (completed < ios) {
    nd = 0;
    const n = q.poll(onDone);
    completed += n;
    for (let i = 0; i < nd && issued < ios; i++) {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      q.submitIo(NvmOpcode.Read, 1, (seed >>> 0) % blocks, 1, 0, 0, done[i]!);
      issued++;
    }
    q.ring();
  }
  return ((performance.now() - t0) * 1e6) / ios;
}

/** The engine over the same queue: returns ns per I/O. */
export async function engineLoop(q: QueueContract, qd: number, ios: number, blocks: number): Promise<number> {
  const bufs: EngineBuffer[] = [];
  for (let i = 0; i < qd; i++) bufs.push({ words: new Uint32Array(1024), prp1: 0, prp2: 0 });
  const t0 = performance.now();
  const r = await runEngine([q], [bufs], { rw: 'randread', bs: 4096, qd, rwmixread: 100, nsid: 1, blockSize: 4096, blocks, timeSec: null, ios, warmupSec: 0, verify: false, verifySpan: 0, seed: 1 });
  if (r.ios !== ios || r.errors !== 0) throw new Error(`engine ran ${r.ios} I/Os with ${r.errors} errors`);
  return ((performance.now() - t0) * 1e6) / ios;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, d: number): number => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : d;
  };
  const ios = opt('--ios', 20_000_000);
  const qd = opt('--qd', 128);
  const runs = opt('--runs', 5);
  const blocks = 65536;
  // warm-up (JIT) of both loops
  leanLoop(new InstantQueue(qd), qd, 1_000_000, blocks);
  await engineLoop(new InstantQueue(qd), qd, 1_000_000, blocks);
  const lean: number[] = [];
  const eng: number[] = [];
  for (let r = 0; r < runs; r++) {
    lean.push(leanLoop(new InstantQueue(qd), qd, ios, blocks));
    eng.push(await engineLoop(new InstantQueue(qd), qd, ios, blocks));
  }
  const l = median(lean);
  const e = median(eng);
  const f = (x: number): string => x.toFixed(1);
  console.log(`engine cost on an instant in-thread queue, qd ${qd}, ${ios} I/Os per run, median of ${runs}`);
  console.log(`lean loop ${f(l)} ns/IO (${lean.map(f).join(', ')})`);
  console.log(`engine    ${f(e)} ns/IO (${eng.map(f).join(', ')})`);
  console.log(`engine's own cost: ${f(e - l)} ns/IO`);
  console.log(JSON.stringify({ qd, ios, runs, leanNsPerIo: l, engineNsPerIo: e, engineOverheadNsPerIo: e - l, lean, engine: eng }));
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === realpathSync(process.argv[1])) await main();
