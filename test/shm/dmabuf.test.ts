/**
 * Telling a dma-buf apart (src/sys/dmabuf.ts inspectDmaBuf, src/mem/dmabuf.ts openDmaBuf): every other kind of
 * descriptor is refused with one DmaBufError; the ioctl numbers are those of include/uapi/linux/dma-buf.h and
 * udmabuf.h; udmabuf's own preconditions (F_SEAL_SHRINK, no F_SEAL_WRITE) are checked before the ioctl. Real
 * udmabufs run where /dev/udmabuf exists (and in the guest suite, test-guest/dmabuf.test.ts).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { memfdStandIn, openDmaBuf } from '../../src/mem/dmabuf.js';
import {
  DMA_BUF_IOCTL_SYNC,
  DMA_BUF_SET_NAME,
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_RW,
  DMA_BUF_SYNC_START,
  DmaBufError,
  UDMABUF_CREATE,
  UDMABUF_CREATE_LIST,
  createUdmabuf,
  dmaBufSetName,
  dmaBufSync,
  hasUdmabuf,
  inspectDmaBuf,
  mapDmaBuf,
} from '../../src/sys/dmabuf.js';
import { closeFd, createShm, ShmSealError } from '../../src/sys/shm.js';

const NO_UDMABUF = hasUdmabuf() ? false : 'no /dev/udmabuf on this kernel';

describe('dma-buf descriptors', () => {
  it('ioctl numbers match the kernel uapi encoding', () => {
    assert.equal(DMA_BUF_IOCTL_SYNC, 0x40086200);
    assert.equal(DMA_BUF_SET_NAME, 0x40086201);
    assert.equal(UDMABUF_CREATE, 0x40187542);
    assert.equal(UDMABUF_CREATE_LIST, 0x40087543);
  });

  it('refuses every descriptor that is not a dma-buf, with one error each', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmabuf-'));
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, Buffer.alloc(8192));
    const reg = fs.openSync(file, 'r');
    const shm = createShm('not-a-dmabuf', 8192);
    const nul = fs.openSync('/dev/null', 'r');
    try {
      const cases: Array<[string, number, RegExp]> = [
        ['a regular file', reg, /is not a dma-buf \(it is \/.*\/f\)/],
        ['a memfd', shm.fd, /is not a dma-buf \(it is \/memfd:not-a-dmabuf/],
        ['a character device', nul, /is not a dma-buf \(it is \/dev\/null\)/],
        ['a closed descriptor', 1_000_000, /is not an open file descriptor/],
        ['a negative number', -1, /is not a file descriptor/],
      ];
      for (const [what, fd, msg] of cases) {
        assert.throws(
          () => inspectDmaBuf(fd),
          (e: unknown) => e instanceof DmaBufError && msg.test(e.message),
          what,
        );
        assert.throws(() => openDmaBuf(fd), DmaBufError, what);
      }
      // openDmaBuf with ownFd closes what it refused
      const dup = fs.openSync(file, 'r');
      assert.throws(() => openDmaBuf(dup, { ownFd: true }), DmaBufError);
      assert.throws(() => fs.fstatSync(dup), /EBADF/, 'the refused descriptor was closed');
    } finally {
      fs.closeSync(reg);
      fs.closeSync(nul);
      shm.close();
      fs.rmSync(dir, { recursive: true });
    }
  });

  it('a memfd stand-in must be sealed against size changes', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmabuf-'));
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, Buffer.alloc(8192));
    const reg = fs.openSync(file, 'r+');
    try {
      assert.throws(() => memfdStandIn(reg), ShmSealError);
      const shm = createShm('stand-in', 8192);
      try {
        const h = memfdStandIn(shm.fd);
        assert.equal(h.size, 8192);
        assert.equal(h.standIn, true);
        assert.throws(() => inspectDmaBuf(shm.fd), DmaBufError, 'a stand-in is never taken for a real dma-buf');
      } finally {
        shm.close();
      }
    } finally {
      fs.closeSync(reg);
      fs.rmSync(dir, { recursive: true });
    }
  });

  it('createUdmabuf checks udmabuf preconditions first, and says when the kernel has no udmabuf', () => {
    const shm = createShm('udmabuf-pre', 8192);
    try {
      assert.throws(() => createUdmabuf([]), RangeError);
      assert.throws(() => createUdmabuf([{ memfd: shm.fd, offset: 100, size: 4096 }]), /not page aligned/);
      assert.throws(() => createUdmabuf([{ memfd: shm.fd, offset: 0, size: 100 }]), /not a positive multiple of 4096/);
      if (!hasUdmabuf()) assert.throws(() => createUdmabuf([{ memfd: shm.fd, offset: 0, size: 8192 }]), /no udmabuf on this kernel: cannot open \/dev\/udmabuf/);
    } finally {
      shm.close();
    }
  });

  it('a real udmabuf: recognised, sized, named, synced, mapped; a list over two memfds too', { skip: NO_UDMABUF }, () => {
    const a = createShm('udmabuf-a', 8192);
    const b = createShm('udmabuf-b', 4096);
    const fd = createUdmabuf([{ memfd: a.fd, offset: 0, size: 8192 }]);
    const list = createUdmabuf([
      { memfd: a.fd, offset: 4096, size: 4096 },
      { memfd: b.fd, offset: 0, size: 4096 },
    ]);
    try {
      dmaBufSetName(fd, 'homi-test');
      const f = inspectDmaBuf(fd);
      assert.deepEqual(f, { size: 8192, exporter: 'udmabuf', name: 'homi-test' });
      assert.equal(inspectDmaBuf(list).size, 8192);
      assert.throws(() => openDmaBuf(fd, { minBytes: 8193 }), /holds 8192 bytes, fewer than the 8193 asked for/);
      new Uint8Array(a.buffer).fill(7, 4096, 8192);
      new Uint8Array(b.buffer).fill(9);
      const m = mapDmaBuf(list, 8192);
      try {
        dmaBufSync(list, DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW);
        const v = new Uint8Array(m.buffer);
        assert.equal(v[0], 7);
        assert.equal(v[4096], 9);
        v[4097] = 5;
        dmaBufSync(list, DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW);
        assert.equal(new Uint8Array(b.buffer)[1], 5, 'the list maps the memfds pages');
      } finally {
        m.retire();
      }
    } finally {
      closeFd(fd);
      closeFd(list);
      a.close();
      b.close();
    }
  });
});
