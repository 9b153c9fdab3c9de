/**
 * The conformance suite of the I/O interface: the same checks against every backend that runs on this machine
 * (posix buffered and O_DIRECT on a temporary file, io_uring buffered / O_DIRECT / registered buffers on a
 * temporary file, the user-space driver over the embedded controller, memory- and file-backed, and the emu
 * backend name). io_uring_cmd needs /dev/ngXnY and runs in the VM suite.
 */
import { test, describe, before, after } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { BACKENDS, type BackendName, type IoOpenOptions } from '../../src/io/index.js';
import { conformanceSuite } from './conformance.js';

const dir = mkdtempSync(join(tmpdir(), 'homi-io-conf-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

interface Case {
  name: string;
  uri: () => string;
  opts: IoOpenOptions;
}

const SIZE = '16MiB';
const cases: Case[] = [
  { name: 'posix (buffered file)', uri: () => `file:${join(dir, 'posix.img')}?size=${SIZE}`, opts: { backend: 'posix' } },
  { name: 'posix O_DIRECT', uri: () => `file:${join(dir, 'posix-direct.img')}?size=${SIZE}`, opts: { backend: 'posix', direct: true } },
  { name: 'io_uring (buffered file)', uri: () => `file:${join(dir, 'uring.img')}?size=${SIZE}&bs=4096`, opts: { backend: 'io_uring' } },
  { name: 'io_uring O_DIRECT', uri: () => `file:${join(dir, 'uring-direct.img')}?size=${SIZE}`, opts: { backend: 'io_uring', direct: true } },
  { name: 'io_uring O_DIRECT fixed buffers', uri: () => `file:${join(dir, 'uring-fixed.img')}?size=${SIZE}`, opts: { backend: 'io_uring', direct: true, fixedBuffers: true } },
  { name: 'driver on emu memory (4 KiB blocks)', uri: () => `emu://?size=${SIZE}`, opts: { backend: 'driver' } },
  { name: 'driver on emu memory (512 B blocks)', uri: () => `emu://?size=${SIZE}&lbads=9`, opts: {} },
  { name: 'driver on emu file-backed', uri: () => `emu://${join(dir, 'emu-file.img')}?size=${SIZE}`, opts: { backend: 'driver' } },
  { name: 'emu backend', uri: () => `emu://?size=${SIZE}`, opts: { backend: 'emu' } },
];

/** Backends that cannot run on this host, each with where it runs instead. */
const elsewhere: Partial<Record<BackendName, string>> = {
  io_uring_cmd: "needs an NVMe generic character device (/dev/ngXnY): the VM suite runs the same checks on QEMU's NVMe (test-guest/io-conformance.test.ts)",
};

test('conformance covers every backend', () => {
  const here = new Set(cases.map((c) => c.opts.backend ?? 'driver'));
  for (const b of BACKENDS) assert.ok(here.has(b) || elsewhere[b] !== undefined, `backend ${b} has no conformance case`);
});

for (const [b, why] of Object.entries(elsewhere)) test(`conformance: ${b}`, { skip: why }, () => undefined);

// The checks themselves live in test/io/conformance.ts (the guest suite runs them on a real kernel too).
for (const c of cases) {
  describe(`conformance: ${c.name}`, () => {
    const suite = conformanceSuite({ uri: c.uri(), opts: c.opts, expectBytes: 16 << 20 });
    before(() => suite.open());
    after(() => suite.close());
    for (const k of suite.checks) test(k.name, () => k.run());
  });
}
