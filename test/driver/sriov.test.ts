// The driver core's SR-IOV channel over HOMI's own admin queue (controllerAdminCommandChannel) on the embedded
// controller: data from the controller (Identify) and to it (Namespace Attachment's controller list) travel
// through the same DMA path; the embedded controller has no SR-IOV, and says so with its own status, which
// reaches the caller as the typed NvmeStatusError. (The other implementation, the kernel's passthrough, runs in
// the guest suite: test-guest/sriov.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { controllerAdminCommandChannel, SriovManager } from '../../src/driver/sriov.js';
import { NvmeStatusError } from '../../src/driver/errors.js';
import { AdminOpcode } from '../../src/nvme/opcodes.js';
import { openRig } from './helpers.js';

test('SR-IOV manager on HOMI admin queue: reads work, unsupported commands fail with the controller status', async (t) => {
  const rig = await openRig();
  t.after(() => rig.close());
  const mgr = new SriovManager(controllerAdminCommandChannel(rig.ctrl));
  assert.equal(mgr.channel.description, 'HOMI admin queue');
  assert.deepEqual(await mgr.namespaceIds(), [1, 2]);
  const before = rig.emu.dma.allocatedBytes;
  await assert.rejects(mgr.primaryCapabilities(), (e: unknown) => e instanceof NvmeStatusError && e.opcode === AdminOpcode.Identify);
  await assert.rejects(mgr.attachNamespace(1, [2]), (e: unknown) => e instanceof NvmeStatusError && e.opcode === AdminOpcode.NamespaceAttachment);
  await assert.rejects(mgr.online(2), (e: unknown) => e instanceof NvmeStatusError && e.opcode === AdminOpcode.VirtualizationManagement);
  assert.equal(rig.emu.dma.allocatedBytes, before, 'a DMA buffer leaked');
});
