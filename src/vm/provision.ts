// Provisioning of everything the VM harness needs, idempotent and cached:
//  - Debian packages: qemu-system-x86 (QEMU 7.2), busybox-static, kmod, cpio, xz-utils (apt-get when missing;
//    host-tools.ts lists them, with every other tool the suites run);
//  - the default guest kernel: a Debian 6.12 kernel package fetched with `apt-get download` (an exact package
//    name), unpacked with `dpkg -x` into <cache>/kernel/<package>/ and indexed with `depmod -b`;
//  - the 'p2p' guest kernel (CONFIG_PCI_P2PDMA=y, which 6.12 lacks): newer Debian packages (image, modules, base)
//    from a suite the host's apt sources do not have (unstable), fetched with curl, each checked against the
//    SHA256 of that suite's Packages index (kernel-source.ts), unpacked into <cache>/kernel/p2p-<release>/;
//  - a tiny initramfs (busybox + the 9p/virtio modules) whose /init mounts the host's root read-only over 9p.
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { cacheDir, progress } from './paths.js';
import { INIT_SCRIPT } from './init-script.js';
import { aptUpdateOnce, ensureHostTools, ProvisionError } from './host-tools.js';
import { fetchP2pKernelDebs, type GuestKernel } from './kernel-source.js';

const run = promisify(execFile);

/** The kernel package the harness prefers (see /work/shared/notes/qemu-harness.md). */
export const PREFERRED_KERNEL_PACKAGE = 'linux-image-6.12.107+deb12-amd64-unsigned';

/** Modules the initramfs loads (with their dependencies) when they are modules in the kernel. */
export const INITRAMFS_MODULES = ['virtio_pci', 'virtio_ring', 'virtio', '9pnet_virtio', '9p', 'overlay'];

export { ProvisionError };

export interface KernelInfo {
  /** Which guest kernel this is (absent in caches written before there were two: 'default'). */
  flavor?: GuestKernel;
  /** Debian package name, e.g. linux-image-6.12.107+deb12-amd64-unsigned. */
  package: string;
  /** Package version, e.g. 6.12.107-1~deb12u1. */
  packageVersion: string;
  /** Kernel release (uname -r), e.g. 6.12.107+deb12-amd64. */
  release: string;
  /** Folder the package was unpacked into; `modprobe -d <root> -S <release>` works on it. */
  root: string;
  /** The kernel image. */
  vmlinuz: string;
}

export type { GuestKernel };

export interface Provisioned {
  kernel: KernelInfo;
  initramfs: string;
  qemu: string;
  /** QEMU's version, e.g. 7.2.19 */
  qemuVersion: string;
  /** Milliseconds this call took (near zero when everything was cached). */
  ms: number;
}

function which(cmd: string): string | null {
  for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = join(d, cmd);
    if (existsSync(p)) return p;
  }
  return null;
}

/** Installs the host packages the harness needs when they are missing (host-tools.ts, scope 'vm'). */
export async function ensureHostPackages(): Promise<void> {
  await ensureHostTools(['vm']);
}

async function candidateVersion(pkg: string): Promise<string | null> {
  try {
    const { stdout } = await run('apt-cache', ['policy', pkg], { maxBuffer: 16 << 20 });
    const m = /Candidate:\s*(\S+)/.exec(stdout);
    if (!m || m[1] === '(none)') return null;
    return m[1];
  } catch {
    return null;
  }
}

async function versionGreater(a: string, b: string): Promise<boolean> {
  const r = spawnSync('dpkg', ['--compare-versions', a, 'gt', b]);
  return r.status === 0;
}

