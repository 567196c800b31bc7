// Configuration: defaults from the settings table, env over file, and one clear line per bad setting.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultGuardSettings } from '../src/admission/settings.js';
import { CONFIG_FILE_ENV, SETTINGS, SETTING_KEYS, loadConfig, type GuardConfig } from '../src/config.js';
import { contract } from '../src/contract.js';
import { tempDir } from './server/support.js';

const env = (values: Partial<Record<keyof GuardConfig, string>>): NodeJS.ProcessEnv =>
  Object.fromEntries(Object.entries(values).map(([key, value]) => [SETTINGS[key as keyof GuardConfig].env, value]));

/** What the four name templates must be, as the problems say it (written out here: the test states the contract). */
const NAME_TEMPLATE_RULE = 'must be a lowercase Kubernetes name containing {release} (e.g. "{release}-postgresql")';

const problemsOf = (result: ReturnType<typeof loadConfig>): string[] => (result.ok ? [] : result.problems);

t.test('with nothing set, every setting has its default', async (t) => {
  const result = loadConfig({});
  t.ok(result.ok);
  if (!result.ok) return;
  for (const key of SETTING_KEYS)
    t.same(result.config[key], SETTINGS[key].default, `${key} defaults to ${String(SETTINGS[key].default)}`);
  t.equal(result.config.port, contract.webhook.securePort);
  t.equal(result.config.healthPort, contract.webhook.healthPort);
  t.same(result.settings, defaultGuardSettings, 'the decisions get the default GuardSettings');
});

t.test('the documented settings exist with their defaults', async (t) => {
  const byEnv = Object.fromEntries(SETTING_KEYS.map((key) => [SETTINGS[key].env, SETTINGS[key].default]));
  t.match(byEnv, {
    DIFY_GUARD_PORT: 8443,
    DIFY_GUARD_HEALTH_PORT: 8080,
    DIFY_GUARD_TLS_CERT_FILE: '/etc/dify-guard/tls/tls.crt',
    DIFY_GUARD_TLS_KEY_FILE: '/etc/dify-guard/tls/tls.key',
    DIFY_GUARD_BODY_LIMIT_BYTES: 3145728,
    DIFY_GUARD_LOG_LEVEL: 'info',
    DIFY_GUARD_EVENTS_ENABLED: true,
    DIFY_GUARD_SHUTDOWN_TIMEOUT_SECONDS: 25,
    DIFY_GUARD_REDIS_PORT: 6379,
  });
  for (const name of [
    'POSTGRESQL_SECRET_TEMPLATE',
    'POSTGRESQL_PVC_TEMPLATE',
    'REDIS_HOST_TEMPLATE',
    'REDIS_SECRET_TEMPLATE',
    'REDIS_SECRET_KEY',
  ]) {
    t.ok(`DIFY_GUARD_${name}` in byEnv, `DIFY_GUARD_${name}`);
  }
  for (const key of SETTING_KEYS) t.ok(SETTINGS[key].description.length > 10, `${key} is described`);
});

t.test('env vars are read and typed', async (t) => {
  const result = loadConfig(
    env({
      port: '9443',
      healthPort: '9090',
      bindAddress: '::',
      logLevel: 'debug',
      eventsEnabled: 'FALSE',
      bodyLimitBytes: '2048',
      postgresqlSecretTemplate: '{release}-pg',
      postgresqlPvcTemplate: 'data-{release}-pg-0',
      redisPort: '6380',
      redisSecretKey: 'password',
    }),
  );
  t.ok(result.ok, problemsOf(result).join('\n'));
  if (!result.ok) return;
  t.match(result.config, {
    port: 9443,
    healthPort: 9090,
    bindAddress: '::',
    logLevel: 'debug',
    eventsEnabled: false,
    bodyLimitBytes: 2048,
  });
  t.match(result.settings, {
    postgresqlSecretTemplate: '{release}-pg',
    postgresqlPvcTemplate: 'data-{release}-pg-0',
    redisPort: 6380,
    redisSecretKey: 'password',
  });
  t.same(
    result.settings.injectCredentials,
    defaultGuardSettings.injectCredentials,
    "component lists stay the contract's",
  );
});

t.test('an empty variable counts as unset', async (t) => {
  const result = loadConfig(env({ logLevel: '', port: '' }));
  t.ok(result.ok);
  if (result.ok) t.match(result.config, { logLevel: 'info', port: 8443 });
});

