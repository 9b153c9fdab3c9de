/**
 * Error injection for the embedded controller (tests): rules matched against fetched commands.
 */

export type FaultAction =
  /** Complete the command with this status instead of executing it. */
  | { kind: 'status'; sct: number; sc: number; dnr?: boolean }
  /** Execute the command but post its completion only after `ms` milliseconds. */
  | { kind: 'delay'; ms: number }
  /** Execute the command (or not, for reads/writes: it is simply dropped) and never post a completion. */
  | { kind: 'drop' };

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