/** Picks the exact kernel package name: the preferred one, or the newest linux-image-6.12*-amd64-unsigned. */
async function pickKernelPackage(): Promise<{ pkg: string; version: string }> {
  const wanted = process.env.HOMI_VM_KERNEL_PACKAGE || PREFERRED_KERNEL_PACKAGE;
  let v = await candidateVersion(wanted);
  if (v) return { pkg: wanted, version: v };
  await aptUpdateOnce();
  v = await candidateVersion(wanted);
  if (v) return { pkg: wanted, version: v };
  progress(`${wanted} is not available; looking for the newest linux-image-6.12*-amd64-unsigned`);
  const { stdout } = await run('apt-cache', ['search', '--names-only', '^linux-image-6\\.12\\.[0-9.]+\\+deb12-amd64-unsigned$'], {
    maxBuffer: 16 << 20,
  });
  let best: { pkg: string; version: string } | null = null;
  for (const line of stdout.split('\n')) {
    const name = line.split(' ')[0];
    if (!name || !/^linux-image-6\.12\.[0-9.]+\+deb12-amd64-unsigned$/.test(name)) continue;
    const cv = await candidateVersion(name);
    if (cv && (!best || (await versionGreater(cv, best.version)))) best = { pkg: name, version: cv };
  }
  if (!best) {
    throw new ProvisionError(`no Debian 6.12 kernel package found (wanted ${wanted}); check that bookworm-security or bookworm-backports is in the apt sources`);
  }
  return best;
}

