/**
 * Test-local host for driving the embedded controller without the driver core: admin queue setup, queue pairs
 * with phase tracking, doorbells, waiting for CQEs.
 */
import type { DmaBuffer } from '../../src/mem/dma.js';
import { decodeCqe, type Cqe, CQE_DW_STATUS, CQE_PHASE_BIT } from '../../src/nvme/cqe.js';
import { AdminOpcode } from '../../src/nvme/opcodes.js';
import { CQES_LOG2, CSTS_CFS, CSTS_RDY, REG_ACQ, REG_AQA, REG_ASQ, REG_CC, REG_CSTS, SQES_LOG2, encodeAqa, encodeCc } from '../../src/nvme/registers.js';
import { encodeSqe, hi32, lo32, type Sqe } from '../../src/nvme/sqe.js';
import { statusSc, statusSct } from '../../src/nvme/cqe.js';
import { wakeDevice } from '../../src/emu/wake.js';
import { openEmu, type EmuOptions, type EmuTransport } from '../../src/transport/emu.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitFor(cond: () => boolean, timeoutMs = 2000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

export class QueuePair {
  readonly sqDw: Uint32Array;
  readonly cqDw: Uint32Array;
  tail = 0;
  head = 0;
  phase = 1;
  nextCid = 0;
  constructor(
    readonly t: EmuTransport,
    readonly qid: number,
    readonly size: number,
    readonly sq: DmaBuffer,
    readonly cq: DmaBuffer,
    readonly cqSize = size,
  ) {
    this.sqDw = new Uint32Array(sq.bytes.buffer, sq.bytes.byteOffset, size * 16);
    this.cqDw = new Uint32Array(cq.bytes.buffer, cq.bytes.byteOffset, cqSize * 4);
  }

  /** Write an SQE into the next slot (no doorbell). Assigns a cid unless given. */
  put(e: Omit<Sqe, 'cid'> & { cid?: number }): number {
    const cid = e.cid ?? this.nextCid++ & 0xffff;
    encodeSqe({ ...e, cid }, this.sqDw, this.tail * 16);
    this.tail = (this.tail + 1) % this.size;
    return cid;
  }

  ring(): void {
    Atomics.store(this.t.doorbells, 2 * this.qid, this.tail);
    wakeDevice(this.t.wake);
  }

  submit(e: Omit<Sqe, 'cid'> & { cid?: number }): number {
    const cid = this.put(e);
    this.ring();
    return cid;
  }

  /** Next CQE if its phase matches, else null (does not ring the CQ doorbell). */
  peek(): Cqe | null {
    const d3 = Atomics.load(this.cqDw, this.head * 4 + CQE_DW_STATUS);
    if (((d3 & CQE_PHASE_BIT) !== 0 ? 1 : 0) !== this.phase) return null;
    return decodeCqe(this.cqDw, this.head * 4);
  }

  /** Consume the next CQE if present and release it by CQ head doorbell. */
  poll(release = true): Cqe | null {
    const c = this.peek();
    if (c === null) return null;
    this.head = (this.head + 1) % this.cqSize;
    if (this.head === 0) this.phase ^= 1;
    if (release) this.releaseCq();
    return c;
  }

  releaseCq(): void {
    Atomics.store(this.t.doorbells, 2 * this.qid + 1, this.head);
    wakeDevice(this.t.wake);
  }

  async next(timeoutMs = 2000): Promise<Cqe> {
    let c: Cqe | null = null;
    await waitFor(() => (c = this.poll()) !== null, timeoutMs, `completion on queue ${this.qid}`);
    return c!;
  }

  async run(e: Omit<Sqe, 'cid'> & { cid?: number }, timeoutMs = 2000): Promise<Cqe> {
    this.submit(e);
    return this.next(timeoutMs);
  }
}

export interface HostOptions {
  adminEntries?: number;
  enable?: boolean;
}

export class TestHost {
  admin!: QueuePair;
  private qpBufs: DmaBuffer[] = [];
  constructor(readonly t: EmuTransport) {}

  static async open(opts: EmuOptions, hopts: HostOptions = {}): Promise<TestHost> {
    const t = await openEmu(opts);
    const h = new TestHost(t);
    const n = hopts.adminEntries ?? 32;
    h.admin = new QueuePair(t, 0, n, t.dma.alloc(n * 64), t.dma.alloc(n * 16));
    if (hopts.enable ?? true) await h.enable();
    return h;
  }

  csts(): number {
    return this.t.read32(REG_CSTS);
  }

  /** Program the admin queue registers and set CC.EN; waits for RDY (or CFS). */
  async enable(ccOverrides: Partial<Parameters<typeof encodeCc>[0]> = {}, waitReady = true): Promise<void> {
    this.programAdmin();
    this.t.write32(REG_CC, encodeCc({ enable: true, css: 0, mps: 0, ams: 0, shn: 0, iosqes: SQES_LOG2, iocqes: CQES_LOG2, ...ccOverrides }));
    if (waitReady) await waitFor(() => (this.csts() & (CSTS_RDY | CSTS_CFS)) !== 0, 3000, 'CSTS.RDY');
  }

  /** Write AQA/ASQ/ACQ for the admin queue pair and reset its host-side state. */
  programAdmin(): void {
    const a = this.admin;
    a.tail = 0;
    a.head = 0;
    a.phase = 1;
    a.cq.bytes.fill(0);
    this.t.write32(REG_AQA, encodeAqa(a.size, a.cqSize));
    this.t.write32(REG_ASQ, lo32(a.sq.iova));
    this.t.write32(REG_ASQ + 4, hi32(a.sq.iova));
    this.t.write32(REG_ACQ, lo32(a.cq.iova));
    this.t.write32(REG_ACQ + 4, hi32(a.cq.iova));
  }

  async disable(): Promise<void> {
    this.t.write32(REG_CC, 0);
    await waitFor(() => (this.csts() & (CSTS_RDY | CSTS_CFS)) === 0, 3000, 'CSTS.RDY=0');
  }

  /** Create an I/O CQ + SQ pair with the given qid and size; asserts success. */
  async createQueuePair(qid: number, size: number, cqSize = size): Promise<QueuePair> {
    const cq = this.t.dma.alloc(cqSize * 16);
    const sq = this.t.dma.alloc(size * 64);
    this.qpBufs.push(cq, sq);
    let c = await this.admin.run({ opcode: AdminOpcode.CreateIoCq, prp1: cq.iova, cdw10: ((cqSize - 1) << 16) | qid, cdw11: 1 });
    if (c.status !== 0) throw new Error(`create CQ failed: sct ${statusSct(c.status)} sc ${statusSc(c.status)}`);
    c = await this.admin.run({ opcode: AdminOpcode.CreateIoSq, prp1: sq.iova, cdw10: ((size - 1) << 16) | qid, cdw11: (qid << 16) | 1 });
    if (c.status !== 0) throw new Error(`create SQ failed: sct ${statusSct(c.status)} sc ${statusSc(c.status)}`);
    return new QueuePair(this.t, qid, size, sq, cq, cqSize);
  }

  async close(): Promise<void> {
    await this.t.close();
  }
}

/** SCT and SC of a CQE. */
export function sctSc(c: Cqe): [number, number] {
  return [statusSct(c.status), statusSc(c.status)];
}
