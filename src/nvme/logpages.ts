/**
 * Log pages: Error Information entries (LID 01h, 64 bytes each) and SMART / Health Information
 * (LID 02h, 512 bytes) (NVMe Base 2.0 sections 5.16.1.2 and 5.16.1.3).
 */
import { checkBuffer, checkUint, readU128, readU16, readU32, readU64, writeU128, writeU16, writeU32, writeU64, writeU8 } from './bytes.js';
import { ERROR_LOG_ENTRY_SIZE, SMART_LOG_SIZE } from './opcodes.js';

export { ERROR_LOG_ENTRY_SIZE, SMART_LOG_SIZE } from './opcodes.js';

export const ErrorLogOffset = {
  ERROR_COUNT: 0, // 8
  SQID: 8, // 2
  CID: 10, // 2
  STATUS: 12, // 2: bit 0 phase tag, bits 15:1 status field
  PARAM_ERROR_LOCATION: 14, // 2: bits 7:0 byte, 10:8 bit
  LBA: 16, // 8
  NSID: 24, // 4
  VS_INFO_AVAILABLE: 28,
  TRTYPE: 29,
  CMD_SPECIFIC_INFO: 32, // 8
  TRTYPE_SPECIFIC_INFO: 40, // 2
} as const;

export const ERROR_STATUS_PHASE_BIT = 1;
export const ERROR_STATUS_SHIFT = 1;
/** Parameter Error Location: byte within the command (7:0) and bit within that byte (10:8). */
export const PEL_BIT_SHIFT = 8;
export const PEL_BIT_MASK = 0x7;
export const PEL_BYTE_MASK = 0xff;
/** Parameter Error Location / CID / SQID value meaning "not applicable". */
export const ERROR_LOG_NOT_APPLICABLE = 0xffff;

export interface ErrorLogEntry {
  /** Unique, incrementing error count; 0 means the entry is invalid. */
  errorCount: number;
  sqid: number;
  cid: number;
  phase: number;
  /** 15-bit status field. */
  status: number;
  /** Raw parameter error location (FFFFh if not applicable). */
  parameterErrorLocation: number;
  lba: number;
  nsid: number;
  vendorSpecificInfoAvailable: number;
  transportType: number;
  commandSpecificInfo: number;
  transportTypeSpecificInfo: number;
}

export type ErrorLogEntryInit = Pick<ErrorLogEntry, 'errorCount' | 'status'> & Partial<ErrorLogEntry>;

/** Parameter Error Location value for byte `byte` (0..63) and bit `bit` (0..7) of the command. */
export function parameterErrorLocation(byte: number, bit: number): number {
  checkUint('parameter error byte', byte, PEL_BYTE_MASK);
  checkUint('parameter error bit', bit, PEL_BIT_MASK);
  return byte | (bit << PEL_BIT_SHIFT);
}

export function encodeErrorLogEntry(e: ErrorLogEntryInit, out: Uint8Array, offset = 0): void {
  checkBuffer('out', out, offset + ERROR_LOG_ENTRY_SIZE);
  checkUint('status', e.status, 0x7fff);
  checkUint('phase', e.phase ?? 0, 1);
  out.fill(0, offset, offset + ERROR_LOG_ENTRY_SIZE);
  writeU64(out, offset + ErrorLogOffset.ERROR_COUNT, 'errorCount', e.errorCount);
  writeU16(out, offset + ErrorLogOffset.SQID, 'sqid', e.sqid ?? ERROR_LOG_NOT_APPLICABLE);
  writeU16(out, offset + ErrorLogOffset.CID, 'cid', e.cid ?? ERROR_LOG_NOT_APPLICABLE);
  writeU16(out, offset + ErrorLogOffset.STATUS, 'status', (e.status << ERROR_STATUS_SHIFT) | (e.phase ?? 0));
  writeU16(out, offset + ErrorLogOffset.PARAM_ERROR_LOCATION, 'parameterErrorLocation', e.parameterErrorLocation ?? ERROR_LOG_NOT_APPLICABLE);
  writeU64(out, offset + ErrorLogOffset.LBA, 'lba', e.lba ?? 0);
  writeU32(out, offset + ErrorLogOffset.NSID, 'nsid', e.nsid ?? 0);
  writeU8(out, offset + ErrorLogOffset.VS_INFO_AVAILABLE, 'vendorSpecificInfoAvailable', e.vendorSpecificInfoAvailable ?? 0);
  writeU8(out, offset + ErrorLogOffset.TRTYPE, 'transportType', e.transportType ?? 0);
  writeU64(out, offset + ErrorLogOffset.CMD_SPECIFIC_INFO, 'commandSpecificInfo', e.commandSpecificInfo ?? 0);
  writeU16(out, offset + ErrorLogOffset.TRTYPE_SPECIFIC_INFO, 'transportTypeSpecificInfo', e.transportTypeSpecificInfo ?? 0);
}

