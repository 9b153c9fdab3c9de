/**
 * The client library's deep-queue read (src/client/read-file.ts): the plan (coalescing, splitting, zeros,
 * refusals) on made-up extent maps; then through homid on a decoder:ext4 device, raw and mediated: readFile
 * returns every file's exact bytes, one reader keeps many commands in flight across files, physically adjacent
 * extents share a command, a bad completion and a lost completion fail the file with one clear error, a file
 * whose map moved fails with 'changed', and homid going away fails the read at once.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { ClientErrorCode, ExtentReader, HomidClient, HomidClientError, planRead, readExtents, type ExtentMapHandle, type Lease } from '../../src/client/index.js';
import type { ExtentSnapshot } from '../../src/ipc/extent-table.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { MediaStatus, Sct } from '../../src/nvme/status.js';
import { KiB, MiB, SMALL_BYTES, SMALL_FILES, SPARSE_PIECES, skipNoMkfs, startRig, type Rig } from './homid-rig.js';

const snap = (size: number, extents: [number, number, number, string[]?][], valid = true): ExtentSnapshot => ({
  generation: 2,
  valid,
  size,
  ino: 0,
  dev: 0,
  extents: extents.map(([logical, physical, length, flags]) => ({ logical, physical, length, flags: (flags ?? []) as ExtentSnapshot['extents'][number]['flags'] })),
});

async function rejectsWith(p: Promise<unknown>, code: string, re: RegExp): Promise<HomidClientError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof HomidClientError, `expected HomidClientError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    assert.doesNotMatch(e.message, /\n/);
    return e;
  }
  assert.fail(`expected a ${code} error`);
}

describe('planRead', () => {
  test('physically adjacent extents share one command; a hole between them reads as zeros', () => {
    // three extents end to end on the device, the third after a hole in the file
    const p = planRead(
      snap(40 * KiB, [
        [0, 8 * KiB, 4 * KiB],
        [4 * KiB, 12 * KiB, 4 * KiB],
        [20 * KiB, 16 * KiB, 8 * KiB],
      ]),
      4096,
      1000,
      128 * KiB,
    );
    assert.equal(p.extents, 3);
    assert.deepEqual(
      p.commands.map((c) => [c.lba, c.nlb]),
      [[2, 4]],
    );
    assert.deepEqual(p.commands[0]!.segs, [0, 0, 4 * KiB, 4 * KiB, 4 * KiB, 4 * KiB, 8 * KiB, 20 * KiB, 8 * KiB]);
    assert.deepEqual(p.zeros, [8 * KiB, 12 * KiB, 28 * KiB, 12 * KiB], 'the hole, and the tail past the last extent');
  });

  test('a long extent splits at the command size; the last command stops at the file size', () => {
    const p = planRead(snap(300 * KiB + 5, [[0, 1 * MiB, 304 * KiB]]), 4096, 1000, 128 * KiB);
    assert.deepEqual(
      p.commands.map((c) => [c.lba, c.nlb, c.segs[2]]),
      [
        [256, 32, 128 * KiB],
        [288, 32, 128 * KiB],
        [320, 12, 44 * KiB + 5],
      ],
    );
    assert.deepEqual(p.zeros, []);
  });

  test('extents not in order on the device start new commands; unwritten extents read as zeros and are not read', () => {
    const p = planRead(
      snap(16 * KiB, [
        [0, 40 * KiB, 4 * KiB],
        [4 * KiB, 8 * KiB, 4 * KiB, ['unwritten']],
        [8 * KiB, 12 * KiB, 8 * KiB, ['last']],
      ]),
      4096,
      1000,
      128 * KiB,
    );
    assert.deepEqual(
      p.commands.map((c) => [c.lba, c.nlb]),
      [
        [10, 1],
        [3, 2],
      ],
    );
    assert.equal(p.extents, 2);
    assert.deepEqual(p.zeros, [4 * KiB, 4 * KiB]);
  });

  test('file system blocks smaller than the LBA: the covering LBAs are read, the bytes taken from inside them', () => {
    // 1 KiB blocks on a 4 KiB-LBA namespace: bytes 5120..7167 of the device are in LBA 1
    const p = planRead(snap(2048, [[0, 5120, 2048]]), 4096, 100, 128 * KiB);
    assert.deepEqual(
      p.commands.map((c) => [c.lba, c.nlb, ...c.segs]),
      [[1, 1, 1024, 0, 2048]],
    );
  });

  test('an empty file needs no command; an empty extent list reads as zeros', () => {
    assert.deepEqual(planRead(snap(0, []), 512, 10, 4096).commands, []);
    const p = planRead(snap(10, []), 512, 10, 4096);
    assert.deepEqual([p.commands.length, ...p.zeros], [0, 0, 10]);
  });

  test('inline, delayed, encoded and unknown extents, invalid maps and LBAs past the namespace are refused', () => {
    for (const f of ['inline', 'delalloc', 'encoded', 'unknown']) {
      assert.throws(
        () => planRead(snap(100, [[0, 4096, 4096, [f]]]), 4096, 100, 128 * KiB),
        (e: Error) => e instanceof HomidClientError && e.code === ClientErrorCode.Unreadable && e.message.includes(`is ${f}`),
      );
    }
    assert.throws(() => planRead(snap(100, [], false), 4096, 100, 128 * KiB), /published as invalid/);
    assert.throws(() => planRead(snap(8192, [[0, 99 * 4096, 8192]]), 4096, 100, 128 * KiB), /LBAs 99\.\.100, past the end of the namespace \(100 blocks\)/);
    assert.throws(() => planRead(snap(8192, [[0, 0.5, 8192]]), 4096, 100, 128 * KiB), /not made of exact non-negative integers/);
  });
});

describe('deep-queue reads through homid (decoder:ext4 on emu://)', { skip: skipNoMkfs }, () => {
  let rig: Rig;
  let c: HomidClient;
  const leases: Record<'raw' | 'mediated', Lease | null> = { raw: null, mediated: null };

  before(async () => {
    rig = await startRig({ 'change/before': 200 * KiB, 'change/during': 2 * MiB, 'gone/raw': 2 * MiB, 'gone/mediated': 2 * MiB });
    c = await HomidClient.connect(rig.sock);
    [leases.raw] = await c.openQueuePairs({ device: rig.device, depth: 65, mode: 'raw', dataBytes: 9 * MiB });
    [leases.mediated] = await c.openQueuePairs({ device: rig.device, depth: 65, mode: 'mediated', dataBytes: 8 * MiB });
  });
  after(async () => {
    c?.close();
    await rig?.close();
  });

  const resolve = async (rel: string): Promise<ExtentMapHandle> => {
    const fd = fs.openSync(rig.at(rel), 'r');
    try {
      return await c.resolveExtents(fd, rig.device);
    } finally {
      fs.closeSync(fd);
    }
  };

  for (const mode of ['raw', 'mediated'] as const) {
    test(`${mode}: readFile returns the exact bytes of every file`, async () => {
      const lease = leases[mode]!;
      for (const rel of rig.names) {
        if (rel.startsWith('small/') && rel !== 'small/s000' && rel !== 'small/s099') continue;
        const got = await c.readFile(rig.at(rel), lease, rig.device);
        assert.ok(Buffer.from(got).equals(fs.readFileSync(rig.at(rel))), `${mode} ${rel}: bytes differ`);
      }
      // concurrent calls share the lease's reader (one queue), and it is closed after the last
      const rels = ['m1', 'big6m', 'f4095', 'sparse', 'empty'];
      const got = await Promise.all(rels.map((rel) => c.readFile(rig.at(rel), lease, rig.device)));
      for (const [i, rel] of rels.entries()) assert.ok(Buffer.from(got[i]!).equals(fs.readFileSync(rig.at(rel))), `${mode} ${rel} (concurrent): bytes differ`);
      assert.equal(ExtentReader.of(lease), null, 'readFile closed its reader');
    });

    test(`${mode}: one reader keeps many commands in flight across small files; adjacent extents share a command`, async () => {
      const lease = leases[mode]!;
      const r = new ExtentReader(lease, { depth: 64 });
      try {
        assert.equal(r.depth, 64);
        assert.equal(r.commandBytes, 128 * KiB, 'the emulator MDTS');
        const smalls = rig.names.filter((n) => n.startsWith('small/'));
        assert.equal(smalls.length, SMALL_FILES);
        const maps = await Promise.all(smalls.map(resolve));
        const outs = smalls.map(() => new Uint8Array(SMALL_BYTES));
        await Promise.all(maps.map((m, i) => r.read(m, (off, b) => outs[i]!.set(b, off))));
        for (const [i, rel] of smalls.entries()) assert.ok(Buffer.from(outs[i]!).equals(fs.readFileSync(rig.at(rel))), rel);
        // one command per 110 KiB file, two for the few that cross a block group's metadata (two extents)
        const planned = maps.reduce((n, m) => n + planRead(m.last, lease.grant.blockSize, lease.grant.blocks, r.commandBytes).commands.length, 0);
        assert.equal(r.stats.commands, planned);
        assert.ok(planned < SMALL_FILES * 1.1, `${planned} commands for ${SMALL_FILES} files`);
        assert.ok(r.stats.maxInFlight > 8, `at most ${r.stats.maxInFlight} commands were in flight`);
        for (const m of maps) m.close();

        const sparse = await resolve('sparse');
        const readable = sparse.last.extents.filter((e) => !e.flags.includes('unwritten'));
        assert.ok(readable.length >= SPARSE_PIECES, `the sparse file's extents: ${JSON.stringify(sparse.last.extents)}`);
        const before = { ...r.stats };
        const out = new Uint8Array(sparse.last.size);
        await r.read(sparse, (off, b) => out.set(b, off));
        sparse.close();
        assert.ok(Buffer.from(out).equals(fs.readFileSync(rig.at('sparse'))), 'sparse: bytes differ');
        // its pieces lie end to end on the device (a block group's metadata may split them once)
        const commands = r.stats.commands - before.commands;
        let runs = 1;
        for (let i = 1; i < readable.length; i++) if (readable[i]!.physical !== readable[i - 1]!.physical + readable[i - 1]!.length) runs++;
        assert.equal(r.stats.extents - before.extents, readable.length);
        assert.equal(commands, runs, `${commands} commands for ${readable.length} extents in ${runs} runs on the device`);
        assert.ok(commands < readable.length, 'coalesced');
        console.log(`# ${mode}: ${SMALL_FILES} files in ${planned} commands, up to ${r.stats.maxInFlight} in flight; sparse file: ${readable.length} extents in ${commands} command(s)`);
      } finally {
        r.close();
      }
    });

    test(`${mode}: a bad completion fails the file with the LBAs and the status; the next read works`, async () => {
      const lease = leases[mode]!;
      rig.emu().inject({ qid: lease.qid, opcode: NvmOpcode.Read, count: 1, action: { kind: 'status', sct: Sct.MediaDataIntegrity, sc: MediaStatus.UnrecoveredReadError } });
      await rejectsWith(c.readFile(rig.at('m1'), lease, rig.device), ClientErrorCode.ReadFailed, /^read of LBAs \d+\.\.\d+ failed: Unrecovered Read Error/);
      assert.ok(Buffer.from(await c.readFile(rig.at('m1'), lease, rig.device)).equals(fs.readFileSync(rig.at('m1'))));
    });
  }

  test('a command that never completes fails its file after the timeout, not later', async () => {
    const [lease] = await c.openQueuePairs({ device: rig.device, depth: 9, mode: 'raw', dataBytes: 2 * MiB });
    rig.emu().inject({ qid: lease!.qid, opcode: NvmOpcode.Read, count: 1, action: { kind: 'drop' } });
    const m = await resolve('f4095');
    const t0 = performance.now();
    await rejectsWith(
      readExtents(lease!, m, () => undefined, { timeoutMs: 300 }),
      ClientErrorCode.ReadTimeout,
      new RegExp(`^read of LBAs \\d+\\.\\.\\d+ through queue pair ${lease!.qid} did not complete in 300 ms$`),
    );
    const took = performance.now() - t0;
    assert.ok(took >= 300 && took < 2000, `the timeout took ${took} ms`);
    m.close();
    await c.closeQueuePair(lease!);
  });

  test("a file whose extent map moved before the read fails with 'changed'", async () => {
    const m = await resolve('change/before');
    fs.appendFileSync(rig.at('change/before'), 'more');
    const t0 = Date.now();
    while (!m.changed && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 5));
    assert.ok(m.changed, 'homid saw the change');
    await rejectsWith(
      readExtents(leases.raw!, m, () => undefined),
      ClientErrorCode.FileChanged,
      /^file changed after its extents were resolved/,
    );
    m.close();
  });

  test("a file changed during the read fails with 'file changed during read'", async () => {
    const m = await resolve('change/during');
    let touched = false;
    // one small command at a time: the read lasts long enough for homid's watch to see the write
    await rejectsWith(
      readExtents(
        leases.mediated!,
        m,
        () => {
          if (!touched) fs.appendFileSync(rig.at('change/during'), 'x');
          touched = true;
        },
        { depth: 1, maxBytes: 4096 },
      ),
      ClientErrorCode.FileChanged,
      /^file changed during read/,
    );
    m.close();
  });

  for (const mode of ['raw', 'mediated'] as const) {
    test(`${mode}: homid going away fails the read at once`, async () => {
      const c2 = await HomidClient.connect(rig.sock);
      const [lease] = await c2.openQueuePairs({ device: rig.device, depth: 4, mode, dataBytes: 1 * MiB });
      const fd = fs.openSync(rig.at(`gone/${mode}`), 'r');
      const m = await c2.resolveExtents(fd, rig.device);
      fs.closeSync(fd);
      let closing = false;
      const t0 = performance.now();
      await rejectsWith(
        readExtents(
          lease!,
          m,
          () => {
            if (!closing) c2.close();
            closing = true;
          },
          { depth: 2, maxBytes: 4096 },
        ),
        ClientErrorCode.HomidGone,
        /stopped: .*(detached|homid connection closed)/,
      );
      assert.ok(performance.now() - t0 < 3000, 'not a timeout');
      m.close();
    });
  }
});
