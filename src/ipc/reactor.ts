/**
 * Main-thread side of the IPC I/O worker: starts it, posts commands (waking it through an eventfd), and routes
 * its events to listeners and connections. IpcServer and IpcClient build on this; framing and descriptor
 * passing live in the worker, message validation on the main thread.
 */
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { closeFd, eventFd, eventFdSignal, type PeerCred } from '../sys/socket.js';
import { DEFAULT_MAX_FRAME } from './frame.js';
import type { IpcLimitReason, IpcLimitStats, IpcLimits } from './limits.js';
import type { Command, ReactorEvent, ReactorInit } from './reactor-protocol.js';

export interface ConnHandlers {
  onFrame(version: number, flags: number, payload: Uint8Array, fds: number[]): void;
  onBadFrame(length: number, message: string): void;
  /** The connection went over a limit (it got an error frame and is closing; onClosed follows). */
  onLimit?(code: string, reason: IpcLimitReason, message: string): void;
  onClosed(reason: string): void;
}

export interface ListenHandlers {
  onAccept(conn: number, cred: PeerCred): ConnHandlers;
  /** A connection was refused at accept (already closed). */
  onRefused?(e: { cred: PeerCred | null; code: string; reason: IpcLimitReason; message: string; unreported: number }): void;
  onError(message: string): void;
}

export interface ReactorOptions {
  maxFrame?: number;
  maxInFlight?: number;
  /** Limits on accepted connections (none when absent). */
  limits?: IpcLimits;
}

export class Reactor {
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly wakeFd: number;
  private readonly conns = new Map<number, ConnHandlers>();
  private readonly listeners = new Map<number, ListenHandlers>();
  private nextConn = 1;
  private nextListener = 1;
  private nextStats = 1;
  private readonly statsWaiters = new Map<number, { resolve: (s: IpcLimitStats) => void; reject: (e: Error) => void }>();
  private refs = 0;
  private stopped: Promise<void> | null = null;
  private dead = false;
  readonly maxFrame: number;

  constructor(opts: ReactorOptions = {}) {
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    this.wakeFd = eventFd();
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const init: ReactorInit = {
      wakeFd: this.wakeFd,
      maxFrame: this.maxFrame,
      maxInFlight: opts.maxInFlight ?? 0,
      limits: opts.limits === undefined ? null : { ...opts.limits },
    };
    this.worker = new Worker(new URL('./reactor-worker.js', import.meta.url), {
      workerData: { init, port: port2 },
      transferList: [port2],
    });
    this.worker.on('message', (e: ReactorEvent) => this.dispatch(e));
    this.worker.on('error', (err) => this.fail(`IPC I/O thread failed: ${err.message}`));
    this.worker.on('exit', () => this.fail('IPC I/O thread exited'));
    this.worker.unref();
    this.port.unref();
  }

  /** Keep the process alive while something needs the reactor (a listener, a pending request). */
  ref(): void {
    if (this.refs++ === 0) this.worker.ref();
  }
  unref(): void {
    if (this.refs > 0 && --this.refs === 0) this.worker.unref();
  }

  get alive(): boolean {
    return !this.dead && this.stopped === null;
  }

  private post(cmd: Command, transfer?: ArrayBuffer[]): void {
    if (!this.alive) throw new Error('IPC reactor is stopped');
    this.port.postMessage(cmd, transfer);
    eventFdSignal(this.wakeFd);
  }

  /** Hand a listening socket to the worker (it owns the fd from now on). */
  listen(fd: number, handlers: ListenHandlers): number {
    const id = this.nextListener++;
    this.listeners.set(id, handlers);
    this.post({ op: 'listen', listener: id, fd });
    return id;
  }

  unlisten(id: number): void {
    if (this.listeners.delete(id) && this.alive) this.post({ op: 'unlisten', listener: id });
  }

  /** Hand a connected socket to the worker (it owns the fd from now on). */
  adopt(fd: number, handlers: ConnHandlers): number {
    const id = this.nextConn;
    this.nextConn += 2;
    this.conns.set(id, handlers);
    this.post({ op: 'adopt', conn: id, fd });
    return id;
  }

