// Every reference to a repository file in code, tests, the chart and the documents points at a file
// that exists, and every `#anchor` at a heading of that file; nothing cites notes kept outside the
// repository (docs/README.md lists the documents that replaced them).
import t from 'tap';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, extname, join, relative, resolve } from 'node:path';
import { repoRoot } from '../../harness/binaries.js';

const SCANNED = [
  'src',
  'test',
  'harness',
  'chart',
  'scripts',
  'bench',
  'docs',
  'README.md',
  'SECURITY.md',
  'BENCHMARKS.md',
];
const TEXT_EXTENSIONS = new Set([
  '.ts',
  '.mjs',
  '.js',
  '.md',
  '.sh',
  '.yaml',
  '.yml',
  '.tpl',
  '.txt',
  '.json',
  '.env',
  '.conf',
]);
// Run output, not prose: the bench's recorded runs.
const SKIPPED_DIRS = new Set(['node_modules', '.cache', 'dist', 'results']);

// A repository path in any text: starts at a top folder, not inside a longer path or word
// (`dist/src/x.js`, `charts/dify`), ends with a file extension or a '/'; an optional #anchor.
const PATH_MENTION =
  /(?<![\w./$-])((?:docs|src|test|harness|chart|scripts|bench)\/[\w./-]*(?:\.[a-z]{1,4}\b|\/(?![\w.-])))(#[\w-]+)?/g;
// A markdown link's target: [text](target), resolved from the linking file's folder.
const MARKDOWN_LINK = /\]\(([^)\s]+)\)/g;
// Notes that live outside the repository; written as patterns so this file does not match itself.
const OUTSIDE_NOTES = /\bDESIGN\.md\b|\bthe\s+brief\b|\.\.\/shared\b/i;

export interface Problem {
  line: number;
  text: string;
  problem: string;
}

/** GitHub's heading anchor: lowercase, punctuation dropped, spaces to '-'; repeats get -1, -2, ... */
export function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    const heading = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!heading) continue;
    const slug = (heading[1] ?? '')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/ /g, '-');
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return anchors;
}

/** Why `target#anchor` (a path from the repository root) does not resolve, or undefined when it does. */
function unresolved(root: string, target: string, anchor: string | undefined): string | undefined {
  const path = join(root, target);
  if (!path.startsWith(root) || !existsSync(path)) return `${target} does not exist`;
  if (anchor === undefined || anchor === '') return undefined;
  if (extname(target) !== '.md' || statSync(path).isDirectory())
    return `${target}#${anchor}: anchors are checked on markdown files only`;
  return anchorsOf(readFileSync(path, 'utf8')).has(anchor)
    ? undefined
    : `${target}#${anchor}: no such heading in ${target}`;
}

/** The dangling references and outside notes in one file's text; `file` is its path from `root`. */
export function problemsIn(root: string, file: string, text: string): Problem[] {
  return text
    .split('\n')
    .flatMap((line, index) =>
      lineProblems(root, file, line).map((problem) => ({ line: index + 1, text: line.trim(), problem })),
    );
}

/** What is wrong with one line: outside notes, paths that do not resolve, and (in Markdown) dangling links. */
function lineProblems(root: string, file: string, line: string): string[] {
  const problems: string[] = [];
  if (OUTSIDE_NOTES.test(line)) problems.push('cites notes kept outside the repository: cite docs/ instead');
  for (const m of line.matchAll(PATH_MENTION)) problems.push(unresolved(root, m[1] ?? '', m[2]?.slice(1)) ?? '');
  if (extname(file) === '.md') {
    for (const m of line.matchAll(MARKDOWN_LINK)) problems.push(markdownLinkProblem(root, file, m[1] ?? '') ?? '');
  }
  return problems.filter((problem) => problem !== '');
}

function markdownLinkProblem(root: string, file: string, link: string): string | undefined {
  if (/^[a-z][a-z+.-]*:/i.test(link)) return undefined; // https:, mailto:
  const [target = '', anchor] = link.split('#');
  const fromRoot = target === '' ? file : relative(root, resolve(root, dirname(file), target));
  return unresolved(root, fromRoot, anchor);
}

