// Dify from any chart, through a real API server with the chart's webhook configurations and the real
// dify-guard: pods shaped as the community dify-helm chart renders them (no labels of ours, the
// langgenius image, MIGRATION_ENABLED "true" from a ConfigMap) are mutated; a non-Dify pod and a
// kube-system Dify pod are never even sent (dify-guard's request counter does not move). Pod
// templates: `kubectl apply` of a Deployment storing a literal password prints dify-guard's warning
// (never the password), a ReplicaSet its Deployment owns is not checked again, a CronJob is warned and
// its Job is not sent, and deny mode refuses.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { ENV, contract } from '../../src/contract.js';
import { paths, type Json } from '../../harness/kube-rest.js';
import { randomSecret } from '../../harness/controlplane/chart.js';
import { startDifyGuard, type DifyGuard } from '../../harness/controlplane/dify-guard.js';
import { POD_WEBHOOK, ensureNamespace, envVar, startStack } from '../../harness/controlplane/stack.js';
import { podWithDifyEnvNames } from '../../harness/controlplane/other-pods.js';
import { registerWebhooks } from '../../harness/controlplane/webhooks.js';
import type { AuditEvent } from '../../harness/controlplane/harness.js';

const namespace = 'community';
const stack = await startStack(t, 'any-dify');
const { cp, guard, rest } = stack;
await ensureNamespace(rest, namespace);

/** The labels the community chart puts on its api pods: none of ours beyond name/instance, its own `component`. */
const communityLabels = {
  'app.kubernetes.io/name': 'dify',
  'app.kubernetes.io/instance': 'community',
  component: 'api',
};

/** An api pod as BorisPolonsky/dify-helm renders it: env from a ConfigMap and a Secret, a few entries of its own. */
function communityApiPod(extra: Json = {}): Json {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { generateName: 'community-dify-api-', namespace, labels: communityLabels, ...extra },
    spec: {
      enableServiceLinks: false,
      containers: [
        {
          name: 'api',
          image: 'langgenius/dify-api:1.11.4',
          env: [{ name: 'LOG_LEVEL', value: 'INFO' }],
          envFrom: [{ configMapRef: { name: 'community-dify-api' } }, { secretRef: { name: 'community-dify-api' } }],
          ports: [{ name: 'api', containerPort: 5001, protocol: 'TCP' }],
        },
      ],
    },
  };
}

/** Sum of dify-guard's dify_guard_admission_requests_total for one route. */
async function requestsTo(g: DifyGuard, route: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.healthPort}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`dify_guard_admission_requests_total{route="${route}"`))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

function mutationRecords(event: AuditEvent): Json[] {
  return Object.entries(event.annotations ?? {})
    .filter(([k]) => k.startsWith('mutation.webhook.admission.k8s.io/'))
    .map(([, v]) => JSON.parse(v) as Json)
    .filter((r) => r.webhook === POD_WEBHOOK);
}

async function createPod(ns: string, pod: Json): Promise<{ stored: Json; warnings: string[]; audit: AuditEvent }> {
  const res = await rest.create(paths.pods(ns), pod);
  if (res.status !== 201) throw new Error(`create pod: ${res.status} ${String(res.body.message)}`);
  const stored = await rest.ok('GET', paths.pod(ns, String((res.body.metadata as Json).name)));
  return { stored, warnings: res.warnings, audit: await cp.auditEventOf(res.auditId) };
}

