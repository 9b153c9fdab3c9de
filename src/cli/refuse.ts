/**
 * Options the chosen initiator, mode or target would ignore are refused before anything runs (issue 16): a
 * run that silently drops what the user wrote measures something else than what was asked. Only options given
 * on the command line count (commander's value source), never defaults. Refusals that depend on values alone
 * (a backend that cannot honour --direct, --qd above 1 on a synchronous backend, --verify on a null namespace)
 * live with the run's own checks (src/io/open.ts, src/bench/perf.ts, src/gpu/checks.ts).
 */
import type { Command } from 'commander';
import { defaultBackend, parseTarget } from '../io/target.js';
import { UsageError } from './errors.js';

/** The options given on the command line (attribute names, e.g. 'verifySpan'), never those left at their defaults. */
export function explicitOptions(cmd: Command): Set<string> {
  const out = new Set<string>();
  for (const opt of cmd.options) {
    const key = opt.attributeName();
    const source = cmd.getOptionValueSource(key);
    if (source !== undefined && source !== 'default') out.add(key);
  }
  return out;
}

/** What a run is, as far as the rules below need it. */
export interface RunShape {
  initiator: 'cpu' | 'gpu';
  uri: string;
  rw: string;
  verify: boolean;
  /** GPU submission shape: block or ticket. */
  mode: string;
  placement: string;
  /** The CPU backends the run uses (a sweep's --backends; else --backend or the target's default); [] if unknown. */
  backends: string[];
}

const MIXED_RW = new Set(['randrw', 'rw']);
const RANDOM_RW = new Set(['randread', 'randwrite', 'randrw']);
const READ_ONLY_RW = new Set(['randread', 'read']);
const GPU_RESIDENT_SCHEME = 'gpuctl:';
/** Backends that go through the page cache of a file or block device (io_uring_cmd and the driver do not). */
const PAGE_CACHE_BACKENDS = new Set(['posix', 'io_uring']);

/** An option and when it takes effect; `why` completes "<flag> would be ignored: ...". */
interface Rule {
  key: string;
  flag: string;
  takesEffect(s: RunShape): boolean;
  why(s: RunShape): string;
}

const gpuOnly = (key: string, flag: string): Rule => ({
  key,
  flag,
  takesEffect: (s) => s.initiator === 'gpu',
  why: () => 'it applies to --initiator gpu (GPU threads build and submit the commands)',
});

const cpuOnly = (key: string, flag: string, why: string): Rule => ({ key, flag, takesEffect: (s) => s.initiator === 'cpu', why: () => why });

const pageCache = (key: string, flag: string): Rule => ({
  key,
  flag,
  takesEffect: (s) => s.initiator === 'cpu' && s.backends.some((b) => PAGE_CACHE_BACKENDS.has(b)),
  why: (s) =>
    `it concerns the page cache of files and block devices (the posix and io_uring backends); ${s.initiator === 'gpu' ? 'GPU threads drive the NVMe queues themselves' : `the ${s.backends.join(', ')} backend${s.backends.length > 1 ? 's' : ''} bypass${s.backends.length > 1 ? '' : 'es'} it`}`,
});

/** Why a kernel I/O option means nothing to a GPU run. */
const NO_KERNEL_PATH = 'GPU threads drive the NVMe queues themselves, with no kernel I/O path';

