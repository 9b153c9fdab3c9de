/** The transport-agnostic NVMe driver core. */
export * from './errors.js';
export * from './status.js';
export * from './queue-pair.js';
export * from './dptr.js';
export * from './controller.js';
export * from './identity.js';
export * as adminCommands from './admin-commands.js';