t.test('a config file (YAML or JSON, camelCase keys), overridden by env', async (t) => {
  const dir = tempDir(t);
  const yamlFile = join(dir, 'config.yaml');
  writeFileSync(
    yamlFile,
    'logLevel: warn\nredisPort: 6390\neventsEnabled: false\npostgresqlPvcTemplate: "pg-{release}"\n',
  );
  const fromYaml = loadConfig({ [CONFIG_FILE_ENV]: yamlFile, ...env({ logLevel: 'error' }) });
  t.ok(fromYaml.ok, problemsOf(fromYaml).join('\n'));
  if (fromYaml.ok)
    t.match(fromYaml.config, {
      logLevel: 'error',
      redisPort: 6390,
      eventsEnabled: false,
      postgresqlPvcTemplate: 'pg-{release}',
    });

  const jsonFile = join(dir, 'config.json');
  writeFileSync(jsonFile, JSON.stringify({ shutdownTimeoutSeconds: 5, bindAddress: '127.0.0.1' }));
  const fromJson = loadConfig({ [CONFIG_FILE_ENV]: jsonFile });
  t.ok(fromJson.ok);
  if (fromJson.ok) t.match(fromJson.config, { shutdownTimeoutSeconds: 5, bindAddress: '127.0.0.1' });
});

t.test('every bad setting: one line naming the variable, what it must be, and what it got', async (t) => {
  const cases: [Partial<Record<keyof GuardConfig, string>>, string][] = [
    [{ port: 'abc' }, 'DIFY_GUARD_PORT: must be an integer 1-65535, got "abc"'],
    [{ port: '0' }, 'DIFY_GUARD_PORT: must be an integer 1-65535, got 0'],
    [{ port: '70000' }, 'DIFY_GUARD_PORT: must be an integer 1-65535, got 70000'],
    [{ port: '8443.5' }, 'DIFY_GUARD_PORT: must be an integer 1-65535, got "8443.5"'],
    [{ healthPort: '8443' }, 'DIFY_GUARD_HEALTH_PORT: must be an integer 1-65535, not the webhook port, got 8443'],
    [{ bindAddress: 'localhost' }, 'DIFY_GUARD_BIND_ADDRESS: must be an IPv4 or IPv6 address, got "localhost"'],
    [{ bodyLimitBytes: '10' }, 'DIFY_GUARD_BODY_LIMIT_BYTES: must be an integer 1024-67108864, got 10'],
    [
      { logLevel: 'verbose' },
      'DIFY_GUARD_LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent, got "verbose"',
    ],
    [
      { postgresqlSecretTemplate: 'dify-postgresql' },
      `DIFY_GUARD_POSTGRESQL_SECRET_TEMPLATE: ${NAME_TEMPLATE_RULE}, got "dify-postgresql"`,
    ],
    [
      { postgresqlPvcTemplate: 'Data_{release}' },
      `DIFY_GUARD_POSTGRESQL_PVC_TEMPLATE: ${NAME_TEMPLATE_RULE}, got "Data_{release}"`,
    ],
    [
      { redisHostTemplate: '{release} redis' },
      `DIFY_GUARD_REDIS_HOST_TEMPLATE: ${NAME_TEMPLATE_RULE}, got "{release} redis"`,
    ],
    [{ redisPort: '-1' }, 'DIFY_GUARD_REDIS_PORT: must be an integer 1-65535, got -1'],
    [
      { redisSecretTemplate: '{releases}' },
      `DIFY_GUARD_REDIS_SECRET_TEMPLATE: ${NAME_TEMPLATE_RULE}, got "{releases}"`,
    ],
    [
      { redisSecretKey: 'redis password' },
      'DIFY_GUARD_REDIS_SECRET_KEY: must be a Secret key (letters, digits, "-", "_", "."), got "redis password"',
    ],
    [{ eventsEnabled: 'yes' }, 'DIFY_GUARD_EVENTS_ENABLED: must be true or false, got "yes"'],
    [{ shutdownTimeoutSeconds: '0' }, 'DIFY_GUARD_SHUTDOWN_TIMEOUT_SECONDS: must be an integer 1-600, got 0'],
    [{ pvcResyncSeconds: '1' }, 'DIFY_GUARD_PVC_RESYNC_SECONDS: must be an integer 10-86400, got 1'],
    [{ tlsCertFile: ' ' }, 'DIFY_GUARD_TLS_CERT_FILE: must be a file path, got " "'],
    [
      { postgresqlAddressTemplate: '{release}-postgresql' },
      'DIFY_GUARD_POSTGRESQL_ADDRESS_TEMPLATE: must be host:port, ' +
        'where the host may contain {release} and {namespace} (e.g. "{release}-postgresql.{namespace}.svc:5432"), ' +
        'got "{release}-postgresql"',
    ],
    [
      { postgresqlVerifyTimeoutMs: '50' },
      'DIFY_GUARD_POSTGRESQL_VERIFY_TIMEOUT_MS: must be an integer 100-10000, got 50',
    ],
    [{ postgresqlVerifyRateLimit: '0' }, 'DIFY_GUARD_POSTGRESQL_VERIFY_RATE_LIMIT: must be an integer 1-60, got 0'],
  ];
  for (const [values, line] of cases) t.same(problemsOf(loadConfig(env(values))), [line], line);
});

