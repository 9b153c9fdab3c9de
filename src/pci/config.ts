/**
 * PCI configuration space access (the command register: memory space and bus master enable), through any
 * file-like accessor: the sysfs `config` file (uio) or VFIO's config region (vfio).
 */
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { PciError } from './address.js';
import { deviceDir, type SysPaths } from './sysfs.js';

export const PCI_COMMAND = 0x04;
export const PCI_COMMAND_MEMORY = 1 << 1;
export const PCI_COMMAND_MASTER = 1 << 2;

export interface ConfigSpace {
  read16(offset: number): number;
  write16(offset: number, value: number): void;
  close(): void;
}

/** Config space through a file descriptor at a base offset (pread / pwrite). */
export class FdConfigSpace implements ConfigSpace {
  private closed = false;
  constructor(
    private readonly fd: number,
    private readonly base: number,
    private readonly what: string,
    private readonly ownsFd: boolean,
  ) {}

  read16(offset: number): number {
    const b = Buffer.alloc(2);
    const n = readSync(this.fd, b, 0, 2, this.base + offset);
    if (n !== 2) throw new PciError(`${this.what}: short read of config offset 0x${offset.toString(16)}`);
    return b.readUInt16LE(0);
  }

  write16(offset: number, value: number): void {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(value & 0xffff, 0);
    const n = writeSync(this.fd, b, 0, 2, this.base + offset);
    if (n !== 2) throw new PciError(`${this.what}: short write of config offset 0x${offset.toString(16)}`);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsFd) closeSync(this.fd);
  }
}

/** The sysfs config file of a function (root only for offsets past 64 bytes and for writes). */
export function sysfsConfigSpace(p: SysPaths, addr: string): ConfigSpace {
  const path = join(deviceDir(p, addr), 'config');
  let fd: number;
  try {
    fd = openSync(path, 'r+');
  } catch (e) {
    throw new PciError(`cannot open ${path} for writing: ${(e as Error).message}`);
  }
  return new FdConfigSpace(fd, 0, path, true);
}

/**
 * Set the memory space and bus master enable bits. Returns the command register as it was before, so the
 * caller can undo with restoreBusMaster.
 */
export function enableBusMaster(cfg: ConfigSpace): number {
  const before = cfg.read16(PCI_COMMAND);
  const want = before | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
  if (want !== before) cfg.write16(PCI_COMMAND, want);
  const after = cfg.read16(PCI_COMMAND);
  if ((after & PCI_COMMAND_MASTER) === 0) throw new PciError(`bus mastering did not enable (command register 0x${after.toString(16)})`);
  return before;
}

/** Clear bus mastering again if it was off before enableBusMaster. */
export function restoreBusMaster(cfg: ConfigSpace, before: number): void {
  if ((before & PCI_COMMAND_MASTER) !== 0) return;
  const cur = cfg.read16(PCI_COMMAND);
  if ((cur & PCI_COMMAND_MASTER) !== 0) cfg.write16(PCI_COMMAND, cur & ~PCI_COMMAND_MASTER);
}
