/**
 * `homi ublk list|add|del`: the ublk block devices homid serves to the kernel from its own queue pairs, through
 * homid's socket (add and del: root only). Errors come back as homid says them: what the kernel refused (no ublk
 * module, not root, the device busy or mounted) or what is wrong with the request.
 */
import { HomidClient } from '../client/index.js';
import type { UblkDeviceStatus } from '../ipc/messages.js';
import { renderTable } from '../util/table.js';
import { UsageError } from './errors.js';
import { explainConnectError, homidSocket } from './status.js';

async function withClient<T>(socket: string | undefined, fn: (c: HomidClient) => Promise<T>): Promise<T> {
  const path = homidSocket(socket);
  let c: HomidClient;
  try {
    c = await HomidClient.connect(path);
  } catch (e) {
    throw explainConnectError(path, e);
  }
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** A non-negative integer option, or a UsageError naming it. */
export function intOption(name: string, v: string | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`${name} must be an integer in ${min}..${max}, got '${v}'`);
  return Number(v);
}

export function formatUblk(devs: UblkDeviceStatus[]): string {
  if (devs.length === 0) return 'homid serves no ublk devices';
  return renderTable(
    ['id', 'block device', 'state', 'device', 'nsid', 'first LBA', 'LBAs', 'LBA size', 'qids', 'depth', 'reads', 'writes', 'errors'],
    devs.map((u) => [
      String(u.devId),
      u.blockDevice,
      u.state + (u.recovered ? ' (recovered)' : '') + (u.error ? ` (${u.error})` : ''),
      u.device,
      String(u.nsid),
      String(u.rangeStart),
      String(u.rangeBlocks),
      String(u.blockSize),
      u.qids.join(',') || '-',
      String(u.depth),
      String(u.io.reads),
      String(u.io.writes),
      String(u.io.errors),
    ]),
  );
}

export async function ublkListCommand(o: { json?: boolean; socket?: string }): Promise<number> {
  const devs = await withClient(o.socket, (c) => c.ublkList());
  process.stdout.write(o.json ? `${JSON.stringify({ devices: devs })}\n` : `${formatUblk(devs)}\n`);
  return 0;
}

export async function ublkAddCommand(o: {
  device: string;
  id: string;
  nsid?: string;
  start?: string;
  count?: string;
  queues?: string;
  depth?: string;
  maxIoKib?: string;
  socket?: string;
  json?: boolean;
}): Promise<number> {
  const req: Parameters<HomidClient['ublkAdd']>[0] = { device: o.device, ublkId: intOption('--id', o.id, 0, (1 << 20) - 1)! };
  const opt = (k: 'nsid' | 'start' | 'count' | 'queues' | 'depth' | 'maxIoKib', name: string, min: number, max: number): void => {
    const v = intOption(name, o[k], min, max);
    if (v !== undefined) req[k] = v;
  };
  opt('nsid', '--nsid', 1, 0xfffffffe);
  opt('start', '--start', 0, Number.MAX_SAFE_INTEGER);
  opt('count', '--count', 1, Number.MAX_SAFE_INTEGER);
  opt('queues', '--queues', 1, 64);
  opt('depth', '--depth', 1, 4096);
  opt('maxIoKib', '--max-io-kib', 4, 32768);
  const d = await withClient(o.socket, (c) => c.ublkAdd(req));
  process.stdout.write(
    o.json
      ? `${JSON.stringify(d)}\n`
      : `${d.blockDevice}: LBAs ${d.rangeStart}..${d.rangeStart + d.rangeBlocks - 1} of namespace ${d.nsid} on '${d.device}', queue pair(s) ${d.qids.join(',')}, ${d.state}\n`,
  );
  return 0;
}

export async function ublkDelCommand(o: { id: string; force?: boolean; socket?: string }): Promise<number> {
  const id = intOption('--id', o.id, 0, (1 << 20) - 1)!;
  await withClient(o.socket, (c) => c.ublkDel(id, o.force ?? false));
  process.stdout.write(`/dev/ublkb${id} removed\n`);
  return 0;
}
