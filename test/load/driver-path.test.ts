/**
 * The `driver` path of homi load (src/load/paths/driver.ts) against homid on a decoder:ext4 device (emu://
 * backed by an ext4 image of a host tree): every file of the tree (empty, 1 byte, 4095 bytes, a hundred of
 * 110 KiB, 1 MiB + 123, 6 MiB in two extents, a sparse file) loads into a HostSink byte for byte, through a raw
 * and a mediated lease, with many commands in flight and adjacent extents coalesced; a device that fails reads
 * mid-load fails those files with a clear error while the rest load; a file changed since the plan fails with
 * 'changed'; homid going away rejects the load.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { HostSink } from '../../src/load/host-sink.js';
import { discover } from '../../src/load/discover.js';
import { HomidClient } from '../../src/client/index.js';
import { openDriverPath, type DriverPathEngine } from '../../src/load/paths/driver.js';
import type { LoadEvents, LoadFile, LoadPathOptions, LoadSink } from '../../src/load/types.js';
import { DEFAULT_CHUNK_BYTES, DEFAULT_DEPTH } from '../../src/load/defaults.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { MediaStatus, Sct } from '../../src/nvme/status.js';
import { MiB, planFiles, skipNoMkfs, startRig, type Rig } from '../client/homid-rig.js';

/** Events recorded: starts, completions (with their errors), bytes; checks every start is matched once. */
class Recorder implements LoadEvents {
  readonly started = new Set<number>();
  readonly done = new Map<number, Error | null>();
  bytesSeen = 0;
  onBytes: ((total: number) => void) | null = null;
  fileStart(file: number): void {
    assert.ok(!this.started.has(file), `file ${file} started twice`);
    this.started.add(file);
  }
  fileDone(file: number, error: Error | null): void {
    assert.ok(this.started.has(file), `file ${file} done before it started`);
    assert.ok(!this.done.has(file), `file ${file} done twice`);
    this.done.set(file, error);
  }
  bytes(n: number): void {
    this.bytesSeen += n;
    this.onBytes?.(this.bytesSeen);
  }
  failed(): [number, Error][] {
    return [...this.done].filter((x): x is [number, Error] => x[1] !== null);
  }
}

function statOf(p: string): { dev: number; ino: number; mtimeMs: number } {
  const st = fs.statSync(p);
  return { dev: st.dev, ino: st.ino, mtimeMs: st.mtimeMs };
}

function options(rig: Rig, mode: 'raw' | 'mediated'): LoadPathOptions {
  return { depth: DEFAULT_DEPTH, chunkBytes: DEFAULT_CHUNK_BYTES, direct: true, socket: rig.sock, device: rig.device, mode };
}

/** Every file not in `except` has exactly its tree's bytes in the sink. */
function checkBytes(sink: HostSink, files: readonly LoadFile[], except: ReadonlySet<number> = new Set()): void {
  for (const f of files) {
    if (except.has(f.index)) continue;
    assert.ok(Buffer.from(sink.view(f.index)).equals(fs.readFileSync(f.path)), `${f.path}: loaded bytes differ`);
  }
}

