/**
 * A hostile homid client (run as another user by homid-seals-e2e.test.ts; seal-attacker.ts): it takes a mediated lease, a raw lease
 * and the extent table of the file open on fd 3, keeps every descriptor homid sends, and attacks the memory
 * behind them: shrink and grow each memfd, add seals to it, reopen the extent table read-write through
 * /proc/self/fd and write it, punch a hole in it, map it writable or make a read-only mapping writable. It then
 * punches holes in its own ring and data memory (what seals cannot forbid on memory the client must write) and
 * prints one JSON line of outcomes (errno codes, 'ok' on success), keeping its leases until stdin closes.
 *
 * argv: socket mediatedDevice rawDevice
 */
import * as fs from 'node:fs';
import koffi from 'koffi';
import { HomidClient } from '../../src/client/index.js';
import { errnoName } from '../../src/sys/libc.js';
import { MAP_SHARED, PROT_READ, PROT_WRITE, mmap } from '../../src/sys/mman.js';
import { F_SEAL_FUTURE_WRITE, addSeals, getSeals } from '../../src/sys/shm.js';

// The test runner also loads every file under dist/test/: without HOMI_DAEMON_CHILD=1 this file does nothing.
if (process.env['HOMI_DAEMON_CHILD'] !== '1') process.exit(0);
const [socket, mediatedDevice, rawDevice] = process.argv.slice(2) as [string, string, string];
const FILE_FD = 3;
const PAGE = 4096;
/** fallocate(2) mode: deallocate a range, keep the file size. */
const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;

const libc = koffi.load('libc.so.6');
const fallocate = libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)') as (fd: number, mode: number, off: bigint, len: bigint) => number;
const mprotect = libc.func('int mprotect(void *addr, size_t len, int prot)') as (addr: unknown, len: number, prot: number) => number;

/** 'ok', or the error code of what `f` threw. */
function attempt(f: () => void): string {
  try {
    f();
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code ?? (e as Error).message;
  }
}

/** A libc call's return value as 'ok' or the errno name. */
function rc(r: number): string {
  return r === 0 ? 'ok' : errnoName(koffi.errno());
}

function punch(fd: number): string {
  return rc(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0n, BigInt(PAGE)));
}

/** Everything a client can try on a memfd it holds with the access it was given. */
function sizeAttacks(fd: number): Record<string, string | number> {
  const size = fs.fstatSync(fd).size;
  return {
    seals: getSeals(fd),
    shrink: attempt(() => fs.ftruncateSync(fd, 0)),
    grow: attempt(() => fs.ftruncateSync(fd, size + PAGE)),
    addSeal: attempt(() => addSeals(fd, F_SEAL_FUTURE_WRITE)),
    sizeAfter: fs.fstatSync(fd).size,
    size,
  };
}

const c = await HomidClient.connect(socket);
const fds: number[] = [];
const med = await c.ipc.request({ type: 'openQueuePair', device: mediatedDevice, nsid: 1, depth: 16, count: 1, mode: 'mediated', dataBytes: 1 << 16 });
const raw = await c.ipc.request({ type: 'openQueuePair', device: rawDevice, nsid: 1, depth: 16, count: 1, mode: 'raw', dataBytes: 1 << 16 });
const ext = await c.ipc.request({ type: 'resolveExtents', device: mediatedDevice }, [FILE_FD]);
for (const r of [med, raw, ext]) {
  if ((r.response as { ok: boolean }).ok !== true) throw new Error(`homid refused: ${JSON.stringify(r.response)}`);
  fds.push(...r.fds);
}
const [ring, data] = med.fds as [number, number];
const [bar, rawMemory] = raw.fds as [number, number];
const [table] = ext.fds as [number];

const out: Record<string, unknown> = {
  ring: sizeAttacks(ring),
  data: sizeAttacks(data),
  bar: sizeAttacks(bar),
  rawMemory: sizeAttacks(rawMemory),
  table: sizeAttacks(table),
};

// The extent table: reopen it read-write and try to change what other tenants read.
const tableBytes = fs.fstatSync(table).size;
let rw = -1;
const reopen = attempt(() => (rw = fs.openSync(`/proc/self/fd/${table}`, 'r+')));
const t: Record<string, string> = { reopen };
if (rw >= 0) {
  t.write = attempt(() => fs.writeSync(rw, new Uint8Array(64).fill(0xee), 0, 64, 0));
  t.shrink = attempt(() => fs.ftruncateSync(rw, 0));
  t.grow = attempt(() => fs.ftruncateSync(rw, tableBytes + PAGE));
  t.punch = punch(rw);
  t.mmapWritable = attempt(() => mmap(tableBytes, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0, 'extent table (rw reopen)').retire());
  const ro = mmap(tableBytes, PROT_READ, MAP_SHARED, rw, 0, 'extent table (read-only map)');
  t.mprotectWritable = rc(mprotect(ro.ptr, tableBytes, PROT_READ | PROT_WRITE));
  ro.retire();
}
out.tableReopen = t;
// The data memory of a lease without a write grant comes as a read-only descriptor of a 0600 memfd: no
// reopen for writing, no writable mapping, no hole punching.
out.dataReopen = attempt(() => fs.closeSync(fs.openSync(`/proc/self/fd/${data}`, 'r+')));
out.dataMmapWritable = attempt(() => mmap(fs.fstatSync(data).size, PROT_READ | PROT_WRITE, MAP_SHARED, data, 0, 'data (writable)').retire());
// Seals cannot forbid hole punching on memory the client must write: it only ever zeroes its own pages.
out.punchRing = punch(ring);
out.punchData = punch(data);
process.stdout.write(JSON.stringify(out) + '\n');

// Keep the leases (and the punched memory in homid's poller) until the test is done.
await new Promise<void>((resolve) => {
  process.stdin.on('end', resolve);
  process.stdin.on('close', resolve);
  process.stdin.resume();
});
for (const fd of fds) fs.closeSync(fd);
c.close();
process.exit(0);
