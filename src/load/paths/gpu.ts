/**
 * The gpu path: GPU-initiated reads. homid grants GPU queue pairs on its device and resolves each file's extents;
 * the host turns extents into a list of reads (extent-plan.ts) with each read's destination (the file's slot in
 * GPU memory, or in the pinned host arena registered with the GPU), and one launch of homi_list_io per batch of
 * files has GPU threads build the commands, ring the doorbells, poll the completions and copy each read's bytes
 * from its queue slot to the destination. While a batch runs on the GPU, the host resolves the next one.
 *
 * Per file: every read completed with status 0 and the extent map did not move (the file did not change) -> done,
 * with its latency from the GPU's %globaltimer (first submission to last copy of the file); else the first bad
 * status, in words.
 */
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { HomidClient, type ExtentMapHandle } from '../../client/index.js';
import { GpuDevice, gpuEvents, type DeviceBuffer } from '../../gpu/device.js';
import { openHomidTarget } from '../../gpu/homid.js';
import { HomiGpuResult, HomiListCmd, HomiListJob, LIST_NOT_RUN, LIST_TIMEOUT, encode } from '../../gpu/layout.js';
import { statusName } from '../../nvme/status.js';
import { planReads, type PlannedRead } from '../extent-plan.js';
import { GpuSink } from '../gpu-sink.js';
import { HostSink } from '../host-sink.js';
import type { LoadEvents, LoadFile, LoadPathEngine, LoadPathOptions, LoadSink } from '../types.js';

/** Largest read of the gpu path (a queue slot). */
export const GPU_SLOT_BYTES = 128 * 1024;
/** GPU queue pairs (one thread block each). */
export const GPU_DEFAULT_QUEUES = 4;
/** Files resolved and launched together. */
export const GPU_BATCH_FILES = 256;
/** homid resolves of one batch in flight at once. */
const RESOLVES_IN_FLIGHT = 64;
/** Deadline of one wait of a GPU thread. */
const WAIT_TIMEOUT_MS = 10_000;

export interface GpuPathOptions extends LoadPathOptions {
  /** GPU queue pairs (thread blocks); default 4. */
  queues?: number;
}

