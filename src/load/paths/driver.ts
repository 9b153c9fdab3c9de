/**
 * The `driver` read path of `homi load`: the user-space NVMe driver through homid. One connection, one lease
 * (raw: the queue pair runs in this process; mediated: homid checks every command), one deep-queue reader
 * (client/read-file.ts) whose slots are the staging memory. Each file is opened O_RDONLY, checked against the
 * plan (same inode, size and mtime), resolved to extents by homid, and read with the other files in flight into
 * the sink. Several files are resolved and read at once, so small files keep the queue full together.
 *
 * Per-file failures (homid refuses to resolve the file, a read fails or times out, the file changed) report
 * fileDone(i, error) and the load goes on; homid going away (the connection closed, the lease revoked) fails the
 * files in flight and rejects run().
 */
import { HomidErrorCode } from '../../ipc/errors.js';
import * as fs from 'node:fs';
import { ClientErrorCode, ExtentReader, HomidClient, HomidClientError, type ExtentMapHandle, type Lease, type ReadStats } from '../../client/index.js';
import type { DeviceInfo } from '../../ipc/messages.js';
import { prpListPagesNeeded } from '../../nvme/prp.js';
import { DEFAULT_CHUNK_BYTES, DEFAULT_DEPTH } from '../defaults.js';
import { LoadFileError, type LoadEvents, type LoadFile, type LoadPathEngine, type LoadPathOptions, type LoadSink } from '../types.js';

/** homid's largest data buffer per queue pair (homid.ts MAX_DATA_BYTES). */
export const DRIVER_MAX_DATA_BYTES = 64 << 20;
/** Files resolved or read at once, per command slot (resolution is a round trip to homid: keep some ahead). */
const FILES_PER_SLOT = 2;
const PAGE = 4096;

export interface DriverPathEngine extends LoadPathEngine {
  readonly path: 'driver';
  /** Commands, extents, bytes, most in flight: what the reader did so far. */
  readonly stats: Readonly<ReadStats>;
  /** The lease the path reads through. */
  readonly lease: { readonly mode: 'raw' | 'mediated'; readonly qid: number; readonly device: string };
  /** The reader (its depth and command size). */
  readonly reader: ExtentReader;
}

