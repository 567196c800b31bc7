// The README's claim about a fresh machine: every program the two commands (`npm ci && npm run demo`,
// `npm ci && npm test`) run by name is in the README's list of prerequisites, or is provided by the
// set-up itself (node_modules/.bin, harness/binaries/install.sh, scripts/dev/prerequisites.sh).
import t from 'tap';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { repoRoot } from '../../harness/binaries.js';

const read = (path: string): string => readFileSync(join(repoRoot, path), 'utf8');

// What the TypeScript and JavaScript of the two commands spawn: the test suite, the harness (harness/) and
// scripts/ (scripts/image/ is `npm run image`, bench/ is `npm run bench`: neither is one of the two).
const SPAWNING_ROOTS = ['test', 'harness', 'scripts/test.mjs', 'scripts/demo.ts'];
const SPAWN_CALL = /\b(?:(?:spawn|spawnSync|execFile|execFileSync|run|runOk)\(\s*|command:\s*)'([^']+)'/g;
const BASH_INLINE = /\b(?:spawn|spawnSync|execFile|execFileSync)\(\s*'bash',\s*\[\s*'-c',\s*((?:'[^']*'\s*\+?\s*)+)/g;
const SCRIPT_PATH = /'([\w./-]*\.sh)'/g;

const BASH_WORDS = new Set([
  // keywords
  'if',
  'then',
  'elif',
  'else',
  'fi',
  'for',
  'while',
  'until',
  'do',
  'done',
  'case',
  'esac',
  'in',
  'function',
  'time',
  // builtins
  'echo',
  'printf',
  'read',
  'cd',
  'test',
  'true',
  'false',
  'source',
  'exec',
  'eval',
  'trap',
  'wait',
  'kill',
  'command',
  'type',
  'unset',
  'shopt',
  'getopts',
  'let',
  'local',
  'export',
  'readonly',
  'declare',
  'return',
  'exit',
  'set',
  'shift',
  'mapfile',
  'pushd',
  'popd',
  'umask',
  'ulimit',
  'hash',
  'break',
  'continue',
  'pwd',
]);

/** Bash code with its data blanked: quoted text, comments and here-documents go, `$( )` inside quotes stays as code. */
export function bashCode(script: string): string {
  const text = script.replace(/<<-?\s*'?(\w+)'?[^\n]*\n[\s\S]*?\n\s*\1\s*\n/g, '\n');
  let code = blankQuotesAndComments(text)
    .replace(/\[\[[^\n]*?\]\]/g, ' ')
    .replace(/\(\([^\n]*?\)\)/g, ' ');
  code = code.replace(/^(\s*)[\w.*$'-]+(?:\s*\|\s*[\w.*$'-]+)*\)/gm, '$1'); // case labels: `present)`, `a|b)`
  while (/\$\{[^{}\n]*\}/.test(code)) code = code.replace(/\$\{[^{}\n]*\}/g, '$V'); // ${...} expansions
  return code.replace(/(\w\+?=)\([^()\n]*\)/g, '$1A'); // array assignments
}

/** Where a scan of bash text is: the position, what it kept, and the quotes open there. */
interface BashScan {
  text: string;
  i: number;
  out: string;
  /** '"' while in double quotes, ')' inside a $( ) opened in them. */
  quotes: string[];
}

/** The text with quoted words as '' and comments gone; an escaped character goes with its backslash. */
function blankQuotesAndComments(text: string): string {
  const scan: BashScan = { text, i: 0, out: '', quotes: [] };
  for (; scan.i < text.length; scan.i++) {
    if (text[scan.i] === '\\') scan.i++;
    else if (scan.quotes.at(-1) === '"') stepInDoubleQuotes(scan);
    else stepInCode(scan);
  }
  return scan.out;
}

/** Inside double quotes only `$(` (code again, up to its `)`) and the closing quote count. */
function stepInDoubleQuotes(scan: BashScan): void {
  if (scan.text[scan.i] === '"') {
    scan.quotes.pop();
  } else if (scan.text.startsWith('$(', scan.i)) {
    scan.quotes.push(')');
    scan.out += '\n';
    scan.i++;
  }
}

function stepInCode(scan: BashScan): void {
  const { text, i } = scan;
  const c = text[i] ?? '';
  // A quoted word stays a word (`"$kubectl" get` runs no `get`), its content does not.
  if (c === "'") {
    scan.i = Math.max(i, text.indexOf("'", i + 1));
    scan.out += "''";
  } else if (c === '"') {
    scan.quotes.push('"');
    scan.out += "''";
  } else if (c === ')' && scan.quotes.at(-1) === ')') {
    scan.quotes.pop();
    scan.out += '\n';
  } else if (c === '#' && /(^|\s)$/.test(scan.out)) {
    const eol = text.indexOf('\n', i);
    scan.i = eol < 0 ? text.length : eol - 1;
  } else {
    scan.out += c;
  }
}

/** The names a bash text runs as commands (first word of each simple command; builtins and its functions left out). */
export function bashCommands(script: string): Set<string> {
  const functions = new Set([...script.matchAll(/^\s*([\w-]+)\s*\(\)\s*\{/gm)].map((m) => m[1] ?? ''));
  const found = new Set<string>();
  for (const segment of bashCode(script).split(/\n|;|&&|\|\||\||\$\(|`|\(|\)|\{|\}|\bthen\b|\bdo\b|\belse\b|!/)) {
    const words = segment
      .trim()
      .split(/\s+/)
      .filter((w) => !/^\w+(\[[^\]]*\])?\+?=/.test(w)); // assignments
    const word = words.find((w) => !['if', 'elif', 'while', 'until', 'time', 'exec', 'command'].includes(w)) ?? '';
    if (!/^[a-z][\w.+-]*$/i.test(word) || BASH_WORDS.has(word) || functions.has(word)) continue;
    found.add(word);
  }
  return found;
}

function filesUnder(path: string): string[] {
  const full = join(repoRoot, path);
  if (!statSync(full).isDirectory()) return [path];
  return readdirSync(full).flatMap((entry) => (entry === 'fixtures' ? [] : filesUnder(join(path, entry))));
}

/** Where the README lists what the machine must have: the list after the line "Both commands need". */
export function readmePrerequisites(readme: string): Set<string> {
  const start = readme.indexOf('Both commands need');
  const list = /\n\n((?:- [^\n]*\n(?: {2}[^\n]*\n)*)+)/.exec(readme.slice(start))?.[1] ?? '';
  return new Set([...list.matchAll(/`([a-z][\w.+-]*)`/gi)].map((m) => m[1] ?? ''));
}

/** What the set-up provides: node_modules/.bin, install.sh's binaries, prerequisites.sh's programs. */
function provided(): Map<string, string> {
  const sources = new Map<string, string>();
  for (const name of readdirSync(join(repoRoot, 'node_modules/.bin'))) sources.set(name, 'node_modules/.bin');
  const install = read('harness/binaries/install.sh');
  for (const name of /^names=\(([^)]*)\)/m.exec(install)?.[1]?.split(/\s+/) ?? []) sources.set(name, 'install.sh');
  const prerequisites = read('scripts/dev/prerequisites.sh');
  for (const m of prerequisites.matchAll(/\$tools\/bin\/([\w-]+)"/g)) sources.set(m[1] ?? '', 'prerequisites.sh');
  for (const m of prerequisites.matchAll(/-x (\/usr\/[\w/.-]+)/g))
    sources.set(basename(m[1] ?? ''), 'prerequisites.sh');
  return sources;
}

interface Spawned {
  command: string;
  where: string;
}

function spawnedCommands(): Spawned[] {
  const spawned: Spawned[] = [];
  const scripts = new Set<string>();
  const code = SPAWNING_ROOTS.flatMap(filesUnder).filter((f) => ['.ts', '.mjs'].includes(extname(f)));
  for (const file of code) {
    const text = read(file);
    spawned.push(...spawnedIn(file, text));
    for (const m of text.matchAll(SCRIPT_PATH)) scripts.add(m[1] ?? '');
  }
  for (const script of scripts) spawned.push(...runByScript(script));
  return spawned;
}

/** The programs a .ts or .mjs file spawns: directly, or in the text of a `bash -c`. */
function spawnedIn(file: string, text: string): Spawned[] {
  const spawned: Spawned[] = [];
  for (const m of text.matchAll(SPAWN_CALL)) spawned.push({ command: m[1] ?? '', where: file });
  for (const m of text.matchAll(BASH_INLINE)) {
    const inline = [...(m[1] ?? '').matchAll(/'([^']*)'/g)].map((s) => s[1]).join('');
    for (const command of bashCommands(inline)) spawned.push({ command, where: `${file} (bash -c)` });
  }
  return spawned;
}

/** The commands a script the code runs runs itself (a chart script is named by its base name). */
function runByScript(script: string): Spawned[] {
  const path = existsSync(join(repoRoot, script)) ? script : join('chart', basename(script));
  if (!existsSync(join(repoRoot, path))) return [];
  return [...bashCommands(read(path))].map((command) => ({ command, where: path }));
}

/** The uses of programs neither listed nor provided, as `name (where)`. */
function unlisted(spawned: Spawned[], listed: Set<string>, sources: Map<string, string>): string[] {
  return [
    ...new Set(
      spawned.filter((s) => !listed.has(s.command) && !sources.has(s.command)).map((s) => `${s.command} (${s.where})`),
    ),
  ];
}

t.test('the bash reader finds commands, not data, builtins or functions', async (t) => {
  const found = bashCommands(
    [
      '#!/usr/bin/env bash',
      '# a comment naming curl',
      'set -euo pipefail',
      'die() { printf "%s" "$*" >&2; exit 1; }',
      'out=$(mktemp -d) && openssl req -new "$x"',
      'command -v go >/dev/null || die "wget; curl are not here"',
      "trap 'rm -rf x' EXIT",
      'if [ -x /usr/bin/foo ]; then sed -n 1p f | grep -q x; fi',
      'cat <<EOF',
      'ls inside a heredoc',
      'EOF',
      'case "$1" in',
      '  --out) out=$2; shift 2 ;;',
      'esac',
      'x=1 flock 9',
      'exec 9>f',
      'python3 -m venv "$(dirname "$p")"',
    ].join('\n'),
  );
  t.same([...found].sort(), ['cat', 'dirname', 'flock', 'grep', 'mktemp', 'openssl', 'python3', 'sed']);
});

t.test('the README lists the prerequisites it promises', async (t) => {
  const listed = readmePrerequisites(read('README.md'));
  for (const name of ['npm', 'go', 'openssl', 'python3', 'apt-get', 'bash'])
    t.ok(listed.has(name), `README lists ${name}`);
});

t.test('every program the two commands run by name is listed in the README or provided by the set-up', async (t) => {
  const listed = readmePrerequisites(read('README.md'));
  const sources = provided();
  for (const name of ['tsc', 'tap', 'node', 'kube-apiserver', 'helm', 'shellcheck', 'squid']) {
    t.ok(sources.has(name), `${name} is provided`);
  }
  const spawned = spawnedCommands();
  t.ok(spawned.length > 20, `${spawned.length} command uses found`);
  for (const name of ['bash', 'npm', 'openssl', 'go', 'tsc', 'python3', 'apt-get']) {
    t.ok(
      spawned.some((s) => s.command === name),
      `${name} is among them (the reader sees what the scripts run)`,
    );
  }
  t.same(unlisted(spawned, listed, sources), [], 'nothing a fresh machine may lack');
  const withoutOpenssl = new Set([...listed].filter((name) => name !== 'openssl'));
  const reported = unlisted(spawned, withoutOpenssl, sources);
  t.ok(reported.includes('openssl (harness/controlplane/pki.ts)'), 'a program left out of the list is reported');
});

t.test('case labels are patterns, not commands; the commands after them are', async (t) => {
  t.same([...bashCommands('case $x in\n  present) ;;\n  a|b) rm -f y ;;\n  *) grep z ;;\nesac\n')].sort(), [
    'grep',
    'rm',
  ]);
});
