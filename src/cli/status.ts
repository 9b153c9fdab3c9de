/** `homi status [--json] [--socket S]`: devices, queue pairs per client and class, I/O counters, extent cache. */
import { HomidClient } from '../client/index.js';
import type { StatusSnapshot } from '../daemon/homid.js';

export function formatStatus(s: StatusSnapshot): string {
  const lines: string[] = [`homid ${s.version} (pid ${s.pid}, up ${s.uptimeS} s)`, '', 'DEVICE  STATE  MODEL  QUEUE PAIRS  EXTENTS  URI'];
  for (const d of s.devices) lines.push(`${d.name}  ${d.state}  ${d.model ?? '-'}  ${d.queuePairsInUse}/${d.maxQueuePairs}  ${d.extents}  ${d.uri}${d.error ? `  (${d.error})` : ''}`);
  lines.push('', 'CLASS  HELD  BUDGET  PER CLIENT');
  for (const c of s.classes) lines.push(`${c.name}  ${c.held}  ${c.queuePairs}  ${c.perClient}`);
  lines.push('', 'CLIENT  PID  UID  CLASS  LEASE  DEVICE  QID  MODE  DEPTH  I/O');
  for (const c of s.clients) {
    if (c.queuePairs.length === 0) lines.push(`${c.id}  ${c.pid}  ${c.uid}  ${c.class}  -`);
    for (const q of c.queuePairs) {
      const io = q.io ? Object.entries(q.io).map(([k, v]) => `${k} ${v}`).join(', ') : 'client-driven';
      lines.push(`${c.id}  ${c.pid}  ${c.uid}  ${c.class}  ${q.lease}  ${q.device}  ${q.qid}  ${q.mode}  ${q.depth}  ${io}`);
    }
  }
  lines.push('', 'EXTENT CACHE: DEVICE  PATH  EXTENTS  GENERATION  HOLDERS  REFRESHES');
  for (const e of s.extents) lines.push(`${e.device}  ${e.path}  ${e.extents}  ${e.generation}  ${e.holders}  ${e.refreshes}${e.error ? `  (${e.error})` : ''}`);
  const k = s.counters;
  lines.push('', `reclaimed queue pairs ${k.reclaimedQueuePairs}, denied commands ${k.deniedCommands}, refusals ${k.refusals}, clients served ${k.clientsServed}`);
  return lines.join('\n');
}

export async function statusCommand(o: { json?: boolean; socket?: string }): Promise<number> {
  const c = await HomidClient.connect(o.socket);
  try {
    const s = (await c.status()) as unknown as StatusSnapshot & { ok?: boolean; id?: number };
    delete s.ok;
    delete s.id;
    process.stdout.write(o.json ? `${JSON.stringify(s)}\n` : `${formatStatus(s)}\n`);
    return 0;
  } finally {
    c.close();
  }
}
