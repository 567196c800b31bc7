// `npm test`: provides the real binaries (harness/binaries/versions.env), typechecks, lints and
// checks the formatting, runs the whole tap suite, scans everything the suite captured for test passwords,
// and ends with the plain line `N passed, N failed` (`, N skipped` when any are skipped).
// Extra arguments go to tap, e.g. `npm test -- test/admission`.
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  console.error(
    `dify-guard targets Node 24 LTS; this is Node ${process.versions.node}. ` +
      'Run `npm ci` first: npm scripts then use the Node 24 that it installs in node_modules/.bin.',
  );
  process.exit(1);
}

/** Runs a set-up script that prints a folder on its last line; when it fails, the run stops with `why`. */
function provide(script, why) {
  const run = spawnSync('bash', [script], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (run.status !== 0) {
    console.error(
      `npm test: ${why} could not be provided (see above); no test tier is skipped, so the run stops here.`,
    );
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  return run.stdout.trim().split('\n').pop();
}

const binDir = provide('harness/binaries/install.sh', 'the real binaries pinned in harness/binaries/versions.env');
// shellcheck (PyPI) and the real programs the chart configures (Debian's squid, nginx, redis-server,
// PostgreSQL 15): installed here on a fresh machine, or the run stops with the command that fixes it.
const toolsBin = provide('scripts/dev/prerequisites.sh', 'shellcheck or a real program the tests run');

// Everything the suite prints or logs is kept here and scanned for test passwords at the end
// (harness/secrets.ts, harness/leak-scan.ts); the folder is gitignored and kept for reading.
const captureDir = join(root, '.cache', 'test-capture');
rmSync(captureDir, { recursive: true, force: true });
mkdirSync(captureDir, { recursive: true });
const tapOutput = createWriteStream(join(captureDir, 'tap-output.txt'));

// The compiler in strict mode is part of the suite: a type error counts as one failed test.
console.log('# typecheck: tsc -p tsconfig.json --noEmit');
const typecheck = spawnSync('tsc', ['-p', 'tsconfig.json', '--noEmit'], { cwd: root, stdio: 'inherit' });
const typeFailures = typecheck.status === 0 ? 0 : 1;
console.log(typeFailures ? 'not ok - typecheck' : 'ok - typecheck');

// The linter (eslint.config.mjs: recommended rules and function-size limits) and the formatter
// (.prettierrc.json) are part of the suite too: each counts as one test.
const checks = [
  ['lint', 'eslint', ['--max-warnings', '0', '.']],
  ['format', 'prettier', ['--check', '--log-level', 'warn', '.']],
];
let styleFailures = 0;
for (const [name, command, commandArgs] of checks) {
  console.log(`# ${name}: ${command} ${commandArgs.join(' ')}`);
  const run = spawnSync(command, commandArgs, { cwd: root, stdio: 'inherit' });
  if (run.status !== 0) styleFailures += 1;
  console.log(run.status === 0 ? `ok - ${name}` : `not ok - ${name}`);
}

const args = ['--reporter=tap', ...process.argv.slice(2)];
const child = spawn('tap', args, {
  cwd: root,
  env: {
    ...process.env,
    PATH: `${toolsBin}:${process.env.PATH}`,
    DIFY_GUARD_BIN_DIR: binDir,
    DIFY_GUARD_TOOLS_BIN: toolsBin,
    DIFY_GUARD_CAPTURE_DIR: captureDir,
  },
  stdio: ['ignore', 'pipe', 'pipe'],
});
let tail = '';
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  tapOutput.write(chunk);
  tail = (tail + chunk.toString('utf8')).slice(-4096);
});
child.stderr.on('data', (chunk) => {
  process.stderr.write(chunk);
  tapOutput.write(chunk);
});
child.on('close', async (code, signal) => {
  await new Promise((resolve) => tapOutput.end(resolve));
  // Across the whole suite: no test password, nor its base64, in anything captured (one more test).
  const leakScan = spawnSync(
    process.execPath,
    ['--import', '@tapjs/typescript/import', 'harness/leak-scan.ts', captureDir],
    {
      cwd: root,
      stdio: 'inherit',
    },
  );
  const leakFailures = leakScan.status === 0 ? 0 : 1;

  // tap's closing summary: `# { total: 12, pass: 11, fail: 1, skip: 0 }` (absent keys are zero).
  const m = [...tail.matchAll(/^# \{ (total: \d+[^}]*)\}$/gm)].pop();
  const count = (key) => Number(m?.[1].match(new RegExp(`\\b${key}: (\\d+)`))?.[1] ?? 0);
  const total = count('total');
  const passed = count('pass');
  const skipped = count('skip') + count('todo');
  let failed = count('fail');
  if (!m || (code !== 0 && failed === 0)) failed = Math.max(1, total - passed - skipped);
  const extraFailures = typeFailures + styleFailures + leakFailures;
  console.log(
    `${passed + 2 + checks.length - extraFailures} passed, ${failed + extraFailures} failed${skipped ? `, ${skipped} skipped` : ''}`,
  );
  process.exit(extraFailures ? 1 : (code ?? (signal ? 1 : 0)));
});
