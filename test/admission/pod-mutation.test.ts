// The pod rules (docs/rules.md#pod-rules), row by row, plus the details: order, literals, init containers, sidecars, other charts.
import t from 'tap';
import { ENV, LABELS, SECRET_KEYS, contract } from '../../src/contract.js';
import {
  mutatePod,
  rewriteBrokerUrl,
  brokerUrlHasPassword,
  REDIS_PASSWORD_REFERENCE,
} from '../../src/admission/pod-mutation.js';
import { MAX_WARNING_LENGTH } from '../../src/admission/messages.js';
import { defaultGuardSettings, releaseNames } from '../../src/admission/settings.js';
import type { JsonObject } from '../../src/admission/types.js';
import {
  asComponent,
  containerOf,
  entriesNamed,
  envOf,
  fixtureNames,
  indexOfName,
  labelsOf,
  loadObject,
  loadReview,
  mutateAndApply,
  secretRef,
  sensitiveStringsOf,
  setEnv,
  type EnvEntry,
} from '../../harness/fixtures.js';

const settings = defaultGuardSettings;
const C = contract.components;
const RELEASE = labelsOf(loadObject('pod-worker'))[LABELS.instance] ?? '';
const names = releaseNames(settings, RELEASE);
const dbRef = secretRef(names.postgresqlSecret, SECRET_KEYS.postgresPassword);
const redisRef = secretRef(names.redisSecret, settings.redisSecretKey);
const podFixtures = fixtureNames().filter((n) => n.startsWith('pod-'));
const compliantFixtures = [
  'pod-api',
  'pod-worker',
  'pod-beat',
  'pod-plugin-daemon',
  'pod-db-migration',
  'pod-web',
  'pod-non-dify',
];

/** The worker fixture's pod with one container whose env is `env` (Redis auth off unless env says so). */
function workerPod(env: EnvEntry[] | undefined, component: string = C.worker): JsonObject {
  const pod = asComponent(loadObject('pod-worker'), component);
  setEnv(pod, 'worker', env);
  return pod;
}

const literalBroker = (password: string): string => `redis://:${password}@${names.redisHost}:${settings.redisPort}/1`;
const referencedBroker = `redis://:${REDIS_PASSWORD_REFERENCE}@${names.redisHost}:${settings.redisPort}/1`;

/** An env that breaks every rule at once. */
const badEnv = (): EnvEntry[] => [
  { name: 'MODE', value: 'worker' },
  { name: ENV.migrationEnabled, valueFrom: { configMapKeyRef: { name: 'dify-config', key: 'migration' } } },
  { name: ENV.dbPassword, value: 'Sneaky-Literal-1a2b3c' },
  { name: 'DB_DATABASE', value: 'dify' },
  { name: ENV.celeryBrokerUrl, value: literalBroker('Sneaky-Redis-4d5e6f') },
  { name: 'LOG_LEVEL', value: 'INFO' },
];

t.test('compliant fixtures (as the chart renders them) and foreign pods get no patch and no warning', async (t) => {
  for (const name of compliantFixtures) {
    const result = mutatePod(loadObject(name), settings);
    t.strictSame(result, { patch: [], warnings: [], changes: [] }, name);
  }
});

t.test('the Pods table, row by row', async (t) => {
  const forced = contract.podRules.forceMigrationDisabled;
  const injected = contract.podRules.injectCredentials;
  t.same([...settings.forceMigrationDisabled], forced);
  t.same([...settings.injectCredentials], injected);
  for (const component of Object.values(C)) {
    const { result, after } = mutateAndApply(workerPod(badEnv(), component), settings);
    const env = envOf(after, 'worker');
    const before = badEnv();
    if (!forced.includes(component) && !injected.includes(component)) {
      t.strictSame(result.patch, [], `${component}: untouched`);
      t.strictSame(env, before, `${component}: env as it was`);
      continue;
    }
    const migration = entriesNamed(env, ENV.migrationEnabled);
    if (forced.includes(component)) {
      t.strictSame(
        migration,
        [{ name: ENV.migrationEnabled, value: 'false' }],
        `${component}: MIGRATION_ENABLED forced, valueFrom dropped`,
      );
    } else {
      t.strictSame(migration, entriesNamed(before, ENV.migrationEnabled), `${component}: MIGRATION_ENABLED untouched`);
    }
    t.ok(injected.includes(component), `${component} injects credentials`);
    t.strictSame(
      entriesNamed(env, ENV.dbPassword),
      [{ name: ENV.dbPassword, valueFrom: dbRef }],
      `${component}: DB_PASSWORD referenced`,
    );
    t.strictSame(
      entriesNamed(env, ENV.redisPassword),
      [{ name: ENV.redisPassword, valueFrom: redisRef }],
      `${component}: REDIS_PASSWORD referenced`,
    );
    t.equal(entriesNamed(env, ENV.celeryBrokerUrl)[0]?.value, referencedBroker, `${component}: broker URL rewritten`);
    t.ok(
      indexOfName(env, ENV.redisPassword) < indexOfName(env, ENV.celeryBrokerUrl),
      `${component}: REDIS_PASSWORD first`,
    );
    t.strictSame(
      entriesNamed(env, ENV.redisHost),
      [{ name: ENV.redisHost, value: names.redisHost }],
      `${component}: REDIS_HOST added`,
    );
    t.strictSame(
      entriesNamed(env, ENV.redisPort),
      [{ name: ENV.redisPort, value: String(settings.redisPort) }],
      `${component}: REDIS_PORT added`,
    );
    t.strictSame(
      entriesNamed(env, 'DB_DATABASE'),
      [{ name: 'DB_DATABASE', value: 'dify' }],
      `${component}: DB_DATABASE untouched`,
    );
  }
});

