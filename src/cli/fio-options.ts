/**
 * fio's option names on `homi perf` (and its sweep): aliases of HOMI's own options, each given in help. An alias
 * sets the same value its HOMI name sets, so whichever of the two comes later on the command line wins (as a
 * repeated option does in fio). --bs and --rw are already fio's names; --size, --offset and --invalidate are
 * options of their own (src/cli/main.ts).
 */
import { Option, type Command } from 'commander';

/** [fio's flags, the HOMI option it sets (attribute name), HOMI's flag for the help text]. */
export const FIO_ALIASES: ReadonlyArray<readonly [string, string, string]> = [
  ['--iodepth <n>', 'qd', '--qd'],
  ['--numjobs <n>', 'threads', '--threads'],
  ['--runtime <seconds>', 'time', '--time'],
  ['--ramp_time <seconds>', 'warmup', '--warmup'],
  ['--percentile_list <list>', 'percentiles', '--percentiles'],
];

/** fio's --output-format: normal (the table) or json (= --json). */
const OUTPUT_FORMATS = ['normal', 'json'] as const;

export function addFioAliases(c: Command): Command {
  for (const [flags, target, native] of FIO_ALIASES) {
    const opt = new Option(flags, `fio's name for ${native}`);
    c.addOption(opt);
    c.on(`option:${opt.name()}`, (v: string) => c.setOptionValueWithSource(target, v, 'cli'));
  }
  const fmt = new Option('--output-format <format>', "fio's: json (= --json) or normal (the table)").choices(OUTPUT_FORMATS);
  c.addOption(fmt);
  c.on(`option:${fmt.name()}`, (v: string) => c.setOptionValueWithSource('json', v === 'json', 'cli'));
  return c;
}
