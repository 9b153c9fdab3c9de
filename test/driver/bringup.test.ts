import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Controller } from '../../src/driver/controller.js';
import { DeviceRemovedError, ControllerStateError } from '../../src/driver/errors.js';
import type { Transport } from '../../src/transport/transport.js';
import { doorbellNotifier } from '../../src/transport/doorbell.js';
import { CC_EN, CSTS_RDY, CSTS_SHST_COMPLETE, CSTS_SHST_MASK, CSTS_SHST_SHIFT, REG_CC, REG_CSTS } from '../../src/nvme/registers.js';
import { FeatureId, LogPageId, SMART_LOG_SIZE } from '../../src/nvme/opcodes.js';
import { openEmu } from '../../src/transport/emu.js';
import { NS1, NS2, openRig } from './helpers.js';

test('bring-up reads CAP/VS, identifies the controller and both namespaces, negotiates queues', async () => {
  const rig = await openRig({ ioQueues: 4 });
  try {
    const { ctrl, emu } = rig;
    assert.equal(ctrl.state, 'live');
    assert.equal(ctrl.cap.maxQueueEntries, 1024);
    assert.ok(ctrl.version.major >= 1);
    assert.equal(ctrl.identity.vid, emu.config.vendorId);
    assert.equal(ctrl.identity.ssvid, emu.config.subsystemVendorId);
    assert.equal(ctrl.identity.model, emu.config.model);
    assert.equal(ctrl.identity.serial, emu.config.serial);
    assert.equal(ctrl.identity.firmware, emu.config.firmware);
    assert.equal(ctrl.identity.mdts, 4096 * 2 ** emu.config.mdts);
    assert.equal(ctrl.identity.nn, 2);
    assert.deepEqual(
      ctrl.namespaces.map((n) => [n.nsid, n.blockSize, n.blocks, n.lbads, n.capacityBytes]),
      [
        [1, 4096, NS1.sizeBytes / 4096, 12, NS1.sizeBytes],
        [2, 512, NS2.sizeBytes / 512, 9, NS2.sizeBytes],
      ],
    );
    assert.equal(ctrl.maxIoQueuePairs, 4);
    assert.equal(ctrl.namespace(2).blockSize, 512);
    assert.throws(() => ctrl.namespace(3), /namespace 3 is not active/);
    // CC.EN set and ready
    assert.equal(emu.read32(REG_CC) & CC_EN, CC_EN);
    assert.equal(emu.read32(REG_CSTS) & CSTS_RDY, CSTS_RDY);
  } finally {
    await rig.close();
  }
});

test('negotiated queue count is capped by the controller', async () => {
  const rig = await openRig({ ioQueues: 200 }, { maxQueuePairs: 8 });
  try {
    assert.equal(rig.ctrl.maxIoQueuePairs, 8);
  } finally {
    await rig.close();
  }
});

test('admin helpers: identify, get/set features, SMART log page', async () => {
  const rig = await openRig();
  try {
    const { ctrl } = rig;
    const id = await ctrl.identifyController();
    assert.equal(id.mn, ctrl.identity.model);
    const nq = await ctrl.getFeatures(FeatureId.NumberOfQueues);
    assert.equal((nq & 0xffff) + 1, ctrl.maxIoQueuePairs);
    const smart = await ctrl.getLogPage(LogPageId.SmartHealth, SMART_LOG_SIZE);
    assert.equal(smart.length, SMART_LOG_SIZE);
    assert.deepEqual(await ctrl.activeNamespaceIds(), [1, 2]);
  } finally {
    await rig.close();
  }
});

test('bring-up disables a controller that is already enabled (re-open after a previous driver)', async () => {
  const emu = await openEmu({ namespaces: [NS1], backing: 'memory' });
  try {
    const first = await Controller.open(emu);
    // Simulate a driver that went away without shutting down: open again on the enabled controller.
    assert.equal(emu.read32(REG_CC) & CC_EN, CC_EN);
    const logs: string[] = [];
    const second = await Controller.open(emu, { log: (m) => logs.push(m) });
    assert.ok(
      logs.some((l) => l.startsWith('disabling controller')),
      logs.join('\n'),
    );
    assert.equal(second.namespaces.length, 1);
    await second.close();
    void first;
  } finally {
    await emu.close();
  }
});

test('close() shuts down (CSTS.SHST complete, then CC.EN=0) and is idempotent', async () => {
  const rig = await openRig();
  const { ctrl, emu } = rig;
  try {
    const qp = await ctrl.createQueuePair({ entries: 16 });
    const csts: number[] = [];
    const origWrite = emu.write32.bind(emu);
    // Observe CSTS after the shutdown request reaches the controller.
    emu.write32 = (off: number, v: number) => {
      origWrite(off, v);
      if (off === REG_CC && ((v >>> 14) & 3) === 1) {
        const t0 = Date.now();
        let s = emu.read32(REG_CSTS);
        while ((s & CSTS_SHST_MASK) >>> CSTS_SHST_SHIFT !== CSTS_SHST_COMPLETE && Date.now() - t0 < 2000) s = emu.read32(REG_CSTS);
        csts.push(s);
      }
    };
    const allocatedBefore = emu.dma.allocatedBytes;
    assert.ok(allocatedBefore > 0);
    await ctrl.close();
    emu.write32 = origWrite;
    assert.equal(csts.length, 1, 'exactly one shutdown request');
    assert.equal((csts[0]! & CSTS_SHST_MASK) >>> CSTS_SHST_SHIFT, CSTS_SHST_COMPLETE);
    assert.equal(emu.read32(REG_CC) & CC_EN, 0);
    assert.equal(emu.read32(REG_CSTS) & CSTS_RDY, 0);
    assert.equal(ctrl.state, 'closed');
    assert.equal(qp.state, 'deleted');
    assert.equal(emu.dma.allocatedBytes, 0, 'all queue memory freed');
    await ctrl.close(); // idempotent
    await assert.rejects(ctrl.createQueuePair(), ControllerStateError);
  } finally {
    await rig.close();
  }
});

test('registers reading all ones fail bring-up with DeviceRemovedError', async () => {
  const gone: Transport = {
    kind: 'fake',
    description: 'removed device',
    read32: () => 0xffffffff,
    write32: () => undefined,
    setupAdminQueue: async () => undefined,
    createIoQueues: async () => undefined,
    deleteIoQueues: async () => undefined,
    notifier: (qid) => doorbellNotifier(new Int32Array(64), qid, 4, null),
    dma: {
      pageSize: 4096,
      alloc: () => {
        throw new Error('no');
      },
      free: () => undefined,
      allocatedBytes: 0,
    },
    close: async () => undefined,
  };
  await assert.rejects(Controller.open(gone), (e: unknown) => e instanceof DeviceRemovedError && /CAP read 0xffffffff/.test(e.message));
});
