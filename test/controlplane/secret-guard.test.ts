// The PostgreSQL Secret guard through a real API server: with the PVC present every way of changing
// the password is refused with the operator message and leaves the full audit trail (dify-guard's
// JSON line, the API server's audit annotations, a Warning Event); a dry run is refused without an
// Event; DELETE is allowed with a warning; once the PVC is gone the same change is allowed.
import t, { type Test } from 'tap';
import { LABELS, SECRET_KEYS, contract } from '../../src/contract.js';
import { waitFor } from '../../harness/commands.js';
import { paths, type Json, type KubeResponse, type KubeRest } from '../../harness/kube-rest.js';
import { randomSecret } from '../../harness/controlplane/chart.js';
import type { AuditEvent } from '../../harness/controlplane/harness.js';
import { Release, passwordChange, secretText, startReleaseStack } from '../../harness/controlplane/release.js';
import { SECRET_WEBHOOK, auditLines, base64, webhookAnnotations } from '../../harness/controlplane/stack.js';

const dify = new Release('dify', 'dify');
const { namespace, secret: secretName, pvc: pvcName, secretPath } = dify;

// The Secret exactly as the chart renders it (its password is a random test value).
const { cp, guard, rest, rendered } = await startReleaseStack(t, 'secrets', dify);
const chartSecret = dify.postgresSecret(rendered);
const originalData = normalisedData(chartSecret);
const originalPassword = secretText(chartSecret, SECRET_KEYS.postgresPassword);

/** data with stringData folded in, as the API server stores it. */
function normalisedData(secret: Json): Record<string, string> {
  const data: Record<string, string> = { ...((secret.data as Record<string, string> | undefined) ?? {}) };
  for (const [k, v] of Object.entries((secret.stringData as Record<string, string> | undefined) ?? {}))
    data[k] = base64(v);
  return data;
}

async function storedSecret(): Promise<Json> {
  return rest.ok('GET', secretPath);
}

/** A dry-run password change: refused (403) or not, without changing anything. */
async function dryRunChangeStatus(): Promise<number> {
  const res = await rest.patch(secretPath, 'merge', passwordChange(), { dryRun: 'All' });
  return res.status;
}

async function removePvc(): Promise<void> {
  await rest.delete(paths.pvc(namespace, pvcName));
  // No controller-manager runs: do what the pvc-protection controller does once no pod uses the PVC.
  await rest.patch(paths.pvc(namespace, pvcName), 'merge', { metadata: { finalizers: null } });
  await waitFor('the PVC to be gone', async () =>
    (await rest.get(paths.pvc(namespace, pvcName))).status === 404 ? true : undefined,
  );
}

/** The Warning Events about the Secret (events.k8s.io/v1, the API dify-guard writes). */
async function secretEvents(): Promise<Json[]> {
  const list = await rest.ok('GET', `/apis/events.k8s.io/v1/namespaces/${namespace}/events`);
  return ((list.items as Json[]) ?? []).filter(
    (e) => (e.regarding as Json | undefined)?.name === secretName && (e.regarding as Json).kind === 'Secret',
  );
}

const seriesCount = (e: Json): number => Number((e.series as Json | undefined)?.count ?? 1);
const eventTotal = (events: Json[], reason: string): number =>
  events.filter((e) => e.reason === reason).reduce((n, e) => n + seriesCount(e), 0);

function apiServerAudit(user: string, verb: string): Promise<AuditEvent> {
  return cp.waitForAuditEvent(
    `${verb} of secret ${secretName} by ${user}`,
    (e) =>
      e.user.username === user &&
      e.verb === verb &&
      e.objectRef?.resource === 'secrets' &&
      e.objectRef.name === secretName &&
      e.stage === 'ResponseComplete',
  );
}

