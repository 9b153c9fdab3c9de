#!/usr/bin/env node
// The VM harness's command line:
//   node dist/src/vm/cli.js provision
//   node dist/src/vm/cli.js host-tools [--scope unit,vm,bench] [--check] [--warn-only]
//   node dist/src/vm/cli.js run [options] -- <command...>
import { provision, ProvisionError } from './provision.js';
import { describeMissing, ensureHostTools, HOST_TOOLS, missingTools, systemProbe, TOOL_SCOPES, type ToolScope } from './host-tools.js';
import { runInGuest } from './run.js';
import type { GuestRunOptions } from './spec.js';
import { progress } from './paths.js';
import { parseIvshmemArg, parseNvmeSpec } from './nvme-arg.js';

const USAGE = `usage:
  homi-vm provision [--kernel p2p]       install QEMU etc., fetch the kernel, build the initramfs (cached)
  homi-vm host-tools [options]           install the system tools the suites run when missing (apt-get, as
                                         root on Debian), or say which are missing and how to install them
  homi-vm run [options] -- <command...>  boot a guest, run the command there (bash, in --cwd), power off
  homi-vm qemu-command [options]         print the QEMU command line 'run' would use

host-tools options:
  --scope LIST       comma-separated: unit (the suites but the VM), vm (the real-kernel suite), bench
                     (npm run bench:vm); default unit,vm, or unit when HOMI_SKIP_VM=1
  --check            only say what is missing (exit 1 if anything is), install nothing
  --warn-only        when the tools cannot be installed here, say so and exit 0 (the suites skip what needs them)

run options:
  --nvme SPEC        add an NVMe controller (repeatable). SPEC is comma-separated key=value:
                       serial=S (default HOMI<n>), ns=SIZE[:LBS[:PBS]] (repeatable with '+', e.g.
                       ns=64M:512+128M:4096; SIZE in M or G, default 64M:512; ns=0 for none),
                       qpairs=N (max_ioqpairs), msix=N (msix_qsize), mdts=N, subsys=ID,
                       vfs=N,vq=N,vi=N (SR-IOV: sriov_max_vfs, sriov_vq_flexible, sriov_vi_flexible),
                       image=PATH (existing image for the first namespace)
                       shared=1 (every namespace shared: QEMU nvme-ns shared=on, for SR-IOV namespace attachment)
                       cmb=MIB (Controller Memory Buffer, QEMU cmb_size_mb; legacycmb=1 for QEMU legacy-cmb)
                       switch=ID (controllers naming the same ID sit behind one emulated PCIe switch)
  --kernel NAME      guest kernel: default (Debian 6.12) or p2p (a newer Debian kernel with CONFIG_PCI_P2PDMA)
  --iommu            intel-iommu + intel_iommu=on (for VFIO)
  --ivshmem SPEC     add a device-memory stand-in (repeatable): ID:SIZE[:FILE], SIZE a power of two in M
                       (e.g. gpu0:16M): QEMU ivshmem-plain (1af4:1110) whose BAR2 is the host FILE (created
                       when missing; default a new file under the temp folder), kept after the run, path printed
  --fwd H:G          user-mode network (virtio-net, guest 10.0.2.15) with host 127.0.0.1:H -> guest port G (repeatable)
  --writable         writable root: overlay over the host root, writes kept in guest memory only
  --modules LIST     comma-separated modules to load (default nvme)
  --hugepages MIB    reserve 2 MiB hugepages, mounted on /dev/hugepages
  --mem MIB          guest memory (default 2048)
  --cpus N           vCPUs (default 2)
  --tcg-7.2-barriers QEMU 7.2's own TCG mode: with 1 vCPU the guest's memory barriers are dropped and the kernel
                     nvme driver loses doorbells under load (only to reproduce that; docs/results/kqd/experiments.md)
  --cwd DIR          folder to run the command in (default the current folder)
  --env K=V          environment variable for the command (repeatable)
  --append ARG       extra kernel argument (repeatable)
  --timeout SECONDS  hard limit, QEMU killed after it (default 300)
  --console          echo the serial console (kernel messages) to stderr
  --keep             keep the run's temp folder (images, logs)
  --json             print the result as JSON on stdout instead of the command's output
The exit status is the command's, or 124 on timeout, 125 when the guest failed before or around it.`;

