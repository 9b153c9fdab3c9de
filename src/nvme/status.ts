/**
 * NVMe status codes with their spec names (NVMe Base 2.0 section 4.6.1.2; NVM Command Set 1.0 section 4.1.1).
 * A status is identified by its Status Code Type (SCT) and Status Code (SC).
 */
import { constants as osConstants } from 'node:os';
import { makeStatus, statusSc, statusSct } from './cqe.js';

export const Sct = {
  Generic: 0,
  CommandSpecific: 1,
  MediaDataIntegrity: 2,
  PathRelated: 3,
  VendorSpecific: 7,
} as const;

/** Generic Command Status (SCT 0). */
export const GenericStatus = {
  Success: 0x00,
  InvalidOpcode: 0x01,
  InvalidField: 0x02,
  CommandIdConflict: 0x03,
  DataTransferError: 0x04,
  AbortedPowerLoss: 0x05,
  InternalError: 0x06,
  AbortRequested: 0x07,
  AbortedSqDeletion: 0x08,
  AbortedFailedFused: 0x09,
  AbortedMissingFused: 0x0a,
  InvalidNamespaceOrFormat: 0x0b,
  CommandSequenceError: 0x0c,
  InvalidSglSegmentDescriptor: 0x0d,
  InvalidNumberOfSglDescriptors: 0x0e,
  DataSglLengthInvalid: 0x0f,
  MetadataSglLengthInvalid: 0x10,
  SglDescriptorTypeInvalid: 0x11,
  InvalidUseOfCmb: 0x12,
  PrpOffsetInvalid: 0x13,
  AtomicWriteUnitExceeded: 0x14,
  OperationDenied: 0x15,
  SglOffsetInvalid: 0x16,
  HostIdentifierInconsistentFormat: 0x18,
  KeepAliveTimerExpired: 0x19,
  KeepAliveTimeoutInvalid: 0x1a,
  AbortedPreemptAndAbort: 0x1b,
  SanitizeFailed: 0x1c,
  SanitizeInProgress: 0x1d,
  SglDataBlockGranularityInvalid: 0x1e,
  CommandNotSupportedForQueueInCmb: 0x1f,
  NamespaceWriteProtected: 0x20,
  CommandInterrupted: 0x21,
  TransientTransportError: 0x22,
  ProhibitedByLockdown: 0x23,
  AdminCommandMediaNotReady: 0x24,
  // NVM command set generic status values
  LbaOutOfRange: 0x80,
  CapacityExceeded: 0x81,
  NamespaceNotReady: 0x82,
  ReservationConflict: 0x83,
  FormatInProgress: 0x84,
  InvalidValueSize: 0x85,
  InvalidKeySize: 0x86,
  KvKeyDoesNotExist: 0x87,
  UnrecoveredError: 0x88,
  KeyExists: 0x89,
} as const;

