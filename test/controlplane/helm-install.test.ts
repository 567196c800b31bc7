// `helm install` of the whole chart into a real API server, with dify-guard outside the cluster
// (webhook.url). No kubelet or controllers run, so the test does what they would, in the open:
// it runs the post-install/post-upgrade migration hook Job "to completion" by writing the Job's
// status as the Job controller does after a successful pod (helm waits for exactly that), and it
// creates the PostgreSQL PVC from the StatefulSet's volumeClaimTemplate as the StatefulSet
// controller would. Then the operators' trap: `helm upgrade` with another password is refused.
import t from 'tap';
import { LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { binary } from '../../harness/binaries.js';
import { run, waitFor, type CommandResult } from '../../harness/commands.js';
import { paths, type Json } from '../../harness/kube-rest.js';
import { chartArgs, deepMerge, randomSecret, writeValues, type ChartTarget } from '../../harness/controlplane/chart.js';
import {
  createStatefulSetPvc,
  jobPath as jobPathOf,
  runWithHookJob,
  type HookRun,
} from '../../harness/controlplane/controllers.js';
import { startDifyGuard } from '../../harness/controlplane/dify-guard.js';
import { startControlPlane } from '../../harness/controlplane/harness.js';
import { SECRET_WEBHOOK, base64 } from '../../harness/controlplane/stack.js';
import { WEBHOOK_KINDS } from '../../harness/controlplane/webhooks.js';
import { guardValues, passwordChange } from '../../harness/controlplane/release.js';

const release = 'dify';
const namespace = 'dify';
const name = (component: string): string => expandName(contract.names.component, release, component);
const secretName = expandName(contract.names.postgresqlSecret, release);
const pvcName = expandName(contract.names.postgresqlPvc, release);
const jobName = expandName(contract.names.migrationJob, release);
const jobPath = jobPathOf(namespace, jobName);
const redisSecretName = expandName(contract.names.redisSecret, release);
let redisPassword = '';

const cp = await startControlPlane(t, { name: 'helm' });
const guard = await startDifyGuard(t, cp);
t.teardown(() => {
  if (!t.passing()) t.comment(`${cp.diagnostics()}\n--- dify-guard\n${guard.process.tail(40)}`);
});
const rest = cp.rest();
const password = randomSecret();
const baseValues = guardValues(guard, { postgresql: { auth: { password } } });
const target = { release, namespace, valuesFile: writeValues(cp.dir, 'install', baseValues) };
/** The release with values of another PostgreSQL password, written as `<name>.values.json`. */
const withOtherPassword = (valuesName: string): ChartTarget => ({
  ...target,
  valuesFile: writeValues(
    cp.dir,
    valuesName,
    deepMerge(baseValues, { postgresql: { auth: { password: randomSecret() } } }),
  ),
});

function helm(args: string[]): Promise<CommandResult> {
  return run(binary('helm'), args, { env: cp.env(), timeoutMs: 240_000 });
}

async function helmWithMigrationHook(args: string[]): Promise<HookRun> {
  return runWithHookJob(rest, namespace, jobName, () => helm(args));
}

let installed: HookRun;

t.test('helm install of the whole chart completes', async (t) => {
  installed = await helmWithMigrationHook(chartArgs(['install'], target, ['--create-namespace', '--timeout', '3m']));
  t.equal(installed.result.status, 0, `helm install succeeded\n${installed.result.stderr}`);
  t.match(installed.result.stdout, /STATUS: deployed/);
  const status = await helm(['status', release, '--namespace', namespace, '-o', 'json']);
  t.equal((JSON.parse(status.stdout) as { info: { status: string } }).info.status, 'deployed', 'helm status: deployed');
});

t.test('the migration hook Job is as the naming contract says, and its pod passes dify-guard', async (t) => {
  const job = installed.job;
  const annotations = (job.metadata as Json).annotations as Record<string, string>;
  t.same(
    annotations['helm.sh/hook']?.split(',').sort(),
    ['post-install', 'post-upgrade'],
    'post-install,post-upgrade hook',
  );
  t.equal((job.spec as Json).ttlSecondsAfterFinished, 86400, 'ttlSecondsAfterFinished: 86400');
  const container = (((job.spec as Json).template as Json).spec as Json & { containers: Json[] }).containers[0] as Json;
  t.same(
    [...((container.command as string[]) ?? []), ...((container.args as string[]) ?? [])],
    ['flask', 'db', 'upgrade'],
    'runs `flask db upgrade` directly',
  );
  const stored = await rest.ok('GET', jobPath);
  t.match(
    ((stored.status as Json).conditions as Json[]).find((c) => c.type === 'Complete'),
    { status: 'True' },
    'marked complete by the test (no Job controller here)',
  );
  const env = (((installed.pod.spec as Json).containers as Json[])[0] as Json).env as Json[];
  t.same(
    env.find((e) => e.name === contract.env.dbPassword)?.valueFrom,
    { secretKeyRef: { name: secretName, key: SECRET_KEYS.postgresPassword } },
    'the migration pod reads DB_PASSWORD from the PostgreSQL Secret',
  );
});

async function get(path: string): Promise<Json> {
  return rest.ok('GET', path);
}
const apps = (kind: string, objectName: string): string =>
  `/apis/apps/v1/namespaces/${namespace}/${kind}/${objectName}`;

t.test('every object of the naming contract exists', async (t) => {
  const sts = await get(apps('statefulsets', expandName(contract.names.postgresql, release)));
  t.equal(
    ((sts.spec as Json).template as Json & { metadata: { labels: Json } }).metadata.labels[LABELS.app],
    expandName(contract.names.postgresql, release),
  );
  const claim = ((sts.spec as Json).volumeClaimTemplates as Json[])[0] as Json;
  t.equal(
    `${String((claim.metadata as Json).name)}-${String((sts.metadata as Json).name)}-0`,
    pvcName,
    `the StatefulSet's first pod gets PVC ${pvcName}`,
  );
  t.ok(await get(paths.namespace(namespace)));
  await get(`/api/v1/namespaces/${namespace}/services/${expandName(contract.names.postgresql, release)}`);

  const secret = await get(paths.secret(namespace, secretName));
  const data = secret.data as Record<string, string>;
  t.equal(data[SECRET_KEYS.postgresPassword], base64(password), 'postgres-password holds the installed password');
  t.equal(data[SECRET_KEYS.password], data[SECRET_KEYS.postgresPassword], 'password is the same value');
  // docs/rules.md#naming-contract: user dify, database dify.
  t.equal(data[SECRET_KEYS.postgresUsername], base64('dify'));
  t.equal(data[SECRET_KEYS.postgresDatabase], base64('dify'));

  const redis = await get(
    `/api/v1/namespaces/${namespace}/services/${expandName(contract.names.redisMaster, release)}`,
  );
  t.ok(
    ((redis.spec as Json).ports as Json[]).some((p) => p.port === contract.redisPort),
    `Redis Service on ${contract.redisPort}`,
  );
  redisPassword = String(
    ((await get(paths.secret(namespace, redisSecretName))).data as Json)[SECRET_KEYS.redisPassword],
  );
  t.ok(redisPassword.length > 0, `Redis auth on by default: Secret ${redisSecretName} generated by helm install`);
  const policies = await get(`/apis/networking.k8s.io/v1/namespaces/${namespace}/networkpolicies`);
  t.same(
    ((policies.items as Json[]) ?? []).map((p) => (p.metadata as Json).name).sort(),
    [
      expandName(contract.names.postgresql, release),
      expandName(contract.names.redisMaster, release),
      name(contract.components.sandbox),
    ].sort(),
    'the API server accepts the NetworkPolicies',
  );

  const c = contract.components;
  for (const component of [c.api, c.worker, c.beat, c.web, c.sandbox, c.ssrfProxy, c.pluginDaemon]) {
    const deployment = await get(apps('deployments', name(component)));
    const labels = (((deployment.spec as Json).template as Json).metadata as Json).labels as Json;
    t.equal(
      labels[LABELS.app],
      expandName(contract.names.appLabel, release, component),
      `Deployment ${name(component)}: pod label app=${name(component)}`,
    );
    t.equal(labels[LABELS.component], component);
    t.equal(labels[LABELS.instance], release);
  }
  const daemon = await get(`/api/v1/namespaces/${namespace}/services/${name(c.pluginDaemon)}`);
  t.ok(
    ((daemon.spec as Json).ports as Json[]).some((p) => p.port === 5002),
    'plugin daemon Service on 5002',
  );
  const daemonDeployment = await get(apps('deployments', name(c.pluginDaemon)));
  const probe = (
    (((daemonDeployment.spec as Json).template as Json).spec as Json & { containers: Json[] }).containers[0] as Json
  ).readinessProbe as Json;
  // The daemon serves GET /health/check only (docs/rules.md#naming-contract; the guide says /health, which answers 404).
  t.equal((probe.httpGet as Json | undefined)?.path, '/health/check', 'plugin daemon probed on GET /health/check');

  await get(
    `/apis/networking.k8s.io/v1/namespaces/${namespace}/ingresses/${expandName(contract.names.ingress, release)}`,
  );
  t.pass(`Ingress ${expandName(contract.names.ingress, release)} exists`);

  for (const kind of WEBHOOK_KINDS) {
    const list = await get(`/apis/admissionregistration.k8s.io/v1/${kind.toLowerCase()}s`);
    const hooks = ((list.items as Json[]) ?? []).flatMap((i) => (i.webhooks as Json[]) ?? []);
    t.ok(
      hooks.length > 0 && hooks.every((h) => String((h.clientConfig as Json).url).startsWith(guard.url('/'))),
      `${kind} installed by helm, calling the local dify-guard`,
    );
  }
});

t.test(
  'with the PVC present, helm upgrade with another password is refused (the chart at render time, before dify-guard)',
  async (t) => {
    const sts = await get(apps('statefulsets', expandName(contract.names.postgresql, release)));
    t.equal(await createStatefulSetPvc(rest, sts), pvcName, 'the StatefulSet controller would create this PVC');
    // The cache learns of the new PVC through its watch.
    await waitFor('dify-guard to see the PVC', async () => {
      const res = await rest.patch(paths.secret(namespace, secretName), 'merge', passwordChange(), { dryRun: 'All' });
      return res.status === 403 ? true : undefined;
    });

    const otherTarget = withOtherPassword('other-password');
    const refused = await helm(chartArgs(['upgrade'], otherTarget, ['--timeout', '2m']));
    t.not(refused.status, 0, 'helm upgrade fails');
    // The chart's lookup check refuses first, so nothing reaches admission (and --dry-run=server is refused alike).
    t.match(refused.stderr, `postgresql.auth.password differs from the password in Secret ${namespace}/${secretName}`);
    t.notMatch(
      refused.stderr,
      `admission webhook "${SECRET_WEBHOOK}" denied the request`,
      'helm never sent the change',
    );
    t.match(
      refused.stderr,
      `kubectl delete pvc -n ${namespace} ${pvcName}`,
      "the operator sees the way out in helm's output",
    );
    t.equal(
      ((await get(paths.secret(namespace, secretName))).data as Json)[SECRET_KEYS.postgresPassword],
      base64(password),
      'the password is unchanged',
    );
    const serverDryRun = await helm(chartArgs(['upgrade'], otherTarget, ['--dry-run=server']));
    t.not(serverDryRun.status, 0, 'helm upgrade --dry-run=server does not report success either');
  },
);

t.test('helm upgrade with the same password goes through (post-upgrade hook run again)', async (t) => {
  const upgraded = await helmWithMigrationHook(chartArgs(['upgrade'], target, ['--timeout', '3m']));
  t.equal(upgraded.result.status, 0, `helm upgrade succeeded\n${upgraded.result.stderr}`);
  t.match(upgraded.result.stdout, /STATUS: deployed/);
  t.ok(
    ((await get(paths.secret(namespace, redisSecretName))).data as Json)[SECRET_KEYS.redisPassword] === redisPassword,
    'the generated Redis password is kept by the upgrade (looked up, not generated again)',
  );
});

t.test('helm uninstall works with the PVC present; the PostgreSQL Secret is kept with it', async (t) => {
  const res = await helm(['uninstall', release, '--namespace', namespace, '--timeout', '2m']);
  t.equal(res.status, 0, `helm uninstall succeeded\n${res.stderr}`);
  const kept = await rest.get(paths.secret(namespace, secretName));
  t.equal(
    kept.status,
    200,
    'the Secret is kept (helm.sh/resource-policy: keep, like the PVC whose password it records)',
  );
  t.equal(
    (kept.body.data as Json)[SECRET_KEYS.postgresPassword],
    base64(password),
    'with the password the PVC was initialised with',
  );
  t.equal((await rest.get(paths.pvc(namespace, pvcName))).status, 200, 'the PVC (not owned by helm) keeps the data');
  const redisKept = await rest.get(paths.secret(namespace, redisSecretName));
  t.ok(
    redisKept.status === 200 && (redisKept.body.data as Json)[SECRET_KEYS.redisPassword] === redisPassword,
    'the Redis Secret is kept too, so a reinstall gives the same password',
  );
  for (const kind of WEBHOOK_KINDS) {
    const list = await get(`/apis/admissionregistration.k8s.io/v1/${kind.toLowerCase()}s`);
    t.same(list.items, [], `no ${kind} left behind`);
  }
});

// docs/rules.md#postgresql-secret-rules through plain helm: uninstall removed the webhook configurations, and an install
// creates them last (after the Secret), so the refusal must not depend on dify-guard being registered.
t.test(
  'a reinstall over the kept PVC with another password is refused (docs/rules.md#postgresql-secret-rules)',
  async (t) => {
    const otherTarget = withOtherPassword('reinstall-other-password');
    const res = await helm(chartArgs(['install'], otherTarget, ['--timeout', '2m', '--no-hooks']));
    t.not(res.status, 0, 'helm install fails');
    t.match(res.stderr, pvcName, 'naming the PVC that keeps the old password');
    t.equal(
      ((await get(paths.secret(namespace, secretName))).data as Json)[SECRET_KEYS.postgresPassword],
      base64(password),
      'the PostgreSQL password is unchanged',
    );
  },
);

t.test('a reinstall over the kept PVC with the same password goes through (the kept Secret is adopted)', async (t) => {
  await helm(['uninstall', release, '--namespace', namespace, '--ignore-not-found', '--no-hooks']);
  const again = await helmWithMigrationHook(chartArgs(['install'], target, ['--timeout', '3m']));
  t.equal(again.result.status, 0, `helm install succeeded\n${again.result.stderr}`);
  t.equal(
    ((await get(paths.secret(namespace, secretName))).data as Json)[SECRET_KEYS.postgresPassword],
    base64(password),
  );
});
