/** homid IPC: framing, the message catalogue, the server and the client (see each module's header). */
export * from './frame.js';
export * from './messages.js';
export { IpcError } from './errors.js';
export * from './limits.js';
export {
  IpcServer,
  IpcConnection,
  type IpcServerOptions,
  type IpcHandler,
  type IpcRequest,
  type IpcReply,
  type IpcProtocolEvent,
} from './server.js';
export { IpcClient, type IpcClientOptions, type RequestOptions, type UnmatchedMessage } from './client.js';
