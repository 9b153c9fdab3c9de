/** Typed refusals of homid. `code` is stable (it travels over IPC); `message` says what to change. */
export type HomidErrorCode =
  | 'budget-class'
  | 'budget-client'
  | 'device-queues'
  | 'bad-depth'
  | 'raw-denied'
  | 'write-denied'
  | 'no-device'
  | 'device-down'
  | 'bad-namespace'
  | 'no-lease'
  | 'needs-fd'
  | 'outside-root'
  | 'not-a-file'
  | 'extent-source'
  | 'device-io'
  /** The descriptor grants neither read nor write access (O_PATH, or an access mode that allows neither). */
  | 'fd-access'
  /** FIEMAP: the file does not live on the namespace of the device (another file system or block device). */
  | 'wrong-device'
  /** The file's extents run outside the namespace, or are not aligned to its LBA size. */
  | 'extent-range'
  /** The client (or its uid) holds as many file grants as [limits] allows. */
  | 'limit-file-grants'
  | 'closed'
  | 'no-hugepages'
  | 'no-memory'
  | 'bad-request'
  | 'identity'
  | 'limit-file-grants'
  | 'fd-access'
  | 'wrong-device';

export class HomidError extends Error {
  readonly code: HomidErrorCode;
  constructor(code: HomidErrorCode, message: string) {
    super(message);
    this.name = 'HomidError';
    this.code = code;
  }
}
