// The QEMU command line of a guest run (pure: no I/O).
import type { GuestRunOptions, IvshmemSpec, NvmeDeviceSpec } from './spec.js';

export interface QemuPlan {
  args: string[];
  /** Backing images to create: path and size in bytes. */
  images: Array<{ path: string; bytes: number }>;
  /** The kernel command line. */
  append: string;
  /** Host files behind ivshmem BAR2s: created (zeroed) when missing, kept after the run. */
  ivshmem: Array<{ id: string; file: string; bytes: number }>;
}

/** Largest ivshmem BAR2 the harness plans (MiB). */
export const IVSHMEM_MAX_MIB = 1024;

export function validateIvshmem(specs: IvshmemSpec[]): void {
  const ids = new Set<string>();
  specs.forEach((d, i) => {
    if (typeof d.id !== 'string' || !/^[A-Za-z][A-Za-z0-9_-]{0,31}$/.test(d.id)) {
      throw new Error(`ivshmem[${i}].id must be a letter then up to 31 letters, digits, '-' or '_', got ${JSON.stringify(d.id)}`);
    }
    if (ids.has(d.id)) throw new Error(`ivshmem[${i}].id ${d.id} is used twice`);
    ids.add(d.id);
    const m = d.sizeMiB;
    if (!Number.isInteger(m) || m < 1 || m > IVSHMEM_MAX_MIB || (m & (m - 1)) !== 0) {
      throw new Error(`ivshmem[${i}].sizeMiB must be a power of two from 1 to ${IVSHMEM_MAX_MIB}, got ${String(m)}`);
    }
    if (d.file !== undefined && (typeof d.file !== 'string' || !d.file.startsWith('/'))) throw new Error(`ivshmem[${i}].file must be an absolute path`);
  });
}

