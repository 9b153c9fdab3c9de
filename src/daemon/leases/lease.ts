/**
 * What every lease is, whatever its kind: the fields homid's budgets, status and reclaim read, and the
 * operations homid runs on any lease. Each kind (raw.ts, mediated.ts, gpu.ts; later vf) is one module that creates
 * its leases and implements these; the union of the kinds is in index.ts. homid never asks a lease which kind
 * it is except to hand it to the module that knows.
 */
import type { Controller } from '../../driver/controller.js';
import { ExportLimitError } from '../../driver/errors.js';
import { DmaAllocationError } from '../../mem/dma.js';
import { DmaBufImportError, type DmaBufHandle } from '../../mem/dmabuf.js';
import { HugepageError } from '../../mem/hugepage.js';
import type { LeaseGrant, LeaseStatus } from '../../ipc/messages.js';
import type { Transport } from '../../transport/transport.js';
import type { DeviceEntry } from '../registry.js';
import type { RegionProvider } from '../shared-region.js';
import type { DeniedCommand } from '../mediated.js';
import { HomidError } from '../errors.js';
import type { DeviceMemoryBuffer } from '../device-memory-pool.js';

/** A device that is live: what a lease is made on. */
export type LiveDevice = DeviceEntry & { controller: Controller; transport: Transport };

/** The fields every lease has. */
export interface LeaseBase {
  readonly id: number;
  /** The session holding it. */
  readonly client: number;
  readonly device: string;
  readonly nsid: number;
  readonly depth: number;
  /** The hardware queue id. */
  readonly qid: number;
  readonly createdAt: number;
  /** Why the hardware queue is gone (a controller reset or removal destroyed it), or null. */
  lost: string | null;
}

/** What the client receives for a lease over the socket: the mode, the grant and its descriptors. */
export interface LeaseWire {
  /** The lease's mode and grant (the server adds grantId, qid and where its descriptors are). */
  grant: LeaseGrant extends infer G ? (G extends LeaseGrant ? Omit<G, 'grantId' | 'qid' | 'fdBase' | 'fdCount'> : never) : never;
  fds: readonly number[];
}

/** What homid does with any lease. */
export interface LeaseOps {
  /**
   * Whether a controller reset or removal destroys this lease's queue for good: true where the client drives
   * the queue or reaps its CQ (its state no longer matches a fresh queue); false where homid owns a QueuePair
   * the driver core recovers.
   */
  readonly lostWithController: boolean;
  /** Begin serving (homid calls it once it has registered the lease and set its file grants). */
  start(): void;
  /** Stop the client's access at once (first step of a reclaim). */
  revoke(): void;
  /** Delete the hardware queues (homid runs it serialised per device, on a live controller only). */
  deleteQueues(): Promise<void>;
  /** Free homid's memory of the lease (after deleteQueues, or when the controller is gone). */
  release(): void;
  /** I/O counters for status; null where the client drives the queue in its own process. */
  io(): LeaseStatus['io'];
  /** What another process gets: null when the lease only works in homid's process (the transport exports no memory). */
  wire(): LeaseWire | null;
}

/** What a lease kind's module needs from homid to make a lease. */
export interface LeaseContext {
  readonly id: number;
  readonly client: number;
  /** The client's uid (some transports hand writable memory to root only). */
  readonly uid: number;
  readonly dev: LiveDevice;
  readonly nsid: number;
  readonly depth: number;
  /** Bytes of data buffer (validated by homid). */
  readonly dataBytes: number;
  /**
   * Mediated: the data buffer is this dma-buf (checked by homid to be one of at least dataBytes); the lease imports
   * it through the transport and closes it on release. Null: homid allocates the data buffer.
   */
  readonly dataDmaBuf: DmaBufHandle | null;
  /**
   * Mediated: the data buffer is this buffer of the device's device memory (homid took it from the device's
   * pool); the lease gives the client a descriptor onto it and releases it with the lease. Null: not device memory.
   */
  readonly dataDeviceMemory: DeviceMemoryBuffer | null;
  /** Writes asked for (and allowed by the class). */
  readonly write: boolean;
  /** Run queue creation or deletion after every earlier one on this device (homid's per-device lock). */
  serial<T>(fn: () => Promise<T>): Promise<T>;
  readonly regions: RegionProvider;
  /** Mediated: a command outside the grant was denied. */
  onDenied(d: DeniedCommand): void;
}

/** The base fields of a lease made from `ctx` on hardware queue `qid`. */
export function leaseBase(ctx: LeaseContext, qid: number): LeaseBase {
  return { id: ctx.id, client: ctx.client, device: ctx.dev.config.name, nsid: ctx.nsid, depth: ctx.depth, qid, createdAt: Date.now(), lost: null };
}

/**
 * A failure to get memory or queues from the layers below, as homid's refusal: their typed errors are told
 * apart by type, never by message. Anything else is rethrown as it is.
 */
export function refusalOf(e: unknown, device: string): unknown {
  if (e instanceof HugepageError) return new HomidError('no-hugepages', `device '${device}': ${e.message}`);
  if (e instanceof DmaAllocationError) return new HomidError('no-memory', `device '${device}': ${e.message}`);
  if (e instanceof DmaBufImportError) return new HomidError('bad-request', `device '${device}': ${e.message}`);
  if (e instanceof ExportLimitError) return new HomidError('bad-request', `device '${device}': ${e.message}; ask for less dataBytes or depth`);
  return e;
}
