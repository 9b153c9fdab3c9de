/**
 * A GPU client for the reclaim test (device.test.ts): connects to homid at argv[2], opens argv[3] GPU leases
 * on device 'm', registers them with GPU 0 and launches a ticket-mode read kernel that runs far longer than the
 * test waits; prints "running" once the kernel is in flight, then waits to be killed.
 */
import { HomidClient } from '../../src/client/index.js';
import { GpuDevice, gpuEvents } from '../../src/gpu/device.js';
import { openHomidTarget } from '../../src/gpu/homid.js';
import { HomiGpuJob, HomiGpuResult, JOB_RANDOM, encode } from '../../src/gpu/layout.js';

if (process.argv[2] === undefined) {
  // node --test runs every file under test/: this one is a helper that device.test.ts starts with its arguments
  process.stdout.write('# gpu-client-child: a helper of device.test.ts (nothing to do without its arguments)\n');
  process.exit(0);
}
const [sock, count] = [process.argv[2], Number(process.argv[3] ?? '1')];
const gpu = GpuDevice.open(0);
const client = await HomidClient.connect(sock);
const t = await openHomidTarget(gpu, client, { device: 'm', nqueues: count, entries: 256, bs: 4096 });
const res = gpu.alloc(HomiGpuResult.bytes);
const job = encode(HomiGpuJob, {
  queues: t.table,
  result: res.dptr,
  lba_base: 0,
  lba_span: 1024,
  seed: 5,
  timeout_cycles: 2000 * gpu.info.clockKhz,
  nqueues: t.nqueues,
  ios_per_thread: 1 << 22,
  blocks_per_io: 4096 / t.blockSize,
  read_percent: 100,
  flags: JOB_RANDOM,
});
const stream = gpu.stream();
gpu.launch('ticketIo', 4 * count, 128, stream, [job]);
const done = gpu.event(false);
gpuEvents.record(done, stream);
await new Promise((r) => setTimeout(r, 300));
process.stdout.write(gpuEvents.query(done) ? 'finished early\n' : 'running\n');
setInterval(() => undefined, 1000);
