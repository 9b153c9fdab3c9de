// The `homi perf` path (openIo -> driver backend on the embedded controller, null mode -> runEngine), base and
// ring side by side in one process: two devices, each with its own controller thread (idle one sleeps), runs
// of `sec` seconds alternating. Prints medians of IOPS and driver-thread CPU ns per I/O, and paired ratios.
// usage: node perf-inproc.mjs <rounds> <sec> <qd>
const [roundsArg, secArg, qdArg] = process.argv.slice(2);
const rounds = Number(roundsArg), sec = Number(secArg), qd = Number(qdArg);
const V = {};
for (const [v, root] of [['base', (process.env.BASE ?? '/work/wt-ring-base') + '/dist'], ['ring', (process.env.RING ?? '/work/wt-ring') + '/dist']]) {
  const { openIo } = await import(`${root}/src/io/open.js`);
  const { runEngine } = await import(`${root}/src/bench/engine.js`);
  const dev = await openIo('emu://?size=256MiB&null=1', {});
  const g = dev.geometry;
  const buf = dev.allocBuffer(qd * 4096);
  const slots = [];
  for (let s = 0; s < qd; s++) {
    const sl = buf.slice(s * 4096, 4096);
    slots.push({ words: new Uint32Array(sl.bytes.buffer, sl.bytes.byteOffset, 1024), prp1: sl.h1, prp2: sl.h2 });
  }
  const q = await dev.createQueue(qd);
  const cfg = { rw: 'randread', bs: 4096, qd, rwmixread: 100, nsid: g.nsid, blockSize: g.blockSize, blocks: g.blocks, timeSec: sec, ios: null, warmupSec: 0.2, verify: false, verifySpan: 0, seed: 1 };
  V[v] = { run: () => runEngine([q.engineQueue], [slots], cfg), dev, q };
}
const res = { base: [], ring: [] };
for (const v of ['base', 'ring']) await V[v].run();
for (let i = 0; i < rounds; i++) {
  for (const v of i % 2 ? ['ring', 'base'] : ['base', 'ring']) {
    await new Promise((r) => setTimeout(r, 300));
    const r = await V[v].run();
    res[v].push({ iops: r.iops, cpu: r.cpuNsPerIo });
  }
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]; };
const out = { rounds, sec, qd };
for (const v of ['base', 'ring']) out[v] = { iopsMed: Math.round(med(res[v].map((r) => r.iops))), iopsMax: Math.round(Math.max(...res[v].map((r) => r.iops))), cpuMed: med(res[v].map((r) => r.cpu)), cpuMin: Math.min(...res[v].map((r) => r.cpu)) };
out.pairedIops = med(res.base.map((b, i) => res.ring[i].iops / b.iops));
out.pairedCpu = med(res.base.map((b, i) => res.ring[i].cpu / b.cpu));
console.log(JSON.stringify(out, (k, v) => (typeof v === 'number' ? Math.round(v * 1000) / 1000 : v)));
for (const v of ['base', 'ring']) { await V[v].q.close(); await V[v].dev.close(); }
process.exit(0);
