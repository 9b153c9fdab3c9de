// Child process for bind.test.ts: binds through the fake kernel, then ends without restore() in the way
// named by argv[4] (exit, throw, SIGTERM). Does nothing unless HOMI_PCI_EXIT_CHILD=1.
import { join } from 'node:path';
import { bindTo } from '../../src/pci/bind.js';
import { FakeSys } from './fake-sysfs.js';

if (process.env.HOMI_PCI_EXIT_CHILD === '1') {
  const [root, addr, how] = process.argv.slice(2) as [string, string, string];
  const f = Object.create(FakeSys.prototype) as FakeSys;
  Object.assign(f, { root, sys: join(root, 'sys'), proc: join(root, 'proc'), dev: join(root, 'dev'), writes: [], refuse: new Set(), defaults: new Map([[0x010802, 'nvme']]) });
  bindTo(addr, 'uio_pci_generic', f.paths);
  process.stdout.write('bound uio_pci_generic\n');
  if (how === 'exit') process.exit(3);
  if (how === 'throw') throw new Error('simulated crash');
  if (how === 'SIGTERM') {
    process.kill(process.pid, 'SIGTERM');
    setTimeout(() => undefined, 5000);
  }
}