describe('homi load --path driver', { skip: skipNoMkfs }, () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig({ 'edit/me': 300_000 });
  });
  after(async () => rig?.close());

  for (const mode of ['raw', 'mediated'] as const) {
    test(`${mode}: every file loads byte for byte, many commands in flight, adjacent extents coalesced`, async () => {
      const eng: DriverPathEngine = await openDriverPath(options(rig, mode));
      try {
        assert.equal(eng.path, 'driver');
        assert.match(
          eng.describe,
          new RegExp(
            `^user-space driver via homid \\(${mode} queue pair ${eng.lease.qid} on img, extents decoder:ext4(, homid checks every command)?\\), ${DEFAULT_DEPTH} in flight, up to 128 KiB commands$`,
          ),
        );
        const files = planFiles(
          rig,
          rig.names.filter((n) => n !== 'sparse'),
        );
        assert.ok(files.some((f) => f.size === 0) && files.some((f) => f.size === 4095) && files.some((f) => f.size === MiB + 123) && files.some((f) => f.size === 6 * MiB));
        const sink = new HostSink(files, { pin: false });
        const ev = new Recorder();
        let adopted: Uint8Array | null = null;
        let adoptions = 0;
        (sink as LoadSink).adoptStaging = (m: Uint8Array): void => {
          adopted = m;
          adoptions++;
        };
        const t0 = performance.now();
        await eng.run(files, sink, ev);
        const ms = performance.now() - t0;
        assert.deepEqual(ev.failed(), []);
        assert.equal(ev.done.size, files.length);
        const total = files.reduce((n, f) => n + f.size, 0);
        assert.equal(ev.bytesSeen, total);
        checkBytes(sink, files);
        assert.equal(adoptions, 1);
        assert.equal(adopted, eng.reader.staging);
        const s = { ...eng.stats };
        assert.ok(s.maxInFlight > 8, `at most ${s.maxInFlight} commands in flight`);
        assert.equal(s.files, files.length);
        console.log(`# ${mode}: ${files.length} files, ${(total / MiB).toFixed(1)} MiB in ${ms.toFixed(0)} ms: ${s.commands} commands for ${s.extents} extents, up to ${s.maxInFlight} in flight`);

        // the sparse file alone: its pieces lie end to end on the device, so they share commands
        const sparse = planFiles(rig, ['sparse']);
        const sink2 = new HostSink(sparse, { pin: false });
        const ev2 = new Recorder();
        await eng.run(sparse, sink2, ev2);
        assert.deepEqual(ev2.failed(), []);
        checkBytes(sink2, sparse);
        const commands = eng.stats.commands - s.commands;
        const extents = eng.stats.extents - s.extents;
        assert.ok(commands < extents, `${commands} commands for ${extents} extents: not coalesced`);
        sink.close();
        sink2.close();
      } finally {
        await eng.close();
      }
    });
  }

  test('a device that fails reads mid-load fails those files with the LBAs and the status; the rest load', async () => {
    const eng = await openDriverPath(options(rig, 'raw'));
    try {
      const files = planFiles(rig, rig.names);
      const sink = new HostSink(files, { pin: false });
      const ev = new Recorder();
      let injected = false;
      ev.onBytes = (total) => {
        if (injected || total < 4 * MiB) return;
        injected = true;
        rig.emu().inject({ qid: eng.lease.qid, opcode: NvmOpcode.Read, count: 3, action: { kind: 'status', sct: Sct.MediaDataIntegrity, sc: MediaStatus.UnrecoveredReadError } });
      };
      await eng.run(files, sink, ev);
      assert.ok(injected);
      assert.equal(ev.done.size, files.length);
      const failed = ev.failed();
      assert.ok(failed.length >= 1 && failed.length <= 3, `${failed.length} files failed`);
      for (const [i, e] of failed) {
        assert.equal(e.name, 'LoadFileError');
        assert.match(e.message, /: read of LBAs \d+\.\.\d+ failed: Unrecovered Read Error/);
        assert.ok(e.message.startsWith(files[i]!.path), e.message);
      }
      checkBytes(sink, files, new Set(failed.map(([i]) => i)));
      sink.close();
    } finally {
      rig.emu().clearFaults(); // a rule left over would hit the next lease on this queue id
      await eng.close();
    }
  });

  test("a file changed since the plan fails with 'changed', one homid cannot map fails with its refusal; the others load", async () => {
    const eng = await openDriverPath(options(rig, 'mediated'));
    try {
      // and a file outside the device's extent root: homid refuses to map it
      const outside = `${rig.dir}/outside.bin`;
      fs.writeFileSync(outside, new Uint8Array(5000).fill(1));
      const files = [...planFiles(rig, ['one', 'edit/me', 'm1']), { ...planFiles(rig, ['one'])[0]!, index: 3, path: outside, size: 5000, ...statOf(outside) }];
      // rewritten after the plan: same size, new bytes, new mtime
      await new Promise((r) => setTimeout(r, 20));
      fs.writeFileSync(rig.at('edit/me'), new Uint8Array(300_000).fill(7));
      const sink = new HostSink(files, { pin: false });
      const ev = new Recorder();
      await eng.run(files, sink, ev);
      const failed = ev.failed();
      assert.deepEqual(failed.map(([i]) => i).sort(), [1, 3]);
      assert.match(ev.done.get(1)!.message, /edit\/me: file changed since the load was planned/);
      assert.match(ev.done.get(3)!.message, /outside\.bin: .*not under the extent root/);
      checkBytes(sink, files, new Set([1, 3]));
      sink.close();
    } finally {
      await eng.close();
    }
  });

  test('homid going away fails the files in flight and rejects the load', async () => {
    const eng = await openDriverPath(options(rig, 'raw'));
    try {
      const files = planFiles(rig, rig.names);
      const sink = new HostSink(files, { pin: false });
      const ev = new Recorder();
      let stopping = false;
      ev.onBytes = (total) => {
        if (!stopping && total >= 2 * MiB) void rig.stop();
        stopping ||= total >= 2 * MiB;
      };
      const t0 = performance.now();
      await assert.rejects(eng.run(files, sink, ev), (e: Error) => e.name === 'HomidClientError' && (e as Error & { code: string }).code === 'homid-gone');
      assert.ok(performance.now() - t0 < 5000, 'not a timeout');
      await rig.stop();
      const failed = ev.failed();
      assert.ok(failed.length >= 1, 'files in flight failed');
      for (const f of ev.started) assert.ok(ev.done.has(f), `file ${f} started and never finished`);
      sink.close();
    } finally {
      await eng.close();
    }
  });
});

