/**
 * Completion status values as the driver delivers them to `onComplete(tag, status, result)`.
 * Non-negative values are the 15-bit NVMe status field of the CQE (0 = success; see src/nvme/status.ts).
 * Negative values are local outcomes that no controller ever posts.
 */
import { statusFieldName } from '../nvme/status.js';

/** The command did not complete within the queue's timeout; its CID stays quarantined until the controller answers. */
export const STATUS_TIMEOUT = -1;
/** The command was lost to a controller reset (it may or may not have executed). */
export const STATUS_ABORTED_BY_RESET = -2;
/** The device disappeared (registers read all ones); the command's fate is unknown. */
export const STATUS_DEVICE_REMOVED = -3;

/** True for a successful completion (status 0 or a status whose SCT and SC are both zero). */
export function isSuccess(status: number): boolean {
  return status >= 0 && (status & 0x7ff) === 0;
}

/** Human-readable name of a driver status value (NVMe spec name, or the local outcome). */
export function driverStatusName(status: number): string {
  switch (status) {
    case STATUS_TIMEOUT:
      return 'Command Timeout';
    case STATUS_ABORTED_BY_RESET:
      return 'Command Aborted by Controller Reset';
    case STATUS_DEVICE_REMOVED:
      return 'Device Removed';
    default:
      return status < 0 ? `Local status ${status}` : statusFieldName(status);
  }
}
