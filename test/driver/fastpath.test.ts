import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { Controller } from '../../src/driver/controller.js';
import { dataPointer } from '../../src/driver/dptr.js';
import { NvmOpcode } from '../../src/nvme/opcodes.js';
import { openEmu } from '../../src/transport/emu.js';

/**
 * Micro-check that submitIo/ring/poll allocate nothing per I/O: run many I/Os in one synchronous loop (the
 * controller runs in its worker) and count young-generation GCs. Any per-I/O allocation of even a few dozen
 * bytes would cause several scavenges over this many I/Os.
 */
test('fast path: no scavenges over hundreds of thousands of I/Os', async (t) => {
  const emu = await openEmu({ namespaces: [{ sizeBytes: 256 << 20, lbads: 12 }], backing: 'null' });
  try {
    const ctrl = await Controller.open(emu);
    const qp = await ctrl.createQueuePair({ entries: 64 });
    const buf = emu.dma.alloc(4096);
    const dp = dataPointer(emu.dma, buf);
    const prp1 = dp.prp1;
    const prp2 = dp.prp2;
    let done = 0;
    let errors = 0;
    const onComplete = (_tag: number, status: number): void => {
      done++;
      if (status !== 0) errors++;
    };
    // Idle polls (nothing completed) are counted: the queue pair samples the clock on some poll calls, which
    // can allocate a little per call, not per I/O. The loop itself checks its deadline only every 65536 spins.
    let idlePolls = 0;
    const run = (total: number): void => {
      let submitted = 0;
      done = 0;
      idlePolls = 0;
      // generous: this counts allocations, not speed; a loaded 2-vCPU machine can starve the controller thread
      const deadline = performance.now() + 120_000;
      let spins = 0;
      while (done < total) {
        while (submitted < total && qp.submitIo(NvmOpcode.Read, 1, submitted & 0xffff, 1, prp1, prp2, submitted) >= 0) submitted++;
        qp.ring();
        if (qp.poll(onComplete) === 0) {
          idlePolls++;
          if ((++spins & 0xffff) === 0 && performance.now() > deadline) throw new Error('stalled');
        }
      }
    };
    run(50_000); // warm up the JIT
    let minor = 0;
    const obs = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind;
        if (kind === constants.NODE_PERFORMANCE_GC_MINOR) minor++;
      }
    });
    obs.observe({ entryTypes: ['gc'] });
    const n = 300_000;
    const t0 = performance.now();
    run(n);
    const ms = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 50));
    obs.disconnect();
    assert.equal(errors, 0);
    t.diagnostic(`fast path: ${n} I/Os, ${minor} scavenges, ${idlePolls} idle polls, ${Math.round(n / ms)} kIOPS`);
    // Allowance: 2 scavenges, plus 1 per million idle polls (clock samples; with a starved controller thread
    // on a loaded machine idle polls can outnumber I/Os by far). A per-I/O allocation of even 16 bytes would
    // cost about 5 MB over these 300,000 I/Os and still exceed it.
    const allowed = 2 + Math.floor(idlePolls / 1_000_000);
    assert.ok(minor <= allowed, `${minor} scavenges during ${n} I/Os and ${idlePolls} idle polls (allowed ${allowed}; ${Math.round(n / ms)} kIOPS)`);
    dp.release();
    emu.dma.free(buf);
    await ctrl.close();
  } finally {
    await emu.close();
  }
});
