/**
 * Typed errors of the driver core. Every message names what failed and where.
 */
import { opcodeName } from '../nvme/opcodes.js';
import { statusDnr, statusSc, statusSct } from '../nvme/cqe.js';
import { statusName } from '../nvme/status.js';

function hex(v: number, width = 2): string {
  return `0x${v.toString(16).padStart(width, '0')}`;
}

/** Base class of all driver errors. */
export class NvmeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Where a command ran: enough to name it in messages. */
export interface CommandContext {
  opcode: number;
  qid: number;
  cid: number;
}

function commandLabel(ctx: CommandContext): string {
  const op = opcodeName(ctx.opcode, ctx.qid === 0);
  return ctx.qid === 0 ? `${op} on the admin queue (cid ${ctx.cid})` : `${op} on queue ${ctx.qid} (cid ${ctx.cid})`;
}

/** The controller completed a command with a non-success status. */
export class NvmeStatusError extends NvmeError {
  /** The completion status (src/nvme/status.ts): the 15-bit CQE status field, or a host outcome above it. */
  readonly status: number;
  readonly sct: number;
  readonly sc: number;
  /** Name of the status, e.g. "LBA Out of Range" (statusName). */
  readonly statusName: string;
  /** Do Not Retry. */
  readonly dnr: boolean;
  readonly opcode: number;
  readonly opcodeName: string;
  readonly qid: number;
  readonly cid: number;
  /** CQE DW0 (command specific). */
  readonly result: number;

  constructor(status: number, ctx: CommandContext, result = 0) {
    const sct = statusSct(status);
    const sc = statusSc(status);
    const dnr = statusDnr(status);
    const name = statusName(status);
    super(`${commandLabel(ctx)} failed: ${name} (SCT ${hex(sct, 1)} SC ${hex(sc)}${dnr ? ', DNR' : ''})`);
    this.status = status;
    this.sct = sct;
    this.sc = sc;
    this.statusName = name;
    this.dnr = dnr;
    this.opcode = ctx.opcode;
    this.opcodeName = opcodeName(ctx.opcode, ctx.qid === 0);
    this.qid = ctx.qid;
    this.cid = ctx.cid;
    this.result = result;
  }
}

/** A command got no completion within its timeout. */
export class NvmeTimeoutError extends NvmeError {
  readonly opcode: number;
  readonly opcodeName: string;
  readonly qid: number;
  readonly cid: number;
  readonly ms: number;
  constructor(ctx: CommandContext, ms: number) {
    super(`${commandLabel(ctx)} timed out: no completion within ${ms} ms`);
    this.opcode = ctx.opcode;
    this.opcodeName = opcodeName(ctx.opcode, ctx.qid === 0);
    this.qid = ctx.qid;
    this.cid = ctx.cid;
    this.ms = ms;
  }
}

/** The controller reported Controller Fatal Status (CSTS.CFS = 1). */
export class ControllerFatalError extends NvmeError {
  readonly csts: number;
  constructor(where: string, csts: number) {
    super(`controller fatal status (CSTS.CFS=1, CSTS ${hex(csts, 8)}) ${where}`);
    this.csts = csts;
  }
}

/** CSTS.RDY did not reach the expected value within the CAP.TO bound. */
export class ControllerReadyTimeoutError extends NvmeError {
  readonly expectedReady: 0 | 1;
  readonly ms: number;
  readonly csts: number;
  constructor(expectedReady: 0 | 1, ms: number, csts: number, what: string) {
    super(`${what}: CSTS.RDY did not become ${expectedReady} within ${ms} ms (CAP.TO bound), CSTS ${hex(csts, 8)}`);
    this.expectedReady = expectedReady;
    this.ms = ms;
    this.csts = csts;
  }
}

/** A command was lost to a controller reset (it may or may not have executed). */
export class ControllerResetError extends NvmeError {
  readonly opcode: number;
  readonly qid: number;
  readonly cid: number;
  readonly reason: string;
  constructor(ctx: CommandContext, reason: string) {
    super(`${commandLabel(ctx)} was aborted by a controller reset (${reason})`);
    this.opcode = ctx.opcode;
    this.qid = ctx.qid;
    this.cid = ctx.cid;
    this.reason = reason;
  }
}

/** No free slot (SQ entry or command identifier) on a queue. */
export class QueueFullError extends NvmeError {
  readonly qid: number;
  constructor(qid: number, detail = '') {
    super(`queue ${qid} is full${detail ? `: ${detail}` : ''}`);
    this.qid = qid;
  }
}

/** A caller passed an argument the driver cannot use. */
export class InvalidArgumentError extends NvmeError {}

/** A queue pair for another process needs more memory than one export of the transport can hold. */
export class ExportLimitError extends InvalidArgumentError {
  constructor(
    /** The exporter (QueueExporter.kind). */
    readonly exporter: string,
    /** Bytes the queue pair needs (SQ, CQ and data). */
    readonly bytes: number,
    /** The most one export holds (QueueExporter.maxExportBytes). */
    readonly limit: number,
  ) {
    super(`${exporter}: a queue pair's SQ, CQ and data (${bytes} bytes) exceed the ${limit} bytes one export can hold`);
  }
}

/** Registers read all ones (0xffffffff): the device is gone (surprise removal, link down). */
export class DeviceRemovedError extends NvmeError {
  readonly register: string;
  constructor(register: string) {
    super(`device removed: ${register} read 0xffffffff (all ones)`);
    this.register = register;
  }
}

/** The controller object is not in a state that allows the operation (closed, failed, resetting). */
export class ControllerStateError extends NvmeError {}
