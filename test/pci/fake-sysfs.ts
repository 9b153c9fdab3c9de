/**
 * A fake sysfs / procfs tree in a temp folder plus a fake kernel that applies sysfs writes (driver_override,
 * unbind, drivers_probe) to it, for host tests of discovery and driver binding.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { SysPathOptions } from '../../src/pci/sysfs.js';

export interface FakeDevice {
  address: string;
  classCode?: number;
  vendor?: number;
  device?: number;
  driver?: string | null;
  iommuGroup?: number;
  numaNode?: number;
  sriovTotalVfs?: number;
  sriovNumVfs?: number;
  physfn?: string;
  bar0Size?: number;
  /** Kernel NVMe controller with namespaces, e.g. { ctrl: 'nvme0', disks: ['nvme0n1'] }. */
  nvme?: { ctrl: string; disks: string[] };
  /** Write resource0 only (no resource file). */
  resource0Only?: boolean;
}

/** A namespace of a fake kernel NVMe controller. */
export interface FakeKernelNamespace {
  /** The namespace head's instance (the N of nvme0nN, ng0nN). */
  head: number;
  nsid: number;
  sizeBytes: number;
  lbaSize: number;
  /** Native multipath: a hidden path nvme<S>c<C>n<H> here, the disk nvme<S>n<H> and ng<S>n<H> under the subsystem. */
  subsystem?: number;
  /** No block device (only the generic char device). */
  genericOnly?: boolean;
}

/** A fake kernel NVMe controller (/sys/class/nvme/nvmeC). */
export interface FakeKernelController {
  /** C of nvmeC. */
  instance: number;
  /** PCI function it sits on (added with addDevice first); omitted: a fabrics controller. */
  address?: string;
  transport?: string;
  model?: string;
  serial?: string;
  firmware?: string;
  state?: string;
  cntlid?: number;
  namespaces?: FakeKernelNamespace[];
}

export class FakeSys {
  readonly root: string;
  readonly sys: string;
  readonly proc: string;
  readonly dev: string;
  /** Log of sysfs writes: "path <- data" relative to sys. */
  readonly writes: string[] = [];
  /** Drivers whose probe fails (bind refused). */
  readonly refuse = new Set<string>();
  /** Minor numbers handed to fake generic char and block devices. */
  private nextMinor = 0;
  /** Default driver by class code (what probing picks without an override). */
  readonly defaults = new Map<number, string>([[0x010802, 'nvme']]);

  constructor() {
    this.root = mkdtempSync(join(tmpdir(), 'homi-fakesys-'));
    this.sys = join(this.root, 'sys');
    this.proc = join(this.root, 'proc');
    this.dev = join(this.root, 'dev');
    mkdirSync(join(this.sys, 'bus', 'pci', 'devices'), { recursive: true });
    mkdirSync(join(this.sys, 'bus', 'pci', 'drivers'), { recursive: true });
    mkdirSync(join(this.sys, 'block'), { recursive: true });
    mkdirSync(join(this.proc, 'self'), { recursive: true });
    mkdirSync(this.dev, { recursive: true });
    writeFileSync(join(this.sys, 'bus', 'pci', 'drivers_probe'), '');
    writeFileSync(join(this.proc, 'mounts'), 'proc /proc proc rw 0 0\n');
    writeFileSync(join(this.proc, 'swaps'), 'Filename\tType\tSize\tUsed\tPriority\n');
    writeFileSync(join(this.proc, 'meminfo'), 'MemTotal: 1000 kB\nHugePages_Total:       0\nHugePages_Free:        0\nHugepagesize:       2048 kB\n');
  }

  get paths(): SysPathOptions & { sys: string; proc: string; dev: string; write: (p: string, d: string) => void } {
    return { sys: this.sys, proc: this.proc, dev: this.dev, write: (p, d) => this.write(p, d) };
  }

  cleanup(): void {
    rmSync(this.root, { recursive: true, force: true });
  }