function scannedFiles(root: string): string[] {
  const files: string[] = [];
  const walk = (path: string): void => {
    const full = join(root, path);
    if (!existsSync(full)) return;
    if (statSync(full).isDirectory()) {
      for (const entry of readdirSync(full)) if (!SKIPPED_DIRS.has(entry)) walk(join(path, entry));
    } else if (TEXT_EXTENSIONS.has(extname(path))) {
      files.push(path);
    }
  };
  for (const top of SCANNED) walk(top);
  return files.sort();
}

t.test('the checker itself: dangling references, wrong anchors and outside notes are found', async (t) => {
  // Built from parts, so that the scan of this very file does not see them.
  const docs = 'docs/';
  const cases: [string, string, string][] = [
    ['a missing file', `// see ${docs}no-such-file.md`, 'does not exist'],
    ['a missing anchor', `// see ${docs}rules.md#no-such-section`, 'no such heading'],
    ['a missing source file', `// as in ${'src/'}admission/nothing-here.ts`, 'does not exist'],
    ['a markdown link to a missing file', `[x](${'../'}MISSING.md)`, 'does not exist'],
    ['a markdown link to a missing anchor', `[x](rules.md#${'nope'})`, 'no such heading'],
    ['notes outside the repository', `// the rules of ${'DESIGN'}.md`, 'outside the repository'],
    ['a path outside the repository', `// see ${'../'}shared/x`, 'outside the repository'],
  ];
  for (const [name, text, expected] of cases) {
    const found = problemsIn(repoRoot, name.includes('markdown') ? 'docs/README.md' : 'src/main.ts', text);
    t.equal(found.length, 1, `${name}: one problem`);
    t.match(found[0]?.problem ?? '', expected, name);
  }
  const fine = [
    `// see ${docs}rules.md#pod-rules and ${docs}dify-facts.md`,
    '[rules](rules.md#postgresql-secret-rules) and [security](../SECURITY.md) and [web](https://example.org/x.md)',
    '// dist/src/main.js, charts/dify/Chart.yaml and api/docker/entrypoint.sh are not repository paths',
    '// harness/leak-scan.ts and chart/templates/ exist',
  ];
  for (const text of fine) t.same(problemsIn(repoRoot, 'docs/README.md', text), [], `no problem in: ${text}`);
});

t.test('GitHub anchors: lowercase, punctuation dropped, spaces to hyphens, repeats numbered', async (t) => {
  const markdown = '# dify-guard: rules\n## What a default install gives\n## `DB_PASSWORD` & co.\n## Notes\n## Notes\n';
  const anchors = anchorsOf(`${markdown}\`\`\`\n# not a heading\n\`\`\`\n`);
  t.same([...anchors], ['dify-guard-rules', 'what-a-default-install-gives', 'db_password--co', 'notes', 'notes-1']);
});

t.test('docs/rules.md has the sections that code and documents cite', async (t) => {
  const anchors = anchorsOf(readFileSync(join(repoRoot, 'docs', 'rules.md'), 'utf8'));
  const cited = [
    'naming-contract',
    'what-a-default-install-gives',
    'pod-rules',
    'pod-template-rules',
    'postgresql-secret-rules',
    'audit-trail',
    'scope-and-safety',
  ];
  for (const anchor of cited) t.ok(anchors.has(anchor), `#${anchor}`);
});

t.test('every reference in the repository resolves, and none points outside it', async (t) => {
  const files = scannedFiles(repoRoot);
  t.ok(files.length > 100, `${files.length} files scanned`);
  const texts = files.map((file) => ({ file, text: readFileSync(join(repoRoot, file), 'utf8') }));
  const mentions = texts.reduce((sum, { text }) => sum + [...text.matchAll(PATH_MENTION)].length, 0);
  t.ok(mentions > 100, `${mentions} repository paths checked`);
  const problems = texts.flatMap(({ file, text }) =>
    problemsIn(repoRoot, file, text).map((p) => `${file}:${p.line}: ${p.problem}\n    ${p.text}`),
  );
  t.same(problems, [], 'no dangling reference');
});
