/**
 * A peer PCI function's memory BAR as DMA target for another function (peer-to-peer DMA): where it sits on the
 * bus (the sysfs `resource` file) and a CPU view of it (mmap of sysfs `resourceN`).
 *
 * Only a BAR that behaves like memory is accepted: assigned, memory space (not I/O ports), prefetchable (no
 * read side effects: a register BAR is refused), memory decoding on, at least one page, page aligned, and
 * not owned by a kernel driver (its memory would be overwritten under it). Every refusal is one PciError
 * that says which rule failed and changes nothing.
 *
 * The address in `resource` is the CPU physical address of the BAR; on x86 (and every platform without an
 * offset between the CPU and PCI address spaces) it is also the bus address a peer's DMA uses.
 */
import { closeSync, constants, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MAP_SHARED, PROT_READ, PROT_WRITE, mmap, type Mapping } from '../sys/mman.js';
import { PciError, normalizePciAddress } from './address.js';
import { PCI_COMMAND, PCI_COMMAND_MEMORY } from './config.js';
import { deviceDir, exists, fileSize, linkName, readText, type SysPaths } from './sysfs.js';

/** Resource flags of the kernel (include/linux/ioport.h) as the sysfs `resource` file shows them. */
export const IORESOURCE_IO = 0x0000_0100;
export const IORESOURCE_MEM = 0x0000_0200;
export const IORESOURCE_PREFETCH = 0x0000_2000;
export const IORESOURCE_MEM_64 = 0x0010_0000;
export const IORESOURCE_DISABLED = 0x1000_0000;
export const IORESOURCE_UNSET = 0x2000_0000;
/** Standard BARs of a type 0 header: resource lines 0..5. */
export const PCI_STD_NUM_BARS = 6;
/** ivshmem-plain keeps its shared memory in BAR2. */
export const DEFAULT_PEER_BAR = 2;
const PAGE = 4096;

/** Drivers that leave a function's BARs to user space (no kernel user of the memory). */
export const PEER_BAR_DRIVERS = new Set(['uio_pci_generic', 'pci-stub']);

export interface PeerBarInfo {
  address: string;
  bar: number;
  /** CPU physical (= bus) address of the BAR. */
  start: number;
  size: number;
  flags: number;
  is64: boolean;
  driver: string | null;
}

/** `--buffers peer:<bdf>[:bar]` and lease options: parse the peer's address and BAR (default 2). */
export function parsePeerSpec(text: string): { address: string; bar: number } {
  const m = /^((?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])(?::(\d))?$/.exec(text);
  if (!m) throw new PciError(`'${text}' is not a peer BAR like 0000:00:04.0 or 0000:00:04.0:2`);
  const bar = m[2] !== undefined ? Number(m[2]) : DEFAULT_PEER_BAR;
  if (bar >= PCI_STD_NUM_BARS) throw new PciError(`BAR ${bar} does not exist (a function has BARs 0 to ${PCI_STD_NUM_BARS - 1})`);
  return { address: normalizePciAddress(m[1]!), bar };
}

/** One line "0xSTART 0xEND 0xFLAGS" of the `resource` file; values above 2^53 are refused. */
export function parseResourceLine(line: string, what: string): { start: number; end: number; flags: number } {
  const m = /^0x([0-9a-f]{1,16})\s+0x([0-9a-f]{1,16})\s+0x([0-9a-f]{1,16})$/i.exec(line.trim());
  if (!m) throw new PciError(`${what}: malformed resource line '${line.trim()}'`);
  const big = [m[1]!, m[2]!, m[3]!].map((h) => BigInt(`0x${h}`));
  if (big.some((v) => v > BigInt(Number.MAX_SAFE_INTEGER))) throw new PciError(`${what}: resource '${line.trim()}' lies above 2^53`);
  return { start: Number(big[0]!), end: Number(big[1]!), flags: Number(big[2]!) };
}

/**
 * Check that BAR `bar` of `address` can hold DMA buffers of at least `minBytes` (default one page) and say
 * where it is. `controller` (the NVMe function doing the DMA) may not name itself.
 */
