// Pods through a real API server with the chart's MutatingWebhookConfiguration and the real
// dify-guard: Dify pods (as the chart renders them, then tampered with) are stored with
// MIGRATION_ENABLED=false and Secret references; other pods come back exactly as sent.
import t, { type Test } from 'tap';
import { ENV, LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { paths, type Json } from '../../harness/kube-rest.js';
import { findObject, podFromTemplate, randomSecret } from '../../harness/controlplane/chart.js';
import { podWithDifyEnvNames } from '../../harness/controlplane/other-pods.js';
import { Release, startReleaseStack } from '../../harness/controlplane/release.js';
import { POD_WEBHOOK, envVar } from '../../harness/controlplane/stack.js';
import type { AuditEvent } from '../../harness/controlplane/harness.js';

const release = 'dify';
const namespace = 'dify';
const dbSecret = expandName(contract.names.postgresqlSecret, release);

const { cp, guard, rest, rendered } = await startReleaseStack(t, 'pods', new Release(release, namespace));

/** The env list as the API server stores it (an empty `value` is omitted, as Go's omitempty does). */
const asStored = (env: unknown): Json[] =>
  ((env as Json[] | undefined) ?? []).map((e) =>
    e.value === '' ? Object.fromEntries(Object.entries(e).filter(([k]) => k !== 'value')) : e,
  );

const containerNames = (pod: Json): string[] => ((pod.spec as Json).containers as Json[]).map((c) => String(c.name));

/** Sets one env var of every container to `entry` (replacing any earlier definition in place). */
function setEnv(pod: Json, entry: Json): void {
  for (const c of (pod.spec as Json).containers as Json[]) {
    const env = (c.env as Json[] | undefined) ?? [];
    const at = env.findIndex((e) => e.name === entry.name);
    if (at >= 0) env[at] = entry;
    else env.push(entry);
    c.env = env;
  }
}

function chartPod(kind: string, component: string): Json {
  const name =
    component === contract.components.migration
      ? expandName(contract.names.migrationJob, release)
      : expandName(contract.names.component, release, component);
  return podFromTemplate(findObject(rendered, kind, name), namespace);
}

/** The API server's own record of whether pods.dify-guard.io changed one request (one entry a call, none if not called). */
function podWebhookMutated(event: AuditEvent): unknown[] {
  return Object.entries(event.annotations ?? {})
    .filter(([k]) => k.startsWith('mutation.webhook.admission.k8s.io/'))
    .map(([, v]) => JSON.parse(v) as Json)
    .filter((r) => r.webhook === POD_WEBHOOK)
    .map((r) => r.mutated);
}

async function createPod(ns: string, pod: Json): Promise<{ stored: Json; warnings: string[]; audit: AuditEvent }> {
  const res = await rest.create(paths.pods(ns), pod);
  if (res.status !== 201) throw new Error(`create pod: ${res.status} ${String(res.body.message)}`);
  const metadata = res.body.metadata as Json;
  const name = String(metadata.name);
  const stored = await rest.ok('GET', paths.pod(ns, name));
  const audit = await cp.auditEventOf(res.auditId);
  return { stored, warnings: res.warnings, audit };
}

for (const component of [contract.components.api, contract.components.worker, contract.components.pluginDaemon]) {
  t.test(`a chart-rendered ${component} pod with MIGRATION_ENABLED=true and a literal DB_PASSWORD`, async (t) => {
    const pod = chartPod('Deployment', component);
    t.equal(
      (pod.metadata as Json & { labels: Json }).labels[LABELS.component],
      component,
      'the chart labels the pod with its component',
    );
    const literal = randomSecret();
    setEnv(pod, { name: ENV.migrationEnabled, value: 'true' });
    setEnv(pod, { name: ENV.dbPassword, value: literal });

    const { stored, warnings, audit } = await createPod(namespace, pod);
    for (const c of containerNames(pod)) {
      t.same(
        envVar(stored, c, ENV.migrationEnabled),
        { name: ENV.migrationEnabled, value: 'false' },
        `${c}: MIGRATION_ENABLED forced to "false"`,
      );
      t.same(
        envVar(stored, c, ENV.dbPassword),
        {
          name: ENV.dbPassword,
          valueFrom: { secretKeyRef: { name: dbSecret, key: SECRET_KEYS.postgresPassword } },
        },
        `${c}: DB_PASSWORD from the release's PostgreSQL Secret`,
      );
    }
    t.notOk(JSON.stringify(stored).includes(literal), 'the literal password is stored nowhere in the pod');
    t.ok(
      warnings.some((w) => w.includes(ENV.migrationEnabled)),
      'the client is warned about MIGRATION_ENABLED',
    );
    t.ok(
      warnings.some((w) => w.includes(ENV.dbPassword)),
      'the client is warned about DB_PASSWORD',
    );
    t.same(
      podWebhookMutated(audit),
      [true],
      'the API server audit log records that pods.dify-guard.io mutated the pod',
    );
    t.notOk(guard.process.log().includes(literal), 'dify-guard logged no password');
  });
}

t.test('a chart-rendered api pod as is needs no change (chart and webhook agree)', async (t) => {
  const pod = chartPod('Deployment', contract.components.api);
  const { stored, warnings, audit } = await createPod(namespace, pod);
  for (const c of containerNames(pod)) {
    const sent = ((pod.spec as Json).containers as Json[]).find((x) => x.name === c) as Json;
    t.same(envVar(stored, c, ENV.migrationEnabled), { name: ENV.migrationEnabled, value: 'false' });
    t.same(
      (((stored.spec as Json).containers as Json[]).find((x) => x.name === c) as Json).env,
      asStored(sent.env),
      `${c}: env stored as rendered`,
    );
  }
  t.same(warnings, [], 'no warning');
  t.same(podWebhookMutated(audit), [false], 'the webhook was called and changed nothing');
});

t.test('the migration Job pod gets Secret references but keeps its MIGRATION_ENABLED', async (t) => {
  const pod = chartPod('Job', contract.components.migration);
  const literal = randomSecret();
  setEnv(pod, { name: ENV.dbPassword, value: literal });
  const sentMigration = containerNames(pod).map((c) => envVar(pod, c, ENV.migrationEnabled));
  const { stored } = await createPod(namespace, pod);
  for (const [i, c] of containerNames(pod).entries()) {
    t.same(
      envVar(stored, c, ENV.dbPassword)?.valueFrom,
      { secretKeyRef: { name: dbSecret, key: SECRET_KEYS.postgresPassword } },
      `${c}: DB_PASSWORD reference`,
    );
    t.same(envVar(stored, c, ENV.migrationEnabled), sentMigration[i], `${c}: MIGRATION_ENABLED untouched`);
  }
  t.notOk(JSON.stringify(stored).includes(literal), 'the literal password is stored nowhere in the pod');
});

/** A pod the webhook must leave alone: what was sent is what is stored. */
function tamperedPod(ns: string, labels: Json): Json {
  const metadata = { generateName: 'other-', namespace: ns, labels, annotations: { 'example.com/note': 'kept' } };
  return podWithDifyEnvNames(metadata, 'example.com/app:1', [{ name: 'OTHER', value: 'x' }]);
}

async function assertUntouched(t: Test, ns: string, pod: Json): Promise<void> {
  const { stored, warnings, audit } = await createPod(ns, pod);
  const sent = ((pod.spec as Json).containers as Json[])[0] as Json;
  const kept = ((stored.spec as Json).containers as Json[])[0] as Json;
  t.same(kept.env, sent.env, 'env exactly as sent');
  t.has(kept, sent, 'the container exactly as sent (the API server only adds its defaults)');
  t.same((stored.metadata as Json).labels, (pod.metadata as Json).labels, 'labels as sent');
  t.same((stored.metadata as Json).annotations, (pod.metadata as Json).annotations, 'annotations as sent');
  t.same(warnings, [], 'no warning');
  t.same(podWebhookMutated(audit), [], 'the webhook was not even called');
}

t.test('a non-Dify pod comes back exactly as sent', async (t) => {
  await assertUntouched(t, namespace, tamperedPod(namespace, { app: 'something-else' }));
});

t.test('a Dify-labelled api pod in kube-system comes back exactly as sent', async (t) => {
  await assertUntouched(
    t,
    'kube-system',
    tamperedPod('kube-system', {
      [LABELS.name]: contract.values.difyName,
      [LABELS.instance]: release,
      [LABELS.component]: contract.components.api,
    }),
  );
});

t.test("dify-guard's own pods are not sent to it", async (t) => {
  await assertUntouched(
    t,
    namespace,
    tamperedPod(namespace, {
      [LABELS.name]: contract.values.guardName,
      [LABELS.instance]: release,
      [LABELS.component]: contract.components.webhook,
    }),
  );
});