const RULES: readonly Rule[] = [
  {
    key: 'rwmixread',
    flag: '--rwmixread',
    takesEffect: (s) => MIXED_RW.has(s.rw),
    why: (s) => `it sets the read share of a mixed workload (--rw randrw or rw); --rw ${s.rw} only ${READ_ONLY_RW.has(s.rw) ? 'reads' : 'writes'}`,
  },
  { key: 'verifySpan', flag: '--verify-span', takesEffect: (s) => s.verify, why: () => 'it sets the region --verify checks; add --verify' },
  {
    key: 'seed',
    flag: '--seed',
    // The GPU's --verify pattern is seeded too; the CPU's pattern is not (it carries LBA and generation).
    takesEffect: (s) => RANDOM_RW.has(s.rw) || MIXED_RW.has(s.rw) || (s.initiator === 'gpu' && s.verify),
    why: (s) => `it seeds random offsets and the read/write mix; --rw ${s.rw} is sequential and not mixed`,
  },
  cpuOnly('warmup', '--warmup', 'a GPU run has no warm-up phase (a short calibration launch sizes a --time run)'),
  cpuOnly('direct', '--direct', NO_KERNEL_PATH),
  cpuOnly('fixedBuffers', '--fixed-buffers', NO_KERNEL_PATH),
  cpuOnly('hipri', '--hipri', NO_KERNEL_PATH),
  cpuOnly('buffers', '--buffers', NO_KERNEL_PATH),
  cpuOnly('backends', '--backends', 'a GPU sweep has no backend to compare (GPU threads drive the NVMe queues themselves)'),
  cpuOnly('percentiles', '--percentiles', "a GPU run reports the percentiles of its kernels' own histogram (p50, p99)"),
  cpuOnly('offset', '--offset', 'a GPU run spans the namespace from LBA 0 (--verify-span bounds it)'),
  cpuOnly('size', '--size', 'a GPU run spans the namespace from LBA 0 (--verify-span bounds it)'),
  pageCache('invalidate', '--invalidate'),
  pageCache('fadvise_hint', '--fadvise_hint'),
  gpuOnly('mode', '--mode'),
  gpuOnly('placement', '--placement'),
  gpuOnly('gpu', '--gpu'),
  gpuOnly('entries', '--entries'),
  gpuOnly('blockThreads', '--block-threads'),
  gpuOnly('gpuTimeoutMs', '--gpu-timeout-ms'),
  {
    key: 'blockThreads',
    flag: '--block-threads',
    takesEffect: (s) => s.mode === 'ticket',
    why: () => 'it sets the threads per block of --mode ticket; --mode block runs one thread per slot (--qd threads a block)',
  },
  {
    key: 'placement',
    flag: '--placement',
    takesEffect: (s) => !s.uri.startsWith(GPU_RESIDENT_SCHEME) || s.placement === 'device',
    why: (s) => `'${s.uri}' is the GPU-resident controller: it serves payloads in GPU memory only (--placement device)`,
  },
];

/** What `homi perf` and `homi perf sweep` hand over: their options, and which of them were given (explicitOptions). */
export interface CliRunOptions {
  rw: string;
  verify: boolean;
  initiator?: string;
  mode?: string;
  placement?: string;
  backend?: string;
  /** A sweep's comma-separated backends. */
  backends?: string;
  /** Attribute names of the options given on the command line; undefined: unknown, nothing is refused here. */
  explicit?: ReadonlySet<string>;
}

/** Refuse the first option given on the command line that the run would ignore: a UsageError (exit 2). */
export function refuseIgnoredOptions(uri: string, o: CliRunOptions): void {
  if (o.explicit === undefined) return;
  const s: RunShape = {
    initiator: o.initiator === 'gpu' ? 'gpu' : 'cpu',
    uri,
    rw: o.rw,
    verify: o.verify,
    mode: o.mode ?? 'block',
    placement: o.placement ?? 'host',
    backends: backendsOf(uri, o),
  };
  // With the backends unknown (a bad target, refused later with its reason), backend rules do not apply.
  const rules = s.backends.length === 0 ? RULES.filter((r) => r.key !== 'invalidate' && r.key !== 'fadvise_hint') : RULES;
  for (const r of rules) {
    if (o.explicit.has(r.key) && !r.takesEffect(s)) throw new UsageError(`${r.flag} would be ignored: ${r.why(s)}`);
  }
}

/** The CPU backends a run uses: a sweep's --backends, --backend, or the target's default ([] when the target is not understood). */
function backendsOf(uri: string, o: Pick<CliRunOptions, 'backend' | 'backends'>): string[] {
  if (o.backends !== undefined)
    return o.backends
      .split(',')
      .map((b) => b.trim())
      .filter((b) => b !== '');
  if (o.backend !== undefined) return [o.backend];
  try {
    return [defaultBackend(parseTarget(uri))];
  } catch {
    return [];
  }
}
