/**
 * A stand-in for `python3 bench/load/torch_baselines.py` in test/load/compare.test.ts (for machines without
 * torch): `node fake-python.js <script> --device cpu|cuda --baselines a,b,... [--cold] [--verify] <dataset dir>`
 * reads the dataset's manifest and prints, for torch:safetensors and numpy:fromfile, a measured result line
 * (readFileSync of each file, three and four passes: slower than the fake homi) and for every other baseline a
 * skipped line. Measured lines are also appended to $FAKE_PY_LOG. Without arguments it does nothing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { emit, flag, measureReads } from './fake-common.js';

const argv = process.argv.slice(2);
if (argv.length >= 2) {
  const dataset = argv[argv.length - 1]!;
  const target = flag(argv, '--device') === 'cuda' ? 'gpu' : 'host';
  const manifest = JSON.parse(readFileSync(join(dataset, 'manifest.json'), 'utf8')) as { files: Array<{ path: string }> };
  const files = manifest.files.map((f) => join(dataset, f.path));
  for (const b of (flag(argv, '--baselines') ?? '').split(',')) {
    if (b === 'torch:safetensors' || b === 'numpy:fromfile') {
      emit(measureReads(b, target, files, b === 'torch:safetensors' ? 3 : 4, `fake ${b}: readFileSync per file`), 'FAKE_PY_LOG');
    } else if (b !== '') {
      process.stdout.write(
        JSON.stringify({ path: b, target, files: 0, bytes: 0, seconds: 0, filesPerSec: 0, mibPerSec: 0, latency: { p50: 0, p99: 0, max: 0 }, describe: '', skipped: 'fake: not measured' }) + '\n',
      );
    }
  }
}
