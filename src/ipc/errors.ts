/**
 * IpcError: a failure with a protocol error code. Handlers throw it to answer `{ok: false, error: {code,
 * message}}` with their own code (any other exception becomes INTERNAL); clients reject with it on timeouts,
 * lost connections, invalid responses, and (IpcClient.call) error responses.
 */
export class IpcError extends Error {
  readonly code: string;
  /** The request id concerned, when there is one. */
  readonly requestId: number | null;
  constructor(code: string, message: string, requestId: number | null = null) {
    super(message);
    this.name = 'IpcError';
    this.code = code;
    this.requestId = requestId;
  }
}
