/**
 * The leases of the client library: a raw queue pair (driven in this process) or a mediated one (homid checks
 * each command), as HomidClient.openQueuePairs returns them.
 */
import type { AttachedQueuePair } from '../driver/attach.js';
import type { MediatedQueueGrant } from '../ipc/mediated-grant.js';
import type { RawQueueGrant } from '../ipc/raw-grant.js';
import type { ShmRegion } from '../sys/shm.js';
import type { MediatedQueuePair } from './mediated-queue.js';

export interface RawLease {
  mode: 'raw';
  grantId: string;
  qid: number;
  qp: AttachedQueuePair;
  grant: RawQueueGrant;
}

/** A mediated grant as homid sends it (src/ipc/mediated-grant.ts). */
export type MediatedGrantInfo = MediatedQueueGrant;

/**
 * A mediated queue pair. Without a write grant, homid passes its data memory as a read-only descriptor and the
 * client maps it read-only: `qp.data` is then for reading (the device's reads land there); storing into it
 * faults the process. Read into distinct offsets (prp1) instead of clearing it.
 */
export interface MediatedLease {
  mode: 'mediated';
  grantId: string;
  qid: number;
  qp: MediatedQueuePair;
  grant: MediatedGrantInfo;
  regions: ShmRegion[];
}

export type Lease = RawLease | MediatedLease;
