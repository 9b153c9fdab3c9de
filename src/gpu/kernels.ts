/**
 * The CUDA modules HOMI ships: their sources and the PTX built from them (both in src/gpu/kernels/, the PTX
 * committed so that running needs no compiler), the manifest recording which source each PTX was built from,
 * and every kernel's parameter list as its TypeScript launcher passes it. test/gpu/kernels.test.ts checks the
 * manifest hashes, and each kernel's `.entry` parameters in the PTX against the list here.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { HomiCtrlJob, HomiGpuJob, HomiListJob, type Layout } from './layout.js';

/** The folder holding the .cu, .cuh and .ptx files and manifest.json (in the package, beside dist/). */
export const KERNEL_DIR = fileURLToPath(new URL('../../../src/gpu/kernels/', import.meta.url));
/** PTX target: compute capability 9.0 (Hopper); the driver JIT-compiles it for the GPU at load. */
export const PTX_ARCH = 'compute_90';

/** One kernel parameter: a struct passed by value (its layout) or a scalar. */
export type KernelParam = { name: string; layout: Layout<string> } | { name: string; scalar: 'u32' | 'u64' };

export interface KernelSpec {
  readonly module: ModuleName;
  readonly name: string;
  readonly params: readonly KernelParam[];
}

export const MODULES = {
  initiator: { source: 'initiator.cu', headers: ['nvme_queue.cuh'], ptx: 'initiator.ptx' },
  gpu_controller: { source: 'gpu_controller.cu', headers: ['nvme_queue.cuh'], ptx: 'gpu_controller.ptx' },
} as const;
export type ModuleName = keyof typeof MODULES;

export const KERNELS = {
  blockIo: { module: 'initiator', name: 'homi_block_io', params: [{ name: 'job', layout: HomiGpuJob }] },
  ticketIo: { module: 'initiator', name: 'homi_ticket_io', params: [{ name: 'job', layout: HomiGpuJob }] },
  listIo: { module: 'initiator', name: 'homi_list_io', params: [{ name: 'job', layout: HomiListJob }] },
  controller: { module: 'gpu_controller', name: 'homi_gpu_controller', params: [{ name: 'job', layout: HomiCtrlJob }] },
} as const satisfies Record<string, KernelSpec>;
export type KernelName = keyof typeof KERNELS;

/** Bytes of one parameter (and its alignment, as PTX declares it). */
export function paramBytes(p: KernelParam): number {
  if ('layout' in p) return p.layout.bytes;
  return p.scalar === 'u32' ? 4 : 8;
}

export interface ModuleManifest {
  source: string;
  headers: string[];
  /** sha256 over the source and then each header, in order. */
  sourceSha256: string;
  ptx: string;
  ptxSha256: string;
}
export interface Manifest {
  compiler: string;
  arch: string;
  modules: Record<ModuleName, ModuleManifest>;
}

export function readManifest(dir = KERNEL_DIR): Manifest {
  return JSON.parse(readFileSync(`${dir}manifest.json`, 'utf8')) as Manifest;
}

/** sha256 over a module's source and headers as they are on disk now. */
export function sourceHash(name: ModuleName, dir = KERNEL_DIR): string {
  const m = MODULES[name];
  const h = createHash('sha256');
  for (const f of [m.source, ...m.headers]) h.update(readFileSync(`${dir}${f}`));
  return h.digest('hex');
}

export function sha256(text: string | Uint8Array): string {
  return createHash('sha256').update(text).digest('hex');
}

/** A module's committed PTX, checked against the manifest (a PTX edited by hand, or stale, is refused). */
export function loadPtx(name: ModuleName, dir = KERNEL_DIR): string {
  const m = readManifest(dir).modules[name];
  const ptx = readFileSync(`${dir}${MODULES[name].ptx}`, 'utf8');
  if (m === undefined) throw new Error(`src/gpu/kernels/manifest.json has no module '${name}': run npm run build:gpu`);
  if (sha256(ptx) !== m.ptxSha256) throw new Error(`${MODULES[name].ptx} does not match manifest.json: run npm run build:gpu`);
  return ptx;
}

/** The `.entry` parameter lists of a PTX text: kernel name -> [{ bytes, align }]. */
export function ptxEntries(ptx: string): Map<string, Array<{ bytes: number; align: number }>> {
  const out = new Map<string, Array<{ bytes: number; align: number }>>();
  const entry = /\.entry\s+(\w+)\s*\(([^)]*)\)/g;
  for (let m = entry.exec(ptx); m !== null; m = entry.exec(ptx)) {
    const params: Array<{ bytes: number; align: number }> = [];
    for (const line of m[2]!.split(',')) {
      const t = line.trim();
      if (t === '') continue;
      const agg = /^\.param\s+\.align\s+(\d+)\s+\.b8\s+\w+\[(\d+)\]$/.exec(t);
      const sc = /^\.param\s+\.(u|s|b)(32|64)\s+\w+$/.exec(t);
      if (agg !== null) params.push({ bytes: Number(agg[2]), align: Number(agg[1]) });
      else if (sc !== null) params.push({ bytes: Number(sc[2]) / 8, align: Number(sc[2]) / 8 });
      else throw new Error(`unparsed PTX parameter of ${m[1]}: ${t}`);
    }
    out.set(m[1]!, params);
  }
  return out;
}
