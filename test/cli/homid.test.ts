/**
 * homid as a person runs it: readable log lines on a terminal (under `script`, which gives it a pty), JSON lines
 * when its output is piped, a warning when no device is configured, its own name on its errors; and `homi
 * status` without a daemon saying how to start one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chooseLogFormat, formatLogRecord, LOG_FORMAT_ENV, prettyDestination } from '../../src/cli/log-format.js';
import { explainConnectError, homidSocket } from '../../src/cli/status.js';
import { IpcError, IpcErrorCode } from '../../src/ipc/errors.js';
import { DEFAULT_SOCKET } from '../../src/ipc/messages.js';
import { haveTool } from '../extents/fixtures.js';
import { CLI_DIR, spawnProc, type Proc } from '../daemon/procs.js';
import { runHomi } from './run.js';

const HOMID = join(CLI_DIR, 'homid.js');
const LINE_TIMEOUT_MS = 30_000;

/** A folder with a configuration that names a socket in it and no device. */
function noDeviceConfig(): { dir: string; config: string; socket: string } {
  const dir = mkdtempSync(join(tmpdir(), 'homi-homid-log-'));
  const socket = join(dir, 'homid.sock');
  const config = join(dir, 'homid.toml');
  writeFileSync(config, `socket = "${socket}"\n`);
  return { dir, config, socket };
}

/** Lines of a child's stdout up to and including the first that matches `until` (fails after LINE_TIMEOUT_MS). */
async function linesUntil(c: Proc, until: RegExp): Promise<string[]> {
  const seen: string[] = [];
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`no line matching ${until} within ${LINE_TIMEOUT_MS} ms; got:\n${seen.join('\n')}`)), LINE_TIMEOUT_MS)));
  try {
    for (;;) {
      const r = await Promise.race([c.lines.next(), timeout]);
      assert.ok(!r.done, `homid exited early; output:\n${seen.join('\n')}`);
      const line = r.value.replace(/\r$/, '');
      seen.push(line);
      if (until.test(line)) return seen;
    }
  } finally {
    clearTimeout(t);
  }
}

test('log format: readable on a terminal, JSON otherwise, HOMID_LOG_FORMAT decides when set', () => {
  assert.equal(chooseLogFormat({ isTTY: true }, {}), 'pretty');
  assert.equal(chooseLogFormat({ isTTY: false }, {}), 'json');
  assert.equal(chooseLogFormat({}, {}), 'json');
  assert.equal(chooseLogFormat({ isTTY: true }, { [LOG_FORMAT_ENV]: 'json' }), 'json');
  assert.equal(chooseLogFormat({ isTTY: false }, { [LOG_FORMAT_ENV]: 'pretty' }), 'pretty');
  assert.throws(() => chooseLogFormat({ isTTY: true }, { [LOG_FORMAT_ENV]: 'xml' }), /HOMID_LOG_FORMAT: 'xml' is not pretty or json/);
});

test('a pino record as a line: local time, level, name, message, then the other fields', () => {
  const time = new Date(2025, 0, 2, 3, 4, 5, 6).getTime();
  const rec = {
    level: 40,
    time,
    pid: 1,
    hostname: 'h',
    name: 'homid',
    msg: 'a refusal',
    code: 'limit-exceeded',
    pid2: 7,
    reason: 'two words',
    devices: ['emu0:ready'],
    err: { type: 'Error', message: 'boom', stack: 's' },
  };
  assert.equal(formatLogRecord(rec, false), '03:04:05.006 WARN  homid: a refusal code=limit-exceeded pid2=7 reason="two words" devices=["emu0:ready"] err="boom"');
  assert.equal(formatLogRecord({ level: 50, time, name: 'homid', msg: 'x' }, true), '03:04:05.006 \x1b[31mERROR\x1b[39m homid: x');
  const out: string[] = [];
  const dest = prettyDestination((s) => out.push(s), false);
  dest.write(`${JSON.stringify({ level: 30, time, name: 'homid', msg: 'one' })}\n`);
  dest.write('not json\n');
  assert.deepEqual(out, ['03:04:05.006 INFO  homid: one\n', 'not json\n']);
});

