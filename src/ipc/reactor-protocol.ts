/**
 * Messages between the reactor (main thread, src/ipc/reactor.ts) and its I/O worker (src/ipc/reactor-worker.ts).
 * Descriptor numbers are process-wide, so they travel as plain numbers; ownership moves with the message.
 * Connection ids: odd ones are chosen by the main thread (adopted sockets), even ones by the worker (accepted).
 */
import type { PeerCred } from '../sys/socket.js';

export interface ReactorInit {
  /** eventfd the main thread signals after posting a command. */
  wakeFd: number;
  /** Limit on a frame's length field. */
  maxFrame: number;
  /** Stop reading a connection while this many of its frames await a reply (0: no limit). */
  maxInFlight: number;
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
  /** Close everything and end. */
  | { op: 'stop' };

export type ReactorEvent =
  | { ev: 'accept'; listener: number; conn: number; cred: PeerCred }
  | { ev: 'frame'; conn: number; version: number; flags: number; payload: Uint8Array; fds: number[] }
  /** The frame boundary is lost (bad length): nothing more is read from this connection. */
  | { ev: 'badFrame'; conn: number; length: number; message: string }
  | { ev: 'closed'; conn: number; reason: string }
  | { ev: 'listenError'; listener: number; message: string }
  | { ev: 'stopped' };
