// The routes of this issue through the real fastify app (inject, no port): /validate/workloads in warn
// and deny mode, /mutate/pods logging names only and warning on a last-applied literal, and the
// metric of audited allowed Secret decisions. Nothing captured holds a password.
import t, { type Test } from 'tap';
import { buildServer } from '../../src/server.js';
import { ENV, contract } from '../../src/contract.js';
import { defaultGuardSettings, type GuardSettings } from '../../src/admission/settings.js';
import type { JsonObject } from '../../src/admission/types.js';
import { createMetrics } from '../../src/metrics.js';
import { loadReview, sensitiveStringsOf, type AdmissionReview } from '../../harness/fixtures.js';
import { captureAudit, captureLog, FakePvcCache } from '../server/support.js';
import { captureOutput, testSecret } from '../../harness/secrets.js';

function serve(t: Test, settings: GuardSettings = defaultGuardSettings) {
  const captured = captureLog('trace');
  const metrics = createMetrics({ defaultMetrics: false });
  const server = buildServer({
    settings,
    log: captured.log,
    metrics,
    pvcCache: new FakePvcCache(['dify/data-dify-postgresql-0']),
    audit: captureAudit(),
  });
  t.teardown(() => server.close(1000));
  const post = async (path: string, review: AdmissionReview): Promise<JsonObject> => {
    const headers = { 'content-type': 'application/json' };
    const res = await server.admission.inject({ method: 'POST', url: path, payload: review, headers });
    captureOutput(`${path} response`, res.body);
    t.equal(res.statusCode, 200, `${path} answered 200`);
    return (res.json() as { response: JsonObject }).response;
  };
  const metricsText = async (): Promise<string> => metrics.registry.metrics();
  return { captured, post, metricsText };
}

const deployment = loadReview('deployment-community-literal');
const secrets = sensitiveStringsOf(deployment);

t.test(
  'POST /validate/workloads, warn mode: allowed with warnings, an audit line, annotations, the metric',
  async (t) => {
    const { captured, post, metricsText } = serve(t);
    const response = await post(contract.webhook.validateWorkloadsPath, deployment);
    t.equal(response.allowed, true);
    t.equal((response.warnings as string[]).length, 2);
    t.strictSame(response.auditAnnotations, {
      decision: 'allowed',
      mode: 'warn',
      findings: 'migration_enabled,literal_password',
      variables: 'MIGRATION_ENABLED,DB_PASSWORD,PGVECTOR_PASSWORD',
    });
    const audit = captured.lines().filter((l) => l.audit === true);
    t.equal(audit.length, 1, 'one audit line');
    t.match(audit[0], {
      decision: 'allowed',
      user: 'alice@example.com',
      kind: 'Deployment',
      name: 'community-dify-api',
      mode: 'warn',
    });
    const text = await metricsText();
    t.match(text, 'dify_guard_template_findings_total{kind="Deployment",finding="literal_password",mode="warn"} 1');
    t.match(text, 'dify_guard_template_findings_total{kind="Deployment",finding="migration_enabled",mode="warn"} 1');
    captureOutput('workloads log', captured.text());
    for (const s of secrets)
      t.notOk(captured.text().includes(s) || JSON.stringify(response).includes(s), 'no password in log or response');
  },
);

t.test('POST /validate/workloads, deny mode: 403 with the reason', async (t) => {
  const { post, metricsText } = serve(t, { ...defaultGuardSettings, templatePolicy: 'deny' });
  const response = await post(contract.webhook.validateWorkloadsPath, deployment);
  t.equal(response.allowed, false);
  t.match(response.status, {
    code: 403,
    reason: 'Forbidden',
    message: /refused by dify-guard \(webhook\.templatePolicy=deny\)/,
  });
  t.match(
    await metricsText(),
    'dify_guard_template_findings_total{kind="Deployment",finding="literal_password",mode="deny"} 1',
  );
});

t.test(
  'POST /validate/workloads: a ReplicaSet owned by its Deployment, and a status write, pass silently',
  async (t) => {
    const { post, captured } = serve(t, { ...defaultGuardSettings, templatePolicy: 'deny' });
    const owned = structuredClone(deployment);
    owned.request.kind = { group: 'apps', version: 'v1', kind: 'ReplicaSet' };
    const owner = { apiVersion: 'apps/v1', kind: 'Deployment', name: 'd', uid: 'u', controller: true };
    (owned.request.object!.metadata as JsonObject).ownerReferences = [owner];
    t.strictSame(await post(contract.webhook.validateWorkloadsPath, owned), { uid: owned.request.uid, allowed: true });
    const status = structuredClone(deployment);
    status.request.subResource = 'status';
    t.strictSame(await post(contract.webhook.validateWorkloadsPath, status), {
      uid: status.request.uid,
      allowed: true,
    });
    t.equal(captured.lines().filter((l) => l.audit === true).length, 0, 'no audit line');
  },
);

t.test('POST /mutate/pods: the mutation logged with names only; a last-applied literal warned', async (t) => {
  const { captured, post, metricsText } = serve(t);
  const review = loadReview('pod-community-api');
  const pod = review.request.object!;
  const literal = testSecret();
  const applied = { name: ENV.dbPassword, value: literal };
  delete (pod.metadata as JsonObject).ownerReferences; // a bare pod, as kubectl apply creates it
  (pod.metadata as JsonObject).annotations = {
    [contract.annotations.lastApplied]: JSON.stringify({
      kind: 'Pod',
      spec: { containers: [{ name: 'api', image: 'langgenius/dify-api:1.11.4', env: [applied] }] },
    }),
  };
  const response = await post(contract.webhook.mutatePodsPath, review);
  t.equal(response.patchType, 'JSONPatch');
  t.ok(
    (response.warnings as string[]).some((w) => w.includes('last-applied-configuration stores DB_PASSWORD')),
    'last-applied warning',
  );
  const mutated = captured.lines().find((l) => l.msg === 'Dify pod mutated');
  t.match(mutated, {
    namespace: 'dify',
    generateName: 'community-dify-api-6d9f8b7c5-',
    changes: [{ container: 'api', variables: ['MIGRATION_ENABLED'] }],
  });
  t.notOk(JSON.stringify(mutated).includes('log-shipper'), 'the sidecar is not among the changes');
  t.match(
    await metricsText(),
    'dify_guard_template_findings_total{kind="Pod",finding="literal_password",mode="warn"} 1',
  );
  captureOutput('pods log', captured.text());
  t.notOk(
    captured.text().includes(literal) || JSON.stringify(response).includes(literal),
    'the literal is never echoed',
  );
});

t.test('audited allowed Secret decisions are counted by reason', async (t) => {
  const { post, metricsText } = serve(t);
  const response = await post(contract.webhook.validateSecretsPath, loadReview('secret-postgresql-delete'));
  t.equal(response.allowed, true);
  t.match(await metricsText(), 'dify_guard_secret_audited_allowed_total{reason="DeleteUnderPvc"} 1');
});