test('homid with its output piped: JSON lines, a warning that no device is configured', { timeout: 60_000 }, async () => {
  const { dir, config, socket } = noDeviceConfig();
  const c = spawnProc(process.execPath, [HOMID, '--config', config], { env: { [LOG_FORMAT_ENV]: '' } });
  try {
    const lines = await linesUntil(c, /homid listening/);
    const recs = lines.map((l) => JSON.parse(l) as { level: number; name: string; msg: string; config?: string; socket?: string });
    for (const r of recs) assert.equal(r.name, 'homid');
    const warn = recs.find((r) => r.level === 40);
    assert.ok(warn, `a warning: ${lines.join('\n')}`);
    assert.match(warn.msg, /^no device configured: homid will serve no queue pairs; add a \[\[device\]\] section/);
    assert.equal(warn.config, config);
    assert.equal(recs.at(-1)!.socket, socket);
  } finally {
    c.p.kill('SIGTERM');
    await c.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('homid on a terminal (a pty from script): readable lines, no JSON', { skip: !haveTool('script') && 'script (util-linux) not installed', timeout: 60_000 }, async () => {
  const { dir, config } = noDeviceConfig();
  // script -e: its exit status is homid's; -f: flush as homid writes; the typescript file is /dev/null.
  const command = [process.execPath, HOMID, '--config', config].map((a) => `'${a}'`).join(' ');
  const c = spawnProc('script', ['-qfec', command, '/dev/null'], { env: { [LOG_FORMAT_ENV]: '', NO_COLOR: '1' } });
  try {
    const lines = await linesUntil(c, /homid listening/);
    for (const l of lines) assert.doesNotMatch(l, /^\{/, 'not JSON');
    assert.ok(
      lines.some((l) => /^\d\d:\d\d:\d\d\.\d{3} WARN {2}homid: no device configured: .* config=\S+homid\.toml$/.test(l)),
      lines.join('\n'),
    );
    assert.match(lines.at(-1)!, /^\d\d:\d\d:\d\d\.\d{3} INFO {2}homid: homid listening socket=\S+homid\.sock devices=\[\]$/);
  } finally {
    c.p.kill('SIGTERM');
    await c.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

test("homid's errors carry its own name; a bad option exits 2", () => {
  const missing = spawnSync(process.execPath, [HOMID, '--config', '/nonexistent/homid.toml'], { encoding: 'utf8' });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /^homid: \/nonexistent\/homid\.toml: cannot read: ENOENT/);
  const bad = spawnSync(process.execPath, [HOMID, '--bogus'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.equal(bad.stderr, "homid: unknown option '--bogus'\n");
});

test('homi status without a daemon says homid is not running there and how to start it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'homi-status-'));
  try {
    const socket = join(dir, 'none.sock');
    const r = runHomi(['status', '--socket', socket], 30_000);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `homi: homid is not running at ${socket} (connect: ENOENT): start it with \`homi daemon --config FILE\` or \`homid --config FILE\`, or point --socket or $HOMID_SOCKET at the socket it listens on\n`,
    );
    // A socket file nobody listens on (left by a process killed while listening, as a homid that died): ECONNREFUSED, the same advice.
    const stale = join(dir, 'stale.sock');
    spawnSync(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    const s = runHomi(['status', '--socket', stale], 30_000);
    assert.equal(s.code, 1);
    assert.match(s.stderr, /^homi: homid is not running at \S+stale\.sock \(connect: ECONNREFUSED\): start it with/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the connect hint: which socket, and which errors it explains', () => {
  assert.equal(homidSocket('/x.sock', { HOMID_SOCKET: '/y.sock' }), '/x.sock');
  assert.equal(homidSocket(undefined, { HOMID_SOCKET: '/y.sock' }), '/y.sock');
  assert.equal(homidSocket(undefined, {}), DEFAULT_SOCKET);
  const failed = (errno: string): IpcError => new IpcError(IpcErrorCode.ConnectFailed, `connect("/s") failed: ${errno}`);
  assert.match(String(explainConnectError('/s', failed('EACCES'))), /not allowed to connect to homid at \/s \(EACCES\)/);
  const other = failed('EMFILE');
  assert.equal(explainConnectError('/s', other), other, 'other errors pass unchanged');
  const notIpc = new Error('x');
  assert.equal(explainConnectError('/s', notIpc), notIpc);
});
