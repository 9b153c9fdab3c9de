/**
 * `homi identify <uri|/dev/nvmeX> [--json]`: what Identify reports of a controller and its active namespaces,
 * with nvme-cli's field names (`nvme id-ctrl`, `nvme id-ns`): every field src/nvme/identify*.ts decodes, and
 * the LBA format list. On a URI the user-space driver brings the controller up; on /dev/nvmeX the commands go
 * through the kernel's admin passthrough.
 */
import { maxTransferBytes, type IdentifyController, type IdentifyNamespace } from '../nvme/identify.js';
import { formatSize } from '../util/size.js';
import { renderFields, renderTable } from '../util/table.js';
import { withAdminTarget, type AdminTarget } from './admin-target.js';

/** How a field prints in the table: hexadecimal (with its digit count), decimal, or text. */
type FieldFormat = { hex: number } | 'dec' | 'str';

/**
 * Every Identify Controller field, in the data structure's order, with nvme-cli's name (the decoder's) and its
 * format in nvme-cli's `id-ctrl` output. The test checks that it covers every field the decoder returns.
 */
export const ID_CTRL_FIELDS: ReadonlyArray<readonly [keyof IdentifyController, FieldFormat]> = [
  ['vid', { hex: 4 }],
  ['ssvid', { hex: 4 }],
  ['sn', 'str'],
  ['mn', 'str'],
  ['fr', 'str'],
  ['rab', 'dec'],
  ['ieee', { hex: 6 }],
  ['cmic', { hex: 1 }],
  ['mdts', 'dec'],
  ['cntlid', { hex: 1 }],
  ['ver', { hex: 1 }],
  ['rtd3r', { hex: 1 }],
  ['rtd3e', { hex: 1 }],
  ['oaes', { hex: 1 }],
  ['ctratt', { hex: 1 }],
  ['cntrltype', 'dec'],
  ['oacs', { hex: 1 }],
  ['acl', 'dec'],
  ['aerl', 'dec'],
  ['frmw', { hex: 1 }],
  ['lpa', { hex: 1 }],
  ['elpe', 'dec'],
  ['npss', 'dec'],
  ['avscc', { hex: 1 }],
  ['apsta', { hex: 1 }],
  ['wctemp', 'dec'],
  ['cctemp', 'dec'],
  ['tnvmcap', 'dec'],
  ['unvmcap', 'dec'],
  ['kas', 'dec'],
  ['sqes', { hex: 1 }],
  ['cqes', { hex: 1 }],
  ['maxcmd', 'dec'],
  ['nn', 'dec'],
  ['oncs', { hex: 1 }],
  ['fuses', { hex: 1 }],
  ['fna', { hex: 1 }],
  ['vwc', { hex: 1 }],
  ['awun', 'dec'],
  ['awupf', 'dec'],
  ['acwu', 'dec'],
  ['sgls', { hex: 1 }],
  ['mnan', 'dec'],
  ['subnqn', 'str'],
];

/** nvme-cli's `id-ns` fields HOMI decodes (the byte arrays as hex strings, the formats as `lbafs`). */
export type IdNsFields = Pick<IdentifyNamespace, 'nsze' | 'ncap' | 'nuse' | 'nsfeat' | 'nlbaf' | 'flbas' | 'mc' | 'dpc' | 'dps' | 'nmic'> & {
  nguid: string;
  eui64: string;
  /** ms: metadata bytes; ds: log2 of the data size (LBADS); rp: relative performance. */
  lbafs: Array<{ ms: number; ds: number; rp: number }>;
};

const ID_NS_FIELDS: ReadonlyArray<readonly [Exclude<keyof IdNsFields, 'lbafs'>, FieldFormat]> = [
  ['nsze', { hex: 1 }],
  ['ncap', { hex: 1 }],
  ['nuse', { hex: 1 }],
  ['nsfeat', { hex: 1 }],
  ['nlbaf', 'dec'],
  ['flbas', { hex: 1 }],
  ['mc', { hex: 1 }],
  ['dpc', { hex: 1 }],
  ['dps', { hex: 1 }],
  ['nmic', { hex: 1 }],
  ['nguid', 'str'],
  ['eui64', 'str'],
];

export interface IdentifyReport {
  controller: {
    vid: number;
    ssvid: number;
    model: string;
    serial: string;
    firmware: string;
    cntlid: number;
    /** NVMe version (the VS register, else Identify's VER), or null when the controller reports none. */
    version: string | null;
    /** I/O queue pairs granted (Number of Queues). */
    maxQueuePairs: number | null;
    /** CAP.MQES + 1; null through the kernel (CAP is a register it keeps to itself). */
    maxQueueEntries: number | null;
    /** Largest transfer (MDTS x CAP.MPSMIN); null when unlimited (MDTS 0) or when CAP.MPSMIN is not visible. */
    mdtsBytes: number | null;
    /** The transport's kind (emu, pcie-vfio, pcie-uio), or `kernel` for the kernel's admin passthrough. */
    transport: string;
  };
  /** Every decoded Identify Controller field, by nvme-cli's names. */
  idCtrl: IdentifyController;
  namespaces: Array<{
    nsid: number;
    blockSize: number;
    blocks: number;
    capacityBytes: number;
    metadataSize: number;
    /** The LBA format in use (FLBAS). */
    formatIndex: number;
    idNs: IdNsFields;
  }>;
}