/** Command Specific Status (SCT 1). */
export const CommandSpecificStatus = {
  CompletionQueueInvalid: 0x00,
  InvalidQueueIdentifier: 0x01,
  InvalidQueueSize: 0x02,
  AbortCommandLimitExceeded: 0x03,
  AsyncEventRequestLimitExceeded: 0x05,
  InvalidFirmwareSlot: 0x06,
  InvalidFirmwareImage: 0x07,
  InvalidInterruptVector: 0x08,
  InvalidLogPage: 0x09,
  InvalidFormat: 0x0a,
  FirmwareActivationRequiresConventionalReset: 0x0b,
  InvalidQueueDeletion: 0x0c,
  FeatureIdentifierNotSaveable: 0x0d,
  FeatureNotChangeable: 0x0e,
  FeatureNotNamespaceSpecific: 0x0f,
  FirmwareActivationRequiresSubsystemReset: 0x10,
  FirmwareActivationRequiresControllerLevelReset: 0x11,
  FirmwareActivationRequiresMaximumTimeViolation: 0x12,
  FirmwareActivationProhibited: 0x13,
  OverlappingRange: 0x14,
  NamespaceInsufficientCapacity: 0x15,
  NamespaceIdentifierUnavailable: 0x16,
  NamespaceAlreadyAttached: 0x18,
  NamespaceIsPrivate: 0x19,
  NamespaceNotAttached: 0x1a,
  ThinProvisioningNotSupported: 0x1b,
  ControllerListInvalid: 0x1c,
  DeviceSelfTestInProgress: 0x1d,
  BootPartitionWriteProhibited: 0x1e,
  InvalidControllerIdentifier: 0x1f,
  InvalidSecondaryControllerState: 0x20,
  InvalidNumberOfControllerResources: 0x21,
  InvalidResourceIdentifier: 0x22,
  SanitizeProhibitedWhilePmrEnabled: 0x23,
  AnaGroupIdentifierInvalid: 0x24,
  AnaAttachFailed: 0x25,
  InsufficientCapacity: 0x26,
  NamespaceAttachmentLimitExceeded: 0x27,
  ProhibitionOfCommandExecutionNotSupported: 0x28,
  IoCommandSetNotSupported: 0x29,
  IoCommandSetNotEnabled: 0x2a,
  IoCommandSetCombinationRejected: 0x2b,
  InvalidIoCommandSet: 0x2c,
  IdentifierUnavailable: 0x2d,
  // NVM command set specific
  ConflictingAttributes: 0x80,
  InvalidProtectionInformation: 0x81,
  AttemptedWriteToReadOnlyRange: 0x82,
  CommandSizeLimitExceeded: 0x83,
  ZonedBoundaryError: 0xb8,
  ZoneIsFull: 0xb9,
  ZoneIsReadOnly: 0xba,
  ZoneIsOffline: 0xbb,
  ZoneInvalidWrite: 0xbc,
  TooManyActiveZones: 0xbd,
  TooManyOpenZones: 0xbe,
  InvalidZoneStateTransition: 0xbf,
} as const;

/** Media and Data Integrity Errors (SCT 2). */
export const MediaStatus = {
  WriteFault: 0x80,
  UnrecoveredReadError: 0x81,
  EndToEndGuardCheckError: 0x82,
  EndToEndApplicationTagCheckError: 0x83,
  EndToEndReferenceTagCheckError: 0x84,
  CompareFailure: 0x85,
  AccessDenied: 0x86,
  DeallocatedOrUnwrittenLogicalBlock: 0x87,
  EndToEndStorageTagCheckError: 0x88,
} as const;

/** Path Related Status (SCT 3). */
export const PathStatus = {
  InternalPathError: 0x00,
  AsymmetricAccessPersistentLoss: 0x01,
  AsymmetricAccessInaccessible: 0x02,
  AsymmetricAccessTransition: 0x03,
  ControllerPathingError: 0x60,
  HostPathingError: 0x70,
  CommandAbortedByHost: 0x71,
} as const;

