/** Admin and NVM command set opcodes (NVMe Base 2.0 Figure 28; NVM Command Set 1.0 Figure 18). */

export const AdminOpcode = {
  DeleteIoSq: 0x00,
  CreateIoSq: 0x01,
  GetLogPage: 0x02,
  DeleteIoCq: 0x04,
  CreateIoCq: 0x05,
  Identify: 0x06,
  Abort: 0x08,
  SetFeatures: 0x09,
  GetFeatures: 0x0a,
  AsyncEventRequest: 0x0c,
  NamespaceManagement: 0x0d,
  FirmwareCommit: 0x10,
  FirmwareImageDownload: 0x11,
  DeviceSelfTest: 0x14,
  NamespaceAttachment: 0x15,
  KeepAlive: 0x18,
  DirectiveSend: 0x19,
  DirectiveReceive: 0x1a,
  VirtualizationManagement: 0x1c,
  NvmeMiSend: 0x1d,
  NvmeMiReceive: 0x1e,
  CapacityManagement: 0x20,
  Lockdown: 0x24,
  DoorbellBufferConfig: 0x7c,
  FabricsCommands: 0x7f,
  FormatNvm: 0x80,
  SecuritySend: 0x81,
  SecurityReceive: 0x82,
  Sanitize: 0x84,
  GetLbaStatus: 0x86,
} as const;

export const NvmOpcode = {
  Flush: 0x00,
  Write: 0x01,
  Read: 0x02,
  WriteUncorrectable: 0x04,
  Compare: 0x05,
  WriteZeroes: 0x08,
  DatasetManagement: 0x09,
  Verify: 0x0c,
  ReservationRegister: 0x0d,
  ReservationReport: 0x0e,
  ReservationAcquire: 0x11,
  ReservationRelease: 0x15,
  Copy: 0x19,
} as const;

function invert(o: Record<string, number>): Map<number, string> {
  const m = new Map<number, string>();
  for (const [k, v] of Object.entries(o)) m.set(v, k);
  return m;
}
const adminNames = invert(AdminOpcode);
const nvmNames = invert(NvmOpcode);

/** Human-readable opcode name, e.g. "Identify" or "Read"; unknown opcodes as hex. */
export function opcodeName(opcode: number, admin: boolean): string {
  const n = (admin ? adminNames : nvmNames).get(opcode);
  return n ?? `opcode 0x${opcode.toString(16).padStart(2, '0')}`;
}

/** Identify CNS values. */
export const Cns = {
  Namespace: 0x00,
  Controller: 0x01,
  ActiveNamespaceList: 0x02,
  NamespaceIdDescriptors: 0x03,
  /** Controllers attached to the namespace in NSID (a controller list), CNTID and up. */
  NamespaceAttachedControllerList: 0x12,
  /** Every controller of the NVM subsystem (a controller list), CNTID and up. */
  ControllerList: 0x13,
  /** Primary Controller Capabilities (SR-IOV: flexible VQ / VI resources). */
  PrimaryControllerCapabilities: 0x14,
  /** Secondary Controller List (SR-IOV: the virtual functions' controllers), CNTID and up. */
  SecondaryControllerList: 0x15,
} as const;

/** Feature identifiers (Set/Get Features CDW10 bits 7:0). */
export const FeatureId = {
  Arbitration: 0x01,
  PowerManagement: 0x02,
  TemperatureThreshold: 0x04,
  ErrorRecovery: 0x05,
  VolatileWriteCache: 0x06,
  NumberOfQueues: 0x07,
  InterruptCoalescing: 0x08,
  InterruptVectorConfiguration: 0x09,
  WriteAtomicityNormal: 0x0a,
  AsyncEventConfiguration: 0x0b,
} as const;

/** Log page identifiers (Get Log Page CDW10 bits 7:0). */
export const LogPageId = {
  ErrorInformation: 0x01,
  SmartHealth: 0x02,
  FirmwareSlot: 0x03,
} as const;

/** Dataset Management attribute bits (CDW11). */
export const DSM_ATTR_DEALLOCATE = 1 << 2;
/** Size of one Dataset Management range descriptor. */
export const DSM_RANGE_SIZE = 16;
/** Size of one Error Information log entry. */
export const ERROR_LOG_ENTRY_SIZE = 64;
/** Size of the SMART / Health Information log page. */
export const SMART_LOG_SIZE = 512;
/** Size of Identify data structures. */
export const IDENTIFY_SIZE = 4096;
