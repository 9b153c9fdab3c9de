/** The package's own version, read once from its package.json (dist/src/util/ -> ../../../package.json). */
import { readFileSync } from 'node:fs';

const PACKAGE_JSON = new URL('../../../package.json', import.meta.url);
let cached: string | null = null;

/** HOMI's version as package.json gives it ("0.1.0"). */
export function homiVersion(): string {
  if (cached === null) {
    const pkg = JSON.parse(readFileSync(PACKAGE_JSON, 'utf8')) as { name?: string; version?: string };
    if (pkg.name !== 'homi' || typeof pkg.version !== 'string') throw new Error(`${PACKAGE_JSON.pathname} is not HOMI's package.json`);
    cached = pkg.version;
  }
  return cached;
}
