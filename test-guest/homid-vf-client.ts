// A homid VF client process for homid-vf.test.ts (does nothing unless HOMI_VF_CHILD=1: the guest runner loads
// every file of dist/test-guest/).
//
//   argv: socket pf slba bytes action
//   Connects, asks for a VF of `pf` (2 VQ, 1 VI, namespace 1), opens it with HOMI's driver through the VFIO
//   descriptors homid passed, reads `bytes` at `slba` of namespace 1 and prints {vf, scid, readSha256}.
//   action 'write-hold': writes fresh random bytes there, prints {wroteSha256}, then holds the VF until killed.
//   action 'hold': holds the VF (reads only) until killed.
//   action 'exit': closes the VF (closeVf) and exits 0. A refusal prints {refused: code, message} and exits 0.
import { createHash, randomBytes } from 'node:crypto';
import { HomidClient, HomidClientError } from '../src/client/index.js';
import { dataPointer } from '../src/driver/dptr.js';
import type { QueuePair } from '../src/driver/queue-pair.js';
import type { PcieTransport } from '../src/transport/pcie.js';
import { NvmOpcode } from '../src/nvme/opcodes.js';

async function io(t: PcieTransport, qp: QueuePair, op: number, slba: number, data: Uint8Array, lbs: number): Promise<Uint8Array> {
  const buf = t.dma.alloc(data.length);
  const dp = dataPointer(t.dma, buf);
  try {
    if (op === NvmOpcode.Write) buf.bytes.set(data);
    let st = -1;
    if (qp.submitIo(op, 1, slba, data.length / lbs, dp.prp1, dp.prp2, 1) < 0) throw new Error('queue full');
    qp.ring();
    const t0 = Date.now();
    while (st < 0) {
      qp.poll((_tag, s) => (st = s));
      if (Date.now() - t0 > 20_000) throw new Error('I/O timed out');
      await new Promise((r) => setImmediate(r));
    }
    if (st !== 0) throw new Error(`I/O status 0x${st.toString(16)}`);
    return buf.bytes.slice(0, data.length);
  } finally {
    dp.release();
    t.dma.free(buf);
  }
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function main(): Promise<void> {
  const [sock, pf, slbaS, bytesS, action] = process.argv.slice(2);
  const c = await HomidClient.connect(sock);
  let vf;
  try {
    vf = await c.openVf({ pf: pf!, vq: 2, vi: 1, nsids: [1] });
  } catch (e) {
    if (e instanceof HomidClientError) {
      console.log(JSON.stringify({ refused: e.code, message: e.message }));
      c.close();
      return;
    }
    throw e;
  }
  const ctrl = await vf.open({ ioQueues: 1 });
  const lbs = ctrl.namespace(1).blockSize;
  const qp = await ctrl.createQueuePair({ entries: 32 });
  const slba = Number(slbaS);
  const bytes = Number(bytesS);
  const got = await io(vf.transport!, qp, NvmOpcode.Read, slba, new Uint8Array(bytes), lbs);
  console.log(JSON.stringify({ vf: vf.address, scid: vf.scid, cntlid: ctrl.identity.cntlid, pid: process.pid, readSha256: sha(got) }));
  if (action === 'hold') for (;;) await new Promise((r) => setTimeout(r, 1000));
  if (action === 'write-hold') {
    const data = randomBytes(bytes);
    await io(vf.transport!, qp, NvmOpcode.Write, slba, data, lbs);
    console.log(JSON.stringify({ wroteSha256: sha(data) }));
    for (;;) await new Promise((r) => setTimeout(r, 1000));
  }
  await ctrl.deleteQueuePair(qp);
  await c.closeVf(vf);
  console.log(JSON.stringify({ closed: true }));
  c.close();
}

if (process.env.HOMI_VF_CHILD === '1') {
  main().catch((e: unknown) => {
    console.log(JSON.stringify({ error: (e as Error).message }));
    process.exit(1);
  });
}
