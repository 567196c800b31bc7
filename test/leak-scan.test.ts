// The end-of-suite password scan (harness/leak-scan.ts) must find a test password however it
// was written out, and say where without showing it.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixturePasswords, needlesFor, scan } from '../harness/leak-scan.js';
import { testSecret } from '../harness/secrets.js';

const fixtures = fixturePasswords(fileURLToPath(new URL('./fixtures', import.meta.url)));
const needles = needlesFor(fixtures);

/** The kinds found in one captured file; the scan's result never holds the planted value. */
function scanOne(t: Test, content: string, planted?: string): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'leak-scan-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'captured.log'), content);
  const result = scan(dir, needles);
  if (planted) t.notOk(JSON.stringify(result).includes(planted), 'the result does not carry the value');
  return result.findings.map((f) => f.kind);
}

t.test('the fixtures give their literal, broker URL and Secret passwords', async (t) => {
  t.ok(fixtures.length >= 3, `${fixtures.length} fixture passwords`);
  t.notOk(
    fixtures.some((p) => p.startsWith('$(')),
    'a $(REDIS_PASSWORD) reference is not a password',
  );
});

t.test('a clean log has no finding', async (t) => {
  t.same(scanOne(t, '{"level":30,"msg":"denied","reason":"PasswordChangeUnderPvc"}\n'), []);
});

t.test('a test password in clear is found', async (t) => {
  const secret = testSecret();
  t.same(scanOne(t, `connecting with ${secret}\n`, secret), ['test password']);
});

for (const prefix of ['', 'x', 'xy']) {
  t.test(`its base64 is found at byte alignment ${prefix.length}, alone or inside a larger encoded text`, async (t) => {
    const encoded = Buffer.from(`${prefix}${testSecret()}`, 'utf8').toString('base64');
    t.ok(scanOne(t, `"data":{"password":"${encoded}"}`).some((k) => k.startsWith('base64 of a test password')));
    const embedded = Buffer.from(
      JSON.stringify({ env: [{ name: 'DB_PASSWORD', value: `${prefix}${testSecret()}` }] }),
      'utf8',
    ).toString('base64');
    t.ok(scanOne(t, embedded).some((k) => k.startsWith('base64 of a test password')));
  });
}

t.test('a fixture password and its base64 are found', async (t) => {
  const [first] = fixtures as [string];
  t.same(scanOne(t, `value=${first}`, first), ['fixture password']);
  t.same(scanOne(t, Buffer.from(first, 'utf8').toString('base64')), ['base64 of a fixture password']);
});
