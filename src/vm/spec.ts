// What a guest run looks like: its NVMe controllers, machine and command.

/** One namespace of a QEMU NVMe controller (QEMU's `nvme-ns` device), backed by a raw image file. */
export interface NvmeNamespaceSpec {
  /** Size in MiB of a new, sparse backing image (default 64). Ignored when `image` is given. */
  sizeMiB?: number;
  /** Logical block size in bytes (QEMU `logical_block_size`, default 512). */
  logicalBlockSize?: 512 | 4096;
  /** Physical block size in bytes (QEMU `physical_block_size`, default = logicalBlockSize). */
  physicalBlockSize?: number;
  /** Namespace id (default: position + 1). */
  nsid?: number;
  /** An existing image file to use (not created, not deleted). Default: a new image in the run's temp folder. */
  image?: string;
  /** QEMU `shared` (only meaningful with a subsystem). */
  shared?: boolean;
  /** Extra `nvme-ns` properties, passed through as key=value. */
  props?: Record<string, string | number | boolean>;
}

/** SR-IOV parameters of QEMU's NVMe controller (needs a subsystem; one is created when none is named). */
export interface NvmeSriovSpec {
  /** `sriov_max_vfs` */
  maxVfs: number;
  /** `sriov_vq_flexible`: flexible queue resources of the primary controller. */
  vqFlexible: number;
  /** `sriov_vi_flexible`: flexible interrupt resources of the primary controller. */
  viFlexible: number;
  /** `sriov_max_vq_per_vf` */
  maxVqPerVf?: number;
  /** `sriov_max_vi_per_vf` */
  maxViPerVf?: number;
}

/** Which guest kernel a run boots: the Debian 6.12 default, or 'p2p' (a newer Debian kernel with CONFIG_PCI_P2PDMA). */
export type GuestKernel = 'default' | 'p2p';

/**
 * One QEMU NVMe controller (`-device nvme`), on its own PCIe root port of a q35 machine, or on a downstream port of
 * an emulated PCIe switch (`pcieSwitch`).
 */
export interface NvmeDeviceSpec {
  /** Serial number (`serial`, at most 20 characters); the model is QEMU's fixed "QEMU NVMe Ctrl". */
  serial: string;
  /** Namespaces (default: one 64 MiB namespace with 512-byte blocks). An empty array gives none. */
  namespaces?: NvmeNamespaceSpec[];
  /** `max_ioqpairs` */
  maxIoQueuePairs?: number;
  /** `msix_qsize` */
  msixQsize?: number;
  /** `mdts` (maximum data transfer size, as a power of two of the minimum page size) */
  mdts?: number;
  /** Subsystem id: controllers naming the same one share one `nvme-subsys` device (and shared namespaces). */
  subsystem?: string;
  /** Subsystem NQN (`nqn` of `nvme-subsys`; default derived from the subsystem id). */
  subsystemNqn?: string;
  /** SR-IOV (QEMU 7.2 `sriov_*` properties). */
  sriov?: NvmeSriovSpec;
  /**
   * Controller Memory Buffer in MiB (QEMU 7.2 `cmb_size_mb`: BAR2, with CMBSZ.SQS/CQS/WDS/RDS set). A Linux kernel
   * with PCI P2PDMA publishes it as p2pmem (/sys/bus/pci/devices/<bdf>/p2pmem/).
   */
  cmbMiB?: number;
  /** QEMU `legacy-cmb`: CMBLOC/CMBSZ readable before the host enables the CMB through CMBMSC (pre-1.4 scheme). */
  legacyCmb?: boolean;
  /**
   * A switch id: controllers naming the same one sit on downstream ports (`xio3130-downstream`) of one emulated
   * PCIe switch (`x3130-upstream`) under one root port, so that traffic between them need not cross the host
   * bridge (the kernel's PCI P2PDMA always allows peers behind one switch).
   */
  pcieSwitch?: string;
  /** Extra `nvme` properties, passed through as key=value. */
  props?: Record<string, string | number | boolean>;
}

/**
 * A device-memory stand-in: QEMU's `ivshmem-plain` (PCI 1af4:1110), whose BAR2 is backed by a host file
 * (`memory-backend-file,share=on`). It sits on the root complex next to the NVMe root ports, so an NVMe
 * controller's DMA reaches BAR2 (through the vIOMMU when there is one) and lands in the file, which the host can
 * read during and after the run.
 */
export interface IvshmemSpec {
  /** QEMU id of the device (letters, digits, '-', '_'); the memory backend is `<id>-mem`. */
  id: string;
  /** Size of BAR2 in MiB: a power of two (QEMU requires it), 1 to 1024. */
  sizeMiB: number;
  /**
   * The host file backing BAR2. When it exists it must have exactly the size; when not it is created (zeroed).
   * Default: a new file in a folder of its own under the temp folder, kept after the run (its path is in the
   * result's `ivshmem`; the caller removes it).
   */
  file?: string;
}

