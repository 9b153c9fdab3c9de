/**
 * Completion status values as the driver delivers them to `onComplete(tag, status, result)`: HOMI's one status
 * space, defined in src/nvme/status.ts ("The completion status space"). A controller's status is the 15-bit CQE
 * status field (0 = success); a local outcome (timeout, reset, removal) is an SCT 3 path-related status with
 * its host cause in bits 19:16. Re-exported here for the driver's callers; name any of them with statusName().
 */
export { STATUS_ABORTED_BY_RESET, STATUS_DEVICE_REMOVED, STATUS_TIMEOUT, isSuccess, statusName } from '../nvme/status.js';
