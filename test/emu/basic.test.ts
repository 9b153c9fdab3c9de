import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestHost, sctSc, waitFor } from './helper.js';
import { AdminOpcode, Cns, NvmOpcode } from '../../src/nvme/opcodes.js';
import { decodeIdentifyController } from '../../src/nvme/identify-controller.js';
import { CSTS_RDY, REG_CC, REG_CSTS, REG_VS, REG_CAP, decodeCap } from '../../src/nvme/registers.js';

describe('emu basic', () => {
  let h: TestHost;
  before(async () => {
    h = await TestHost.open({ namespaces: [{ sizeBytes: 1 << 20, lbads: 9 }] });
  });
  after(async () => {
    await h.close();
  });

  it('registers', () => {
    const cap = decodeCap(h.t.read32(REG_CAP), h.t.read32(REG_CAP + 4));
    assert.equal(cap.maxQueueEntries, 1024);
    assert.equal(h.t.read32(REG_VS), 0x00010400);
    assert.equal(h.t.read32(REG_CSTS) & CSTS_RDY, CSTS_RDY);
  });

  it('identify controller', async () => {
    const buf = h.t.dma.alloc(4096);
    const c = await h.admin.run({ opcode: AdminOpcode.Identify, prp1: buf.iova, cdw10: Cns.Controller });
    assert.deepEqual(sctSc(c), [0, 0]);
    const id = decodeIdentifyController(buf.bytes);
    assert.equal(id.sn, 'HOMIEMU0001');
    assert.equal(id.nn, 1);
  });

  it('write then read', async () => {
    const qp = await h.createQueuePair(1, 16);
    const w = h.t.dma.alloc(4096);
    for (let i = 0; i < 4096; i++) w.bytes[i] = (i * 7) & 0xff;
    let c = await qp.run({ opcode: NvmOpcode.Write, nsid: 1, prp1: w.iova, cdw10: 8, cdw12: 7 });
    assert.deepEqual(sctSc(c), [0, 0]);
    const r = h.t.dma.alloc(4096);
    c = await qp.run({ opcode: NvmOpcode.Read, nsid: 1, prp1: r.iova, cdw10: 8, cdw12: 7 });
    assert.deepEqual(sctSc(c), [0, 0]);
    assert.deepEqual(r.bytes, w.bytes);
    void waitFor;
    void REG_CC;
  });
});
