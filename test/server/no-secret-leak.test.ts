// Every Secret scenario through the real server with the real audit trail (trace-level log, Events
// captured at the API boundary): no password, nor its base64, appears in any log line, Event body
// or admission response message.
import t from 'tap';
import { readFileSync } from 'node:fs';
import type { JsonObject } from '../../src/admission/types.js';
import { createAuditTrail } from '../../src/audit/audit-trail.js';
import { SecretEventRecorder, type EventsApi } from '../../src/audit/event-recorder.js';
import { contract } from '../../src/contract.js';
import { fixtureNames, loadReview, sensitiveStringsOf, type AdmissionReview } from '../../harness/fixtures.js';
import {
  answerOf,
  captureLog,
  FakePvcCache,
  generateCerts,
  postReview,
  startServer,
  tempDir,
  type HttpsResponse,
} from './support.js';

const PVC = 'dify/data-dify-postgresql-0';

t.test('Secret scenarios leave no password in logs, Events or messages', async (t) => {
  const certs = generateCerts(tempDir(t));
  const ca = readFileSync(certs.caFile);
  const captured = captureLog('trace');
  const eventBodies: JsonObject[] = [];
  const api: EventsApi = {
    create: async (_namespace, event) => {
      eventBodies.push(structuredClone(event));
    },
    patch: async (_namespace, _name, patch) => {
      eventBodies.push(structuredClone(patch));
    },
  };
  const events = new SecretEventRecorder({
    api,
    log: captured.log,
    reportingController: 'dify-guard.io/admission-webhook',
    reportingInstance: 'test',
  });
  const pvcCache = new FakePvcCache();
  const { port } = await startServer(t, {
    log: captured.log,
    pvcCache,
    audit: createAuditTrail({ log: captured.log, events }),
    tls: { certFile: certs.certFile, keyFile: certs.keyFile },
  });

  const reviews: [string, AdmissionReview][] = fixtureNames()
    .filter((name) => name.startsWith('secret-'))
    .map((name) => [name, loadReview(name)]);
  // The two keys diverging, and a new password written through stringData only.
  const diverging = loadReview('secret-postgresql-update-password');
  (diverging.request.object!.data as Record<string, string>).password =
    Buffer.from('Diverging-Pass-8c2b71').toString('base64');
  reviews.push(['keys diverging', diverging]);
  const viaStringData = loadReview('secret-postgresql-update-unchanged');
  viaStringData.request.object!.stringData = {
    'postgres-password': 'StringData-Pass-41aa0e',
    password: 'StringData-Pass-41aa0e',
  };
  reviews.push(['stringData', viaStringData]);

  const responses: HttpsResponse[] = [];
  for (const state of ['present', 'absent', 'unknown'] as const) {
    pvcCache.present.clear();
    if (state === 'present') pvcCache.present.add(PVC);
    pvcCache.synced = state !== 'unknown';
    for (const dryRun of [false, true]) {
      for (const [name, review] of reviews) {
        const copy = structuredClone(review);
        copy.request.dryRun = dryRun;
        copy.request.uid = `${name}-${state}-${dryRun}`;
        const res = await postReview(port, contract.webhook.validateSecretsPath, ca, copy);
        t.equal(res.status, 200, `${name}, PVC ${state}, dryRun ${dryRun}: answered`);
        responses.push(res);
      }
    }
  }
  await events.idle();

  const secrets = [...new Set(reviews.flatMap(([, review]) => sensitiveStringsOf(review)))];
  t.ok(secrets.length >= 8, `${secrets.length} password strings (plain and base64) to look for`);
  t.ok(
    secrets.includes('Diverging-Pass-8c2b71') && secrets.includes('StringData-Pass-41aa0e'),
    "the variants' passwords are looked for too",
  );
  const logText = captured.text();
  const eventText = JSON.stringify(eventBodies);
  const responseText = responses.map((res) => res.text).join('\n');
  const denials = responses.filter((res) => answerOf(res).allowed === false).length;
  for (const secret of secrets) {
    t.notOk(logText.includes(secret), 'not in the log');
    t.notOk(eventText.includes(secret), 'not in an Event');
    t.notOk(responseText.includes(secret), 'not in a response');
  }
  // Not vacuous: the trail was written.
  t.ok(denials >= 6, `${denials} denials`);
  t.ok(captured.lines().filter((l) => l.audit === true).length >= denials, 'an audit line per denial');
  t.ok(eventBodies.length >= 3, `${eventBodies.length} Event bodies captured`);
  t.ok(
    captured.lines().some((l) => l.msg === 'admission request answered'),
    'per-request trace lines were written',
  );
});
