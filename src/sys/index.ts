export { OsError, errnoName, ERRNO, ioctl, blockDeviceSize, BLKGETSIZE64 } from './libc.js';
