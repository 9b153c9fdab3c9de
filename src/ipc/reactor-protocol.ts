/**
 * Messages between the reactor (main thread, src/ipc/reactor.ts) and its I/O worker (src/ipc/reactor-worker.ts).
 * Descriptor numbers are process-wide, so they travel as plain numbers; ownership moves with the message.
 * Connection ids: odd ones are chosen by the main thread (adopted sockets), even ones by the worker (accepted).
 */
import type { PeerCred } from '../sys/socket.js';
import type { IpcLimitReason, IpcLimitStats, IpcLimits } from './limits.js';

export interface ReactorInit {
  /** eventfd the main thread signals after posting a command. */
  wakeFd: number;
  /** Limit on a frame's length field. */
  maxFrame: number;
  /** Stop reading a connection while this many of its frames await a reply (0: no limit). */
  maxInFlight: number;
  /** Limits on accepted connections (see limits.ts); null: none (a client's reactor). */
  limits: IpcLimits | null;
}

export type Command =
  /** Watch a listening socket (owned by the worker from now on). */
  | { op: 'listen'; listener: number; fd: number }
  /** Stop watching and close a listening socket. */
  | { op: 'unlisten'; listener: number }
  /** Take over a connected socket. */
  | { op: 'adopt'; conn: number; fd: number }
  /** Queue a whole frame; `fds` (owned by the worker from now on) go with its first byte. */
  | { op: 'send'; conn: number; data: Uint8Array; fds: number[]; reply: boolean }
  /** Close a connection, after its queued output has gone when `flush` (bounded wait). */
  | { op: 'close'; conn: number; flush: boolean }
  /** The main thread has taken the frame event with this token (its bytes and descriptors leave the accounting). */
  | { op: 'taken'; token: number }
  /** Report a 'stats' event with this sequence number. */
  | { op: 'stats'; seq: number }
  /** Close everything and end. */
  | { op: 'stop' };

export type ReactorEvent =
  | { ev: 'accept'; listener: number; conn: number; cred: PeerCred }
  /** `token` (0: none) is to be answered with a 'taken' command once the frame has been dispatched. */
  | { ev: 'frame'; conn: number; version: number; flags: number; payload: Uint8Array; fds: number[]; token: number }
  /** The frame boundary is lost (bad length): nothing more is read from this connection. */
  | { ev: 'badFrame'; conn: number; length: number; message: string }
  /** The connection went over a limit: it got an error frame, its partial frame is dropped, it is closing. */
  | { ev: 'limit'; conn: number; code: string; reason: IpcLimitReason; message: string }
  /** A connection was refused at accept (already closed); `unreported` earlier refusals were only counted. */
  | { ev: 'refused'; listener: number; cred: PeerCred | null; code: string; reason: IpcLimitReason; message: string; unreported: number }
  | { ev: 'stats'; seq: number; stats: IpcLimitStats }
  | { ev: 'closed'; conn: number; reason: string }
  | { ev: 'listenError'; listener: number; message: string }
  | { ev: 'stopped' };
