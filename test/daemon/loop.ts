/** Loop-mounted ext4 images for the FIEMAP tests: the image file can also back a file-backed emu:// device. */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { haveTool, tmpDir } from './fixtures.js';

export interface LoopMount {
  dir: string;
  /** The ext4 image file (on the machine's disk when os.tmpdir() is). */
  image: string;
  /** Where it is mounted. */
  mnt: string;
  sizeMiB: number;
  unmount(): void;
}

function stderrOf(e: unknown): string {
  const s = (e as { stderr?: Buffer | string }).stderr;
  return (s ? s.toString() : (e as Error).message).trim();
}

/** The file system type of the directory holding `p` (stat -f), or null when unknown. */
export function fsTypeOf(p: string): string | null {
  try {
    return execFileSync('stat', ['-f', '-c', '%T', p], { stdio: 'pipe' }).toString().trim();
  } catch {
    return null;
  }
}

/**
 * Make an ext4 image of `sizeMiB` under os.tmpdir() and loop-mount it (mount -o loop). Returns the mount, or
 * why it cannot be made (the caller skips with that reason).
 */
export function loopExt4(sizeMiB: number, prefix = 'homid-loop-'): LoopMount | string {
  if (process.getuid?.() !== 0) return 'loop mounts need root';
  for (const t of ['mkfs.ext4', 'mount', 'umount']) if (!haveTool(t)) return `no ${t}`;
  const dir = tmpDir(prefix);
  const image = path.join(dir, 'fs.img');
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt);
  try {
    // inode tables and journal written now: no background initialisation competes with the tests' I/O
    execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'lazy_itable_init=0,lazy_journal_init=0', image, `${sizeMiB}M`], { stdio: 'pipe' });
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    return `mkfs.ext4 failed: ${stderrOf(e)}`;
  }
  try {
    execFileSync('mount', ['-o', 'loop', image, mnt], { stdio: 'pipe' });
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    return `cannot loop-mount an ext4 image here: ${stderrOf(e)}`;
  }
  return {
    dir,
    image,
    mnt,
    sizeMiB,
    unmount(): void {
      try {
        execFileSync('umount', [mnt], { stdio: 'pipe' });
      } catch {
        execFileSync('umount', ['-l', mnt], { stdio: 'pipe' });
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