/** Spec names, keyed by (sct << 8) | sc. */
const NAMES = new Map<number, string>([
  // Generic
  [0x000, 'Successful Completion'],
  [0x001, 'Invalid Command Opcode'],
  [0x002, 'Invalid Field in Command'],
  [0x003, 'Command ID Conflict'],
  [0x004, 'Data Transfer Error'],
  [0x005, 'Commands Aborted due to Power Loss Notification'],
  [0x006, 'Internal Error'],
  [0x007, 'Command Abort Requested'],
  [0x008, 'Command Aborted due to SQ Deletion'],
  [0x009, 'Command Aborted due to Failed Fused Command'],
  [0x00a, 'Command Aborted due to Missing Fused Command'],
  [0x00b, 'Invalid Namespace or Format'],
  [0x00c, 'Command Sequence Error'],
  [0x00d, 'Invalid SGL Segment Descriptor'],
  [0x00e, 'Invalid Number of SGL Descriptors'],
  [0x00f, 'Data SGL Length Invalid'],
  [0x010, 'Metadata SGL Length Invalid'],
  [0x011, 'SGL Descriptor Type Invalid'],
  [0x012, 'Invalid Use of Controller Memory Buffer'],
  [0x013, 'PRP Offset Invalid'],
  [0x014, 'Atomic Write Unit Exceeded'],
  [0x015, 'Operation Denied'],
  [0x016, 'SGL Offset Invalid'],
  [0x018, 'Host Identifier Inconsistent Format'],
  [0x019, 'Keep Alive Timer Expired'],
  [0x01a, 'Keep Alive Timeout Invalid'],
  [0x01b, 'Command Aborted due to Preempt and Abort'],
  [0x01c, 'Sanitize Failed'],
  [0x01d, 'Sanitize In Progress'],
  [0x01e, 'SGL Data Block Granularity Invalid'],
  [0x01f, 'Command Not Supported for Queue in CMB'],
  [0x020, 'Namespace is Write Protected'],
  [0x021, 'Command Interrupted'],
  [0x022, 'Transient Transport Error'],
  [0x023, 'Command Prohibited by Command and Feature Lockdown'],
  [0x024, 'Admin Command Media Not Ready'],
  [0x080, 'LBA Out of Range'],
  [0x081, 'Capacity Exceeded'],
  [0x082, 'Namespace Not Ready'],
  [0x083, 'Reservation Conflict'],
  [0x084, 'Format In Progress'],
  [0x085, 'Invalid Value Size'],
  [0x086, 'Invalid Key Size'],
  [0x087, 'KV Key Does Not Exist'],
  [0x088, 'Unrecovered Error'],
  [0x089, 'Key Exists'],
  // Command specific
  [0x100, 'Completion Queue Invalid'],
  [0x101, 'Invalid Queue Identifier'],
  [0x102, 'Invalid Queue Size'],
  [0x103, 'Abort Command Limit Exceeded'],
  [0x105, 'Asynchronous Event Request Limit Exceeded'],
  [0x106, 'Invalid Firmware Slot'],
  [0x107, 'Invalid Firmware Image'],
  [0x108, 'Invalid Interrupt Vector'],
  [0x109, 'Invalid Log Page'],
  [0x10a, 'Invalid Format'],
  [0x10b, 'Firmware Activation Requires Conventional Reset'],
  [0x10c, 'Invalid Queue Deletion'],
  [0x10d, 'Feature Identifier Not Saveable'],
  [0x10e, 'Feature Not Changeable'],
  [0x10f, 'Feature Not Namespace Specific'],
  [0x110, 'Firmware Activation Requires NVM Subsystem Reset'],
  [0x111, 'Firmware Activation Requires Controller Level Reset'],
  [0x112, 'Firmware Activation Requires Maximum Time Violation'],
  [0x113, 'Firmware Activation Prohibited'],
  [0x114, 'Overlapping Range'],
  [0x115, 'Namespace Insufficient Capacity'],
  [0x116, 'Namespace Identifier Unavailable'],
  [0x118, 'Namespace Already Attached'],
  [0x119, 'Namespace Is Private'],
  [0x11a, 'Namespace Not Attached'],
  [0x11b, 'Thin Provisioning Not Supported'],
  [0x11c, 'Controller List Invalid'],
  [0x11d, 'Device Self-test In Progress'],
  [0x11e, 'Boot Partition Write Prohibited'],
  [0x11f, 'Invalid Controller Identifier'],
  [0x120, 'Invalid Secondary Controller State'],
  [0x121, 'Invalid Number of Controller Resources'],
  [0x122, 'Invalid Resource Identifier'],
  [0x123, 'Sanitize Prohibited While Persistent Memory Region is Enabled'],
  [0x124, 'ANA Group Identifier Invalid'],
  [0x125, 'ANA Attach Failed'],
  [0x126, 'Insufficient Capacity'],
  [0x127, 'Namespace Attachment Limit Exceeded'],
  [0x128, 'Prohibition of Command Execution Not Supported'],
  [0x129, 'I/O Command Set Not Supported'],
  [0x12a, 'I/O Command Set Not Enabled'],
  [0x12b, 'I/O Command Set Combination Rejected'],
  [0x12c, 'Invalid I/O Command Set'],
  [0x12d, 'Identifier Unavailable'],
  [0x180, 'Conflicting Attributes'],
  [0x181, 'Invalid Protection Information'],
  [0x182, 'Attempted Write to Read Only Range'],
  [0x183, 'Command Size Limit Exceeded'],
  [0x1b8, 'Zoned Boundary Error'],
  [0x1b9, 'Zone Is Full'],
  [0x1ba, 'Zone Is Read Only'],
  [0x1bb, 'Zone Is Offline'],
  [0x1bc, 'Zone Invalid Write'],
  [0x1bd, 'Too Many Active Zones'],
  [0x1be, 'Too Many Open Zones'],
  [0x1bf, 'Invalid Zone State Transition'],
  // Media and data integrity
  [0x280, 'Write Fault'],
  [0x281, 'Unrecovered Read Error'],
  [0x282, 'End-to-end Guard Check Error'],
  [0x283, 'End-to-end Application Tag Check Error'],
  [0x284, 'End-to-end Reference Tag Check Error'],
  [0x285, 'Compare Failure'],
  [0x286, 'Access Denied'],
  [0x287, 'Deallocated or Unwritten Logical Block'],
  [0x288, 'End-to-End Storage Tag Check Error'],
  // Path related
  [0x300, 'Internal Path Error'],
  [0x301, 'Asymmetric Access Persistent Loss'],
  [0x302, 'Asymmetric Access Inaccessible'],
  [0x303, 'Asymmetric Access Transition'],
  [0x360, 'Controller Pathing Error'],
  [0x370, 'Host Pathing Error'],
  [0x371, 'Command Aborted By Host'],
]);

