export const DEFAULT_DEPTH = 64;
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;
