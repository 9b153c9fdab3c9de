// `homi perf --buffers`: parsing, and the refusal of device-memory buffers where the driver cannot place them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseBuffers, perfOptionsFrom } from '../../src/cli/perf.js';
import { resolveBackend } from '../../src/io/open.js';
import { parseTarget } from '../../src/io/target.js';
import { IoOpenError } from '../../src/io/types.js';
import { checkPerfOptions } from '../../src/bench/perf.js';

test('--buffers host | peer:<bdf>[:bar]; anything else is a usage error', () => {
  assert.deepEqual(parseBuffers('host'), { kind: 'host' });
  assert.deepEqual(parseBuffers('peer:00:04.0'), { kind: 'peer', address: '0000:00:04.0', bar: 2 });
  assert.deepEqual(parseBuffers('peer:0000:00:04.0:4'), { kind: 'peer', address: '0000:00:04.0', bar: 4 });
  assert.throws(() => parseBuffers('gpu'), /--buffers: 'gpu' is not host, peer:<bdf>\[:bar\] \(e.g. peer:0000:00:04.0:2\) or p2pmem:<bdf>/);
  assert.deepEqual(parseBuffers('p2pmem:03:00.0'), { kind: 'p2pmem', bdf: '0000:03:00.0' });
  assert.throws(() => parseBuffers('peer:0000:00:04.0:7'), /--buffers: BAR 7 does not exist/);
  assert.throws(() => parseBuffers('peer:'), /--buffers: '' is not a peer BAR/);
});

test('device-memory buffers need the driver backend on a pci: controller; threads are refused with them', () => {
  const peer = { kind: 'peer' as const, address: '0000:00:04.0', bar: 2 };
  assert.equal(resolveBackend(parseTarget('pci:0000:01:00.0'), { buffers: peer }), 'driver');
  assert.throws(
    () => resolveBackend(parseTarget('emu://?size=1GiB'), { buffers: peer }),
    (e: unknown) => e instanceof IoOpenError && /need the driver backend on a pci: controller/.test(e.message),
  );
  assert.throws(() => resolveBackend(parseTarget('/dev/nvme0n1'), { backend: 'io_uring', buffers: peer }), IoOpenError);
  assert.equal(resolveBackend(parseTarget('emu://?size=1GiB'), { buffers: { kind: 'host' } }), 'driver');
  const base = { rw: 'randread', bs: '4096', qd: '32', nqueues: '1', warmup: '0', rwmixread: '50', nsid: '1', verify: false, verifySpan: '1MiB', seed: '1', json: true };
  const o = perfOptionsFrom('pci:0000:01:00.0', { ...base, buffers: 'peer:00:04.0', threads: '2' });
  assert.deepEqual(o.buffers, peer);
  assert.throws(() => checkPerfOptions(o), /device-memory buffers \(--buffers peer\) are driven from one thread/);
});
