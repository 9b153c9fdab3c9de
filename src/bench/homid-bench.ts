/**
 * homid benchmark: `node dist/src/bench/homid-bench.js [--time 3] [--runs 1] [--qd 32] [--only rawx1,mediatedx1] [--json out.json]`
 *
 * Starts homid in this process on `emu://?size=1GiB&null=1` (the daemon's opener puts embedded controllers in
 * memfd mode, so client processes map the queues), then runs client processes, each on its own queue pair,
 * doing 4 KiB random reads at a fixed queue depth for `--time` seconds:
 *   raw x1, raw x2, raw x4   aggregate IOPS of 1, 2, 4 processes each driving a raw queue pair (attachQueuePair)
 *   mediated x1              one process on a mediated queue (homid checks and forwards every command)
 * and prints a table and JSON (medians over `--runs`).
 *
 * Mediated grants come from files (extent maps); a null device holds no file system, so the bench grants the
 * mediated lease the whole namespace directly through the in-process Homid (one LBA range). The per-command
 * check is then the cheapest case; files with many extents cost a little more per lookup.
 *
 * A client process is this file run with HOMID_BENCH_CLIENT=1 (argv: socket mode device seconds qd).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { HomidClient } from '../client/index.js';
import { configFromObject } from '../daemon/config.js';
import { startHomidServer, type HomidServer } from '../daemon/server.js';
import { dataPointer } from '../driver/dptr.js';
import { NvmOpcode } from '../nvme/opcodes.js';

const BS = 4096;
/**
 * Client polling, the same for raw and mediated: spin on the CQ for SPIN_US after the last completion, then nap
 * NAP ms at a time (a nap costs at least the kernel's timer slack, about 50 us, so napping after a fixed small
 * number of empty polls would put that on every round trip that takes longer than the polls).
 */
const SPIN_US = Number(process.env['HOMID_BENCH_SPIN_US'] ?? 100);
const NAP = Number(process.env['HOMID_BENCH_NAP_MS'] ?? 0.02);
const CLOCK_EVERY = 64;
const URI = 'emu://?size=1GiB&null=1';

interface ClientResult {
  ios: number;
  errors: number;
  seconds: number;
}

// ------------------------------------------------------------------ client process

async function client(): Promise<void> {
  const [socket, mode, device, secs, qdArg] = process.argv.slice(2) as [string, 'raw' | 'mediated', string, string, string];
  const seconds = Number(secs);
  const qd = Number(qdArg);
  const c = await HomidClient.connect(socket);
  const [lease] = await c.openQueuePairs({ device, depth: Math.max(64, qd + 1), mode, dataBytes: qd * BS });
  const l = lease!;
  const dev = (await c.listDevices()).find((d) => d.device === device)!;
  const nsBlocks = (dev['namespaces'] as { blocks: number }[])[0]!.blocks;
  // the data pointer of each slot
  const prp1 = new Array<number>(qd);
  const prp2 = new Array<number>(qd);
  if (l.mode === 'raw') {
    const buf = l.qp.dma.alloc(qd * BS, BS);
    for (let i = 0; i < qd; i++) {
      const dp = dataPointer(l.qp.dma, buf, i * BS, BS);
      prp1[i] = dp.prp1;
      prp2[i] = dp.prp2;
    }
  } else
    for (let i = 0; i < qd; i++) {
      prp1[i] = i * BS;
      prp2[i] = 0;
    }
  const q = l.qp;
  let seed = (process.pid * 2654435761) >>> 0;
  const rand = (): number => {
    seed ^= seed << 13;
    seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    seed >>>= 0;
    return seed;
  };
  process.stdout.write(JSON.stringify({ ready: true, qid: l.qid, mode: l.mode }) + '\n');
  await new Promise<void>((r) => process.stdin.once('data', () => r()));
  const done: number[] = [];
  let ios = 0;
  let errors = 0;
  const onDone = (tag: number, status: number): void => {
    if (status !== 0) errors++;
    ios++;
    done.push(tag);
  };
  const submit = (slot: number): void => {
    if (q.submitIo(NvmOpcode.Read, 1, rand() % nsBlocks, 1, prp1[slot]!, prp2[slot]!, slot) < 0) throw new Error('queue full');
  };
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  for (let i = 0; i < qd; i++) submit(i);
  q.ring();
  let outstanding = qd;
  let idle = 0;
  let lastDone = performance.now();
  let stopping = false;
  while (outstanding > 0) {
    const n = q.poll(onDone);
    if (n > 0) {
      idle = 0;
      lastDone = -1;
      outstanding -= n;
      if (!stopping && performance.now() >= end) stopping = true;
      if (!stopping) {
        for (const s of done) submit(s);
        outstanding += done.length;
        q.ring();
      }
      done.length = 0;
    } else if (++idle % CLOCK_EVERY === 0) {
      const now = performance.now();
      if (lastDone < 0) lastDone = now;
      // few-core machines: give the CPU to the controller (and homid's poller) instead of spinning on
      else if ((now - lastDone) * 1000 >= SPIN_US) Atomics.wait(cell, 0, 0, NAP);
    }
  }
  const elapsed = (performance.now() - t0) / 1000;
  process.stdout.write(JSON.stringify({ ios, errors, seconds: elapsed } satisfies ClientResult) + '\n');
  c.close();
  process.exit(0);
}

// ------------------------------------------------------------------ driver

