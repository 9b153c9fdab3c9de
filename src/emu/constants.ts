/**
 * Constants shared by the controller modules (kept apart from controller.ts to avoid import cycles).
 */
import { makeStatus } from '../nvme/cqe.js';
import { encodeVersion } from '../nvme/registers.js';
import { GenericStatus, Sct } from '../nvme/status.js';

/** Returned by a command handler whose completion is posted later (or never). */
export const DEFERRED = -1;

export const ST_INTERNAL = makeStatus(Sct.Generic, GenericStatus.InternalError, false);
export const ST_ABORT_REQUESTED = makeStatus(Sct.Generic, GenericStatus.AbortRequested, false);
export const ST_ABORTED_SQ_DELETION = makeStatus(Sct.Generic, GenericStatus.AbortedSqDeletion, false);
/** Status used in error-log entries recorded for invalid doorbell writes. */
export const ST_INVALID_DOORBELL_LOG = makeStatus(Sct.Generic, GenericStatus.InvalidField, true);

/** Asynchronous event: type Error status (0), info "Invalid Doorbell Write Value" (1), log page Error Information. */
export const AER_TYPE_ERROR = 0x0;
export const AER_INFO_INVALID_DOORBELL_REGISTER = 0x00;
export const AER_INFO_INVALID_DOORBELL_VALUE = 0x01;
export const AER_INFO_SHIFT = 8;
export const AER_LOG_PAGE_SHIFT = 16;
export const AER_LIMIT = 4;

/** Error Information log: entries kept. */
export const ERROR_LOG_ENTRIES = 64;

/** CAP.MPSMIN / CAP.MPSMAX of this controller (4 KiB .. 64 KiB pages). */
export const MPSMIN = 0;
export const MPSMAX = 4;
/** Version reported in VS and Identify VER: NVMe 1.4. */
export const NVME_VERSION = encodeVersion(1, 4, 0);