t.test(
  'a community-chart api pod (MIGRATION_ENABLED "true" in its ConfigMap) gets MIGRATION_ENABLED=false',
  async (t) => {
    await rest.create(`/api/v1/namespaces/${namespace}/configmaps`, {
      metadata: { name: 'community-dify-api' },
      data: { MODE: 'api', MIGRATION_ENABLED: 'true' },
    });
    const { stored, warnings, audit } = await createPod(namespace, communityApiPod());
    t.same(
      envVar(stored, 'api', ENV.migrationEnabled),
      { name: ENV.migrationEnabled, value: 'false' },
      'an explicit "false", which wins over the ConfigMap',
    );
    t.same(envVar(stored, 'api', 'LOG_LEVEL'), { name: 'LOG_LEVEL', value: 'INFO' }, 'its own entries kept');
    t.notOk(envVar(stored, 'api', ENV.dbPassword), 'no credentials: its Secret is unknown');
    t.notOk(envVar(stored, 'api', ENV.redisHost), 'no REDIS_HOST of this chart');
    t.ok(
      warnings.some((w) => w.includes(ENV.migrationEnabled)),
      'the client is warned',
    );
    t.same(
      mutationRecords(audit).map((r) => r.mutated),
      [true],
      'the API server records the mutation by pods.dify-guard.io',
    );
    const logged = await guard.waitForLog(
      'the mutation',
      (l) => l.msg === 'Dify pod mutated' && l.namespace === namespace,
    );
    t.match(logged, {
      generateName: 'community-dify-api-',
      changes: [{ container: 'api', variables: [ENV.migrationEnabled] }],
    });
  },
);

t.test('a community-chart pod that names its Secret: credentials injected there; a sidecar left as sent', async (t) => {
  const literal = randomSecret();
  const pod = communityApiPod({ annotations: { [contract.annotations.postgresqlSecretName]: 'community-postgresql' } });
  const containers = (pod.spec as Json).containers as Json[];
  (containers[0]!.env as Json[]).push({ name: ENV.dbPassword, value: literal });
  const sidecar = {
    name: 'log-shipper',
    image: 'fluent/fluent-bit:3.2.4',
    env: [{ name: 'FLUENT_LOG_LEVEL', value: 'info' }],
  };
  containers.push(sidecar);
  const { stored } = await createPod(namespace, pod);
  t.same(envVar(stored, 'api', ENV.dbPassword), {
    name: ENV.dbPassword,
    valueFrom: { secretKeyRef: { name: 'community-postgresql', key: contract.secretKeys.postgresPassword } },
  });
  const kept = ((stored.spec as Json).containers as Json[]).find((c) => c.name === 'log-shipper') as Json;
  t.same(kept.env, sidecar.env, 'the sidecar env exactly as sent: no password, no MIGRATION_ENABLED, no REDIS_HOST');
  t.notOk(JSON.stringify(stored).includes(literal), 'the literal is stored nowhere');
  t.notOk(guard.process.log().includes(literal), 'dify-guard logged no password');
});

t.test('the CEL also recognises a renamed image by a Dify-only setting, and a Dify init container', async (t) => {
  const renamed = communityApiPod();
  const api = ((renamed.spec as Json).containers as Json[])[0]!;
  api.image = 'harbor.corp/ai/dify-backend:1.11.4';
  const key = { secretKeyRef: { name: 'community-dify-api', key: 'PLUGIN_DAEMON_KEY' } };
  (api.env as Json[]).push({ name: 'PLUGIN_DAEMON_KEY', valueFrom: key });
  const byEnv = await createPod(namespace, renamed);
  t.same(
    envVar(byEnv.stored, 'api', ENV.migrationEnabled),
    { name: ENV.migrationEnabled, value: 'false' },
    'renamed image, Dify-only setting: mutated',
  );

  const withInit = communityApiPod();
  const app = ((withInit.spec as Json).containers as Json[])[0]!;
  app.image = 'example.com/other:1';
  app.env = [{ name: 'OTHER', value: 'x' }];
  delete app.envFrom;
  (withInit.spec as Json).initContainers = [
    {
      name: 'migrate-check',
      image: 'docker.io/langgenius/dify-api:1.11.4@sha256:' + 'a'.repeat(64),
      env: [{ name: ENV.migrationEnabled, value: 'true' }],
    },
  ];
  const byInit = await createPod(namespace, withInit);
  t.same(
    envVar(byInit.stored, 'migrate-check', ENV.migrationEnabled),
    { name: ENV.migrationEnabled, value: 'false' },
    'a Dify init container (registry and digest): sent, and its MIGRATION_ENABLED corrected',
  );
  t.same(envVar(byInit.stored, 'api', 'OTHER'), { name: 'OTHER', value: 'x' }, 'the other container as sent');
  t.notOk(envVar(byInit.stored, 'api', ENV.migrationEnabled), 'and not given MIGRATION_ENABLED');
});

