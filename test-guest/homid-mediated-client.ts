// A mediated homid client process for homid-mediated.test.ts (does nothing unless HOMI_MED_CHILD=1: the guest
// runner loads every file of dist/test-guest/). argv: socket device path. Opens one mediated queue pair,
// passes `path` as an open descriptor, reads the file through its extents and prints
// {ok, bytes (base64), direct (completions reaped from the hardware CQ), relayed (from the ring's CQ)}.
import { HomidClient } from '../src/client/index.js';

if (process.env['HOMI_MED_CHILD'] === '1') {
  const [socket, device, file] = process.argv.slice(2) as [string, string, string];
  const c = await HomidClient.connect(socket);
  try {
    const [lease] = await c.openQueuePairs({ device, depth: 16, mode: 'mediated', dataBytes: 256 * 1024 });
    if (!lease || lease.mode !== 'mediated') throw new Error('no mediated lease');
    const data = await c.readFile(file, lease, device);
    const st = lease.qp.stats;
    process.stdout.write(JSON.stringify({ ok: true, bytes: Buffer.from(data).toString('base64'), direct: st.direct, relayed: st.completed - st.direct, hwCq: lease.grant.hwCq !== null }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: (e as Error).message }) + '\n');
  } finally {
    c.close();
  }
  process.exit(0);
}