function fmtBytes(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n >> 20} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n >> 10} KiB`;
  return `${n} bytes`;
}

/** Bytes of data memory `depth` slots of `slot` bytes need (raw: plus a PRP list page range each). */
function dataBytesFor(depth: number, slot: number, mode: 'raw' | 'mediated'): number {
  const s = Math.ceil(slot / PAGE) * PAGE;
  const lists = mode === 'raw' ? prpListPagesNeeded(0, s, PAGE) * PAGE : 0;
  return Math.min(DRIVER_MAX_DATA_BYTES, depth * (s + lists));
}

/** The device to read through: the one named, else the first live one whose files homid can map. */
function pickDevice(devices: DeviceInfo[], name: string | undefined): DeviceInfo {
  if (name !== undefined) {
    const d = devices.find((x) => x.device === name || x.uri === name);
    if (!d) throw new HomidClientError('no-device', `homid has no device '${name}' (it has: ${devices.map((x) => x.device).join(', ') || 'none'})`);
    if (d.state !== 'live') throw new HomidClientError('device-down', `device '${d.device}' is ${d.state}${d.error ? `: ${d.error}` : ''}`);
    if (d.extents === 'none') throw new HomidClientError('extent-source', `device '${d.device}' has no extent source: homid cannot map files to its blocks`);
    return d;
  }
  const d = devices.find((x) => x.state === 'live' && x.extents !== 'none');
  if (!d)
    throw new HomidClientError('no-device', `homid has no live device with an extent source (devices: ${devices.map((x) => `${x.device} ${x.state}, extents ${x.extents}`).join('; ') || 'none'})`);
  return d;
}

/** Whether `e` (or the state of `client`) means homid is gone for every file. */
function isFatal(e: unknown, client: HomidClient): boolean {
  return client.ipc.isClosed || (e instanceof HomidClientError && e.code === ClientErrorCode.HomidGone);
}

function fileError(f: LoadFile, e: unknown): Error {
  const err = new LoadFileError(f.path, e instanceof Error ? e.message : String(e));
  err.cause = e;
  return err;
}

/**
 * Open the driver path: connect to homid (opts.socket, else $HOMID_SOCKET or the default socket), pick the
 * device (opts.device, else the first live one with an extent source), open one lease (opts.mode, raw by
 * default) of opts.depth commands with read buffers of opts.chunkBytes (at most the controller's largest
 * transfer), and make the reader.
 */
export async function openDriverPath(opts: LoadPathOptions): Promise<DriverPathEngine> {
  const mode = opts.mode ?? 'raw';
  const depth = Math.max(1, Math.floor(opts.depth ?? DEFAULT_DEPTH));
  const chunk = Math.max(PAGE, opts.chunkBytes ?? DEFAULT_CHUNK_BYTES);
  const client = await HomidClient.connect(opts.socket, { client: `homi load (pid ${process.pid})` });
  let lease: Lease | null = null;
  try {
    const dev = pickDevice(await client.listDevices(), opts.device);
    const device = dev.device;
    // the queue holds `depth` commands (capacity = entries - 1)
    let entries = depth + 1;
    const open = async (dataBytes: number): Promise<Lease> => {
      const ask = (n: number) => client.openQueuePairs({ device, depth: n, mode, dataBytes: Math.max(PAGE, dataBytes) });
      try {
        return (await ask(entries))[0]!;
      } catch (e) {
        // a power-of-two depth at the class's or controller's limit: one entry less, one command less in flight
        if (!(e instanceof HomidClientError && e.code === 'bad-depth') || entries - 1 < 2) throw e;
        entries--;
        return (await ask(entries))[0]!;
      }
    };
    // the controller's largest transfer is known once a grant names it: ask for buffers of the chunk size, and
    // ask again, smaller, when they turn out much larger than a command can be
    let asked = dataBytesFor(depth, chunk, mode);
    lease = await open(asked);
    const mdts = lease.grant.maxTransferBytes;
    const slot = Math.min(chunk, mdts > 0 ? mdts : chunk);
    const need = dataBytesFor(depth, slot, mode);
    if (asked > 2 * need && asked - need >= 1 << 20) {
      await client.closeQueuePair(lease);
      lease = null;
      asked = need;
      lease = await open(asked);
    }
    const reader = new ExtentReader(lease, { depth, maxBytes: chunk });
    return engine(client, lease, dev, reader);
  } catch (e) {
    if (lease !== null && !client.ipc.isClosed) await client.closeQueuePair(lease).catch(() => undefined);
    client.close();
    throw e;
  }
}

function engine(client: HomidClient, lease: Lease, dev: DeviceInfo, reader: ExtentReader): DriverPathEngine {
  const device = dev.device;
  const checked = lease.mode === 'mediated' ? ', homid checks every command' : '';
  const describe = `user-space driver via homid (${lease.mode} queue pair ${lease.qid} on ${device}, extents ${dev.extents}${checked}), ${reader.depth} in flight, up to ${fmtBytes(reader.commandBytes)} commands`;
  let adopted = false;
  let closed: Promise<void> | null = null;

  const loadOne = async (f: LoadFile, sink: LoadSink, events: LoadEvents): Promise<void> => {
    let handle: ExtentMapHandle;
    const fd = fs.openSync(f.path, fs.constants.O_RDONLY);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new LoadFileError(f.path, 'not a regular file');
      if (st.dev !== f.dev || st.ino !== f.ino || st.size !== f.size || st.mtimeMs !== f.mtimeMs) {
        throw new HomidClientError(
          ClientErrorCode.FileChanged,
          `file changed since the load was planned (size ${f.size} -> ${st.size}, mtime ${f.mtimeMs} -> ${st.mtimeMs}${st.ino !== f.ino || st.dev !== f.dev ? ', another inode' : ''})`,
        );
      }
      handle = await client.resolveExtents(fd, device);
    } finally {
      fs.closeSync(fd);
    }
    try {
      const size = handle.last.size;
      if (size !== f.size) throw new HomidClientError(ClientErrorCode.FileChanged, `file changed: homid maps ${size} bytes on '${device}', the file has ${f.size}`);
      const index = f.index;
      await reader.read(handle, (off, bytes) => {
        sink.deliver(index, off, bytes);
        events.bytes(bytes.length);
      });
    } finally {
      // give the grant back: a load of many files stays within [limits] file_grants_per_client, and a mediated
      // lease's allowed LBAs stay those of the files in flight
      await client.releaseFile(handle).catch(() => handle.close());
    }
  };

  return {
    path: 'driver',
    describe,
    reader,
    get stats() {
      return reader.stats;
    },
    lease: { mode: lease.mode, qid: lease.qid, device },

    async run(files: readonly LoadFile[], sink: LoadSink, events: LoadEvents): Promise<void> {
      if (closed) throw new Error('the driver path is closed');
      if (!adopted) {
        sink.adoptStaging(reader.staging);
        adopted = true;
      }
      let next = 0;
      let fatal: Error | null = null;
      // Files between their resolve and their release. When homid refuses a resolve because this connection holds
      // its [limits] file_grants_per_client, the file waits for one in flight to finish and tries again; with
      // none in flight the refusal stands.
      let inFlight = 0;
      let waiters: (() => void)[] = [];
      const finished = (): void => {
        inFlight--;
        const w = waiters;
        waiters = [];
        for (const wake of w) wake();
      };
      const loadWithinLimit = async (f: LoadFile): Promise<void> => {
        for (;;) {
          inFlight++;
          try {
            await loadOne(f, sink, events);
            return;
          } catch (e) {
            if (!(e instanceof HomidClientError && e.code === HomidErrorCode.LimitFileGrants) || inFlight <= 1) throw e;
          } finally {
            finished();
          }
          if (inFlight > 0) await new Promise<void>((r) => waiters.push(r));
        }
      };
      const worker = async (): Promise<void> => {
        while (fatal === null && next < files.length) {
          const f = files[next++]!;
          events.fileStart(f.index);
          try {
            await loadWithinLimit(f);
            events.fileDone(f.index, null);
          } catch (e) {
            if (isFatal(e, client)) {
              fatal ??=
                e instanceof HomidClientError && e.code === ClientErrorCode.HomidGone ? e : new HomidClientError(ClientErrorCode.HomidGone, `the connection to homid closed: ${(e as Error).message}`);
            }
            events.fileDone(f.index, fileError(f, e));
          }
        }
      };
      const workers = Math.max(1, Math.min(files.length, reader.depth * FILES_PER_SLOT));
      await Promise.all(Array.from({ length: workers }, worker));
      if (fatal !== null) throw fatal;
    },

    close(): Promise<void> {
      closed ??= (async () => {
        reader.close();
        try {
          if (!client.ipc.isClosed) await client.closeQueuePair(lease);
        } catch {
          // homid is gone or already took the lease back: closing the connection below is all that is left
        } finally {
          client.close();
        }
      })();
      return closed;
    },
  };
}
