// At cluster scale: the chart installed once with dify-guard in the cluster (two replicas served by real
// processes, guard-pods.ts), the PostgreSQL Secret and PVC of 20 Dify releases in 20 namespaces, and 500
// Dify pods created in parallel batches while one dify-guard replica is evicted under its PDB and the
// Deployment is rolled (`kubectl rollout restart`); a password change is attempted in each namespace
// during the roll. Asserted: no pod creation failed, every pod was mutated, no password change got
// through. The figures are printed as comments, never asserted (no timings in tests).
import t from 'tap';
import { ENV, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { waitFor } from '../../harness/commands.js';
import { paths, type Json } from '../../harness/kube-rest.js';
import {
  installChartAndWait,
  findObject,
  randomSecret,
  renderChart,
  writeValues,
} from '../../harness/controlplane/chart.js';
import { Release, inClusterValues } from '../../harness/controlplane/release.js';
import { createStatefulSetPvc } from '../../harness/controlplane/controllers.js';
import { startGuardCluster } from '../../harness/controlplane/guard-pods.js';
import { base64, ensureNamespace, envVar } from '../../harness/controlplane/stack.js';

const RELEASES = 20;
const PODS = 500;
const BATCH = 25;
const release = 'dify';
const guardNamespace = 'dify';
const namespaces = Array.from({ length: RELEASES }, (_, i) => `tenant-${String(i + 1).padStart(2, '0')}`);

const { cluster, guards } = await startGuardCluster(t, { name: 'scale', namespace: guardNamespace, nodes: 3 });
const { cp, rest } = cluster;

const guardName = expandName(contract.names.guard, release);
const valuesFile = writeValues(cp.dir, 'scale', inClusterValues());
const rendered = await renderChart({ release, namespace: guardNamespace, valuesFile, home: cp.dir });
const secretName = expandName(contract.names.postgresqlSecret, release);

/** A rendered object moved to another namespace (the objects of one more Dify release). */
function inNamespace(obj: Json, namespace: string): Json {
  const copy = structuredClone(obj);
  (copy.metadata as Json).namespace = namespace;
  return copy;
}

/** An api pod as its ReplicaSet would create it, asking for migrations (dify-guard must turn them off), held by a scheduling gate. */
function difyPod(namespace: string): Json {
  const pod = new Release(release, namespace).migratingApiPod(rendered);
  // Held before scheduling: the 500 pods test admission, not how many pods kwok's nodes hold.
  (pod.spec as Json).schedulingGates = [{ name: 'dify-guard.test/admission-only' }];
  return pod;
}

t.test("the chart with dify-guard in the cluster, and 20 releases' PostgreSQL Secrets and PVCs", async (t) => {
  const res = await installChartAndWait(cp, { release, namespace: guardNamespace, valuesFile });
  t.match(res.stdout, /STATUS: deployed/, 'helm reports the release deployed');
  t.equal(guards.readyPods().length, 2, 'two dify-guard processes ready');
  const secret = findObject(rendered, 'Secret', secretName);
  const sts = findObject(rendered, 'StatefulSet', expandName(contract.names.postgresql, release));
  for (const ns of namespaces) {
    await ensureNamespace(rest, ns);
    await rest.ok('POST', paths.secrets(ns), { body: inNamespace(secret, ns) });
    await createStatefulSetPvc(rest, inNamespace(sts, ns));
  }
  t.pass(`${RELEASES} namespaces with the Secret ${secretName} and its PVC`);
});

interface Figures {
  created: number;
  mutated: number;
  failures: string[];
  refused: number;
  letThrough: string[];
  /** Pods created while the eviction and the roll were under way, and whether that window is open. */
  duringRoll: number;
  rolling: boolean;
}

async function createBatch(batch: number, figures: Figures): Promise<void> {
  await Promise.all(
    Array.from({ length: BATCH }, async (_, i) => {
      const ns = namespaces[(batch * BATCH + i) % RELEASES] as string;
      const res = await rest.create(paths.pods(ns), difyPod(ns));
      if (res.status !== 201) {
        figures.failures.push(`${ns}: ${res.status} ${String(res.body.message)}`);
        return;
      }
      figures.created++;
      if (figures.rolling) figures.duringRoll++;
      const container = String((((res.body.spec as Json).containers as Json[])[0] as Json).name);
      if (envVar(res.body, container, ENV.migrationEnabled)?.value === 'false') figures.mutated++;
    }),
  );
}

async function tryPasswordChange(ns: string, figures: Figures): Promise<void> {
  const next = base64(randomSecret());
  const data = { [SECRET_KEYS.postgresPassword]: next, [SECRET_KEYS.password]: next };
  const res = await rest.patch(paths.secret(ns, secretName), 'merge', { data });
  if (res.status === 403) figures.refused++;
  else figures.letThrough.push(`${ns}: ${res.status}`);
}

t.test('500 Dify pods while a dify-guard replica is evicted and the Deployment rolled', async (t) => {
  const figures: Figures = {
    created: 0,
    mutated: 0,
    failures: [],
    refused: 0,
    letThrough: [],
    duringRoll: 0,
    rolling: false,
  };
  const before = new Set(guards.served.map((s) => s.name));
  const started = Date.now();
  let roll: Promise<unknown> = Promise.resolve();
  for (let batch = 0; batch < PODS / BATCH; batch++) {
    if (batch === 2) {
      figures.rolling = true;
      roll = evictAndRoll().finally(() => {
        figures.rolling = false;
      });
    }
    const change = batch < RELEASES ? tryPasswordChange(namespaces[batch] as string, figures) : undefined;
    await Promise.all([createBatch(batch, figures), change]);
  }
  const rollError = await roll.then(
    () => undefined,
    (err: Error) => err,
  );
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const replaced = guards.served.filter((s) => !before.has(s.name)).length;
  t.comment(
    `pods: ${figures.created} created, ${figures.mutated} mutated, ${figures.failures.length} failed; ` +
      `password changes: ${figures.refused} refused, ${figures.letThrough.length} let through; ` +
      `dify-guard pods started during the run: ${replaced}; pods created during the eviction and roll: ${figures.duringRoll}; ` +
      `duration ${seconds} s`,
  );
  t.error(rollError, 'the eviction was allowed and the roll finished');
  t.same(figures.failures.slice(0, 5), [], '0 failed pod creations');
  t.equal(figures.created, PODS, `${PODS} pods created`);
  t.equal(figures.mutated, PODS, 'every created pod mutated (MIGRATION_ENABLED=false)');
  t.same(figures.letThrough, [], '0 password changes let through');
  t.equal(figures.refused, RELEASES, 'a password change refused in each namespace');
  t.ok(
    replaced >= 3,
    'the eviction and the roll replaced the dify-guard pods (one for the eviction, two for the roll)',
  );
  t.ok(figures.duringRoll > 0, 'pods were created while the eviction and the roll were under way');
  t.same(guards.problems(), [], 'no dify-guard process failed');
});

/** Evicts one dify-guard pod (the Eviction API checks the PDB), then `kubectl rollout restart` and waits for the roll. */
async function evictAndRoll(): Promise<void> {
  const victim = guards.readyPods()[0];
  if (!victim) throw new Error('no ready dify-guard pod to evict');
  await rest.ok('POST', `${paths.pod(guardNamespace, victim.name)}/eviction`, {
    body: { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name: victim.name, namespace: guardNamespace } },
  });
  const restart = await cp.kubectl(['rollout', 'restart', `deployment/${guardName}`, '-n', guardNamespace]);
  if (restart.status !== 0) throw new Error(`kubectl rollout restart: ${restart.stderr}`);
  const status = await cp.kubectl(
    ['rollout', 'status', `deployment/${guardName}`, '-n', guardNamespace, '--timeout=180s'],
    { timeoutMs: 200_000 },
  );
  if (status.status !== 0) throw new Error(`kubectl rollout status: ${status.stderr}`);
  await waitFor(
    'two ready dify-guard processes after the roll',
    () => (guards.readyPods().length === 2 ? true : undefined),
    { timeoutMs: 60_000 },
  );
}
