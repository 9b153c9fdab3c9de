/**
 * GPU initiators on a real GPU (`npm run test:gpu` on the GPU machine; skipped with the reason elsewhere): CUDA
 * kernels build the commands, ring the doorbells and reap the completions of queue pairs on the embedded
 * controller (in this process, and through homid), and on the GPU-resident controller. Bytes are checked in the
 * kernels (pattern), and on the host through the driver core's own queue pair.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { HomidClient } from '../../src/client/index.js';
import { configFromObject } from '../../src/daemon/config.js';
import { startHomidServer, type HomidServer } from '../../src/daemon/server.js';
import { openController, type OpenedController } from '../../src/device/controller.js';
import { dataPointer } from '../../src/driver/dptr.js';
import { GpuDevice, cudaDriverPresent } from '../../src/gpu/device.js';
import { openHomidTarget } from '../../src/gpu/homid.js';
import { checkPattern } from '../../src/gpu/pattern.js';
import { emuQueueTarget, launchJob, launchShape, runGpuPerf, type EmuQueueTarget, type GpuMode } from '../../src/gpu/perf.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import type { EmuTransport } from '../../src/transport/emu.js';

const NO_DRIVER = cudaDriverPresent() ? false : 'no CUDA driver: libcuda.so.1 not found';
const MODES: GpuMode[] = ['block', 'ticket'];
const root = fileURLToPath(new URL('../../../', import.meta.url));
const silent = { level: 'silent' };
void silent;

/** Figures the tests saw, written where the GPU machine's $OUT collects them (HOMI_GPU_REPORT). */
const seen: Record<string, unknown> = {};
function note(k: string, v: unknown): void {
  seen[k] = v;
  process.stdout.write(`# ${k}: ${JSON.stringify(v)}\n`);
}

/** GPU queue pairs on an embedded controller this test keeps open (for host-side checks afterwards). */
function emuTarget(gpu: GpuDevice, opened: OpenedController, n: number, entries: number, bs: number): Promise<EmuQueueTarget> {
  return emuQueueTarget(gpu, opened, { nqueues: n, bs, nsid: 1, description: 'test' }, entries);
}

