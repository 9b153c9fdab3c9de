// ESLint (flat config) with typescript-eslint: errors for what is a bug, nothing for layout (Prettier owns that).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'vm/cache/', 'out/', 'docs/results/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: {
        project: ['./tsconfig.json', './vm/tsconfig.guest.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Bugs that need types: a Promise nobody awaits or catches, a Promise where a value is expected,
      // awaiting something that is not a Promise.
      '@typescript-eslint/no-floating-promises': [
        'error',
        // node:test's test() and describe() return Promises that the runner itself awaits.
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }] },
      ],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false, attributes: false } }],
      '@typescript-eslint/await-thenable': 'error',
      // Unused names are bugs unless marked as intended with a leading underscore.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', destructuredArrayIgnorePattern: '^_', ignoreRestSiblings: true }],
      // The fast paths index typed arrays with non-null assertions by design (noUncheckedIndexedAccess style).
      '@typescript-eslint/no-non-null-assertion': 'off',
      // Polling loops are written `for (;;)` / `while (true)`.
      'no-constant-condition': ['error', { checkLoops: false }],
      'no-empty': ['error', { allowEmptyCatch: true }],
      // Style, not bugs: left to review.
      'no-useless-assignment': 'off',
      'preserve-caught-error': 'off',
      'prefer-const': 'off',
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
  },
);
