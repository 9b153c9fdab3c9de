// The --nvme and --ivshmem arguments of the VM harness's command line.
import type { IvshmemSpec, NvmeDeviceSpec, NvmeNamespaceSpec } from './spec.js';

export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([MG]?)(i?B)?$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  const n = Number(m[1]);
  return m[2].toUpperCase() === 'G' ? n * 1024 : n;
}

export function parseNvmeSpec(spec: string, index: number): NvmeDeviceSpec {
  const d: NvmeDeviceSpec = { serial: `HOMI${index}` };
  let vfs: number | undefined;
  let vq = 0;
  let vi = 0;
  let image: string | undefined;
  let shared = false;
  for (const kv of spec.split(',').filter((s) => s.length > 0)) {
    const eq = kv.indexOf('=');
    if (eq < 0) throw new Error(`--nvme: expected key=value, got ${kv}`);
    const k = kv.slice(0, eq);
    const v = kv.slice(eq + 1);
    const int = (): number => {
      if (!/^\d+$/.test(v)) throw new Error(`--nvme: ${k} needs an integer, got ${v}`);
      return Number(v);
    };
    switch (k) {
      case 'serial':
        d.serial = v;
        break;
      case 'ns':
        d.namespaces =
          v === '0'
            ? []
            : v.split('+').map((n): NvmeNamespaceSpec => {
                const [size, lbs, pbs] = n.split(':');
                const ns: NvmeNamespaceSpec = { sizeMiB: parseSize(size) };
                if (lbs) {
                  if (lbs !== '512' && lbs !== '4096') throw new Error(`--nvme: block size must be 512 or 4096, got ${lbs}`);
                  ns.logicalBlockSize = Number(lbs) as 512 | 4096;
                }
                if (pbs) ns.physicalBlockSize = Number(pbs);
                return ns;
              });
        break;
      case 'qpairs':
        d.maxIoQueuePairs = int();
        break;
      case 'msix':
        d.msixQsize = int();
        break;
      case 'mdts':
        d.mdts = int();
        break;
      case 'subsys':
        d.subsystem = v;
        break;
      case 'vfs':
        vfs = int();
        break;
      case 'vq':
        vq = int();
        break;
      case 'vi':
        vi = int();
        break;
      case 'image':
        image = v;
        break;
      case 'shared':
        if (v !== '0' && v !== '1') throw new Error(`--nvme: shared must be 0 or 1, got ${v}`);
        shared = v === '1';
        break;
      case 'cmb':
        d.cmbMiB = int();
        break;
      case 'legacycmb':
        if (v !== '0' && v !== '1') throw new Error(`--nvme: legacycmb must be 0 or 1, got ${v}`);
        d.legacyCmb = v === '1';
        break;
      case 'switch':
        d.pcieSwitch = v;
        break;
      default:
        throw new Error(`--nvme: unknown key ${k}`);
    }
  }
  if (vfs !== undefined) d.sriov = { maxVfs: vfs, vqFlexible: vq, viFlexible: vi };
  if (shared) d.namespaces = (d.namespaces && d.namespaces.length > 0 ? d.namespaces : [{}]).map((n) => ({ ...n, shared: true }));
  if (image) {
    const nss = d.namespaces && d.namespaces.length > 0 ? d.namespaces : [{}];
    nss[0] = { ...nss[0], image };
    d.namespaces = nss;
  }
  return d;
}

/** `--ivshmem ID:SIZE[:FILE]` (SIZE in MiB with an optional M suffix). */
export function parseIvshmemArg(v: string): IvshmemSpec {
  const m = /^([A-Za-z][A-Za-z0-9_-]*):(\d+)[Mm]?(?::(\/.+))?$/.exec(v);
  if (!m) throw new Error(`--ivshmem needs ID:SIZE[:FILE] (SIZE in MiB, FILE an absolute path), got ${v}`);
  return { id: m[1]!, sizeMiB: Number(m[2]), ...(m[3] !== undefined ? { file: m[3] } : {}) };
}
