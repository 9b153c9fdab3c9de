/** File extents: FIEMAP on mounted file systems, XFS and ext4 on-disk decoders, path -> LBA ranges. */
export * from './types.js';
export { crc32c, crc32cRaw } from './crc32c.js';
export { type BlockSource, BufferBlockSource, FileBlockSource } from './source.js';
export { fiemapFd, fiemapPath, fiemapFlags, FIEMAP_EXTENT, FIEMAP_FLAG_SYNC, FS_IOC_FIEMAP, type FiemapOptions } from './fiemap.js';
export { FsImage, type DirEntry, type InodeInfo, type WalkEntry, type WalkOptions } from './fsimage.js';
export { XfsImage, type XfsOptions, type XfsInode } from './xfs/index.js';
export { Ext4Image, type Ext4Options, type Ext4Inode } from './ext4/index.js';
export { openImage, openSource, detectFs, type FsKind, type OpenOptions } from './open.js';
export { extentsCommand, runExtentsCommand, parseExtentsArgs, renderFileMap, type ExtentsCommandOptions } from './cli.js';
