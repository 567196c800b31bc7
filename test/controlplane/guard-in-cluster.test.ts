// dify-guard installed by the chart in the cluster (no webhook.url): its Deployment's two simulated pods
// are served by real dify-guard processes on the pods' own addresses (guard-pods.ts), and the API server
// reaches the webhook through the chart's Service and its EndpointSlice (--enable-aggregator-routing).
// So the chart's Service, selector labels, ports, PDB, RBAC and helm-generated certificate are what is tested.
import t from 'tap';
import { ENV, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { waitFor } from '../../harness/commands.js';
import { paths, type Json } from '../../harness/kube-rest.js';
import { installChartAndWait, randomSecret, renderChart, writeValues } from '../../harness/controlplane/chart.js';
import { Release, inClusterValues } from '../../harness/controlplane/release.js';
import { startGuardCluster } from '../../harness/controlplane/guard-pods.js';
import { SECRET_WEBHOOK, base64, envVar } from '../../harness/controlplane/stack.js';

const release = 'dify';
const namespace = 'dify';
const { cluster, guards } = await startGuardCluster(t, { name: 'guard-in-cluster', namespace });
const { cp, rest } = cluster;

const guardName = expandName(contract.names.guard, release);
const valuesFile = writeValues(cp.dir, 'in-cluster', inClusterValues());

/** The pod address range of this cluster, e.g. 198.18.3.0/24 -> 198.18.3. */
const rangePrefix = (cluster.podRange?.cidr ?? '').replace(/0\/24$/, '');

t.test('helm install with dify-guard in the cluster: two replicas Ready, served by real processes', async (t) => {
  const res = await installChartAndWait(cp, { release, namespace, valuesFile });
  t.match(res.stdout, /STATUS: deployed/, 'helm reports the release deployed');
  const deployment = await rest.ok('GET', `/apis/apps/v1/namespaces/${namespace}/deployments/${guardName}`);
  t.equal((deployment.status as Json).readyReplicas, 2, `Deployment ${guardName}: two ready replicas`);
  const ready = guards.readyPods();
  t.equal(ready.length, 2, 'two real dify-guard processes answer /readyz');
  for (const pod of ready) t.ok(pod.ip.startsWith(rangePrefix), `pod ${pod.name} serves on its own address ${pod.ip}`);
  t.same(guards.problems(), [], 'no process failed');
  const slices = await rest.ok('GET', `/apis/discovery.k8s.io/v1/namespaces/${namespace}/endpointslices`, {
    query: { labelSelector: `kubernetes.io/service-name=${guardName}` },
  });
  const addresses = (slices.items as Json[]).flatMap((s) =>
    ((s.endpoints as Json[] | undefined) ?? [])
      .filter((e) => (e.conditions as Json).ready === true)
      .flatMap((e) => e.addresses as string[]),
  );
  t.same(
    addresses.sort(),
    ready.map((p) => p.ip).sort(),
    "the Service's EndpointSlice holds the two ready pod addresses",
  );
  const pdb = await rest.ok('GET', `/apis/policy/v1/namespaces/${namespace}/poddisruptionbudgets/${guardName}`);
  t.equal((pdb.status as Json).disruptionsAllowed, 1, "the chart's PDB allows one disruption");
});

t.test('a Dify pod is mutated and a password change refused, through the Service', async (t) => {
  const rendered = await renderChart({ release, namespace, valuesFile, home: cp.dir });
  const pod = new Release(release, namespace).migratingApiPod(rendered);
  const created = await rest.create(paths.pods(namespace), pod);
  t.equal(created.status, 201, `pod created: ${String(created.body.message ?? '')}`);
  const stored = await rest.ok('GET', paths.pod(namespace, String((created.body.metadata as Json).name)));
  const container = String((((stored.spec as Json).containers as Json[])[0] as Json).name);
  t.same(envVar(stored, container, ENV.migrationEnabled)?.value, 'false', 'MIGRATION_ENABLED corrected by dify-guard');

  const secretPath = paths.secret(namespace, expandName(contract.names.postgresqlSecret, release));
  const next = randomSecret();
  const data = { [SECRET_KEYS.postgresPassword]: base64(next), [SECRET_KEYS.password]: base64(next) };
  const refused = await rest.patch(secretPath, 'merge', { data });
  t.equal(refused.status, 403, 'the password change is refused');
  t.match(
    String(refused.body.message),
    `admission webhook "${SECRET_WEBHOOK}" denied the request`,
    "by the chart's webhook",
  );
  const logged = await waitFor(
    'a dify-guard pod process to log the refusal',
    () =>
      guards.served.find((s) => {
        const log = s.process?.log() ?? '';
        return log.includes(secretPath.split('/').pop() as string) && /denied|refus/i.test(log);
      }),
    { timeoutMs: 15_000 },
  );
  t.ok(logged, `logged by the process serving pod ${logged.name}`);
});

t.test('why pod addresses are not loopback: the API server refuses 127.0.0.0/8 in an EndpointSlice', async (t) => {
  const res = await rest.create(`/apis/discovery.k8s.io/v1/namespaces/${namespace}/endpointslices`, {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'loopback-probe', namespace },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['127.0.0.5'] }],
    ports: [{ name: 'https', port: 8443, protocol: 'TCP' }],
  });
  t.equal(res.status, 422, 'refused as invalid');
  t.match(String(res.body.message), 'loopback', 'because the address is in the loopback range');
});