/** Read `lba` (bs bytes) through a CPU queue pair of the driver core. */
async function cpuRead(opened: OpenedController, lba: number, bs: number): Promise<Uint8Array> {
  const qp = await opened.controller.createQueuePair({ entries: 8 });
  const buf = opened.transport.dma.alloc(bs);
  try {
    const ns = opened.controller.namespaces[0]!;
    const dp = dataPointer(opened.transport.dma, buf);
    try {
      await qp.exec({ opcode: NvmOpcode.Read, nsid: 1, cdw10: lba, cdw11: 0, cdw12: bs / ns.blockSize - 1, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
    } finally {
      dp.release();
    }
    return buf.bytes.slice(0, bs);
  } finally {
    opened.transport.dma.free(buf);
    await opened.controller.deleteQueuePair(qp);
  }
}

describe('GPU initiators on the embedded controller (in this process)', { skip: NO_DRIVER }, () => {
  let gpu: GpuDevice;
  let opened: OpenedController;
  let release: () => void;
  before(async () => {
    gpu = GpuDevice.open(0);
    gpu.preload();
    note('gpu', gpu.info);
    opened = await openController('emu://?size=256MiB', { sharedMemory: 'memfd' });
    release = (opened.transport as EmuTransport).holdAwake();
  });
  after(async () => {
    release?.();
    await opened?.close();
    gpu?.close();
  });

  for (const mode of MODES) {
    for (const bs of [4096, 16384]) {
      test(`${mode} mode, ${bs} B: GPU writes land on the controller (checked by the CPU), GPU reads check them`, { timeout: 300_000 }, async () => {
        const t = await emuTarget(gpu, opened, 2, 256, bs);
        try {
          const qd = mode === 'block' ? 128 : 128;
          const shape = launchShape({ mode, qd, nqueues: 2 });
          const nlb = bs / t.blockSize;
          const span = 4096 * nlb;
          const seed = mode === 'block' ? 11 : 12;
          const base = { mode, grid: shape.grid, block: shape.block, bs, lbaBase: 0, lbaSpan: span, seed, timeoutMs: 2000 };
          const w = await launchJob(gpu, t, { ...base, iosPerThread: Math.ceil(4096 / shape.threads), readPercent: 0, random: false, verify: true });
          assert.equal(w.result.errors, 0, `write errors (first status 0x${w.result.firstStatus.toString(16)})`);
          assert.equal(w.result.timeouts, 0);
          assert.ok(w.result.ios >= 4096);
          for (const lba of [0, nlb, 1000 * nlb, 4095 * nlb]) assert.equal(checkPattern(await cpuRead(opened, lba, bs), seed, lba, t.blockSize), -1, `LBA ${lba} as the CPU reads it`);
          const r = await launchJob(gpu, t, { ...base, iosPerThread: 64, readPercent: 100, random: true, verify: true });
          assert.equal(r.result.errors, 0);
          assert.equal(r.result.timeouts, 0);
          assert.equal(r.result.mismatches, 0, `first mismatching LBA ${r.result.firstMismatchLba}`);
          assert.equal(r.result.ios, 64 * shape.threads);
          note(`emu ${mode} ${bs}B verified randread`, { ios: r.result.ios, iops: Math.round(r.result.ios / r.seconds), p50Us: r.result.latency.p50Us });
          // a corrupted block is caught by the GPU's check (the check can fail)
          const lba = 7 * nlb;
          const bad = opened.transport.dma.alloc(bs);
          const qp = await opened.controller.createQueuePair({ entries: 8 });
          const dp = dataPointer(opened.transport.dma, bad);
          await qp.exec({ opcode: NvmOpcode.Write, nsid: 1, cdw10: lba, cdw11: 0, cdw12: nlb - 1, prp1: dp.prp1, prp2: dp.prp2, cid: 0 });
          dp.release();
          opened.transport.dma.free(bad);
          await opened.controller.deleteQueuePair(qp);
          const r2 = await launchJob(gpu, t, { ...base, lbaBase: lba, lbaSpan: nlb, iosPerThread: 1, readPercent: 100, random: false, verify: true });
          assert.equal(r2.result.mismatches, r2.result.ios, 'every read of the zeroed block mismatches');
          assert.equal(r2.result.firstMismatchLba, lba);
        } finally {
          await t.close();
        }
      });
    }
  }

  test('queue full and wrap-around: 512 threads on a 64-entry queue (ticket), 63 slots per round for 2,000 rounds (block)', { timeout: 300_000 }, async () => {
    const t = await emuTarget(gpu, opened, 1, 64, 4096);
    try {
      const base = { bs: 4096, lbaBase: 0, lbaSpan: 8192 * (4096 / t.blockSize), seed: 13, timeoutMs: 2000, readPercent: 0, random: true, verify: false };
      const tk = await launchJob(gpu, t, { ...base, mode: 'ticket', grid: 2, block: 256, iosPerThread: 40 });
      assert.equal(tk.result.errors + tk.result.timeouts, 0);
      assert.equal(tk.result.ios, 512 * 40);
      const s1 = t.set.readState(0);
      assert.equal(s1.completed, 512 * 40, 'every ticket completed');
      assert.equal(s1.tail, 512 * 40, 'the SQ tail moved over every ticket');
      assert.equal(s1.cqHead, 512 * 40, 'every completion reaped');
      note('ticket 512 threads on 64 entries', { ios: tk.result.ios, wraps: Math.floor((512 * 40) / 64), iops: Math.round(tk.result.ios / tk.seconds) });
    } finally {
      await t.close();
    }
    const t2 = await emuTarget(gpu, opened, 1, 64, 4096);
    try {
      const bk = await launchJob(gpu, t2, {
        mode: 'block',
        grid: 1,
        block: 63,
        bs: 4096,
        lbaBase: 0,
        lbaSpan: 8192,
        seed: 14,
        timeoutMs: 2000,
        iosPerThread: 2000,
        readPercent: 100,
        random: true,
        verify: false,
      });
      assert.equal(bk.result.errors + bk.result.timeouts, 0);
      assert.equal(bk.result.ios, 63 * 2000);
    } finally {
      await t2.close();
    }
  });

  for (const mode of MODES) {
    test(`${mode} mode: a controller that stops completing gives timeouts, not a hung GPU`, { timeout: 120_000 }, async () => {
      const t = await emuTarget(gpu, opened, 1, 256, 4096);
      const emu = opened.transport as EmuTransport;
      try {
        emu.inject({ qid: t.provisioned[0]!.grant.qid, opcode: NvmOpcode.Read, count: Number.POSITIVE_INFINITY, action: { kind: 'drop' } });
        const shape = launchShape({ mode, qd: 64, nqueues: 1 });
        const t0 = performance.now();
        const r = await launchJob(gpu, t, {
          mode,
          grid: shape.grid,
          block: shape.block,
          bs: 4096,
          lbaBase: 0,
          lbaSpan: 1024,
          seed: 3,
          timeoutMs: 300,
          iosPerThread: 10,
          readPercent: 100,
          random: true,
          verify: false,
        });
        const ms = performance.now() - t0;
        assert.ok(r.result.timeouts > 0, 'timeouts reported');
        assert.equal(r.result.ios, 0, 'nothing completed');
        assert.ok(ms < 30_000, `the kernel returned after ${Math.round(ms)} ms`);
        assert.equal(t.broken(), true, 'the queue is marked abandoned');
        note(`${mode} stall`, { timeouts: r.result.timeouts, kernelMs: Math.round(ms) });
      } finally {
        emu.clearFaults();
        await t.close();
      }
    });
  }
});

describe('payloads in GPU memory from the embedded controller (emulated P2P)', { skip: NO_DRIVER }, () => {
  for (const mode of MODES) {
    for (const bs of [4096, 65536]) {
      test(`${mode} mode, ${bs} B: GPU-written pattern read back into GPU memory through the copy engine, checked by the GPU`, { timeout: 300_000 }, async () => {
        const r = await runGpuPerf({ uri: 'emu://?size=128MiB', mode, rw: 'randread', bs, qd: 64, nqueues: 2, ios: 20_000, verify: true, spanBytes: 32 << 20, placement: 'device' });
        assert.equal(r.errors + r.timeouts, 0, `first error ${r.firstError}`);
        assert.equal(r.mismatches, 0);
        assert.match(r.placement, /emulated P2P/);
        assert.ok(
          r.notes.some((n) => /^emulated P2P \(not P2P\)/.test(n)),
          r.notes.join('; '),
        );
        assert.ok(r.controller['emulatedP2pBytesToDevice']! >= r.ios * bs, 'every read went through the copy engine');
        note(`emulated P2P ${mode} ${bs}B`, { ios: r.ios, mibPerSec: Math.round(r.mibPerSec), notes: r.notes });
      });
    }
  }
});

describe('GPU-resident controller', { skip: NO_DRIVER }, () => {
  for (const mode of MODES) {
    test(`${mode} mode: null namespace, 512 B random reads, no errors`, { timeout: 120_000 }, async () => {
      const r = await runGpuPerf({ uri: 'gpuctl://?null=1&size=1GiB', mode, rw: 'randread', bs: 512, qd: mode === 'block' ? 128 : 128, nqueues: 8, ios: 2_000_000 });
      assert.equal(r.errors + r.timeouts, 0);
      assert.ok(r.ios >= 2_000_000);
      note(`resident ${mode} 512B`, { iops: Math.round(r.iops), p50Us: r.latency.p50Us });
    });
    test(`${mode} mode: GPU-memory namespace, verified writes then reads`, { timeout: 120_000 }, async () => {
      const r = await runGpuPerf({ uri: 'gpuctl://?null=0&size=256MiB&lbads=12', mode, rw: 'randread', bs: 16384, qd: 64, nqueues: 4, ios: 200_000, verify: true, spanBytes: 64 << 20 });
      assert.equal(r.errors + r.timeouts, 0);
      assert.equal(r.mismatches, 0);
      note(`resident ${mode} verified`, { ios: r.ios, notes: r.notes });
    });
  }
});

describe('GPU leases through homid', { skip: NO_DRIVER }, () => {
  let dir: string;
  let sock: string;
  let srv: HomidServer;
  let gpu: GpuDevice;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'homid-gpu-'));
    sock = path.join(dir, 'homid.sock');
    srv = await startHomidServer(
      configFromObject(
        { socket: sock, device: [{ name: 'm', uri: 'emu://?size=128MiB' }], raw: { users: [process.getuid?.() ?? 0] }, class: { default: { queue_pairs: 16, per_client: 8, gpu_queues: 8 } } },
        'test',
      ),
      {},
    );
    gpu = GpuDevice.open(0);
  });
  after(async () => {
    gpu?.close();
    await srv?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const mode of MODES) {
    test(`${mode} mode: verified writes and reads on leased queues`, { timeout: 300_000 }, async () => {
      const c = await HomidClient.connect(sock);
      try {
        const t = await openHomidTarget(gpu, c, { device: 'm', nqueues: 2, entries: 256, bs: 4096 });
        try {
          assert.ok(t.leases.every((l) => l.busyPoll));
          const shape = launchShape({ mode, qd: 128, nqueues: 2 });
          const base = { mode, grid: shape.grid, block: shape.block, bs: 4096, lbaBase: 0, lbaSpan: 8192, seed: 21, timeoutMs: 2000 };
          const w = await launchJob(gpu, t, { ...base, iosPerThread: Math.ceil(8192 / shape.threads), readPercent: 0, random: false, verify: true });
          assert.equal(w.result.errors + w.result.timeouts, 0);
          const r = await launchJob(gpu, t, { ...base, iosPerThread: 50, readPercent: 100, random: true, verify: true });
          assert.equal(r.result.errors + r.result.timeouts + r.result.mismatches, 0);
          note(`homid ${mode}`, { ios: r.result.ios, iops: Math.round(r.result.ios / r.seconds) });
        } finally {
          await t.close();
        }
      } finally {
        c.close();
      }
    });
  }

  test('homi perf homid:<device> --initiator gpu: GPU leases through the CLI, verified', { timeout: 300_000 }, async () => {
    const args = [
      path.join(root, 'dist/src/cli/main.js'),
      'perf',
      `homid:m?socket=${sock}`,
      '--initiator',
      'gpu',
      '--mode',
      'block',
      '--qd',
      '64',
      '--nqueues',
      '2',
      '--ios',
      '20000',
      '--verify',
      '--verify-span',
      '8MiB',
      '--json',
    ];
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      c.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(out.code, 0, out.stderr);
    const j = JSON.parse(out.stdout) as { ios: number; mismatches: number; errors: number; device: string };
    assert.equal(j.mismatches, 0);
    assert.equal(j.errors, 0);
    assert.ok(j.ios >= 20_000);
    assert.match(j.device, /homid device 'm'/);
    note('homid CLI', { ios: j.ios });
  });

  test('a client killed while its kernel runs has its GPU queues reclaimed; the controller keeps serving others', { timeout: 300_000 }, async () => {
    const other = await HomidClient.connect(sock);
    const t = await openHomidTarget(gpu, other, { device: 'm', nqueues: 1, entries: 256, bs: 4096 });
    try {
      const before = srv.homid.counters.reclaimedQueuePairs;
      const child = spawn(process.execPath, [path.join(root, 'dist/test/gpu/gpu-client-child.js'), sock, '2'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) resolve(out.trim());
        });
        child.on('exit', (code) => reject(new Error(`the child exited (${code}) before its kernel ran: ${out}`)));
      });
      assert.equal(line, 'running', 'the child kernel is in flight');
      assert.equal(srv.homid.sessions.size, 2);
      // the other client works while the child's kernel runs
      const shape = launchShape({ mode: 'ticket', qd: 64, nqueues: 1 });
      const base = { mode: 'ticket' as const, grid: shape.grid, block: shape.block, bs: 4096, lbaBase: 16384, lbaSpan: 1024, seed: 31, timeoutMs: 2000 };
      const w1 = await launchJob(gpu, t, { ...base, iosPerThread: 16, readPercent: 0, random: false, verify: true });
      assert.equal(w1.result.errors + w1.result.timeouts, 0);
      const t0 = performance.now();
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      while (Number(srv.homid.sessions.size) !== 1) {
        assert.ok(performance.now() - t0 < 60_000, 'the dead client was reclaimed');
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(srv.homid.counters.reclaimedQueuePairs, before + 2, "the dead client's two GPU queue pairs were deleted");
      note('reclaim after SIGKILL', { ms: Math.round(performance.now() - t0) });
      const r = await launchJob(gpu, t, { ...base, iosPerThread: 32, readPercent: 100, random: true, verify: true });
      assert.equal(r.result.errors + r.result.timeouts + r.result.mismatches, 0, 'the surviving client keeps working');
      // and the reclaimed queue ids are handed out again
      const c2 = await HomidClient.connect(sock);
      const t2 = await openHomidTarget(gpu, c2, { device: 'm', nqueues: 2, entries: 256, bs: 4096 });
      const r2 = await launchJob(gpu, t2, { ...base, lbaBase: 20000, iosPerThread: 8, readPercent: 0, random: false, verify: true });
      assert.equal(r2.result.errors + r2.result.timeouts, 0);
      await t2.close();
      c2.close();
    } finally {
      await t.close();
      other.close();
    }
  });
});