t.test('MIGRATION_ENABLED', async (t) => {
  t.test('a literal "true" is replaced in place', async (t) => {
    const env = [
      { name: 'A', value: '1' },
      { name: ENV.migrationEnabled, value: 'true' },
      { name: 'B', value: '2' },
    ];
    const { result, after } = mutateAndApply(workerPod(env, C.api), settings);
    t.strictSame(envOf(after, 'worker').slice(0, 3), [env[0], { name: ENV.migrationEnabled, value: 'false' }, env[2]]);
    t.ok(result.patch.some((op) => op.op === 'replace' && op.path.endsWith('/env/1/value') && op.value === 'false'));
    t.ok(result.warnings.some((w) => w.includes(ENV.migrationEnabled)));
  });
  t.test('a valueFrom is dropped', async (t) => {
    const env = [{ name: ENV.migrationEnabled, valueFrom: { fieldRef: { fieldPath: "metadata.labels['migrate']" } } }];
    const { after } = mutateAndApply(workerPod(env, C.beat), settings);
    t.strictSame(envOf(after, 'worker')[0], { name: ENV.migrationEnabled, value: 'false' });
  });
  t.test('absent: added, so an envFrom ConfigMap cannot turn it on', async (t) => {
    const pod = workerPod([{ name: 'MODE', value: 'worker' }], C.pluginDaemon);
    const envFrom = [{ configMapRef: { name: 'dify-shared-env' } }];
    containerOf(pod, 'worker').envFrom = envFrom;
    const { after } = mutateAndApply(pod, settings);
    t.strictSame(entriesNamed(envOf(after, 'worker'), ENV.migrationEnabled), [
      { name: ENV.migrationEnabled, value: 'false' },
    ]);
    t.strictSame(containerOf(after, 'worker').envFrom, envFrom, 'envFrom left alone');
  });
  t.test('duplicates: every entry forced', async (t) => {
    const env = [
      { name: ENV.migrationEnabled, value: 'false' },
      { name: 'X', value: 'x' },
      { name: ENV.migrationEnabled, value: 'true' },
    ];
    const { after } = mutateAndApply(workerPod(env, C.worker), settings);
    t.strictSame(
      entriesNamed(envOf(after, 'worker'), ENV.migrationEnabled).map((e) => e.value),
      ['false', 'false'],
    );
  });
  t.test('db-migration pod: neither forced nor added', async (t) => {
    const pod = loadObject('pod-db-migration');
    setEnv(pod, 'db-migration', [...envOf(pod, 'db-migration'), { name: ENV.migrationEnabled, value: 'true' }]);
    const { result, after } = mutateAndApply(pod, settings);
    t.strictSame(result.patch, []);
    t.equal(entriesNamed(envOf(after, 'db-migration'), ENV.migrationEnabled)[0]?.value, 'true');
    t.strictSame(entriesNamed(envOf(after, 'wait-for-postgresql', 'initContainers'), ENV.migrationEnabled), []);
  });
});

t.test('DB_PASSWORD', async (t) => {
  const cases: { name: string; entry: EnvEntry; fix: string }[] = [
    { name: 'literal', entry: { name: ENV.dbPassword, value: 'Literal-In-Test-77aa' }, fix: 'literal' },
    { name: 'empty literal', entry: { name: ENV.dbPassword, value: '' }, fix: 'literal' },
    {
      name: 'another Secret',
      entry: { name: ENV.dbPassword, valueFrom: secretRef('my-own-db', SECRET_KEYS.postgresPassword) },
      fix: 'wrong ref',
    },
    {
      name: 'another key',
      entry: { name: ENV.dbPassword, valueFrom: secretRef(names.postgresqlSecret, SECRET_KEYS.password) },
      fix: 'wrong ref',
    },
    {
      name: 'optional ref',
      entry: { name: ENV.dbPassword, valueFrom: secretRef(names.postgresqlSecret, SECRET_KEYS.postgresPassword, true) },
      fix: 'wrong ref',
    },
    {
      name: 'ConfigMap ref',
      entry: { name: ENV.dbPassword, valueFrom: { configMapKeyRef: { name: 'db', key: 'password' } } },
      fix: 'wrong ref',
    },
    { name: 'absent', entry: { name: 'OTHER', value: 'x' }, fix: 'added' },
  ];
  for (const c of cases) {
    const env = [{ name: 'FIRST', value: '1' }, c.entry, { name: 'LAST', value: '2' }];
    const { result, after } = mutateAndApply(workerPod(env, C.api), settings);
    const out = envOf(after, 'worker');
    t.strictSame(
      entriesNamed(out, ENV.dbPassword),
      [{ name: ENV.dbPassword, valueFrom: dbRef }],
      `${c.name}: referenced`,
    );
    if (c.fix === 'added')
      t.equal(indexOfName(out, ENV.dbPassword) > indexOfName(out, 'LAST'), true, `${c.name}: appended`);
    else t.equal(indexOfName(out, ENV.dbPassword), 1, `${c.name}: replaced at the same index`);
    const warning = result.warnings.find((w) => w.includes(ENV.dbPassword));
    t.match(warning, new RegExp(c.fix), `${c.name}: warning says ${c.fix}`);
    t.match(warning, names.postgresqlSecret, `${c.name}: warning names the Secret`);
    if (c.entry.value) t.notOk(JSON.stringify(result).includes(c.entry.value), `${c.name}: literal never echoed`);
  }
  t.test('the right reference is left as it is', async (t) => {
    const env = [
      { name: ENV.dbPassword, valueFrom: secretRef(names.postgresqlSecret, SECRET_KEYS.postgresPassword, false) },
    ];
    const { result } = mutateAndApply(workerPod(env, C.api), settings);
    t.notOk(
      result.patch.some((op) => op.path.includes('/env/0')),
      'no operation on that entry',
    );
    t.notOk(result.warnings.some((w) => w.includes(ENV.dbPassword)));
  });
  t.test('DB_DATABASE of the plugin daemon (dify_plugin) is never touched', async (t) => {
    const pod = loadObject('pod-plugin-daemon');
    const database = entriesNamed(envOf(pod, 'plugin-daemon'), 'DB_DATABASE');
    setEnv(
      pod,
      'plugin-daemon',
      envOf(pod, 'plugin-daemon').map((e) => (e.name === ENV.dbPassword ? { name: e.name, value: 'x-literal-x' } : e)),
    );
    const { result, after } = mutateAndApply(pod, settings);
    t.equal(result.patch.length > 0, true);
    t.strictSame(entriesNamed(envOf(after, 'plugin-daemon'), 'DB_DATABASE'), database);
    t.notOk(result.patch.some((op) => JSON.stringify(op).includes('DB_DATABASE')));
  });
});

