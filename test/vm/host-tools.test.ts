// The provisioning of the system tools the suites run (src/vm/host-tools.ts), against an injected PATH and dpkg:
// nothing is installed here. And a static check that every tool the suites spawn is on the list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeMissing, ensureHostTools, HOST_TOOLS, missingTools, packagesFor, probeWith, ProvisionError, searchDirs, type HostTool, type HostToolsDeps } from '../../src/vm/host-tools.js';
import { repoRoot } from '../../src/vm/paths.js';

const TOOLS: HostTool[] = [
  { command: 'mkfs.xfs', packages: ['xfsprogs'], scope: 'unit', usedBy: 'XFS images' },
  { command: 'xfs_db', packages: ['xfsprogs'], scope: 'unit', usedBy: 'the XFS oracle' },
  { command: 'cc', packages: ['gcc', 'libc6-dev'], scope: 'unit', usedBy: 'a fake libcuda' },
  { command: 'qemu-system-x86_64', packages: ['qemu-system-x86'], scope: 'vm', usedBy: 'the VM suite' },
  { command: 'fio', packages: ['fio'], scope: 'bench', usedBy: 'bench:vm' },
];

/** A folder standing for PATH, holding an executable for each command given (and `notExec` without the x bit). */
function fakeBin(commands: string[], notExec: string[] = []): string {
  const dir = mkdtempSync(join(tmpdir(), 'homi-host-tools-'));
  for (const c of commands) {
    writeFileSync(join(dir, c), '#!/bin/sh\n');
    chmodSync(join(dir, c), 0o755);
  }
  for (const c of notExec) writeFileSync(join(dir, c), '');
  return dir;
}

/** dpkg-query's answer from a set of installed packages ('' for any other package, as dpkg-query -W says). */
const dpkgOf =
  (installed: string[]) =>
  (pkg: string): string =>
    installed.includes(pkg) ? 'install ok installed' : '';

