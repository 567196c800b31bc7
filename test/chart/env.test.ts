// The env the chart gives each Dify container: the rules dify-guard enforces already hold in what
// the chart renders (MIGRATION_ENABLED=false, passwords only by secretKeyRef, REDIS_PASSWORD before
// the broker URL), the keys api shares with sandbox/plugin daemon agree, and no secret is a literal.
import t, { type Test } from 'tap';
import { ENV, LABELS, SECRET_KEYS, contract } from '../../src/contract.js';
import {
  allContainersOf,
  containersOf,
  envIndex,
  envOf,
  kindOf,
  nameOf,
  podTemplateOf,
  render,
  template,
  testSecret,
  workloads,
  type Container,
  type Json,
} from '../../harness/helm.js';
import {
  componentContainer,
  componentWorkload,
  mainContainerOf,
  releaseName,
  renderChart,
  withRequired,
} from './support.js';

const pgSecret = releaseName('postgresqlSecret');
const componentOf = (w: Json): string => podTemplateOf(w).metadata.labels?.[LABELS.component] ?? '';
/** An env name that says password, key or secret: the chart sets it only by reference. */
const namesASecret = (name: string): boolean =>
  /PASSWORD|SECRET|_KEY$|^API_KEY$/.test(name) && name !== 'DIFY_GUARD_REDIS_SECRET_KEY' && !name.endsWith('_TEMPLATE');

const base = await renderChart();

t.test('MIGRATION_ENABLED is the literal "false" on every api/worker/beat/plugin-daemon container', async (t) => {
  for (const component of contract.podRules.forceMigrationDisabled) {
    for (const c of containersOf(componentWorkload(base.objects, component))) {
      const entries = (c.env ?? []).filter((e) => e.name === ENV.migrationEnabled);
      t.equal(entries.length, 1, `${component}/${c.name}: set once`);
      t.same(
        entries[0],
        { name: ENV.migrationEnabled, value: 'false' },
        `${component}/${c.name}: "false", no valueFrom`,
      );
    }
  }
  t.equal(contract.podRules.forceMigrationDisabled.length, 4);
});

t.test('DB_PASSWORD comes from the PostgreSQL Secret by secretKeyRef wherever it is set', async (t) => {
  let seen = 0;
  for (const w of workloads(base.objects)) {
    for (const c of allContainersOf(w)) {
      const e = envOf(c, ENV.dbPassword);
      if (!e) continue;
      seen++;
      t.notOk('value' in e, `${nameOf(w)}/${c.name}: no literal`);
      t.same(
        e.valueFrom?.secretKeyRef,
        { name: pgSecret, key: SECRET_KEYS.postgresPassword },
        `${nameOf(w)}/${c.name}`,
      );
    }
  }
  for (const component of contract.podRules.injectCredentials) {
    t.ok(envOf(componentContainer(base.objects, component), ENV.dbPassword), `${component} has DB_PASSWORD`);
  }
  t.ok(seen >= contract.podRules.injectCredentials.length);
});

t.test('no env name appears twice in any container', async (t) => {
  for (const variant of [
    {},
    { pluginDaemon: { redis: { authEnabled: true, password: testSecret() } }, vectorStore: { type: 'pgvector' } },
  ]) {
    const { objects } = await renderChart(variant);
    for (const w of workloads(objects)) {
      for (const c of allContainersOf(w)) {
        const names = (c.env ?? []).map((e) => e.name);
        t.same(
          names.filter((n, i) => names.indexOf(n) !== i),
          [],
          `${kindOf(w)} ${nameOf(w)}/${c.name}`,
        );
      }
    }
  }
});

t.test('plugin daemon: its own database dify_plugin, DB_DATABASE once, Redis host and port', async (t) => {
  const c = componentContainer(base.objects, contract.components.pluginDaemon);
  t.same(
    (c.env ?? []).filter((e) => e.name === 'DB_DATABASE'),
    [{ name: 'DB_DATABASE', value: 'dify_plugin' }],
  );
  t.equal(envOf(c, ENV.redisHost)?.value, releaseName('redisMaster'));
  t.equal(envOf(c, ENV.redisPort)?.value, String(contract.redisPort));
  t.equal(envOf(c, 'DB_HOST')?.value, releaseName('postgresql'));
  t.equal(
    envOf(componentContainer(base.objects, contract.components.api), 'DB_DATABASE')?.value,
    'dify',
    "api keeps Dify's database",
  );
});

