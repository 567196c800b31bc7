// POST /validate/secrets through the real fastify app (inject): the database is asked only for a password change
// under the PVC, once per request; what it answers (here: a closed port, so "cannot verify") reaches the message,
// the audit line, the log and the metric; the per-Secret limit of buildServer refuses the next check without asking.
import t, { type Test } from 'tap';
import { buildServer } from '../../src/server.js';
import { contract } from '../../src/contract.js';
import { defaultGuardSettings } from '../../src/admission/settings.js';
import type { JsonObject, PasswordCheck } from '../../src/admission/types.js';
import { postgresVerifier } from '../../src/cluster/postgres-verifier.js';
import { METRIC_NAMES, createMetrics } from '../../src/metrics.js';
import { loadReview, sensitiveStringsOf, type AdmissionReview } from '../../harness/fixtures.js';
import { reservePort } from '../../harness/ports.js';
import { captureAudit, captureLog, FakePvcCache } from '../server/support.js';
import { captureOutput } from '../../harness/secrets.js';

const closed = await reservePort();
t.teardown(() => closed.release());
// The real verifier against a loopback port nothing listens on, wrapped to count the questions.
const realVerifier = postgresVerifier({ addressTemplate: `127.0.0.1:${closed.port}`, timeoutMs: 2000 });

function serve(t: Test, pvcs: string[], perMinute = 3) {
  const captured = captureLog('info');
  const audit = captureAudit();
  const metrics = createMetrics({ defaultMetrics: false });
  const asked: string[] = [];
  const server = buildServer({
    settings: defaultGuardSettings,
    log: captured.log,
    metrics,
    pvcCache: new FakePvcCache(pvcs),
    audit,
    passwordVerifier: (check: PasswordCheck) => {
      asked.push(check.secretKey);
      return realVerifier(check);
    },
    verifyRateLimitPerMinute: perMinute,
  });
  t.teardown(() => server.close(1000));
  const post = async (review: AdmissionReview): Promise<JsonObject> => {
    const res = await server.admission.inject({
      method: 'POST',
      url: contract.webhook.validateSecretsPath,
      payload: review,
      headers: { 'content-type': 'application/json' },
    });
    captureOutput('validate-secrets response', res.body);
    t.equal(res.statusCode, 200);
    return (res.json() as { response: JsonObject }).response;
  };
  return { captured, audit, metrics, asked, post };
}

const PVC = 'dify/data-dify-postgresql-0';

t.test('no question to the database when the password is unchanged or the PVC is absent', async (t) => {
  const underPvc = serve(t, [PVC]);
  t.equal((await underPvc.post(loadReview('secret-postgresql-update-unchanged'))).allowed, true);
  t.strictSame(underPvc.asked, [], 'password unchanged: not asked');
  const noPvc = serve(t, []);
  t.equal((await noPvc.post(loadReview('secret-postgresql-update-password'))).allowed, true);
  t.strictSame(noPvc.asked, [], 'no PVC: not asked');
});

t.test(
  'a password change under the PVC: asked once; no answer -> refused "cannot verify", recorded without the password',
  async (t) => {
    const { captured, audit, metrics, asked, post } = serve(t, [PVC]);
    const review = loadReview('secret-postgresql-update-password');
    const response = await post(review);
    t.strictSame(asked, ['dify/dify-postgresql'], 'asked once, about this Secret');
    t.equal(response.allowed, false);
    const cannotVerify = new RegExp(
      "cannot verify this password: the release's PostgreSQL at 127\\.0\\.0\\.1:\\d+ " +
        'could not be asked within 2000 ms \\(ECONNREFUSED\\)',
    );
    t.match(response.status, { code: 403, message: cannotVerify });
    t.strictSame(response.auditAnnotations, { decision: 'denied', reason: 'PasswordChangeUnderPvc', pvc: PVC });
    t.match(audit.records.at(-1), { reason: 'PasswordChangeUnderPvc', verification: 'unreachable' });
    t.match(
      captured.lines().find((l) => l.msg === 'PostgreSQL password check'),
      {
        outcome: 'unreachable',
        detail: 'ECONNREFUSED',
        secret: 'dify/dify-postgresql',
        address: `127.0.0.1:${closed.port}`,
      },
    );
    t.match(await metrics.registry.metrics(), `${METRIC_NAMES.verifications}{outcome="unreachable"} 1`);
    const text = [captured.text(), JSON.stringify(audit.records), JSON.stringify(response)].join('\n');
    captureOutput('validate-secrets verification', text);
    for (const s of sensitiveStringsOf(review))
      t.notOk(text.includes(s), 'no Secret value in the log, the record or the answer');
  },
);

t.test(
  'the per-Secret limit: the next check within the minute is refused without asking, dry run included',
  async (t) => {
    const { asked, metrics, post } = serve(t, [PVC], 1);
    await post(loadReview('secret-postgresql-update-password'));
    const dry = loadReview('secret-postgresql-update-password');
    dry.request.dryRun = true;
    const response = await post(dry);
    t.equal(asked.length, 1, 'the database was asked once');
    t.match(response.status, {
      code: 403,
      message: /this Secret had 1 password checks in the last minute .* Retry in \d+ s\./,
    });
    t.match(await metrics.registry.metrics(), `${METRIC_NAMES.verifications}{outcome="rate-limited"} 1`);
  },
);
