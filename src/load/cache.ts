/**
 * Cold-cache runs: before a load, each file's pages are dropped from the page cache (fdatasync, then
 * POSIX_FADV_DONTNEED, as fio's invalidate), and mincore(2) counts what stayed. O_DIRECT paths are cold by nature;
 * buffered ones (posix, the PyTorch baselines) are only cold after this. Where dropping cannot work (tmpfs: the
 * cache is the file) or did not work (pages still resident), the note says so and the report carries it.
 */
import * as fs from 'node:fs';
import { dropPageCache } from '../sys/fileio.js';
import { residentPages } from '../sys/mman.js';
import { errnoName } from '../sys/libc.js';

/** statfs(2) f_type of tmpfs. */
export const TMPFS_MAGIC = 0x01021994;

export interface CacheDropResult {
  /** Files whose cache was dropped. */
  dropped: number;
  /** Pages still resident after the drop, over all files (mincore). */
  residentPages: number;
  /** Pages in all. */
  pages: number;
  /** Why the load is not (entirely) cold, or null when it is. */
  note: string | null;
}

/** Drop the page cache of every file; files that cannot be opened are left for the load to report. */
export function dropCaches(paths: readonly string[]): CacheDropResult {
  let dropped = 0;
  let resident = 0;
  let pages = 0;
  const problems = new Map<string, number>();
  const problem = (why: string) => problems.set(why, (problems.get(why) ?? 0) + 1);
  for (const p of paths) {
    let fd = -1;
    try {
      fd = fs.openSync(p, 'r');
    } catch {
      continue;
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile() || st.size === 0) continue;
      if (fs.statfsSync(p).type === TMPFS_MAGIC) {
        problem('tmpfs: the page cache is the file itself and cannot be dropped');
        continue;
      }
      const r = dropPageCache(fd, 0, st.size);
      if (r < 0) {
        problem(`posix_fadvise(DONTNEED) failed: ${errnoName(-r)}`);
        continue;
      }
      dropped++;
      try {
        const rp = residentPages(fd, st.size);
        resident += rp.resident;
        pages += rp.pages;
      } catch {
        // mincore refused (not the owner on an old kernel): the drop stands, residency is unknown
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  const notes = [...problems].map(([why, n]) => `${n} file(s): ${why}`);
  if (resident > 0) notes.push(`${resident} of ${pages} pages stayed in the page cache after the drop`);
  return { dropped, residentPages: resident, pages, note: notes.length ? notes.join('; ') : null };
}
