/**
 * A stand-in for `homi` in test/load/compare.test.ts: `node fake-homi.js load <files...> --path X --to T --json
 * [--verify]` really reads each file, times it, and prints a line of noise (which the runner must ignore) and
 * one result line of `homi load --json`'s shape; each result line is also appended to $FAKE_HOMI_LOG.
 * $FAKE_HOMI_FAIL=<path>: that path fails (exit 1, one line on stderr, no result line);
 * $FAKE_HOMI_FILE_ERROR=<path>: that path reports its first file failed (in `errors`, exit 1).
 * Run without arguments (as `node --test dist/test/` runs every file under test/) it does nothing.
 */
import { emit, flag, measureReads } from './fake-common.js';

const argv = process.argv.slice(2);
if (argv[0] === 'load') {
  const path = flag(argv, '--path') ?? 'posix';
  const target = flag(argv, '--to') ?? 'host';
  const files: string[] = [];
  for (let i = 1; i < argv.length; i++) {
    if (argv[i]!.startsWith('--')) {
      if (argv[i] === '--path' || argv[i] === '--to') i++;
      continue;
    }
    files.push(argv[i]!);
  }
  if (process.env.FAKE_HOMI_FAIL === path) {
    process.stderr.write(`homi: load --path ${path}: fake failure\n`);
    process.exitCode = 1;
  } else {
    process.stdout.write(`loading ${files.length} files (a line that is not JSON)\n`);
    // io_uring reads each file once, posix twice: two contenders of different speeds. The fields beyond the
    // common ones are those of the real homi load --json (per-file errors, verified, cache).
    const line = measureReads(path, target, files, path === 'posix' ? 2 : 1, `fake homi --path ${path}: readFileSync per file`);
    const errors = process.env.FAKE_HOMI_FILE_ERROR === path ? [{ path: files[0], reason: 'fake: unreadable' }] : [];
    const cache = argv.includes('--cold') ? 'fake: cold asked' : argv.includes('--no-cold') ? 'fake: warm asked' : 'fake: nothing asked';
    emit({ ...line, errors, verified: argv.includes('--verify') ? true : null, cache }, 'FAKE_HOMI_LOG');
    if (errors.length > 0) process.exitCode = 1;
  }
}
