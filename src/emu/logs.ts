/**
 * Log pages the controller produces: Error Information (LID 01h) and SMART / Health Information (LID 02h).
 * Layouts per NVMe Base 2.0 section 5.16.1.2 / 5.16.1.3. (Own encoder; src/nvme/logpages.ts decodes.)
 */
import { writeU16, writeU32, writeU64 } from '../nvme/bytes.js';
import { ERROR_LOG_ENTRY_SIZE, SMART_LOG_SIZE } from '../nvme/opcodes.js';
import type { ErrorEntry } from './controller.js';

export const ErrLogOffset = {
  ERROR_COUNT: 0, // 8
  SQID: 8, // 2
  CID: 10, // 2
  STATUS: 12, // 2: bit 0 phase tag, 15:1 status field
  PARAM_LOCATION: 14, // 2
  LBA: 16, // 8
  NSID: 24, // 4
  VS_INFO: 28,
  TRTYPE: 29,
  CSI: 32, // 8
} as const;

export const SmartOffset = {
  CRITICAL_WARNING: 0,
  COMPOSITE_TEMPERATURE: 1, // 2, Kelvin
  AVAILABLE_SPARE: 3,
  AVAILABLE_SPARE_THRESHOLD: 4,
  PERCENTAGE_USED: 5,
  DATA_UNITS_READ: 32, // 16
  DATA_UNITS_WRITTEN: 48, // 16
  HOST_READ_COMMANDS: 64, // 16
  HOST_WRITE_COMMANDS: 80, // 16
  CONTROLLER_BUSY_TIME: 96, // 16
  POWER_CYCLES: 112, // 16
  POWER_ON_HOURS: 128, // 16
  UNSAFE_SHUTDOWNS: 144, // 16
  MEDIA_ERRORS: 160, // 16
  ERROR_LOG_ENTRIES: 176, // 16
} as const;

/** Temperature reported, Kelvin (40 °C). */
export const EMU_TEMPERATURE_K = 313;
export const EMU_SPARE_THRESHOLD = 10;
/** A data unit is 1000 units of 512 bytes. */
export const DATA_UNIT_512 = 1000;
/** Parameter Error Location value meaning "not specified". */
export const PARAM_LOCATION_NONE = 0xffff;

export function encodeErrorLog(entries: readonly ErrorEntry[], out: Uint8Array, maxEntries: number): number {
  const n = Math.min(entries.length, maxEntries);
  out.fill(0, 0, maxEntries * ERROR_LOG_ENTRY_SIZE);
  for (let i = 0; i < n; i++) {
    const e = entries[i]!;
    const at = i * ERROR_LOG_ENTRY_SIZE;
    writeU64(out, at + ErrLogOffset.ERROR_COUNT, 'Error Count', e.count);
    writeU16(out, at + ErrLogOffset.SQID, 'SQID', e.sqid & 0xffff);
    writeU16(out, at + ErrLogOffset.CID, 'CID', e.cid & 0xffff);
    writeU16(out, at + ErrLogOffset.STATUS, 'Status', (e.status << 1) & 0xffff);
    writeU16(out, at + ErrLogOffset.PARAM_LOCATION, 'Parameter Error Location', PARAM_LOCATION_NONE);
    writeU64(out, at + ErrLogOffset.LBA, 'LBA', e.lba);
    writeU32(out, at + ErrLogOffset.NSID, 'NSID', e.nsid >>> 0);
  }
  return maxEntries * ERROR_LOG_ENTRY_SIZE;
}

export interface SmartCounters {
  unitsRead512: number;
  unitsWritten512: number;
  hostReads: number;
  hostWrites: number;
  powerCycles: number;
  powerOnHours: number;
  unsafeShutdowns: number;
  errorLogEntries: number;
}

export function encodeSmartLog(c: SmartCounters, out: Uint8Array): number {
  out.fill(0, 0, SMART_LOG_SIZE);
  writeU16(out, SmartOffset.COMPOSITE_TEMPERATURE, 'Composite Temperature', EMU_TEMPERATURE_K);
  out[SmartOffset.AVAILABLE_SPARE] = 100;
  out[SmartOffset.AVAILABLE_SPARE_THRESHOLD] = EMU_SPARE_THRESHOLD;
  out[SmartOffset.PERCENTAGE_USED] = 0;
  writeU64(out, SmartOffset.DATA_UNITS_READ, 'Data Units Read', Math.ceil(c.unitsRead512 / DATA_UNIT_512));
  writeU64(out, SmartOffset.DATA_UNITS_WRITTEN, 'Data Units Written', Math.ceil(c.unitsWritten512 / DATA_UNIT_512));
  writeU64(out, SmartOffset.HOST_READ_COMMANDS, 'Host Read Commands', c.hostReads);
  writeU64(out, SmartOffset.HOST_WRITE_COMMANDS, 'Host Write Commands', c.hostWrites);
  writeU64(out, SmartOffset.POWER_CYCLES, 'Power Cycles', c.powerCycles);
  writeU64(out, SmartOffset.POWER_ON_HOURS, 'Power On Hours', c.powerOnHours);
  writeU64(out, SmartOffset.UNSAFE_SHUTDOWNS, 'Unsafe Shutdowns', c.unsafeShutdowns);
  writeU64(out, SmartOffset.ERROR_LOG_ENTRIES, 'Error Log Entries', c.errorLogEntries);
  return SMART_LOG_SIZE;
}