export function peerBarInfo(p: SysPaths, address: string, bar: number, o: { minBytes?: number; controller?: string } = {}): PeerBarInfo {
  const addr = normalizePciAddress(address);
  const what = `${addr} BAR${bar}`;
  if (!Number.isInteger(bar) || bar < 0 || bar >= PCI_STD_NUM_BARS) throw new PciError(`${addr}: BAR ${bar} does not exist (BARs 0 to ${PCI_STD_NUM_BARS - 1})`);
  if (o.controller !== undefined && normalizePciAddress(o.controller) === addr) throw new PciError(`${addr} is the controller itself: a peer BAR must belong to another function`);
  const dir = deviceDir(p, addr);
  if (!exists(dir)) throw new PciError(`no PCI function ${addr} (${dir} is missing)`);
  const lines = (readText(join(dir, 'resource')) ?? '').split('\n');
  if (lines.length <= bar || lines[bar] === '') throw new PciError(`${what}: ${join(dir, 'resource')} has no line for it`);
  const r = parseResourceLine(lines[bar]!, what);
  if (r.flags === 0 || (r.start === 0 && r.end === 0)) throw new PciError(`${what} is not implemented`);
  if ((r.flags & IORESOURCE_IO) !== 0) throw new PciError(`${what} is an I/O port BAR, not memory`);
  if ((r.flags & IORESOURCE_MEM) === 0) throw new PciError(`${what} is not a memory BAR (flags 0x${r.flags.toString(16)})`);
  if ((r.flags & (IORESOURCE_UNSET | IORESOURCE_DISABLED)) !== 0 || r.start === 0) throw new PciError(`${what} has no address assigned`);
  if ((r.flags & IORESOURCE_PREFETCH) === 0) {
    throw new PciError(`${what} is not prefetchable: it is register space with side effects, not device memory a controller may write`);
  }
  const size = r.end - r.start + 1;
  const min = o.minBytes ?? PAGE;
  if (size < PAGE || size < min) throw new PciError(`${what} is too small: ${size} bytes, need at least ${Math.max(min, PAGE)}`);
  if (r.start % PAGE !== 0 || size % PAGE !== 0) throw new PciError(`${what} at 0x${r.start.toString(16)} (${size} bytes) is not page aligned`);
  const driver = linkName(join(dir, 'driver'));
  if (driver !== null && !PEER_BAR_DRIVERS.has(driver)) {
    throw new PciError(`${addr} is bound to ${driver}, which owns that memory: unbind it (or bind ${[...PEER_BAR_DRIVERS].join(' or ')}) to lend its BAR`);
  }
  let command: number;
  try {
    const cfg = readFileSync(join(dir, 'config'));
    if (cfg.length < PCI_COMMAND + 2) throw new Error('short config space');
    command = cfg.readUInt16LE(PCI_COMMAND);
  } catch (e) {
    throw new PciError(`${addr}: cannot read the command register: ${(e as Error).message}`);
  }
  if ((command & PCI_COMMAND_MEMORY) === 0) {
    throw new PciError(`${addr} does not decode memory (command register 0x${command.toString(16)}): enable it first (echo 1 > ${join(dir, 'enable')})`);
  }
  return { address: addr, bar, start: r.start, size, flags: r.flags, is64: (r.flags & IORESOURCE_MEM_64) !== 0, driver };
}

/** A mapped peer BAR window: structurally a mem/device-memory DeviceMemoryRegion. */
export interface PeerBarRegion {
  readonly what: string;
  readonly info: PeerBarInfo;
  readonly bytes: Uint8Array;
  readonly cpuAddress: bigint;
  readonly busAddress: number;
  release(): void;
}

/**
 * Map the first `bytes` (default: all) of a checked peer BAR through sysfs `resourceN` (O_RDWR | O_SYNC,
 * MAP_SHARED: uncached, as the CPU must see what the controller wrote).
 */
export function mapPeerBar(p: SysPaths, info: PeerBarInfo, bytes = info.size): PeerBarRegion {
  const what = `BAR${info.bar} of ${info.address}`;
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % PAGE !== 0 || bytes > info.size) {
    throw new PciError(`${what}: a window of ${bytes} bytes does not fit its ${info.size} bytes in whole pages`);
  }
  const path = join(deviceDir(p, info.address), `resource${info.bar}`);
  const fsize = fileSize(path);
  if (fsize === null) throw new PciError(`${what} cannot be mapped: ${path} is missing`);
  if (fsize !== info.size) throw new PciError(`${what}: ${path} has ${fsize} bytes, the resource file says ${info.size}`);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_SYNC);
  } catch (e) {
    throw new PciError(`cannot open ${path}: ${(e as Error).message}`);
  }
  let m: Mapping;
  try {
    m = mmap(bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, what);
  } catch (e) {
    throw new PciError(`cannot map ${path}: ${(e as Error).message}`);
  } finally {
    closeSync(fd); // the mapping stays valid
  }
  let released = false;
  return {
    what,
    info,
    bytes: new Uint8Array(m.buffer),
    cpuAddress: m.address,
    busAddress: info.start,
    release(): void {
      if (released) return;
      released = true;
      m.retire();
    },
  };
}
