/**
 * The memory homid shares, attacked by a client running as another user (uid 65534 through setpriv): every
 * memfd of a real lease (mediated ring, exported data and CQ memory, the raw grant's BAR memfd and queue
 * memory, the extent table) refuses to shrink, grow or take another seal; the extent table, reopened read-write
 * through /proc/self/fd, refuses write, truncation, hole punching and writable mappings. homid keeps serving
 * throughout, and the extent table another tenant (root, through the client's own readFile) reads is unchanged.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { HomidClient, type ExtentMapHandle } from '../../src/client/index.js';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import { F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK } from '../../src/sys/shm.js';
import { config, ext4Fixture, haveTool, silent, tmpDir, type ImageFixture } from './fixtures.js';
import { nextJson, spawnProc, until } from './procs.js';

const HOSTILE = fileURLToPath(new URL('./seal-attacker.js', import.meta.url));
const NOBODY = 65534;
const AS_NOBODY = [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'];
const FINAL_SIZE_SEALS = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

/** Why a process of uid 65534 cannot be run here, or null when it can. */
function whyNoHostileChild(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (to run a child as uid 65534)';
  if (!haveTool('setpriv')) return 'no setpriv';
  if (!haveTool('mkfs.ext4')) return 'no mkfs.ext4';
  const koffi = createRequire(import.meta.url).resolve('koffi');
  const probe = `const fs = require('fs'); for (const f of ${JSON.stringify([HOSTILE, koffi])}) fs.accessSync(f, fs.constants.R_OK);`;
  const r = spawnSync('setpriv', [...AS_NOBODY, process.execPath, '-e', probe], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) return `uid ${NOBODY} cannot read the compiled tests or node_modules: ${r.stderr?.toString().trim() || `status ${r.status}`}`;
  return null;
}

const skip = whyNoHostileChild();

