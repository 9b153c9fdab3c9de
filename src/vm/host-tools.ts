// The system tools the test suites and the VM benchmark run, the Debian packages that hold them, and their
// provisioning: `homi-vm host-tools` (the first step of `npm test`, after the build) installs what is missing with
// apt-get when it runs as root on Debian, and otherwise fails saying what is missing and how to install it. The
// guest suite runs the host's own tools (the guest mounts the host's root over 9p), so they count here too.
import { execFile, spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { progress } from './paths.js';

const run = promisify(execFile);

export class ProvisionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProvisionError';
  }
}

/** Who needs a tool: the suites (`unit`: everything but the VM), the real-kernel VM suite, the VM benchmark. */
export type ToolScope = 'unit' | 'vm' | 'bench';
export const TOOL_SCOPES: readonly ToolScope[] = ['unit', 'vm', 'bench'];

export interface HostTool {
  /** The command, looked up on PATH and in the sbin folders. */
  command: string;
  /** The Debian packages it needs (all of them: a compiler needs the C library's headers too). */
  packages: readonly string[];
  scope: ToolScope;
  /** What runs it, for the message when it is missing. */
  usedBy: string;
}

export const HOST_TOOLS: readonly HostTool[] = [
  { command: 'mkfs.xfs', packages: ['xfsprogs'], scope: 'unit', usedBy: 'XFS images for the extent decoders (test/extents, test-guest/extents)' },
  { command: 'xfs_db', packages: ['xfsprogs'], scope: 'unit', usedBy: 'the XFS geometry oracle (test/extents/bounds)' },
  { command: 'mkfs.ext4', packages: ['e2fsprogs'], scope: 'unit', usedBy: 'ext4 images (test/extents, test/cli, test/daemon, test-guest/homid-mediated)' },
  { command: 'e2fsck', packages: ['e2fsprogs'], scope: 'unit', usedBy: 'hashed ext4 directories (test/extents); fsck after ublk recovery (test-guest/ublk)' },
  { command: 'dumpe2fs', packages: ['e2fsprogs'], scope: 'unit', usedBy: 'the ext4 geometry oracle (test/extents/bounds)' },
  { command: 'debugfs', packages: ['e2fsprogs'], scope: 'unit', usedBy: 'reading a granted write back through ext4 (test-guest/homid-mediated)' },
  { command: 'mount', packages: ['mount'], scope: 'unit', usedBy: 'loop mounts (test/daemon, test-guest/extents)' },
  { command: 'umount', packages: ['mount'], scope: 'unit', usedBy: 'loop mounts (test/daemon, test-guest/extents)' },
  { command: 'losetup', packages: ['mount'], scope: 'unit', usedBy: 'loop devices (test-guest/extents, src/bench/ublk-bench --loop)' },
  { command: 'fallocate', packages: ['util-linux'], scope: 'unit', usedBy: 'preallocated and punched files (test-guest/extents, src/bench/ublk-bench --loop)' },
  { command: 'setpriv', packages: ['util-linux'], scope: 'unit', usedBy: 'children dropped to uid 65534 (test/daemon, test/ipc)' },
  { command: 'script', packages: ['bsdutils'], scope: 'unit', usedBy: 'homid on a terminal (test/cli/homid)' },
  { command: 'mknod', packages: ['coreutils'], scope: 'unit', usedBy: 'a block device node (test/daemon/homid-extents-guard)' },
  { command: 'dd', packages: ['coreutils'], scope: 'unit', usedBy: 'data through the kernel (test-guest)' },
  { command: 'sha256sum', packages: ['coreutils'], scope: 'unit', usedBy: "the kernel's checksum of a file on the ublk device (test-guest/ublk)" },
  { command: 'cp', packages: ['coreutils'], scope: 'unit', usedBy: 'an ordinary program writing onto the ublk file system (test-guest/ublk)' },
  { command: 'blockdev', packages: ['util-linux'], scope: 'unit', usedBy: "the ublk device's size and block size (test-guest/ublk)" },
  { command: 'stat', packages: ['coreutils'], scope: 'unit', usedBy: 'the file system of a folder (test/daemon/loop)' },
  { command: 'sync', packages: ['coreutils'], scope: 'unit', usedBy: 'flushing a mount (test-guest/extents)' },
  { command: 'mkfifo', packages: ['coreutils'], scope: 'unit', usedBy: 'a FIFO given to homi load (test/load)' },
  { command: 'python3', packages: ['python3'], scope: 'unit', usedBy: "the PyTorch baselines' runner without torch (test/load/compare)" },
  { command: 'cc', packages: ['gcc', 'libc6-dev'], scope: 'unit', usedBy: 'the fake libcuda (test/emu/emulated-p2p-cuda, test/load/gpu-sink)' },
  { command: 'qemu-system-x86_64', packages: ['qemu-system-x86'], scope: 'vm', usedBy: 'the real-kernel suite (test/vm) and npm run bench:vm' },
  { command: 'busybox', packages: ['busybox-static'], scope: 'vm', usedBy: "the guest's initramfs (src/vm/provision)" },
  { command: 'cpio', packages: ['cpio'], scope: 'vm', usedBy: "the guest's initramfs (src/vm/provision)" },
  { command: 'depmod', packages: ['kmod'], scope: 'vm', usedBy: "the guest kernel's modules (src/vm/provision)" },
  { command: 'xz', packages: ['xz-utils'], scope: 'vm', usedBy: "the guest kernel's compressed modules (src/vm/provision)" },
  { command: 'curl', packages: ['curl'], scope: 'vm', usedBy: "the 'p2p' guest kernel from Debian unstable (src/vm/kernel-source)" },
  { command: 'gpgv', packages: ['gpgv', 'debian-archive-keyring'], scope: 'vm', usedBy: "verifying unstable's InRelease for the 'p2p' guest kernel (src/vm/kernel-source)" },
  { command: 'fio', packages: ['fio'], scope: 'bench', usedBy: 'the reference paths of npm run bench:vm (src/bench/vm-bench, src/bench/ublk-bench)' },
  { command: 'taskset', packages: ['util-linux'], scope: 'bench', usedBy: 'pinning each npm run bench:vm run to one CPU (src/bench/vm-bench, src/bench/ublk-bench)' },
  { command: 'dmesg', packages: ['util-linux'], scope: 'bench', usedBy: 'counting NVMe I/O timeouts in the guest (src/bench/vm-bench, src/bench/ublk-bench); IOMMU faults (test-guest/p2p)' },
];

