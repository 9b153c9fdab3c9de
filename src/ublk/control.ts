/**
 * The ublk control device: /dev/ublk-control, driven by IORING_OP_URING_CMD on a small SQE128 ring of the
 * calling thread (homid's main thread). Each command is submitted, then its completion is collected by polling
 * the ring between timer ticks, so a command the kernel runs asynchronously (START_DEV and END_USER_RECOVERY wait
 * for every queue's FETCH_REQ; the io_uring core punts them to a kernel worker) never holds homid's event loop.
 * Commands run one at a time, in order.
 *
 * Every refusal becomes a UblkError whose message names the command, the device and what the kernel said, with
 * what it means here: no ublk module (no /dev/ublk-control), not root (EPERM / EACCES), device busy (EBUSY /
 * EEXIST), no such device (ENODEV), parameters refused (EINVAL).
 */
import * as fs from 'node:fs';
import { allocHostMemory, freeHostMemory, type HostMemory } from '../sys/fileio.js';
import { errnoName } from '../sys/libc.js';
import { IORING_SETUP_SQE128, IoringOp, Sqe } from '../sys/uring.js';
import {
  UBLK_CONTROL_PATH,
  UBLK_CTRL_CMD_SIZE,
  UBLK_DEV_INFO_SIZE,
  UBLK_MODULE,
  UBLK_PARAMS_SIZE,
  UBLK_U_CMD_ADD_DEV,
  UBLK_U_CMD_DEL_DEV,
  UBLK_U_CMD_END_USER_RECOVERY,
  UBLK_U_CMD_GET_DEV_INFO,
  UBLK_U_CMD_GET_FEATURES,
  UBLK_U_CMD_GET_PARAMS,
  UBLK_U_CMD_SET_PARAMS,
  UBLK_U_CMD_START_DEV,
  UBLK_U_CMD_START_USER_RECOVERY,
  UBLK_U_CMD_STOP_DEV,
  decodeDevInfo,
  decodeParamsDevt,
  encodeCtrlCmd,
  encodeDevInfo,
  encodeParams,
  ublkCmdName,
  type UblkCtrlCmd,
  type UblkDevInfo,
  type UblkDevt,
  type UblkParams,
} from '../sys/ublk.js';
import { UringRing } from '../io/uring-ring.js';

export type UblkErrorCode = 'no-module' | 'not-root' | 'busy' | 'no-device' | 'refused' | 'bad-request' | 'timeout';

export class UblkError extends Error {
  constructor(
    readonly code: UblkErrorCode,
    message: string,
    /** The kernel's errno, when it refused. */
    readonly errno = 0,
  ) {
    super(message);
    this.name = 'UblkError';
  }
}

const ENOENT = 2;
const EPERM = 1;
const EACCES = 13;
const EBUSY = 16;
const EEXIST = 17;
const ENODEV = 19;
const EINVAL = 22;
const ENXIO = 6;

/** What an errno from a control command means here. */
function meaning(cmdOp: number, errno: number, devId: number): { code: UblkErrorCode; why: string } {
  switch (errno) {
    case EPERM:
    case EACCES:
      return { code: 'not-root', why: 'ublk control commands need root (CAP_SYS_ADMIN)' };
    case EEXIST:
      return cmdOp === UBLK_U_CMD_ADD_DEV
        ? { code: 'busy', why: `ublk device id ${devId} exists already (another server, or one left quiesced: recover or delete it)` }
        : { code: 'busy', why: `device ${devId} is already started` };
    case EBUSY:
      return cmdOp === UBLK_U_CMD_START_USER_RECOVERY
        ? { code: 'busy', why: `device ${devId} cannot be recovered now: it is not quiesced, or its previous server still holds /dev/ublkc${devId}` }
        : { code: 'busy', why: `device ${devId} is busy` };
    case ENODEV:
    case ENXIO:
      return { code: 'no-device', why: `no ublk device ${devId}` };
    case EINVAL:
      return { code: 'refused', why: 'the kernel refused the command or its parameters (EINVAL)' };
    default:
      return { code: 'refused', why: `the kernel refused it (${errnoName(errno)})` };
  }
}

