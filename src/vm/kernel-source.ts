// Where the guest kernels come from. 'default' is the Debian 6.12 package the host's apt sources (bookworm) have
// (provision.ts). 'p2p' is a newer Debian kernel with CONFIG_PCI_P2PDMA=y, from a suite the host's apt sources do
// not list (unstable): fetched with curl from the Debian mirror and checked along the archive's own chain of trust:
//   InRelease (clearsigned; gpgv against debian-archive-keyring) -> SHA256 of main/binary-amd64/Packages.xz
//   -> SHA256 and size of each .deb.
// Newer Debian kernels are split into linux-binary-<release> (vmlinuz), linux-modules-<release> (modules,
// .ko.xz, the config) and linux-base-<release>; linux-image-<release> is an empty package depending on them.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ProvisionError } from './host-tools.js';
import { progress } from './paths.js';

const run = promisify(execFile);

import type { GuestKernel } from './spec.js';
export type { GuestKernel };
export const GUEST_KERNELS: readonly GuestKernel[] = ['default', 'p2p'];

/** The release the 'p2p' kernel prefers (Debian unstable, 2026-12: its config has CONFIG_PCI_P2PDMA=y). */
export const P2P_KERNEL_RELEASE = '7.2.13+deb14-amd64';
export const P2P_KERNEL_MIRROR = 'http://deb.debian.org/debian';
export const P2P_KERNEL_SUITE = 'sid';
/** p2pmem's `allocate` file (mmap of p2pmem from user space) exists since Linux 6.2. */
export const P2P_MIN_VERSION: readonly [number, number] = [6, 2];
const KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
const INDEX_PATH = 'main/binary-amd64/Packages.xz';

/** One stanza of a Packages index: the fields provisioning needs. */
export interface PackageEntry {
  package: string;
  version: string;
  filename: string;
  size: number;
  sha256: string;
}

/** The SHA256 section of a (verified) Release file: path -> { sha256, size }. */
export function parseReleaseSha256(text: string): Map<string, { sha256: string; size: number }> {
  const out = new Map<string, { sha256: string; size: number }>();
  let inSha = false;
  for (const line of text.split('\n')) {
    if (/^\S/.test(line)) {
      inSha = line.startsWith('SHA256:');
      continue;
    }
    if (!inSha) continue;
    const m = /^\s+([0-9a-f]{64})\s+(\d+)\s+(\S+)$/.exec(line);
    if (m) out.set(m[3]!, { sha256: m[1]!, size: Number(m[2]) });
  }
  return out;
}

/** The stanzas of a Packages index that have every field of PackageEntry. */
export function parsePackagesIndex(text: string): PackageEntry[] {
  const out: PackageEntry[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const f = new Map<string, string>();
    for (const line of stanza.split('\n')) {
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (m) f.set(m[1]!, m[2]!);
    }
    const size = Number(f.get('Size'));
    const sha = f.get('SHA256') ?? '';
    if (f.has('Package') && f.has('Version') && f.has('Filename') && Number.isSafeInteger(size) && /^[0-9a-f]{64}$/.test(sha)) {
      out.push({ package: f.get('Package')!, version: f.get('Version')!, filename: f.get('Filename')!, size, sha256: sha });
    }
  }
  return out;
}

const RELEASE_RE = /^(\d+)\.(\d+)(?:\.(\d+))?\+deb\d+-amd64$/;

function releaseKey(release: string): number[] | null {
  const m = RELEASE_RE.exec(release);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : null;
}

export interface KernelPick {
  release: string;
  version: string;
  /** The packages to unpack, in order. */
  packages: PackageEntry[];
}

/**
 * The packages of the 'p2p' kernel in an index: `preferred` when the index has it, else the newest plain amd64
 * release (not cloud or rt) of at least Linux 6.2. A release is complete with linux-binary + linux-modules
 * (+ linux-base when present), or as one linux-image-<release>-unsigned (the older, unsplit layout).
 * Null when none qualifies.
 */
export function pickP2pKernel(entries: readonly PackageEntry[], preferred: string = P2P_KERNEL_RELEASE): KernelPick | null {
  const byName = new Map(entries.map((e) => [e.package, e]));
  const setOf = (release: string): PackageEntry[] | null => {
    const bin = byName.get(`linux-binary-${release}`);
    const mods = byName.get(`linux-modules-${release}`);
    if (bin && mods) {
      const base = byName.get(`linux-base-${release}`);
      return base ? [bin, mods, base] : [bin, mods];
    }
    const unsigned = byName.get(`linux-image-${release}-unsigned`);
    return unsigned ? [unsigned] : null;
  };
  const releases = new Set<string>();
  for (const e of entries) {
    const m = /^linux-(?:binary|modules|image)-(.+?)(?:-unsigned)?$/.exec(e.package);
    if (m && RELEASE_RE.test(m[1]!)) releases.add(m[1]!);
  }
  const order = [...releases]
    .filter((r) => {
      const k = releaseKey(r)!;
      return k[0]! > P2P_MIN_VERSION[0] || (k[0] === P2P_MIN_VERSION[0] && k[1]! >= P2P_MIN_VERSION[1]);
    })
    .sort((a, b) => {
      const ka = releaseKey(a)!;
      const kb = releaseKey(b)!;
      for (let i = 0; i < 3; i++) if (ka[i] !== kb[i]) return kb[i]! - ka[i]!;
      return 0;
    });
  if (releases.has(preferred)) order.unshift(preferred);
  for (const r of order) {
    const set = setOf(r);
    if (set) return { release: r, version: set[0]!.version, packages: set };
  }
  return null;
}

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

