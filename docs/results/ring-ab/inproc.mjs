// Alternate base and ring in one process (separate module instances, so separate JIT feedback); print min and
// median ns per I/O of each. usage: node inproc.mjs <driver|mediated> <rounds> <ios per round> <qd>
const [which, roundsArg, iosArg, qdArg] = process.argv.slice(2);
const H = {
  base: await import('./harness.mjs?' + encodeURIComponent((process.env.BASE ?? '/work/wt-ring-base') + '/dist')),
  ring: await import('./harness.mjs?' + encodeURIComponent((process.env.RING ?? '/work/wt-ring') + '/dist')),
};
const rounds = Number(roundsArg), n = Number(iosArg), qd = Number(qdArg);
const res = { base: [], ring: [] };
for (const v of ['base', 'ring']) { H[v].setQd(qd); const f = which === 'driver' ? H[v].runDriver : which === 'direct' ? H[v].runDirect : H[v].runMediated; await f(n); await f(n); }
for (let i = 0; i < rounds; i++) {
  for (const v of i % 2 ? ['ring', 'base'] : ['base', 'ring']) {
    const f = which === 'driver' ? H[v].runDriver : which === 'direct' ? H[v].runDirect : H[v].runMediated;
    res[v].push(await f(n));
  }
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]; };
const out = { which, qd, rounds, n };
for (const v of ['base', 'ring']) out[v] = { cpuMin: Math.min(...res[v].map((r) => r.cpuNs)), cpuMed: med(res[v].map((r) => r.cpuNs)), wallMin: Math.min(...res[v].map((r) => r.wallNs)), wallMed: med(res[v].map((r) => r.wallNs)) };
out.ratioCpuMed = out.ring.cpuMed / out.base.cpuMed;
out.ratioCpuMin = out.ring.cpuMin / out.base.cpuMin;
out.ratioWallMin = out.ring.wallMin / out.base.wallMin;
out.pairedWall = med(res.base.map((b, i) => res.ring[i].wallNs / b.wallNs));
console.log(JSON.stringify(out, (k, v) => (typeof v === 'number' ? Math.round(v * 1000) / 1000 : v)));