/** A user-mode network with TCP ports forwarded from the host's loopback into the guest. */
export interface NetSpec {
  /** host 127.0.0.1:<host> -> guest 10.0.2.15:<guest> */
  hostForward?: Array<{ host: number; guest: number }>;
}

export interface GuestRunOptions {
  /** The command, run by bash in `cwd` in the guest (stdin is /dev/null; stdout and stderr are captured). */
  command: string;
  /** The folder to run it in (a host path: the guest sees the host's root file system read-only). */
  cwd?: string;
  /** NVMe controllers (default none). */
  nvme?: NvmeDeviceSpec[];
  /** Device-memory stand-ins (ivshmem-plain with a file-backed BAR2), default none. */
  ivshmem?: IvshmemSpec[];
  /** The guest kernel (default 'default': Debian 6.12; 'p2p': a newer one with CONFIG_PCI_P2PDMA=y). */
  kernel?: GuestKernel;
  /** Add QEMU's intel-iommu (q35, kernel-irqchip=split, intremap=on) and boot with intel_iommu=on (for VFIO). */
  iommu?: boolean;
  /** Guest memory in MiB (default 2048). */
  memoryMiB?: number;
  /** Guest vCPUs (default 2). */
  cpus?: number;
  /**
   * Make QEMU's TCG keep the guest's memory barriers against the device models' threads (default true: thread=multi
   * and at least two possible vCPUs, see qemu.ts). false: QEMU 7.2's own choice for the vCPU count, which with one
   * vCPU drops them and makes the kernel nvme driver lose doorbells (I/O timeouts) under load.
   */
  tcgParallel?: boolean;
  /** 2 MiB hugepages to reserve, in MiB (rounded up); hugetlbfs is mounted on /dev/hugepages. */
  hugepagesMiB?: number;
  /**
   * Make the root file system writable: an overlay of the host's root (read-only, 9p) under a tmpfs in guest
   * memory, so that e.g. `npm test` can write dist/ in the checkout. Writes never reach the host and vanish
   * at power-off. Default false: the root is read-only (only /tmp, /var/tmp, /run, /dev/shm are writable).
   */
  writableRoot?: boolean;
  /** Kernel modules to load (with dependencies) before the command, e.g. ['nvme', 'uio_pci_generic', 'vfio-pci']. Default ['nvme']. */
  modules?: string[];
  /** Environment variables for the command (HOMI_GUEST=1 is always set). */
  env?: Record<string, string>;
  /** Extra kernel command line arguments. */
  kernelArgs?: string[];
  /** Extra QEMU arguments, appended. */
  qemuArgs?: string[];
  /** User-mode networking with host port forwards (virtio-net; guest address 10.0.2.15/24). */
  net?: NetSpec;
  /** Hard limit for the whole run (boot included); QEMU is killed with SIGKILL when it passes. Default 300000. */
  timeoutMs?: number;
  /** Boot again this many times when the guest kernel panics before the command starts (default 1). */
  bootRetries?: number;
  /** Every serial console line (kernel messages, HOMI progress markers) as it arrives. */
  onConsole?: (line: string) => void;
  /** Every line of the command's output (stdout and stderr) as it arrives (followed through the job share). */
  onOutput?: (line: string) => void;
  /** Aborting kills QEMU (SIGKILL); the run then resolves with error 'aborted' and cleans up. */
  signal?: AbortSignal;
  /** Keep the run's temp folder (images, logs) and report its path instead of removing it. */
  keepTemp?: boolean;
}

export interface GuestRunResult {
  /** The command's exit status; null when it never ran or did not finish (see `error`). */
  exitCode: number | null;
  /** The command's stdout and stderr, interleaved. */
  output: string;
  /** The guest's serial console: kernel messages and progress markers, not the command's output (and QEMU's own stderr, prefixed "qemu: "). */
  consoleLog: string;
  /** The guest kernel log (dmesg) at the end of the run, when the guest got that far. */
  dmesg: string;
  /** Milliseconds from starting QEMU until the command started; null if it never started. */
  bootMs: number | null;
  /** Milliseconds the command ran (as seen by the host); null if it did not finish. */
  commandMs: number | null;
  /** Milliseconds of the whole run (QEMU start to exit). */
  totalMs: number;
  /** True when the hard timeout killed QEMU. */
  timedOut: boolean;
  /** True when the guest kernel panicked before the command started (runInGuest boots again, bootRetries times). */
  bootPanic: boolean;
  /** The consoles of earlier boots of this run that panicked before the command started (then retried). */
  bootPanics?: string[];
  /** Why there is no exit code (setup failure in the guest, timeout, QEMU failure), if so. */
  error?: string;
  /** QEMU's exit. */
  qemuExit: { code: number | null; signal: string | null };
  /** The QEMU command line used. */
  qemuCommand: string[];
  /** The host files behind each ivshmem device's BAR2 (kept after the run), in the order of the spec. */
  ivshmem: Array<{ id: string; file: string; bytes: number }>;
  /** The run's temp folder (images, job share): already removed unless keepTemp was set. */
  tempDir: string;
}
