// The linter: the recommended rules of ESLint and typescript-eslint, prettier's formatting left to
// prettier, and limits on function size kept as strict as the best TypeScript projects keep them.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import tseslint from 'typescript-eslint';

const sizeLimits = {
  complexity: ['error', 10],
  'max-depth': ['error', 3],
  'max-statements': ['error', 20],
  'max-params': ['error', 5],
  'max-lines-per-function': ['error', { max: 60, skipBlankLines: true, skipComments: true }],
};

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', '.cache/', '.tap/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  prettier,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly', Buffer: 'readonly' } },
    rules: {
      // prettier wraps code at 120; what it cannot wrap (strings, comments) stops at 140.
      'max-len': ['error', { code: 140, ignoreUrls: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // The harness (harness/) is code the tests, the bench and the demo call, not a scenario: the same limits.
    files: ['src/**/*.ts', 'harness/**/*.ts', 'scripts/**/*.{ts,mjs}', 'bench/**/*.{ts,mjs}', 'certs/**/*.ts'],
    rules: sizeLimits,
  },
  {
    // A test reads as one scenario from top to bottom: its length is not limited, its branching is.
    files: ['test/**/*.ts'],
    rules: { complexity: ['error', 10], 'max-depth': ['error', 3] },
  },
);
