// Helpers for tests that run INSIDE the VM harness's guest (a real Linux kernel under QEMU), never on a host:
// they unbind and rebind PCI devices and write to NVMe block devices.
import { existsSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import type { NvmeDeviceSpec } from '../src/vm/spec.js';

/** Throws unless running in the harness's guest (HOMI_GUEST=1 and the guest kernel's release). */
export function assertInGuest(): void {
  const rel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  if (process.env.HOMI_GUEST !== '1' || rel !== process.env.HOMI_GUEST_KERNEL_RELEASE) {
    throw new Error(
      'guest-only test: it rebinds PCI devices and writes to NVMe disks. Run it through the VM harness ' + '(node dist/src/vm/cli.js run --nvme ... -- node --test dist/test-guest/), never on a host.',
    );
  }
}

/** The NVMe controllers the host configured (HOMI_GUEST_NVME, set by the harness: JSON of NvmeDeviceSpec[]). */
export function expectedNvme(): NvmeDeviceSpec[] {
  const s = process.env.HOMI_GUEST_NVME;
  return s ? (JSON.parse(s) as NvmeDeviceSpec[]) : [];
}

export function sys(path: string): string {
  return readFileSync(path, 'utf8').trim();
}

export function sysWrite(path: string, value: string): void {
  writeFileSync(path, value);
}

export async function waitFor<T>(what: string, fn: () => T | undefined | null | false, timeoutMs = 20_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    let v: T | undefined | null | false;
    try {
      v = fn();
    } catch {
      v = undefined;
    }
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface NvmeCtrl {
  /** e.g. nvme0 */
  name: string;
  /** PCI address, e.g. 0000:01:00.0 */
  bdf: string;
  serial: string;
  model: string;
}

/** Controllers bound to the kernel's nvme driver right now. */
export function nvmeControllers(): NvmeCtrl[] {
  const base = '/sys/class/nvme';
  if (!existsSync(base)) return [];
  return readdirSync(base)
    .filter((n) => /^nvme\d+$/.test(n))
    .map((name) => ({
      name,
      bdf: basename(readlinkSync(`${base}/${name}/device`)),
      serial: sys(`${base}/${name}/serial`),
      model: sys(`${base}/${name}/model`),
    }));
}

export function controllerBySerial(serial: string): NvmeCtrl | undefined {
  return nvmeControllers().find((c) => c.serial === serial);
}

/** Block devices (nvmeXnY) of a controller, by namespace id. */
export function namespacesOf(ctrl: NvmeCtrl): Map<number, string> {
  const m = new Map<number, string>();
  for (const e of readdirSync(`/sys/class/nvme/${ctrl.name}`)) {
    // nvme0n1, or nvme0c0n1 (multipath hidden path: its block device is nvme<subsys>n<nsid>)
    if (/^nvme\d+(c\d+)?n\d+$/.test(e)) {
      const nsid = Number(sys(`/sys/class/nvme/${ctrl.name}/${e}/nsid`));
      const dev = /c\d+n/.test(e) ? e.replace(/c\d+n/, 'n') : e;
      m.set(nsid, dev);
    }
  }
  return m;
}

/** The driver a PCI function is bound to, or null. */
export function pciDriver(bdf: string): string | null {
  const p = `/sys/bus/pci/devices/${bdf}/driver`;
  return existsSync(p) ? basename(readlinkSync(p)) : null;
}

/** Unbinds a PCI function from its driver and binds it to `driver` (driver_override + drivers_probe). */
export async function rebind(bdf: string, driver: string | null): Promise<void> {
  const dev = `/sys/bus/pci/devices/${bdf}`;
  if (pciDriver(bdf) !== null) sysWrite(`${dev}/driver/unbind`, bdf);
  await waitFor(`${bdf} unbound`, () => pciDriver(bdf) === null);
  // An empty write (a newline) clears the override: the default driver matches again.
  sysWrite(`${dev}/driver_override`, driver ?? '\n');
  sysWrite('/sys/bus/pci/drivers_probe', bdf);
  if (driver !== null) await waitFor(`${bdf} bound to ${driver}`, () => pciDriver(bdf) === driver);
}
