import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { crc32c, crc32cRaw } from '../../src/extents/crc32c.js';
import { Bin } from '../../src/extents/bin.js';
import { BufferBlockSource } from '../../src/extents/source.js';
import { CorruptImageError, ExtentError, fileMapJson, holes, ImageRangeError, mappedBytes, toLbaRanges, type FileMap } from '../../src/extents/types.js';

const map: FileMap = {
  path: '/f',
  ino: 12,
  size: 40960,
  extents: [
    { logical: 4096, physical: 1048576, length: 8192, flags: [] },
    { logical: 20480, physical: 2 * 1048576 + 512, length: 4096, flags: ['unwritten'] },
    { logical: 24576, physical: 777, length: 60, flags: ['inline', 'last'] },
  ],
};

describe('extent result helpers', () => {
  test('LBA ranges for 512 and 4096-byte LBAs; inline extents are skipped', () => {
    assert.deepEqual(toLbaRanges(map, 512), [
      { lba: 2048, count: 16, logical: 4096, flags: [] },
      { lba: 4097, count: 8, logical: 20480, flags: ['unwritten'] },
    ]);
    assert.deepEqual(toLbaRanges(map, 4096)[1], { lba: 512, count: 2, logical: 20480, flags: ['unwritten'] });
    assert.equal(toLbaRanges(map, 512, true).length, 3);
    assert.throws(() => toLbaRanges(map, 0), RangeError);
  });
  test('holes before, between and after extents', () => {
    assert.deepEqual(holes(map), [
      { logical: 0, length: 4096 },
      { logical: 12288, length: 8192 },
      { logical: 24636, length: 40960 - 24636 },
    ]);
    assert.deepEqual(holes({ path: '', ino: 0, size: 0, extents: [] }), []);
    assert.equal(mappedBytes(map), 8192 + 4096 + 60);
  });
  test('JSON shape', () => {
    const j = fileMapJson(map);
    assert.deepEqual(Object.keys(j), ['path', 'size', 'extents']);
    assert.deepEqual(Object.keys(j.extents[0]!), ['logical', 'physical', 'length', 'flags']);
  });
  test('crc32c vectors', () => {
    assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
    assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
    assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
    const inc = new Uint8Array(32).map((_, i) => i);
    assert.equal(crc32c(inc), 0x46dd794e);
    // chaining the raw register equals one pass
    assert.equal(~crc32cRaw(crc32cRaw(0xffffffff, inc, 0, 13), inc, 13) >>> 0, crc32c(inc));
  });
  test('typed errors: bounds-checked fields and sources', () => {
    const b = new Bin(new Uint8Array(8), 'xfs dir2 leaf', 4096);
    assert.throws(
      () => b.u64be(4),
      (e) => e instanceof CorruptImageError && e.structure === 'xfs dir2 leaf' && e.offset === 4096 && /xfs dir2 leaf/.test(e.message),
    );
    assert.throws(
      () => new BufferBlockSource(new Uint8Array(10)).read(8, 4),
      (e) => e instanceof ImageRangeError && e instanceof ExtentError,
    );
    const big = new Uint8Array(8);
    big[0] = 0xff;
    assert.throws(() => new Bin(big, 'ext4 extent header', 0).u64be(0), CorruptImageError);
  });
});
