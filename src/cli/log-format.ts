/**
 * How homid logs: readable lines on a terminal, pino's JSON lines otherwise (a pipe, a file, the journal), so a
 * person watching it reads `12:34:56.789 WARN  homid: message key=value` and a log collector still gets JSON.
 * HOMID_LOG_FORMAT=pretty|json overrides the choice; NO_COLOR turns the level colours off.
 */
import { pino, type Logger } from 'pino';
import { UsageError } from './errors.js';

export type LogFormat = 'pretty' | 'json';

/** The environment variable that overrides the format chosen from the output. */
export const LOG_FORMAT_ENV = 'HOMID_LOG_FORMAT';

/** pino's level numbers, as printed. */
const LEVEL_NAMES: Readonly<Record<number, string>> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** ANSI foreground colour of each level: grey, cyan, green, yellow, red, magenta. */
const LEVEL_COLORS: Readonly<Record<number, number>> = { 10: 90, 20: 36, 30: 32, 40: 33, 50: 31, 60: 35 };
/** The width the level name is padded to, so messages line up. */
const LEVEL_WIDTH = 5;
/** pino's own fields of a record: shown in the line's head (or not at all), never as key=value. */
const OWN_FIELDS = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg']);

/** Readable lines when the log goes to a terminal, JSON otherwise; $HOMID_LOG_FORMAT decides when set. */
export function chooseLogFormat(out: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): LogFormat {
  const forced = env[LOG_FORMAT_ENV];
  if (forced === 'pretty' || forced === 'json') return forced;
  if (forced !== undefined && forced !== '') throw new UsageError(`${LOG_FORMAT_ENV}: '${forced}' is not pretty or json`);
  return out.isTTY === true ? 'pretty' : 'json';
}

function two(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

/** A field's value in a line: plain when it is a word, JSON otherwise; an error by its message. */
function formatValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v !== null && typeof v === 'object' && typeof (v as { message?: unknown }).message === 'string') return JSON.stringify((v as { message: string }).message);
  return JSON.stringify(v) ?? String(v);
}

/** One pino record as a line (no newline): local time, level, `name:`, the message, then the other fields as key=value. */
export function formatLogRecord(rec: Record<string, unknown>, color: boolean): string {
  const level = typeof rec['level'] === 'number' ? rec['level'] : 30;
  const t = new Date(typeof rec['time'] === 'number' ? rec['time'] : Date.now());
  const time = `${two(t.getHours())}:${two(t.getMinutes())}:${two(t.getSeconds())}.${two(t.getMilliseconds(), 3)}`;
  const name = (LEVEL_NAMES[level] ?? `L${level}`).padEnd(LEVEL_WIDTH);
  const shown = color ? `\x1b[${LEVEL_COLORS[level] ?? 0}m${name}\x1b[39m` : name;
  const fields = Object.entries(rec)
    .filter(([k]) => !OWN_FIELDS.has(k))
    .map(([k, v]) => `${k}=${formatValue(v)}`);
  const who = typeof rec['name'] === 'string' ? `${rec['name']}: ` : '';
  return [`${time} ${shown} ${who}${typeof rec['msg'] === 'string' ? rec['msg'] : ''}`, ...fields].join(' ');
}

/** A pino destination that writes each JSON record it is given as a readable line. */
export function prettyDestination(write: (s: string) => void, color: boolean): { write(chunk: string): void } {
  return {
    write(chunk: string): void {
      for (const line of chunk.split('\n')) {
        if (line === '') continue;
        let rec: unknown;
        try {
          rec = JSON.parse(line);
        } catch {
          write(`${line}\n`);
          continue;
        }
        write(`${formatLogRecord(rec as Record<string, unknown>, color)}\n`);
      }
    },
  };
}

/** homid's logger on standard output, in the format chooseLogFormat picks for it. */
export function homidLogger(level: string, out: NodeJS.WriteStream = process.stdout, env: NodeJS.ProcessEnv = process.env): Logger {
  const options = { level, name: 'homid' };
  if (chooseLogFormat(out, env) === 'json') return out === process.stdout ? pino(options) : pino(options, out);
  const color = out.isTTY === true && (env['NO_COLOR'] ?? '') === '';
  return pino(
    options,
    prettyDestination((s) => out.write(s), color),
  );
}