describe('memory homid shares, against a client of another user', { skip: skip ?? false }, () => {
  let fx: ImageFixture;
  let sockDir: string;
  let srv: HomidServer;
  let sock: string;
  const FILE = 'mine.bin';

  before(async () => {
    fx = ext4Fixture({ [FILE]: 20_000, 'other.bin': 12_288 });
    // a socket directory and socket the other user can reach
    sockDir = tmpDir('homid-seals-');
    fs.chmodSync(sockDir, 0o755);
    sock = path.join(sockDir, 'homid.sock');
    srv = await startHomidServer(
      config({
        socket: sock,
        socket_mode: '0666',
        device: [{ name: 'img', uri: `emu://${fx.image}?size=${fx.sizeMiB}MiB&queues=8`, extents: 'decoder:ext4', extent_root: fx.tree }],
        class: { default: { queue_pairs: 6, per_client: 3, write: false } },
        // raw too, so that the hostile client also receives a raw grant's BAR memfd and queue memory
        raw: { users: [process.getuid!(), NOBODY] },
      }),
      { logger: silent() },
    );
  });
  after(async () => {
    await srv?.close();
    fs.rmSync(fx.dir, { recursive: true, force: true });
    fs.rmSync(sockDir, { recursive: true, force: true });
  });

  test('no memfd of a lease can be resized or resealed, the extent table cannot be rewritten, homid keeps serving', { timeout: 90_000 }, async () => {
    const file = path.join(fx.tree, FILE);
    const victim = await HomidClient.connect(sock);
    let victimMap: ExtentMapHandle | null = null;
    const fileFd = fs.openSync(file, 'r');
    try {
      victimMap = await victim.resolveExtents(fileFd, 'img');
      const before = victimMap.read();
      assert.ok(before !== null && before.extents.length > 0, 'the victim reads a valid extent map');

      const hostile = spawnProc('setpriv', [...AS_NOBODY, process.execPath, HOSTILE, sock, 'img', 'img'], {
        env: { HOMI_DAEMON_CHILD: '1' },
        stdin: 'pipe',
        fds: [fileFd],
      });
      try {
        const r = await nextJson(hostile);
        assert.equal(srv.homid.sessions.size, 2, 'the hostile client is connected');
        assert.ok(
          [...srv.homid.sessions.values()].some((s) => s.peer.uid === NOBODY),
          `the hostile client runs as uid ${NOBODY}`,
        );

        // Every memfd it holds: fixed size, final seal set.
        for (const name of ['ring', 'data', 'bar', 'rawMemory', 'table']) {
          const a = r[name] as Record<string, string | number>;
          assert.equal(Number(a.seals) & FINAL_SIZE_SEALS, FINAL_SIZE_SEALS, `${name}: sealed against shrinking, growing and new seals (0x${Number(a.seals).toString(16)})`);
          assert.equal(a.sizeAfter, a.size, `${name}: its size did not change`);
          if (name === 'table' || name === 'data') {
            // handed out O_RDONLY (the table always, the data memory of a lease without a write grant): truncation
            // fails before the seals are even consulted
            assert.notEqual(a.shrink, 'ok');
            assert.notEqual(a.grow, 'ok');
          } else {
            assert.equal(a.shrink, 'EPERM', `${name}: ftruncate to 0`);
            assert.equal(a.grow, 'EPERM', `${name}: ftruncate past the end`);
          }
          assert.equal(a.addSeal, 'EPERM', `${name}: F_ADD_SEALS(F_SEAL_FUTURE_WRITE)`);
        }
        assert.ok(Number((r.table as Record<string, number>).seals) & F_SEAL_FUTURE_WRITE, 'the extent table is sealed F_SEAL_FUTURE_WRITE');
        assert.equal(Number((r.ring as Record<string, number>).seals) & F_SEAL_FUTURE_WRITE, 0, 'the ring stays writable for its client');

        // The extent table reopened read-write through /proc/self/fd: homid's memfds are mode 0600, so another
        // uid cannot reopen them at all (F_SEAL_FUTURE_WRITE, checked by test/shm/seals.test.ts with a reopen
        // that does succeed, is the second lock behind this one).
        const t = r.tableReopen as Record<string, string>;
        assert.equal(t.reopen, 'EACCES', '/proc/self/fd/N cannot be reopened O_RDWR by another uid');
        // The data memory of a lease without a write grant: read-only descriptor, no way to write or punch it.
        assert.equal(r.dataReopen, 'EACCES', 'data: /proc/self/fd/N reopen O_RDWR');
        assert.equal(r.dataMmapWritable, 'EACCES', 'data: mmap(PROT_WRITE, MAP_SHARED) of a read-only descriptor');
        assert.equal(r.punchData, 'EBADF', 'data: fallocate(PUNCH_HOLE) needs a descriptor open for writing');
        // What seals cannot forbid on memory the client writes (its ring): zeroing its own pages.
        assert.equal(r.punchRing, 'ok');

        // homid serves on, with the hostile leases (and their punched memory) still polled.
        const after = victimMap.read();
        assert.deepEqual(after, before, 'the extent table the victim reads is unchanged');
        assert.equal(victimMap.changed, false);
        const [med] = await victim.openQueuePairs({ device: 'img', depth: 16, mode: 'mediated', dataBytes: 1 << 16 });
        assert.deepEqual(await victim.readFile(file, med!, 'img'), fx.files[FILE], 'a mediated read returns the right bytes');
        const [raw] = await victim.openQueuePairs({ device: 'img', depth: 16, mode: 'raw', dataBytes: 1 << 16 });
        assert.deepEqual(await victim.readFile(file, raw!, 'img'), fx.files[FILE], 'a raw read returns the right bytes');
        assert.equal(srv.homid.listDevices()[0]!.state, 'live');
      } finally {
        hostile.p.stdin!.end();
        assert.equal(await hostile.exited, 0, 'the hostile client exits normally');
      }
    } finally {
      fs.closeSync(fileFd);
      victimMap?.close();
      victim.close();
    }
    const ctrl = srv.homid.registry.live('img').controller;
    await until(() => srv.homid.sessions.size === 0 && ctrl.remoteQueuePairs.length === 0 && ctrl.queuePairs.length === 0, 30_000, 'every lease reclaimed');
  });
});
