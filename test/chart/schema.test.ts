// The chart's conventions: values.schema.json rejects typos and wrong types before anything is
// applied, rendering fails with a clear message (that never echoes a secret) when a required or
// invalid value is given, and `helm lint --strict` is clean.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { chartDir, deepMerge, helm, requiredValues, template, testSecret, type Json } from '../../harness/helm.js';
import { withRequired } from './support.js';

async function rejected(
  t: Test,
  values: Json,
  pattern: RegExp,
  what: string,
  options: { release?: string } = {},
): Promise<string> {
  const r = await template(values, options);
  t.not(r.status, 0, `${what}: refused`);
  t.match(r.stderr, pattern, `${what}: says why`);
  return r.stderr;
}

t.test('typos are refused: unknown keys at any level', async (t) => {
  for (const [values, key] of [
    [{ postgressql: {} }, 'postgressql'],
    [{ api: { replicas: 2 } }, 'replicas'],
    [{ pluginDaemon: { redis: { authEnable: true } } }, 'authEnable'],
    [{ webhook: { tls: { mod: 'helm' } } }, 'mod'],
    [{ ingress: { hosts: ['a'] } }, 'hosts'],
    [{ postgresql: { auth: { passwd: 'x' } } }, 'passwd'],
    [{ migration: { ttlSecondsAfterFinish: 1 } }, 'ttlSecondsAfterFinish'],
  ] as const) {
    await rejected(t, withRequired(values as Json), new RegExp(`additional properties '${key}' not allowed`), key);
  }
});

t.test('wrong types and out-of-range values are refused', async (t) => {
  for (const [values, pattern] of [
    [{ api: { replicaCount: '2' } }, /\/api\/replicaCount.*got string, want integer/],
    [{ webhook: { timeoutSeconds: 31 } }, /\/webhook\/timeoutSeconds/],
    [{ webhook: { pods: { failurePolicy: 'fail' } } }, /\/webhook\/pods\/failurePolicy/],
    [{ webhook: { tls: { mode: 'selfsigned' } } }, /\/webhook\/tls\/mode/],
    [{ image: { tag: 1.12 } }, /\/image\/tag.*got number, want string/],
    [{ pluginDaemon: { redis: { authEnabled: 'yes' } } }, /\/pluginDaemon\/redis\/authEnabled.*want boolean/],
    [{ postgresql: { persistence: { size: 'lots' } } }, /\/postgresql\/persistence\/size/],
    [{ dify: { extraEnv: [{ value: 'x' }] } }, /\/dify\/extraEnv\/0.*name/],
    [{ storage: { persistence: { accessModes: ['ReadWriteEverywhere'] } } }, /\/storage\/persistence\/accessModes/],
    [{ vectorStore: { type: 'pg_vector' } }, /\/vectorStore\/type.*must be one of/],
    [{ networkPolicy: { enabled: 'yes' } }, /\/networkPolicy\/enabled.*want boolean/],
  ] as const) {
    await rejected(t, withRequired(values as Json), pattern, JSON.stringify(values));
  }
});

t.test('a number given as the password is refused by type, and the message does not show it', async (t) => {
  const stderr = await rejected(
    t,
    { postgresql: { auth: { password: 987654321 } }, secrets: { difySecretKey: testSecret() } },
    /\/postgresql\/auth\/password.*got number, want string/,
    'numeric password',
  );
  t.notOk(stderr.includes('987654321'));
});

t.test('required values: rendering fails with the clear message, never a random password', async (t) => {
  await rejected(
    t,
    { secrets: { difySecretKey: testSecret() } },
    new RegExp(
      'postgresql\\.auth\\.password is required: PostgreSQL keeps the password it was first initialised with in its PVC, ' +
        'so the chart never generates one at random',
    ),
    'no PostgreSQL password',
  );
  await rejected(
    t,
    { postgresql: { auth: { password: testSecret() } } },
    /secrets\.difySecretKey is required/,
    'no SECRET_KEY',
  );
  await rejected(t, {}, /is required/, 'neither');
});

t.test('secret values the components cannot use are refused without being echoed', async (t) => {
  const spaced = `${testSecret()} x`;
  const pg = await rejected(
    t,
    withRequired({ postgresql: { auth: { password: spaced } } }),
    /must not contain whitespace, quotes or backslashes: the plugin daemon builds an unquoted libpq DSN/,
    'PostgreSQL password with a space',
  );
  t.notOk(pg.includes(spaced));
  const redis = `${testSecret()}@/`;
  const r = await rejected(
    t,
    withRequired({ pluginDaemon: { redis: { authEnabled: true, password: redis } } }),
    /may contain only letters, digits and \. _ ~ - : Kubernetes expands \$\(REDIS_PASSWORD\) into CELERY_BROKER_URL without URL-encoding/,
    'Redis password not URL-safe',
  );
  t.notOk(r.includes(redis));
  await rejected(t, withRequired({ redis: { enabled: false } }), /set pluginDaemon\.redis\.host/, 'no Redis at all');
});

