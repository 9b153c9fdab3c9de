/** homid IPC: framing, the message catalogue and every wire layout, the server and the client (see each module's header). */
export * from './frame.js';
export * from './errors.js';
export * from './messages.js';
export * from './limits.js';
export { WireFormatError } from './validate.js';
export * from './raw-grant.js';
export * from './mediated-grant.js';
export * from './mediated-ring.js';
export * from './extent-table.js';
export { IpcServer, IpcConnection, type IpcServerOptions, type IpcHandler, type IpcRequest, type IpcReply, type IpcProtocolEvent } from './server.js';
export { IpcClient, type IpcClientOptions, type RequestOptions, type UnmatchedMessage } from './client.js';