function runClients(srv: HomidServer, sock: string, mode: 'raw' | 'mediated', n: number, seconds: number, qd: number): Promise<ClientResult[]> {
  const self = fileURLToPath(import.meta.url);
  return new Promise((resolve, reject) => {
    const kids = Array.from({ length: n }, () =>
      spawn(process.execPath, [self, sock, mode, 'bench', String(seconds), String(qd)], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, HOMID_BENCH_CLIENT: '1' } }),
    );
    const results: ClientResult[] = [];
    let ready = 0;
    for (const k of kids) {
      let buf = '';
      k.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const m = JSON.parse(buf.slice(0, i)) as Record<string, unknown>;
          buf = buf.slice(i + 1);
          if (m.ready) {
            if (mode === 'mediated') {
              // grant the whole namespace (no file system on a null device; see the header)
              for (const s of srv.homid.sessions.values())
                for (const l of s.leases.values())
                  if (l.kind === 'mediated' && l.qid === m.qid) {
                    l.mediated.grant.readable.set([{ lba: 0, count: srv.homid.registry.live('bench').controller.namespaces[0]!.blocks }]);
                  }
            }
            if (++ready === n) for (const kk of kids) kk.stdin.write('go\n');
          } else {
            results.push(m as unknown as ClientResult);
            if (results.length === n) resolve(results);
          }
        }
      });
      k.on('exit', (code) => {
        if (code !== 0) reject(new Error(`client exited with ${code}`));
      });
    }
  });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, d: string): string => {
    const i = args.indexOf(name);
    return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : d;
  };
  const seconds = Number(opt('--time', '3'));
  const runs = Number(opt('--runs', '1'));
  const qd = Number(opt('--qd', '32'));
  const jsonOut = opt('--json', '');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'homid-bench-'));
  const sock = path.join(dir, 'homid.sock');
  const srv = await startHomidServer(
    configFromObject(
      {
        socket: sock,
        log_level: 'silent',
        device: [{ name: 'bench', uri: URI, extents: 'none', io_queues: 16 }],
        class: { default: { queue_pairs: 16, per_client: 4, max_depth: 1024 } },
        raw: { users: [process.getuid!()] },
      },
      'bench',
    ),
    { logger: pino({ level: 'silent' }) },
  );
  const turn = process.env['HOMID_BENCH_TURN_MS'];
  if (turn !== undefined) srv.homid.poller.turnMs = Number(turn);
  const scenarios: { name: string; mode: 'raw' | 'mediated'; clients: number }[] = [
    { name: 'raw x1', mode: 'raw', clients: 1 },
    { name: 'raw x2', mode: 'raw', clients: 2 },
    { name: 'raw x4', mode: 'raw', clients: 4 },
    { name: 'mediated x1', mode: 'mediated', clients: 1 },
  ];
  const only = opt('--only', '');
  if (only) scenarios.splice(0, scenarios.length, ...scenarios.filter((s) => only.split(',').includes(s.name.replace(' ', ''))));
  const samples = new Map<string, number[]>(scenarios.map((s) => [s.name, []]));
  let errors = 0;
  try {
    for (let r = 0; r < runs; r++) {
      for (const s of scenarios) {
        const res = await runClients(srv, sock, s.mode, s.clients, seconds, qd);
        errors += res.reduce((n, x) => n + x.errors, 0);
        const iops = res.reduce((n, x) => n + x.ios / x.seconds, 0);
        samples.get(s.name)!.push(iops);
        process.stderr.write(`run ${r + 1}/${runs} ${s.name}: ${Math.round(iops)} IOPS\n`);
        // wait for homid to reclaim the clients' queues before the next scenario
        for (let i = 0; i < 500 && srv.homid.sessions.size > 0; i++) await new Promise((res2) => setTimeout(res2, 10));
      }
    }
  } finally {
    await srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const rows = scenarios.map((s) => ({ scenario: s.name, mode: s.mode, clients: s.clients, iops: Math.round(median(samples.get(s.name)!)), samples: samples.get(s.name)!.map(Math.round) }));
  const raw1 = rows.find((r) => r.scenario === 'raw x1')?.iops ?? 0;
  const med1 = rows.find((r) => r.scenario === 'mediated x1')?.iops ?? 0;
  const out = {
    uri: URI,
    workload: { rw: 'randread', bs: BS, qd, seconds, runs },
    polling: { clientSpinUs: SPIN_US, clientNapMs: NAP, pollerTurnMs: srv.homid.poller.turnMs, pollerSpinMs: srv.homid.poller.spinMs },
    host: { cpus: os.cpus().length, node: process.version },
    errors,
    rows,
    mediatedVsRaw: raw1 > 0 ? Math.round((med1 / raw1) * 1000) / 1000 : null,
  };
  const pad = (s: string, n: number): string => s.padEnd(n);
  console.log(
    `homid bench: ${URI}, 4 KiB random read, qd ${qd}, ${seconds} s, ${runs} run(s) (median), ${os.cpus().length} CPUs; client spin ${SPIN_US} us then ${NAP} ms naps; poller turn ${srv.homid.poller.turnMs} ms`,
  );
  console.log(`${pad('scenario', 14)}${pad('clients', 9)}${pad('IOPS', 12)}samples`);
  for (const r of rows) console.log(`${pad(r.scenario, 14)}${pad(String(r.clients), 9)}${pad(r.iops.toLocaleString('en-US'), 12)}${r.samples.join(', ')}`);
  console.log(`mediated / raw (1 client): ${out.mediatedVsRaw === null ? 'n/a' : (out.mediatedVsRaw * 100).toFixed(1) + '%'}${errors ? `  (${errors} I/O errors!)` : ''}`);
  console.log(JSON.stringify(out));
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(out, null, 2) + '\n');
}

if (process.env['HOMID_BENCH_CLIENT'] === '1') await client();
else await main();