interface Parsed {
  opts: GuestRunOptions;
  showConsole: boolean;
  json: boolean;
}

function parseRunArgs(argv: string[], needCommand: boolean): Parsed {
  const dd = argv.indexOf('--');
  const flags = dd >= 0 ? argv.slice(0, dd) : argv;
  const cmd = dd >= 0 ? argv.slice(dd + 1) : [];
  if (needCommand && cmd.length === 0) throw new Error('run: no command (put it after --)');
  const opts: GuestRunOptions = { command: cmd.length === 1 ? cmd[0] : cmd.map(quoteArg).join(' '), nvme: [], timeoutMs: 300_000 };
  let showConsole = false;
  let json = false;
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i];
    const val = (): string => {
      const v = flags[++i];
      if (v === undefined) throw new Error(`${f} needs a value`);
      return v;
    };
    const num = (): number => {
      const v = val();
      if (!/^\d+$/.test(v)) throw new Error(`${f} needs a number, got ${v}`);
      return Number(v);
    };
    switch (f) {
      case '--nvme':
        opts.nvme!.push(parseNvmeSpec(val(), opts.nvme!.length));
        break;
      case '--iommu':
        opts.iommu = true;
        break;
      case '--ivshmem':
        opts.ivshmem = [...(opts.ivshmem ?? []), parseIvshmemArg(val())];
        break;
      case '--kernel': {
        const v = val();
        if (v !== 'default' && v !== 'p2p') throw new Error(`--kernel must be default or p2p, got ${v}`);
        opts.kernel = v;
        break;
      }
      case '--fwd': {
        const m = /^(\d+):(\d+)$/.exec(val());
        if (!m) throw new Error('--fwd needs HOSTPORT:GUESTPORT');
        opts.net = { hostForward: [...(opts.net?.hostForward ?? []), { host: Number(m[1]), guest: Number(m[2]) }] };
        break;
      }
      case '--writable':
        opts.writableRoot = true;
        break;
      case '--modules':
        opts.modules = val()
          .split(',')
          .filter((s) => s.length > 0);
        break;
      case '--hugepages':
        opts.hugepagesMiB = num();
        break;
      case '--mem':
        opts.memoryMiB = num();
        break;
      case '--cpus':
        opts.cpus = num();
        break;
      case '--tcg-7.2-barriers':
        opts.tcgParallel = false;
        break;
      case '--cwd':
        opts.cwd = val();
        break;
      case '--env': {
        const v = val();
        const eq = v.indexOf('=');
        if (eq <= 0) throw new Error(`--env needs K=V, got ${v}`);
        opts.env = { ...(opts.env ?? {}), [v.slice(0, eq)]: v.slice(eq + 1) };
        break;
      }
      case '--append':
        opts.kernelArgs = [...(opts.kernelArgs ?? []), val()];
        break;
      case '--timeout':
        opts.timeoutMs = num() * 1000;
        break;
      case '--console':
        showConsole = true;
        break;
      case '--keep':
        opts.keepTemp = true;
        break;
      case '--json':
        json = true;
        break;
      default:
        throw new Error(`unknown option ${f}`);
    }
  }
  return { opts, showConsole, json };
}

