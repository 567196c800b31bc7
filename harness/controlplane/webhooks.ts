// Registers the webhook configurations that `helm template` renders from chart/ with a control
// plane, pointed (by the chart's own webhook.url/webhook.caBundle values) at a local dify-guard,
// then waits until the API server really calls them, as envtest does.
import { LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { waitFor } from '../commands.js';
import { paths, type Json, type KubeRest } from '../kube-rest.js';
import { kindOf, nameOf, randomSecret, renderChart, testValues, writeValues } from './chart.js';
import type { DifyGuard } from './dify-guard.js';
import type { ControlPlane } from './harness.js';

export const WEBHOOK_KINDS = ['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration'] as const;

const collection = (kind: string): string => `/apis/admissionregistration.k8s.io/v1/${kind.toLowerCase()}s`;

export interface RegisteredWebhooks {
  configurations: Json[];
  /** Every webhook entry of those configurations. */
  webhooks: Json[];
}

/** Renders only the webhook configurations of the chart for a dify-guard running at `guard`. */
export async function renderWebhookConfigurations(
  cp: ControlPlane,
  guard: DifyGuard,
  { release = 'dify', namespace = 'dify', values = {} }: { release?: string; namespace?: string; values?: Json } = {},
): Promise<Json[]> {
  const valuesFile = writeValues(
    cp.dir,
    `webhooks-${release}`,
    testValues({ url: guard.url(''), caBundle: guard.caBundle }, values),
  );
  return webhookConfigurations(await renderChart({ release, namespace, valuesFile, home: cp.dir }));
}

/** The webhook configurations among the chart's rendered objects (there must be some). */
function webhookConfigurations(objects: Json[]): Json[] {
  const configurations = objects.filter((o) => (WEBHOOK_KINDS as readonly string[]).includes(kindOf(o)));
  if (configurations.length === 0)
    throw new Error('helm template rendered no Mutating/ValidatingWebhookConfiguration from chart/');
  return configurations;
}

/** Checks that every webhook calls this dify-guard with its CA (the chart did the rewrite, not the test). */
export function webhookEntries(configurations: Json[], guard: DifyGuard): Json[] {
  const entries: Json[] = [];
  for (const config of configurations) {
    for (const webhook of (config.webhooks as Json[] | undefined) ?? []) {
      const clientConfig = (webhook.clientConfig ?? {}) as Json;
      const url = String(clientConfig.url ?? '');
      if (!url.startsWith(guard.url('/'))) {
        const calls = url || JSON.stringify(clientConfig);
        throw new Error(
          `${kindOf(config)} ${nameOf(config)} webhook ${String(webhook.name)} calls ${calls}, ` +
            `not ${guard.url('/...')}: webhook.url was not applied`,
        );
      }
      if (clientConfig.caBundle !== guard.caBundle) {
        throw new Error(
          `${kindOf(config)} ${nameOf(config)} webhook ${String(webhook.name)} does not carry the local CA: ` +
            'webhook.caBundle was not applied',
        );
      }
      entries.push(webhook);
    }
  }
  return entries;
}

/**
 * Creates (or replaces) the configurations, then waits until both webhooks answer. `rendered`: the chart
 * already rendered for `guard` (guardValues), whose configurations are taken instead of rendering it again.
 */
export async function registerWebhooks(
  cp: ControlPlane,
  guard: DifyGuard,
  options: { release?: string; namespace?: string; values?: Json; rendered?: Json[] } = {},
): Promise<RegisteredWebhooks> {
  const configurations = options.rendered
    ? webhookConfigurations(options.rendered)
    : await renderWebhookConfigurations(cp, guard, options);
  const webhooks = webhookEntries(configurations, guard);
  const rest = cp.rest();
  for (const config of configurations) {
    const created = await rest.create(collection(kindOf(config)), config);
    if (created.status === 409) {
      const existing = await rest.ok('GET', `${collection(kindOf(config))}/${nameOf(config)}`);
      const metadata = { ...(config.metadata as Json), resourceVersion: (existing.metadata as Json).resourceVersion };
      await rest.ok('PUT', `${collection(kindOf(config))}/${nameOf(config)}`, { body: { ...config, metadata } });
    } else if (created.status !== 201) {
      throw new Error(
        `creating ${kindOf(config)} ${nameOf(config)}: ${created.status} ${String(created.body.message)}`,
      );
    }
  }
  await waitUntilEffective(rest);
  return { configurations, webhooks };
}

export const PROBE_NAMESPACE = 'dify-guard-probe';
const PROBE_RELEASE = 'probe';

/** A Dify api pod that the mutating webhook must change (MIGRATION_ENABLED=true). */
export function probePod(): Json {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: 'probe-api-',
      namespace: PROBE_NAMESPACE,
      labels: {
        [LABELS.name]: contract.values.difyName,
        [LABELS.instance]: PROBE_RELEASE,
        [LABELS.component]: contract.components.api,
      },
    },
    spec: {
      containers: [{ name: 'api', image: 'probe', env: [{ name: contract.env.migrationEnabled, value: 'true' }] }],
    },
  };
}

/** The release's PostgreSQL Secret with two different passwords: the validating webhook always refuses it. */
function probeSecret(): Json {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: expandName(contract.names.postgresqlSecret, PROBE_RELEASE),
      namespace: PROBE_NAMESPACE,
      labels: {
        [LABELS.name]: contract.values.difyName,
        [LABELS.instance]: PROBE_RELEASE,
        [LABELS.component]: contract.components.postgresql,
      },
    },
    stringData: { [SECRET_KEYS.postgresPassword]: randomSecret(), [SECRET_KEYS.password]: randomSecret() },
  };
}

/**
 * The API server picks up new configurations asynchronously; dry-run requests that only the
 * webhooks would change or refuse tell when both are live (dry run: nothing is stored, no Event).
 */
export async function waitUntilEffective(rest: KubeRest, timeoutMs = 30_000): Promise<void> {
  const ns = await rest.create(paths.namespaces, { metadata: { name: PROBE_NAMESPACE } });
  if (ns.status !== 201 && ns.status !== 409) throw new Error(`creating namespace ${PROBE_NAMESPACE}: ${ns.status}`);
  await waitFor(
    'the pods webhook to mutate a dry-run Dify pod',
    async () => {
      const res = await rest.create(paths.pods(PROBE_NAMESPACE), probePod(), { dryRun: 'All' });
      const env =
        (((res.body.spec as Json | undefined)?.containers as Json[] | undefined)?.[0]?.env as Json[] | undefined) ?? [];
      return env.some((e) => e.name === contract.env.migrationEnabled && e.value === 'false') ? true : undefined;
    },
    { timeoutMs, intervalMs: 200 },
  );
  await waitFor(
    'the secrets webhook to refuse a dry-run Secret',
    async () => {
      const res = await rest.create(paths.secrets(PROBE_NAMESPACE), probeSecret(), { dryRun: 'All' });
      return res.status === 403 && /admission webhook/.test(String(res.body.message)) ? true : undefined;
    },
    { timeoutMs, intervalMs: 200 },
  );
}