const SCT_NAMES = ['Generic Command Status', 'Command Specific Status', 'Media and Data Integrity Errors', 'Path Related Status'];

/** Spec name of a status given by SCT and SC, e.g. "LBA Out of Range". */
function codeName(sct: number, sc: number): string {
  const n = NAMES.get(((sct & 0x7) << 8) | (sc & 0xff));
  if (n) return n;
  if (sct === Sct.VendorSpecific) return `Vendor Specific status 0x${sc.toString(16).padStart(2, '0')}`;
  const t = SCT_NAMES[sct] ?? `SCT ${sct}`;
  return `Reserved ${t} 0x${sc.toString(16).padStart(2, '0')}`;
}

/**
 * The one name function of HOMI's status space.
 * - `statusName(status)`: any completion status (see "The completion status space" below): a status a
 *   controller posted gets its spec name, a host outcome its own ("Command Timeout", "EIO (errno 5)", ...).
 * - `statusName(sct, sc)`: the spec name of a Status Code Type / Status Code pair, e.g. "LBA Out of Range".
 */
export function statusName(status: number): string;
export function statusName(sct: number, sc: number): string;
export function statusName(a: number, b?: number): string {
  if (b !== undefined) return codeName(a, b);
  return completionStatusName(a);
}

/** Spec name of a 15-bit CQE status field (the host-outcome bits above it, if any, are ignored). */
export function statusFieldName(status: number): string {
  return codeName(statusSct(status), statusSc(status));
}

/** All known (sct, sc, name) triples, for tables and tests. */
export function allStatusCodes(): Array<{ sct: number; sc: number; name: string }> {
  return [...NAMES.entries()].map(([k, name]) => ({ sct: k >>> 8, sc: k & 0xff, name }));
}

/** Convenience: 15-bit status fields for the statuses controllers and drivers use most. */
export const STATUS_SUCCESS = 0;
export const status = (sct: number, sc: number, dnr = false): number => makeStatus(sct, sc, dnr);

