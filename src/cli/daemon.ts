/** `homi daemon [--config F]` (also the `homid` program): run homid in the foreground until SIGTERM/SIGINT. */
import { pino } from 'pino';
import { loadConfig } from '../daemon/config.js';
import { startHomidServer } from '../daemon/server.js';

export async function daemonCommand(o: { config?: string; socket?: string }): Promise<number> {
  const config = loadConfig(o.config);
  const logger = pino({ level: config.logLevel, name: 'homid' });
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