function assertOperatorMessage(t: Test, message: string): void {
  t.match(message, `admission webhook "${SECRET_WEBHOOK}" denied the request`, 'the client sees which webhook refused');
  t.match(message, `${namespace}/${secretName}`, 'the message names the Secret');
  t.match(message, `${namespace}/${pvcName}`, 'the message names the PVC');
  t.match(message, `kubectl delete pvc -n ${namespace} ${pvcName}`, 'the message gives the kubectl command');
  t.match(message, '28P01', 'the message says why');
}

function assertNoSecretLeak(t: Test, text: string, secrets: string[]): void {
  for (const s of secrets) {
    t.notOk(text.includes(s) || text.includes(base64(s)), 'no password (nor its base64) in the text');
  }
}

t.before(async () => {
  const created = await rest.create(paths.pvcs(namespace), dify.postgresPvc());
  if (created.status !== 201) throw new Error(`PVC: ${created.status}`);
  const secret = await rest.create(paths.secrets(namespace), chartSecret);
  if (secret.status !== 201) throw new Error(`Secret: ${secret.status} ${String(secret.body.message)}`);
  // dify-guard started before the PVC existed: wait until its watch has delivered it.
  await waitFor('the PVC cache to see the PVC', async () => ((await dryRunChangeStatus()) === 403 ? true : undefined), {
    timeoutMs: 30_000,
  });
});

/** Both password keys of `data`, base64 as the API stores them. */
const passwordData = (password: string): Record<string, string> => ({
  [SECRET_KEYS.postgresPassword]: base64(password),
  [SECRET_KEYS.password]: base64(password),
});

/** A PUT of the stored Secret with `change(stored)` laid over it. */
async function replaceStored(client: KubeRest, change: (stored: Json) => Json): Promise<KubeResponse> {
  const current = await storedSecret();
  return client.replace(secretPath, { ...current, ...change(current) });
}

type Change = { name: string; send: (client: KubeRest, password: string) => Promise<KubeResponse>; verb: string };
const changes: Change[] = [
  {
    name: 'update (PUT) of data',
    verb: 'update',
    send: (client, password) =>
      replaceStored(client, (current) => ({ data: { ...(current.data as Json), ...passwordData(password) } })),
  },
  {
    name: 'update (PUT) with stringData',
    verb: 'update',
    send: (client, password) => replaceStored(client, () => passwordChange(password)),
  },
  {
    name: 'JSON patch',
    verb: 'patch',
    send: (client, password) =>
      client.patch(secretPath, 'json', [
        { op: 'replace', path: `/data/${SECRET_KEYS.postgresPassword}`, value: base64(password) },
        { op: 'replace', path: `/data/${SECRET_KEYS.password}`, value: base64(password) },
      ]),
  },
  {
    name: 'merge patch',
    verb: 'patch',
    send: (client, password) => client.patch(secretPath, 'merge', { data: passwordData(password) }),
  },
  {
    name: 'strategic merge patch',
    verb: 'patch',
    send: (client, password) => client.patch(secretPath, 'strategic', { data: passwordData(password) }),
  },
  {
    name: 'merge patch of stringData',
    verb: 'patch',
    send: (client, password) => client.patch(secretPath, 'merge', passwordChange(password)),
  },
  {
    name: 'server-side apply',
    verb: 'patch',
    send: (client, password) =>
      client.request('PATCH', secretPath, {
        contentType: 'application/apply-patch+yaml',
        body: {
          apiVersion: 'v1',
          kind: 'Secret',
          metadata: { name: secretName, namespace },
          ...passwordChange(password),
        },
        query: { fieldManager: 'operator', force: 'true' },
      }),
  },
  {
    name: 'removing the password key',
    verb: 'patch',
    send: (client) => client.patch(secretPath, 'json', [{ op: 'remove', path: `/data/${SECRET_KEYS.password}` }]),
  },
];