interface Batch {
  files: LoadFile[];
  /** Per file of the batch: its commands [first, first + count) in the batch's list. */
  first: number[];
  count: number[];
  maps: (ExtentMapHandle | null)[];
  cmds: Uint8Array;
  ncmds: number;
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

export async function openGpuPath(opts: GpuPathOptions): Promise<LoadPathEngine> {
  const device = opts.device;
  if (!device) throw new Error('the gpu path reads through homid: name the device (--device)');
  const threads = Math.max(1, Math.min(512, opts.depth));
  const nqueues = Math.max(1, opts.queues ?? GPU_DEFAULT_QUEUES);
  const entries = nextPow2(threads * 2);
  const slotBytes = Math.min(GPU_SLOT_BYTES, opts.chunkBytes);
  let describe = `GPU-initiated (homi_list_io): ${nqueues} GPU queue pair(s) from homid on '${device}' x ${threads} GPU threads, reads up to ${slotBytes / 1024} KiB; extents from homid`;
  type Target = Awaited<ReturnType<typeof openHomidTarget>>;
  interface Setup {
    sink: LoadSink;
    gpu: GpuDevice;
    ownGpu: boolean;
    client: HomidClient;
    target: Target | null;
    hostReg: { dptr: number; unregister: () => void } | null;
  }
  let setup: Setup | null = null;
  const teardown = async (): Promise<void> => {
    const st = setup;
    setup = null;
    if (!st) return;
    try {
      if (st.target) await st.target.close();
    } finally {
      st.client.close();
      st.hostReg?.unregister();
      if (st.ownGpu) st.gpu.close();
    }
  };
  /** Everything before the first read: the GPU, homid's GPU queue pairs, the host arena's registration, the module. */
  const prepare = async (sink: LoadSink): Promise<Setup> => {
    if (setup && setup.sink === sink) return setup;
    await teardown();
    if (!(sink instanceof GpuSink) && !(sink instanceof HostSink)) throw new Error('the gpu path writes into a GpuSink or a HostSink');
    const ownGpu = !(sink instanceof GpuSink);
    const gpu = sink instanceof GpuSink ? sink.gpu : GpuDevice.open(0);
    let client: HomidClient | null = null;
    const st: Setup = { sink, gpu, ownGpu, client: null as unknown as HomidClient, target: null, hostReg: null };
    try {
      client = await HomidClient.connect(opts.socket, { client: 'homi load (gpu)' });
      st.client = client;
      if (sink instanceof HostSink) st.hostReg = gpu.registerHost(sink.address, sink.bytesTotal);
      st.target = await openHomidTarget(gpu, client, { device, nqueues, entries, bs: slotBytes, write: false });
      gpu.preload();
    } catch (e) {
      if (st.target) await st.target.close().catch(() => undefined);
      client?.close();
      st.hostReg?.unregister();
      if (ownGpu) gpu.close();
      throw e;
    }
    setup = st;
    return st;
  };
  return {
    path: 'gpu',
    get describe() {
      return describe;
    },
    async prepare(_files: readonly LoadFile[], sink: LoadSink): Promise<void> {
      await prepare(sink);
    },
    async run(files: readonly LoadFile[], sink: LoadSink, events: LoadEvents): Promise<void> {
      const { gpu, client, hostReg } = await prepare(sink);
      const target = setup!.target!;
      const cmdBufs: DeviceBuffer[] = [];
      try {
        const dst = (f: LoadFile): number => (sink instanceof GpuSink ? Number(sink.deviceAddress(f.index)) : hostReg!.dptr + (sink as HostSink).offsetOf(f.index));
        const bs = target.blockSize;
        const maxRead = Math.floor(slotBytes / bs) * bs;
        describe = `GPU-initiated (homi_list_io on ${gpu.info.name}): ${target.nqueues} GPU queue pair(s) from homid on '${device}'${target.leases[0]!.busyPoll ? ' (controller held awake)' : ''} x ${threads} GPU threads, reads up to ${maxRead / 1024} KiB into host-pinned queue slots, copied by the GPU to ${sink.target === 'gpu' ? 'GPU memory' : 'the pinned host arena'}; extents from homid`;
        const res = gpu.scratch('list-result', HomiGpuResult.bytes);

        /** Resolve one file through homid and plan its reads; null (and fileDone with the error) when it fails. */
        const resolveOne = async (f: LoadFile): Promise<{ map: ExtentMapHandle; reads: PlannedRead[] } | null> => {
          let map: ExtentMapHandle | null = null;
          try {
            const fd = fs.openSync(f.path, 'r');
            try {
              map = await client.resolveExtents(fd, device);
            } finally {
              fs.closeSync(fd);
            }
            let snap = map.read();
            for (let i = 0; snap === null && i < 200; i++) {
              await sleep(5);
              snap = map.read();
            }
            if (snap === null) throw new Error('the extent map stayed busy (homid kept rebuilding it)');
            if (snap.size !== f.size) throw new Error(`the file changed before the load (size ${f.size} -> ${snap.size})`);
            return { map, reads: planReads(f.size, snap.extents, bs, maxRead, target.blocks) };
          } catch (e) {
            if (map) await client.releaseFile(map).catch(() => map!.close());
            events.fileDone(f.index, e as Error);
            return null;
          }
        };
        const prepareBatch = async (batchFiles: LoadFile[]): Promise<Batch> => {
          const b: Batch = { files: batchFiles, first: [], count: [], maps: [], cmds: new Uint8Array(0), ncmds: 0 };
          // resolves overlap (homid serves them on its resolver threads): up to RESOLVES_IN_FLIGHT at a time
          const resolved: ({ map: ExtentMapHandle; reads: PlannedRead[] } | null)[] = new Array(batchFiles.length).fill(null);
          let nextFile = 0;
          const worker = async (): Promise<void> => {
            while (nextFile < batchFiles.length) {
              const i = nextFile++;
              events.fileStart(batchFiles[i]!.index);
              resolved[i] = await resolveOne(batchFiles[i]!);
            }
          };
          await Promise.all(Array.from({ length: Math.min(RESOLVES_IN_FLIGHT, batchFiles.length) }, worker));
          const reads: { file: LoadFile; slba: number; nlb: number; dst: number; bytes: number }[] = [];
          batchFiles.forEach((f, i) => {
            const r = resolved[i] ?? null;
            b.first.push(reads.length);
            b.maps.push(r?.map ?? null);
            if (r) for (const p of r.reads) reads.push({ file: f, slba: p.slba, nlb: p.nlb, dst: dst(f) + p.fileOffset, bytes: p.bytes });
            b.count.push(reads.length - b.first[i]!);
          });
          b.ncmds = reads.length;
          b.cmds = new Uint8Array(Math.max(1, reads.length) * HomiListCmd.bytes);
          reads.forEach((r, i) => encode(HomiListCmd, { slba: r.slba, dst: r.dst, nlb: r.nlb, bytes: r.bytes, file: r.file.index, status: LIST_NOT_RUN }, b.cmds, i * HomiListCmd.bytes));
          return b;
        };

        const launch = (b: Batch, slot: number): { done: () => boolean; buf: DeviceBuffer } => {
          if (!cmdBufs[slot] || cmdBufs[slot]!.bytes < b.cmds.length) {
            cmdBufs[slot]?.free();
            cmdBufs[slot] = gpu.alloc(Math.max(b.cmds.length, 64 * 1024));
          }
          const buf = cmdBufs[slot]!;
          gpu.copyToDevice(buf.dptr, b.cmds);
          const stream = gpu.launchStream();
          const end = gpu.event(false);
          if (b.ncmds > 0) {
            const job = encode(HomiListJob, {
              queues: target!.table,
              result: res.dptr,
              cmds: buf.dptr,
              timeout_cycles: Math.round(WAIT_TIMEOUT_MS * gpu.info.clockKhz),
              nqueues: target!.nqueues,
              ncmds: b.ncmds,
            });
            gpu.launch('listIo', target!.nqueues, threads, stream, [job]);
          }
          gpuEvents.record(end, stream);
          return { done: () => gpuEvents.query(end), buf };
        };

        const releases: Promise<void>[] = [];
        const finish = (b: Batch, buf: DeviceBuffer): void => {
          const back = b.ncmds > 0 ? gpu.copyFromDevice(buf.dptr, b.ncmds * HomiListCmd.bytes) : new Uint8Array(0);
          const dv = new DataView(back.buffer, back.byteOffset, back.byteLength);
          const u64 = (i: number, off: number): number => Number(dv.getBigUint64(i * HomiListCmd.bytes + off, true));
          const u32 = (i: number, off: number): number => dv.getUint32(i * HomiListCmd.bytes + off, true);
          const F = HomiListCmd.fields;
          b.files.forEach((f, k) => {
            const map = b.maps[k];
            if (map === null || map === undefined) return; // failed while preparing
            let error: Error | null = null;
            let t0 = Infinity;
            let t1 = 0;
            let bytes = 0;
            for (let i = b.first[k]!; i < b.first[k]! + b.count[k]!; i++) {
              const st = u32(i, F.status.offset);
              if (st !== 0) {
                const lba = u64(i, F.slba.offset);
                const why =
                  st === LIST_NOT_RUN
                    ? 'never ran (its GPU queue pair broke earlier)'
                    : st === LIST_TIMEOUT
                      ? `timed out after ${WAIT_TIMEOUT_MS / 1000} s`
                      : `failed: ${statusName(st)} (status 0x${st.toString(16)})`;
                error = new Error(`GPU read of LBA ${lba} ${why}`);
                break;
              }
              t0 = Math.min(t0, u64(i, F.start_ns.offset));
              t1 = Math.max(t1, u64(i, F.end_ns.offset));
              bytes += u32(i, F.bytes.offset);
            }
            if (error === null && map.changed) error = new Error('the file changed during the load (homid moved its extent map)');
            releases.push(client.releaseFile(map).catch(() => map.close()));
            if (error === null) events.bytes(bytes);
            events.fileDone(f.index, error, error === null && b.count[k]! > 0 ? (t1 - t0) / 1e6 : undefined);
          });
        };

        let pending: { b: Batch; h: ReturnType<typeof launch> } | null = null;
        let slot = 0;
        for (let at = 0; at < files.length || pending !== null; at += GPU_BATCH_FILES) {
          const next = at < files.length ? await prepareBatch(files.slice(at, at + GPU_BATCH_FILES)) : null;
          if (pending) {
            while (!pending.h.done()) await sleep(0);
            finish(pending.b, pending.h.buf);
            pending = null;
          }
          if (next) {
            pending = { b: next, h: launch(next, slot) };
            slot ^= 1;
          }
        }
        await Promise.all(releases);
        if (target.broken()) throw new Error('a GPU queue pair broke (a wait timed out): the controller stopped serving it');
      } finally {
        for (const b of cmdBufs) b?.free();
        await teardown();
      }
    },
    async close() {
      await teardown();
    },
  };
}
