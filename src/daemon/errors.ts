/**
 * Typed refusals of homid. `code` is stable (it travels over IPC: the table of codes, with what each means, is
 * HomidErrorCode in src/ipc/errors.ts); `message` says what to change.
 */
import type { HomidErrorCode } from '../ipc/errors.js';

export type { HomidErrorCode } from '../ipc/errors.js';

export class HomidError extends Error {
  readonly code: HomidErrorCode;
  constructor(code: HomidErrorCode, message: string) {
    super(message);
    this.name = 'HomidError';
    this.code = code;
  }
}
