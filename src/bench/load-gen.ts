/**
 * Write a `homi load` dataset (src/load/dataset.ts) from the command line, until `homi load gen` is wired:
 *
 *   node dist/src/bench/load-gen.js <small|medium|large|safetensors> <dir> [--files N] [--bytes SIZE]
 *     [--scale X] [--jitter J] [--seed S] [--no-sync] [--quiet]
 *
 * Progress goes to stderr (at most one line per second), the manifest's summary to stdout.
 */
import { parseArgs } from 'node:util';
import { DATASET_NAMES, datasetSpec, generateDataset, type DatasetName, type DatasetSizeOptions } from '../load/dataset.js';
import { formatSize, parseSize } from '../util/size.js';

export function loadGenMain(argv: string[]): number {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      files: { type: 'string' },
      bytes: { type: 'string' },
      scale: { type: 'string' },
      jitter: { type: 'string' },
      seed: { type: 'string', default: '1' },
      'no-sync': { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
    },
  });
  const fail = (why: string): number => {
    process.stderr.write(`homi dataset: ${why}\n`);
    return 2;
  };
  const [name, dir] = positionals;
  if (name === undefined || dir === undefined || positionals.length !== 2) return fail(`usage: load-gen <${DATASET_NAMES.join('|')}> <dir> [--files N] [--bytes SIZE] [--scale X] [--seed S]`);
  if (!(DATASET_NAMES as readonly string[]).includes(name)) return fail(`unknown dataset '${name}' (one of ${DATASET_NAMES.join(', ')})`);
  const o: DatasetSizeOptions = {};
  let seed: number;
  try {
    if (values.files !== undefined) o.files = Number(values.files);
    if (values.bytes !== undefined) o.bytes = parseSize(values.bytes);
    if (values.scale !== undefined) o.scale = Number(values.scale);
    if (values.jitter !== undefined) o.jitter = Number(values.jitter);
    seed = Number(values.seed);
    const spec = datasetSpec(name as DatasetName, o);
    const t0 = performance.now();
    let last = 0;
    const m = generateDataset(dir, spec, {
      seed,
      sync: !values['no-sync'],
      onProgress: (done, total) => {
        const now = performance.now();
        if (!values.quiet && (now - last > 1000 || done === total)) {
          last = now;
          process.stderr.write(`homi dataset: ${spec.name}: ${formatSize(done)} of ${formatSize(total)} (${((100 * done) / total).toFixed(0)}%)\n`);
        }
      },
    });
    const s = (performance.now() - t0) / 1000;
    process.stdout.write(`${m.name}: ${m.files.length} files, ${formatSize(m.totalBytes)} in ${dir} (seed ${m.seed}, ${s.toFixed(1)} s, ${(m.totalBytes / 2 ** 20 / s).toFixed(0)} MiB/s)\n`);
    return 0;
  } catch (e) {
    return fail((e as Error).message);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) process.exitCode = loadGenMain(process.argv.slice(2));