t.test('REDIS_PASSWORD', async (t) => {
  t.test('Redis auth off (no REDIS_PASSWORD, no password in the URL): nothing added', async (t) => {
    const { result, after } = mutateAndApply(loadObject('pod-worker'), settings);
    t.strictSame(result.patch, []);
    t.strictSame(entriesNamed(envOf(after, 'worker'), ENV.redisPassword), []);
  });
  t.test('an empty literal REDIS_PASSWORD means "no auth" and is left alone', async (t) => {
    const env = [
      { name: ENV.redisPassword, value: '' },
      { name: ENV.celeryBrokerUrl, value: `redis://${names.redisHost}:6379/1` },
    ];
    const { after } = mutateAndApply(workerPod(env), settings);
    t.strictSame(envOf(after, 'worker').slice(0, 2), env);
  });
  t.test('declared as a literal: replaced by the reference', async (t) => {
    const env = [{ name: ENV.redisPassword, value: 'Redis-Literal-9911' }];
    const { result, after } = mutateAndApply(workerPod(env), settings);
    t.strictSame(envOf(after, 'worker')[0], { name: ENV.redisPassword, valueFrom: redisRef });
    t.notOk(JSON.stringify(result).includes('Redis-Literal-9911'));
  });
  t.test('a reference to another Secret is corrected', async (t) => {
    const env = [{ name: ENV.redisPassword, valueFrom: secretRef('elsewhere', 'pw') }];
    const { result, after } = mutateAndApply(workerPod(env), settings);
    t.strictSame(envOf(after, 'worker')[0], { name: ENV.redisPassword, valueFrom: redisRef });
    t.ok(result.warnings.some((w) => w.includes(ENV.redisPassword) && w.includes('wrong ref')));
  });
  t.test('pod annotations name an existing Secret and key', async (t) => {
    const pod = workerPod([
      { name: ENV.redisPassword, valueFrom: secretRef(names.redisSecret, settings.redisSecretKey) },
    ]);
    (pod.metadata as JsonObject).annotations = {
      [contract.annotations.redisSecretName]: 'corp-redis',
      [contract.annotations.redisSecretKey]: 'auth',
    };
    const { result, after } = mutateAndApply(pod, settings);
    t.strictSame(envOf(after, 'worker')[0], { name: ENV.redisPassword, valueFrom: secretRef('corp-redis', 'auth') });
    t.notOk(
      result.patch.some((op) => op.path.includes('annotations')),
      'annotations are read, never written',
    );
    t.strictSame(mutatePod(after, settings).patch, [], 'and the annotated reference is then stable');
  });
  t.test('auth on only through the broker URL: REDIS_PASSWORD is added right before it', async (t) => {
    const env = [
      { name: 'A', value: 'a' },
      { name: ENV.celeryBrokerUrl, value: literalBroker('In-Url-Pass-31') },
      { name: 'B', value: 'b' },
    ];
    const { result, after } = mutateAndApply(workerPod(env, C.api), settings);
    const out = envOf(after, 'worker');
    t.strictSame(out.slice(0, 4), [
      env[0],
      { name: ENV.redisPassword, valueFrom: redisRef },
      { name: ENV.celeryBrokerUrl, value: referencedBroker },
      env[2],
    ]);
    t.notOk(JSON.stringify(result).includes('In-Url-Pass-31'));
  });
  t.test('defined after the broker URL: moved right before it', async (t) => {
    const env = [
      { name: ENV.celeryBrokerUrl, value: referencedBroker },
      { name: 'A', value: 'a' },
      { name: ENV.redisPassword, valueFrom: redisRef },
      { name: 'B', value: 'b' },
    ];
    const { result, after } = mutateAndApply(workerPod(env), settings);
    t.strictSame(envOf(after, 'worker').slice(0, 4), [env[2], env[0], env[1], env[3]]);
    t.ok(result.warnings.some((w) => w.includes('moved before')));
  });
  t.test('defined before the broker URL: left where it is', async (t) => {
    const env = [
      { name: ENV.redisPassword, valueFrom: redisRef },
      { name: 'A', value: 'a' },
      { name: ENV.celeryBrokerUrl, value: referencedBroker },
    ];
    const { after } = mutateAndApply(workerPod(env), settings);
    t.strictSame(envOf(after, 'worker').slice(0, 3), env);
  });
});

