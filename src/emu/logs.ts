/**
 * Log pages the controller produces: Error Information (LID 01h) and SMART / Health Information (LID 02h),
 * encoded with the codecs of src/nvme/logpages.ts.
 */
import { ERROR_LOG_ENTRY_SIZE, ERROR_LOG_NOT_APPLICABLE, SMART_LOG_SIZE, encodeErrorLogEntry, encodeSmartLog as encodeSmart } from '../nvme/logpages.js';

/** One Error Information log entry as the controller records it. */
export interface ErrorEntry {
  count: number;
  sqid: number;
  cid: number;
  status: number;
  lba: number;
  nsid: number;
}

/** Temperature reported, Kelvin (40 °C). */
export const EMU_TEMPERATURE_K = 313;
export const EMU_AVAILABLE_SPARE = 100;
export const EMU_SPARE_THRESHOLD = 10;
/** A data unit is 1000 units of 512 bytes. */
export const DATA_UNIT_512 = 1000;

/** Encode the error log (newest first) into `out`; returns its size in bytes. */
export function encodeErrorLog(entries: readonly ErrorEntry[], out: Uint8Array, maxEntries: number): number {
  out.fill(0, 0, maxEntries * ERROR_LOG_ENTRY_SIZE);
  const n = Math.min(entries.length, maxEntries);
  for (let i = 0; i < n; i++) {
    const e = entries[i]!;
    encodeErrorLogEntry(
      {
        errorCount: e.count,
        sqid: e.sqid & 0xffff,
        cid: e.cid & 0xffff,
        status: e.status,
        parameterErrorLocation: ERROR_LOG_NOT_APPLICABLE,
        lba: e.lba,
        nsid: e.nsid >>> 0,
      },
      out,
      i * ERROR_LOG_ENTRY_SIZE,
    );
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
  encodeSmart(
    {
      compositeTemperature: EMU_TEMPERATURE_K,
      availableSpare: EMU_AVAILABLE_SPARE,
      availableSpareThreshold: EMU_SPARE_THRESHOLD,
      percentageUsed: 0,
      dataUnitsRead: Math.ceil(c.unitsRead512 / DATA_UNIT_512),
      dataUnitsWritten: Math.ceil(c.unitsWritten512 / DATA_UNIT_512),
      hostReadCommands: c.hostReads,
      hostWriteCommands: c.hostWrites,
      powerCycles: c.powerCycles,
      powerOnHours: c.powerOnHours,
      unsafeShutdowns: c.unsafeShutdowns,
      errorLogEntries: c.errorLogEntries,
    },
    out,
  );
  return SMART_LOG_SIZE;
}
