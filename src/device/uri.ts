/**
 * Device URIs. Today: the embedded controller.
 *   emu://?size=1GiB                      memory-backed, one namespace of 1 GiB
 *   emu:///path/file.img?size=1GiB        file-backed (relative paths too: emu://disk.img)
 *   parameters: size (per namespace, default 1GiB), namespaces=N (default 1), lbads=9|12 (default 12),
 *               null=1 (null mode), queues=N (max I/O queue pairs, default 64), model=, serial=
 *   Memory namespaces are sparse (RAM is taken by what is written), up to 64 TiB each.
 * PCIe: pci:0000:01:00.0[?mode=uio|vfio|auto] (the user-space PCIe transport; default mode auto).
 * Every error names the bad part of the URI; an unknown or repeated parameter is refused.
 */
import { MAX_MEMORY_NAMESPACE_BYTES } from '../emu/config.js';
import { queryKeyProblem } from '../util/query.js';
import { parseSize, parsePositiveInt, formatSize } from '../util/size.js';

export class UriError extends Error {
  constructor(uri: string, what: string) {
    super(`invalid device URI '${uri}': ${what}`);
    this.name = 'UriError';
  }
}

export interface EmuUri {
  kind: 'emu';
  uri: string;
  /** File path for file-backed namespaces, or null for memory / null mode. */
  file: string | null;
  nullMode: boolean;
  namespaceSize: number;
  namespaces: number;
  lbads: 9 | 12;
  maxQueuePairs: number;
  model?: string;
  serial?: string;
}

export interface PciUri {
  kind: 'pci';
  uri: string;
  /** Domain:bus:device.function, e.g. 0000:01:00.0 */
  address: string;
  /** uio_pci_generic, vfio-pci, or auto (vfio when an IOMMU group and vfio-pci exist). Default auto. */
  mode: 'uio' | 'vfio' | 'auto';
}

export type DeviceUri = EmuUri | PciUri;

const EMU_PARAMS = ['size', 'namespaces', 'lbads', 'null', 'queues', 'model', 'serial'] as const;
const PCI_PARAMS = ['mode'] as const;
export const DEFAULT_EMU_SIZE = 1024 ** 3;
const MAX_EMU_NAMESPACES = 64;
const MAX_EMU_QUEUE_PAIRS = 1024;
const PCI_ADDRESS = /^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/;

export function parseDeviceUri(uri: string): DeviceUri {
  if (uri.startsWith('pci:')) {
    const rest = uri.slice(4).replace(/^\/\//, '');
    const q = rest.indexOf('?');
    const address = q < 0 ? rest : rest.slice(0, q);
    if (!PCI_ADDRESS.test(address)) throw new UriError(uri, `'${address}' is not a PCI address like 0000:01:00.0`);
    const params = new URLSearchParams(q < 0 ? '' : rest.slice(q + 1));
    const problem = queryKeyProblem(params, PCI_PARAMS);
    if (problem !== null) throw new UriError(uri, problem);
    const mode = params.get('mode') ?? 'auto';
    if (mode !== 'uio' && mode !== 'vfio' && mode !== 'auto') throw new UriError(uri, `mode: '${mode}' must be uio, vfio or auto`);
    return { kind: 'pci', uri, address: address.toLowerCase(), mode };
  }
  if (!uri.startsWith('emu://')) {
    const scheme = /^([a-z0-9+.-]+):/i.exec(uri)?.[1];
    throw new UriError(uri, scheme ? `unknown scheme '${scheme}:' (use emu:// or pci:)` : 'missing scheme (use emu://?size=1GiB or pci:0000:01:00.0)');
  }
  const rest = uri.slice('emu://'.length);
  const q = rest.indexOf('?');
  const path = decodeURIComponent(q < 0 ? rest : rest.slice(0, q));
  const params = new URLSearchParams(q < 0 ? '' : rest.slice(q + 1));
  const problem = queryKeyProblem(params, EMU_PARAMS);
  if (problem !== null) throw new UriError(uri, problem);
  const get = (k: string): string | null => params.get(k);
  const wrap = <T>(k: string, f: () => T): T => {
    try {
      return f();
    } catch (e) {
      throw new UriError(uri, `${k}: ${(e as Error).message}`);
    }
  };
  const lbadsText = get('lbads') ?? '12';
  if (lbadsText !== '9' && lbadsText !== '12') throw new UriError(uri, `lbads: '${lbadsText}' must be 9 (512 B) or 12 (4 KiB)`);
  const lbads = Number(lbadsText) as 9 | 12;
  const namespaceSize = wrap('size', () => parseSize(get('size') ?? String(DEFAULT_EMU_SIZE)));
  const blockSize = 1 << lbads;
  if (namespaceSize < blockSize || namespaceSize % blockSize !== 0) {
    throw new UriError(uri, `size: ${namespaceSize} bytes is not a positive multiple of the ${blockSize}-byte block size`);
  }
  const nullText = get('null') ?? '0';
  if (nullText !== '0' && nullText !== '1') throw new UriError(uri, `null: '${nullText}' must be 0 or 1`);
  const nullMode = nullText === '1';
  const file = path === '' || path === '/' ? null : path;
  if (nullMode && file) throw new UriError(uri, 'null=1 cannot be combined with a backing file');
  if (!nullMode && file === null && namespaceSize > MAX_MEMORY_NAMESPACE_BYTES) {
    throw new UriError(uri, `size: ${formatSize(namespaceSize)} is above the ${formatSize(MAX_MEMORY_NAMESPACE_BYTES)} a memory namespace holds (use a backing file or null=1)`);
  }
  const out: EmuUri = {
    kind: 'emu',
    uri,
    file,
    nullMode,
    namespaceSize,
    namespaces: wrap('namespaces', () => parsePositiveInt('namespaces', get('namespaces') ?? '1', MAX_EMU_NAMESPACES)),
    lbads,
    maxQueuePairs: wrap('queues', () => parsePositiveInt('queues', get('queues') ?? '64', MAX_EMU_QUEUE_PAIRS)),
  };
  const model = get('model');
  const serial = get('serial');
  if (model !== null) out.model = model;
  if (serial !== null) out.serial = serial;
  return out;
}