function props(p: Record<string, string | number | boolean | undefined>): string {
  return Object.entries(p)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v)}`)
    .join(',');
}

/** QEMU's option parser splits on commas: a comma in a value is written twice. */
export function qemuEscape(v: string): string {
  return v.replace(/,/g, ',,');
}

export function validateNvme(specs: NvmeDeviceSpec[]): void {
  const serials = new Set<string>();
  specs.forEach((d, i) => {
    if (typeof d.serial !== 'string' || d.serial.length === 0 || d.serial.length > 20 || !/^[\x21-\x7e]+$/.test(d.serial)) {
      throw new Error(`nvme[${i}].serial must be 1 to 20 printable ASCII characters without spaces, got ${JSON.stringify(d.serial)}`);
    }
    if (serials.has(d.serial)) throw new Error(`nvme[${i}].serial ${d.serial} is used twice`);
    serials.add(d.serial);
    const nsids = new Set<number>();
    (d.namespaces ?? [{}]).forEach((ns, j) => {
      const lbs = ns.logicalBlockSize ?? 512;
      if (lbs !== 512 && lbs !== 4096) throw new Error(`nvme[${i}].namespaces[${j}].logicalBlockSize must be 512 or 4096`);
      const pbs = ns.physicalBlockSize ?? lbs;
      if (pbs < lbs || (pbs & (pbs - 1)) !== 0) throw new Error(`nvme[${i}].namespaces[${j}].physicalBlockSize must be a power of two >= the logical block size`);
      const mib = ns.sizeMiB ?? 64;
      if (!ns.image && (!Number.isFinite(mib) || mib <= 0)) throw new Error(`nvme[${i}].namespaces[${j}].sizeMiB must be positive`);
      const nsid = ns.nsid ?? j + 1;
      if (!Number.isInteger(nsid) || nsid < 1 || nsid > 256) throw new Error(`nvme[${i}].namespaces[${j}].nsid must be 1..256`);
      if (nsids.has(nsid)) throw new Error(`nvme[${i}] has nsid ${nsid} twice`);
      nsids.add(nsid);
    });
    if (d.cmbMiB !== undefined && (!Number.isInteger(d.cmbMiB) || d.cmbMiB < 1 || d.cmbMiB > 4096)) throw new Error(`nvme[${i}].cmbMiB must be an integer 1..4096, got ${d.cmbMiB}`);
    if (d.legacyCmb && d.cmbMiB === undefined) throw new Error(`nvme[${i}].legacyCmb needs a CMB (cmbMiB)`);
    if (d.pcieSwitch !== undefined && !/^[A-Za-z0-9_-]{1,32}$/.test(d.pcieSwitch))
      throw new Error(`nvme[${i}].pcieSwitch must be 1 to 32 letters, digits, '-' or '_', got ${JSON.stringify(d.pcieSwitch)}`);
  });
}

/** Chassis numbers: root ports of controllers take i + 1; switches' root ports and downstream ports these. */
const SWITCH_ROOT_CHASSIS = 60;
const SWITCH_DOWNSTREAM_CHASSIS = 80;

export interface PlanInputs {
  qemu: string;
  vmlinuz: string;
  initramfs: string;
  jobShare: string;
  imageDir: string;
  /** Folder for ivshmem backing files the spec does not name (kept after the run). */
  ivshmemDir?: string;
}

export function buildQemuPlan(o: GuestRunOptions, io: PlanInputs): QemuPlan {
  const nvme = o.nvme ?? [];
  validateNvme(nvme);
  const ivshmem = o.ivshmem ?? [];
  validateIvshmem(ivshmem);
  if (ivshmem.some((d) => d.file === undefined) && io.ivshmemDir === undefined) throw new Error('ivshmem: no folder for backing files that the spec does not name');
  const cpus = o.cpus ?? 2;
  const mem = o.memoryMiB ?? 2048;
  const args: string[] = [];
  const images: QemuPlan['images'] = [];
  args.push('-nodefaults', '-no-user-config', '-no-reboot');
  args.push('-machine', o.iommu ? 'q35,kernel-irqchip=split' : 'q35');
  // Guest memory barriers under TCG. QEMU 7.2 translates a guest barrier (mfence, a locked instruction) into a
  // host one only for "parallel" translation blocks (tcg_gen_mb checks CF_PARALLEL), and a block is parallel only
  // under multi-threaded TCG with more than one *possible* vCPU (tcg_cpu_init_cflags(cpu, max_cpus > 1)). But the
  // device models (QEMU's NVMe controller) run in another host thread, so a 1-vCPU guest loses store->load order
  // against them: the kernel nvme driver's shadow doorbell protocol (Doorbell Buffer Config: store the new tail or
  // head in the shadow buffer, mb(), load the EventIdx; the controller does the mirror image) then skips the MMIO
  // doorbell write the controller was waiting for, and commands sit unseen until the kernel's I/O timeout, abort
  // and controller reset (docs/results/kqd/experiments.md). QEMU 8.1 emits the barriers always in system mode
  // ("tcg: Do not elide memory barriers for !CF_PARALLEL in system mode"). Here: always thread=multi and at least
  // two possible vCPUs (maxcpus; the extra one is never plugged), which makes every block parallel.
  // Cost: real barriers and host atomics in translated code (slower TCG for barrier- and lock-heavy code). The
  // unplugged vCPU is not among the 6.12 guest's possible CPUs (cpu/possible read 0), so nvme still makes one I/O
  // queue per vCPU. tcgParallel: false gives QEMU 7.2's own choice back (to reproduce the timeouts).
  const parallel = o.tcgParallel ?? true;
  const maxCpus = parallel ? Math.max(cpus, 2) : cpus;
  args.push('-accel', parallel || cpus > 1 ? 'tcg,thread=multi' : 'tcg');
  args.push('-cpu', 'max', '-smp', maxCpus > cpus ? `${cpus},maxcpus=${maxCpus}` : String(cpus), '-m', String(mem));
  args.push('-display', 'none', '-serial', 'stdio');
  args.push('-kernel', io.vmlinuz, '-initrd', io.initramfs);
  const cmdline = ['console=ttyS0,115200', 'rdinit=/init', 'panic=-1', 'oops=panic', 'quiet', 'loglevel=4', 'mitigations=off', 'tsc=reliable'];
  if (o.iommu) cmdline.push('intel_iommu=on');
  if (o.writableRoot) cmdline.push('homi.overlay=1');
  cmdline.push(...(o.kernelArgs ?? []));
  const append = cmdline.join(' ');
  args.push('-append', append);
  // The IOMMU comes before every other PCI device.
  if (o.iommu) args.push('-device', 'intel-iommu,intremap=on');
  args.push(
    '-fsdev',
    'local,id=hostroot,path=/,readonly=on,security_model=none,multidevs=remap',
    '-device',
    'virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot',
    '-fsdev',
    `local,id=homijob,path=${qemuEscape(io.jobShare)},security_model=none,multidevs=remap`,
    '-device',
    'virtio-9p-pci,fsdev=homijob,mount_tag=homijob',
  );
  if (o.net) {
    const fwd = (o.net.hostForward ?? []).map((f) => `,hostfwd=tcp:127.0.0.1:${f.host}-:${f.guest}`).join('');
    args.push('-netdev', `user,id=n0,restrict=on${fwd}`, '-device', 'virtio-net-pci,netdev=n0');
  }
  const subsystems = new Map<string, string>();
  /** Switch id -> its upstream port's QEMU id. */
  const switches = new Map<string, string>();
  nvme.forEach((d, i) => {
    let rp: string;
    if (d.pcieSwitch !== undefined) {
      // root port -> x3130-upstream -> one xio3130-downstream per controller
      let up = switches.get(d.pcieSwitch);
      if (!up) {
        const k = switches.size;
        up = `swup${k}`;
        switches.set(d.pcieSwitch, up);
        args.push('-device', `pcie-root-port,id=swrp${k},chassis=${SWITCH_ROOT_CHASSIS + k},slot=${SWITCH_ROOT_CHASSIS + k}`);
        args.push('-device', `x3130-upstream,id=${up},bus=swrp${k}`);
      }
      rp = `swdn${i}`;
      args.push('-device', `xio3130-downstream,id=${rp},bus=${up},chassis=${SWITCH_DOWNSTREAM_CHASSIS + i},slot=${SWITCH_DOWNSTREAM_CHASSIS + i},port=${i}`);
    } else {
      rp = `rp${i}`;
      args.push('-device', `pcie-root-port,id=${rp},chassis=${i + 1},slot=${i + 1}`);
    }
    let subsys = d.subsystem;
    if (!subsys && d.sriov) subsys = `homi-sriov-${i}`;
    let subsysId: string | undefined;
    if (subsys) {
      subsysId = subsystems.get(subsys);
      if (!subsysId) {
        subsysId = `subsys${subsystems.size}`;
        subsystems.set(subsys, subsysId);
        const nqn = d.subsystemNqn ?? subsys;
        args.push('-device', `nvme-subsys,id=${subsysId},nqn=${qemuEscape(nqn)}`);
      }
    }
    const ctrl = `nvme${i}`;
    const p: Record<string, string | number | boolean | undefined> = {
      id: ctrl,
      serial: qemuEscape(d.serial),
      bus: rp,
      subsys: subsysId,
      max_ioqpairs: d.maxIoQueuePairs,
      msix_qsize: d.msixQsize,
      mdts: d.mdts,
      cmb_size_mb: d.cmbMiB,
      'legacy-cmb': d.legacyCmb,
    };
    if (d.sriov) {
      p.sriov_max_vfs = d.sriov.maxVfs;
      p.sriov_vq_flexible = d.sriov.vqFlexible;
      p.sriov_vi_flexible = d.sriov.viFlexible;
      p.sriov_max_vq_per_vf = d.sriov.maxVqPerVf;
      p.sriov_max_vi_per_vf = d.sriov.maxViPerVf;
    }
    Object.assign(p, d.props ?? {});
    args.push('-device', `nvme,${props(p)}`);
    (d.namespaces ?? [{}]).forEach((ns, j) => {
      const nsid = ns.nsid ?? j + 1;
      const drive = `${ctrl}n${nsid}`;
      const file = ns.image ?? `${io.imageDir}/${drive}.img`;
      if (!ns.image) images.push({ path: file, bytes: Math.ceil((ns.sizeMiB ?? 64) * 1024 * 1024) });
      args.push('-drive', `file=${qemuEscape(file)},if=none,id=${drive},format=raw,cache=writeback,discard=unmap`);
      const lbs = ns.logicalBlockSize ?? 512;
      const np: Record<string, string | number | boolean | undefined> = {
        drive,
        bus: ctrl,
        nsid,
        logical_block_size: lbs,
        physical_block_size: ns.physicalBlockSize ?? lbs,
        shared: ns.shared,
      };
      Object.assign(np, ns.props ?? {});
      args.push('-device', `nvme-ns,${props(np)}`);
    });
  });
  // Device memory on the root complex (an integrated endpoint of pcie.0), a peer of the NVMe root ports: the
  // controllers' bus-master address space reaches BAR2 (through the vIOMMU when there is one).
  const shm: QemuPlan['ivshmem'] = [];
  for (const d of ivshmem) {
    const file = d.file ?? `${io.ivshmemDir!}/${d.id}.mem`;
    const bytes = d.sizeMiB * 1024 * 1024;
    shm.push({ id: d.id, file, bytes });
    args.push('-object', `memory-backend-file,id=${d.id}-mem,share=on,mem-path=${qemuEscape(file)},size=${bytes}`);
    args.push('-device', `ivshmem-plain,id=${d.id},memdev=${d.id}-mem,bus=pcie.0`);
  }
  args.push(...(o.qemuArgs ?? []));
  return { args: [io.qemu, ...args], images, append, ivshmem: shm };
}