t.test('CELERY_BROKER_URL forms', async (t) => {
  const ref = REDIS_PASSWORD_REFERENCE;
  const rewrites: [string, string][] = [
    ['redis://:pw1@dify-redis-master:6379/1', `redis://:${ref}@dify-redis-master:6379/1`],
    ['redis://default:pw1@dify-redis-master:6379/1', `redis://default:${ref}@dify-redis-master:6379/1`],
    [
      'rediss://:pw1@redis.example.com:6380/0?ssl_cert_reqs=required',
      `rediss://:${ref}@redis.example.com:6380/0?ssl_cert_reqs=required`,
    ],
    ['redis://:p@ss:w/rd@h:6379/1', `redis://:${ref}@h:6379/1`],
    [
      'sentinel://:pw1@s1:26379/1;sentinel://:pw1@s2:26379/1',
      `sentinel://:${ref}@s1:26379/1;sentinel://:${ref}@s2:26379/1`,
    ],
    ['redis://:pa;ss@h:6379/1', `redis://:${ref}@h:6379/1`],
  ];
  for (const [from, to] of rewrites) {
    t.ok(brokerUrlHasPassword(from), `${from} has a password`);
    t.equal(rewriteBrokerUrl(from), to, from);
    t.equal(rewriteBrokerUrl(to), to, `${to} is stable`);
  }
  for (const same of [
    'redis://h:6379/1',
    'redis://user@h:6379/1',
    'redis://:@h:6379/1',
    `redis://:${ref}@h:6379/1`,
    'amqp://guest:guest@rabbit:5672//',
    'not a url',
  ]) {
    t.equal(rewriteBrokerUrl(same), same, `${same} left alone`);
  }
  t.notOk(brokerUrlHasPassword('amqp://guest:guest@rabbit:5672//'), 'a RabbitMQ password is not the Redis password');
  t.test('a broker URL in valueFrom is left alone', async (t) => {
    const env = [
      { name: ENV.redisPassword, valueFrom: redisRef },
      { name: ENV.celeryBrokerUrl, valueFrom: secretRef('dify-celery', 'url') },
    ];
    const { result } = mutateAndApply(workerPod(env), settings);
    t.notOk(result.patch.some((op) => op.path.includes('/env/1')));
  });
});

t.test('REDIS_HOST and REDIS_PORT', async (t) => {
  t.test('added at the end when absent', async (t) => {
    const env = [{ name: 'A', value: 'a' }];
    const { result, after } = mutateAndApply(workerPod(env), settings);
    const out = envOf(after, 'worker');
    t.strictSame(out.slice(-2), [
      { name: ENV.redisHost, value: names.redisHost },
      { name: ENV.redisPort, value: String(settings.redisPort) },
    ]);
    t.equal(out[0]?.name, 'A');
    t.ok(result.warnings.some((w) => w.includes(ENV.redisHost) && w.includes('added')));
  });
  t.test('never overwritten', async (t) => {
    const env = [
      { name: ENV.redisHost, value: 'redis.corp.internal' },
      { name: ENV.redisPort, valueFrom: { configMapKeyRef: { name: 'r', key: 'port' } } },
    ];
    const { after } = mutateAndApply(workerPod(env), settings);
    t.strictSame(
      envOf(after, 'worker').filter((e) => e.name.startsWith('REDIS_')),
      env,
    );
  });
  t.test('not added to a container with envFrom (an explicit entry would override it)', async (t) => {
    const pod = workerPod([{ name: 'A', value: 'a' }]);
    containerOf(pod, 'worker').envFrom = [{ configMapRef: { name: 'dify-shared-env' } }];
    const { after } = mutateAndApply(pod, settings);
    t.strictSame(entriesNamed(envOf(after, 'worker'), ENV.redisHost), []);
    t.strictSame(entriesNamed(envOf(after, 'worker'), ENV.redisPort), []);
    t.strictSame(
      entriesNamed(envOf(after, 'worker'), ENV.dbPassword),
      [{ name: ENV.dbPassword, valueFrom: dbRef }],
      'credentials still injected',
    );
  });
  t.test('an empty envFrom list is no envFrom', async (t) => {
    const pod = workerPod([{ name: 'A', value: 'a' }]);
    containerOf(pod, 'worker').envFrom = [];
    const { after } = mutateAndApply(pod, settings);
    t.equal(entriesNamed(envOf(after, 'worker'), ENV.redisHost).length, 1);
  });
  t.test('a container without env gets one', async (t) => {
    const { after } = mutateAndApply(workerPod(undefined), settings);
    t.ok(entriesNamed(envOf(after, 'worker'), ENV.redisHost).length === 1);
  });
});