/** Open /dev/ublk-control, or a UblkError saying why not (no module, not root, not the control device). */
export function openUblkControl(path = UBLK_CONTROL_PATH): number {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDWR);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENXIO' || code === 'ENODEV') {
      const loaded = fs.existsSync(`/sys/module/${UBLK_MODULE}`);
      throw new UblkError(
        'no-module',
        loaded
          ? `${path} does not exist although the ${UBLK_MODULE} module is loaded (no devtmpfs / udev node?)`
          : `no ublk module: ${path} does not exist (load it: modprobe ${UBLK_MODULE}; kernel config CONFIG_BLK_DEV_UBLK)`,
        ENOENT,
      );
    }
    if (code === 'EACCES' || code === 'EPERM') throw new UblkError('not-root', `not allowed to open ${path} (${code}): ublk devices are created by root (CAP_SYS_ADMIN)`, EACCES);
    throw e;
  }
  try {
    if (!fs.fstatSync(fd).isCharacterDevice()) throw new UblkError('no-module', `${path} is not a character device: not the ublk control device`);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}

export interface AddDevRequest {
  /** Wanted id (UBLK_DEV_ID_ANY: the kernel picks). */
  devId: number;
  nrHwQueues: number;
  queueDepth: number;
  maxIoBufBytes: number;
  flags: bigint;
}

export interface ControlOptions {
  path?: string;
  /** Give up waiting for one command after this long (default 120 s). */
  timeoutMs?: number;
  /** Poll interval while a command is in the kernel (default 2 ms). */
  pollMs?: number;
}

export class UblkControl {
  readonly path: string;
  private readonly fd: number;
  private readonly ring: UringRing;
  /** Buffers the kernel reads and writes (stable addresses). */
  private readonly mem: HostMemory;
  private readonly memBytes: Uint8Array;
  private chain: Promise<unknown> = Promise.resolve();
  private seq = 1;
  private closed = false;
  private readonly timeoutMs: number;
  private readonly pollMs: number;

  private constructor(path: string, fd: number, opts: ControlOptions) {
    this.path = path;
    this.fd = fd;
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.pollMs = opts.pollMs ?? 2;
    this.ring = new UringRing({ entries: 4, flags: IORING_SETUP_SQE128 });
    this.mem = allocHostMemory(4096);
    this.memBytes = new Uint8Array(this.mem.buffer);
  }