async function curl(url: string, out: string): Promise<void> {
  try {
    await run('curl', ['-fsSL', '--retry', '2', '--connect-timeout', '20', '-o', out, url], { maxBuffer: 1 << 20 });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    rmSync(out, { force: true });
    throw new ProvisionError(`curl ${url} failed: ${(err.stderr ?? err.message).trim().slice(-500)}`);
  }
}

export interface FetchedKernel {
  release: string;
  version: string;
  files: Array<{ package: string; path: string }>;
}

/**
 * Downloads the 'p2p' kernel's packages into `dir`, each verified (see the top of this file). Mirror, suite and
 * preferred release can be changed with HOMI_VM_P2P_MIRROR, HOMI_VM_P2P_SUITE and HOMI_VM_P2P_KERNEL_RELEASE.
 */
export async function fetchP2pKernelDebs(dir: string): Promise<FetchedKernel> {
  const mirror = (process.env.HOMI_VM_P2P_MIRROR || P2P_KERNEL_MIRROR).replace(/\/+$/, '');
  const suite = process.env.HOMI_VM_P2P_SUITE || P2P_KERNEL_SUITE;
  const preferred = process.env.HOMI_VM_P2P_KERNEL_RELEASE || P2P_KERNEL_RELEASE;
  if (!existsSync(KEYRING)) throw new ProvisionError(`${KEYRING} is missing (package debian-archive-keyring): cannot verify ${suite}'s InRelease`);
  const inRelease = join(dir, `${suite}-InRelease`);
  progress(`curl ${mirror}/dists/${suite}/InRelease`);
  await curl(`${mirror}/dists/${suite}/InRelease`, inRelease);
  const verified = join(dir, `${suite}-Release.verified`);
  rmSync(verified, { force: true });
  try {
    await run('gpgv', ['--keyring', KEYRING, '--output', verified, inRelease], { maxBuffer: 16 << 20 });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new ProvisionError(`gpgv could not verify ${mirror}/dists/${suite}/InRelease with ${KEYRING}: ${(err.stderr ?? err.message).trim().slice(-800)}`);
  }
  const want = parseReleaseSha256(readFileSync(verified, 'utf8')).get(INDEX_PATH);
  if (!want) throw new ProvisionError(`${suite}'s InRelease lists no SHA256 for ${INDEX_PATH}`);
  const indexXz = join(dir, `${suite}-Packages.xz`);
  progress(`curl ${mirror}/dists/${suite}/${INDEX_PATH} (${(want.size / 1e6).toFixed(1)} MB)`);
  await curl(`${mirror}/dists/${suite}/${INDEX_PATH}`, indexXz);
  const gotIndex = sha256File(indexXz);
  if (gotIndex !== want.sha256) throw new ProvisionError(`${suite} ${INDEX_PATH}: SHA256 ${gotIndex}, the signed InRelease says ${want.sha256}`);
  const { stdout } = await run('xz', ['-dc', indexXz], { encoding: 'utf8', maxBuffer: 512 << 20 });
  rmSync(indexXz, { force: true });
  rmSync(inRelease, { force: true });
  rmSync(verified, { force: true });
  const pick = pickP2pKernel(parsePackagesIndex(stdout), preferred);
  if (!pick) throw new ProvisionError(`${mirror} ${suite} has no amd64 kernel of Linux ${P2P_MIN_VERSION.join('.')} or later (wanted ${preferred})`);
  if (pick.release !== preferred) progress(`${preferred} is not in ${suite}; using ${pick.release} (${pick.version})`);
  const files: FetchedKernel['files'] = [];
  for (const p of pick.packages) {
    const path = join(dir, p.filename.split('/').pop()!);
    if (!(existsSync(path) && statSync(path).size === p.size && sha256File(path) === p.sha256)) {
      progress(`curl ${p.filename} (${(p.size / 1e6).toFixed(1)} MB)`);
      const partial = `${path}.partial`;
      await curl(`${mirror}/${p.filename}`, partial);
      const size = statSync(partial).size;
      const sha = sha256File(partial);
      if (size !== p.size || sha !== p.sha256) {
        rmSync(partial, { force: true });
        throw new ProvisionError(`${p.filename}: ${size} bytes, SHA256 ${sha}; the verified Packages index says ${p.size} bytes, ${p.sha256}`);
      }
      renameSync(partial, path);
    }
    files.push({ package: p.package, path });
  }
  return { release: pick.release, version: pick.version, files };
}