async function assertNeverSent(t: Test, ns: string, pod: Json): Promise<void> {
  const before = await requestsTo(guard, contract.webhook.mutatePodsPath);
  const { stored, warnings, audit } = await createPod(ns, pod);
  const sent = ((pod.spec as Json).containers as Json[])[0] as Json;
  t.same((((stored.spec as Json).containers as Json[])[0] as Json).env, sent.env, 'env exactly as sent');
  t.same(warnings, [], 'no warning');
  t.same(mutationRecords(audit), [], 'the API server did not call pods.dify-guard.io');
  t.equal(
    await requestsTo(guard, contract.webhook.mutatePodsPath),
    before,
    "dify-guard's request counter did not move: no review arrived",
  );
}

t.test('a non-Dify pod (with env names Dify also uses) is never sent to dify-guard', async (t) => {
  t.ok((await requestsTo(guard, contract.webhook.mutatePodsPath)) > 0, 'the counter does count pod reviews');
  await assertNeverSent(
    t,
    namespace,
    podWithDifyEnvNames({ generateName: 'shop-', namespace, labels: { app: 'shop' } }, 'example.com/shop-api:2.3.1'),
  );
});

t.test('a Dify-looking pod in kube-system is never sent to dify-guard', async (t) => {
  const pod = communityApiPod();
  (pod.metadata as Json).namespace = 'kube-system';
  ((pod.spec as Json).containers as Json[])[0]!.env = [{ name: ENV.migrationEnabled, value: 'true' }];
  delete ((pod.spec as Json).containers as Json[])[0]!.envFrom;
  await assertNeverSent(t, 'kube-system', pod);
});

/** A community-chart Deployment whose template stores a literal DB_PASSWORD and MIGRATION_ENABLED "true". */
function literalDeployment(name: string, literal: string): Json {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace, labels: communityLabels },
    spec: {
      replicas: 1,
      selector: { matchLabels: { ...communityLabels, deployment: name } },
      template: {
        metadata: { labels: { ...communityLabels, deployment: name } },
        spec: {
          containers: [
            {
              name: 'api',
              image: 'langgenius/dify-api:1.11.4',
              env: [
                { name: ENV.migrationEnabled, value: 'true' },
                { name: ENV.dbPassword, value: literal },
              ],
            },
          ],
        },
      },
    },
  };
}

/** `kubectl apply -f` of the object, written as `<name>.json` in the control plane's folder. */
function kubectlApply(name: string, object: Json): ReturnType<typeof cp.kubectl> {
  const file = join(cp.dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(object));
  return cp.kubectl(['apply', '-f', file]);
}

t.test(
  'kubectl apply of a Deployment storing a literal DB_PASSWORD prints the warning, never the password',
  async (t) => {
    const literal = randomSecret();
    const applied = await kubectlApply('deployment-warn', literalDeployment('community-api', literal));
    t.equal(applied.status, 0, 'warn mode: applied');
    t.match(
      applied.stderr,
      /Warning: dify-guard: Deployment stores DB_PASSWORD as literal; use valueFrom\.secretKeyRef/,
    );
    t.match(applied.stderr, /Warning: dify-guard: Deployment sets MIGRATION_ENABLED other than "false"/);
    t.notOk(applied.stderr.includes(literal) || applied.stdout.includes(literal), 'kubectl printed no password');
    const line = await guard.waitForLog(
      'the template audit line',
      (l) => l.audit === true && l.kind === 'Deployment' && l.name === 'community-api',
    );
    t.match(line, { decision: 'allowed', mode: 'warn', operation: 'CREATE' });
    t.notOk(guard.process.log().includes(literal), 'dify-guard logged no password');

    // What the Deployment controller would write: a ReplicaSet it owns, with the same template.
    const deployment = await rest.ok('GET', `/apis/apps/v1/namespaces/${namespace}/deployments/community-api`);
    const before = await requestsTo(guard, contract.webhook.validateWorkloadsPath);
    const spec = deployment.spec as Json;
    const replicaSet = await rest.create(`/apis/apps/v1/namespaces/${namespace}/replicasets`, {
      metadata: {
        name: 'community-api-6d9f8b7c5',
        labels: communityLabels,
        ownerReferences: [
          {
            apiVersion: 'apps/v1',
            kind: 'Deployment',
            name: 'community-api',
            uid: (deployment.metadata as Json).uid,
            controller: true,
          },
        ],
      },
      spec: { replicas: 1, selector: spec.selector, template: spec.template },
    });
    t.equal(replicaSet.status, 201);
    t.same(replicaSet.warnings, [], "the controller's own write: no second warning");
    t.equal(await requestsTo(guard, contract.webhook.validateWorkloadsPath), before, 'not even sent to dify-guard');
  },
);

