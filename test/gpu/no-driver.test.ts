/**
 * Without a CUDA driver every GPU entry point fails with one clear error, and the CLI exits 2 with it. Run in
 * child processes with HOMI_LIBCUDA pointing at a library that does not exist, so it holds on GPU machines too.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cli = `${root}dist/src/cli/main.js`;
const env = { ...process.env, HOMI_LIBCUDA: '/nonexistent/libcuda.so.1' };
const MESSAGE = /^homi: no CUDA driver: libcuda\.so\.1 not found/;

for (const args of [
  ['perf', 'emu://?size=16MiB&null=1', '--initiator', 'gpu', '--ios', '100'],
  ['perf', 'gpuctl://?null=1', '--initiator', 'gpu', '--mode', 'ticket', '--qd', '64', '--ios', '100'],
  ['perf', 'sweep', 'gpuctl://?null=1', '--initiator', 'gpu', '--qd', '32,64', '--out', '/tmp/homi-gpu-sweep-nodriver'],
]) {
  test(`homi ${args.join(' ')}: exit 2, "no CUDA driver"`, { timeout: 60_000 }, () => {
    const r = spawnSync(process.execPath, [cli, ...args], { env, encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, MESSAGE);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.equal(r.stdout, '');
  });
}

test('the library API: GpuDevice.open and cudaDriverPresent say the same', { timeout: 30_000 }, () => {
  const code = `
    const { GpuDevice, cudaDriverPresent, NoCudaDriverError } = await import(${JSON.stringify(`${root}dist/src/gpu/device.js`)});
    if (cudaDriverPresent()) throw new Error('a driver was found');
    for (let i = 0; i < 2; i++) {
      try { GpuDevice.open(0); throw new Error('opened'); }
      catch (e) { if (!(e instanceof NoCudaDriverError)) throw e; console.log(e.message); }
    }`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { env, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 2);
  for (const l of lines) assert.match(l, /^no CUDA driver: libcuda\.so\.1 not found/);
});

test('a bad option is still a usage error before any driver is needed', { timeout: 30_000 }, () => {
  const r = spawnSync(process.execPath, [cli, 'perf', '/tmp/file.img', '--initiator', 'gpu'], { env, encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /is not an emu:\/\/ \(embedded controller\), gpuctl:\/\/ \(GPU-resident controller\) or homid:<device>/);
});
