/**
 * File seals on the shared memory this project creates (src/sys/shm.ts): every memfd has a fixed size and a
 * final seal set; a region read-only for others stays writable through its creator's mapping and nowhere else;
 * memory someone else created is mapped by the owner side only when no other holder can change its size.
 * The cross-user attack on a real homid lease is test/daemon/homid-seals-e2e.test.ts.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import koffi from 'koffi';
import { after, before, describe, it } from 'node:test';
import { memfdRegions } from '../../src/daemon/shared-region.js';
import { hugepageStatus } from '../../src/mem/hugepage.js';
import { MAP_SHARED, PROT_READ, PROT_WRITE, mmap } from '../../src/sys/mman.js';
import {
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  ShmSealError,
  addSeals,
  closeFd,
  createShm,
  getSeals,
  mapShmFd,
} from '../../src/sys/shm.js';
import { openEmu, type EmuTransport } from '../../src/transport/emu.js';

const FINAL_SIZE_SEALS = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
const PAGE = 4096;
/** fallocate(2): deallocate a range, keep the file size. */
const FALLOC_PUNCH_HOLE_KEEP_SIZE = 0x02 | 0x01;

const libc = koffi.load('libc.so.6');
const memfdCreate = libc.func('int memfd_create(const char *name, unsigned int flags)') as (name: string, flags: number) => number;
const fallocate = libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)') as (fd: number, mode: number, off: bigint, len: bigint) => number;

/** A memfd made without this project's seals: `sealable` allows sealing (none applied), else it can never be sealed. */
function foreignMemfd(bytes: number, sealable: boolean): number {
  const fd = memfdCreate('foreign', MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0));
  assert.ok(fd >= 0, `memfd_create: errno ${koffi.errno()}`);
  fs.ftruncateSync(fd, bytes);
  return fd;
}

function code(f: () => unknown): string {
  try {
    f();
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code ?? (e as Error).name;
  }
}

describe('memfd seals', () => {
  it('every memfd createShm makes has a fixed size and a final seal set', () => {
    const r = createShm('seal-test', 2 * PAGE);
    try {
      assert.equal(r.seals, FINAL_SIZE_SEALS);
      assert.equal(r.readOnlyForOthers, false);
      assert.equal(
        code(() => fs.ftruncateSync(r.fd, 0)),
        'EPERM',
        'shrink',
      );
      assert.equal(
        code(() => fs.ftruncateSync(r.fd, 3 * PAGE)),
        'EPERM',
        'grow',
      );
      assert.equal(
        code(() => addSeals(r.fd, F_SEAL_FUTURE_WRITE)),
        'EPERM',
        'no seal can be added',
      );
      assert.equal(fs.fstatSync(r.fd).size, 2 * PAGE);
      // still ordinary shared memory for whoever holds it
      const other = mapShmFd(r.fd, 2 * PAGE);
      new Uint8Array(other.buffer)[PAGE] = 0x5a;
      assert.equal(new Uint8Array(r.buffer)[PAGE], 0x5a);
      other.close();
    } finally {
      r.close();
    }
  });

  it('readOnlyForOthers: the creator writes through its mapping; write, truncation, hole punching and writable maps fail for any reopen', () => {
    const r = createShm('seal-ro-test', 2 * PAGE, { readOnlyForOthers: true });
    const rw = fs.openSync(`/proc/self/fd/${r.fd}`, 'r+');
    try {
      assert.equal(r.seals, FINAL_SIZE_SEALS | F_SEAL_FUTURE_WRITE);
      assert.equal(r.readOnlyForOthers, true);
      new Uint8Array(r.buffer).set([1, 2, 3], 100);
      const seen = Buffer.alloc(3);
      fs.readSync(rw, seen, 0, 3, 100);
      assert.deepEqual([...seen], [1, 2, 3], 'the creator keeps writing through its own mapping');
      assert.equal(
        code(() => fs.writeSync(rw, Buffer.from([9]), 0, 1, 100)),
        'EPERM',
        'write(2)',
      );
      assert.equal(
        code(() => fs.ftruncateSync(rw, 0)),
        'EPERM',
        'shrink',
      );
      assert.equal(fallocate(rw, FALLOC_PUNCH_HOLE_KEEP_SIZE, 0n, BigInt(PAGE)), -1, 'fallocate(PUNCH_HOLE)');
      assert.equal(koffi.errno(), os.constants.errno.EPERM);
      assert.equal(
        code(() => mmap(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0, 'ro test')),
        'EPERM',
        'mmap(PROT_WRITE, MAP_SHARED)',
      );
      assert.equal(
        code(() => addSeals(rw, F_SEAL_WRITE)),
        'EPERM',
      );
      const ro = mapShmFd(rw, 2 * PAGE, { readOnly: true });
      assert.equal(new Uint8Array(ro.buffer)[101], 2, 'readers map it read-only');
      ro.close();
      assert.equal(new Uint8Array(r.buffer)[100], 1);
    } finally {
      fs.closeSync(rw);
      r.close();
    }
  });

  it('homid regions: rings are size-sealed and writable, extent tables read-only for clients', () => {
    const ring = memfdRegions.create(1000, 'seal-ring');
    const table = memfdRegions.create(1000, 'seal-table', { readOnlyForClients: true });
    try {
      assert.equal(getSeals(ring.fd!), FINAL_SIZE_SEALS);
      assert.equal(getSeals(table.fd!), FINAL_SIZE_SEALS | F_SEAL_FUTURE_WRITE);
      table.bytes[0] = 0x77; // homid writes the table through its view
      const rw = fs.openSync(`/proc/self/fd/${table.fd}`, 'r+');
      try {
        const b = Buffer.alloc(1);
        fs.readSync(rw, b, 0, 1, 0);
        assert.equal(b[0], 0x77);
        assert.equal(
          code(() => fs.writeSync(rw, Buffer.from([0]), 0, 1, 0)),
          'EPERM',
        );
      } finally {
        fs.closeSync(rw);
      }
    } finally {
      ring.close();
      table.close();
    }
  });

  it('hugetlb memfds are sealed the same way', (t) => {
    const st = hugepageStatus();
    if (st.free < 1) {
      t.skip(`no free 2 MiB hugepage (${st.free} free of ${st.total}; raise /proc/sys/vm/nr_hugepages)`);
      return;
    }
    const r = createShm('seal-huge', 2 << 20, { hugetlb: true });
    try {
      assert.equal(r.seals, FINAL_SIZE_SEALS);
      assert.equal(
        code(() => fs.ftruncateSync(r.fd, 0)),
        'EPERM',
      );
    } finally {
      r.close();
    }
  });

  it('mapShmFd({ requireSizeSeals }) maps only memory whose size no holder can change', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'homi-seal-')), 'plain');
    const plain = fs.openSync(file, 'w+');
    fs.ftruncateSync(plain, 2 * PAGE);
    const unsealable = foreignMemfd(2 * PAGE, false);
    const unsealed = foreignMemfd(2 * PAGE, true);
    const small = createShm('seal-small', PAGE);
    try {
      for (const [what, fd] of [
        ['a regular file', plain],
        ['a memfd without MFD_ALLOW_SEALING', unsealable],
        ['a memfd with no seals', unsealed],
      ] as const) {
        assert.throws(() => mapShmFd(fd, 2 * PAGE, { requireSizeSeals: true }), ShmSealError, what);
        mapShmFd(fd, 2 * PAGE).close(); // the check, not the mapping, refuses it
      }
      assert.equal(getSeals(unsealable), F_SEAL_SEAL);
      assert.throws(() => mapShmFd(small.fd, 2 * PAGE, { requireSizeSeals: true }), /holds 4096 bytes, fewer than the 8192 to map/);
      assert.throws(() => mapShmFd(small.fd, PAGE, { requireSizeSeals: true, offset: PAGE }), ShmSealError);
      mapShmFd(small.fd, PAGE, { requireSizeSeals: true }).close();
    } finally {
      fs.closeSync(plain);
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
      closeFd(unsealable);
      closeFd(unsealed);
      small.close();
    }
  });
});

