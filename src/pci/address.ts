/** PCI function addresses: domain:bus:device.function, e.g. 0000:01:00.0. */

export class PciError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PciError';
  }
}

const FULL = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/i;
const SHORT = /^([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/i;

/** Normalize a PCI address (lower case; "01:00.0" gets domain 0000). Throws PciError when malformed. */
export function normalizePciAddress(addr: string): string {
  const a = addr.trim();
  if (FULL.test(a)) return a.toLowerCase();
  if (SHORT.test(a)) return `0000:${a.toLowerCase()}`;
  throw new PciError(`'${addr}' is not a PCI address like 0000:01:00.0`);
}