t.test(
  'several containers and init containers, with envFrom: Dify containers checked, a sidecar left byte for byte',
  async (t) => {
    const before = loadObject('pod-api-literal');
    const { result, after } = mutateAndApply(before, settings);
    const owned = new Set<string>(Object.values(ENV));
    const foreign = (env: EnvEntry[]): EnvEntry[] => env.filter((e) => !owned.has(e.name));
    const env = envOf(after, 'api');
    t.strictSame(
      entriesNamed(env, ENV.migrationEnabled),
      [{ name: ENV.migrationEnabled, value: 'false' }],
      'api: migration off',
    );
    t.strictSame(entriesNamed(env, ENV.dbPassword), [{ name: ENV.dbPassword, valueFrom: dbRef }], 'api: DB_PASSWORD');
    t.strictSame(
      entriesNamed(env, ENV.redisPassword),
      [{ name: ENV.redisPassword, valueFrom: redisRef }],
      'api: REDIS_PASSWORD',
    );
    t.equal(entriesNamed(env, ENV.redisHost).length, 1, 'api: REDIS_HOST');
    t.strictSame(foreign(env), foreign(envOf(before, 'api')), 'api: env it does not own unchanged and in order');
    t.equal(
      JSON.stringify(containerOf(after, 'log-shipper')),
      JSON.stringify(containerOf(before, 'log-shipper')),
      'the log-shipper sidecar (no Dify image, no Dify setting) is byte-equal: no password, no MIGRATION_ENABLED, no REDIS_HOST',
    );
    t.notOk(
      result.patch.some((op) => op.path.startsWith('/spec/containers/1')),
      'no operation on the sidecar',
    );
    t.notOk(
      result.warnings.some((w) => w.includes('log-shipper')),
      'no warning about the sidecar',
    );
    t.strictSame(
      result.changes.map((c) => c.container).sort(),
      ['api', 'wait-for-db'],
      'the changes name the Dify containers only',
    );
    const initBefore = envOf(before, 'wait-for-db', 'initContainers');
    const init = envOf(after, 'wait-for-db', 'initContainers');
    t.strictSame(
      init,
      initBefore.map((e) => (e.name === ENV.dbPassword ? { name: ENV.dbPassword, valueFrom: dbRef } : e)),
      'init container: its literal DB_PASSWORD becomes the reference in place, nothing added',
    );
    for (const name of [ENV.migrationEnabled, ENV.redisPassword, ENV.redisHost, ENV.redisPort]) {
      t.strictSame(entriesNamed(init, name), [], `init container: no ${name} added`);
    }
    t.ok(
      result.warnings.some(
        (w) => w.includes('init container wait-for-db') && w.includes(ENV.dbPassword) && w.includes('literal'),
      ),
      'init container named in the correction warning',
    );
    t.notOk(
      result.warnings.some((w) => w.includes('init container') && w.includes('added')),
      'no warning of an addition to the init container',
    );
    const api = envOf(after, 'api');
    t.ok(
      indexOfName(api, ENV.redisPassword) < indexOfName(api, ENV.celeryBrokerUrl),
      'REDIS_PASSWORD before the broker URL',
    );
    t.equal(entriesNamed(api, ENV.redisHost)[0]?.value, names.redisHost, 'existing REDIS_HOST kept');
    t.strictSame(containerOf(after, 'api').envFrom, containerOf(before, 'api').envFrom, 'envFrom left alone');
    t.ok(
      result.patch.every((op) => /^\/spec\/(initContainers|containers)\/\d+\/env(\/|$)/.test(op.path)),
      'only env is patched',
    );
    t.strictSame(mutatePod(after, settings), { patch: [], warnings: [], changes: [] }, 'second pass: empty patch');
  },
);