describe('homi load --path driver gives every file grant back', { skip: skipNoMkfs }, () => {
  test('a load of more files than [limits] file_grants_per_client allows succeeds, raw and mediated, and homid holds no grant after', async () => {
    const rig = await startRig({}, { file_grants_per_client: 8 });
    try {
      const { files } = discover([rig.tree]);
      assert.ok(files.length > 8 * 4, `${files.length} files`);
      for (const mode of ['raw', 'mediated'] as const) {
        const engine = await openDriverPath(options(rig, mode));
        const sink = new HostSink(files);
        try {
          const ev = new Recorder();
          await engine.run(files, sink, ev);
          assert.deepEqual(
            ev.failed().map(([i, e]) => `${files[i]!.path}: ${e.message}`),
            [],
          );
          checkBytes(sink, files);
          const held = [...rig.srv.homid.sessions.values()].reduce((n, s) => n + s.files.size, 0);
          assert.equal(held, 0, 'every file grant was given back');
        } finally {
          sink.close();
          await engine.close();
        }
      }
      // and without giving them back, the ninth file is refused: the limit is real
      const c = await HomidClient.connect(rig.sock);
      try {
        const maps = [];
        for (let i = 0; i < 8; i++) {
          const fd = fs.openSync(files[i]!.path, 'r');
          try {
            maps.push(await c.resolveExtents(fd, rig.device));
          } finally {
            fs.closeSync(fd);
          }
        }
        const fd = fs.openSync(files[8]!.path, 'r');
        try {
          await assert.rejects(c.resolveExtents(fd, rig.device), /limit-file-grants|holds 8 of 8 file grants/);
          await c.releaseFile(maps[0]!);
          const again = await c.resolveExtents(fd, rig.device);
          assert.equal(again.last.size, files[8]!.size, 'after one release the next file resolves');
        } finally {
          fs.closeSync(fd);
        }
        await assert.rejects(c.releaseFile(maps[0]!), /no file grant/);
      } finally {
        c.close();
      }
    } finally {
      await rig.close();
    }
  });
});
