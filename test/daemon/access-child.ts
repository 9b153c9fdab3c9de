/**
 * A homid client process for the descriptor-access tests, run as uid nobody (setpriv). argv:
 *   socket device how lba [file]
 * how: 'opath' opens `file` with O_PATH itself; 'inherit' uses descriptor 3, opened by the parent (root) and
 * inherited across setpriv. It passes the descriptor to resolveExtents, then, on a mediated queue with writes
 * asked for, reads LBA `lba` and after that writes one block of 0x5a there. Prints one JSON line: its uid, the
 * resolve outcome and the two statuses.
 */
import * as fs from 'node:fs';
import { HomidClient, HomidClientError, type ExtentMapHandle, type MediatedLease } from '../../src/client/index.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { O_PATH } from '../../src/sys/fileio.js';

/** The byte every written block is filled with. */
export const WRITE_FILL = 0x5a;
/** Descriptor number of an inherited file. */
const INHERITED_FD = 3;
const IO_TIMEOUT_MS = 20_000;

// The test runner also loads every file under dist/test/: without HOMI_DAEMON_CHILD=1 this file does nothing.
if (process.env['HOMI_DAEMON_CHILD'] === '1') {
  const [socket, device, how, lbaText, file] = process.argv.slice(2) as [string, string, string, string, string | undefined];
  const lba = Number(lbaText);
  const c = await HomidClient.connect(socket);
  const fd = how === 'opath' ? fs.openSync(file!, O_PATH) : INHERITED_FD;
  let resolve: { ok: boolean; code?: string; message?: string; size?: number };
  let map: ExtentMapHandle | null = null;
  try {
    map = await c.resolveExtents(fd, device);
    resolve = { ok: true, size: map.read()?.size ?? -1 };
  } catch (e) {
    if (!(e instanceof HomidClientError)) throw e;
    resolve = { ok: false, code: e.code, message: e.message };
  }
  const [l] = await c.openQueuePairs({ device, depth: 8, mode: 'mediated', write: true, dataBytes: 1 << 16 });
  const lease = l as MediatedLease;
  const mq = lease.qp;
  const bs = lease.grant.blockSize;
  const one = async (opcode: number, dataOffset: number): Promise<number> => {
    let st = -1;
    if (mq.submitIo(opcode, 1, lba, 1, dataOffset, 0, 7) < 0) throw new Error('mediated queue full');
    mq.ring();
    const t0 = Date.now();
    while (mq.poll((_tag, s) => (st = s)) === 0) {
      if (Date.now() - t0 > IO_TIMEOUT_MS) throw new Error('mediated I/O did not complete');
      await new Promise((r) => setTimeout(r, 1));
    }
    return st;
  };
  const read = await one(NvmOpcode.Read, 0);
  mq.data.fill(WRITE_FILL, bs, 2 * bs);
  const write = await one(NvmOpcode.Write, bs);
  process.stdout.write(JSON.stringify({ uid: process.getuid!(), resolve, read, write }) + '\n');
  map?.close();
  c.close();
  process.exit(0);
}
