// The cluster of cluster.ts behaves as a cluster where the chart needs it to: the real controllers and
// scheduler act on kwok's simulated nodes, so Deployments become Available, a StatefulSet gets its pod
// and a provisioned PVC, Jobs complete, PDBs count healthy pods, and `helm upgrade --install --wait`
// of the chart finishes with its migration hook Job completed by the real Job controller.
import t from 'tap';
import { contract, expandName } from '../../src/contract.js';
import { waitFor } from '../../harness/commands.js';
import { paths, type Json } from '../../harness/kube-rest.js';
import { pvcManifest } from '../../harness/manifests.js';
import { installChartAndWait, testValues, writeValues } from '../../harness/controlplane/chart.js';
import { SIMULATED_CONTAINER_LOG, STORAGE_CLASS, startCluster } from '../../harness/controlplane/cluster.js';
import { jobPath } from '../../harness/controlplane/controllers.js';
import { startDifyGuard } from '../../harness/controlplane/dify-guard.js';
import { ensureNamespace } from '../../harness/controlplane/stack.js';

const ns = 'proof';
// `kubectl exec` into db-0 runs here, with one variable set (a stand-in for psql against the real PostgreSQL);
// container `own` has a log of its own, container `absent` cannot run here.
const OWN_LOG = 'a log of its own';
const ABSENT = 'absent cannot run here';
const cluster = await startCluster(t, {
  name: 'cluster',
  execs: [{ namespace: ns, pod: 'db-0', env: { SIMULATED_POD: 'db-0' } }],
  logs: [{ namespace: ns, containers: ['own'], text: OWN_LOG }],
  notRunning: [{ namespace: ns, containers: ['absent'], message: ABSENT }],
});
const { cp, rest } = cluster;
t.teardown(() => {
  if (!t.passing()) t.comment(cluster.diagnostics());
});

await ensureNamespace(rest, ns);
const apps = (kind: string, name = ''): string => `/apis/apps/v1/namespaces/${ns}/${kind}${name ? `/${name}` : ''}`;
const labels = (app: string): Json => ({ app });
const container = (name: string): Json => ({ name, image: `registry.invalid/${name}:1` });
const podTemplate = (app: string, spec: Json = { containers: [container(app)] }): Json => ({
  metadata: { labels: labels(app) },
  spec,
});
const condition = (obj: Json, type: string): Json | undefined =>
  (((obj.status as Json | undefined)?.conditions as Json[] | undefined) ?? []).find((c) => c.type === type);
const status = (obj: Json): Json => (obj.status as Json | undefined) ?? {};

