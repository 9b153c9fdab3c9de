/** `homi identify <uri> [--json]`: bring the controller up and print what Identify reports. */
import { withController } from '../device/controller.js';
import { formatSize } from '../util/size.js';
import { renderTable } from '../util/table.js';

export interface IdentifyReport {
  controller: {
    vid: number;
    ssvid: number;
    model: string;
    serial: string;
    firmware: string;
    cntlid: number;
    version: string;
    maxQueuePairs: number;
    maxQueueEntries: number;
    mdtsBytes: number | null;
    transport: string;
  };
  namespaces: Array<{ nsid: number; blockSize: number; blocks: number; capacityBytes: number; metadataSize: number }>;
}

/** Ask for every I/O queue the Number of Queues feature can express: the report shows what is granted. */
const ALL_IO_QUEUES = 0xffff;

export async function identifyReport(uri: string): Promise<IdentifyReport> {
  return withController(uri, { ioQueues: ALL_IO_QUEUES }, ({ controller: c, transport: t }) => {
    const id = c.identity;
    return {
      controller: {
        vid: id.vid,
        ssvid: id.ssvid,
        model: id.model,
        serial: id.serial,
        firmware: id.firmware,
        cntlid: id.cntlid,
        version: `${c.version.major}.${c.version.minor}.${c.version.tertiary}`,
        maxQueuePairs: c.maxIoQueuePairs,
        maxQueueEntries: c.cap.maxQueueEntries,
        mdtsBytes: Number.isFinite(id.mdts) ? id.mdts : null,
        transport: t.kind,
      },
      namespaces: c.namespaces.map((n) => ({ nsid: n.nsid, blockSize: n.blockSize, blocks: n.blocks, capacityBytes: n.capacityBytes, metadataSize: n.metadataSize })),
    };
  });
}

export function formatIdentify(r: IdentifyReport): string {
  const c = r.controller;
  const hex = (v: number): string => `0x${v.toString(16).padStart(4, '0')}`;
  const lines = [
    `controller   ${c.model} (serial ${c.serial}, firmware ${c.firmware})`,
    `vendor       ${hex(c.vid)} / subsystem vendor ${hex(c.ssvid)}, cntlid ${c.cntlid}, NVMe ${c.version}, transport ${c.transport}`,
    `queues       ${c.maxQueuePairs} I/O queue pairs, up to ${c.maxQueueEntries} entries each`,
    `max transfer ${c.mdtsBytes === null ? 'unlimited' : formatSize(c.mdtsBytes)}`,
    '',
    renderTable(
      ['nsid', 'block size', 'blocks', 'capacity'],
      r.namespaces.map((n) => [String(n.nsid), String(n.blockSize), String(n.blocks), formatSize(n.capacityBytes)]),
    ),
  ];
  return lines.join('\n');
}