t.test('several bad settings: one line each, all reported at once', async (t) => {
  const problems = problemsOf(loadConfig(env({ port: 'abc', logLevel: 'loud', redisPort: '99999' })));
  t.same(problems.sort(), [
    'DIFY_GUARD_LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent, got "loud"',
    'DIFY_GUARD_PORT: must be an integer 1-65535, got "abc"',
    'DIFY_GUARD_REDIS_PORT: must be an integer 1-65535, got 99999',
  ]);
});

t.test('config file problems name the file and the key', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'config.yaml');
  writeFileSync(file, 'port: "8443"\nlogLevl: debug\nredisPort: 6379\n');
  t.same(problemsOf(loadConfig({ [CONFIG_FILE_ENV]: file })).sort(), [
    `${CONFIG_FILE_ENV} ${file}: port: must be an integer 1-65535, got "8443"`,
    `${CONFIG_FILE_ENV} ${file}: unknown setting "logLevl" (known: ${SETTING_KEYS.join(', ')})`,
  ]);
  t.same(
    problemsOf(loadConfig({ [CONFIG_FILE_ENV]: file, ...env({ port: '8443' }) })),
    [`${CONFIG_FILE_ENV} ${file}: unknown setting "logLevl" (known: ${SETTING_KEYS.join(', ')})`],
    'a value overridden by env is not reported',
  );

  t.same(problemsOf(loadConfig({ [CONFIG_FILE_ENV]: join(dir, 'missing.yaml') })), [
    `${CONFIG_FILE_ENV}: cannot read ${join(dir, 'missing.yaml')} (ENOENT)`,
  ]);
  const broken = join(dir, 'broken.json');
  writeFileSync(broken, '{"port": 8443,');
  t.match(problemsOf(loadConfig({ [CONFIG_FILE_ENV]: broken })), [
    new RegExp(`^${CONFIG_FILE_ENV} ${broken}: not valid JSON or YAML`),
  ]);
  const list = join(dir, 'list.yaml');
  writeFileSync(list, '- port\n');
  t.same(problemsOf(loadConfig({ [CONFIG_FILE_ENV]: list })), [
    `${CONFIG_FILE_ENV} ${list}: must hold an object of settings, got a list`,
  ]);
});

t.test(
  'the PostgreSQL check: address template (host:port, [IPv6]:port, a fixed address for tests), timeout, limit',
  async (t) => {
    for (const address of [
      '{release}-postgresql.{namespace}.svc.cluster.local:5432',
      '127.0.0.1:15432',
      '[::1]:5432',
    ]) {
      const settings = {
        postgresqlAddressTemplate: address,
        postgresqlVerifyTimeoutMs: '500',
        postgresqlVerifyRateLimit: '10',
      };
      const result = loadConfig(env(settings));
      const config = {
        postgresqlAddressTemplate: address,
        postgresqlVerifyTimeoutMs: 500,
        postgresqlVerifyRateLimit: 10,
      };
      t.match(result, { ok: true, config }, address);
    }
  },
);

t.test('DIFY_GUARD_DIFY_IMAGES is a comma-separated list of repository paths', async (t) => {
  const loaded = loadConfig({ DIFY_GUARD_DIFY_IMAGES: ' langgenius/dify-api , mirror.corp/ai/dify-backend,' });
  t.ok(loaded.ok);
  if (loaded.ok) t.strictSame([...loaded.settings.difyImages], ['langgenius/dify-api', 'mirror.corp/ai/dify-backend']);
  const bad = loadConfig({ DIFY_GUARD_DIFY_IMAGES: 'LangGenius/Dify-API:1.0' });
  t.notOk(bad.ok);
  if (!bad.ok)
    t.match(bad.problems[0], /^DIFY_GUARD_DIFY_IMAGES: must be a comma-separated list of image repository paths/);
  const policy = loadConfig({ DIFY_GUARD_TEMPLATE_POLICY: 'block' });
  t.notOk(policy.ok);
  if (!policy.ok) t.match(policy.problems[0], /^DIFY_GUARD_TEMPLATE_POLICY: must be warn or deny, got "block"/);
});