test('a tool is missing when its command is not on the path (or not executable), or dpkg lacks one of its packages', () => {
  const bin = fakeBin(['mkfs.xfs', 'cc', 'fio'], ['xfs_db']);
  try {
    const probe = probeWith([bin], dpkgOf(['xfsprogs', 'gcc', 'fio']));
    const names = (scopes: Parameters<typeof missingTools>[0]): string[] => missingTools(scopes, probe, TOOLS).map((t) => t.command);
    // xfs_db is there but not executable; cc is there but libc6-dev is not installed (it could not link).
    assert.deepEqual(names(['unit']), ['xfs_db', 'cc']);
    assert.deepEqual(names(['vm']), ['qemu-system-x86_64']);
    assert.deepEqual(names(['bench']), []);
    assert.deepEqual(names(['unit', 'vm', 'bench']), ['xfs_db', 'cc', 'qemu-system-x86_64']);
    // Without dpkg (not Debian) only the commands count.
    assert.deepEqual(
      missingTools(
        ['unit'],
        probeWith([bin], () => null),
        TOOLS,
      ).map((t) => t.command),
      ['xfs_db'],
    );
    assert.equal(probe.which('mkfs.xfs'), join(bin, 'mkfs.xfs'));
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});

test('the search path: PATH first, then the sbin and bin folders a non-root PATH lacks', () => {
  assert.deepEqual(searchDirs('/opt/x:/usr/bin'), ['/opt/x', '/usr/bin', '/usr/local/sbin', '/usr/sbin', '/sbin', '/bin']);
  assert.deepEqual(searchDirs(undefined), ['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin']);
});

/** Deps over a fake bin folder: `install` adds the commands of the packages given (those in `installs`). */
function fakeDeps(bin: string, installed: string[], o: { canInstall: boolean; installs?: Record<string, string[]> }): HostToolsDeps & { calls: string[] } {
  const calls: string[] = [];
  const have = [...installed];
  return {
    calls,
    probe: probeWith([bin], (pkg) => (have.includes(pkg) ? 'install ok installed' : '')),
    canInstall: o.canInstall,
    ...(o.canInstall ? {} : { cannotInstallWhy: 'not root, so not installed' }),
    update: async () => {
      calls.push('update');
    },
    install: async (packages) => {
      calls.push(`install ${packages.join(' ')}`);
      for (const p of packages) {
        have.push(p);
        for (const c of o.installs?.[p] ?? []) {
          writeFileSync(join(bin, c), '#!/bin/sh\n');
          chmodSync(join(bin, c), 0o755);
        }
      }
    },
    log: (m) => calls.push(`log ${m}`),
  };
}

test('not allowed to install: one error naming each missing tool, its package and use, and the apt-get line; nothing run', async () => {
  const bin = fakeBin(['fio']);
  try {
    const deps = fakeDeps(bin, ['fio'], { canInstall: false });
    const scopes = ['unit', 'bench'] as const;
    await assert.rejects(
      // The real list: every unit tool is missing from this folder.
      ensureHostTools(scopes, { ...deps, probe: probeWith([bin], dpkgOf(['fio'])) }),
      (e: unknown) => {
        assert.ok(e instanceof ProvisionError);
        const lines = e.message.split('\n');
        assert.equal(lines[0], 'missing system tools (not root, so not installed):');
        assert.ok(lines.includes('  mkfs.xfs (xfsprogs): XFS images for the extent decoders (test/extents, test-guest/extents)'), e.message);
        assert.ok(lines.includes('  cc (gcc + libc6-dev): the fake libcuda (test/emu/emulated-p2p-cuda, test/load/gpu-sink)'), e.message);
        assert.ok(!e.message.includes('  fio '), 'fio is there');
        assert.match(lines.at(-1)!, /^install them with: sudo apt-get install -y --no-install-recommends xfsprogs e2fsprogs mount util-linux /);
        return true;
      },
    );
    assert.deepEqual(deps.calls, []);
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});

test('allowed to install: apt-get update, then one install of every missing package, each once; nothing when all are there', async () => {
  const bin = fakeBin(['cc']);
  try {
    const deps = fakeDeps(bin, ['gcc'], { canInstall: true, installs: { xfsprogs: ['mkfs.xfs', 'xfs_db'], 'qemu-system-x86': ['qemu-system-x86_64'] } });
    const missing = missingTools(['unit', 'vm'], deps.probe, TOOLS);
    assert.deepEqual(packagesFor(missing), ['xfsprogs', 'gcc', 'libc6-dev', 'qemu-system-x86']);
    assert.deepEqual(packagesFor(missing, deps.probe), ['xfsprogs', 'libc6-dev', 'qemu-system-x86'], 'gcc is installed');
    const installed = await ensureHostTools(['unit', 'vm'], deps, TOOLS);
    assert.deepEqual(installed, ['xfsprogs', 'libc6-dev', 'qemu-system-x86']);
    assert.deepEqual(deps.calls, ['log installing xfsprogs libc6-dev qemu-system-x86 (missing: mkfs.xfs, xfs_db, cc, qemu-system-x86_64)', 'update', 'install xfsprogs libc6-dev qemu-system-x86']);
    deps.calls.length = 0;
    assert.deepEqual(await ensureHostTools(['unit', 'vm'], deps, TOOLS), []);
    assert.deepEqual(deps.calls, [], 'all there: no apt-get at all');
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});

test('a package that does not bring its command: still missing after the install, said so', async () => {
  const bin = fakeBin([]);
  try {
    const deps = fakeDeps(bin, [], { canInstall: true, installs: {} });
    await assert.rejects(ensureHostTools(['bench'], deps, TOOLS), /^ProvisionError: missing system tools \(still missing after apt-get install fio\):\n {2}fio \(fio\): bench:vm\n/);
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});

test('describeMissing: one line a tool, the packages once in the install line', () => {
  assert.equal(
    describeMissing([TOOLS[0]!, TOOLS[1]!], 'why'),
    'missing system tools (why):\n  mkfs.xfs (xfsprogs): XFS images\n  xfs_db (xfsprogs): the XFS oracle\ninstall them with: sudo apt-get install -y --no-install-recommends xfsprogs',
  );
});

/** Commands the sources spawn that are not to be installed by the suites: Debian's own, or used only for other kernels. */
const NOT_PROVISIONED = new Map([
  ['sh', 'dash: essential on Debian'],
  ['apt-get', "Debian's own (provisioning itself)"],
  ['apt-cache', "Debian's own (provisioning itself)"],
  ['dpkg', "Debian's own (provisioning itself)"],
  ['dpkg-query', "Debian's own (provisioning itself)"],
  ['gzip', 'essential on Debian; only for gzip-compressed kernel modules'],
  ['zstd', "only for zstd-compressed kernel modules (the Debian 6.12 kernel's are xz)"],
]);

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

test('every command the suites, the VM harness and the benchmarks spawn by name is on the list (or said why not)', () => {
  const root = repoRoot();
  const listed = new Set(HOST_TOOLS.map((t) => t.command));
  const spawned = new Map<string, string>();
  for (const dir of ['test', 'test-guest', 'src/vm', 'src/bench']) {
    for (const file of sources(join(root, dir))) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?<![\w.])(?:execFileSync|spawnSync|spawn|execFile|sh|run|haveTool|spawnProc)\(\s*'([A-Za-z0-9_.+][A-Za-z0-9_.+-]*)'/g)) {
        if (!spawned.has(m[1]!)) spawned.set(m[1]!, file.slice(root.length + 1));
      }
    }
  }
  assert.ok(spawned.has('mkfs.xfs') && spawned.has('setpriv') && spawned.has('cc'), `the scan finds the known ones: ${[...spawned.keys()].join(' ')}`);
  const unlisted = [...spawned].filter(([c]) => !listed.has(c) && !NOT_PROVISIONED.has(c)).map(([c, f]) => `${c} (${f})`);
  assert.deepEqual(unlisted, [], 'spawned but not in HOST_TOOLS (src/vm/host-tools.ts)');
});
