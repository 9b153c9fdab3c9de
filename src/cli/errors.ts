/** How the command line reports failures: one line on stderr, a non-zero exit status. */

/** A usage error (bad option, bad URI): exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Errors from lower layers that mean the request itself was bad. */
/** NoCudaDriverError: a GPU entry point on a machine without a CUDA driver exits 2 too (nothing ran). */
/** NotNvmeDeviceError: a path given where a kernel NVMe device node was expected. */
const USAGE_ERROR_NAMES = new Set(['UriError', 'InvalidArgumentError', 'NoCudaDriverError', 'NotNvmeDeviceError']);

export const EXIT_RUNTIME = 1;
export const EXIT_USAGE = 2;

/** Print `<program>: <message>` (the program that failed: homi, or homid) and exit 2 for a usage error, 1 otherwise. */
export function reportAndExit(err: unknown, program = 'homi'): never {
  const e = err instanceof Error ? err : new Error(String(err));
  const usage = e instanceof UsageError || e instanceof RangeError || USAGE_ERROR_NAMES.has(e.name);
  process.stderr.write(`${program}: ${e.message}\n`);
  if (process.env['HOMI_DEBUG'] && e.stack) process.stderr.write(`${e.stack}\n`);
  process.exit(usage ? EXIT_USAGE : EXIT_RUNTIME);
}
