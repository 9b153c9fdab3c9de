#!/usr/bin/env node
/** `homid`: the HOMI daemon, the same as `homi daemon`. */
import { Command } from 'commander';
import { daemonCommand } from './daemon.js';
import { reportAndExit } from './errors.js';

const program = new Command()
  .name('homid')
  .description("HOMI daemon: owns each controller's admin queue, provisions queue pairs, mediates, serves extents")
  .option('--config <file>', 'TOML configuration (default /etc/homi/homid.toml, built-in defaults when missing)')
  .option('--socket <path>', 'Unix socket path (overrides the configuration)')
  .action(async (o: { config?: string; socket?: string }) => {
    process.exitCode = await daemonCommand(o);
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  reportAndExit(e);
}