/** One argument, quoted for bash when it needs it. */
function quoteArg(a: string): string {
  return /^[A-Za-z0-9_\-+=/.,:@%]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

/** `host-tools`: provision (or check) the system tools of the given scopes. */
async function hostTools(argv: string[]): Promise<number> {
  let scopes: ToolScope[] = process.env.HOMI_SKIP_VM === '1' ? ['unit'] : ['unit', 'vm'];
  let check = false;
  let warnOnly = false;
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    if (f === '--check') check = true;
    else if (f === '--warn-only') warnOnly = true;
    else if (f === '--scope') {
      const list = (argv[++i] ?? '').split(',').filter((s) => s !== '');
      const bad = list.find((s) => !(TOOL_SCOPES as readonly string[]).includes(s));
      if (list.length === 0 || bad !== undefined) throw new Error(`--scope: '${bad ?? ''}' is not one of ${TOOL_SCOPES.join(', ')}`);
      scopes = list as ToolScope[];
    } else throw new Error(`host-tools: unknown option ${f}`);
  }
  const count = HOST_TOOLS.filter((t) => scopes.includes(t.scope)).length;
  if (check) {
    const probe = systemProbe();
    const missing = missingTools(scopes, probe);
    if (missing.length > 0) {
      process.stderr.write(`[homi-vm] ${describeMissing(missing, `--check, scope ${scopes.join(',')}`, probe)}\n`);
      return 1;
    }
  } else {
    try {
      const installed = await ensureHostTools(scopes);
      if (installed.length > 0) progress(`installed ${installed.join(' ')}`);
    } catch (e) {
      if (!(warnOnly && e instanceof ProvisionError)) throw e;
      process.stderr.write(`[homi-vm] warning: ${e.message}\n[homi-vm] the tests that need them will skip or fail\n`);
      return 0;
    }
  }
  progress(`host tools: all ${count} present (${scopes.join(', ')})`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (!verb || verb === '-h' || verb === '--help' || verb === 'help') {
    process.stdout.write(USAGE + '\n');
    return verb ? 0 : 2;
  }
  if (verb === 'provision') {
    const ki = rest.indexOf('--kernel');
    const flavor = ki >= 0 ? rest[ki + 1] : 'default';
    if (flavor !== 'default' && flavor !== 'p2p') throw new Error(`--kernel must be default or p2p, got ${flavor ?? '(nothing)'}`);
    const p = await provision(flavor);
    process.stdout.write(
      JSON.stringify({ kernel: p.kernel.release, package: `${p.kernel.package} ${p.kernel.packageVersion}`, initramfs: p.initramfs, qemu: `${p.qemu} ${p.qemuVersion}`, ms: p.ms }, null, 2) + '\n',
    );
    return 0;
  }
  if (verb === 'host-tools') return hostTools(rest);
  if (verb === 'qemu-command') {
    const { opts } = parseRunArgs(rest, false);
    const { buildQemuPlan } = await import('./qemu.js');
    const p = await provision(opts.kernel ?? 'default');
    const plan = buildQemuPlan(opts, { qemu: p.qemu, vmlinuz: p.kernel.vmlinuz, initramfs: p.initramfs, jobShare: '<job-share>', imageDir: '<tmp>', ivshmemDir: '<tmp>' });
    process.stdout.write(plan.args.map(quoteArg).join(' ') + '\n');
    return 0;
  }
  if (verb === 'run') {
    const { opts, showConsole, json } = parseRunArgs(rest, true);
    // Stream the command's own output live; the serial console only with --console.
    opts.onOutput = (line) => {
      if (!json) process.stdout.write(line + '\n');
    };
    if (showConsole) opts.onConsole = (line) => process.stderr.write(line + '\n');
    const ac = new AbortController();
    opts.signal = ac.signal;
    const onSig = (): void => {
      process.stderr.write('[homi-vm] interrupted\n');
      ac.abort();
    };
    process.on('SIGINT', onSig);
    process.on('SIGTERM', onSig);
    const r = await runInGuest(opts);
    for (const f of r.ivshmem) progress(`ivshmem ${f.id}: BAR2 is the host file ${f.file} (${f.bytes} bytes, kept)`);
    if (json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    if (r.exitCode === null) {
      process.stderr.write(`[homi-vm] ${r.error ?? 'no exit code'}\n`);
      if (!showConsole) process.stderr.write(`[homi-vm] last console lines:\n${r.consoleLog.split('\n').slice(-40).join('\n')}\n`);
      return r.timedOut ? 124 : ac.signal.aborted ? 130 : 125;
    }
    return r.exitCode;
  }
  process.stderr.write(`unknown verb ${verb}\n${USAGE}\n`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof ProvisionError) process.stderr.write(`[homi-vm] provisioning failed: ${e.message}\n`);
    else process.stderr.write(`[homi-vm] ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = e instanceof ProvisionError ? 3 : 2;
  },
);