/** Polls a GET until `done` holds for the object (on failure, the last object is in the message). */
async function until(path: string, what: string, done: (obj: Json) => boolean, timeoutMs = 90_000): Promise<Json> {
  let last: Json = {};
  try {
    return await waitFor(
      what,
      async () => {
        last = await rest.ok('GET', path);
        return done(last) ? last : undefined;
      },
      { timeoutMs, intervalMs: 250 },
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}\nlast status: ${JSON.stringify(last.status)}`, { cause: err });
  }
}

async function podsOf(app: string): Promise<Json[]> {
  const list = await rest.ok('GET', paths.pods(ns), { query: { labelSelector: `app=${app}` } });
  return list.items as Json[];
}

t.test('a Deployment becomes Available, its pods scheduled on kwok nodes and Running', async (t) => {
  await rest.ok('POST', apps('deployments'), {
    body: {
      metadata: { name: 'web', namespace: ns },
      spec: { replicas: 2, selector: { matchLabels: labels('web') }, template: podTemplate('web') },
    },
  });
  const deployment = await until(
    apps('deployments', 'web'),
    'Deployment web Available with 2 replicas',
    (d) => condition(d, 'Available')?.status === 'True' && status(d).availableReplicas === 2,
  );
  t.equal(status(deployment).readyReplicas, 2, 'two ready replicas');
  const pods = await podsOf('web');
  t.equal(pods.length, 2, 'two pods, made by the ReplicaSet controller');
  for (const pod of pods) {
    const podName = String((pod.metadata as Json).name);
    t.ok(cluster.nodeNames.includes(String((pod.spec as Json).nodeName)), `pod ${podName} scheduled on a kwok node`);
    t.equal(status(pod).phase, 'Running', 'Running (kwok)');
    t.match(status(pod).podIP, /^10\.244\./, "with an address from kwok's pod range");
    t.equal(((pod.metadata as Json).ownerReferences as Json[])[0]?.kind, 'ReplicaSet', 'owned by a ReplicaSet');
  }
});

t.test('a PodDisruptionBudget reports the disruptions it allows', async (t) => {
  await rest.ok('POST', `/apis/policy/v1/namespaces/${ns}/poddisruptionbudgets`, {
    body: {
      metadata: { name: 'web', namespace: ns },
      spec: { minAvailable: 1, selector: { matchLabels: labels('web') } },
    },
  });
  const pdb = await until(
    `/apis/policy/v1/namespaces/${ns}/poddisruptionbudgets/web`,
    'the disruption controller to count the pods',
    (p) => status(p).expectedPods === 2 && status(p).observedGeneration === 1,
  );
  t.equal(status(pdb).currentHealthy, 2, 'two healthy pods');
  t.equal(status(pdb).desiredHealthy, 1, 'minAvailable 1');
  t.equal(status(pdb).disruptionsAllowed, 1, 'one disruption allowed');
});

t.test('a StatefulSet gets its pod Running and its PVC Bound to a provisioned volume', async (t) => {
  await rest.ok('POST', `/api/v1/namespaces/${ns}/services`, {
    body: {
      metadata: { name: 'db', namespace: ns },
      spec: { clusterIP: 'None', selector: labels('db'), ports: [{ port: 5432 }] },
    },
  });
  await rest.ok('POST', apps('statefulsets'), {
    body: {
      metadata: { name: 'db', namespace: ns },
      spec: {
        serviceName: 'db',
        replicas: 1,
        selector: { matchLabels: labels('db') },
        template: podTemplate('db', {
          containers: [{ ...container('db'), volumeMounts: [{ name: 'data', mountPath: '/data' }] }],
        }),
        volumeClaimTemplates: [pvcManifest('data')],
      },
    },
  });
  const sts = await until(
    apps('statefulsets', 'db'),
    'StatefulSet db with one ready replica',
    (s) => status(s).readyReplicas === 1,
  );
  t.equal(status(sts).availableReplicas, 1, 'one available replica');
  const pod = await rest.ok('GET', paths.pod(ns, 'db-0'));
  t.equal(status(pod).phase, 'Running', 'pod db-0 Running');
  const pvc = await until(paths.pvc(ns, 'data-db-0'), 'PVC data-db-0 Bound', (c) => status(c).phase === 'Bound');
  t.equal((pvc.spec as Json).storageClassName, STORAGE_CLASS, 'the default StorageClass was applied');
  const pv = await rest.ok('GET', `/api/v1/persistentvolumes/${String((pvc.spec as Json).volumeName)}`);
  t.equal(
    ((pv.metadata as Json).annotations as Json)['pv.kubernetes.io/provisioned-by'],
    'kubernetes.io/host-path',
    "the volume was made by the controller manager's host-path provisioner",
  );
  t.equal(status(pv).phase, 'Bound', `PV ${String((pv.metadata as Json).name)} Bound`);
  const exec = await cp.kubectl(['exec', '-n', ns, 'db-0', '--', 'sh', '-c', 'echo "$SIMULATED_POD"']);
  t.equal(
    exec.stdout.trim(),
    'db-0',
    `kubectl exec db-0 runs the command locally with the configured environment\n${exec.stderr}`,
  );
  const webPod = String((((await podsOf('web'))[0] as Json).metadata as Json).name);
  const refused = await cp.kubectl(['exec', '-n', ns, webPod, '--', 'true']);
  t.not(refused.status, 0, 'kubectl exec into a pod without a local target fails');
  t.match(refused.stderr, `no exec found for container "web"`, 'kwok says why');
});

t.test('a Job completes: its pod Succeeded, the Job controller marks it Complete', async (t) => {
  await rest.ok('POST', `/apis/batch/v1/namespaces/${ns}/jobs`, {
    body: {
      metadata: { name: 'once', namespace: ns },
      spec: {
        backoffLimit: 0,
        template: podTemplate('once', { restartPolicy: 'Never', containers: [container('once')] }),
      },
    },
  });
  const job = await until(jobPath(ns, 'once'), 'Job once Complete', (j) => condition(j, 'Complete')?.status === 'True');
  t.equal(status(job).succeeded, 1, 'one pod succeeded');
  const pods = await podsOf('once');
  t.equal(pods.length, 1, 'one pod, made by the Job controller');
  t.equal(status(pods[0] as Json).phase, 'Succeeded', 'the pod Succeeded (kwok)');
  const logs = await cp.kubectl(['logs', '-n', ns, 'job/once']);
  t.equal(logs.status, 0, `kubectl logs job/once\n${logs.stderr}`);
  t.equal(
    logs.stdout.trim(),
    SIMULATED_CONTAINER_LOG,
    'kubectl logs reaches kwok through the API server and says what ran: nothing',
  );
});

t.test("a container's own log; a container that cannot run here says so to the guide's curl", async (t) => {
  await rest.ok('POST', apps('deployments'), {
    body: {
      metadata: { name: 'pair', namespace: ns },
      spec: {
        replicas: 1,
        selector: { matchLabels: labels('pair') },
        template: podTemplate('pair', { containers: [container('own'), container('absent')] }),
      },
    },
  });
  await until(apps('deployments', 'pair'), 'Deployment pair ready', (d) => status(d).readyReplicas === 1);
  const pod = String((((await podsOf('pair'))[0] as Json).metadata as Json).name);
  const logs = (c: string): Promise<string> =>
    cp.kubectl(['logs', '-n', ns, pod, '-c', c]).then((r) => r.stdout.trim());
  t.equal(await logs('own'), OWN_LOG, 'kubectl logs -c own prints its own file');
  t.equal(await logs('absent'), SIMULATED_CONTAINER_LOG, 'the other container prints the catch-all line');
  const curl = ['curl', '-s', 'http://localhost:5002/health/check'];
  const absent = await cp.kubectl(['exec', '-n', ns, pod, '-c', 'absent', '--', ...curl]);
  t.equal(absent.status, 1, 'curl in the container that cannot run here exits 1');
  t.equal(absent.stdout, '', 'with no answer on stdout');
  t.match(absent.stderr, ABSENT, 'and says why on stderr');
  const own = await cp.kubectl(['exec', '-n', ns, pod, '-c', 'own', '--', ...curl]);
  t.match(own.stderr, 'no exec found for container "own"', 'the other container has no exec mapped');
  const real = await cp.kubectl(['exec', '-n', ns, 'db-0', '--', 'curl', '--version']);
  t.match(real.stdout, /^curl \d/, 'in db-0 the shim runs the real curl');
});

t.test(
  'helm upgrade --install --wait of the chart finishes; the migration hook Job is run by the Job controller',
  async (t) => {
    const guard = await startDifyGuard(t, cp);
    const release = 'dify';
    const namespace = 'dify';
    const valuesFile = writeValues(cp.dir, 'cluster', testValues({ url: guard.url(''), caBundle: guard.caBundle }));
    const res = await installChartAndWait(cp, { release, namespace, valuesFile });
    t.match(res.stdout, /STATUS: deployed/, 'helm reports the release deployed');

    const jobName = expandName(contract.names.migrationJob, release);
    const job = await rest.ok('GET', jobPath(namespace, jobName));
    t.equal(condition(job, 'Complete')?.status, 'True', 'the migration Job is Complete');
    t.equal(status(job).succeeded, 1, 'after one successful pod');
    const jobPods = (await rest.ok('GET', paths.pods(namespace), { query: { labelSelector: `job-name=${jobName}` } }))
      .items as Json[];
    t.equal(jobPods.length, 1, 'the Job controller made one pod');
    t.equal(status(jobPods[0] as Json).phase, 'Succeeded', 'the migration pod Succeeded (kwok)');

    const logs = await cp.kubectl(['logs', '-n', namespace, `job/${jobName}`]);
    t.equal(
      logs.stdout.trim(),
      SIMULATED_CONTAINER_LOG,
      `kubectl logs job/${jobName} says the container was simulated`,
    );

    const pvcName = expandName(contract.names.postgresqlPvc, release);
    t.equal(status(await rest.ok('GET', paths.pvc(namespace, pvcName))).phase, 'Bound', `PVC ${pvcName} Bound`);
    const sts = await rest.ok(
      'GET',
      `/apis/apps/v1/namespaces/${namespace}/statefulsets/${expandName(contract.names.postgresql, release)}`,
    );
    t.equal(status(sts).readyReplicas, 1, 'PostgreSQL StatefulSet ready');
    const deployments = (await rest.ok('GET', `/apis/apps/v1/namespaces/${namespace}/deployments`)).items as Json[];
    t.ok(deployments.length >= 7, `${deployments.length} Deployments`);
    for (const d of deployments) {
      t.equal(condition(d, 'Available')?.status, 'True', `Deployment ${String((d.metadata as Json).name)} Available`);
    }
  },
);
