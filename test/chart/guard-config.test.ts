// The dify-guard Deployment's env against dify-guard's own setting table (src/config.ts, engineer
// "server"): every DIFY_GUARD_* the chart sets is a known setting, and the whole env loads without a
// problem and gives dify-guard its own defaults (the contract's name templates) but for what the values tune.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { LABELS, contract } from '../../src/contract.js';
import { defaultGuardSettings, type GuardSettings } from '../../src/admission/settings.js';
import { repoRoot } from '../../harness/binaries.js';
import { ofKind, template, type Container } from '../../harness/helm.js';
import { mainContainerOf, podLabelsOf, renderChart, withRequired } from './support.js';

interface ConfigModule {
  SETTINGS?: Record<string, { env: string }>;
  CONFIG_FILE_ENV?: string;
  loadConfig?: (
    env: NodeJS.ProcessEnv,
    readText?: (path: string) => string,
  ) => { ok: true; config: Record<string, unknown>; settings: GuardSettings } | { ok: false; problems: string[] };
}

// Read dynamically, so a missing export fails with a sentence rather than a type error elsewhere.
const configModule = (await import(join(repoRoot, 'src/config.ts'))) as ConfigModule;
const { SETTINGS, CONFIG_FILE_ENV, loadConfig } = configModule;

t.test('src/config.ts exports its setting table', async (t) => {
  t.ok(
    SETTINGS && typeof SETTINGS === 'object',
    'src/config.ts must export SETTINGS ({ [key]: { env: "DIFY_GUARD_..." } }): the chart\'s DIFY_GUARD_* names are checked against it',
  );
  t.type(loadConfig, 'function', 'src/config.ts must export loadConfig(env)');
  t.type(CONFIG_FILE_ENV, 'string', 'src/config.ts must export CONFIG_FILE_ENV');
});

const guardEnv = (c: Container): Record<string, string> =>
  Object.fromEntries(
    (c.env ?? []).map((e) => {
      if (e.value === undefined) throw new Error(`${e.name}: dify-guard settings are plain values`);
      return [e.name, e.value];
    }),
  );

