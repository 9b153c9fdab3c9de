/** A homid client process for the end-to-end tests. argv: socket mode(io|hold|readfile) device [path] */
import { HomidClient } from '../../src/client/index.js';
import { dataPointer } from '../../src/driver/dptr.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';

// The test runner also loads every file under dist/test/: without HOMI_DAEMON_CHILD=1 this file does nothing.
if (process.env['HOMI_DAEMON_CHILD'] !== '1') process.exit(0);
const [socket, mode, device, file] = process.argv.slice(2) as [string, string, string, string | undefined];
const c = await HomidClient.connect(socket);
if (mode === 'readfile') {
  const [lease] = await c.openQueuePairs({ device, depth: 16, mode: 'mediated', dataBytes: 1 << 20 });
  const data = await c.readFile(file!, lease!, device);
  process.stdout.write(JSON.stringify({ ok: true, bytes: Buffer.from(data).toString('base64') }) + '\n');
  c.close();
  process.exit(0);
}
const [lease] = await c.openQueuePairs({ device, depth: 32, mode: 'raw', dataBytes: 1 << 20 });
if (lease!.mode !== 'raw') throw new Error('expected raw');
const qp = lease!.qp;
const bs = lease!.grant.blockSize;
const base = (c.session % 64) * 64; // a distinct LBA window per client
const buf = qp.dma.alloc(bs);
const dp = dataPointer(qp.dma, buf);
let rounds = 0;
const deadline = Date.now() + (mode === 'hold' ? 60_000 : 400);
if (mode === 'hold') process.stdout.write(JSON.stringify({ ready: true, qid: lease!.qid }) + '\n');
while (Date.now() < deadline || (mode !== "hold" && rounds < 20)) {
  const lba = base + (rounds % 64);
  buf.bytes.fill((rounds * 7 + c.session) & 0xff);
  await qp.exec({ opcode: NvmOpcode.Write, nsid: 1, cdw10: lba, cdw11: 0, cdw12: 0, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
  buf.bytes.fill(0);
  await qp.exec({ opcode: NvmOpcode.Read, nsid: 1, cdw10: lba, cdw11: 0, cdw12: 0, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
  if (!buf.bytes.every((x) => x === ((rounds * 7 + c.session) & 0xff))) throw new Error(`verify failed at LBA ${lba}`);
  rounds++;
}
process.stdout.write(JSON.stringify({ ok: true, rounds, qid: lease!.qid }) + '\n');
c.close();
process.exit(0);
