/**
 * `homi status [--json] [--socket S]`: devices, queue pairs per client and class (GPU ones apart), I/O counters,
 * extent cache.
 */
import { HomidClient } from '../client/index.js';
import type { StatusSnapshot } from '../ipc/messages.js';
import { renderTable } from '../util/table.js';

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
  const k = s.counters;
  out.push(
    '',
    `reclaimed queue pairs ${k.reclaimedQueuePairs}, denied commands ${k.deniedCommands}, refusals ${k.refusals}, clients served ${k.clientsServed}, queue pairs lost to controller resets ${k.lostQueuePairs}`,
  );
  return out.join('\n');
}

/** What the I/O column says of a queue the client drives in its own process (raw, or gpu). */
function clientDriven(q: StatusSnapshot['clients'][number]['queuePairs'][number]): string {
  if (q.mode !== 'gpu') return 'client-driven';
  return q.holdsAwake ? 'GPU-driven; controller held awake (busy polling)' : 'GPU-driven';
}

export async function statusCommand(o: { json?: boolean; socket?: string }): Promise<number> {
  const c = await HomidClient.connect(o.socket);
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
