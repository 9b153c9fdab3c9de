/** Open an image or block device with the right decoder. */
import { Ext4Image, type Ext4Options } from './ext4/index.js';
import type { FsImage } from './fsimage.js';
import { FileBlockSource, type BlockSource } from './source.js';
import { NotThisFileSystemError } from './types.js';
import { XfsImage, type XfsOptions } from './xfs/index.js';

export type FsKind = 'xfs' | 'ext4';

export interface OpenOptions {
  /** File system type; detected from the superblock magic when absent. */
  fs?: FsKind;
  /** Verify metadata checksums (default true). */
  verify?: boolean;
}

/** Which file system the source holds, by superblock magic (null when neither). */
export function detectFs(src: BlockSource): FsKind | null {
  if (src.size >= 4) {
    const b = src.read(0, 4);
    if (b[0] === 0x58 && b[1] === 0x46 && b[2] === 0x53 && b[3] === 0x42) return 'xfs';
  }
  if (src.size >= 2048) {
    const m = src.read(1024 + 56, 2);
    if (m[0] === 0x53 && m[1] === 0xef) return 'ext4';
  }
  return null;
}

export function openSource(src: BlockSource, opts: OpenOptions = {}): FsImage {
  const kind = opts.fs ?? detectFs(src);
  const verify = opts.verify ?? true;
  if (kind === 'xfs') return new XfsImage(src, { verifyCrc: verify } satisfies XfsOptions);
  if (kind === 'ext4') return new Ext4Image(src, { verifyCsum: verify } satisfies Ext4Options);
  throw new NotThisFileSystemError('XFS or ext4', 'no known superblock magic');
}

/** Open an image file or block device (read only). Close the result when done. */
export function openImage(path: string, opts: OpenOptions = {}): FsImage {
  const src = new FileBlockSource(path);
  try {
    return openSource(src, opts);
  } catch (e) {
    src.close();
    throw e;
  }
}
