// scavenges over N I/Os of each path, in-process with the synchronous fake controller (no idle polls at all)
import { PerformanceObserver, constants } from 'node:perf_hooks';
const [rootArg, which, nArg] = process.argv.slice(2);
const H = await import('./harness.mjs?' + encodeURIComponent(rootArg));
const f = which === 'driver' ? H.runDriver : which === 'direct' ? H.runDirect : H.runMediated;
await f(300000);
let minor = 0;
const obs = new PerformanceObserver((list) => { for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) minor++; });
obs.observe({ entryTypes: ['gc'] });
const n = Number(nArg);
const r = await f(n);
await new Promise((res) => setTimeout(res, 50));
obs.disconnect();
console.log(JSON.stringify({ root: rootArg, which, n, minor, ...r }));
