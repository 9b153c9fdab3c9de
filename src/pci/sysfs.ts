/**
 * Every sysfs / procfs access of the PCI layer goes through a `SysPaths` value, so tests can run against a
 * fake tree in a temporary folder (and a fake kernel reacting to writes) instead of the real /sys and /proc.
 */
import { existsSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

export interface SysPaths {
  /** sysfs root (default '/sys'). */
  sys: string;
  /** procfs root (default '/proc'). */
  proc: string;
  /** devfs root (default '/dev'). */
  dev: string;
  /**
   * Writes to sysfs attribute files. Default: writeFileSync. Tests pass a fake kernel that applies the
   * write's effect (bind, unbind, driver_override) to the fake tree.
   */
  write: (path: string, data: string) => void;
}

export interface SysPathOptions {
  sys?: string;
  proc?: string;
  dev?: string;
  write?: (path: string, data: string) => void;
}

export function sysPaths(o: SysPathOptions = {}): SysPaths {
  return {
    sys: o.sys ?? '/sys',
    proc: o.proc ?? '/proc',
    dev: o.dev ?? '/dev',
    write: o.write ?? ((p, d) => writeFileSync(p, d)),
  };
}

/** /sys/bus/pci/devices/<addr> */
export function deviceDir(p: SysPaths, addr: string): string {
  return join(p.sys, 'bus', 'pci', 'devices', addr);
}

/** /sys/bus/pci/drivers/<name> */
export function driverDir(p: SysPaths, name: string): string {
  return join(p.sys, 'bus', 'pci', 'drivers', name);
}

/** Trimmed text of a file, or null when it does not exist / cannot be read. */
export function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Final path component of a symlink's target, or null when there is no such link. */
export function linkName(path: string): string | null {
  try {
    return basename(readlinkSync(path));
  } catch {
    return null;
  }
}

export function listDir(path: string): string[] {
  try {
    return readdirSync(path).sort();
  } catch {
    return [];
  }
}

export function exists(path: string): boolean {
  return existsSync(path);
}

export function fileSize(path: string): number | null {
  try {
    return statSync(path).size;
  } catch {
    return null;
  }
}

/** Parse a sysfs hex attribute like "0x010802". */
export function parseHex(text: string | null): number | null {
  if (text === null) return null;
  const m = /^0x([0-9a-f]+)$/i.exec(text);
  return m ? parseInt(m[1]!, 16) : null;
}

/** Parse a decimal attribute. */
export function parseDec(text: string | null): number | null {
  if (text === null || !/^-?\d+$/.test(text)) return null;
  return Number(text);
}
