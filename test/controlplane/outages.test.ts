// dify-guard's PVC cache against a real API server: PVCs created and deleted after start-up are
// seen (in any namespace); while the API server is down the cache cannot answer and a password
// change is refused; after the restart it relists and decides correctly again. With dify-guard
// itself stopped, password changes are refused (fail closed) while everything else goes on.
import t, { type Test } from 'tap';
import { LABELS, SECRET_KEYS, contract } from '../../src/contract.js';
import { waitFor } from '../../harness/commands.js';
import { paths, type Json } from '../../harness/kube-rest.js';
import { pvcManifest } from '../../harness/manifests.js';
import { randomSecret } from '../../harness/controlplane/chart.js';
import { Release, guardValues, passwordChange } from '../../harness/controlplane/release.js';
import { SECRET_WEBHOOK, base64, ensureNamespace, startStack } from '../../harness/controlplane/stack.js';

const stack = await startStack(t, 'outages');
const { cp, guard, rest } = stack;

const dify = new Release('dify', 'dify');
const teamB = new Release('team-b', 'team-b');

// Each release's PostgreSQL Secret as the chart renders it.
for (const r of [dify, teamB]) {
  await ensureNamespace(rest, r.namespace);
  const secret = r.postgresSecret(await r.render(cp.dir, r.release, guardValues(guard)));
  const res = await rest.create(paths.secrets(r.namespace), secret);
  if (res.status !== 201) throw new Error(`Secret ${r.secret}: ${res.status} ${String(res.body.message)}`);
}

/** Status of a dry-run password change through the API server: 200 allowed, 403 refused. */
async function dryRunChange(r: Release): Promise<number> {
  return (await rest.patch(r.secretPath, 'merge', passwordChange(), { dryRun: 'All' })).status;
}

const expectDecision = (r: Release, status: number, what: string): Promise<true> =>
  waitFor(what, async () => ((await dryRunChange(r)) === status ? true : undefined), { timeoutMs: 30_000 });

async function createPvc(r: Release): Promise<void> {
  const res = await rest.create(
    paths.pvcs(r.namespace),
    pvcManifest(r.pvc, { labels: { [LABELS.instance]: r.release } }),
  );
  if (res.status !== 201) throw new Error(`PVC ${r.pvc}: ${res.status}`);
}

async function deletePvc(r: Release): Promise<void> {
  await rest.delete(paths.pvc(r.namespace, r.pvc));
  // No controller-manager: do what the pvc-protection controller does once no pod uses the PVC.
  await rest.patch(paths.pvc(r.namespace, r.pvc), 'merge', { metadata: { finalizers: null } });
}

/** An UPDATE of the release's Secret as the API server would send it to the webhook. */
async function reviewRequest(r: Release, changePassword: boolean): Promise<Json> {
  const oldObject = await rest.ok('GET', r.secretPath);
  const object = structuredClone(oldObject);
  const data = object.data as Record<string, string>;
  if (changePassword) {
    const next = base64(randomSecret());
    data[SECRET_KEYS.postgresPassword] = next;
    data[SECRET_KEYS.password] = next;
  } else {
    (object.metadata as Json).annotations = { 'example.com/touched': 'yes' };
  }
  return {
    uid: `outage-${changePassword ? 'change' : 'touch'}-${r.release}`,
    kind: { group: '', version: 'v1', kind: 'Secret' },
    resource: { group: '', version: 'v1', resource: 'secrets' },
    requestKind: { group: '', version: 'v1', kind: 'Secret' },
    name: r.secret,
    namespace: r.namespace,
    operation: 'UPDATE',
    userInfo: { username: 'admin', groups: ['system:masters', 'system:authenticated'] },
    object,
    oldObject,
    dryRun: false,
    options: { apiVersion: 'meta.k8s.io/v1', kind: 'UpdateOptions' },
  };
}

t.test('PVCs created and deleted after start-up are seen by the cache, in any namespace', async (t) => {
  t.equal(await dryRunChange(dify), 200, 'no PVC yet: a password change is allowed');
  t.equal(await dryRunChange(teamB), 200, 'no PVC yet in team-b either');
  await createPvc(dify);
  await createPvc(teamB);
  await expectDecision(dify, 403, 'dify-guard to see the new PVC in dify');
  await expectDecision(teamB, 403, 'dify-guard to see the new PVC in team-b');
  t.pass('both new PVCs block password changes');
  await deletePvc(teamB);
  await expectDecision(teamB, 200, 'dify-guard to see the PVC in team-b deleted');
  t.equal(await dryRunChange(dify), 403, 'the PVC in dify still blocks');
  await createPvc(teamB);
  await expectDecision(teamB, 403, 'dify-guard to see the PVC in team-b created again');
  t.pass('a PVC created again is seen again');
});

