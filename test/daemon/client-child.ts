/** A homid client process for the end-to-end tests. argv: socket mode(io|hold|readfile|probe|watch) device [path [lba]] */
import * as fs from 'node:fs';
import { HomidClient, HomidClientError, type MediatedLease } from '../../src/client/index.js';
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
if (mode === 'probe') {
  // A mediated client: resolve its file (read-only descriptor), then try a read inside it, a read of another
  // file's LBA (argv[6]), a read of LBA 0, and a write inside its own file (no write grant). Print the statuses.
  const secretLba = Number(process.argv[6]);
  const fd = fs.openSync(file!, 'r');
  const map = await c.resolveExtents(fd, device);
  fs.closeSync(fd);
  const snap = map.read()!;
  const [l] = await c.openQueuePairs({ device, depth: 16, mode: 'mediated', dataBytes: 1 << 16 });
  const mq = (l as MediatedLease).qp;
  const own = snap.extents[0]!.physical / (l as MediatedLease).grant.blockSize;
  const ops: [number, number][] = [
    [NvmOpcode.Read, own],
    [NvmOpcode.Read, secretLba],
    [NvmOpcode.Read, 0],
    [NvmOpcode.Write, own],
  ];
  const st = new Array<number>(ops.length).fill(-1);
  ops.forEach(([op, lba], i) => mq.submitIo(op, 1, lba, 1, 0, 0, i));
  mq.ring();
  let done = 0;
  const t0 = Date.now();
  while (done < ops.length && Date.now() - t0 < 20_000) {
    done += mq.poll((tag, s) => (st[tag] = s));
    await new Promise((r) => setTimeout(r, 1));
  }
  // the connection still answers after the denials
  const s = await c.status();
  process.stdout.write(JSON.stringify({ ok: true, own, statuses: st, statusOk: s.ok === true }) + '\n');
  map.close();
  c.close();
  process.exit(0);
}
if (mode === 'watch') {
  // Hold a raw queue pair; report homid going away (the connection's close and the next request's error).
  const [l] = await c.openQueuePairs({ device, depth: 32, mode: 'raw', dataBytes: 1 << 16 });
  process.stdout.write(JSON.stringify({ ready: true, qid: l!.qid, session: c.session }) + '\n');
  const keepAlive = setInterval(() => undefined, 1000); // the reactor holds no ref while nothing is pending
  const reason = await new Promise<string>((r) => c.ipc.onClose(r));
  clearInterval(keepAlive);
  let err: { name: string; code: string; message: string } | null = null;
  try {
    await c.status();
  } catch (e) {
    err = { name: (e as Error).name, code: (e as HomidClientError).code, message: (e as Error).message };
  }
  process.stdout.write(JSON.stringify({ closed: true, reason, err }) + '\n');
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
while (Date.now() < deadline || (mode !== 'hold' && rounds < 20)) {
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