t.test(
  'Redis without auth (authEnabled=false): no REDIS_PASSWORD, a broker URL without credentials, no Redis Secret',
  async (t) => {
    const open = await renderChart({ pluginDaemon: { redis: { authEnabled: false } } });
    for (const component of contract.podRules.injectCredentials) {
      const c = componentContainer(open.objects, component);
      t.notOk(envOf(c, ENV.redisPassword), `${component}`);
      const url = envOf(c, ENV.celeryBrokerUrl)?.value;
      if (url !== undefined) t.equal(url, `redis://${releaseName('redisMaster')}:${contract.redisPort}/1`);
    }
    t.notOk(open.objects.find((o) => kindOf(o) === 'Secret' && nameOf(o) === releaseName('redisSecret')));
    const redis = componentContainer(open.objects, contract.components.redis);
    t.notOk(envOf(redis, ENV.redisPassword), 'the bundled Redis gets no requirepass');
  },
);

t.test('Redis auth is on by default: a password generated once into <release>-redis, kept by uninstall', async (t) => {
  const redisSecret = releaseName('redisSecret');
  const secret = base.objects.find((o) => kindOf(o) === 'Secret' && nameOf(o) === redisSecret);
  t.ok(secret, 'the chart renders <release>-redis with no value given');
  const generated = Buffer.from(String((secret!.data as Json)[SECRET_KEYS.redisPassword]), 'base64').toString();
  t.match(generated, /^[A-Za-z0-9]{32}$/, 'URL-safe, 32 characters');
  t.equal(
    (secret!.metadata as Json).annotations &&
      ((secret!.metadata as Json).annotations as Json)['helm.sh/resource-policy'],
    'keep',
  );
  for (const component of contract.podRules.injectCredentials) {
    const c = componentContainer(base.objects, component);
    t.same(
      envOf(c, ENV.redisPassword)?.valueFrom?.secretKeyRef,
      { name: redisSecret, key: SECRET_KEYS.redisPassword },
      component,
    );
  }
  const again = await renderChart();
  const other = again.objects.find((o) => kindOf(o) === 'Secret' && nameOf(o) === redisSecret)!;
  t.not(
    (other.data as Json)[SECRET_KEYS.redisPassword],
    (secret!.data as Json)[SECRET_KEYS.redisPassword],
    'random per render without a cluster (helm install/upgrade look the existing Secret up: test/controlplane)',
  );
});

t.test(
  'Redis with auth (chart Secret): REDIS_PASSWORD by secretKeyRef, defined before CELERY_BROKER_URL',
  async (t) => {
    const password = testSecret();
    const { objects, text } = await renderChart({ pluginDaemon: { redis: { authEnabled: true, password } } });
    const redisSecret = releaseName('redisSecret');
    const secret = objects.find((o) => kindOf(o) === 'Secret' && nameOf(o) === redisSecret);
    t.ok(secret, 'the chart renders <release>-redis');
    t.ok(
      Buffer.from(String((secret!.data as Json)[SECRET_KEYS.redisPassword]), 'base64').toString() === password,
      'with the given password',
    );
    for (const component of contract.podRules.injectCredentials) {
      const c = componentContainer(objects, component);
      t.same(
        envOf(c, ENV.redisPassword)?.valueFrom?.secretKeyRef,
        { name: redisSecret, key: SECRET_KEYS.redisPassword },
        component,
      );
      const broker = envIndex(c, ENV.celeryBrokerUrl);
      if (broker >= 0) {
        t.ok(
          envIndex(c, ENV.redisPassword) < broker,
          `${component}: REDIS_PASSWORD comes first (Kubernetes expands only earlier names)`,
        );
        t.equal(
          envOf(c, ENV.celeryBrokerUrl)?.value,
          `redis://:$(${ENV.redisPassword})@${releaseName('redisMaster')}:${contract.redisPort}/1`,
        );
      }
      t.same(
        podTemplateOf(componentWorkload(objects, component)).metadata.annotations ?? {},
        {},
        `${component}: no Secret annotations for the default Secret`,
      );
    }
    // The bundled Redis requires the same password.
    const redis = componentContainer(objects, contract.components.redis);
    t.same(envOf(redis, 'REDIS_PASSWORD')?.valueFrom?.secretKeyRef, {
      name: redisSecret,
      key: SECRET_KEYS.redisPassword,
    });
    t.notOk(text.includes(password), 'the password is only in the Secret, base64');
  },
);

