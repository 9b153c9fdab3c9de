/** Defaults of `homi load` shared by the runner, the CLI and the read paths. */

/** I/Os in flight (queue depth). */
export const DEFAULT_DEPTH = 128;
/** Largest single read: 1 MiB. */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;
