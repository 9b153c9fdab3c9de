/**
 * The package's public API: `import ... from 'homi'` resolves (through package.json's exports, the way an
 * installing program resolves it; here by the package's self-reference) to src/index.ts, with the names the
 * README promises. The install from a packed tarball is checked by hand (docs in the report of issue 10):
 * `npm pack`, then `npm install ./homi-*.tgz` in an empty folder and import it there.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { name: string; main: string; types: string; exports: Record<string, unknown> };

test('package.json names files that the build makes', () => {
  assert.ok(existsSync(`${root}${pkg.main}`), `main ${pkg.main} does not exist`);
  assert.ok(existsSync(`${root}${pkg.types}`), `types ${pkg.types} does not exist`);
  assert.deepEqual(pkg.exports['.'], { types: `./${pkg.types}`, default: `./${pkg.main}` });
});

test("import from 'homi' gives the public API", async () => {
  const homi = (await import(pkg.name)) as Record<string, unknown>;
  for (const name of [
    'openIo',
    'Controller',
    'QueuePair',
    'openDevice',
    'HomidClient',
    'MediatedQueuePair',
    'XfsImage',
    'Ext4Image',
    'openImage',
    'openSource',
    'fiemapPath',
    'IoOp',
    'IoError',
    'QUEUE_FULL',
    'statusFieldName',
  ]) {
    assert.ok(name in homi, `'homi' does not export ${name}`);
  }
  assert.equal(typeof homi['openIo'], 'function');
  assert.equal(typeof (homi['Controller'] as { open?: unknown }).open, 'function');
  assert.equal(typeof (homi['HomidClient'] as { connect?: unknown }).connect, 'function');
});

test("a program using 'homi' opens a device and does I/O", async () => {
  const { openIo, IoOp } = await import('homi');
  const dev = await openIo('emu://?size=16MiB');
  try {
    const buf = dev.allocBuffer(dev.geometry.blockSize);
    buf.bytes.fill(0xa5);
    await dev.write(7, 1, buf);
    buf.bytes.fill(0);
    await dev.read(7, 1, buf);
    assert.equal(buf.bytes[0], 0xa5);
    assert.equal(IoOp.Read, 0x02);
  } finally {
    await dev.close();
  }
});