export function decodeErrorLogEntry(bytes: Uint8Array, offset = 0): ErrorLogEntry {
  checkBuffer('bytes', bytes, offset + ERROR_LOG_ENTRY_SIZE);
  const sf = readU16(bytes, offset + ErrorLogOffset.STATUS);
  return {
    errorCount: readU64(bytes, offset + ErrorLogOffset.ERROR_COUNT, 'Error Count'),
    sqid: readU16(bytes, offset + ErrorLogOffset.SQID),
    cid: readU16(bytes, offset + ErrorLogOffset.CID),
    phase: sf & ERROR_STATUS_PHASE_BIT,
    status: sf >>> ERROR_STATUS_SHIFT,
    parameterErrorLocation: readU16(bytes, offset + ErrorLogOffset.PARAM_ERROR_LOCATION),
    lba: readU64(bytes, offset + ErrorLogOffset.LBA, 'LBA'),
    nsid: readU32(bytes, offset + ErrorLogOffset.NSID),
    vendorSpecificInfoAvailable: bytes[offset + ErrorLogOffset.VS_INFO_AVAILABLE]!,
    transportType: bytes[offset + ErrorLogOffset.TRTYPE]!,
    commandSpecificInfo: readU64(bytes, offset + ErrorLogOffset.CMD_SPECIFIC_INFO, 'Command Specific Information'),
    transportTypeSpecificInfo: readU16(bytes, offset + ErrorLogOffset.TRTYPE_SPECIFIC_INFO),
  };
}

export const SmartLogOffset = {
  CRITICAL_WARNING: 0,
  COMPOSITE_TEMPERATURE: 1, // 2, Kelvin
  AVAILABLE_SPARE: 3,
  AVAILABLE_SPARE_THRESHOLD: 4,
  PERCENTAGE_USED: 5,
  ENDURANCE_GROUP_CRITICAL_WARNING: 6,
  DATA_UNITS_READ: 32, // 16
  DATA_UNITS_WRITTEN: 48, // 16
  HOST_READ_COMMANDS: 64, // 16
  HOST_WRITE_COMMANDS: 80, // 16
  CONTROLLER_BUSY_TIME: 96, // 16, minutes
  POWER_CYCLES: 112, // 16
  POWER_ON_HOURS: 128, // 16
  UNSAFE_SHUTDOWNS: 144, // 16
  MEDIA_ERRORS: 160, // 16
  ERROR_LOG_ENTRIES: 176, // 16
  WARNING_TEMP_TIME: 192, // 4, minutes
  CRITICAL_TEMP_TIME: 196, // 4, minutes
  TEMPERATURE_SENSORS: 200, // 8 x 2, Kelvin
} as const;

export const SMART_TEMPERATURE_SENSORS = 8;
/** One data unit is 1000 units of 512 bytes. */
export const SMART_DATA_UNIT_BYTES = 512_000;

/** Critical Warning bits. */
export const CriticalWarning = {
  SpareBelowThreshold: 1 << 0,
  Temperature: 1 << 1,
  ReliabilityDegraded: 1 << 2,
  ReadOnly: 1 << 3,
  VolatileBackupFailed: 1 << 4,
  PmrReadOnly: 1 << 5,
} as const;

export interface SmartLog {
  criticalWarning: number;
  /** Composite temperature in Kelvin. */
  compositeTemperature: number;
  availableSpare: number;
  availableSpareThreshold: number;
  percentageUsed: number;
  enduranceGroupCriticalWarning: number;
  /** 128-bit counters, as numbers (< 2^53). Data units are thousands of 512-byte blocks. */
  dataUnitsRead: number;
  dataUnitsWritten: number;
  hostReadCommands: number;
  hostWriteCommands: number;
  controllerBusyTime: number;
  powerCycles: number;
  powerOnHours: number;
  unsafeShutdowns: number;
  mediaErrors: number;
  errorLogEntries: number;
  warningTemperatureTime: number;
  criticalTemperatureTime: number;
  /** Temperature sensors 1..8 in Kelvin (0 = not implemented). */
  temperatureSensors: number[];
}

type Counter128 =
  'dataUnitsRead' | 'dataUnitsWritten' | 'hostReadCommands' | 'hostWriteCommands' | 'controllerBusyTime' | 'powerCycles' | 'powerOnHours' | 'unsafeShutdowns' | 'mediaErrors' | 'errorLogEntries';

