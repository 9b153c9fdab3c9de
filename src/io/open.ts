/**
 * openIo(uri, options): the one entry point of the I/O interface. Picks the backend (explicit, or by target),
 * refuses options the backend cannot honour before any I/O, and returns an IoDevice.
 */
import { closeSync } from 'node:fs';
import type { MemorySource } from './common.js';
import { DriverDevice } from './driver.js';
import { p2pmemSource } from './p2pmem.js';
import { PosixDevice } from './posix.js';
import { defaultBackend, openKernelTarget, parseTarget, type Target } from './target.js';
import { UringCmdDevice } from './uring-cmd.js';
import { UringDevice } from './uring.js';
import { BACKENDS, IoOpenError, type BackendName, type IoDevice, type IoOpenOptions } from './types.js';

export function isBackendName(s: string): s is BackendName {
  return (BACKENDS as readonly string[]).includes(s);
}

/**
 * Check a backend against a target and options without opening anything. Returns the backend to use;
 * throws IoOpenError with one line that says what cannot be honoured.
 */
export function resolveBackend(target: Target, o: IoOpenOptions): BackendName {
  const backend = o.backend ?? defaultBackend(target);
  if (!isBackendName(backend)) throw new IoOpenError(`unknown backend '${String(backend)}' (known: ${BACKENDS.join(', ')})`);
  const isDevice = target.kind === 'device';
  if ((backend === 'driver' || backend === 'emu') && !isDevice) {
    throw new IoOpenError(
      `the ${backend} backend drives an NVMe controller itself and needs an emu:// or pci: URI, not the path '${target.uri}' (use --backend posix or io_uring for files and block devices)`,
    );
  }
  if (backend === 'emu' && isDevice && target.scheme !== 'emu') throw new IoOpenError(`the emu backend needs an emu:// URI; '${target.uri}' is not one (use --backend driver)`);
  if ((backend === 'posix' || backend === 'io_uring' || backend === 'io_uring_cmd') && isDevice) {
    throw new IoOpenError(`the ${backend} backend goes through the kernel and needs a file or device path, not '${target.uri}' (use --backend driver)`);
  }
  if (o.direct && backend !== 'posix' && backend !== 'io_uring') {
    throw new IoOpenError(
      `--direct (O_DIRECT) applies to the posix and io_uring backends; ${backend} ${backend === 'io_uring_cmd' ? 'always bypasses the page cache' : 'never goes through the page cache'}`,
    );
  }
  if (o.fixedBuffers && backend !== 'io_uring' && backend !== 'io_uring_cmd') {
    throw new IoOpenError(`--fixed-buffers (io_uring registered buffers) applies to the io_uring and io_uring_cmd backends, not ${backend}`);
  }
  if (o.hipri && backend !== 'io_uring' && backend !== 'io_uring_cmd') {
    throw new IoOpenError(
      `--hipri (IORING_SETUP_IOPOLL) applies to the io_uring and io_uring_cmd backends, not ${backend}${backend === 'driver' || backend === 'emu' ? ' (the driver always polls)' : ''}`,
    );
  }
  if (o.hipri && backend === 'io_uring' && !o.direct) throw new IoOpenError('--hipri needs --direct: polled completions exist only for O_DIRECT I/O');
  if (o.buffers?.kind === 'peer' && (backend !== 'driver' || !isDevice || target.scheme !== 'pci')) {
    throw new IoOpenError(`--buffers ${o.buffers.kind}: device-memory buffers need the driver backend on a pci: controller (its DMA reaches the peer); not the ${backend} backend on '${target.uri}'`);
  }
  if (p2pmemOf(o) !== undefined) {
    if (backend !== 'io_uring') throw new IoOpenError(`p2pmem buffers apply to the io_uring backend (O_DIRECT into a p2pmem mapping), not ${backend}`);
    if (!o.direct) throw new IoOpenError('p2pmem buffers need --direct: without O_DIRECT the page cache is in the path and the CPU copies into device memory');
    if (o.fixedBuffers) throw new IoOpenError('p2pmem buffers with --fixed-buffers (registering p2pmem with io_uring) are not supported by HOMI (not tried)');
  }
  if (o.nsid !== undefined && o.nsid !== 1 && !isDevice) throw new IoOpenError(`--nsid applies to the driver backends; a file or block device is one namespace`);
  return backend;
}

/** The p2pmem placement of a run: `--buffers p2pmem:<bdf>` or the explicit option (which can name a fake sysfs). */
function p2pmemOf(o: IoOpenOptions): { bdf: string; sysfsRoot?: string } | undefined {
  return o.p2pmem ?? (o.buffers?.kind === 'p2pmem' ? { bdf: o.buffers.bdf } : undefined);
}

export async function openIo(uri: string, o: IoOpenOptions = {}): Promise<IoDevice> {
  const target = parseTarget(uri);
  const backend = resolveBackend(target, o);
  if (target.kind === 'device') return DriverDevice.open(uri, backend, o.nsid ?? 1, o.maxQueues ?? 16, o.buffers);
  if (backend === 'io_uring_cmd') return UringCmdDevice.open(uri, target.path, { fixedBuffers: o.fixedBuffers ?? false, hipri: o.hipri ?? false });
  const kt = openKernelTarget(target, o.direct ?? false, backend);
  if (backend === 'posix') return new PosixDevice(uri, kt);
  let memory: MemorySource | undefined;
  try {
    const p2pmem = p2pmemOf(o);
    memory = p2pmem ? p2pmemSource(p2pmem.bdf, p2pmem.sysfsRoot) : undefined;
  } catch (e) {
    closeSync(kt.fd);
    throw e;
  }
  const dev = new UringDevice(uri, kt, { fixedBuffers: o.fixedBuffers ?? false, hipri: o.hipri ?? false, ...(memory ? { memory } : {}) });
  if (o.hipri) {
    try {
      await dev.probePolled();
    } catch (e) {
      await dev.close();
      throw e;
    }
  }
  return dev;
}
