/**
 * The admin command SQEs the driver core issues, as thin wrappers over the shared builders in
 * src/nvme/commands.ts (the CID is assigned by the queue pair). The commands that create and delete I/O queues
 * are the transport's (src/transport/pcie-queues.ts).
 */
import * as cmd from '../nvme/commands.js';
import { Cns } from '../nvme/opcodes.js';
import type { Sqe } from '../nvme/sqe.js';

/** Abort result DW0 bit 0: 1 = the command was not aborted. */
export const ABORT_RESULT_NOT_ABORTED = 1 << 0;

export const identifyControllerSqe = (prp1: number, prp2 = 0): Sqe => cmd.identify(Cns.Controller, 0, prp1, { prp2 });
export const identifyNamespaceSqe = (nsid: number, prp1: number, prp2 = 0): Sqe => cmd.identify(Cns.Namespace, nsid, prp1, { prp2 });
export const activeNamespaceListSqe = (afterNsid: number, prp1: number, prp2 = 0): Sqe => cmd.identify(Cns.ActiveNamespaceList, afterNsid, prp1, { prp2 });

export const getFeaturesSqe = (fid: number, cdw11 = 0, nsid = 0): Sqe => cmd.getFeatures(fid, { nsid, cdw11 });
export const setFeaturesSqe = (fid: number, cdw11: number, nsid = 0, save = false): Sqe => cmd.setFeatures(fid, cdw11, { nsid, save });
export const setNumberOfQueuesSqe = (count: number): Sqe => cmd.setNumberOfQueues(count, count);
/** Number of Queues result DW0 -> 1's based counts allocated. */
export function decodeNumberOfQueues(dw0: number): { nsqa: number; ncqa: number } {
  const { sqCount, cqCount } = cmd.decodeNumberOfQueues(dw0);
  return { nsqa: sqCount, ncqa: cqCount };
}

/** Get Log Page for `bytes` (multiple of 4) at byte `offset`; PRPs are filled in by the caller. */
export const getLogPageSqe = (lid: number, bytes: number, nsid: number, offset = 0): Sqe => cmd.getLogPage(lid, bytes, nsid, 0, 0, offset);

export const abortSqe = (sqid: number, cid: number): Sqe => cmd.abort(sqid, cid);
