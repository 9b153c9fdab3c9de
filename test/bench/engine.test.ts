import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runEngine, type EngineQueue, type EngineBuffer, type EngineConfig } from '../../src/bench/engine.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { makeStatus } from '../../src/nvme/cqe.js';

/**
 * A toy in-process "device" behind the engine's queue interface: completes every command on the next poll,
 * storing blocks in a Map. `misdirect` makes it return the block at lba+1 for reads of one LBA, like a device
 * with a mapping bug; `failWrites` completes every Nth write with LBA Out of Range.
 */
class ToyQueue implements EngineQueue {
  readonly capacity: number;
  private pending: Array<{ tag: number; status: number }> = [];
  readonly store = new Map<number, Uint32Array>();
  constructor(
    capacity: number,
    private readonly buffers: EngineBuffer[],
    private readonly blockWords: number,
    private readonly misdirectLba = -1,
    private readonly failEveryWrite = 0,
  ) {
    this.capacity = capacity;
  }
  private writes = 0;
  get outstanding(): number {
    return this.pending.length;
  }
  submitIo(opcode: number, _nsid: number, slba: number, nlb: number, prp1: number, _prp2: number, tag: number): number {
    if (this.pending.length >= this.capacity) return -1;
    const buf = this.buffers[prp1]!.words;
    let status = 0;
    if (opcode === NvmOpcode.Write) {
      this.writes++;
      if (this.failEveryWrite > 0 && this.writes % this.failEveryWrite === 0) status = makeStatus(0, 0x80, true);
      else for (let b = 0; b < nlb; b++) this.store.set(slba + b, buf.slice(b * this.blockWords, (b + 1) * this.blockWords));
    } else {
      for (let b = 0; b < nlb; b++) {
        const src = this.store.get(slba + b === this.misdirectLba ? slba + b + 1 : slba + b);
        if (src) buf.set(src, b * this.blockWords);
        else buf.fill(0, b * this.blockWords, (b + 1) * this.blockWords);
      }
    }
    this.pending.push({ tag, status });
    return this.pending.length;
  }
  ring(): void {}
  poll(onComplete: (tag: number, status: number, result: number) => void): number {
    const p = this.pending;
    this.pending = [];
    for (const c of p) onComplete(c.tag, c.status, 0);
    return p.length;
  }
}

function setup(qd: number, bs: number, blockSize: number, misdirect = -1, failEvery = 0): { q: ToyQueue; bufs: EngineBuffer[] } {
  const bufs: EngineBuffer[] = [];
  for (let i = 0; i < qd; i++) bufs.push({ words: new Uint32Array(bs / 4), prp1: i, prp2: 0 });
  return { q: new ToyQueue(qd, bufs, blockSize / 4, misdirect, failEvery), bufs };
}

const base: EngineConfig = {
  rw: 'randrw',
  bs: 4096,
  qd: 8,
  rwmixread: 50,
  nsid: 1,
  blockSize: 512,
  blocks: 4096,
  timeSec: null,
  ios: 3000,
  warmupSec: 0,
  verify: true,
  verifySpan: 1 << 20,
  seed: 7,
};

test('verify passes on a correct device and counts checked blocks', async () => {
  const { q, bufs } = setup(8, 4096, 512);
  const r = await runEngine([q], [bufs], base);
  assert.equal(r.ios, 3000);
  assert.equal(r.errors, 0);
  assert.equal(r.verifyErrors, 0);
  assert.ok(r.verified > 0);
  assert.equal(r.prefilledBlocks, (1 << 20) / 512);
  assert.equal(r.verified % 8, 0, 'whole 8-block I/Os are verified');
});

test('verify catches a device that returns the wrong block', async () => {
  const { q, bufs } = setup(8, 4096, 512, 1000);
  const r = await runEngine([q], [bufs], { ...base, rw: 'randread', ios: 20000 });
  assert.ok(r.verifyErrors > 0, 'mismatch detected');
  assert.equal(r.firstMismatch?.lba, 1000);
  assert.equal(r.firstMismatch?.foundLba, 1001);
});

test('I/O errors are counted by status name and the run goes on', async () => {
  const { q, bufs } = setup(8, 4096, 512, -1, 0);
  const r0 = await runEngine([q], [bufs], { ...base, verify: false, rw: 'randwrite', ios: 1000 });
  assert.equal(r0.errors, 0);
  const s = setup(8, 4096, 512, -1, 10);
  const r = await runEngine([s.q], [s.bufs], { ...base, verify: false, rw: 'randwrite', ios: 1000 });
  assert.equal(r.ios, 1000);
  assert.equal(r.errors, 100);
  assert.deepEqual(r.errorsByStatus, { 'LBA Out of Range': 100 });
});

test('the engine refuses impossible configurations with clear errors', async () => {
  const { q, bufs } = setup(4, 4096, 512);
  await assert.rejects(runEngine([q], [bufs], { ...base, qd: 8 }), /exceeds queue 0's capacity/);
  await assert.rejects(runEngine([q], [bufs], { ...base, qd: 4, bs: 1000 }), /multiple of the namespace block size/);
  await assert.rejects(runEngine([q], [bufs], { ...base, qd: 4, verifySpan: 8192 }), /--verify needs at least/);
});
