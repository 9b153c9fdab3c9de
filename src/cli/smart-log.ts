/**
 * `homi smart-log <uri|/dev/nvmeX> [--nsid N] [--json]`: the SMART / Health Information log page (LID 02h), with
 * nvme-cli's field names (`nvme smart-log -o json`). Temperatures are in Kelvin in the JSON, as nvme-cli has
 * them; the table adds °C and the bytes behind the data units.
 */
import { CriticalWarning, decodeSmartLog, SMART_DATA_UNIT_BYTES, SMART_LOG_SIZE, type SmartLog } from '../nvme/logpages.js';
import { LogPageId } from '../nvme/opcodes.js';
import { NSID_BROADCAST } from '../nvme/namespace-list.js';
import { formatSize } from '../util/size.js';
import { renderFields } from '../util/table.js';
import { withAdminTarget, type AdminTarget } from './admin-target.js';

/** 0 °C in Kelvin. */
const KELVIN_AT_0C = 273;

/** The SMART log by nvme-cli's JSON names; temperature_sensor_N only for the sensors a controller reports. */
export interface SmartLogFields {
  critical_warning: number;
  /** Composite temperature, Kelvin. */
  temperature: number;
  /** Percent. */
  avail_spare: number;
  spare_thresh: number;
  percent_used: number;
  endurance_grp_critical_warning_summary: number;
  /** Thousands of 512-byte units. */
  data_units_read: number;
  data_units_written: number;
  host_read_commands: number;
  host_write_commands: number;
  /** Minutes. */
  controller_busy_time: number;
  power_cycles: number;
  power_on_hours: number;
  unsafe_shutdowns: number;
  media_errors: number;
  num_err_log_entries: number;
  /** Minutes. */
  warning_temp_time: number;
  critical_comp_time: number;
  [sensor: `temperature_sensor_${number}`]: number;
}

export function smartLogFields(s: SmartLog): SmartLogFields {
  const f: SmartLogFields = {
    critical_warning: s.criticalWarning,
    temperature: s.compositeTemperature,
    avail_spare: s.availableSpare,
    spare_thresh: s.availableSpareThreshold,
    percent_used: s.percentageUsed,
    endurance_grp_critical_warning_summary: s.enduranceGroupCriticalWarning,
    data_units_read: s.dataUnitsRead,
    data_units_written: s.dataUnitsWritten,
    host_read_commands: s.hostReadCommands,
    host_write_commands: s.hostWriteCommands,
    controller_busy_time: s.controllerBusyTime,
    power_cycles: s.powerCycles,
    power_on_hours: s.powerOnHours,
    unsafe_shutdowns: s.unsafeShutdowns,
    media_errors: s.mediaErrors,
    num_err_log_entries: s.errorLogEntries,
    warning_temp_time: s.warningTemperatureTime,
    critical_comp_time: s.criticalTemperatureTime,
  };
  s.temperatureSensors.forEach((k, i) => {
    if (k !== 0) f[`temperature_sensor_${i + 1}`] = k;
  });
  return f;
}

/** Read and decode the SMART / Health log of `t` for `nsid` (FFFFFFFFh: the whole controller). */
export async function smartLogOf(t: AdminTarget, nsid = NSID_BROADCAST): Promise<SmartLogFields> {
  return smartLogFields(decodeSmartLog(await t.getLogPage(LogPageId.SmartHealth, SMART_LOG_SIZE, nsid)));
}

const WARNING_NAMES: ReadonlyArray<readonly [number, string]> = [
  [CriticalWarning.SpareBelowThreshold, 'spare below threshold'],
  [CriticalWarning.Temperature, 'temperature'],
  [CriticalWarning.ReliabilityDegraded, 'reliability degraded'],
  [CriticalWarning.ReadOnly, 'read-only'],
  [CriticalWarning.VolatileBackupFailed, 'volatile memory backup failed'],
  [CriticalWarning.PmrReadOnly, 'PMR read-only'],
];

const kelvin = (k: number): string => (k === 0 ? '0 (not reported)' : `${k - KELVIN_AT_0C} °C (${k} K)`);
const units = (n: number): string => `${n} (${formatSize(n * SMART_DATA_UNIT_BYTES)})`;

export function formatSmartLog(name: string, nsid: number, f: SmartLogFields): string {
  const warn = WARNING_NAMES.filter(([bit]) => (f.critical_warning & bit) !== 0).map(([, n]) => n);
  const rows: Array<[string, string]> = [
    ['critical_warning', `0x${f.critical_warning.toString(16).padStart(2, '0')}${warn.length ? ` (${warn.join(', ')})` : ''}`],
    ['temperature', kelvin(f.temperature)],
    ['avail_spare', `${f.avail_spare}%`],
    ['spare_thresh', `${f.spare_thresh}%`],
    ['percent_used', `${f.percent_used}%`],
    ['endurance_grp_critical_warning_summary', String(f.endurance_grp_critical_warning_summary)],
    ['data_units_read', units(f.data_units_read)],
    ['data_units_written', units(f.data_units_written)],
    ['host_read_commands', String(f.host_read_commands)],
    ['host_write_commands', String(f.host_write_commands)],
    ['controller_busy_time', `${f.controller_busy_time} min`],
    ['power_cycles', String(f.power_cycles)],
    ['power_on_hours', String(f.power_on_hours)],
    ['unsafe_shutdowns', String(f.unsafe_shutdowns)],
    ['media_errors', String(f.media_errors)],
    ['num_err_log_entries', String(f.num_err_log_entries)],
    ['warning_temp_time', `${f.warning_temp_time} min`],
    ['critical_comp_time', `${f.critical_comp_time} min`],
  ];
  for (const [k, v] of Object.entries(f)) if (k.startsWith('temperature_sensor_')) rows.push([k, kelvin(v)]);
  const scope = nsid === NSID_BROADCAST ? 'controller' : `namespace ${nsid}`;
  return [`SMART / Health Information log of ${name} (${scope}):`, renderFields(rows)].join('\n');
}

export async function smartLogCommand(target: string, o: { nsid?: string; json?: boolean }): Promise<number> {
  const nsid = o.nsid === undefined ? NSID_BROADCAST : parseNsid(o.nsid);
  const f = await withAdminTarget(target, (t) => smartLogOf(t, nsid));
  process.stdout.write(o.json ? `${JSON.stringify(f)}\n` : `${formatSmartLog(target, nsid, f)}\n`);
  return 0;
}

/** --nsid: 1..FFFFFFFEh, or 0xffffffff for the controller. */
function parseNsid(text: string): number {
  const v = /^(0x[0-9a-f]+|\d+)$/i.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(v) || v < 1 || v > NSID_BROADCAST) throw new RangeError(`--nsid: '${text}' is not a namespace id (1..4294967294, or 0xffffffff for the controller)`);
  return v;
}