for (const [i, change] of changes.entries()) {
  t.test(
    `with the PVC present, a password change by ${change.name} is refused with the full audit trail`,
    async (t) => {
      // One user per change, so each record can be told apart in both audit logs.
      const user = `operator-${i}`;
      const client = cp.rest({ name: user, groups: ['system:masters'] });
      const password = randomSecret();
      const res = await change.send(client, password);

      t.equal(res.status, 403, 'refused');
      t.equal(res.body.reason, 'Forbidden');
      const message = String(res.body.message);
      assertOperatorMessage(t, message);
      assertNoSecretLeak(t, message, [password, originalPassword]);
      t.same(normalisedData(await storedSecret()), originalData, 'the stored Secret is unchanged');

      const line = await guard.waitForLog(`audit line for ${user}`, (l) => l.audit === true && l.user === user);
      t.match(
        line,
        {
          decision: 'denied',
          reason: 'PasswordChangeUnderPvc',
          operation: 'UPDATE',
          namespace,
          name: secretName,
          pvc: `${namespace}/${pvcName}`,
          dryRun: false,
        },
        'dify-guard wrote the JSON audit line',
      );
      t.ok((line.groups as string[]).includes('system:masters'), "with the user's groups");
      t.type(line.uid, 'string');
      t.match(
        String(line.message),
        `kubectl delete pvc -n ${namespace} ${pvcName}`,
        'the audit line carries the message',
      );

      const event = await apiServerAudit(user, change.verb);
      t.equal(event.responseStatus?.code, 403, 'the API server audit log records the refusal');
      t.same(
        webhookAnnotations(event, SECRET_WEBHOOK),
        { decision: 'denied', reason: 'PasswordChangeUnderPvc', pvc: `${namespace}/${pvcName}` },
        'the API server audit log carries the decision under the webhook name',
      );
    },
  );
}

t.test('a Warning Event on the Secret records the refusals, without any password', async (t) => {
  const events = await waitFor('a Warning Event on the Secret', async () => {
    const found = await secretEvents();
    return found.some((e) => e.reason === 'PasswordChangeUnderPvc') ? found : undefined;
  });
  const event = events.find((e) => e.reason === 'PasswordChangeUnderPvc') as Json;
  t.equal(event.type, 'Warning');
  t.match(String(event.note), `${namespace}/${pvcName}`, 'the Event says which PVC blocks the change');
  t.match(String(event.note), /^operator-\d+: /, "the Event names who made the change (the request's username) first");
  t.match(event.regarding, { kind: 'Secret', namespace, name: secretName }, 'the Event is about the Secret');
  assertNoSecretLeak(t, JSON.stringify(events), [originalPassword]);
  // An operator finds it with kubectl (core/v1 view of the same Event; `kubectl describe secret` shows no Events at all).
  const listed = await cp.kubectl([
    'get',
    'events',
    '-n',
    namespace,
    '--field-selector',
    `involvedObject.kind=Secret,involvedObject.name=${secretName}`,
  ]);
  t.equal(listed.status, 0, listed.stderr);
  t.match(
    listed.stdout,
    new RegExp(`Warning\\s+PasswordChangeUnderPvc\\s+secret/${secretName}`),
    '`kubectl get events` shows the Warning on the Secret',
  );
});

t.test('a server-side dry run is refused the same way, without an Event', async (t) => {
  const user = 'dry-runner';
  const client = cp.rest({ name: user, groups: ['system:masters'] });
  const settled = await waitFor('earlier Events to settle', async () => {
    const before = eventTotal(await secretEvents(), 'PasswordChangeUnderPvc');
    // Longer than dify-guard's series flush interval (1 s): repeats are written at most once per interval.
    await new Promise((r) => setTimeout(r, 1_500));
    return eventTotal(await secretEvents(), 'PasswordChangeUnderPvc') === before ? before : undefined;
  });
  const res = await client.patch(secretPath, 'merge', passwordChange(), { dryRun: 'All' });
  t.equal(res.status, 403, 'refused');
  assertOperatorMessage(t, String(res.body.message));
  const line = await guard.waitForLog('dry-run audit line', (l) => l.audit === true && l.user === user);
  t.match(line, { decision: 'denied', reason: 'PasswordChangeUnderPvc', dryRun: true }, 'the audit line says dry run');
  const event = await apiServerAudit(user, 'patch');
  t.same(webhookAnnotations(event, SECRET_WEBHOOK).decision, 'denied');

  // A real refusal after the dry run: once its Event is counted, a dry-run Event would have been too.
  await changes[3]?.send(cp.rest({ name: 'after-dry-run', groups: ['system:masters'] }), randomSecret());
  await waitFor('the Event of the refusal after the dry run', async () =>
    eventTotal(await secretEvents(), 'PasswordChangeUnderPvc') > settled ? true : undefined,
  );
  t.equal(
    eventTotal(await secretEvents(), 'PasswordChangeUnderPvc'),
    settled + 1,
    'only the real refusal was counted, not the dry run',
  );
});