t.test('a CronJob (template under jobTemplate) is warned; a Job it owns is not sent', async (t) => {
  const literal = randomSecret();
  const deployment = literalDeployment('unused', literal);
  const template = (deployment.spec as Json).template as Json;
  ((template.spec as Json).containers as Json[])[0]!.env = [{ name: 'PGVECTOR_PASSWORD', value: literal }];
  (template.spec as Json).restartPolicy = 'Never';
  const cronJob = {
    apiVersion: 'batch/v1',
    kind: 'CronJob',
    metadata: { name: 'community-cleanup', namespace },
    spec: { schedule: '0 3 * * *', jobTemplate: { spec: { template } } },
  };
  const applied = await kubectlApply('cronjob-warn', cronJob);
  t.equal(applied.status, 0);
  t.match(applied.stderr, /Warning: dify-guard: CronJob stores PGVECTOR_PASSWORD as literal/);
  t.notOk(applied.stderr.includes(literal), 'kubectl printed no password');
  const stored = await rest.ok('GET', `/apis/batch/v1/namespaces/${namespace}/cronjobs/community-cleanup`);
  const before = await requestsTo(guard, contract.webhook.validateWorkloadsPath);
  const job = await rest.create(`/apis/batch/v1/namespaces/${namespace}/jobs`, {
    metadata: {
      name: 'community-cleanup-29000000',
      ownerReferences: [
        {
          apiVersion: 'batch/v1',
          kind: 'CronJob',
          name: 'community-cleanup',
          uid: (stored.metadata as Json).uid,
          controller: true,
        },
      ],
    },
    spec: { template },
  });
  t.equal(job.status, 201, String(job.body.message));
  t.same(job.warnings, [], "the CronJob controller's Job: no second warning");
  t.equal(await requestsTo(guard, contract.webhook.validateWorkloadsPath), before, 'not even sent to dify-guard');
});

t.test('kubectl apply of a bare pod: the literal in its last-applied-configuration is warned', async (t) => {
  const literal = randomSecret();
  const pod = communityApiPod({ name: 'community-bare' });
  delete (pod.metadata as Json).generateName;
  (((pod.spec as Json).containers as Json[])[0]!.env as Json[]).push({ name: ENV.dbPassword, value: literal });
  const applied = await kubectlApply('pod-bare', pod);
  t.equal(applied.status, 0);
  t.match(applied.stderr, /Warning: dify-guard: last-applied-configuration stores DB_PASSWORD as literal/);
  t.notOk(applied.stderr.includes(literal), 'kubectl printed no password');
});

t.test('deny mode (webhook.templatePolicy=deny): the same Deployment is refused', async (t) => {
  const denying = await startDifyGuard(t, cp, { env: { DIFY_GUARD_TEMPLATE_POLICY: 'deny' } });
  await registerWebhooks(cp, denying, { values: { webhook: { templatePolicy: 'deny' } } });
  const literal = randomSecret();
  const applied = await kubectlApply('deployment-deny', literalDeployment('community-api-denied', literal));
  t.not(applied.status, 0, 'refused');
  t.match(
    applied.stderr,
    /denied the request: Deployment community-api-denied: refused by dify-guard \(webhook\.templatePolicy=deny\)/,
  );
  t.match(applied.stderr, /valueFrom\.secretKeyRef/);
  t.notOk(applied.stderr.includes(literal), 'kubectl printed no password');
  const stored = await rest.request('GET', `/apis/apps/v1/namespaces/${namespace}/deployments/community-api-denied`);
  t.equal(stored.status, 404, 'nothing stored');
  await registerWebhooks(cp, guard);
});
