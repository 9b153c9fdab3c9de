/**
 * `homi error-log <uri|/dev/nvmeX> [--entries N] [--json]`: the Error Information log page (LID 01h), with
 * nvme-cli's field names (`nvme error-log -o json`). Reads ELPE + 1 entries unless told; lists the valid ones
 * (a non-zero error_count), newest first as the controller keeps them.
 */
import { statusDnr, STATUS_MORE_BIT } from '../nvme/cqe.js';
import { decodeErrorLogEntry, ERROR_LOG_ENTRY_SIZE, type ErrorLogEntry } from '../nvme/logpages.js';
import { LogPageId } from '../nvme/opcodes.js';
import { NSID_BROADCAST } from '../nvme/namespace-list.js';
import { statusFieldName } from '../nvme/status.js';
import { parsePositiveInt } from '../util/size.js';
import { renderTable } from '../util/table.js';
import { withAdminTarget, type AdminTarget } from './admin-target.js';

/** Most entries one command may ask for (ELPE is a byte, 0's based). */
export const ERROR_LOG_MAX_ENTRIES = 256;

/** One entry by nvme-cli's JSON names, and the status field's spec name (HOMI's addition). */
export interface ErrorLogFields {
  error_count: number;
  sqid: number;
  cmdid: number;
  /** The 15-bit status field (SC 7:0, SCT 10:8, CRD 12:11, More 13, DNR 14). */
  status_field: number;
  status_name: string;
  phase_tag: number;
  parm_err_loc: number;
  lba: number;
  nsid: number;
  vs: number;
  trtype: number;
  cs: number;
  trtype_spec_info: number;
}

export interface ErrorLogReport {
  /** Entries read (ELPE + 1, or --entries). */
  entries: number;
  /** The valid ones (error_count > 0), in the controller's order (newest first). */
  errors: ErrorLogFields[];
}

/** The status field's name with its DNR / More flags. */
export function statusFieldText(sf: number): string {
  const flags = [statusDnr(sf) ? 'DNR' : '', (sf & STATUS_MORE_BIT) !== 0 ? 'More' : ''].filter((s) => s !== '');
  return `${statusFieldName(sf)}${flags.length ? ` (${flags.join(', ')})` : ''}`;
}

export function errorLogFields(e: ErrorLogEntry): ErrorLogFields {
  return {
    error_count: e.errorCount,
    sqid: e.sqid,
    cmdid: e.cid,
    status_field: e.status,
    status_name: statusFieldText(e.status),
    phase_tag: e.phase,
    parm_err_loc: e.parameterErrorLocation,
    lba: e.lba,
    nsid: e.nsid,
    vs: e.vendorSpecificInfoAvailable,
    trtype: e.transportType,
    cs: e.commandSpecificInfo,
    trtype_spec_info: e.transportTypeSpecificInfo,
  };
}

/** Read `entries` Error Information entries of `t` (default: ELPE + 1, from Identify Controller). */
export async function errorLogOf(t: AdminTarget, entries?: number): Promise<ErrorLogReport> {
  const n = entries ?? (await t.identifyController()).elpe + 1;
  const page = await t.getLogPage(LogPageId.ErrorInformation, n * ERROR_LOG_ENTRY_SIZE, NSID_BROADCAST);
  const errors: ErrorLogFields[] = [];
  for (let i = 0; i < n; i++) {
    const e = decodeErrorLogEntry(page, i * ERROR_LOG_ENTRY_SIZE);
    if (e.errorCount !== 0) errors.push(errorLogFields(e));
  }
  return { entries: n, errors };
}

const hex = (v: number, digits: number): string => `0x${v.toString(16).padStart(digits, '0')}`;

export function formatErrorLog(name: string, r: ErrorLogReport): string {
  const head = `Error Information log of ${name}: ${r.errors.length} of ${r.entries} entries in use`;
  if (r.errors.length === 0) return `${head} (no errors logged)`;
  return [
    head,
    renderTable(
      ['error_count', 'sqid', 'cmdid', 'status_field', 'status', 'parm_err_loc', 'lba', 'nsid', 'cs'],
      r.errors.map((e) => [String(e.error_count), String(e.sqid), hex(e.cmdid, 1), hex(e.status_field, 4), e.status_name, hex(e.parm_err_loc, 4), String(e.lba), hex(e.nsid, 1), String(e.cs)]),
    ),
  ].join('\n');
}

export async function errorLogCommand(target: string, o: { entries?: string; json?: boolean }): Promise<number> {
  const entries = o.entries === undefined ? undefined : parsePositiveInt('--entries', o.entries, ERROR_LOG_MAX_ENTRIES);
  const r = await withAdminTarget(target, (t) => errorLogOf(t, entries));
  process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${formatErrorLog(target, r)}\n`);
  return 0;
}
