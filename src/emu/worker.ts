/**
 * Entry point of the controller worker thread: build the controller from workerData and run its polling loop
 * until the host sets CTL_STOP. The loop leaves only for work that needs the event loop (loading the CUDA copier
 * of a device window) and is entered again right after. A crash is recorded in the control block
 * (WORKER_CRASHED) before the thread dies, so the host sees a surprise-removed device at once.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { CTL_STATE, CTL_STATS_BYTE_OFFSET, WORKER_CRASHED, type WorkerInit, type WorkerMessage } from './config.js';
import { Controller, type EmuShmOps } from './controller.js';

const init = workerData as WorkerInit;
const ctl = new Int32Array(init.control, 0, CTL_STATS_BYTE_OFFSET / 4);
let controller: Controller;
try {
  // memfd mode: BAR and DMA segments are memfds this thread maps; the FFI is loaded only then.
  let shmOps: EmuShmOps | null = null;
  if (init.shm) {
    const shm = await import('../sys/shm.js');
    const dmabuf = await import('../sys/dmabuf.js');
    // The controller runs in the owner's process (homid): it maps only memfds whose size no holder can change,
    // so nothing another process does to one can fault this one, and dma-bufs (whose size is fixed at export).
    shmOps = {
      mapShmFd: (fd, size) => shm.mapShmFd(fd, size, { requireSizeSeals: true }),
      mapDmaBuf: (fd, size) => {
        const f = dmabuf.inspectDmaBuf(fd);
        if (f.size < size) throw new dmabuf.DmaBufError(`dma-buf fd ${fd} holds ${f.size} bytes, fewer than ${size}`);
        const m = dmabuf.mapDmaBuf(fd, size);
        return { buffer: m.buffer, address: m.addressNumber, close: () => m.retire() };
      },
      futexWait: shm.futexWait,
    };
  }
  controller = new Controller(init, shmOps, (m: WorkerMessage) => parentPort?.postMessage(m));
} catch (e) {
  parentPort?.postMessage({ type: 'error', message: (e as Error).message });
  Atomics.store(ctl, CTL_STATE, WORKER_CRASHED);
  process.exit(1);
}
parentPort?.postMessage({ type: 'ready' });
try {
  while (controller.run() === 'async') await controller.runAsyncTasks();
} catch (e) {
  Atomics.store(ctl, CTL_STATE, WORKER_CRASHED);
  throw e;
}
controller.dispose();
init.mailbox.close();
process.exit(0);
