// Rotating the PostgreSQL password without losing data, through a real API server: dify-guard asks a real
// PostgreSQL 15 (its address template pointed at it) whether it accepts the new password. A plain change of
// the Secret is refused with how to rotate; after ALTER ROLE in the database the same kind of change is let
// through and audited as a verified rotation (dify-guard's line, the API server's audit annotations, an
// Event, the metrics); the fourth check of the Secret within a minute is refused with when to retry.
import t from 'tap';
import { SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { METRIC_NAMES } from '../../src/metrics.js';
import { waitFor } from '../../harness/commands.js';
import { paths, type Json, type KubeResponse } from '../../harness/kube-rest.js';
import { startLocalPostgres, sqlPassword } from '../../harness/programs/postgres.js';
import { captureOutput, testSecret } from '../../harness/secrets.js';
import { Release, passwordChange, secretText, startReleaseStack } from '../../harness/controlplane/release.js';
import { SECRET_WEBHOOK, base64, webhookAnnotations } from '../../harness/controlplane/stack.js';

const dify = new Release('dify', 'dify');
const { release, namespace, secret: secretName, pvc: pvcName, secretPath } = dify;

const pg = await startLocalPostgres('rotation-postgres');
t.teardown(() => pg.stop());
// The chart's Secret, and a database initialised with its user, database and password (as the bundled PostgreSQL is).
const { cp, guard, rest, rendered } = await startReleaseStack(t, 'rotation', dify, {
  guard: { env: { DIFY_GUARD_POSTGRESQL_ADDRESS_TEMPLATE: `127.0.0.1:${pg.port}` } },
});
const chartSecret = dify.postgresSecret(rendered);
const user = secretText(chartSecret, SECRET_KEYS.postgresUsername);
const database = secretText(chartSecret, SECRET_KEYS.postgresDatabase);
const originalPassword = secretText(chartSecret, SECRET_KEYS.postgresPassword);
await pg.sql(
  `CREATE ROLE "${user}" LOGIN PASSWORD ${sqlPassword(originalPassword)}; CREATE DATABASE "${database}" OWNER "${user}";`,
);
for (const [what, res] of [
  ["the chart's Secret", await rest.create(paths.secrets(namespace), chartSecret)],
  ['the PostgreSQL PVC', await rest.create(paths.pvcs(namespace), dify.postgresPvc())],
] as const) {
  if (res.status !== 201)
    throw new Error(`${what} could not be created: ${res.status} ${JSON.stringify(res.body.message)}`);
}

const captured: string[] = [];
t.teardown(() => captureOutput('verified-rotation-responses.json', captured.join('\n')));

async function changePassword(who: string, password: string): Promise<KubeResponse> {
  const res = await cp
    .rest({ name: who, groups: ['system:masters'] })
    .patch(secretPath, 'merge', passwordChange(password));
  // What the client is shown (an allowed PATCH answers with the Secret itself, data included: not an output of dify-guard).
  captured.push(
    JSON.stringify({ status: res.status, message: res.body.message, reason: res.body.reason, warnings: res.warnings }),
  );
  return res;
}

async function storedPassword(): Promise<string> {
  return String(((await rest.ok('GET', secretPath)).data as Json)[SECRET_KEYS.postgresPassword]);
}

const metric = async (name: string): Promise<string> =>
  (await (await fetch(`http://127.0.0.1:${guard.healthPort}/metrics`)).text())
    .split('\n')
    .filter((l) => l.startsWith(name))
    .join('\n');

// A dry run that removes a key: refused under the PVC without asking the database (so the rate limit is left alone).
await waitFor('the PVC cache to see the PVC', async () => {
  const res = await rest.patch(secretPath, 'json', [{ op: 'remove', path: `/data/${SECRET_KEYS.password}` }], {
    dryRun: 'All',
  });
  return res.status === 403 ? true : undefined;
});

t.test(
  'a plain change of the Secret is refused: the database does not accept it yet; the message says how to rotate',
  async (t) => {
    const next = testSecret();
    const res = await changePassword('plain-changer', next);
    t.equal(res.status, 403);
    const message = String(res.body.message);
    t.match(message, `admission webhook "${SECRET_WEBHOOK}" denied the request`);
    t.match(message, `does not accept this password yet (28P01)`);
    t.match(message, `kubectl exec -it -n ${namespace} ${expandName(contract.names.postgresql, release)}-0`);
    t.match(message, '`\\password`', "the new password typed at psql's prompt");
    t.notOk(message.includes(next), 'the message never carries the password');
    t.equal(await storedPassword(), base64(originalPassword), 'the stored password is unchanged');
    const line = await guard.waitForLog(
      "the refusal's audit line",
      (l) => l.audit === true && l.user === 'plain-changer',
    );
    t.match(line, {
      decision: 'denied',
      reason: 'PasswordChangeUnderPvc',
      verification: 'rejected',
      pvc: `${namespace}/${pvcName}`,
    });
  },
);

t.test('after ALTER ROLE in the database, the change is let through and audited as a verified rotation', async (t) => {
  const next = testSecret();
  await pg.sql(`ALTER ROLE "${user}" PASSWORD ${sqlPassword(next)}`);
  const res = await changePassword('rotator', next);
  t.equal(res.status, 200, 'allowed');
  t.ok(
    res.warnings.some((w) => w.startsWith('dify-guard:') && w.includes('rotation allowed')),
    "the client sees dify-guard's warning",
  );
  t.equal(await storedPassword(), base64(next), 'the new password is stored');
  const line = await guard.waitForLog("the rotation's audit line", (l) => l.audit === true && l.user === 'rotator');
  t.match(line, {
    decision: 'allowed',
    reason: 'PasswordRotationVerified',
    verification: 'accepted',
    operation: 'UPDATE',
    dryRun: false,
  });
  const event = await cp.waitForAuditEvent(
    'the patch by rotator',
    (e) =>
      e.user.username === 'rotator' &&
      e.verb === 'patch' &&
      e.objectRef?.name === secretName &&
      e.stage === 'ResponseComplete',
  );
  const annotations = { decision: 'allowed', reason: 'PasswordRotationVerified', pvc: `${namespace}/${pvcName}` };
  t.same(
    webhookAnnotations(event, SECRET_WEBHOOK),
    annotations,
    "the API server's audit log carries the verified rotation",
  );
  await waitFor('the PasswordRotationVerified Event', async () => {
    const list = await rest.ok('GET', `/apis/events.k8s.io/v1/namespaces/${namespace}/events`);
    const events = (list.items as Json[]) ?? [];
    return events.some((e) => e.reason === 'PasswordRotationVerified' && String(e.note).startsWith('rotator: '))
      ? true
      : undefined;
  });
  t.match(await metric(METRIC_NAMES.verifiedRotations), `${METRIC_NAMES.verifiedRotations} 1`);
});

t.test(
  'the fourth check of the Secret within a minute is refused without asking the database, saying when to retry',
  async (t) => {
    const third = await changePassword('third-try', testSecret());
    t.equal(third.status, 403);
    t.match(String(third.body.message), 'does not accept this password yet');
    const fourth = await changePassword('fourth-try', testSecret());
    t.equal(fourth.status, 403);
    t.match(
      String(fourth.body.message),
      /did not ask the database: this Secret had 3 password checks in the last minute .* Retry in \d+ s\./,
      'refused without asking, with when to retry',
    );
    const verifications = await metric(METRIC_NAMES.verifications);
    t.match(verifications, `${METRIC_NAMES.verifications}{outcome="rejected"} 2`);
    t.match(verifications, `${METRIC_NAMES.verifications}{outcome="accepted"} 1`);
    t.match(verifications, `${METRIC_NAMES.verifications}{outcome="rate-limited"} 1`);
  },
);
