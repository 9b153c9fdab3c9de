/** HOMI's asynchronous block I/O interface: one API, backends chosen at deployment time. */
export * from './types.js';
export { openIo, resolveBackend, isBackendName } from './open.js';
export { parseTarget, defaultBackend, type Target } from './target.js';
export { encodeUringCmdSqe, nvmeCommandFor, NVME_URING_CMD_IO, NVME_URING_CMD_SIZE, type NvmeUringCmd } from './uring-cmd.js';
