/**
 * Error injection for the embedded controller (tests): rules matched against fetched commands.
 */

export type FaultAction =
  /** Complete the command with this status instead of executing it. */
  | { kind: 'status'; sct: number; sc: number; dnr?: boolean }
  /** Execute the command but post its completion only after `ms` milliseconds. */
  | { kind: 'delay'; ms: number }
  /** Execute the command (or not, for reads/writes: it is simply dropped) and never post a completion. */
  | { kind: 'drop' }
  /** Enter the controller fatal state (CSTS.CFS) when the command is fetched; nothing is completed. */
  | { kind: 'fatal' };

export interface FaultRule {
  /** Queue to match (0 = admin). Omitted: any queue. */
  qid?: number;
  /** Opcode to match (admin opcodes when qid is 0). Omitted: any opcode. */
  opcode?: number;
  /** Namespace to match. Omitted: any. */
  nsid?: number;
  /** Number of matching commands the rule applies to; default 1. Infinity: until cleared. */
  count?: number;
  action: FaultAction;
}

/** True when `rule` applies to a command with this queue, opcode and namespace. */
export function faultMatches(rule: FaultRule, qid: number, opcode: number, nsid: number): boolean {
  return (rule.qid === undefined || rule.qid === qid) && (rule.opcode === undefined || rule.opcode === opcode) && (rule.nsid === undefined || rule.nsid === nsid);
}