t.test('the cache recovers after the API server restarts', async (t) => {
  // Built now: once the API server is down there is nobody to send them but the test.
  const change = await reviewRequest(dify, true);
  const touch = await reviewRequest(dify, false);
  await cp.stopApiServer();
  await waitFor(
    'dify-guard to see its PVC watch broken',
    async () => ((await guard.gauge('dify_guard_pvc_cache_synced')) === 0 ? true : undefined),
    { timeoutMs: 60_000 },
  );
  t.equal(await guard.health('/healthz'), 200, 'still alive');
  t.equal(
    await guard.health('/readyz'),
    200,
    'still ready: a watch broken after the first sync keeps the replica in the Service',
  );

  const refused = await guard.review(contract.webhook.validateSecretsPath, change);
  t.equal(refused.allowed, false, 'while the PVC state is unknown a password change is refused (fail closed)');
  t.match(String((refused.status as Json).message), 'cannot verify', 'with the "cannot verify, retry" message');
  t.match(refused.auditAnnotations, { decision: 'denied', reason: 'PvcStateUnknown' });
  const allowed = await guard.review(contract.webhook.validateSecretsPath, touch);
  t.equal(allowed.allowed, true, 'an update that changes no password is not blocked by it');

  await cp.startApiServer();
  // Changed while dify-guard's watch is still reconnecting: the relist must bring it in.
  await deletePvc(teamB);
  await waitFor(
    'dify-guard PVC cache synced again',
    async () => ((await guard.gauge('dify_guard_pvc_cache_synced')) === 1 ? true : undefined),
    { timeoutMs: 90_000 },
  );

  const res = await rest.patch(dify.secretPath, 'merge', passwordChange());
  t.equal(res.status, 403, 'after the restart the PVC in dify still blocks a password change');
  t.match(String(res.body.message), `${dify.namespace}/${dify.pvc}`);
  await expectDecision(teamB, 200, 'the PVC deleted around the restart to be seen as gone');
  t.pass('the PVC deleted right after the restart no longer blocks');
  const password = randomSecret();
  const changed = await rest.patch(teamB.secretPath, 'merge', passwordChange(password));
  t.equal(changed.status, 200, 'and the real change in team-b goes through');
  t.equal(String((changed.body.data as Json)[SECRET_KEYS.postgresPassword]), base64(password));
});

async function assertCreated(t: Test, path: string, body: Json, what: string): Promise<void> {
  const res = await rest.create(path, body);
  t.equal(res.status, 201, what);
}

t.test('with dify-guard stopped, password changes are refused and everything else goes on', async (t) => {
  await guard.stopProcess();
  t.teardown(async () => {
    if (!guard.process.running) await guard.start();
  });

  const before = await rest.ok('GET', dify.secretPath);
  const res = await rest.patch(dify.secretPath, 'merge', passwordChange());
  t.not(res.status, 200, 'a password change under the PVC is refused');
  t.match(
    String(res.body.message),
    `failed calling webhook "${SECRET_WEBHOOK}"`,
    'the API server says the guard could not be called',
  );
  t.same((await rest.ok('GET', dify.secretPath)).data, before.data, 'the Secret is unchanged');
  const noPvc = await rest.patch(teamB.secretPath, 'merge', passwordChange());
  t.not(noPvc.status, 200, 'even without a PVC: the guard cannot be asked, so it fails closed');

  await assertCreated(
    t,
    paths.secrets(dify.namespace),
    { metadata: { name: 'unrelated' }, stringData: { k: 'v' } },
    'an unrelated Secret in the Dify namespace is created normally',
  );
  await ensureNamespace(rest, 'other');
  await assertCreated(
    t,
    paths.secrets('other'),
    {
      metadata: {
        name: 'lookalike',
        labels: { [LABELS.name]: 'not-dify', [LABELS.component]: contract.components.postgresql },
      },
      stringData: { [SECRET_KEYS.postgresPassword]: randomSecret() },
    },
    'a Secret of another application is created normally',
  );
  await assertCreated(
    t,
    paths.pods(dify.namespace),
    {
      metadata: { generateName: 'web-server-', labels: { app: 'web-server' } },
      spec: {
        containers: [
          { name: 'app', image: 'example.com/app:1', env: [{ name: contract.env.migrationEnabled, value: 'true' }] },
        ],
      },
    },
    'a non-Dify pod is created normally',
  );
  const difyPod = await rest.create(paths.pods(dify.namespace), {
    metadata: {
      generateName: 'dify-api-',
      labels: {
        [LABELS.name]: contract.values.difyName,
        [LABELS.instance]: dify.release,
        [LABELS.component]: contract.components.api,
      },
    },
    spec: { containers: [{ name: 'api', image: 'example.com/api:1' }] },
  });
  t.not(
    difyPod.status,
    201,
    "a Dify api pod is not created unchecked (the chart's default pods failurePolicy is Fail)",
  );
  const updated = await rest.patch(paths.secret(dify.namespace, 'unrelated'), 'merge', { stringData: { k: 'w' } });
  t.equal(updated.status, 200, 'an unrelated Secret is updated normally');

  await guard.start();
  const back = await rest.patch(dify.secretPath, 'merge', passwordChange());
  t.equal(back.status, 403, 'dify-guard back: the change is refused by dify-guard itself');
  t.match(
    String(back.body.message),
    `kubectl delete pvc -n ${dify.namespace} ${dify.pvc}`,
    'with the operator message',
  );
});
