/**
 * CPU time of the calling thread, in nanoseconds. Linux: /proc/thread-self/schedstat (first field, ns on CPU);
 * falls back to the process's user+system time where that file is missing.
 */
import { readFileSync } from 'node:fs';

let useSchedstat = true;

export function threadCpuNs(): number {
  if (useSchedstat) {
    try {
      const s = readFileSync('/proc/thread-self/schedstat', 'latin1');
      const ns = Number(s.slice(0, s.indexOf(' ')));
      if (Number.isFinite(ns)) return ns;
    } catch {
      /* fall through */
    }
    useSchedstat = false;
  }
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}

/** Whether threadCpuNs() measures this thread alone (true) or the whole process (false). */
export function threadCpuIsPerThread(): boolean {
  threadCpuNs();
  return useSchedstat;
}

/** User+system CPU of the whole process (all threads), in nanoseconds. */
export function processCpuNs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}
