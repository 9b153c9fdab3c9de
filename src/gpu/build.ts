/**
 * `npm run build:gpu`: rebuild the committed PTX of every module in src/gpu/kernels/ from its CUDA source,
 * with nvcc where it is on PATH (or NVCC names it), else NVRTC, and record the hashes in manifest.json.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { nvrtcCompile, nvrtcVersion } from '../sys/nvrtc.js';
import { KERNEL_DIR, MODULES, PTX_ARCH, sha256, sourceHash, type Manifest, type ModuleName } from './kernels.js';

function nvccVersion(nvcc: string): string | null {
  try {
    const out = execFileSync(nvcc, ['--version'], { encoding: 'utf8' });
    return /release [\d.]+, V([\d.]+)/.exec(out)?.[1] ?? 'unknown';
  } catch {
    return null;
  }
}

/** Build every module; returns the manifest written. */
export function buildGpu(dir = KERNEL_DIR, log: (line: string) => void = console.log): Manifest {
  const nvcc = process.env['NVCC'] ?? 'nvcc';
  const v = nvccVersion(nvcc);
  const compiler = v !== null ? `nvcc ${v}` : `nvrtc ${nvrtcVersion()}`;
  const modules = {} as Manifest['modules'];
  for (const name of Object.keys(MODULES) as ModuleName[]) {
    const m = MODULES[name];
    let ptx: string;
    if (v !== null) {
      execFileSync(nvcc, ['-ptx', `-arch=${PTX_ARCH}`, '-o', `${dir}${m.ptx}`, `${dir}${m.source}`], { stdio: 'inherit' });
      ptx = readFileSync(`${dir}${m.ptx}`, 'utf8');
    } else {
      const headers = Object.fromEntries(m.headers.map((h) => [h, readFileSync(`${dir}${h}`, 'utf8')]));
      ptx = nvrtcCompile(m.source, readFileSync(`${dir}${m.source}`, 'utf8'), headers, [`--gpu-architecture=${PTX_ARCH}`]);
      writeFileSync(`${dir}${m.ptx}`, ptx);
    }
    modules[name] = { source: m.source, headers: [...m.headers], sourceSha256: sourceHash(name, dir), ptx: m.ptx, ptxSha256: sha256(ptx) };
    log(`${m.source} -> ${m.ptx} (${compiler}, ${ptx.length} bytes)`);
  }
  const manifest: Manifest = { compiler, arch: PTX_ARCH, modules };
  writeFileSync(`${dir}manifest.json`, `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

if (import.meta.url === `file://${process.argv[1]}`) buildGpu();
