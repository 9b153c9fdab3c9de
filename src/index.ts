/**
 * HOMI's public API: what a program gets with `import { ... } from 'homi'`.
 *
 * - The unified block I/O API: openIo(uri, options) -> IoDevice -> IoQueue, over posix, io_uring, io_uring_cmd
 *   and the user-space driver (emu://..., pci:...), with the queue contract every queue shares.
 * - The user-space NVMe driver core: openDevice(uri) -> Transport, Controller.open(transport) -> queue pairs.
 * - homid's client library: HomidClient.connect(socket) -> raw, mediated or GPU queue pairs, extent maps.
 * - homi load: loadFiles(inputs, { path, to }) -> files in pinned host memory, GPU memory or the caller's buffers.
 * - The extent decoders: XFS and ext4 images read without the kernel, FIEMAP on a mounted file system.
 *
 * Everything else under dist/src is internal and may change without notice.
 */

// The queue contract (submit / ring / poll, completion handler, status space).
export { QUEUE_FULL, type CompletionHandler, type QueueContract, type QueueStatus } from './queue/contract.js';

// The unified I/O API.
export { openIo } from './io/open.js';
export {
  BACKENDS,
  IoError,
  IoOp,
  IoOpenError,
  IoRangeError,
  ioOpName,
  type BackendName,
  type IoBuffer,
  type IoCompletionHandler,
  type IoDevice,
  type IoFeatures,
  type IoGeometry,
  type IoOpcode,
  type IoOpenOptions,
  type IoQueue,
} from './io/types.js';

// Devices and the driver core.
export { openDevice, DeviceOpenError } from './device/open.js';
export { parseDeviceUri, UriError, type DeviceUri } from './device/uri.js';
export type { Transport } from './transport/transport.js';
export { Controller } from './driver/controller.js';
export { QueuePair } from './driver/queue-pair.js';
// The status space: one statusName for every completion status; host outcomes and kernel errnos (src/nvme/status.ts).
export {
  HostCause,
  STATUS_ABORTED_BY_RESET,
  STATUS_DEVICE_REMOVED,
  STATUS_DISCONNECTED,
  STATUS_TIMEOUT,
  errnoStatus,
  isSuccess,
  statusCause,
  statusErrno,
  statusField,
  statusFieldName,
  statusName,
} from './nvme/status.js';

// homid's client library.
export { HomidClient, HomidClientError, MediatedQueuePair, type GpuQueueLease, type GpuQueueOptions, type Lease, type MediatedLease, type RawLease } from './client/index.js';

// The extent decoders.
export {
  BufferBlockSource,
  Ext4Image,
  FileBlockSource,
  FsImage,
  XfsImage,
  detectFs,
  fiemapFd,
  fiemapPath,
  openImage,
  openSource,
  type BlockSource,
  type FsKind,
  type OpenOptions as ExtentOpenOptions,
} from './extents/index.js';

// homi load: files into host or GPU memory through posix, io_uring, the user-space driver or GPU threads.
export {
  loadFiles,
  loadPlanned,
  discover,
  HostSink,
  GpuSink,
  CallerSink,
  LOAD_PATHS,
  LOAD_TARGETS,
  LoadFileError,
  type Loaded,
  type LoadOptions,
  type LoadReport,
  type LoadProgress,
  type LoadFile,
  type LoadSink,
  type LoadPath,
  type LoadTarget,
} from './load/index.js';