const COUNTERS: ReadonlyArray<readonly [Counter128, number]> = [
  ['dataUnitsRead', SmartLogOffset.DATA_UNITS_READ],
  ['dataUnitsWritten', SmartLogOffset.DATA_UNITS_WRITTEN],
  ['hostReadCommands', SmartLogOffset.HOST_READ_COMMANDS],
  ['hostWriteCommands', SmartLogOffset.HOST_WRITE_COMMANDS],
  ['controllerBusyTime', SmartLogOffset.CONTROLLER_BUSY_TIME],
  ['powerCycles', SmartLogOffset.POWER_CYCLES],
  ['powerOnHours', SmartLogOffset.POWER_ON_HOURS],
  ['unsafeShutdowns', SmartLogOffset.UNSAFE_SHUTDOWNS],
  ['mediaErrors', SmartLogOffset.MEDIA_ERRORS],
  ['errorLogEntries', SmartLogOffset.ERROR_LOG_ENTRIES],
];

/** Data units (rounded up, as the spec requires) for a number of bytes transferred. */
export function bytesToDataUnits(bytes: number): number {
  return Math.ceil(bytes / SMART_DATA_UNIT_BYTES);
}

export function encodeSmartLog(s: Partial<SmartLog>, out: Uint8Array): void {
  checkBuffer('out', out, SMART_LOG_SIZE);
  out.fill(0, 0, SMART_LOG_SIZE);
  writeU8(out, SmartLogOffset.CRITICAL_WARNING, 'criticalWarning', s.criticalWarning ?? 0);
  writeU16(out, SmartLogOffset.COMPOSITE_TEMPERATURE, 'compositeTemperature', s.compositeTemperature ?? 0);
  writeU8(out, SmartLogOffset.AVAILABLE_SPARE, 'availableSpare', s.availableSpare ?? 0);
  writeU8(out, SmartLogOffset.AVAILABLE_SPARE_THRESHOLD, 'availableSpareThreshold', s.availableSpareThreshold ?? 0);
  writeU8(out, SmartLogOffset.PERCENTAGE_USED, 'percentageUsed', s.percentageUsed ?? 0);
  writeU8(out, SmartLogOffset.ENDURANCE_GROUP_CRITICAL_WARNING, 'enduranceGroupCriticalWarning', s.enduranceGroupCriticalWarning ?? 0);
  for (const [name, off] of COUNTERS) writeU128(out, off, name, s[name] ?? 0);
  writeU32(out, SmartLogOffset.WARNING_TEMP_TIME, 'warningTemperatureTime', s.warningTemperatureTime ?? 0);
  writeU32(out, SmartLogOffset.CRITICAL_TEMP_TIME, 'criticalTemperatureTime', s.criticalTemperatureTime ?? 0);
  const sensors = s.temperatureSensors ?? [];
  if (sensors.length > SMART_TEMPERATURE_SENSORS) {
    throw new RangeError(`temperatureSensors must hold at most ${SMART_TEMPERATURE_SENSORS} values, got ${sensors.length}`);
  }
  sensors.forEach((t, i) => writeU16(out, SmartLogOffset.TEMPERATURE_SENSORS + 2 * i, `temperatureSensors[${i}]`, t));
}

/** Decode a SMART / Health log; a 128-bit counter of 2^53 or more throws a RangeError naming it. */
export function decodeSmartLog(bytes: Uint8Array): SmartLog {
  checkBuffer('SMART log data', bytes, SMART_LOG_SIZE);
  const s = {
    criticalWarning: bytes[SmartLogOffset.CRITICAL_WARNING]!,
    compositeTemperature: readU16(bytes, SmartLogOffset.COMPOSITE_TEMPERATURE),
    availableSpare: bytes[SmartLogOffset.AVAILABLE_SPARE]!,
    availableSpareThreshold: bytes[SmartLogOffset.AVAILABLE_SPARE_THRESHOLD]!,
    percentageUsed: bytes[SmartLogOffset.PERCENTAGE_USED]!,
    enduranceGroupCriticalWarning: bytes[SmartLogOffset.ENDURANCE_GROUP_CRITICAL_WARNING]!,
    warningTemperatureTime: readU32(bytes, SmartLogOffset.WARNING_TEMP_TIME),
    criticalTemperatureTime: readU32(bytes, SmartLogOffset.CRITICAL_TEMP_TIME),
    temperatureSensors: Array.from({ length: SMART_TEMPERATURE_SENSORS }, (_, i) => readU16(bytes, SmartLogOffset.TEMPERATURE_SENSORS + 2 * i)),
  } as SmartLog;
  for (const [name, off] of COUNTERS) s[name] = readU128(bytes, off, name);
  return s;
}
