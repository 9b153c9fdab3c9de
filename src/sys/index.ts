export { OsError, errnoName, ERRNO, ioctl, blockDeviceSize, BLKGETSIZE64 } from './libc.js';
export { RLIMIT_NOFILE, getNofileLimit, setNofileLimit, raiseNofileLimit, countOpenFds, type Rlimit } from './rlimit.js';
