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