t.test('Redis with an existing Secret: references it and tells dify-guard by annotations', async (t) => {
  const { objects } = await renderChart({
    pluginDaemon: { redis: { authEnabled: true, existingSecret: 'corp-redis', existingSecretPasswordKey: 'pw' } },
  });
  t.notOk(
    objects.find((o) => kindOf(o) === 'Secret' && nameOf(o) === releaseName('redisSecret')),
    'no chart Redis Secret',
  );
  for (const component of contract.podRules.injectCredentials) {
    const w = componentWorkload(objects, component);
    t.same(
      envOf(mainContainerOf(w), ENV.redisPassword)?.valueFrom?.secretKeyRef,
      { name: 'corp-redis', key: 'pw' },
      component,
    );
    t.match(
      podTemplateOf(w).metadata.annotations,
      {
        [contract.annotations.redisSecretName]: 'corp-redis',
        [contract.annotations.redisSecretKey]: 'pw',
      },
      `${component}: annotations for dify-guard`,
    );
  }
});

t.test('keys shared by api, sandbox and plugin daemon reference the same Secret keys', async (t) => {
  const api = componentContainer(base.objects, contract.components.api);
  const sandbox = componentContainer(base.objects, contract.components.sandbox);
  const daemon = componentContainer(base.objects, contract.components.pluginDaemon);
  const ref = (c: Container, n: string): unknown => envOf(c, n)?.valueFrom?.secretKeyRef;
  for (const [a, b, other] of [
    ['CODE_EXECUTION_API_KEY', 'API_KEY', sandbox],
    ['PLUGIN_DAEMON_KEY', 'SERVER_KEY', daemon],
    ['INNER_API_KEY_FOR_PLUGIN', 'DIFY_INNER_API_KEY', daemon],
  ] as const) {
    t.ok(ref(api, a), `${a} by secretKeyRef`);
    t.same(ref(api, a), ref(other, b), `api ${a} == ${b}`);
  }
  t.ok(ref(api, 'SECRET_KEY'), 'SECRET_KEY by secretKeyRef');
  t.equal(
    envOf(api, 'PLUGIN_DAEMON_URL')?.value,
    `http://${releaseName('component', contract.components.pluginDaemon)}:5002`,
  );
  t.equal(
    envOf(daemon, 'DIFY_INNER_API_URL')?.value,
    `http://${releaseName('component', contract.components.api)}:5001`,
  );
});

t.test('generated shared keys are kept when given, and differ per key when generated', async (t) => {
  const given = testSecret();
  const { objects } = await renderChart({ secrets: { sandboxApiKey: given } });
  const api = componentContainer(objects, contract.components.api);
  const ref = envOf(api, 'CODE_EXECUTION_API_KEY')!.valueFrom!.secretKeyRef!;
  const secret = objects.find((o) => kindOf(o) === 'Secret' && nameOf(o) === ref.name)!;
  const data = secret.data as Record<string, string>;
  t.ok(Buffer.from(data[ref.key]!, 'base64').toString() === given, 'the given key is used');
  const generated = ['PLUGIN_DAEMON_KEY', 'INNER_API_KEY_FOR_PLUGIN'].map(
    (n) => data[envOf(api, n)!.valueFrom!.secretKeyRef!.key],
  );
  t.ok(
    generated.every((v) => v && Buffer.from(v, 'base64').length >= 32),
    'generated keys are long',
  );
  t.not(generated[0], generated[1]);
});

t.test('the OpenAI key (deploy.sh --openai-api-key) is kept in a Secret and referenced', async (t) => {
  const key = `sk-${testSecret()}`;
  const { objects, text } = await renderChart({ secrets: { openaiApiKey: key } });
  for (const component of [contract.components.api, contract.components.worker]) {
    const ref = envOf(componentContainer(objects, component), 'OPENAI_API_KEY')?.valueFrom?.secretKeyRef;
    t.ok(ref, component);
    const secret = objects.find((o) => kindOf(o) === 'Secret' && nameOf(o) === ref!.name)!;
    t.ok(Buffer.from(String((secret.data as Json)[ref!.key]), 'base64').toString() === key);
  }
  t.notOk(text.includes(key));
});