describe('embedded controller in memfd mode: sealed memory only', () => {
  let emu: EmuTransport;
  before(async () => {
    emu = await openEmu({ namespaces: [{ sizeBytes: 16 << 20, lbads: 12 }], backing: 'memory', sharedMemory: 'memfd', maxQueuePairs: 4 });
  });
  after(async () => {
    await emu?.close();
  });

  it('the BAR memfd (doorbells, wake page), pool segments and exported queue memory are size-sealed', () => {
    assert.equal(getSeals(emu.barShm().fd), FINAL_SIZE_SEALS, 'BAR memfd');
    const buf = emu.dma.alloc(PAGE);
    const x = emu.queueExporter()!;
    const m = x.exportMemory(5 * PAGE, 'seal-export');
    try {
      assert.equal(getSeals(m.fd), FINAL_SIZE_SEALS, 'exported memory');
      assert.equal(getSeals(x.wakeWindow()!.fd), FINAL_SIZE_SEALS, 'wake page');
      const segs = emu.shmDma.segmentInfos();
      assert.ok(segs.length >= 2);
      for (const s of segs) assert.equal(getSeals(s.fd), FINAL_SIZE_SEALS, `segment ${s.index}`);
    } finally {
      m.release();
      emu.dma.free(buf);
    }
  });

  it('registerFd refuses memory another holder could truncate; the controller never sees it', () => {
    const unsealed = foreignMemfd(16 * PAGE, true);
    try {
      const before = emu.shmDma.segmentInfos().length;
      assert.throws(() => emu.shmDma.registerFd(unsealed, 16 * PAGE), ShmSealError);
      assert.equal(emu.shmDma.segmentInfos().length, before);
      // once sealed against resizing it is accepted
      addSeals(unsealed, F_SEAL_SHRINK | F_SEAL_GROW);
      const seg = emu.shmDma.registerFd(unsealed, 16 * PAGE);
      assert.equal(emu.shmDma.segmentInfos().length, before + 1);
      seg.release();
    } finally {
      closeFd(unsealed);
    }
  });
});