t.test('init containers: existing owned vars corrected, absent ones never added', async (t) => {
  /** The worker fixture as `component`, with one init container `wait` whose env is `env`. */
  const withInit = (env: EnvEntry[] | undefined, component: string = C.api): JsonObject => {
    const pod = workerPod(badEnv(), component);
    const init: JsonObject = {
      name: 'wait',
      image: 'postgres:15-alpine',
      command: ['pg_isready', '-h', names.postgresqlSecret],
    };
    if (env) init.env = env;
    (pod.spec as JsonObject).initContainers = [init];
    return pod;
  };

  t.test('without env: stays untouched (no env field appears), for every component', async (t) => {
    for (const component of Object.values(C)) {
      const pod = withInit(undefined, component);
      const { result, after } = mutateAndApply(pod, settings);
      t.strictSame(
        containerOf(after, 'wait', 'initContainers'),
        containerOf(pod, 'wait', 'initContainers'),
        `${component}: init container as it was`,
      );
      t.notOk(
        result.patch.some((op) => op.path.startsWith('/spec/initContainers')),
        `${component}: no operation on it`,
      );
      t.notOk(
        result.warnings.some((w) => w.includes('init container')),
        `${component}: no warning about it`,
      );
    }
  });
  t.test('with only vars it does not own: untouched', async (t) => {
    const env = [
      { name: 'PGHOST', value: names.postgresqlSecret },
      { name: 'PGCONNECT_TIMEOUT', value: '5' },
    ];
    const { result } = mutateAndApply(withInit(env), settings);
    t.notOk(result.patch.some((op) => op.path.startsWith('/spec/initContainers')));
  });
  t.test('the chart-rendered migration pod (its wait-for-postgresql has no env) gets no patch', async (t) => {
    const pod = loadObject('pod-db-migration');
    t.equal(
      containerOf(pod, 'wait-for-postgresql', 'initContainers').env,
      undefined,
      'the fixture renders it as the chart does',
    );
    t.strictSame(mutatePod(pod, settings), { patch: [], warnings: [], changes: [] });
  });
  t.test('a literal DB_PASSWORD is replaced in place by the reference, nothing else added', async (t) => {
    const env = [
      { name: 'PGHOST', value: 'h' },
      { name: ENV.dbPassword, value: 'Init-Literal-5b6c' },
      { name: 'PGUSER', value: 'dify' },
    ];
    const { result, after } = mutateAndApply(withInit(env), settings);
    t.strictSame(envOf(after, 'wait', 'initContainers'), [env[0], { name: ENV.dbPassword, valueFrom: dbRef }, env[2]]);
    t.ok(result.warnings.some((w) => w.includes('init container wait') && w.includes('literal')));
    t.notOk(JSON.stringify(result).includes('Init-Literal-5b6c'), 'literal never echoed');
  });
  t.test('a DB_PASSWORD referencing another Secret is redirected', async (t) => {
    const env = [{ name: ENV.dbPassword, valueFrom: secretRef('my-own-db', SECRET_KEYS.password) }];
    const { result, after } = mutateAndApply(withInit(env, C.migration), settings);
    t.strictSame(envOf(after, 'wait', 'initContainers'), [{ name: ENV.dbPassword, valueFrom: dbRef }]);
    t.ok(result.warnings.some((w) => w.includes('init container wait') && w.includes('wrong ref')));
  });
  t.test('an existing MIGRATION_ENABLED is forced where the component forces it, and only there', async (t) => {
    const env = [{ name: ENV.migrationEnabled, value: 'true' }];
    const forced = mutateAndApply(withInit(env, C.worker), settings).after;
    t.strictSame(
      envOf(forced, 'wait', 'initContainers'),
      [{ name: ENV.migrationEnabled, value: 'false' }],
      'worker: forced',
    );
    const migration = mutateAndApply(withInit(env, C.migration), settings).after;
    t.strictSame(envOf(migration, 'wait', 'initContainers'), env, 'db-migration: untouched');
  });
  t.test('a literal REDIS_PASSWORD is replaced; REDIS_HOST/PORT are not added', async (t) => {
    const env = [{ name: ENV.redisPassword, value: 'Init-Redis-Lit-77' }];
    const { after } = mutateAndApply(withInit(env), settings);
    t.strictSame(envOf(after, 'wait', 'initContainers'), [{ name: ENV.redisPassword, valueFrom: redisRef }]);
  });
  t.test(
    'a broker URL with a literal password: rewritten, REDIS_PASSWORD added right before it (it uses Redis)',
    async (t) => {
      const env = [
        { name: 'A', value: 'a' },
        { name: ENV.celeryBrokerUrl, value: literalBroker('Init-Broker-Pw-88') },
      ];
      const { result, after } = mutateAndApply(withInit(env), settings);
      t.strictSame(
        envOf(after, 'wait', 'initContainers'),
        [
          env[0],
          { name: ENV.redisPassword, valueFrom: redisRef },
          { name: ENV.celeryBrokerUrl, value: referencedBroker },
        ],
        'no DB_PASSWORD, MIGRATION_ENABLED, REDIS_HOST or REDIS_PORT added',
      );
      t.notOk(JSON.stringify(result).includes('Init-Broker-Pw-88'));
      t.strictSame(mutatePod(after, settings).patch, [], 'second pass: empty patch');
    },
  );
  t.test('a broker URL without a password: REDIS_PASSWORD not added even though auth is on for the pod', async (t) => {
    const env = [{ name: ENV.celeryBrokerUrl, value: `redis://${names.redisHost}:${settings.redisPort}/1` }];
    const { result } = mutateAndApply(withInit(env), settings);
    t.notOk(result.patch.some((op) => op.path.startsWith('/spec/initContainers')));
  });
  t.test('a native sidecar (an init container with restartPolicy Always) is an init container too', async (t) => {
    const pod = withInit([{ name: 'FLUENT_LOG_LEVEL', value: 'info' }]);
    containerOf(pod, 'wait', 'initContainers').restartPolicy = 'Always';
    t.notOk(mutatePod(pod, settings).patch.some((op) => op.path.startsWith('/spec/initContainers')));
  });
});

t.test('pods without init containers or sidecars: the app container still gets every absent var', async (t) => {
  t.test('no env at all', async (t) => {
    const { after } = mutateAndApply(workerPod(undefined, C.api), settings);
    t.strictSame(envOf(after, 'worker'), [
      { name: ENV.migrationEnabled, value: 'false' },
      { name: ENV.dbPassword, valueFrom: dbRef },
      { name: ENV.redisHost, value: names.redisHost },
      { name: ENV.redisPort, value: String(settings.redisPort) },
    ]);
  });
  t.test('every rule broken at once: the exact resulting env', async (t) => {
    const { result, after } = mutateAndApply(workerPod(badEnv(), C.api), settings);
    const [mode, , , database, , logLevel] = badEnv();
    t.strictSame(envOf(after, 'worker'), [
      mode,
      { name: ENV.migrationEnabled, value: 'false' },
      { name: ENV.dbPassword, valueFrom: dbRef },
      database,
      { name: ENV.redisPassword, valueFrom: redisRef },
      { name: ENV.celeryBrokerUrl, value: referencedBroker },
      logLevel,
      { name: ENV.redisHost, value: names.redisHost },
      { name: ENV.redisPort, value: String(settings.redisPort) },
    ]);
    t.strictSame(mutatePod(after, settings), { patch: [], warnings: [], changes: [] }, 'second pass: empty patch');
    t.equal(
      result.warnings.length,
      5,
      'one warning per change: migration, DB_PASSWORD, broker URL, REDIS_PASSWORD, endpoint',
    );
  });
});

