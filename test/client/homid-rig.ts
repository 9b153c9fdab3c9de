/**
 * A homid with one decoder:ext4 device on a file-backed emu:// namespace, over a socket, for the deep-queue
 * read tests (test/client/read-file.test.ts, test/load/driver-path.test.ts): a host tree of files of varied
 * sizes (empty, 1 byte, 4095 bytes, a hundred of 110 KiB, 1 MiB + 123, 6 MiB split across block groups, a
 * sparse file whose pieces sit next to each other on the device), an ext4 image of it (mkfs.ext4 -d, 4 MiB
 * block groups so the large file has more than one extent) and the server.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import type { LoadFile } from '../../src/load/types.js';
import type { EmuTransport } from '../../src/transport/emu.js';
import { Rng, haveTool, mkExt4, tmpDir } from '../extents/fixtures.js';
import { config, silent } from '../daemon/fixtures.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const IMAGE_MIB = 48;
export const SMALL_FILES = 100;
export const SMALL_BYTES = 110 * KiB;
/** Pieces of the sparse file: SPARSE_PIECE bytes every SPARSE_STRIDE bytes. */
export const SPARSE_PIECES = 8;
export const SPARSE_PIECE = 5000;
export const SPARSE_STRIDE = 100 * KiB;

export const skipNoMkfs = haveTool('mkfs.ext4') ? false : 'no mkfs.ext4 (e2fsprogs): cannot build the ext4 image';

export interface Rig {
  dir: string;
  tree: string;
  sock: string;
  srv: HomidServer;
  device: string;
  /** Relative paths of every file of the tree (sorted). */
  names: string[];
  /** The file's path in the tree. */
  at(rel: string): string;
  /** The emulated controller behind the device (fault injection). */
  emu(): EmuTransport;
  /** Stop homid (idempotent). */
  stop(): Promise<void>;
  /** Stop homid and remove the files. */
  close(): Promise<void>;
}

/** Write the tree: `extra` names more files of the given sizes (files a test rewrites). */
function writeTree(tree: string, extra: Record<string, number>): void {
  const rng = new Rng(77);
  const put = (rel: string, data: Uint8Array): void => {
    fs.mkdirSync(path.dirname(path.join(tree, rel)), { recursive: true });
    fs.writeFileSync(path.join(tree, rel), data);
  };
  put('empty', new Uint8Array(0));
  put('one', new Uint8Array([0x5a]));
  put('f4095', rng.bytes(4095));
  put('m1', rng.bytes(MiB + 123));
  put('big6m', rng.bytes(6 * MiB));
  for (let i = 0; i < SMALL_FILES; i++) put(`small/s${String(i).padStart(3, '0')}`, rng.bytes(SMALL_BYTES));
  const fd = fs.openSync(path.join(tree, 'sparse'), 'w');
  for (let i = 0; i < SPARSE_PIECES; i++) fs.writeSync(fd, rng.bytes(SPARSE_PIECE), 0, SPARSE_PIECE, 7000 + i * SPARSE_STRIDE);
  fs.ftruncateSync(fd, SPARSE_PIECES * SPARSE_STRIDE + 3333);
  fs.closeSync(fd);
  for (const [rel, n] of Object.entries(extra)) put(rel, rng.bytes(n));
}

function listFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else if (e.isFile()) out.push(r);
    }
  };
  walk('');
  return out.sort();
}

export async function startRig(extra: Record<string, number> = {}, limits?: { file_grants_per_client: number }): Promise<Rig> {
  const dir = tmpDir('homi-deepread-');
  const tree = path.join(dir, 'tree');
  fs.mkdirSync(tree);
  writeTree(tree, extra);
  const image = path.join(dir, 'fs.ext4');
  mkExt4(image, tree, IMAGE_MIB, ['-g', '1024']);
  const sock = path.join(dir, 'homid.sock');
  const device = 'img';
  const srv = await startHomidServer(
    config({
      socket: sock,
      device: [{ name: device, uri: `emu://${image}?size=${IMAGE_MIB}MiB&queues=16`, extents: 'decoder:ext4', extent_root: tree }],
      class: { default: { queue_pairs: 12, per_client: 6 } },
      raw: { users: [process.getuid!()] },
      ...(limits ? { limits } : {}),
    }),
    { logger: silent() },
  );
  let stopped: Promise<void> | null = null;
  const stop = (): Promise<void> => (stopped ??= srv.close());
  return {
    dir,
    tree,
    sock,
    srv,
    device,
    names: listFiles(tree),
    at: (rel) => path.join(tree, rel),
    emu: () => srv.homid.registry.live(device).transport as EmuTransport,
    stop,
    async close() {
      try {
        await stop();
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** The load plan of `rels` (stat taken now), indices in order. */
export function planFiles(rig: Rig, rels: readonly string[]): LoadFile[] {
  return rels.map((rel, index) => {
    const p = rig.at(rel);
    const st = fs.statSync(p);
    return { index, path: p, size: st.size, dev: st.dev, ino: st.ino, mtimeMs: st.mtimeMs };
  });
}