// ---------------------------------------------------------------------------------------------------------------
// The completion status space
//
// Every completion HOMI delivers (driver queue pairs, the mediated client, homid's relay, every io/ backend, the
// benchmark) carries one status number from this space. It is a non-negative integer below 2^31, so it fits an
// Int32Array cell and `status === 0` is success everywhere:
//
//   bits 14:0   the NVMe status field, exactly as a CQE carries it (SC 7:0, SCT 10:8, CRD 12:11, M 13, DNR 14)
//   bit  15     always 0
//   bits 19:16  the host cause (HostCause): 0 when a controller posted the status; otherwise what the host saw
//   bits 30:20  the kernel errno (HostCause.Errno only; 1..2047), so it stays recoverable for diagnostics
//
// A host outcome always carries an SCT 3 path-related status in bits 14:0, the choice Linux makes for the same
// outcomes: 71h Command Aborted By Host for a command the host stopped waiting for or took back (a timeout, a
// controller reset, the daemon serving the queue gone), 70h Host Pathing Error for a path that failed (the
// device removed, a kernel errno). So `status & STATUS_FIELD_MASK` is always a status any NVMe consumer
// understands (homid's mediated relay posts exactly that into the client's CQE, and the cause into CQE DW1), and
// the bits above it say which host outcome it was. No negative status exists: nothing encodes an outcome as a
// private negative, and a kernel's -errno is converted with errnoStatus() where it enters HOMI (src/io/*).
// ---------------------------------------------------------------------------------------------------------------

/** Bits 14:0 of a completion status: the NVMe status field. */
export const STATUS_FIELD_MASK = 0x7fff;
/** SCT and SC bits of the status field (zero means success). */
export const STATUS_CODE_MASK = 0x7ff;
export const HOST_CAUSE_SHIFT = 16;
export const HOST_CAUSE_MASK = 0xf;
export const HOST_ERRNO_SHIFT = 20;
/** Largest errno the space keeps (11 bits; Linux's largest, kernel-internal ones included, is far below). */
export const HOST_ERRNO_MAX = 0x7ff;
/** Bit 15: never set in a completion status (the CQE's status field has 15 bits). */
const STATUS_BIT15 = 0x8000;
/** The largest completion status: bit 31 is never set, so every status is a non-negative int32. */
const STATUS_MAX = 0x7fffffff;

/** What the host saw, bits 19:16 of a completion status. */
export const HostCause = {
  /** A controller posted the status. */
  None: 0,
  /** No completion within the command's timeout (its CID stays quarantined until the controller answers). */
  Timeout: 1,
  /** Lost to a controller reset (the command may or may not have executed). */
  ControllerReset: 2,
  /** The device disappeared (registers read all ones); the command's fate is unknown. */
  DeviceRemoved: 3,
  /** The daemon serving the queue (homid) is gone: the connection closed; the queue no longer exists. */
  Disconnected: 4,
  /** A kernel path failed the operation with an errno (bits 30:20). */
  Errno: 5,
} as const;
export type HostCause = (typeof HostCause)[keyof typeof HostCause];

/** SCT 3 / SC 70h: Host Pathing Error. */
export const STATUS_HOST_PATH_ERROR = makeStatus(Sct.PathRelated, PathStatus.HostPathingError);
/** SCT 3 / SC 71h: Command Aborted By Host. */
export const STATUS_ABORTED_BY_HOST = makeStatus(Sct.PathRelated, PathStatus.CommandAbortedByHost);

/** A host outcome: `cause` in bits 19:16 over the NVMe status field `field`. */
export function hostStatus(cause: number, field: number): number {
  return ((cause & HOST_CAUSE_MASK) << HOST_CAUSE_SHIFT) | (field & STATUS_FIELD_MASK);
}

