/**
 * What the emulated P2P suites share (emulated-p2p.test.ts with the memory test double, emulated-p2p-cuda.test.ts
 * with the fake libcuda): an embedded controller in memfd mode with one queue pair and a host buffer, commands
 * submitted in batches (one doorbell) and reaped with their completion times, window ranges as data pointers,
 * the emulated P2P counters.
 */
import assert from 'node:assert/strict';
import { Controller } from '../../src/driver/controller.js';
import { dataPointer, type DataPointer } from '../../src/driver/dptr.js';
import type { QueuePair } from '../../src/driver/queue-pair.js';
import type { DmaBuffer } from '../../src/mem/dma.js';
import { statusSc, statusSct } from '../../src/nvme/cqe.js';
import { GenericStatus, Sct } from '../../src/nvme/status.js';
import { openEmu, type DeviceWindow, type EmuTransport } from '../../src/transport/emu.js';
import { fillPattern, pollUntil } from '../driver/helpers.js';

export const BS = 4096;
export const KiB = 1024;

/** The emulated P2P counters of stats(). */
export function ep2p(emu: EmuTransport): { bytesToDevice: number; copiesToDevice: number; bytesFromDevice: number; copiesFromDevice: number; fences: number; errors: number } {
  const s = emu.stats();
  return {
    bytesToDevice: s.emulatedP2pBytesToDevice,
    copiesToDevice: s.emulatedP2pCopiesToDevice,
    bytesFromDevice: s.emulatedP2pBytesFromDevice,
    copiesFromDevice: s.emulatedP2pCopiesFromDevice,
    fences: s.emulatedP2pFences,
    errors: s.emulatedP2pErrors,
  };
}

export interface Done {
  status: number;
  /** performance.now() when the completion was reaped. */
  at: number;
}

/** A DmaBuffer-shaped description of [window.iova + off, + len), for dataPointer (which reads only iova and size). */
export function windowRange(w: DeviceWindow, off: number, len: number): DmaBuffer {
  return { iova: w.iova + off, size: len, bytes: new Uint8Array(0) };
}

export function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  fillPattern(b, seed);
  return b;
}

export const isTransferError = (status: number): boolean => statusSct(status) === Sct.Generic && statusSc(status) === GenericStatus.DataTransferError;

/** A 16 MiB memory namespace of 4 KiB LBAs, a 64-entry queue pair and a 256 KiB host buffer. */
export class P2pRig {
  private tag = 0;
  private constructor(
    readonly emu: EmuTransport,
    readonly ctrl: Controller,
    readonly qp: QueuePair,
    readonly host: DmaBuffer,
  ) {}

  static async open(log: (m: string) => void): Promise<P2pRig> {
    const emu = await openEmu({ namespaces: [{ sizeBytes: 16 << 20, lbads: 12 }], backing: 'memory', sharedMemory: 'memfd', log });
    const ctrl = await Controller.open(emu, { log: () => undefined });
    const qp = await ctrl.createQueuePair({ entries: 64 });
    return new P2pRig(emu, ctrl, qp, emu.dma.alloc(256 * KiB));
  }

  /** Submit the commands (ringing once) and wait for all their completions. */
  async batch(cmds: Array<{ opcode: number; slba: number; nlb: number; dp: DataPointer }>): Promise<Done[]> {
    const done = new Map<number, Done>();
    const tags: number[] = [];
    for (const c of cmds) {
      const t = ++this.tag;
      tags.push(t);
      assert.ok(this.qp.submitIo(c.opcode, 1, c.slba, c.nlb, c.dp.prp1, c.dp.prp2, t) >= 0, 'queue full');
    }
    this.qp.ring();
    await pollUntil(
      this.qp,
      (t, status) => void done.set(t, { status, at: performance.now() }),
      () => done.size === cmds.length,
    );
    return tags.map((t) => done.get(t)!);
  }

  async io(opcode: number, slba: number, len: number, dp: DataPointer): Promise<Done> {
    return (await this.batch([{ opcode, slba, nlb: len / BS, dp }]))[0]!;
  }

  /** One command on [window.iova + off, + len). */
  async windowIo(opcode: number, w: DeviceWindow, off: number, slba: number, len: number): Promise<Done> {
    const dp = dataPointer(this.emu.dma, windowRange(w, off, len), 0, len);
    try {
      return await this.io(opcode, slba, len, dp);
    } finally {
      dp.release();
    }
  }

  async close(): Promise<void> {
    try {
      await this.ctrl.close();
    } finally {
      await this.emu.close();
    }
  }
}
