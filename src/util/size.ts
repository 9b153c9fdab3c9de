/** Parsing and formatting of byte sizes ("4096", "4k", "64KiB", "1GiB", "1.5G"). Binary units throughout. */

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/** Parse a byte size; throws RangeError naming the text when it is not a whole, non-negative byte count. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) throw new RangeError(`'${text}' is not a byte size (examples: 4096, 4k, 64KiB, 1GiB)`);
  const unit = UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) throw new RangeError(`'${text}': unknown size unit '${m[2]}' (use B, KiB, MiB, GiB, TiB)`);
  const v = Number(m[1]) * unit;
  if (!Number.isSafeInteger(v)) throw new RangeError(`'${text}' is not a whole number of bytes`);
  return v;
}

/** Format bytes with a binary unit, e.g. 1073741824 -> "1 GiB", 1536 -> "1.5 KiB". */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const s = Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1);
  return `${s} ${units[i]}`;
}

/** Parse a positive integer option; throws RangeError naming the option. */
export function parsePositiveInt(name: string, text: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(text.trim())) throw new RangeError(`${name}: '${text}' is not a positive integer`);
  const v = Number(text);
  if (v < 1 || v > max) throw new RangeError(`${name}: ${text} is out of range (1..${max})`);
  return v;
}
