/**
 * Leases: every queue pair a client holds, one module per kind. The union below is the one place that lists
 * the kinds; a new kind (an SR-IOV virtual function, next) is a new module implementing LeaseOps and a
 * new member here, and homid.ts needs no new field.
 */
import type { GpuLease } from './gpu.js';
import type { MediatedLease } from './mediated.js';
import type { RawLease } from './raw.js';

export type Lease = RawLease | MediatedLease | GpuLease;
export type LeaseKind = Lease['kind'];

export { createRawLease, type RawLease, type ExportedRawLease, type LocalRawLease } from './raw.js';
export { createMediatedLease, type MediatedLease } from './mediated.js';
export { createGpuLease, type GpuLease } from './gpu.js';
export { refusalOf, type LeaseBase, type LeaseContext, type LeaseOps, type LeaseWire, type LiveDevice } from './lease.js';