for (const [label, values] of [
  ['defaults', {}],
  [
    'tuned',
    {
      webhook: {
        logLevel: 'debug',
        eventsEnabled: false,
        bodyLimitBytes: 1048576,
        shutdownTimeoutSeconds: 40,
        pvcResyncSeconds: 60,
        bindAddress: '::',
        difyImages: ['ai/dify-backend', 'langgenius/dify-api'],
        templatePolicy: 'deny',
        postgresql: {
          addressTemplate: '{release}-pg.{namespace}.svc.cluster.local:6432',
          verifyTimeoutMs: 1500,
          rateLimit: 5,
        },
      },
    },
  ],
  ['PostgreSQL Service on another port', { postgresql: { service: { port: 15432 } } }],
] as const) {
  t.test(`chart env (${label}) is what dify-guard reads`, async (t) => {
    const { objects } = await renderChart(values);
    const deploy = ofKind(objects, 'Deployment').find(
      (d) => podLabelsOf(d)[LABELS.name] === contract.values.guardName,
    )!;
    const env = guardEnv(mainContainerOf(deploy));
    const known = new Set([...Object.values(SETTINGS ?? {}).map((s) => s.env), CONFIG_FILE_ENV]);
    const names = Object.keys(env).filter((n) => n.startsWith('DIFY_GUARD_'));
    t.ok(names.length >= 14, 'every setting of src/config.ts the chart manages is set');
    for (const name of names) t.ok(known.has(name), `${name} is a setting of src/config.ts`);
    t.same(
      Object.keys(env).filter((n) => !n.startsWith('DIFY_GUARD_')),
      [],
      'nothing else',
    );

    const loaded = loadConfig!(env, () => {
      throw new Error('no config file expected');
    });
    t.same(loaded.ok ? [] : loaded.problems, [], "loadConfig accepts the chart's env");
    if (!loaded.ok) return;
    const c = loaded.config;
    const tuned = label === 'tuned';
    const difyImages = tuned ? [...contract.difyImages, 'ai/dify-backend'] : contract.difyImages;
    t.match(c, {
      port: contract.webhook.securePort,
      healthPort: contract.webhook.healthPort,
      tlsCertFile: '/etc/dify-guard/tls/tls.crt',
      tlsKeyFile: '/etc/dify-guard/tls/tls.key',
    });
    t.same(
      loaded.settings,
      { ...defaultGuardSettings, difyImages, templatePolicy: tuned ? 'deny' : defaultGuardSettings.templatePolicy },
      "the decisions' settings are dify-guard's defaults (the contract's name templates, Redis port and key) " +
        'but for what the values tune',
    );
    const shutdown = Number(c.shutdownTimeoutSeconds);
    const grace = Number(
      (deploy.spec as { template: { spec: { terminationGracePeriodSeconds: number } } }).template.spec
        .terminationGracePeriodSeconds,
    );
    t.ok(grace > shutdown, "the pod's grace period outlasts dify-guard's own shutdown timeout");
    t.same(c.difyImages, difyImages, "the contract's Dify images, then webhook.difyImages, without repeats");
    if (tuned) {
      t.match(c, {
        logLevel: 'debug',
        eventsEnabled: false,
        bodyLimitBytes: 1048576,
        pvcResyncSeconds: 60,
        bindAddress: '::',
        templatePolicy: 'deny',
      });
    }
    const address = {
      defaults: contract.postgresqlAddressTemplate,
      tuned: '{release}-pg.{namespace}.svc.cluster.local:6432',
      'PostgreSQL Service on another port': contract.postgresqlAddressTemplate.replace(/:\d+$/, ':15432'),
    }[label];
    const check = {
      postgresqlAddressTemplate: address,
      postgresqlVerifyTimeoutMs: tuned ? 1500 : 2000,
      postgresqlVerifyRateLimit: tuned ? 5 : 3,
    };
    t.match(c, check, 'where and how dify-guard checks a new PostgreSQL password');
  });
}

t.test(
  'a database check longer than the webhook timeout is refused at render time; the schema rejects a bad address',
  async (t) => {
    const slow = await template(
      withRequired({ webhook: { timeoutSeconds: 2, postgresql: { verifyTimeoutMs: 2000 } } }),
    );
    t.not(slow.status, 0);
    t.match(slow.stderr, 'webhook.postgresql.verifyTimeoutMs (2000) must be below webhook.timeoutSeconds (2 s)');
    const bad = await template(withRequired({ webhook: { postgresql: { addressTemplate: 'no port here' } } }));
    t.not(bad.status, 0);
    t.match(bad.stderr, 'addressTemplate');
  },
);

t.test("the image tag default is package.json's version (= Chart.yaml version)", async (t) => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const chartYaml = readFileSync(join(repoRoot, 'chart/Chart.yaml'), 'utf8');
  t.match(chartYaml, new RegExp(`^version: ${pkg.version.replace(/\./g, '\\.')}$`, 'm'));
});

t.test('values.schema.json accepts exactly the image paths dify-guard accepts', async (t) => {
  const schema = JSON.parse(readFileSync(join(repoRoot, 'chart/values.schema.json'), 'utf8')) as {
    properties: {
      webhook: { properties: { difyImages: { items: { pattern: string } }; templatePolicy: { enum: string[] } } };
    };
  };
  const webhook = schema.properties.webhook.properties;
  const settings = SETTINGS as unknown as Record<string, { schema: { items?: { pattern: string }; enum?: string[] } }>;
  t.equal(
    webhook.difyImages.items.pattern,
    settings.difyImages?.schema.items?.pattern,
    'the same pattern as DIFY_GUARD_DIFY_IMAGES',
  );
  t.same(
    webhook.templatePolicy.enum,
    settings.templatePolicy?.schema.enum,
    'the same policies as DIFY_GUARD_TEMPLATE_POLICY',
  );
  t.same(webhook.templatePolicy.enum, contract.templatePolicies);
});