t.test('every bad value is reported at once: one error lists each message, in the order of the checks', async (t) => {
  const spaced = `${testSecret()} x`;
  const r = await template(
    deepMerge(
      { postgresql: { auth: { password: spaced } } },
      { redis: { enabled: false }, ingress: { enabled: true, tls: { enabled: true } } },
    ),
  );
  t.not(r.status, 0, 'refused');
  t.equal(r.stderr.match(/^Error:/gm)?.length, 1, 'one error');
  t.match(r.stderr, /values to fix \(4\):/, 'counts the problems');
  const messages = [
    'postgresql.auth.password must not contain whitespace, quotes or backslashes',
    'secrets.difySecretKey is required',
    'redis.enabled is false: set pluginDaemon.redis.host',
    'ingress.tls.enabled needs ingress.host',
  ];
  const at = messages.map((m) => r.stderr.indexOf(`\n- ${m}`));
  t.notOk(
    at.some((i) => i < 0),
    `every message, each on its own line: ${messages.filter((_, i) => at[i]! < 0).join('; ')}`,
  );
  t.same(
    [...at].sort((a, b) => a - b),
    at,
    'in the order dify.validateValues lists the checks',
  );
  t.notOk(r.stderr.includes(spaced), 'the password is not shown');
});

t.test('two bad values: each alone is refused with its own message, together both in one error', async (t) => {
  const timeout = {
    values: { webhook: { timeoutSeconds: 2, postgresql: { verifyTimeoutMs: 2000 } } },
    message: 'webhook.postgresql.verifyTimeoutMs (2000) must be below webhook.timeoutSeconds (2 s)',
  };
  const ca = {
    values: { webhook: { tls: { mode: 'existingSecret', existingSecret: 'my-tls' } } },
    message: 'webhook.caBundle is required with webhook.tls.mode=existingSecret',
  };
  for (const bad of [timeout, ca]) {
    const alone = await template(withRequired(bad.values as Json));
    t.not(alone.status, 0, `${bad.message}: refused alone`);
    t.match(alone.stderr, `values to fix (1):\n- ${bad.message}`, `${bad.message}: alone, its own message`);
  }
  const both = await template(deepMerge(withRequired(timeout.values as Json), ca.values as Json));
  t.not(both.status, 0, 'refused');
  t.equal(both.stderr.match(/^Error:/gm)?.length, 1, 'one error');
  t.match(both.stderr, 'values to fix (2):');
  t.match(both.stderr, `\n- ${timeout.message}`, 'the timeout');
  t.match(both.stderr, `\n- ${ca.message}`, 'the CA');
});

t.test('release names that would overflow a Kubernetes name are refused, not truncated', async (t) => {
  await rejected(t, requiredValues(), /use at most 40/, 'long release', { release: 'a'.repeat(41) });
  const ok = await template(requiredValues(), { release: 'a'.repeat(40) });
  t.equal(ok.status, 0, ok.stderr);
});

t.test('helm lint --strict is clean: bare (required values become INFO lines) and with the ci values', async (t) => {
  const files = readdirSync(join(chartDir, 'ci')).filter((f) => f.endsWith('-values.yaml'));
  t.ok(files.length >= 3, `every chart/ci values file: ${files.join(', ')}`);
  for (const file of files) {
    const r = await helm(['lint', chartDir, '--strict', '-f', join(chartDir, 'ci', file)]);
    t.equal(r.status, 0, `${file}: ${r.stdout}${r.stderr}`);
    t.notMatch(r.stdout, /\[(WARNING|ERROR)\]/, file);
  }
  const bare = await helm(['lint', chartDir, '--strict']);
  t.equal(bare.status, 0, bare.stdout + bare.stderr);
  t.notMatch(bare.stdout, /\[(WARNING|ERROR)\]/);
  t.match(
    bare.stderr,
    /\[INFO\] Fail: values to fix \(2\):\n- postgresql\.auth\.password is required/,
    'and still names the required value',
  );
});

t.test(
  'vectorStore.type accepts every VectorType value of Dify 1.11.x, hyphenated ones included, and ""',
  async (t) => {
    for (const type of [
      '',
      'pgvector',
      'pgvecto-rs',
      'elasticsearch-ja',
      'tidb_on_qdrant',
      'weaviate',
      'qdrant',
      'milvus',
    ]) {
      const r = await template(withRequired({ vectorStore: { type } }));
      t.equal(r.status, 0, `${JSON.stringify(type)}: ${r.stderr}`);
    }
  },
);
