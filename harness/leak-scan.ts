// The end-of-suite password scan: `npm test` keeps what the whole suite captured (tap's output,
// every process log, the API servers' audit logs, command output) and this looks for any test
// password in it, in clear or base64. Findings name the file and the kind of password, never the value.
//   node --import @tapjs/typescript/import harness/leak-scan.ts <capture-dir>
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SECRET_KEYS, contract } from '../src/contract.js';
import { TEST_SECRET_MARKER } from './secrets.js';

export interface Needle {
  kind: string;
  text: string;
}
export interface Finding {
  file: string;
  kind: string;
}

/**
 * The parts of base64 that are the same wherever the marker sits: for each of the three byte
 * alignments, the characters whose six bits all come from the marker.
 */
export function markerNeedles(marker: string = TEST_SECRET_MARKER): Needle[] {
  const bytes = Buffer.from(marker, 'utf8');
  const needles: Needle[] = [{ kind: 'test password', text: marker }];
  for (let align = 0; align < 3; align += 1) {
    const encoded = Buffer.concat([Buffer.alloc(align), bytes, Buffer.alloc(3)]).toString('base64');
    const start = Math.ceil((align * 8) / 6);
    const end = Math.floor(((align + bytes.length) * 8) / 6);
    needles.push({ kind: `base64 of a test password (alignment ${align})`, text: encoded.slice(start, end) });
  }
  return needles;
}

const CREDENTIALS = contract.credentialSettings;
const PASSWORD_ENV = new Set<string>([...CREDENTIALS.postgresqlPasswords, ...CREDENTIALS.redisPasswords]);
const URL_ENV = new Set<string>(CREDENTIALS.redisUrls);
const PASSWORD_KEYS = new Set<string>([SECRET_KEYS.postgresPassword, SECRET_KEYS.password, SECRET_KEYS.redisPassword]);

/** The password of a broker URL, unless it is a $(VAR) reference or the value is no URL. */
function urlPassword(value: string): string | undefined {
  try {
    const p = decodeURIComponent(new URL(value).password);
    return p && !p.startsWith('$(') ? p : undefined;
  } catch {
    return undefined; // not a URL
  }
}

/** The passwords of one env entry ({ name, value }) of the fixtures. */
function envPasswords(o: Record<string, unknown>): string[] {
  if (typeof o.name !== 'string' || typeof o.value !== 'string' || o.value === '') return [];
  const fromUrl = URL_ENV.has(o.name) ? urlPassword(o.value) : undefined;
  return [...(PASSWORD_ENV.has(o.name) ? [o.value] : []), ...(fromUrl ? [fromUrl] : [])];
}

/** The password keys' values of a Secret's data (base64) and stringData. */
function secretPasswords(o: Record<string, unknown>): string[] {
  const found: string[] = [];
  for (const [field, decode] of [
    ['data', true],
    ['stringData', false],
  ] as const) {
    const map = o[field];
    if (typeof map !== 'object' || map === null || Array.isArray(map)) continue;
    for (const [key, value] of Object.entries(map as Record<string, unknown>)) {
      if (!PASSWORD_KEYS.has(key) || typeof value !== 'string' || value === '') continue;
      found.push(decode ? Buffer.from(value, 'base64').toString('utf8') : value);
    }
  }
  return found;
}

/** The fixed passwords of test/fixtures: literal password env values, broker URL passwords, Secret password keys. */
export function fixturePasswords(fixturesDir: string): string[] {
  const found = new Set<string>();
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) {
      node.forEach(visit);
      return;
    }
    if (typeof node !== 'object' || node === null) return;
    const o = node as Record<string, unknown>;
    for (const password of [...envPasswords(o), ...secretPasswords(o)]) found.add(password);
    Object.values(o).forEach(visit);
  };
  for (const name of readdirSync(fixturesDir)) {
    if (name.endsWith('.json')) visit(JSON.parse(readFileSync(join(fixturesDir, name), 'utf8')));
  }
  return [...found];
}

export function needlesFor(fixtures: string[]): Needle[] {
  return [
    ...markerNeedles(),
    ...fixtures.flatMap((p) => [
      { kind: 'fixture password', text: p },
      { kind: 'base64 of a fixture password', text: Buffer.from(p, 'utf8').toString('base64') },
    ]),
  ];
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    return e.isDirectory() ? filesUnder(path) : e.isFile() ? [path] : [];
  });
}

export interface ScanResult {
  files: number;
  bytes: number;
  findings: Finding[];
}

export function scan(dir: string, needles: Needle[]): ScanResult {
  const findings: Finding[] = [];
  let bytes = 0;
  const files = filesUnder(dir);
  for (const file of files) {
    const text = readFileSync(file, 'latin1');
    bytes += statSync(file).size;
    const kinds = new Set(needles.filter((n) => text.includes(n.text)).map((n) => n.kind));
    for (const kind of kinds) findings.push({ file: relative(dir, file), kind });
  }
  return { files: files.length, bytes, findings };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: leak-scan.ts <capture-dir>');
    process.exit(2);
  }
  const fixturesDir = fileURLToPath(new URL('../test/fixtures', import.meta.url));
  const result = scan(dir, needlesFor(fixturePasswords(fixturesDir)));
  const what = `${result.files} files, ${(result.bytes / 1048576).toFixed(1)} MiB of captured output`;
  if (result.findings.length === 0) {
    console.log(`ok - no test password, nor its base64, in ${what}`);
  } else {
    console.log(`not ok - test passwords found in ${what}:`);
    for (const f of result.findings) console.log(`  ${f.file}: ${f.kind}`);
  }
  process.exit(result.findings.length === 0 ? 0 : 1);
}
