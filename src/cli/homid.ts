#!/usr/bin/env node
/** `homid`: the HOMI daemon, the same as `homi daemon`; its errors say `homid: ...`. */
import { Command, CommanderError } from 'commander';
import { daemonCommand } from './daemon.js';
import { EXIT_USAGE, reportAndExit } from './errors.js';

const PROGRAM = 'homid';

const program = new Command()
  .name(PROGRAM)
  .description("HOMI daemon: owns each controller's admin queue, provisions queue pairs, mediates, serves extents")
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `${PROGRAM}: ${s.slice(7)}` : s) })
  .option('--config <file>', 'TOML configuration (default /etc/homi/homid.toml, built-in defaults when missing)')
  .option('--socket <path>', 'Unix socket path (overrides the configuration)')
  .action(async (o: { config?: string; socket?: string }) => {
    process.exitCode = await daemonCommand(o);
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : EXIT_USAGE);
  reportAndExit(e, PROGRAM);
}
