#!/usr/bin/env node
/** The `homi` command line. One file per verb in src/cli. */
import { Command, CommanderError, Option } from 'commander';
import { formatIdentify, identifyReport } from './identify.js';
import { perfCommand, sweepCommand } from './perf.js';
import { reportAndExit, EXIT_USAGE, UsageError } from './errors.js';
import { extentsCommand } from '../extents/cli.js';
import { daemonCommand } from './daemon.js';
import { statusCommand } from './status.js';
import { sriovDisableCommand, sriovEnableCommand, sriovStatusCommand } from './sriov.js';
import { ublkAddCommand, ublkDelCommand, ublkListCommand } from './ublk.js';
import { addFioAliases } from './fio-options.js';
import { listCommand } from './list.js';
import { smartLogCommand } from './smart-log.js';
import { errorLogCommand } from './error-log.js';
import { explicitOptions } from './refuse.js';
import { loadCommand } from './load.js';
import { loadGenMain } from '../bench/load-gen.js';
import { DEFAULT_DEPTH as DEFAULT_LOAD_DEPTH } from '../load/defaults.js';

const program = new Command();
program
  .name('homi')
  .description('HOMI: Host Orchestrated Multipath I/O. A user-space NVMe driver core and an embedded NVMe controller.')
  .version('0.1.0')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `homi: ${s.slice(7)}` : s) })
  .showHelpAfterError(false)
  .enablePositionalOptions();

program
  .command('list')
  .description('list NVMe devices: PCI functions (driver, IOMMU group), kernel controllers and namespaces, homid devices')
  .option('--json', 'print one JSON object', false)
  .option('--socket <path>', 'homid socket (default $HOMID_SOCKET or /run/homi/homid.sock)')
  .action(async (o: { json: boolean; socket?: string }) => {
    process.exitCode = await listCommand(o);
  });