t.test('no instance label: MIGRATION_ENABLED still forced, no credentials, a warning says why', async (t) => {
  const pod = loadObject('pod-api-literal');
  delete labelsOf(pod)[LABELS.instance];
  const { result, after } = mutateAndApply(pod, settings);
  const env = envOf(after, 'api');
  t.strictSame(entriesNamed(env, ENV.migrationEnabled), [{ name: ENV.migrationEnabled, value: 'false' }]);
  t.strictSame(
    entriesNamed(env, ENV.dbPassword),
    entriesNamed(envOf(pod, 'api'), ENV.dbPassword),
    'DB_PASSWORD as it was',
  );
  t.ok(result.warnings.some((w) => w.includes(LABELS.instance) && w.includes('not injected')));
  t.notOk(result.patch.some((op) => JSON.stringify(op).includes('secretKeyRef')));

  const migration = loadObject('pod-db-migration');
  delete labelsOf(migration)[LABELS.instance];
  const onlyWarning = mutatePod(migration, settings);
  t.strictSame(onlyWarning.patch, [], 'db-migration pod: nothing to force');
  t.equal(onlyWarning.warnings.length, 1);
});

t.test('Dify pods are recognised by what they run', async (t) => {
  const foreign = loadObject('pod-non-dify');
  t.equal(labelsOf(foreign)[LABELS.component], C.api, 'the foreign pod even claims to be an api');
  t.strictSame(
    mutatePod(foreign, settings),
    { patch: [], warnings: [], changes: [] },
    'no Dify image, no Dify-only setting: not a Dify pod',
  );
  const guard = workerPod(badEnv(), C.webhook);
  labelsOf(guard)[LABELS.name] = contract.values.guardName;
  containerOf(guard, 'worker').image = 'dify-guard/dify-guard:1.0.0';
  t.strictSame(mutatePod(guard, settings).patch, [], "dify-guard's own pods");
  const web = workerPod(badEnv(), C.web);
  t.strictSame(mutatePod(web, settings).patch, [], "this chart's web pod, even running the api image");
  for (const [what, edit] of [
    [
      'no component label',
      (pod: JsonObject) => {
        delete labelsOf(pod)[LABELS.component];
      },
    ],
    [
      'no labels at all',
      (pod: JsonObject) => {
        delete (pod.metadata as JsonObject).labels;
      },
    ],
  ] as const) {
    const pod = workerPod(badEnv());
    edit(pod);
    const { result, after } = mutateAndApply(pod, settings);
    t.strictSame(
      entriesNamed(envOf(after, 'worker'), ENV.migrationEnabled),
      [{ name: ENV.migrationEnabled, value: 'false' }],
      `${what}: a Dify image, so MIGRATION_ENABLED is forced`,
    );
    t.strictSame(
      entriesNamed(envOf(after, 'worker'), ENV.dbPassword),
      entriesNamed(badEnv(), ENV.dbPassword),
      `${what}: its Secret is unknown, so DB_PASSWORD is left as it is`,
    );
    t.ok(
      result.warnings.some((w) => w.includes(ENV.dbPassword) && w.includes(contract.annotations.postgresqlSecretName)),
      `${what}: a warning names the annotation that would fix the literal`,
    );
    t.notOk(JSON.stringify(result).includes('Sneaky-Literal-1a2b3c'), `${what}: literal never echoed`);
  }
});

t.test('a Dify pod of another chart (the community chart: envFrom ConfigMap, no labels of ours)', async (t) => {
  const communityPod = (): JsonObject => {
    const pod = workerPod([{ name: 'LOG_LEVEL', value: 'INFO' }]);
    (pod.metadata as JsonObject).labels = {
      'app.kubernetes.io/name': 'dify',
      'app.kubernetes.io/instance': 'other',
      component: 'api',
    };
    containerOf(pod, 'worker').image = 'registry.example.com:5000/langgenius/dify-api:1.11.4';
    containerOf(pod, 'worker').envFrom = [
      { configMapRef: { name: 'other-dify-api' } },
      { secretRef: { name: 'other-dify-api' } },
    ];
    return pod;
  };
  t.test('MIGRATION_ENABLED added as "false" (it beats the ConfigMap), nothing else', async (t) => {
    const { result, after } = mutateAndApply(communityPod(), settings);
    t.strictSame(envOf(after, 'worker'), [
      { name: 'LOG_LEVEL', value: 'INFO' },
      { name: ENV.migrationEnabled, value: 'false' },
    ]);
    t.strictSame(result.changes, [{ container: 'worker', variables: [ENV.migrationEnabled] }]);
    t.strictSame(mutatePod(after, settings).patch, [], 'second pass: empty patch');
  });
  t.test('annotations name its PostgreSQL and Redis Secrets: credentials injected there, no REDIS_HOST', async (t) => {
    const pod = communityPod();
    setEnv(pod, 'worker', [
      { name: ENV.dbPassword, value: 'Community-Literal-42' },
      { name: ENV.redisPassword, value: 'Community-Redis-43' },
    ]);
    (pod.metadata as JsonObject).annotations = {
      [contract.annotations.postgresqlSecretName]: 'other-postgresql',
      [contract.annotations.postgresqlSecretKey]: 'password',
      [contract.annotations.redisSecretName]: 'other-redis',
    };
    const { result, after } = mutateAndApply(pod, settings);
    t.strictSame(envOf(after, 'worker'), [
      { name: ENV.dbPassword, valueFrom: secretRef('other-postgresql', 'password') },
      { name: ENV.redisPassword, valueFrom: secretRef('other-redis', settings.redisSecretKey) },
      { name: ENV.migrationEnabled, value: 'false' },
    ]);
    t.notOk(JSON.stringify(result).includes('Community-'), 'literals never echoed');
  });
  t.test('a mirror that renames the image: recognised once its path is in difyImages', async (t) => {
    const pod = communityPod();
    containerOf(pod, 'worker').image = 'harbor.corp/ai/dify-backend@sha256:0123';
    t.strictSame(mutatePod(pod, settings).patch, [], 'unknown path: not a Dify pod');
    const mirrored = { ...settings, difyImages: [...settings.difyImages, 'ai/dify-backend'] };
    t.ok(mutatePod(pod, mirrored).patch.length > 0, 'listed path: a Dify pod');
  });
});

