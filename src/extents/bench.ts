/**
 * Indexing benchmark: build a source tree of N files (default 100,000), make an ext4 image (mkfs.ext4 -d) and
 * an XFS image (mkfs.xfs -p), then time opening each image and walking every file with its extents.
 *
 *   node dist/src/extents/bench.js [--files N] [--dir WORKDIR] [--keep]
 *
 * Images in WORKDIR are reused when present (the build is reported separately from the index time).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { openImage } from './open.js';

interface Args {
  files: number;
  dir: string | null;
  keep: boolean;
}

function parse(argv: string[]): Args {
  const a: Args = { files: 100_000, dir: null, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--files') a.files = Number(argv[++i]);
    else if (k === '--dir') a.dir = argv[++i] ?? null;
    else if (k === '--keep') a.keep = true;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!Number.isInteger(a.files) || a.files < 1) throw new Error('--files must be a positive integer');
  return a;
}

function buildSource(root: string, files: number): void {
  const perDir = 1000;
  let seed = 12345;
  const rnd = (): number => {
    seed ^= seed << 13;
    seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>>= 0);
  };
  const payload = Buffer.alloc(16384, 0x61);
  for (let i = 0; i < files; i++) {
    const d = path.join(root, `d${Math.floor(i / perDir)}`);
    if (i % perDir === 0) fs.mkdirSync(d, { recursive: true });
    const size = i % 4 === 0 ? 0 : rnd() % (i % 50 === 0 ? 16384 : 3000);
    fs.writeFileSync(path.join(d, `file-${i}.dat`), payload.subarray(0, size));
  }
}

function protofile(root: string): string {
  const lines = ['bench', '0 0', 'd--755 0 0'];
  for (const d of fs.readdirSync(root).sort()) {
    lines.push(` ${d} d--755 0 0`);
    for (const f of fs.readdirSync(path.join(root, d)).sort()) lines.push(`  ${f} ---644 0 0 ${path.join(root, d, f)}`);
    lines.push(' $');
  }
  lines.push('$');
  return lines.join('\n') + '\n';
}

function mib(n: number): string {
  return (n / 1048576).toFixed(1);
}

function main(): void {
  const args = parse(process.argv.slice(2));
  const work = args.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'homi-extents-bench-'));
  fs.mkdirSync(work, { recursive: true });
  const src = path.join(work, 'src');
  const ext4 = path.join(work, `bench-${args.files}.ext4`);
  const xfs = path.join(work, `bench-${args.files}.xfs`);
  const sizeMiB = Math.max(256, Math.ceil((args.files * 8192) / 1048576) + 256);
  let t = performance.now();
  if (!fs.existsSync(ext4) || !fs.existsSync(xfs)) {
    if (!fs.existsSync(src)) buildSource(src, args.files);
    console.log(`source tree: ${args.files} files in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    t = performance.now();
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', src, '-b', '4096', '-N', String(args.files + 10_000), ext4, `${sizeMiB}M`], { stdio: 'pipe' });
    console.log(`mkfs.ext4 -d: ${((performance.now() - t) / 1000).toFixed(1)} s`);
    t = performance.now();
    fs.writeFileSync(xfs + '.proto', protofile(src));
    const fd = fs.openSync(xfs, 'w');
    fs.ftruncateSync(fd, sizeMiB * 1048576);
    fs.closeSync(fd);
    execFileSync('mkfs.xfs', ['-q', '-f', '-p', xfs + '.proto', xfs], { stdio: 'pipe' });
    console.log(`mkfs.xfs -p: ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const results: Record<string, unknown>[] = [];
  for (const [name, img] of [
    ['ext4', ext4],
    ['xfs', xfs],
  ] as const) {
    globalThis.gc?.();
    const before = process.memoryUsage();
    const t0 = performance.now();
    const image = openImage(img);
    let files = 0;
    let dirs = 0;
    let extents = 0;
    let bytes = 0;
    let peakRss = before.rss;
    for (const e of image.walk({ maps: true })) {
      if (e.type === 'file') files++;
      else if (e.type === 'dir') dirs++;
      if (e.map) {
        extents += e.map.extents.length;
        bytes += e.map.size;
      }
      if ((files & 8191) === 0) peakRss = Math.max(peakRss, process.memoryUsage().rss);
    }
    const ms = performance.now() - t0;
    const after = process.memoryUsage();
    peakRss = Math.max(peakRss, after.rss);
    image.close();
    const r = {
      fs: name,
      files,
      dirs,
      extents,
      bytes,
      seconds: +(ms / 1000).toFixed(3),
      filesPerSecond: Math.round(files / (ms / 1000)),
      heapUsedMiB: +mib(after.heapUsed).valueOf(),
      rssMiB: +mib(after.rss).valueOf(),
      peakRssMiB: +mib(peakRss).valueOf(),
      rssGrowthMiB: +mib(after.rss - before.rss).valueOf(),
    };
    results.push(r);
    console.log(
      `${name}: indexed ${files} files + ${dirs} dirs (${extents} extents) in ${r.seconds} s ` +
        `(${r.filesPerSecond} files/s); heapUsed ${r.heapUsedMiB} MiB, rss ${r.rssMiB} MiB (peak ${r.peakRssMiB}, +${r.rssGrowthMiB})`,
    );
  }
  console.log(JSON.stringify({ node: process.version, cpu: os.cpus()[0]?.model, results }));
  if (!args.keep && args.dir === null) fs.rmSync(work, { recursive: true, force: true });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) main();