program
  .command('identify')
  .description('print Identify data (nvme-cli id-ctrl / id-ns field names) for a controller and its namespaces')
  .argument('<uri|/dev/nvmeX>', "device URI (the user-space driver brings it up), e.g. 'emu://?size=1GiB', or a kernel NVMe device")
  .option('--json', 'print one JSON object')
  .action(async (uri: string, o: { json?: boolean }) => {
    const r = await identifyReport(uri);
    process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${formatIdentify(r)}\n`);
  });

program
  .command('load')
  .description('load files into host or GPU memory through a read path, and measure (files, MiB/s, per-file latency)')
  .argument('<inputs...>', 'files, directories (every regular file below) or globs')
  .option('--path <paths>', 'posix|io_uring|driver|gpu, or several comma-separated (run one after the other)', 'io_uring')
  .option('--to <target>', 'host (pinned host memory) or gpu (GPU memory)', 'host')
  .option('--qd <n>', `I/Os in flight (gpu: GPU threads per queue pair); default ${DEFAULT_LOAD_DEPTH}`)
  .option('--chunk <size>', 'largest read (e.g. 1MiB; the driver and gpu paths may use less: MDTS, slot size)')
  .option('--direct', 'O_DIRECT (posix; io_uring uses it by default)')
  .option('--no-direct', 'buffered reads through the page cache (posix default; io_uring)')
  .option('--cold', "drop each file's page cache before each path (default for buffered paths)")
  .option('--no-cold', 'leave the page cache as it is (a warm run)')
  .option('--socket <path>', 'homid socket (driver, gpu; default $HOMID_SOCKET or /run/homi/homid.sock)')
  .option('--device <name>', "homid's device holding the files (driver, gpu)")
  .option('--mode <mode>', 'driver: raw (the queue pair in this process, default) or mediated')
  .option('--queues <n>', 'gpu: GPU queue pairs (thread blocks)')
  .option('--verify', 'compare every loaded file with a normal read', false)
  .option('--json', 'one JSON object per path on stdout', false)
  .option('--interval <seconds>', 'progress line interval when stderr is not a terminal', '1')
  .option('--no-progress', 'no progress output')
  .action(async (inputs: string[], o: Parameters<typeof loadCommand>[1]) => {
    process.exitCode = await loadCommand(inputs, o);
  });

program
  .command('dataset')
  .description('write a FIL-like dataset for homi load (every file a valid safetensors file; manifest.json with sha256)')
  .argument('<set>', 'small (many ~110 KiB files) | medium (7-8 MiB files) | large (a few multi-GiB files) | safetensors (shards)')
  .argument('<dir>', 'where to write it')
  .option('--files <n>', 'number of files (default: the preset)')
  .option('--bytes <size>', 'bytes per file (default: the preset)')
  .option('--scale <x>', 'scale the preset (file count for small/medium, file size for large/safetensors)')
  .option('--seed <n>', 'seed of the contents', '1')
  .action((set: string, dir: string, o: { files?: string; bytes?: string; scale?: string; seed: string }) => {
    const argv = [set, dir, '--seed', o.seed];
    if (o.files !== undefined) argv.push('--files', o.files);
    if (o.bytes !== undefined) argv.push('--bytes', o.bytes);
    if (o.scale !== undefined) argv.push('--scale', o.scale);
    process.exitCode = loadGenMain(argv);
  });

const BACKEND_HELP = 'posix|io_uring|io_uring_cmd|driver (default: driver for emu:/pci:, io_uring for files and block devices, io_uring_cmd for /dev/ngXnY)';
function perfCommonOptions(c: Command): Command {
  c.addOption(new Option('--rw <mode>', 'randread|randwrite|read|write|randrw|rw').default('randread'))
    .option('--nqueues <n>', 'queue sets (I/O queue pairs, rings) driven by each thread (gpu sweep: a comma-separated list)', '1')
    .option('--threads <n>', 'worker threads, each with its own queue sets (results merged)', '1')
    .option('--time <seconds>', 'run for this long (default 5 s unless --ios is given)')
    .option('--ios <n>', 'run this many I/Os')
    .option('--warmup <seconds>', 'warm-up before measuring', '0.5')
    .option('--rwmixread <pct>', 'read percentage for randrw/rw', '50')
    .option('--nsid <n>', 'namespace', '1')
    .option('--direct', 'O_DIRECT (posix, io_uring)', false)
    .option('--fixed-buffers', 'io_uring registered buffers (READ_FIXED / WRITE_FIXED)', false)
    .option('--hipri', 'polled completions (IORING_SETUP_IOPOLL; needs --direct and a device with poll queues)', false)
    .option(
      '--buffers <where>',
      "data buffers in host memory (host, the default), in a memory BAR of another PCI function (peer:<bdf>[:bar], BAR 2 by default; driver on pci:, peer-to-peer DMA) or in a PCI function's p2pmem (p2pmem:DDDD:BB:DD.F; io_uring --direct)",
    )
    .option('--verify', 'write self-describing patterns and check every read', false)
    .option('--verify-span <bytes>', 'bytes of the namespace used (and prefilled) by --verify', '64MiB')
    .option('--seed <n>', 'random seed', '1')
    .option('--json', 'print one JSON object', false)
    .option('--percentiles <list>', 'latency percentiles to report, e.g. 50,90,99,99.9,99.99 (default 50,99,99.9)')
    .option('--invalidate <0|1>', 'files and block devices: drop their page cache before the run (1, as fio) or keep it (0)', '1')
    .option('--fadvise_hint <0|1>', 'files and block devices: posix_fadvise the access pattern (1, as fio: RANDOM, no readahead, for random I/O) or not (0)', '1')
    .option('--size <bytes>', 'bytes of the target the run uses (default: to its end)')
    .option('--offset <bytes>', 'first byte of the region the run uses', '0')
    .addOption(new Option('--initiator <who>', 'who builds and submits the commands: cpu, or gpu (CUDA kernels ring the doorbells)').choices(['cpu', 'gpu']).default('cpu'))
    .addOption(new Option('--mode <shape>', 'gpu: submission shape: block (a thread block per queue, a slot per thread) or ticket (per-thread tickets)').choices(['block', 'ticket']).default('block'))
    .addOption(new Option('--placement <where>', 'gpu: payloads in host memory (read in place) or device memory (emulated P2P on emu://)').choices(['host', 'device']).default('host'))
    .option('--gpu <n>', 'gpu: CUDA device ordinal', '0')
    .option('--entries <n>', 'gpu: SQ/CQ entries per queue (a power of two above --qd)')
    .option('--block-threads <n>', 'gpu ticket mode: threads per block (default min(qd, 256))')
    .option('--gpu-timeout-ms <ms>', 'gpu: deadline of one wait in the kernels', '2000');
  return addFioAliases(c);
}

const perf = program
  .command('perf')
  .description('synthetic benchmark through one I/O path (the user-space driver, io_uring, io_uring_cmd or pread/pwrite)')
  .argument('<uri>', "device URI or path: 'emu://?size=1GiB&null=1', /dev/nvme0n1, file:/tmp/x.img?size=1GiB")
  .option('--backend <name>', BACKEND_HELP)
  .option('--bs <bytes>', 'I/O size', '4096')
  .option('--qd <n>', 'queue depth per queue', '32')
  .enablePositionalOptions();
perfCommonOptions(perf).action(async (uri: string, o: Parameters<typeof perfCommand>[1], cmd: Command) => {
  process.exitCode = await perfCommand(uri, { ...o, explicit: explicitOptions(cmd) });
});

const sweep = perf
  .command('sweep')
  .description('run perf over a grid of backends x block sizes x queue depths; write results.json and a self-contained report.html')
  .argument('<uri>', 'device URI or path, as for perf')
  .option('--backends <list>', `comma-separated backends (${BACKEND_HELP})`)
  .option('--bs <list>', 'comma-separated I/O sizes', '4096')
  .option('--qd <list>', 'comma-separated queue depths', '1,2,4,8,16,32,64,128')
  .option('--out <dir>', 'output directory (default ./homi-sweep-<timestamp>/)');
perfCommonOptions(sweep).action(async (uri: string, o: Parameters<typeof sweepCommand>[1], cmd: Command) => {
  process.exitCode = await sweepCommand(uri, { ...o, explicit: explicitOptions(cmd) });
});

program
  .command('extents')
  .description('map a file to device extents: FIEMAP on a mounted file system, or decode an XFS / ext4 image')
  .argument('<path>', 'a file (FIEMAP), or with --image the path inside the image')
  .option('--image <device-or-image>', 'decode this block device or image instead of asking the kernel')
  .addOption(new Option('--fs <type>', 'file system of the image (detected when omitted)').choices(['xfs', 'ext4']))
  .option('--sync', 'FIEMAP_FLAG_SYNC: write dirty data before mapping', false)
  .option('--json', 'print one JSON object', false)
  .action(async (path: string, o: { image?: string; fs?: 'xfs' | 'ext4'; sync: boolean; json: boolean }) => {
    if (o.image === undefined && o.fs !== undefined) throw new UsageError('--fs needs --image');
    const opts = o.image === undefined ? { file: path, json: o.json, sync: o.sync } : { image: o.image, path, json: o.json, sync: o.sync, ...(o.fs ? { fs: o.fs } : {}) };
    process.exitCode = await extentsCommand(opts, (s) => process.stdout.write(`${s}\n`));
  });

program
  .command('daemon')
  .description('run homid: bring configured devices up, serve queue pairs, mediated queues and file extents on a Unix socket')
  .option('--config <file>', 'TOML configuration (default /etc/homi/homid.toml; built-in defaults when absent)')
  .option('--socket <path>', 'override the socket path of the configuration')
  .action(async (o: { config?: string; socket?: string }) => {
    process.exitCode = await daemonCommand(o);
  });

program
  .command('smart-log')
  .description('print the SMART / Health Information log page (nvme-cli smart-log field names)')
  .argument('<uri|/dev/nvmeX>', 'device URI or kernel NVMe device')
  .option('--nsid <n>', 'namespace (default: the whole controller, 0xffffffff)')
  .option('--json', 'print one JSON object', false)
  .action(async (target: string, o: { nsid?: string; json: boolean }) => {
    process.exitCode = await smartLogCommand(target, o);
  });

program
  .command('error-log')
  .description('print the Error Information log page (nvme-cli error-log field names)')
  .argument('<uri|/dev/nvmeX>', 'device URI or kernel NVMe device')
  .option('--entries <n>', 'entries to read (default: all the controller keeps, ELPE + 1)')
  .option('--json', 'print one JSON object', false)
  .action(async (target: string, o: { entries?: string; json: boolean }) => {
    process.exitCode = await errorLogCommand(target, o);
  });

program
  .command('status')
  .description("show homid's devices, queue pairs per client and class, I/O counters and cached extent maps")
  .option('--json', 'print one JSON object', false)
  .option('--socket <path>', 'homid socket (default $HOMID_SOCKET or /run/homi/homid.sock)')
  .action(async (o: { json: boolean; socket?: string }) => {
    process.exitCode = await statusCommand(o);
  });

const sriov = program.command('sriov').description('SR-IOV: a PF kept by the kernel, its virtual functions, their resources and holders');
sriov
  .command('status')
  .description('PFs homid manages (or one PF directly with --pf): secondary controllers, VQ / VI resources, namespaces, holders')
  .option('--pf <address>', 'one PF directly through the kernel admin passthrough (root), not through homid')
  .option('--json', 'print one JSON object', false)
  .option('--socket <path>', 'homid socket (default $HOMID_SOCKET or /run/homi/homid.sock)')
  .action(async (o: { pf?: string; json: boolean; socket?: string }) => {
    process.exitCode = await sriovStatusCommand(o);
  });
sriov
  .command('enable')
  .description('enable VFs on a PF (driver autoprobe off, no namespace attached); the PF stays with the kernel')
  .requiredOption('--pf <address>', 'the PF')
  .requiredOption('--vfs <n>', 'VFs to enable')
  .action(async (o: { pf: string; vfs: string }) => {
    process.exitCode = await sriovEnableCommand(o);
  });
sriov
  .command('disable')
  .description('take every secondary controller offline, return its resources, disable the VFs')
  .requiredOption('--pf <address>', 'the PF')
  .action(async (o: { pf: string }) => {
    process.exitCode = await sriovDisableCommand(o);
  });

const ublk = program.command('ublk').description('ublk block devices homid serves to the kernel from its own queue pairs (a namespace or an LBA range of it)');
ublk
  .command('list')
  .description('the ublk devices homid serves: block device, state, range, queue pairs, counters')
  .option('--json', 'print one JSON object', false)
  .option('--socket <path>', 'homid socket (default $HOMID_SOCKET or /run/homi/homid.sock)')
  .action(async (o: { json: boolean; socket?: string }) => {
    process.exitCode = await ublkListCommand(o);
  });
ublk
  .command('add')
  .description('serve an LBA range of a namespace as /dev/ublkb<id> (root)')
  .requiredOption('--device <name>', "homid's device name")
  .requiredOption('--id <n>', 'ublk device id (/dev/ublkb<id>)')
  .option('--nsid <n>', 'namespace (default 1)')
  .option('--start <lba>', 'first LBA of the range (default 0)')
  .option('--count <lbas>', 'LBAs (default: to the end of the namespace)')
  .option('--queues <n>', 'ublk queues, one NVMe queue pair each (default 1)')
  .option('--depth <n>', 'tags per queue (default 16)')
  .option('--max-io-kib <n>', 'largest request in KiB (default 64)')
  .option('--json', 'print one JSON object', false)
  .option('--socket <path>', 'homid socket (default $HOMID_SOCKET or /run/homi/homid.sock)')
  .action(async (o: { device: string; id: string; nsid?: string; start?: string; count?: string; queues?: string; depth?: string; maxIoKib?: string; socket?: string; json?: boolean }) => {
    process.exitCode = await ublkAddCommand(o);
  });
ublk
  .command('del')
  .description('remove /dev/ublkb<id> (root); refused while its file system is mounted unless --force')
  .requiredOption('--id <n>', 'ublk device id')
  .option('--force', 'remove it even while mounted (the kernel fails its I/O from then on)', false)
  .option('--socket <path>', 'homid socket (default $HOMID_SOCKET or /run/homi/homid.sock)')
  .action(async (o: { id: string; force: boolean; socket?: string }) => {
    process.exitCode = await ublkDelCommand(o);
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    process.exit(e.exitCode === 0 ? 0 : EXIT_USAGE);
  }
  reportAndExit(e);
}