/** How the machine is asked: where a command is, and whether dpkg holds a package (null: no dpkg, not Debian). */
export interface ToolProbe {
  which(command: string): string | null;
  packageInstalled(pkg: string): boolean | null;
}

/** Folders searched for a command: PATH, then the sbin and bin folders a non-root PATH may lack. */
export function searchDirs(path: string | undefined): string[] {
  const dirs = (path ?? '').split(delimiter).filter((d) => d !== '');
  return [...new Set([...dirs, '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'])];
}

/** Finds commands in `dirs` (executable files) and asks `dpkgQuery` about packages. */
export function probeWith(dirs: readonly string[], dpkgQuery: (pkg: string) => string | null): ToolProbe {
  return {
    which(command) {
      for (const d of dirs) {
        try {
          accessSync(join(d, command), constants.X_OK);
          return join(d, command);
        } catch {}
      }
      return null;
    },
    packageInstalled(pkg) {
      const status = dpkgQuery(pkg);
      return status === null ? null : /\binstall ok installed\b/.test(status);
    },
  };
}

/** dpkg-query's status of a package: '' when dpkg does not know it, null when there is no dpkg-query. */
function dpkgStatus(pkg: string): string | null {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  if (r.error) return null;
  return r.status === 0 ? r.stdout : '';
}

/** This machine: PATH and dpkg-query. */
export function systemProbe(): ToolProbe {
  return probeWith(searchDirs(process.env.PATH), dpkgStatus);
}

