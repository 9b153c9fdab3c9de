/**
 * The embedded controller's wake word: the controller thread sleeps when idle, and whoever writes a doorbell or
 * a register wakes it. The word lives in the control block (SharedArrayBuffer mode) or in the BAR memfd's page
 * after the doorbells (memfd mode, where other processes map it too).
 *
 * Protocol: the controller stores WAKE_SLEEPING, re-checks its doorbells and registers, then waits while the
 * word still reads WAKE_SLEEPING (Atomics.wait, or a process-shared futex in memfd mode). A host stores
 * WAKE_AWAKE before it notifies, so a wake that races the wait is never lost. Only the embedded controller and
 * the notifiers of src/transport/doorbell.ts use it; hardware never sleeps.
 */

/** Value of the wake word while the controller sleeps waiting for a doorbell. */
export const WAKE_SLEEPING = 1;
/** Value of the wake word while the controller polls. */
export const WAKE_AWAKE = 0;

/**
 * Wake a sleeping controller (SharedArrayBuffer mode) after doorbell writes. Costs one Atomics.load when it is
 * awake; a null word is a device that never sleeps.
 */
export function wakeDevice(wake: Int32Array | null): void {
  if (wake !== null && Atomics.load(wake, 0) === WAKE_SLEEPING) {
    Atomics.store(wake, 0, WAKE_AWAKE);
    Atomics.notify(wake, 0);
  }
}