const hexBytes = (b: Uint8Array): string => Buffer.from(b).toString('hex');

export function idNsFields(ns: IdentifyNamespace): IdNsFields {
  return {
    nsze: ns.nsze,
    ncap: ns.ncap,
    nuse: ns.nuse,
    nsfeat: ns.nsfeat,
    nlbaf: ns.nlbaf,
    flbas: ns.flbas,
    mc: ns.mc,
    dpc: ns.dpc,
    dps: ns.dps,
    nmic: ns.nmic,
    nguid: hexBytes(ns.nguid),
    eui64: hexBytes(ns.eui64),
    lbafs: ns.lbaFormats.map((f) => ({ ms: f.ms, ds: f.lbads, rp: f.rp })),
  };
}

/** VER (Identify Controller): major 31:16, minor 15:8, tertiary 7:0; 0 (unreported) before NVMe 1.2. */
function versionOf(ver: number): string | null {
  return ver === 0 ? null : `${ver >>> 16}.${(ver >>> 8) & 0xff}.${ver & 0xff}`;
}

/** Identify the controller behind `t` and its active namespaces. */
export async function identifyTarget(t: AdminTarget): Promise<IdentifyReport> {
  const id = await t.identifyController();
  const facts = await t.facts();
  const namespaces: IdentifyReport['namespaces'] = [];
  for (const nsid of await t.activeNamespaceIds()) {
    const ns = await t.identifyNamespace(nsid);
    if (ns.nsze === 0) continue; // inactive
    namespaces.push({
      nsid,
      blockSize: ns.blockSize,
      blocks: ns.blocks,
      capacityBytes: ns.blocks * ns.blockSize,
      metadataSize: ns.activeFormat.ms,
      formatIndex: ns.formatIndex,
      idNs: idNsFields(ns),
    });
  }
  return {
    controller: {
      vid: id.vid,
      ssvid: id.ssvid,
      model: id.mn,
      serial: id.sn,
      firmware: id.fr,
      cntlid: id.cntlid,
      version: facts.version ?? versionOf(id.ver),
      maxQueuePairs: facts.maxQueuePairs,
      maxQueueEntries: facts.maxQueueEntries,
      mdtsBytes: id.mdts === 0 || facts.minPageSize === null ? null : maxTransferBytes(id.mdts, facts.minPageSize),
      transport: t.transport,
    },
    idCtrl: id,
    namespaces,
  };
}

export async function identifyReport(arg: string): Promise<IdentifyReport> {
  return withAdminTarget(arg, identifyTarget);
}

function fieldText(v: number | string, f: FieldFormat): string {
  if (typeof v === 'string') return v;
  if (f === 'dec' || f === 'str') return String(v);
  return `0x${v.toString(16).padStart(f.hex, '0')}`;
}

function maxTransferText(r: IdentifyReport): string {
  const mdts = r.idCtrl.mdts;
  if (mdts === 0) return 'unlimited (MDTS 0)';
  if (r.controller.mdtsBytes === null) return `MDTS ${mdts}: 2^${mdts} x CAP.MPSMIN (CAP is not visible through the kernel)`;
  return formatSize(r.controller.mdtsBytes);
}

export function formatIdentify(r: IdentifyReport): string {
  const c = r.controller;
  const hex = (v: number): string => `0x${v.toString(16).padStart(4, '0')}`;
  const queues = c.maxQueuePairs === null ? 'not reported' : `${c.maxQueuePairs} I/O queue pairs${c.maxQueueEntries === null ? '' : `, up to ${c.maxQueueEntries} entries each`}`;
  const lines = [
    `controller   ${c.model} (serial ${c.serial}, firmware ${c.firmware})`,
    `vendor       ${hex(c.vid)} / subsystem vendor ${hex(c.ssvid)}, cntlid ${c.cntlid}, NVMe ${c.version ?? 'version not reported'}, transport ${c.transport}`,
    `queues       ${queues}`,
    `max transfer ${maxTransferText(r)}`,
    '',
    r.namespaces.length === 0
      ? 'no active namespace'
      : renderTable(
          ['nsid', 'block size', 'blocks', 'capacity', 'metadata', 'lbaf'],
          r.namespaces.map((n) => [String(n.nsid), String(n.blockSize), String(n.blocks), formatSize(n.capacityBytes), String(n.metadataSize), String(n.formatIndex)]),
        ),
    '',
    'NVMe Identify Controller (id-ctrl):',
    renderFields(ID_CTRL_FIELDS.map(([k, f]) => [k, fieldText(r.idCtrl[k], f)])),
  ];
  for (const n of r.namespaces) {
    lines.push('', `NVMe Identify Namespace ${n.nsid} (id-ns):`);
    const rows: Array<[string, string]> = ID_NS_FIELDS.map(([k, f]) => [k, fieldText(n.idNs[k], f)]);
    n.idNs.lbafs.forEach((l, i) => rows.push([`lbaf ${String(i).padStart(2)}`, `ms:${String(l.ms).padEnd(3)} lbads:${String(l.ds).padEnd(2)} rp:${l.rp}${i === n.formatIndex ? ' (in use)' : ''}`]));
    lines.push(renderFields(rows));
  }
  return lines.join('\n');
}
