/**
 * `homi load --to gpu` on a machine without a GPU, against the fake libcuda (test/emu/fake-libcuda.c, a test
 * double whose "device memory" is host memory): the GPU sink's logic as a GPU machine runs it. io_uring reads
 * straight into the pinned host mirror and each landed read is copied on asynchronously; posix, and io_uring with
 * the mirror off, stage and copy synchronously from registered staging; every file is read back from "device
 * memory" (cuMemcpyDtoH) and compared with a normal read. The real GPU runs the same in test/gpu/load.test.ts.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildFakeCuda, realCudaDriverPresent } from '../emu/fake-cuda.js';
import { discover } from '../../src/load/discover.js';
import { loadPlanned } from '../../src/load/index.js';
import { GpuSink } from '../../src/load/gpu-sink.js';
import { GpuDevice } from '../../src/gpu/device.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'homi-load-gpusink-'));
const skipReal = realCudaDriverPresent() ? 'a real CUDA driver is present (test/gpu/load.test.ts runs the real thing)' : false;
const lib = skipReal === false ? buildFakeCuda(dir) : null;
// before src/sys/cuda.ts first loads the driver
if (lib !== null) process.env['HOMI_LIBCUDA'] = lib;
const skip = skipReal || (lib === null && 'no C compiler to build the fake libcuda') || false;

describe('homi load --to gpu on the fake libcuda', { skip }, () => {
  let tree = '';
  before(() => {
    tree = path.join(dir, 'tree');
    const sizes = [0, 1, 4095, 4096, 110 * 1024, 1024 * 1024 + 123, 3 * 1024 * 1024 + 7];
    for (let i = 0; i < 30; i++) sizes.push(100 * 1024 + i * 777);
    sizes.forEach((n, i) => {
      const b = Buffer.alloc(n);
      for (let k = 0; k < n; k++) b[k] = (k * 7 + i * 13) & 0xff;
      fs.mkdirSync(tree, { recursive: true });
      fs.writeFileSync(path.join(tree, `f${String(i).padStart(2, '0')}.bin`), b);
    });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const [p, mirror, how] of [
    ['io_uring', true, /read into a pinned host mirror and copied by the copy engine as each read lands \(\d+ cuMemcpyHtoDAsync\)/],
    ['io_uring', false, /cuMemcpyHtoD from registered \(pinned\) staging/],
    ['posix', true, /cuMemcpyHtoD from pageable memory/],
  ] as const) {
    test(`${p}${mirror ? '' : ' (mirror off)'}: every file lands in "device memory" and equals a normal read`, async () => {
      const { files, errors } = discover([tree]);
      const gpu = GpuDevice.open(0);
      const sink = new GpuSink(files, gpu, false, { mirror });
      try {
        const r = await loadPlanned(files, errors, { path: p, to: 'gpu', sink, verify: true, depth: 8 });
        assert.deepEqual(r.report.errors, []);
        assert.equal(r.report.files, files.length);
        assert.equal(r.report.verified, true);
        assert.match(r.report.sink, /^GPU memory on Fake GPU \(test double\)/);
        assert.match(r.report.sink, how);
        // and the bytes really are in device memory, at each file's address
        const f = files.find((x) => x.size === 1024 * 1024 + 123)!;
        assert.ok(Buffer.from(sink.readBack(f.index)).equals(fs.readFileSync(f.path)));
      } finally {
        sink.close();
        gpu.close();
      }
    });
  }
});
