/**
 * What the guest suite skipped, read from node's spec reporter output, checked against the skips a guest run is
 * expected to have (each with its reason). A guest test that is skipped for any other reason fails the VM
 * suite: a precondition the harness should have created is missing, or a test stopped checking.
 */

export interface GuestSkip {
  /** The test's name as the spec reporter prints it. */
  name: string;
  /** The reason after '#' ('SKIP' when none was given). */
  reason: string;
}

export interface ExpectedSkip {
  name: RegExp;
  reason: RegExp;
  /** Why this run skips it (for the reader of the allow-list). */
  why: string;
}

// node:test's spec reporter: "﹣ <name> (<duration>ms) # <reason>" for a skipped test, at any indentation.
const SKIP_LINE = /^\s*\u{FE63} (.+?) \([\d.]+m?s\)(?: # (.*))?$/u;
const SKIPPED_COUNT = /^\u{2139} skipped (\d+)$/mu;

/** The skipped tests of a spec-reporter run, and the run's own skip count (null when it printed none). */
export function parseGuestSkips(output: string): { skips: GuestSkip[]; reported: number | null } {
  const skips: GuestSkip[] = [];
  for (const line of output.split('\n')) {
    const m = SKIP_LINE.exec(line);
    if (m) skips.push({ name: m[1]!, reason: m[2] ?? 'SKIP' });
  }
  const c = SKIPPED_COUNT.exec(output);
  return { skips, reported: c ? Number(c[1]) : null };
}

/**
 * Problems with a run's skips: a skip no entry expects, an expected skip that did not happen (the run's
 * configuration changed: update the list), or a skip count that the parsed lines do not account for.
 */
export function unexpectedSkips(output: string, expected: ExpectedSkip[]): string[] {
  const { skips, reported } = parseGuestSkips(output);
  const problems: string[] = [];
  if (reported === null) problems.push('the guest run printed no skip count (ℹ skipped N): not a spec-reporter run of node --test?');
  else if (reported !== skips.length) problems.push(`the guest run reports ${reported} skipped test(s) but ${skips.length} skip line(s) were found`);
  const used = new Set<ExpectedSkip>();
  for (const s of skips) {
    const e = expected.find((x) => x.name.test(s.name) && x.reason.test(s.reason));
    if (e) used.add(e);
    else problems.push(`unexpected skip: '${s.name}' (${s.reason})`);
  }
  for (const e of expected) if (!used.has(e)) problems.push(`expected skip did not happen: ${e.name} (${e.why})`);
  return problems;
}