  /** Open the control device (UblkError: no-module, not-root). */
  static open(opts: ControlOptions = {}): UblkControl {
    const path = opts.path ?? UBLK_CONTROL_PATH;
    const fd = openUblkControl(path);
    try {
      return new UblkControl(path, fd, opts);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Run one control command; resolves with cqe.res (>= 0), rejects with a UblkError on a negative one. */
  private exec(cmdOp: number, c: UblkCtrlCmd): Promise<number> {
    const run = this.chain.then(() => this.execNow(cmdOp, c));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async execNow(cmdOp: number, c: UblkCtrlCmd): Promise<number> {
    if (this.closed) throw new UblkError('bad-request', 'the ublk control device is closed');
    const r = this.ring;
    const at = r.nextSqe();
    if (at < 0) throw new UblkError('busy', 'the ublk control ring is full');
    const w = r.sqes;
    for (let i = 0; i < r.sqeWords; i++) w[at + i] = 0;
    const tag = this.seq++ >>> 0;
    w[at] = IoringOp.UringCmd;
    w[at + (Sqe.fd >> 2)] = this.fd;
    w[at + (Sqe.cmdOp >> 2)] = cmdOp;
    w[at + (Sqe.userData >> 2)] = tag;
    encodeCtrlCmd(c, r.sqes8.subarray(at * 4 + Sqe.cmd, at * 4 + Sqe.cmd + UBLK_CTRL_CMD_SIZE));
    r.commit();
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      r.enter(0);
      let head = r.cqHead();
      const tail = r.cqTail();
      let res: number | null = null;
      while (head !== tail) {
        const idx = r.cqeIndex(head);
        if (r.cqWord(idx) === tag) res = r.cqI32[idx + 2]!;
        head = (head + 1) >>> 0;
      }
      r.advanceCq(head);
      if (res !== null) {
        if (res < 0) {
          const m = meaning(cmdOp, -res, c.devId);
          throw new UblkError(m.code, `ublk ${ublkCmdName(cmdOp)} (device ${c.devId === 0xffffffff ? 'any' : c.devId}): ${m.why} [${errnoName(-res)}]`, -res);
        }
        return res;
      }
      if (Date.now() > deadline) throw new UblkError('timeout', `ublk ${ublkCmdName(cmdOp)} (device ${c.devId}): no answer from the kernel within ${this.timeoutMs} ms`);
      await new Promise((res2) => setTimeout(res2, this.pollMs));
    }
  }

  private get addr(): number {
    return this.mem.address;
  }

  /** UBLK_U_CMD_ADD_DEV: the device as the kernel made it (its id; queues clamped to the CPUs, buffer size aligned). */
  async addDev(req: AddDevRequest): Promise<UblkDevInfo> {
    return this.withBuffer(async () => {
      encodeDevInfo({ nrHwQueues: req.nrHwQueues, queueDepth: req.queueDepth, maxIoBufBytes: req.maxIoBufBytes, devId: req.devId, flags: req.flags }, this.memBytes);
      await this.exec(UBLK_U_CMD_ADD_DEV, { devId: req.devId, len: UBLK_DEV_INFO_SIZE, addr: this.addr });
      return decodeDevInfo(this.memBytes.slice(0, UBLK_DEV_INFO_SIZE));
    });
  }

  /** UBLK_U_CMD_GET_DEV_INFO, or null when there is no such device. */
  async getDevInfo(devId: number): Promise<UblkDevInfo | null> {
    return this.withBuffer(async () => {
      this.memBytes.fill(0, 0, UBLK_DEV_INFO_SIZE);
      try {
        await this.exec(UBLK_U_CMD_GET_DEV_INFO, { devId, len: UBLK_DEV_INFO_SIZE, addr: this.addr });
      } catch (e) {
        if (e instanceof UblkError && e.code === 'no-device') return null;
        throw e;
      }
      return decodeDevInfo(this.memBytes.slice(0, UBLK_DEV_INFO_SIZE));
    });
  }

  async setParams(devId: number, p: UblkParams): Promise<void> {
    await this.withBuffer(async () => {
      encodeParams(p, this.memBytes);
      await this.exec(UBLK_U_CMD_SET_PARAMS, { devId, len: UBLK_PARAMS_SIZE, addr: this.addr });
    });
  }

  /** The char and disk device numbers (GET_PARAMS, devt), null before the device is started. */
  async getDevt(devId: number): Promise<UblkDevt | null> {
    return this.withBuffer(async () => {
      this.memBytes.fill(0, 0, UBLK_PARAMS_SIZE);
      new DataView(this.mem.buffer).setUint32(0, UBLK_PARAMS_SIZE, true);
      await this.exec(UBLK_U_CMD_GET_PARAMS, { devId, len: UBLK_PARAMS_SIZE, addr: this.addr });
      return decodeParamsDevt(this.memBytes.slice(0, UBLK_PARAMS_SIZE)).devt;
    });
  }

  /** UBLK_U_CMD_GET_FEATURES: the UBLK_F_* flags this kernel supports. */
  async getFeatures(): Promise<bigint> {
    return this.withBuffer(async () => {
      this.memBytes.fill(0, 0, 8);
      await this.exec(UBLK_U_CMD_GET_FEATURES, { devId: 0, len: 8, addr: this.addr });
      return new DataView(this.mem.buffer).getBigUint64(0, true);
    });
  }

  /** START_DEV: the kernel waits until every queue's tags are fetched, then adds /dev/ublkbN. */
  async startDev(devId: number, serverPid: number): Promise<void> {
    await this.exec(UBLK_U_CMD_START_DEV, { devId, data0: BigInt(serverPid) });
  }
  async stopDev(devId: number): Promise<void> {
    await this.exec(UBLK_U_CMD_STOP_DEV, { devId });
  }
  /** DEL_DEV: the kernel waits until /dev/ublkcN is released (the server's worker has closed it). */
  async delDev(devId: number): Promise<void> {
    await this.exec(UBLK_U_CMD_DEL_DEV, { devId });
  }
  async startUserRecovery(devId: number): Promise<void> {
    await this.exec(UBLK_U_CMD_START_USER_RECOVERY, { devId });
  }
  /** END_USER_RECOVERY: like START_DEV, waits for every queue's fetches, then the device is live again. */
  async endUserRecovery(devId: number, serverPid: number): Promise<void> {
    await this.exec(UBLK_U_CMD_END_USER_RECOVERY, { devId, data0: BigInt(serverPid) });
  }

  /** Run fn with the shared buffer to itself (commands are serialised, but the buffer is used across awaits). */
  private bufferChain: Promise<unknown> = Promise.resolve();
  private withBuffer<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.bufferChain.then(fn, fn);
    this.bufferChain = run.catch(() => undefined);
    return run;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ring.close();
    freeHostMemory(this.mem);
    fs.closeSync(this.fd);
  }
}

/** ublk device ids present now (/sys/class/ublk-char/ublkcN), ascending. */
export function listUblkDeviceIds(sysClass = '/sys/class/ublk-char'): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(sysClass);
  } catch {
    return [];
  }
  return names
    .map((n) => /^ublkc(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}
