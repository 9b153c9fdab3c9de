/**
 * The one validation style of homid's wire: zod schemas, checked once where a message or layout crosses the
 * process boundary, never on the fast path.
 *
 * - JSON messages (messages.ts), and the grants inside them (raw-grant.ts, mediated-grant.ts): a zod schema per
 *   shape. The type is z.infer of the schema, so a field cannot be declared without being checked. Field rules
 *   (integer ranges, alignment, powers of two) sit on the field; rules across fields (a window inside its fd,
 *   ranges that must not overlap) in one superRefine of the enclosing object, which zod runs only once every
 *   field is well-formed. What depends on the descriptors that actually arrived (how many) is checked by the
 *   grant's validate function, after the parse.
 * - Shared-memory layouts (mediated-ring.ts, extent-table.ts) are not JSON: their one reader (openRing,
 *   readExtentTable) checks magic, version and bounds when it opens them, with named offsets for every cell.
 *
 * Messages name the field and the value: `doorbell.map: offset 0x0 would map BAR0's register page`.
 */
import { z } from 'zod';

/** A wire value that failed its schema; the message names the first bad field. */
export class WireFormatError extends Error {
  constructor(
    message: string,
    /** The path of the first bad field ('' for the whole value). */
    readonly field: string,
  ) {
    super(message);
    this.name = 'WireFormatError';
  }
}

/** A value as messages show it (strings quoted, so that "0" and 0 differ). */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v);
  if (typeof v === 'object' && v !== null) return Array.isArray(v) ? 'an array' : 'an object';
  return String(v);
}

/** An error callback for a field: "<value> <what>". */
function valueError(what: string): { error: (iss: { input?: unknown }) => string } {
  return { error: (iss) => `${show(iss.input)} ${what}` };
}

/** A safe integer in [min, max]. */
export function intIn(min: number, max: number, what = `is not an integer in ${min}..${max}`): z.ZodInt {
  const e = valueError(what);
  return z.int(e).min(min, e).max(max, e);
}

/** A non-negative safe integer (a byte count, an offset, an index). */
export function count(what = 'is not a count (a non-negative integer)'): z.ZodInt {
  return intIn(0, Number.MAX_SAFE_INTEGER, what);
}

export function isPow2(v: number): boolean {
  return v > 0 && (v & (v - 1)) === 0;
}

/** A power of two in [min, max]. */
export function pow2In(min: number, max: number, what = `is not a power of two in ${min}..${max}`): z.ZodType<number> {
  return intIn(min, max, what).refine(isPow2, valueError(what));
}

/** A multiple of `unit` in [min, max]. */
export function multipleIn(unit: number, min: number, max: number, what: string): z.ZodType<number> {
  return intIn(min, max, what).refine((v) => v % unit === 0, valueError(what));
}

/** A strict object (unknown keys refused) whose type error reads "<name> is not an object". */
export function record<S extends z.core.$ZodLooseShape>(shape: S, name?: string): z.ZodObject<S, z.core.$strict> {
  return z.strictObject(shape, { error: (iss) => (iss.code === 'invalid_type' ? (name ?? 'is not an object') : undefined) });
}

/** One issue as a sentence: "parent: leaf <message>", "leaf <message>", or the message alone at the root. */
export function formatIssue(issue: z.core.$ZodIssue): string {
  const names = issue.path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`));
  if (issue.code === 'unrecognized_keys') {
    const where = names.join('');
    return `${where === '' ? '' : `${where}: `}unknown field(s) ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
  }
  if (names.length === 0) return issue.message;
  const leaf = names[names.length - 1]!.replace(/^\./, '');
  const parent = names.slice(0, -1).join('');
  return parent === '' ? `${leaf} ${issue.message}` : `${parent}: ${leaf} ${issue.message}`;
}

/** Parse `input` with `schema`, or throw WireFormatError(`${what}: <first issue>`). */
export function parseWire<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const first = r.error.issues[0]!;
  throw new WireFormatError(`${what}: ${formatIssue(first)}`, first.path.map(String).join('.'));
}
