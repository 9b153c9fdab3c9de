/**
 * Identify data structures: controller (CNS 01h), namespace (CNS 00h), active namespace list (CNS 02h).
 */
export * from './identify-controller.js';
export * from './identify-namespace.js';
export * from './namespace-list.js';
