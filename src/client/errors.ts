/**
 * The client library's errors: HomidClientError carries homid's error code (src/ipc/errors.ts) or one of the
 * ClientErrorCode values below, for failures that happen in this library rather than in homid.
 */

/**
 * Codes of failures that happen in this library rather than in homid (same style as the wire's codes, see
 * src/ipc/errors.ts, and none of them on the wire). A HomidClientError carries one of these, or the code of
 * homid's error response.
 */
export const ClientErrorCode = {
  /** A grant did not come with the descriptors it names, or is not what was asked for. */
  BadGrant: 'bad-grant',
  /** The extent map stayed busy (homid kept rebuilding it). */
  Busy: 'busy',
  /** The mediated queue had no free slot. */
  QueueFull: 'queue-full',
  /** homid went away while a command was in flight (the connection closed, the lease was revoked). */
  HomidGone: 'homid-gone',
  /** A read did not complete in time. */
  ReadTimeout: 'read-timeout',
  /** A read completed with an error status. */
  ReadFailed: 'read-failed',
  /** The file's extent map changed (homid rebuilt it) between its resolution and the end of the read. */
  FileChanged: 'file-changed',
  /** The extent map cannot be read from the device as it is (inline, delayed, encoded or unknown extents; an invalid map; LBAs outside the namespace). */
  Unreadable: 'unreadable',
  /** The lease's data memory has no room for the reader's buffers. */
  NoMemory: 'no-staging-memory',
} as const;
export type ClientErrorCode = (typeof ClientErrorCode)[keyof typeof ClientErrorCode];

export class HomidClientError extends Error {
  constructor(
    /** homid's error code (src/ipc/errors.ts), or a ClientErrorCode. */
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'HomidClientError';
  }
}