/** The command timed out: Command Aborted By Host. */
export const STATUS_TIMEOUT = hostStatus(HostCause.Timeout, STATUS_ABORTED_BY_HOST);
/** The command was lost to a controller reset: Command Aborted By Host. */
export const STATUS_ABORTED_BY_RESET = hostStatus(HostCause.ControllerReset, STATUS_ABORTED_BY_HOST);
/** The device disappeared: Host Pathing Error, Do Not Retry. */
export const STATUS_DEVICE_REMOVED = hostStatus(HostCause.DeviceRemoved, makeStatus(Sct.PathRelated, PathStatus.HostPathingError, true));
/** homid is gone (the connection closed): Command Aborted By Host, Do Not Retry (the queue no longer exists). */
export const STATUS_DISCONNECTED = hostStatus(HostCause.Disconnected, makeStatus(Sct.PathRelated, PathStatus.CommandAbortedByHost, true));

/** A kernel errno (positive, as errno(3) has it) as a completion status: Host Pathing Error with the errno kept. */
export function errnoStatus(errno: number): number {
  const e = errno > 0 && errno <= HOST_ERRNO_MAX ? errno : HOST_ERRNO_MAX;
  return (e << HOST_ERRNO_SHIFT) | (HostCause.Errno << HOST_CAUSE_SHIFT) | STATUS_HOST_PATH_ERROR;
}

/** The NVMe status field of a completion status (what a CQE would carry). */
export function statusField(status: number): number {
  return status & STATUS_FIELD_MASK;
}
/** The host cause of a completion status (HostCause.None for one a controller posted). */
export function statusCause(status: number): number {
  return (status >>> HOST_CAUSE_SHIFT) & HOST_CAUSE_MASK;
}
/** The kernel errno a completion status carries, or 0. */
export function statusErrno(status: number): number {
  return statusCause(status) === HostCause.Errno ? (status >>> HOST_ERRNO_SHIFT) & HOST_ERRNO_MAX : 0;
}
/** True for a successful completion (SCT and SC both zero, no host outcome). */
export function isSuccess(status: number): boolean {
  return (status & STATUS_CODE_MASK) === 0 && status >>> HOST_CAUSE_SHIFT === 0;
}
/** True when `status` is a well-formed member of the space (no bit 15, no bit 31, a known cause with its field). */
export function isCompletionStatus(status: number): boolean {
  if (!Number.isInteger(status) || status < 0 || status > STATUS_MAX || (status & STATUS_BIT15) !== 0) return false;
  const cause = statusCause(status);
  if (cause === HostCause.None) return status >>> HOST_CAUSE_SHIFT === 0;
  if (cause > HostCause.Errno) return false;
  if (cause !== HostCause.Errno && status >>> HOST_ERRNO_SHIFT !== 0) return false;
  return statusSct(status) === Sct.PathRelated;
}

let errnoNames: Map<number, string> | null = null;
/** errno(3) name of a number (from Node's own table: no I/O), or "errnoN". */
export function errnoName(errno: number): string {
  if (errnoNames === null) {
    errnoNames = new Map();
    for (const [name, value] of Object.entries(osConstants.errno)) if (!errnoNames.has(value)) errnoNames.set(value, name);
  }
  return errnoNames.get(errno) ?? `errno${errno}`;
}

function completionStatusName(status: number): string {
  switch (statusCause(status)) {
    case HostCause.None:
      return statusFieldName(status);
    case HostCause.Timeout:
      return 'Command Timeout';
    case HostCause.ControllerReset:
      return 'Command Aborted by Controller Reset';
    case HostCause.DeviceRemoved:
      return 'Device Removed';
    case HostCause.Disconnected:
      return 'homid Gone (connection closed)';
    case HostCause.Errno: {
      const e = statusErrno(status);
      return `${errnoName(e)} (errno ${e})`;
    }
    default:
      return `${statusFieldName(status)} (host cause ${statusCause(status)})`;
  }
}