t.test('a container with env: null counts as one with no env', async (t) => {
  const pod = workerPod(undefined, C.api);
  containerOf(pod, 'worker').env = null;
  const { after } = mutateAndApply(pod, settings);
  t.strictSame(envOf(after, 'worker'), [
    { name: ENV.migrationEnabled, value: 'false' },
    { name: ENV.dbPassword, valueFrom: dbRef },
    { name: ENV.redisHost, value: names.redisHost },
    { name: ENV.redisPort, value: String(settings.redisPort) },
  ]);
  t.strictSame(mutatePod(after, settings).patch, [], 'second pass: empty patch');
});

t.test(
  'every setting that carries a password is treated like DB_PASSWORD or REDIS_PASSWORD, never added',
  async (t) => {
    const cred = contract.credentialSettings;
    const env: EnvEntry[] = [
      ...cred.postgresqlPasswords.map((name) => ({ name, value: `Pg-Literal-${name}` })),
      ...cred.redisPasswords.map((name) => ({ name, value: `Redis-Literal-${name}` })),
      ...cred.redisUrls.map((name) => ({ name, value: literalBroker(`Url-Literal-${name}`) })),
    ];
    const { result, after } = mutateAndApply(workerPod(env, C.worker), settings);
    const out = envOf(after, 'worker');
    t.ok(cred.postgresqlPasswords.includes('PGVECTOR_PASSWORD'), 'PGVECTOR_PASSWORD is one of them');
    for (const name of cred.postgresqlPasswords)
      t.strictSame(entriesNamed(out, name), [{ name, valueFrom: dbRef }], `${name} -> PostgreSQL Secret`);
    for (const name of cred.redisPasswords)
      t.strictSame(entriesNamed(out, name), [{ name, valueFrom: redisRef }], `${name} -> Redis Secret`);
    for (const name of cred.redisUrls)
      t.equal(entriesNamed(out, name)[0]?.value, referencedBroker.replace(':6379/1', ':6379/1'), `${name} rewritten`);
    t.notOk(/Literal/.test(JSON.stringify(result)), 'no literal echoed in patch or warnings');
    const minimal = mutateAndApply(workerPod([], C.worker), settings).after;
    for (const name of [...cred.postgresqlPasswords.slice(1), ...cred.redisPasswords]) {
      t.strictSame(entriesNamed(envOf(minimal, 'worker'), name), [], `${name} is never added when absent`);
    }
    t.strictSame(mutatePod(after, settings).patch, [], 'second pass: empty patch');
  },
);

t.test('the patch comes from the raw JSON: unknown fields and other paths untouched', async (t) => {
  const pod = workerPod(badEnv(), C.api);
  (pod.metadata as JsonObject).annotations = { 'example.com/owner~team': 'a/b' };
  (pod.spec as JsonObject).futureField = { keep: true };
  containerOf(pod, 'worker').restartPolicy = 'Always';
  const before = structuredClone(pod);
  const { result, after } = mutateAndApply(pod, settings);
  t.strictSame(pod, before, 'the input is never modified');
  t.ok(result.patch.length > 0);
  t.ok(result.patch.every((op) => op.path.startsWith('/spec/containers/0/env')));
  t.strictSame((after.spec as JsonObject).futureField, { keep: true });
  t.strictSame((after.metadata as JsonObject).annotations, { 'example.com/owner~team': 'a/b' });
});

t.test('idempotence on every pod fixture, and on its variants per component', async (t) => {
  for (const name of podFixtures) {
    for (const component of [undefined, ...Object.values(C)]) {
      const pod = loadObject(name);
      if (component) asComponent(pod, component);
      const { after } = mutateAndApply(pod, settings);
      t.strictSame(mutatePod(after, settings).patch, [], `${name}${component ? ` as ${component}` : ''}`);
    }
  }
});

t.test('warnings: at most 120 characters, never a password or its base64', async (t) => {
  for (const name of podFixtures) {
    const review = loadReview(name);
    const secrets = sensitiveStringsOf(review);
    const pod = review.request.object as JsonObject;
    for (const component of Object.values(C)) {
      const result = mutatePod(asComponent(structuredClone(pod), component), settings);
      for (const w of result.warnings) {
        t.ok(w.length <= MAX_WARNING_LENGTH, `${name}/${component}: ${w.length} chars`);
        t.notOk(w.endsWith('…'), `${name}/${component}: realistic names fit without cutting: ${w}`);
      }
      const output = JSON.stringify(result);
      for (const s of secrets) t.notOk(output.includes(s), `${name}/${component}: no secret in patch or warnings`);
    }
  }
  t.ok(sensitiveStringsOf(loadReview('pod-api-literal')).length >= 4, 'the scan does look for the literal passwords');
  t.test('long names are cut, not the limit', async (t) => {
    const pod = workerPod(badEnv(), C.api);
    labelsOf(pod)[LABELS.instance] = 'r'.repeat(53);
    containerOf(pod, 'worker').name = 'c'.repeat(63);
    const result = mutatePod(pod, settings);
    t.ok(result.warnings.length >= 4);
    for (const w of result.warnings) t.ok(w.length <= MAX_WARNING_LENGTH, `${w.length} chars`);
  });
});