  loadDriver(name: string): void {
    const d = join(this.sys, 'bus', 'pci', 'drivers', name);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'bind'), '');
    writeFileSync(join(d, 'unbind'), '');
  }

  devDir(addr: string): string {
    return join(this.sys, 'bus', 'pci', 'devices', addr);
  }

  addDevice(f: FakeDevice): void {
    const d = this.devDir(f.address);
    mkdirSync(d, { recursive: true });
    const hex = (v: number, w: number): string => `0x${v.toString(16).padStart(w, '0')}\n`;
    writeFileSync(join(d, 'class'), hex(f.classCode ?? 0x010802, 6));
    writeFileSync(join(d, 'vendor'), hex(f.vendor ?? 0x1b36, 4));
    writeFileSync(join(d, 'device'), hex(f.device ?? 0x0010, 4));
    writeFileSync(join(d, 'subsystem_vendor'), hex(0x1af4, 4));
    writeFileSync(join(d, 'subsystem_device'), hex(0x1100, 4));
    writeFileSync(join(d, 'driver_override'), '(null)\n');
    writeFileSync(join(d, 'numa_node'), `${f.numaNode ?? -1}\n`);
    writeFileSync(join(d, 'config'), Buffer.alloc(256));
    const bar = f.bar0Size ?? 0x4000;
    if (!f.resource0Only) {
      const start = 0xfe800000;
      const line = (s: number, e: number, fl: number): string => `0x${s.toString(16).padStart(16, '0')} 0x${e.toString(16).padStart(16, '0')} 0x${fl.toString(16).padStart(16, '0')}`;
      writeFileSync(join(d, 'resource'), [line(start, start + bar - 1, 0x140204), line(0, 0, 0)].join('\n') + '\n');
    }
    writeFileSync(join(d, 'resource0'), Buffer.alloc(bar));
    if (f.sriovTotalVfs !== undefined) {
      writeFileSync(join(d, 'sriov_totalvfs'), `${f.sriovTotalVfs}\n`);
      writeFileSync(join(d, 'sriov_numvfs'), `${f.sriovNumVfs ?? 0}\n`);
    }
    if (f.physfn) symlinkSync(`../${f.physfn}`, join(d, 'physfn'));
    if (f.iommuGroup !== undefined) {
      const g = join(this.sys, 'kernel', 'iommu_groups', String(f.iommuGroup));
      mkdirSync(join(g, 'devices'), { recursive: true });
      writeFileSync(join(g, 'type'), 'DMA\n');
      symlinkSync(d, join(g, 'devices', f.address));
      symlinkSync(g, join(d, 'iommu_group'));
    }
    if (f.driver) {
      this.loadDriver(f.driver);
      this.attach(f.address, f.driver);
    }
    if (f.nvme) {
      const c = join(d, 'nvme', f.nvme.ctrl);
      mkdirSync(c, { recursive: true });
      for (const disk of f.nvme.disks) {
        mkdirSync(join(c, disk), { recursive: true });
        const blk = join(this.sys, 'block', disk.replace(/c\d+n/, 'n'));
        mkdirSync(join(blk, 'holders'), { recursive: true });
      }
    }
  }

  /**
   * A kernel NVMe controller as drivers/nvme/host lays it out in sysfs: its folder (under the PCI function, or
   * a virtual one), /sys/class/nvme/nvmeC, /sys/dev/char/MAJ:MIN (major 246 for controllers, 242 for generic
   * char devices), and per namespace its block device (/sys/block/..., /sys/dev/block/259:N) and ng device.
   */
  addKernelController(c: FakeKernelController): void {
    const name = `nvme${c.instance}`;
    const dir = c.address ? join(this.devDir(c.address), 'nvme', name) : join(this.sys, 'devices', 'virtual', 'nvme-fabrics', 'ctl', name);
    mkdirSync(dir, { recursive: true });
    const transport = c.transport ?? (c.address ? 'pcie' : 'tcp');
    const attrs: Record<string, string> = {
      model: c.model ?? 'QEMU NVMe Ctrl',
      serial: c.serial ?? `SN${c.instance}`,
      firmware_rev: c.firmware ?? '8.0.0',
      transport,
      state: c.state ?? 'live',
      cntlid: String(c.cntlid ?? 0),
      subsysnqn: `nqn.2019-08.org.qemu:${c.serial ?? `SN${c.instance}`}`,
      address: c.address ?? 'traddr=127.0.0.1,trsvcid=4420',
      dev: `246:${c.instance}`,
    };
    for (const [k, v] of Object.entries(attrs)) writeFileSync(join(dir, k), `${v}\n`);
    mkdirSync(join(this.sys, 'class', 'nvme'), { recursive: true });
    symlinkSync(dir, join(this.sys, 'class', 'nvme', name));
    this.devNumber('char', `246:${c.instance}`, dir, 'nvme');
    for (const ns of c.namespaces ?? []) {
      // with multipath the generic char device is the head's, in the subsystem's folder
      const subsysDir = ns.subsystem === undefined ? null : join(this.sys, 'devices', 'virtual', 'nvme-subsystem', `nvme-subsys${ns.subsystem}`);
      const ng = subsysDir === null ? join(dir, `ng${c.instance}n${ns.head}`) : join(subsysDir, `ng${ns.subsystem}n${ns.head}`);
      mkdirSync(ng, { recursive: true });
      const ngNumber = `242:${this.nextMinor++}`;
      writeFileSync(join(ng, 'dev'), `${ngNumber}\n`);
      this.devNumber('char', ngNumber, ng, 'nvme-generic');
      if (ns.genericOnly) continue;
      const nsAttrs = (d: string): void => {
        mkdirSync(join(d, 'queue'), { recursive: true });
        mkdirSync(join(d, 'holders'), { recursive: true });
        writeFileSync(join(d, 'nsid'), `${ns.nsid}\n`);
        writeFileSync(join(d, 'size'), `${ns.sizeBytes / 512}\n`);
        writeFileSync(join(d, 'queue', 'logical_block_size'), `${ns.lbaSize}\n`);
      };
      let disk: string;
      let diskDir: string;
      if (ns.subsystem === undefined) {
        disk = `nvme${c.instance}n${ns.head}`;
        diskDir = join(dir, disk);
      } else {
        disk = `nvme${ns.subsystem}n${ns.head}`;
        diskDir = join(subsysDir!, disk);
        mkdirSync(join(this.sys, 'class', 'nvme-subsystem'), { recursive: true });
        const link = join(this.sys, 'class', 'nvme-subsystem', `nvme-subsys${ns.subsystem}`);
        if (!existsSync(link)) symlinkSync(subsysDir!, link);
        const path = join(dir, `nvme${ns.subsystem}c${c.instance}n${ns.head}`);
        mkdirSync(path, { recursive: true });
        writeFileSync(join(path, 'nsid'), `${ns.nsid}\n`);
      }
      nsAttrs(diskDir);
      if (!existsSync(join(this.sys, 'block', disk))) symlinkSync(diskDir, join(this.sys, 'block', disk));
      if (!existsSync(join(diskDir, 'subsystem'))) this.devNumber('block', `259:${this.nextMinor++}`, diskDir, 'block');
    }
  }

  /** /sys/dev/<type>/<maj:min> -> the device's folder, with its `subsystem` link naming the class. */
  private devNumber(type: 'char' | 'block', number: string, dir: string, subsystem: string): void {
    const cls = join(this.sys, 'class', subsystem);
    mkdirSync(cls, { recursive: true });
    if (!existsSync(join(dir, 'subsystem'))) symlinkSync(cls, join(dir, 'subsystem'));
    mkdirSync(join(this.sys, 'dev', type), { recursive: true });
    symlinkSync(dir, join(this.sys, 'dev', type, number));
  }

  driverOf(addr: string): string | null {
    const l = join(this.devDir(addr), 'driver');
    try {
      return basename(readlinkSync(l));
    } catch {
      return null;
    }
  }

  override(addr: string): string {
    return readFileSync(join(this.devDir(addr), 'driver_override'), 'utf8').trim();
  }

  private attach(addr: string, driver: string): void {
    symlinkSync(join(this.sys, 'bus', 'pci', 'drivers', driver), join(this.devDir(addr), 'driver'));
  }

  /** The fake kernel. */
  write(path: string, data: string): void {
    this.writes.push(`${path.slice(this.sys.length)} <- ${data.trim()}`);
    if (path.endsWith('/driver_override')) {
      if (!existsSync(dirname(path))) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
      const v = data.trim();
      writeFileSync(path, `${v === '' ? '(null)' : v}\n`);
      return;
    }
    if (path.endsWith('/driver/unbind')) {
      const devDir = dirname(dirname(path));
      const addr = basename(devDir);
      if (data !== addr) throw new Error('ENODEV');
      unlinkSync(join(devDir, 'driver'));
      return;
    }
    if (path.endsWith('/drivers_probe')) {
      const addr = data.trim();
      const d = this.devDir(addr);
      if (existsSync(join(d, 'driver'))) return;
      const ov = this.override(addr);
      const cls = parseInt(readFileSync(join(d, 'class'), 'utf8').trim().slice(2), 16);
      const drv = ov !== '(null)' ? ov : this.defaults.get(cls);
      if (!drv || !existsSync(join(this.sys, 'bus', 'pci', 'drivers', drv)) || this.refuse.has(drv)) {
        throw Object.assign(new Error('EINVAL: probe failed'), { code: 'EINVAL' });
      }
      this.attach(addr, drv);
      return;
    }
    writeFileSync(path, data);
  }
}
