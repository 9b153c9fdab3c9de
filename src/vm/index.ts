// The VM harness: run commands inside a real Linux guest (QEMU, TCG) with QEMU's NVMe controller(s).
export { runInGuest, guestScript, shQuote } from './run.js';
export { provision, ensureHostPackages, ensureKernel, ensureInitramfs, ProvisionError, PREFERRED_KERNEL_PACKAGE } from './provision.js';
export type { KernelInfo, Provisioned } from './provision.js';
export { buildQemuPlan, validateNvme } from './qemu.js';
export type { GuestRunOptions, GuestRunResult, NvmeDeviceSpec, NvmeNamespaceSpec, NvmeSriovSpec, NetSpec } from './spec.js';
export { cacheDir, repoRoot } from './paths.js';
export { parseNvmeSpec, parseSize } from './nvme-arg.js';