/** The tools of these scopes that are missing: the command is not found, or (with dpkg) a package is not installed. */
export function missingTools(scopes: readonly ToolScope[], probe: ToolProbe, tools: readonly HostTool[] = HOST_TOOLS): HostTool[] {
  return tools.filter((t) => scopes.includes(t.scope) && (probe.which(t.command) === null || t.packages.some((p) => probe.packageInstalled(p) === false)));
}

/** The packages to install for these tools, each once, in order; without those the probe says are installed. */
export function packagesFor(tools: readonly HostTool[], probe?: ToolProbe): string[] {
  return [...new Set(tools.flatMap((t) => t.packages))].filter((p) => probe?.packageInstalled(p) !== true);
}

/** What is missing, one tool a line, and the command that installs it. */
export function describeMissing(tools: readonly HostTool[], why: string, probe?: ToolProbe): string {
  const lines = tools.map((t) => `  ${t.command} (${t.packages.join(' + ')}): ${t.usedBy}`);
  return [`missing system tools (${why}):`, ...lines, `install them with: sudo apt-get install -y --no-install-recommends ${packagesFor(tools, probe).join(' ')}`].join('\n');
}

/** apt-get with a non-interactive front end, waiting for another apt's lock rather than failing. */
export async function aptGet(args: string[]): Promise<void> {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const lockOpts = ['-o', 'DPkg::Lock::Timeout=300'];
  try {
    await run('apt-get', [...lockOpts, ...args], { env, maxBuffer: 64 << 20 });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new ProvisionError(`apt-get ${args.join(' ')} failed: ${(err.stderr ?? err.message).trim().slice(-2000)}`);
  }
}

let aptUpdated = false;
/** apt-get update, once per process. */
export async function aptUpdateOnce(): Promise<void> {
  if (aptUpdated) return;
  progress('apt-get update');
  await aptGet(['update']);
  aptUpdated = true;
}

export interface HostToolsDeps {
  probe: ToolProbe;
  /** Whether apt-get may install here: root, with apt-get on the machine. */
  canInstall: boolean;
  /** Why not, when it may not (for the message). */
  cannotInstallWhy?: string;
  update(): Promise<void>;
  install(packages: string[]): Promise<void>;
  log(message: string): void;
}

/** This machine: root and apt-get decide whether it may install. */
export function systemDeps(): HostToolsDeps {
  const probe = systemProbe();
  const root = process.getuid?.() === 0;
  const apt = probe.which('apt-get') !== null;
  return {
    probe,
    canInstall: root && apt,
    ...(root && apt ? {} : { cannotInstallWhy: !apt ? 'no apt-get: not Debian' : 'not root, so not installed' }),
    update: aptUpdateOnce,
    install: (packages) => aptGet(['install', '-y', '--no-install-recommends', ...packages]),
    log: progress,
  };
}

/**
 * Makes sure the tools of these scopes are here: installs the missing ones' packages (apt-get update, then
 * install) when it may, and throws ProvisionError naming what is missing otherwise, or what is still missing after.
 * Returns the packages it installed.
 */
export async function ensureHostTools(scopes: readonly ToolScope[], deps: HostToolsDeps = systemDeps(), tools: readonly HostTool[] = HOST_TOOLS): Promise<string[]> {
  const missing = missingTools(scopes, deps.probe, tools);
  if (missing.length === 0) return [];
  if (!deps.canInstall) throw new ProvisionError(describeMissing(missing, deps.cannotInstallWhy ?? 'cannot install here', deps.probe));
  const packages = packagesFor(missing, deps.probe);
  deps.log(`installing ${packages.join(' ')} (missing: ${missing.map((t) => t.command).join(', ')})`);
  await deps.update();
  await deps.install(packages);
  const still = missingTools(scopes, deps.probe, tools);
  if (still.length > 0) throw new ProvisionError(describeMissing(still, `still missing after apt-get install ${packages.join(' ')}`));
  return packages;
}