t.test('no secret value (nor its base64) appears outside a Secret', async (t) => {
  const secrets = {
    postgres: testSecret(),
    difyKey: testSecret(),
    redis: testSecret(),
    openai: testSecret(),
    sandbox: testSecret(),
  };
  const { objects } = await render({
    postgresql: { auth: { password: secrets.postgres } },
    secrets: { difySecretKey: secrets.difyKey, openaiApiKey: secrets.openai, sandboxApiKey: secrets.sandbox },
    pluginDaemon: { redis: { authEnabled: true, password: secrets.redis } },
    vectorStore: { type: 'pgvector' },
    loadBalancer: { enabled: true },
  });
  const outside = JSON.stringify(objects.filter((o) => kindOf(o) !== 'Secret'));
  for (const [what, value] of Object.entries(secrets)) {
    t.notOk(outside.includes(value), `${what}: not in any non-Secret object`);
    t.notOk(outside.includes(Buffer.from(value).toString('base64')), `${what}: nor its base64`);
  }
  // Every env entry whose name says password/key/secret is a reference.
  for (const w of workloads(objects)) {
    for (const c of allContainersOf(w)) {
      for (const e of (c.env ?? []).filter((e) => namesASecret(e.name))) {
        t.ok(e.valueFrom?.secretKeyRef, `${nameOf(w)}/${c.name} ${e.name} is a secretKeyRef`);
      }
    }
  }
});

t.test('pgvector: PGVECTOR_PASSWORD also by secretKeyRef to the PostgreSQL Secret', async (t) => {
  const { objects } = await renderChart({ vectorStore: { type: 'pgvector' } });
  const api = componentContainer(objects, contract.components.api);
  t.equal(envOf(api, 'VECTOR_STORE')?.value, 'pgvector');
  t.same(envOf(api, 'PGVECTOR_PASSWORD')?.valueFrom?.secretKeyRef, {
    name: pgSecret,
    key: SECRET_KEYS.postgresPassword,
  });
});

t.test('extraEnv cannot set a name the chart sets (no duplicates, no literal DB_PASSWORD)', async (t) => {
  for (const [path, values] of [
    ['api.extraEnv', { api: { extraEnv: [{ name: ENV.dbPassword, value: 'x' }] } }],
    ['pluginDaemon.extraEnv', { pluginDaemon: { extraEnv: [{ name: 'DB_DATABASE', value: 'dify' }] } }],
    ['dify.extraEnv', { dify: { extraEnv: [{ name: ENV.migrationEnabled, value: 'true' }] } }],
  ] as const) {
    const r = await template(withRequired(values as Json));
    t.not(r.status, 0, `${path} duplicate refused`);
    t.match(r.stderr, /is set twice in the .* container: the chart already sets it/, path);
  }
  const ok = await renderChart({ api: { extraEnv: [{ name: 'SENTRY_DSN', value: 'https://x' }] } });
  t.equal(
    envOf(componentContainer(ok.objects, contract.components.api), 'SENTRY_DSN')?.value,
    'https://x',
    'a new name is added',
  );
});

/** Resources, no privilege escalation, every capability dropped. */
function assertHardened(t: Test, w: Json, c: Container): void {
  t.ok(c.resources && Object.keys(c.resources as Json).length > 0, `${nameOf(w)}/${c.name}: resources`);
  const sc = c.securityContext as Json | undefined;
  t.equal(sc?.allowPrivilegeEscalation, false, `${nameOf(w)}/${c.name}: no privilege escalation`);
  t.ok(
    ((sc?.capabilities as Json | undefined)?.drop as string[] | undefined)?.includes('ALL'),
    `${nameOf(w)}/${c.name}: drops ALL capabilities`,
  );
}

/** A liveness probe on every long-running container; a readiness probe too, except on worker and beat (no port). */
function assertProbes(t: Test, w: Json): void {
  if (kindOf(w) === 'Job') return;
  for (const c of containersOf(w)) t.ok(c.livenessProbe, `${nameOf(w)}/${c.name}: liveness probe`);
  if ([contract.components.worker, contract.components.beat].includes(componentOf(w))) return;
  for (const c of containersOf(w)) t.ok(c.readinessProbe, `${nameOf(w)}/${c.name}: readiness probe`);
}

t.test('probes, resources and security contexts on every workload container', async (t) => {
  const { objects } = await renderChart({ loadBalancer: { enabled: true } });
  for (const w of workloads(objects)) {
    t.ok(podTemplateOf(w).spec.securityContext, `${nameOf(w)}: pod securityContext`);
    for (const c of allContainersOf(w)) assertHardened(t, w, c);
    assertProbes(t, w);
  }
});

t.test("Dify pods carry no service account token; dify-guard's does", async (t) => {
  for (const w of workloads(base.objects)) {
    const spec = podTemplateOf(w).spec;
    if (podTemplateOf(w).metadata.labels?.[LABELS.name] === contract.values.guardName)
      t.not(spec.automountServiceAccountToken, false, nameOf(w));
    else t.equal(spec.automountServiceAccountToken, false, nameOf(w));
  }
});
