#!/usr/bin/env node
/** The `homi` command line. One file per verb in src/cli. */
import { Command, CommanderError, Option } from 'commander';
import { formatIdentify, identifyReport } from './identify.js';
import { perfCommand } from './perf.js';
import { reportAndExit, EXIT_USAGE, UsageError } from './errors.js';
import { extentsCommand } from '../extents/cli.js';

const program = new Command();
program
  .name('homi')
  .description('HOMI: Host Orchestrated Multipath I/O. A user-space NVMe driver core and an embedded NVMe controller.')
  .version('0.1.0')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `homi: ${s.slice(7)}` : s) })
  .showHelpAfterError(false);

program
  .command('identify')
  .description('bring a controller up and print Identify data for it and its namespaces')
  .argument('<uri>', "device URI, e.g. 'emu://?size=1GiB'")
  .option('--json', 'print one JSON object')
  .action(async (uri: string, o: { json?: boolean }) => {
    const r = await identifyReport(uri);
    process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${formatIdentify(r)}\n`);
  });

program
  .command('perf')
  .description('synthetic benchmark through the driver core')
  .argument('<uri>', "device URI, e.g. 'emu://?size=1GiB&null=1'")
  .addOption(new Option('--rw <mode>', 'randread|randwrite|read|write|randrw|rw').default('randread'))
  .option('--bs <bytes>', 'I/O size', '4096')
  .option('--qd <n>', 'queue depth per queue', '32')
  .option('--nqueues <n>', 'I/O queue pairs driven by the one driver thread', '1')
  .option('--time <seconds>', 'run for this long (default 5 s unless --ios is given)')
  .option('--ios <n>', 'run this many I/Os')
  .option('--warmup <seconds>', 'warm-up before measuring', '0.5')
  .option('--rwmixread <pct>', 'read percentage for randrw/rw', '50')
  .option('--nsid <n>', 'namespace', '1')
  .option('--verify', 'write self-describing patterns and check every read', false)
  .option('--verify-span <bytes>', 'bytes of the namespace used (and prefilled) by --verify', '64MiB')
  .option('--seed <n>', 'random seed', '1')
  .option('--json', 'print one JSON object', false)
  .action(async (uri: string, o: Parameters<typeof perfCommand>[1]) => {
    process.exitCode = await perfCommand(uri, o);
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

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    process.exit(e.exitCode === 0 ? 0 : EXIT_USAGE);
  }
  reportAndExit(e);
}
