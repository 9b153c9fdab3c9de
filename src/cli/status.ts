/**
 * `homi status [--json] [--socket S]`: devices, queue pairs per client and class (GPU ones apart), I/O counters,
 * extent cache, ublk devices.
 */
import { HomidClient } from '../client/index.js';
import { IpcError, IpcErrorCode } from '../ipc/errors.js';
import { DEFAULT_SOCKET, type StatusSnapshot } from '../ipc/messages.js';
import { renderTable } from '../util/table.js';

/** connect() failures that mean no homid listens at the path: no socket there, or one left by a homid that is gone. */
const NOT_LISTENING = new Set(['ENOENT', 'ECONNREFUSED']);

/** The socket a client connects to: --socket, else $HOMID_SOCKET, else the default. */
export function homidSocket(socket: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return socket ?? (env['HOMID_SOCKET'] || DEFAULT_SOCKET);
}

/** A failed connect as one line that says what to do: start homid, or point at its socket; other errors unchanged. */
export function explainConnectError(socket: string, e: unknown): unknown {
  if (!(e instanceof IpcError) || e.code !== IpcErrorCode.ConnectFailed) return e;
  const errno = /failed: (E[A-Z]+)$/.exec(e.message)?.[1] ?? 'unknown error';
  if (NOT_LISTENING.has(errno)) {
    return new Error(
      `homid is not running at ${socket} (connect: ${errno}): start it with \`homi daemon --config FILE\` or \`homid --config FILE\`, or point --socket or $HOMID_SOCKET at the socket it listens on`,
    );
  }
  if (errno === 'EACCES') return new Error(`not allowed to connect to homid at ${socket} (EACCES): its socket_mode decides who may (the socket's owner and group)`);
  return e;
}

export function formatStatus(s: StatusSnapshot): string {
  const out: string[] = [`homid ${s.version} (pid ${s.pid}, up ${s.uptimeS} s)`, ''];
  out.push(
    renderTable(
      ['device', 'state', 'model', 'queue pairs', 'extents', 'uri'],
      s.devices.map((d) => [d.name, d.state + (d.error ? ` (${d.error})` : ''), d.model ?? '-', `${d.queuePairsInUse}/${d.maxQueuePairs}`, d.extents, d.uri]),
    ),
    '',
    renderTable(
      ['class', 'held', 'budget', 'per client', 'gpu held', 'gpu budget'],
      s.classes.map((c) => [c.name, String(c.held), String(c.queuePairs), String(c.perClient), String(c.gpuHeld), String(c.gpuQueues)]),
    ),
    '',
  );
  const clientRows: string[][] = [];
  for (const c of s.clients) {
    if (c.queuePairs.length === 0) clientRows.push([String(c.id), String(c.pid), String(c.uid), c.class, '-', '-', '-', '-', '-', '-']);
    for (const q of c.queuePairs) {
      const io =
        (q.lost ? `LOST (${q.lost}); ` : '') +
        (q.io
          ? Object.entries(q.io)
              .map(([k, v]) => `${k} ${v}`)
              .join(', ')
          : clientDriven(q));
      clientRows.push([String(c.id), String(c.pid), String(c.uid), c.class, String(q.lease), q.device, String(q.qid), q.mode, String(q.depth), io]);
    }
  }
  out.push(renderTable(['client', 'pid', 'uid', 'class', 'lease', 'device', 'qid', 'mode', 'depth', 'I/O'], clientRows), '');
  out.push(
    renderTable(
      ['extent cache: device', 'path', 'extents', 'generation', 'holders', 'refreshes'],
      s.extents.map((e) => [e.device, e.path + (e.error ? ` (${e.error})` : ''), String(e.extents), String(e.generation), String(e.holders), String(e.refreshes)]),
    ),
  );
  if (s.ublk && s.ublk.length > 0) {
    out.push(
      '',
      renderTable(
        ['ublk', 'block device', 'state', 'device', 'nsid', 'LBA range', 'queue pairs (qid)', 'depth', 'I/O'],
        s.ublk.map((u) => [
          String(u.devId),
          u.blockDevice,
          u.state + (u.recovered ? ' (recovered)' : '') + (u.error ? ` (${u.error})` : ''),
          u.device,
          String(u.nsid),
          u.blockSize > 0 ? `${u.rangeStart}+${u.rangeBlocks} x ${u.blockSize} B` : `${u.rangeStart}+${u.rangeBlocks || 'rest'}`,
          u.qids.length > 0 ? u.qids.join(',') : '-',
          String(u.depth),
          `reads ${u.io.reads}, writes ${u.io.writes}, flushes ${u.io.flushes}, discards ${u.io.discards}, errors ${u.io.errors}`,
        ]),
      ),
    );
  }
  const k = s.counters;
  out.push(
    '',
    `reclaimed queue pairs ${k.reclaimedQueuePairs}, denied commands ${k.deniedCommands}, refusals ${k.refusals}, clients served ${k.clientsServed}, queue pairs lost to controller resets ${k.lostQueuePairs}, virtual functions reclaimed ${k.reclaimedVfs}`,
  );
  return out.join('\n');
}

/** What the I/O column says of a queue the client drives in its own process (raw, or gpu). */
function clientDriven(q: StatusSnapshot['clients'][number]['queuePairs'][number]): string {
  if (q.mode !== 'gpu') return 'client-driven';
  return q.holdsAwake ? 'GPU-driven; controller held awake (busy polling)' : 'GPU-driven';
}

export async function statusCommand(o: { json?: boolean; socket?: string }): Promise<number> {
  const socket = homidSocket(o.socket);
  let c: HomidClient;
  try {
    c = await HomidClient.connect(socket);
  } catch (e) {
    throw explainConnectError(socket, e);
  }
  try {
    // the status without the response envelope (ok, id)
    const { ok, id, ...s } = await c.status();
    void ok;
    void id;
    process.stdout.write(o.json ? `${JSON.stringify(s)}\n` : `${formatStatus(s)}\n`);
    return 0;
  } finally {
    c.close();
  }
}