t.test('an update that leaves the password alone is allowed with the PVC present', async (t) => {
  const res = await rest.patch(secretPath, 'merge', { metadata: { annotations: { 'example.com/touched': 'yes' } } });
  t.equal(res.status, 200);
  t.same(normalisedData(res.body), originalData);
});

t.test('removing the guard labels with the PVC present is refused', async (t) => {
  const res = await rest.patch(secretPath, 'json', [
    { op: 'remove', path: `/metadata/labels/${LABELS.component.replace('/', '~1')}` },
  ]);
  t.equal(res.status, 403);
  t.match(String(res.body.message), `${namespace}/${pvcName}`);
  t.equal(
    ((await storedSecret()).metadata as Json & { labels: Json }).labels[LABELS.component],
    contract.components.postgresql,
    'the label is still there',
  );
});

t.test('DELETE of the Secret with the PVC present is allowed, with a warning and an audit trail', async (t) => {
  const user = 'uninstaller';
  const client = cp.rest({ name: user, groups: ['system:masters'] });
  const res = await client.delete(secretPath);
  t.equal(res.status, 200, 'allowed (helm uninstall must work)');
  t.ok(
    res.warnings.some((w) => w.includes(pvcName) && w.startsWith('dify-guard:')),
    'the client sees the warning header naming the PVC',
  );
  t.equal((await rest.get(secretPath)).status, 404, 'the Secret is gone');
  const line = await guard.waitForLog('DELETE audit line', (l) => l.audit === true && l.user === user);
  t.match(line, {
    decision: 'allowed',
    reason: 'DeleteUnderPvc',
    operation: 'DELETE',
    pvc: `${namespace}/${pvcName}`,
    dryRun: false,
  });
  const event = await apiServerAudit(user, 'delete');
  t.same(webhookAnnotations(event, SECRET_WEBHOOK), {
    decision: 'allowed',
    reason: 'DeleteUnderPvc',
    pvc: `${namespace}/${pvcName}`,
  });
  await waitFor('the DeleteUnderPvc Warning Event', async () =>
    (await secretEvents()).some((e) => e.reason === 'DeleteUnderPvc' && e.type === 'Warning') ? true : undefined,
  );
  t.pass('a Warning Event records the DELETE');
});

t.test('re-creating the Secret over the PVC is allowed with a warning', async (t) => {
  const res = await rest.create(paths.secrets(namespace), chartSecret);
  t.equal(res.status, 201);
  t.ok(
    res.warnings.some((w) => w.includes(pvcName)),
    'warned that the PVC keeps its old password',
  );
});

t.test('once the PVC is deleted, the same password change is allowed', async (t) => {
  await removePvc();
  await waitFor(
    'the PVC cache to see the deletion',
    async () => ((await dryRunChangeStatus()) === 200 ? true : undefined),
    { timeoutMs: 30_000 },
  );
  const password = randomSecret();
  const res = await changes[3]?.send(rest, password);
  t.equal(res?.status, 200, 'allowed');
  t.equal(
    String(((await storedSecret()).data as Json)[SECRET_KEYS.postgresPassword]),
    base64(password),
    'the new password is stored',
  );
  t.same(
    auditLines(guard).filter((l) => l.reason === 'PasswordChangeUnderPvc' && l.user === 'admin' && l.dryRun === false),
    [],
    'dify-guard recorded no refusal for it',
  );
});