  /** Queue a frame; the worker owns `fds` from now on (it closes them once sent or dropped). */
  send(conn: number, data: Uint8Array, fds: number[], reply: boolean): void {
    if (!this.alive || !this.conns.has(conn)) {
      for (const fd of fds) closeFd(fd);
      return;
    }
    this.post({ op: 'send', conn, data, fds, reply }, [data.buffer as ArrayBuffer]);
  }

  close(conn: number, flush: boolean): void {
    if (this.alive && this.conns.has(conn)) this.post({ op: 'close', conn, flush });
  }

  /** A snapshot of the worker's accounting (limits.ts). Rejects when the reactor is stopped. */
  stats(): Promise<IpcLimitStats> {
    if (!this.alive) return Promise.reject(new Error('IPC reactor is stopped'));
    const seq = this.nextStats++;
    return new Promise<IpcLimitStats>((resolve, reject) => {
      this.statsWaiters.set(seq, { resolve, reject });
      this.post({ op: 'stats', seq });
    });
  }

  /** Close every connection and listener, end the worker. */
  stop(): Promise<void> {
    if (this.stopped !== null) return this.stopped;
    if (this.dead) return Promise.resolve();
    this.stopped = new Promise<void>((resolve) => {
      this.worker.once('exit', () => resolve());
    });
    this.port.postMessage({ op: 'stop' } satisfies Command);
    eventFdSignal(this.wakeFd);
    this.worker.ref();
    return this.stopped;
  }

  private dispatch(e: ReactorEvent): void {
    switch (e.ev) {
      case 'accept': {
        const l = this.listeners.get(e.listener);
        if (l === undefined) {
          // Listener gone: refuse the connection.
          this.conns.set(e.conn, { onFrame: (_v, _f, _p, fds) => fds.forEach((fd) => closeFd(fd)), onBadFrame() {}, onClosed() {} });
          this.close(e.conn, false);
          return;
        }
        this.conns.set(e.conn, l.onAccept(e.conn, e.cred));
        return;
      }
      case 'frame': {
        try {
          const h = this.conns.get(e.conn);
          if (h === undefined) {
            for (const fd of e.fds) closeFd(fd);
            return;
          }
          h.onFrame(e.version, e.flags, e.payload, e.fds);
        } finally {
          // The frame's bytes and descriptors are the main thread's now: they leave the worker's accounting.
          if (e.token !== 0 && this.alive) this.post({ op: 'taken', token: e.token });
        }
        return;
      }
      case 'badFrame':
        this.conns.get(e.conn)?.onBadFrame(e.length, e.message);
        return;
      case 'limit':
        this.conns.get(e.conn)?.onLimit?.(e.code, e.reason, e.message);
        return;
      case 'refused':
        this.listeners.get(e.listener)?.onRefused?.({ cred: e.cred, code: e.code, reason: e.reason, message: e.message, unreported: e.unreported });
        return;
      case 'stats': {
        const w = this.statsWaiters.get(e.seq);
        this.statsWaiters.delete(e.seq);
        w?.resolve(e.stats);
        return;
      }
      case 'closed': {
        const h = this.conns.get(e.conn);
        this.conns.delete(e.conn);
        h?.onClosed(e.reason);
        return;
      }
      case 'listenError':
        this.listeners.get(e.listener)?.onError(e.message);
        return;
      case 'stopped':
        this.failStats('IPC reactor stopped');
        return;
    }
  }

  private failStats(reason: string): void {
    const ws = [...this.statsWaiters.values()];
    this.statsWaiters.clear();
    for (const w of ws) w.reject(new Error(reason));
  }

  private fail(reason: string): void {
    if (this.dead) return;
    this.dead = true;
    closeFd(this.wakeFd);
    this.failStats(reason);
    const hs = [...this.conns.values()];
    this.conns.clear();
    for (const h of hs) h.onClosed(reason);
    if (this.stopped === null) for (const l of this.listeners.values()) l.onError(reason);
    this.listeners.clear();
  }
}

let shared: Reactor | null = null;
/** The process-wide reactor that clients share (started on first use). */
export function sharedReactor(): Reactor {
  if (shared === null || !shared.alive) shared = new Reactor({ maxFrame: 16 * DEFAULT_MAX_FRAME });
  return shared;
}
