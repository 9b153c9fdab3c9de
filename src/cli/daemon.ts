/** `homi daemon [--config F]` (also the `homid` program): run homid in the foreground until SIGTERM/SIGINT. */
import { existsSync } from 'node:fs';
import { DEFAULT_CONFIG_PATH, loadConfig } from '../daemon/config.js';
import { startHomidServer } from '../daemon/server.js';
import { homidLogger } from './log-format.js';

export async function daemonCommand(o: { config?: string; socket?: string }): Promise<number> {
  const config = loadConfig(o.config);
  const logger = homidLogger(config.logLevel);
  if (config.devices.length === 0) {
    const source = o.config ?? (existsSync(DEFAULT_CONFIG_PATH) ? DEFAULT_CONFIG_PATH : `built-in defaults (no ${DEFAULT_CONFIG_PATH})`);
    logger.warn({ config: source }, 'no device configured: homid will serve no queue pairs; add a [[device]] section (see contrib/homid.example.toml)');
  }
  const srv = await startHomidServer(config, { logger, ...(o.socket ? { socket: o.socket } : {}) });
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      logger.info({ signal: sig }, 'stopping: reclaiming every queue pair, shutting devices down');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await srv.close();
  return 0;
}