describe('npm run build:gpu through NVRTC (no nvcc)', { skip: NO_DRIVER }, () => {
  test("NVRTC compiles every module; the PTX loads and declares the launchers' parameter lists", { timeout: 120_000 }, async () => {
    const { buildGpu } = await import('../../src/gpu/build.js');
    const { KERNELS, KERNEL_DIR, MODULES, paramBytes, ptxEntries } = await import('../../src/gpu/kernels.js');
    const cu = await import('../../src/sys/cuda.js');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'homi-nvrtc-'));
    const saved = process.env['NVCC'];
    try {
      fs.cpSync(KERNEL_DIR, dir, { recursive: true });
      process.env['NVCC'] = '/nonexistent/nvcc';
      let m;
      try {
        m = buildGpu(`${dir}/`, () => undefined);
      } catch (e) {
        if (/no NVRTC library/.test((e as Error).message)) return void note('nvrtc', 'no NVRTC library on this machine');
        throw e;
      }
      assert.match(m.compiler, /^nvrtc /);
      const gpu = GpuDevice.open(0);
      try {
        for (const [name, mod] of Object.entries(MODULES)) {
          const ptx = fs.readFileSync(path.join(dir, mod.ptx), 'utf8');
          const h = cu.cuModuleLoadData(ptx);
          const entries = ptxEntries(ptx);
          for (const k of Object.values(KERNELS).filter((x) => x.module === name)) {
            assert.deepEqual(
              entries.get(k.name)?.map((p) => p.bytes),
              k.params.map((p) => paramBytes(p)),
            );
            cu.cuModuleGetFunction(h, k.name);
          }
          cu.cuModuleUnload(h);
        }
        note('nvrtc', m.compiler);
      } finally {
        gpu.close();
      }
    } finally {
      if (saved === undefined) delete process.env['NVCC'];
      else process.env['NVCC'] = saved;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('homi perf --initiator gpu (the CLI)', { skip: NO_DRIVER }, () => {
  test('JSON from a verified run on the embedded controller', { timeout: 300_000 }, () => {
    const r = spawnSync(
      process.execPath,
      [
        path.join(root, 'dist/src/cli/main.js'),
        'perf',
        'emu://?size=64MiB',
        '--initiator',
        'gpu',
        '--mode',
        'ticket',
        '--qd',
        '64',
        '--nqueues',
        '2',
        '--ios',
        '100000',
        '--verify',
        '--verify-span',
        '16MiB',
        '--json',
      ],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { initiator: string; ios: number; mismatches: number; errors: number; placement: string };
    assert.equal(j.initiator, 'gpu');
    assert.equal(j.mismatches, 0);
    assert.equal(j.errors, 0);
    assert.ok(j.ios >= 100_000);
    assert.match(j.placement, /^host/);
  });
});

after(() => {
  const out = process.env['HOMI_GPU_REPORT'];
  if (out !== undefined && Object.keys(seen).length > 0) fs.writeFileSync(out, `${JSON.stringify(seen, null, 2)}\n`);
});
