/**
 * Leases by kind (src/daemon/leases): each kind says what it hands over, what status counts, and whether a
 * controller reset loses it; failures of the layers below reach the client as typed refusals, told apart by
 * their type (a transport that exports less memory than a queue pair needs).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HomidError } from '../../src/daemon/errors.js';
import { Homid } from '../../src/daemon/homid.js';
import { memfdOpener, type TransportOpener } from '../../src/daemon/registry.js';
import { memfdRegions } from '../../src/daemon/shared-region.js';
import { HomidErrorCode } from '../../src/ipc/errors.js';
import { ROOT_PEER, config, silent } from './fixtures.js';

/** memfd-mode embedded controllers whose exports hold at most `maxExportBytes`. */
function smallExports(maxExportBytes: number): TransportOpener {
  return async (cfg) => {
    const t = await memfdOpener(cfg);
    const exporter = t.queueExporter!.bind(t);
    t.queueExporter = () => {
      const x = exporter();
      return x === null ? null : { ...x, maxExportBytes };
    };
    return t;
  };
}

async function refusal(p: Promise<unknown>): Promise<HomidError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof HomidError, `expected HomidError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected a refusal');
}

describe('leases by kind', () => {
  test('raw and mediated leases: what each hands a client, what status counts, what a reset loses', async () => {
    const h = await Homid.start(config({ device: [{ name: 'm', uri: 'emu://?size=8MiB' }], raw: { users: [0] } }), { logger: silent(), opener: memfdOpener, regions: memfdRegions });
    try {
      const s = h.connect(ROOT_PEER);
      const [raw] = await h.openQueuePairs(s, { device: 'm', depth: 8, mode: 'raw', dataBytes: 1 << 16 });
      const [med] = await h.openQueuePairs(s, { device: 'm', depth: 8, mode: 'mediated', dataBytes: 1 << 16 });
      assert.equal(raw!.kind, 'raw');
      assert.ok(raw!.exported, 'a memfd-mode controller exports raw queues');
      assert.equal(raw!.wire()!.grant.mode, 'raw');
      assert.equal(raw!.wire()!.fds.length, raw!.fds.length);
      assert.equal(raw!.io(), null, 'the client drives a raw queue: homid counts nothing');
      assert.equal(raw!.lostWithController, true);
      assert.equal(med!.kind, 'mediated');
      assert.equal(med!.wire()!.grant.mode, 'mediated');
      assert.equal(med!.wire()!.fds.length, 2, 'the ring and the data segment');
      assert.deepEqual(med!.io(), { submitted: 0, forwarded: 0, denied: 0, completed: 0 });
      assert.equal(med!.lostWithController, med!.hwCq !== null, 'direct completions: the client reaps the hardware CQ');
      const pairs = h.status().clients[0]!.queuePairs;
      assert.deepEqual(
        pairs.map((p) => [p.mode, p.io]),
        [
          ['raw', null],
          ['mediated', { submitted: 0, forwarded: 0, denied: 0, completed: 0 }],
        ],
      );
      await h.disconnect(s);
      assert.equal(h.counters.reclaimedQueuePairs, 2);
    } finally {
      await h.stop();
    }
  });

  test('a raw queue pair larger than one export is refused as bad-request by type (ExportLimitError), naming what to change', async () => {
    const h = await Homid.start(config({ device: [{ name: 'm', uri: 'emu://?size=8MiB' }], raw: { users: [0] } }), { logger: silent(), opener: smallExports(64 << 10), regions: memfdRegions });
    try {
      const s = h.connect(ROOT_PEER);
      const e = await refusal(h.openQueuePairs(s, { device: 'm', depth: 8, mode: 'raw', dataBytes: 1 << 20 }));
      assert.equal(e.code, HomidErrorCode.BadRequest);
      assert.match(e.message, /^device 'm': emu-memfd: a queue pair's SQ, CQ and data \(\d+ bytes\) exceed the 65536 bytes one export can hold; ask for less dataBytes or depth$/);
      const m = await refusal(h.openQueuePairs(s, { device: 'm', depth: 8, mode: 'mediated', dataBytes: 1 << 20 }));
      assert.equal(m.code, HomidErrorCode.BadRequest);
      assert.match(m.message, /exports at most 65536: ask for less dataBytes or depth/);
      // what fits is granted, and nothing was left behind by the refusals
      const [ok] = await h.openQueuePairs(s, { device: 'm', depth: 8, mode: 'raw', dataBytes: 16 << 10 });
      assert.equal(ok!.lost, null);
      assert.equal(s.leases.size, 1);
    } finally {
      await h.stop();
    }
  });
});