/** A lock (an atomic mkdir) so that two processes never build the same cache entry at once. */
async function withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const dir = join(cacheDir(), `.lock-${name}`);
  mkdirSync(cacheDir(), { recursive: true });
  const deadline = Date.now() + 15 * 60_000;
  for (;;) {
    try {
      mkdirSync(dir);
      writeFileSync(join(dir, 'pid'), String(process.pid));
      break;
    } catch {
      // Stale lock: its owner is gone.
      let pid = 0;
      try {
        pid = Number(readFileSync(join(dir, 'pid'), 'utf8'));
      } catch {
        /* being created or removed */
      }
      let alive = true;
      if (pid > 0) {
        try {
          process.kill(pid, 0);
        } catch {
          alive = false;
        }
      } else {
        try {
          alive = Date.now() - statSync(dir).mtimeMs < 10_000;
        } catch {
          alive = false;
        }
      }
      if (!alive) {
        rmSync(dir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new ProvisionError(`timed out waiting for lock ${dir}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function readKernelInfo(root: string): KernelInfo | null {
  try {
    return JSON.parse(readFileSync(join(root, 'homi-kernel.json'), 'utf8')) as KernelInfo;
  } catch {
    return null;
  }
}

/** Finds an already unpacked kernel of this flavor in the cache (preferring the preferred package). */
function cachedKernel(flavor: GuestKernel): KernelInfo | null {
  const base = join(cacheDir(), 'kernel');
  if (!existsSync(base)) return null;
  if (flavor === 'default') {
    const wanted = process.env.HOMI_VM_KERNEL_PACKAGE || PREFERRED_KERNEL_PACKAGE;
    const pref = readKernelInfo(join(base, wanted));
    if (pref && existsSync(pref.vmlinuz) && (pref.flavor ?? 'default') === 'default') return pref;
  }
  for (const d of readdirSync(base).sort().reverse()) {
    if (d.endsWith('.tmp')) continue;
    const k = readKernelInfo(join(base, d));
    if (k && existsSync(k.vmlinuz) && (k.flavor ?? 'default') === flavor) return k;
  }
  return null;
}

/**
 * Unpacks .deb files into <cache>/kernel/<name>/ (modules moved to lib/modules for `modprobe -d`), runs depmod
 * and writes homi-kernel.json. The image is boot/vmlinuz-<release> (bookworm's layout) or
 * lib/modules/<release>/vmlinuz (newer packages, merged /usr).
 */
async function unpackKernel(debPaths: string[], name: string, info: { flavor: GuestKernel; package: string; packageVersion: string }): Promise<KernelInfo> {
  const root = join(cacheDir(), 'kernel', name);
  const tmp = `${root}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  for (const deb of debPaths) {
    progress(`dpkg -x ${deb}`);
    await run('dpkg', ['-x', deb, tmp], { maxBuffer: 64 << 20 });
  }
  // Modules live in lib/modules/<release> (or usr/lib/modules on merged-/usr packages).
  let modBase = join(tmp, 'lib', 'modules');
  if (!existsSync(modBase)) {
    const alt = join(tmp, 'usr', 'lib', 'modules');
    if (!existsSync(alt)) throw new ProvisionError(`no lib/modules in ${debPaths.join(', ')}`);
    mkdirSync(join(tmp, 'lib'), { recursive: true });
    // modprobe -d looks in <root>/lib/modules.
    renameSync(alt, modBase);
    modBase = join(tmp, 'lib', 'modules');
  }
  const releases = readdirSync(modBase);
  if (releases.length !== 1) throw new ProvisionError(`expected one kernel release in ${debPaths.join(', ')}, found ${releases.join(', ')}`);
  const release = releases[0];
  const candidates = [join('boot', `vmlinuz-${release}`), join('lib', 'modules', release, 'vmlinuz')];
  const vmlinuzRel = candidates.find((c) => existsSync(join(tmp, c)));
  if (!vmlinuzRel) throw new ProvisionError(`no ${candidates.join(' or ')} in ${debPaths.join(', ')}`);
  progress(`depmod -b ${root} ${release}`);
  const depmod = which('depmod') ?? '/sbin/depmod';
  await run(depmod, ['-b', tmp, release], { maxBuffer: 64 << 20 });
  const k: KernelInfo = { flavor: info.flavor, package: info.package, packageVersion: info.packageVersion, release, root, vmlinuz: join(root, vmlinuzRel) };
  writeFileSync(join(tmp, 'homi-kernel.json'), JSON.stringify(k, null, 2));
  rmSync(root, { recursive: true, force: true });
  renameSync(tmp, root);
  return k;
}

/** The kernel configuration shipped with an unpacked kernel (boot/config-<release> or lib/modules/<release>/config). */
export function kernelConfigPath(k: KernelInfo): string | null {
  for (const c of [join(k.root, 'boot', `config-${k.release}`), join(k.root, 'lib', 'modules', k.release, 'config')]) if (existsSync(c)) return c;
  return null;
}

/** The value of CONFIG_<name> in a kernel .config text: 'y', 'm', a string, or null when not set. */
export function kernelConfigValue(config: string, name: string): string | null {
  const key = name.startsWith('CONFIG_') ? name : `CONFIG_${name}`;
  for (const line of config.split('\n')) {
    if (line.startsWith(`${key}=`)) return line.slice(key.length + 1);
  }
  return null;
}

/** Fetches (Debian unstable, SHA256-checked), unpacks and indexes the 'p2p' kernel when it is not in the cache. */
async function ensureP2pKernel(): Promise<KernelInfo> {
  const hit = cachedKernel('p2p');
  if (hit) return hit;
  return withLock('kernel-p2p', async () => {
    const again = cachedKernel('p2p');
    if (again) return again;
    const debs = join(cacheDir(), 'debs');
    mkdirSync(debs, { recursive: true });
    const got = await fetchP2pKernelDebs(debs);
    const k = await unpackKernel(
      got.files.map((f) => f.path),
      `p2p-${got.release}`,
      { flavor: 'p2p', package: got.files.map((f) => f.package).join(' '), packageVersion: got.version },
    );
    const cfgPath = kernelConfigPath(k);
    const cfg = cfgPath ? readFileSync(cfgPath, 'utf8') : '';
    if (kernelConfigValue(cfg, 'PCI_P2PDMA') !== 'y') {
      rmSync(k.root, { recursive: true, force: true });
      throw new ProvisionError(`the p2p guest kernel ${got.release} does not have CONFIG_PCI_P2PDMA=y (${cfgPath ?? 'no config file in the package'})`);
    }
    for (const f of got.files) rmSync(f.path, { force: true });
    return k;
  });
}

/** Fetches, unpacks and indexes the kernel of this flavor when it is not in the cache. */
export async function ensureKernel(flavor: GuestKernel = 'default'): Promise<KernelInfo> {
  if (flavor === 'p2p') return ensureP2pKernel();
  const hit = cachedKernel('default');
  if (hit) return hit;
  return withLock('kernel', async () => {
    const again = cachedKernel('default');
    if (again) return again;
    const { pkg, version } = await pickKernelPackage();
    const debs = join(cacheDir(), 'debs');
    mkdirSync(debs, { recursive: true });
    let deb = readdirSync(debs).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
    if (!deb) {
      progress(`apt-get download ${pkg} (${version})`);
      try {
        await run('apt-get', ['download', pkg], { cwd: debs, maxBuffer: 64 << 20 });
      } catch (e) {
        await aptUpdateOnce();
        try {
          await run('apt-get', ['download', pkg], { cwd: debs, maxBuffer: 64 << 20 });
        } catch (e2) {
          const err = e2 as { stderr?: string; message: string };
          throw new ProvisionError(`apt-get download ${pkg} failed: ${(err.stderr ?? err.message).trim().slice(-2000)}`);
        }
        void e;
      }
      deb = readdirSync(debs).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
      if (!deb) throw new ProvisionError(`apt-get download ${pkg} produced no .deb in ${debs}`);
    }
    const info = await unpackKernel([join(debs, deb)], pkg, { flavor: 'default', package: pkg, packageVersion: version });
    // The .deb is not needed any more once unpacked.
    rmSync(join(debs, deb), { force: true });
    return info;
  });
}

/** Parses modules.dep into module name -> { path, deps (paths) }. */
function readModulesDep(k: KernelInfo): Map<string, { path: string; deps: string[] }> {
  const dir = join(k.root, 'lib', 'modules', k.release);
  const map = new Map<string, { path: string; deps: string[] }>();
  for (const line of readFileSync(join(dir, 'modules.dep'), 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    const path = line.slice(0, i).trim();
    const deps = line
      .slice(i + 1)
      .trim()
      .split(/\s+/)
      .filter((s) => s.length > 0);
    map.set(moduleName(path), { path, deps });
  }
  return map;
}

function moduleName(path: string): string {
  const base = path.split('/').pop() ?? path;
  return base.replace(/\.ko(\.xz|\.zst|\.gz)?$/, '').replace(/-/g, '_');
}

/** Module files (relative to lib/modules/<release>) to load, dependencies first. */
export function moduleLoadOrder(k: KernelInfo, names: string[]): string[] {
  const dep = readModulesDep(k);
  const byPath = new Map<string, string[]>();
  for (const v of dep.values()) byPath.set(v.path, v.deps);
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (path: string): void => {
    if (seen.has(path)) return;
    seen.add(path);
    const deps = byPath.get(path) ?? [];
    for (let i = deps.length - 1; i >= 0; i--) visit(deps[i]);
    order.push(path);
  };
  for (const n of names) {
    const e = dep.get(n.replace(/-/g, '_'));
    if (e) visit(e.path); // absent: built into the kernel (or not present at all)
  }
  return order;
}

async function decompressModule(src: string, dst: string): Promise<void> {
  if (src.endsWith('.xz')) {
    const { stdout } = await run('xz', ['-dc', src], { encoding: 'buffer', maxBuffer: 256 << 20 });
    writeFileSync(dst, stdout);
  } else if (src.endsWith('.zst')) {
    const { stdout } = await run('zstd', ['-dc', src], { encoding: 'buffer', maxBuffer: 256 << 20 });
    writeFileSync(dst, stdout);
  } else if (src.endsWith('.gz')) {
    const { stdout } = await run('gzip', ['-dc', src], { encoding: 'buffer', maxBuffer: 256 << 20 });
    writeFileSync(dst, stdout);
  } else {
    copyFileSync(src, dst);
  }
}

/** Builds (or finds in the cache) the initramfs for a kernel. */
export async function ensureInitramfs(k: KernelInfo): Promise<string> {
  const order = moduleLoadOrder(k, INITRAMFS_MODULES);
  const busybox = '/bin/busybox';
  const key = createHash('sha256')
    .update(INIT_SCRIPT)
    .update(order.join('\n'))
    .update(k.release)
    .update(String(statSync(busybox).size))
    .digest('hex')
    .slice(0, 16);
  const out = join(cacheDir(), `initramfs-${k.release}-${key}.cpio.gz`);
  if (existsSync(out)) return out;
  return withLock('initramfs', async () => {
    if (existsSync(out)) return out;
    progress(`building initramfs (${order.length} modules)`);
    const tmp = join(cacheDir(), `initramfs-${key}.tmp`);
    rmSync(tmp, { recursive: true, force: true });
    for (const d of ['bin', 'sbin', 'proc', 'sys', 'dev', 'newroot', 'lib/modules', 'tmp']) mkdirSync(join(tmp, d), { recursive: true });
    copyFileSync(busybox, join(tmp, 'bin', 'busybox'));
    chmodSync(join(tmp, 'bin', 'busybox'), 0o755);
    writeFileSync(join(tmp, 'init'), INIT_SCRIPT, { mode: 0o755 });
    const modDir = join(k.root, 'lib', 'modules', k.release);
    const names: string[] = [];
    for (const rel of order) {
      const name = moduleName(rel);
      await decompressModule(join(modDir, rel), join(tmp, 'lib', 'modules', `${name}.ko`));
      names.push(name);
    }
    writeFileSync(join(tmp, 'lib', 'modules', 'order'), names.join('\n') + '\n');
    const partial = `${out}.partial`;
    await run('sh', ['-c', `cd "${tmp}" && find . -print | cpio -o -H newc --quiet | gzip -1 > "${partial}"`], { maxBuffer: 16 << 20 });
    renameSync(partial, out);
    rmSync(tmp, { recursive: true, force: true });
    // Older initramfs images of this release are stale now.
    for (const f of readdirSync(cacheDir())) {
      if (f.startsWith(`initramfs-${k.release}-`) && f.endsWith('.cpio.gz') && join(cacheDir(), f) !== out) {
        rmSync(join(cacheDir(), f), { force: true });
      }
    }
    return out;
  });
}

let qemuVersionCache: string | undefined;
async function qemuVersionOf(qemu: string): Promise<string> {
  if (qemuVersionCache) return qemuVersionCache;
  try {
    const { stdout } = await run(qemu, ['--version']);
    const m = /version (\d+\.\d+(?:\.\d+)?)/.exec(stdout);
    if (!m) throw new Error(`unexpected output: ${stdout.slice(0, 200)}`);
    qemuVersionCache = m[1];
    return m[1];
  } catch (e) {
    throw new ProvisionError(`${qemu} --version failed: ${(e as Error).message}`);
  }
}

/**
 * Everything: host packages, kernel (the 6.12 default, or 'p2p': a newer one with PCI P2PDMA), initramfs.
 * Throws ProvisionError with a clear message on failure.
 */
export async function provision(flavor: GuestKernel = 'default'): Promise<Provisioned> {
  const t0 = Date.now();
  await ensureHostPackages();
  const kernel = await ensureKernel(flavor);
  const initramfs = await ensureInitramfs(kernel);
  const qemu = which('qemu-system-x86_64');
  if (!qemu) throw new ProvisionError('qemu-system-x86_64 not found after installing qemu-system-x86');
  const qemuVersion = await qemuVersionOf(qemu);
  const [maj, min] = qemuVersion.split('.').map(Number);
  if (!(maj > 7 || (maj === 7 && min >= 1))) throw new ProvisionError(`QEMU ${qemuVersion} is too old: the NVMe SR-IOV model needs 7.1 or later`);
  return { kernel, initramfs, qemu, qemuVersion, ms: Date.now() - t0 };
}
