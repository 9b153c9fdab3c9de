import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseExtentsArgs, runExtentsCommand } from '../../src/extents/cli.js';
import { buildTree, fiemapTmpDir, haveTool, mkExt4, rmTree, tmpDir } from './fixtures.js';

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runExtentsCommand(
    args,
    (s) => (out += s + '\n'),
    (s) => (err += s + '\n'),
  );
  return { code, out, err };
}

describe('homi extents', () => {
  let work = '';
  let img = '';
  before(() => {
    work = tmpDir('homi-cli-');
    const src = path.join(work, 'src');
    fs.mkdirSync(src);
    buildTree(src, { bigDir: 20, large: 100_000 });
    img = path.join(work, 'fs.ext4');
    if (haveTool('mkfs.ext4')) mkExt4(img, src, 32);
  });
  after(() => rmTree(work));

  test('argument parsing', () => {
    assert.deepEqual(parseExtentsArgs(['f', '--json', '--sync']), { json: true, sync: true, file: 'f' });
    assert.deepEqual(parseExtentsArgs(['--image=i', '--fs', 'xfs', '/a']), { json: false, sync: false, image: 'i', fs: 'xfs', path: '/a' });
    assert.throws(() => parseExtentsArgs(['--fs', 'btrfs', '--image', 'i', '/a']));
    assert.throws(() => parseExtentsArgs([]));
    assert.throws(() => parseExtentsArgs(['--fs', 'xfs', 'f']));
  });

  test('--image --json prints the byte extents', { skip: !haveTool('mkfs.ext4') && 'no mkfs.ext4' }, async () => {
    const r = await run(['--image', img, '--fs', 'ext4', '/large.bin', '--json']);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out) as { path: string; size: number; extents: { logical: number; physical: number; length: number; flags: string[] }[] };
    assert.equal(j.path, '/large.bin');
    assert.equal(j.size, 100_000);
    assert.deepEqual(j.extents.at(-1)!.flags, ['last']);
    const table = await run(['--image', img, '/sparse.bin']);
    assert.equal(table.code, 0);
    assert.match(table.out, /\/sparse\.bin: 9437184 bytes, \d+ extents?, \d+ holes/);
    assert.match(table.out, /logical\s+physical\s+length\s+lba512\s+flags/);
  });

  test('errors: usage 2, runtime 1 with a clear message', async () => {
    assert.equal((await run(['--bogus'])).code, 2);
    const nf = await run(['--image', img, '/nope']);
    assert.equal(nf.code, 1);
    assert.match(nf.err, /\/nope: not found/);
    const notfs = await run(['--image', path.join(work, 'src', 'large.bin'), '/x']);
    assert.equal(notfs.code, 1);
    assert.match(notfs.err, /not an XFS or ext4 file system/);
    const missing = await run([path.join(work, 'no-such-file')]);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /ENOENT/);
  });

  test('FIEMAP mode', async (t) => {
    // On a file system that answers FIEMAP (the temporary directory may be tmpfs, which does not).
    const fm = fiemapTmpDir('homi-cli-fiemap-');
    if (fm.dir === null) {
      t.skip(fm.skip);
      return;
    }
    t.after(() => rmTree(fm.dir));
    const p = path.join(fm.dir, 'large.bin');
    fs.copyFileSync(path.join(work, 'src', 'large.bin'), p);
    const r = await run([p, '--json', '--sync']);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out) as { size: number; extents: { length: number }[] };
    assert.equal(j.size, 100_000);
    assert.ok(j.extents.reduce((n, e) => n + e.length, 0) >= 100_000);
  });
});
