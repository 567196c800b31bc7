// The naming contract (docs/rules.md#naming-contract), as the real helm renders the chart: every name the operators'
// guide types (dify-postgresql-0, data-dify-postgresql-0, job/dify-db-migration, -l app=dify-api...)
// comes out of contract.json's templates, for release dify and for any other release.
import t from 'tap';
import { LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import {
  containersOf,
  find,
  kindOf,
  labelsOf,
  nameOf,
  ofKind,
  render,
  requiredValues,
  workloads,
  type Json,
} from '../../harness/helm.js';
import { WEBHOOK_KINDS } from '../../harness/controlplane/webhooks.js';
import { mainContainerOf, podLabelsOf } from './support.js';

const difyComponents = [
  contract.components.api,
  contract.components.worker,
  contract.components.beat,
  contract.components.web,
  contract.components.sandbox,
  contract.components.ssrfProxy,
  contract.components.pluginDaemon,
];

for (const [release, namespace] of [
  ['dify', 'dify'],
  ['acme', 'prod'],
] as const) {
  t.test(`release ${release} in namespace ${namespace}`, async (t) => {
    const values = requiredValues();
    const { objects } = await render(values, { release, namespace });
    const name = (key: keyof typeof contract.names, component = ''): string =>
      expandName(contract.names[key], release, component);

    t.test('PostgreSQL: StatefulSet, pod -0 and PVC data-<release>-postgresql-0', async (t) => {
      const sts = find(objects, 'StatefulSet', name('postgresql'));
      t.equal((sts.spec as Json).replicas, 1, 'one PostgreSQL pod, <release>-postgresql-0');
      const claims = (sts.spec as Json).volumeClaimTemplates as Json[];
      t.equal(claims.length, 1);
      // A StatefulSet's PVC is named <claim template>-<statefulset>-<ordinal>.
      t.equal(
        `${nameOf(claims[0]!)}-${nameOf(sts)}-0`,
        name('postgresqlPvc'),
        'the PVC name the guide deletes and dify-guard watches',
      );
      const svc = find(objects, 'Service', name('postgresql'));
      t.ok(svc, 'DB_HOST resolves to a Service of the same name');
    });

    t.test('PostgreSQL Secret: name, keys, values and the labels dify-guard selects', async (t) => {
      const secret = find(objects, 'Secret', name('postgresqlSecret'));
      const data = secret.data as Record<string, string>;
      t.same(
        Object.keys(data).sort(),
        [
          SECRET_KEYS.postgresPassword,
          SECRET_KEYS.password,
          SECRET_KEYS.postgresUsername,
          SECRET_KEYS.postgresDatabase,
        ].sort(),
      );
      const decoded = (k: string): string => Buffer.from(data[k]!, 'base64').toString('utf8');
      t.ok(
        decoded(SECRET_KEYS.postgresPassword) === values.postgresql.auth.password,
        'postgres-password is the value given',
      );
      t.ok(decoded(SECRET_KEYS.password) === decoded(SECRET_KEYS.postgresPassword), 'password holds the same value');
      // The guide's `psql -U dify -d dify`.
      t.equal(decoded(SECRET_KEYS.postgresUsername), 'dify');
      t.equal(decoded(SECRET_KEYS.postgresDatabase), 'dify');
      t.match(labelsOf(secret), {
        [LABELS.name]: contract.values.difyName,
        [LABELS.component]: contract.components.postgresql,
        [LABELS.instance]: release,
      });
      t.notOk(secret.stringData, 'data only');
    });

    t.test('Redis: Service <release>-redis-master on the contract port', async (t) => {
      const svc = find(objects, 'Service', name('redisMaster'));
      const ports = (svc.spec as Json).ports as Json[];
      t.same(
        ports.map((p) => p.port),
        [contract.redisPort],
      );
      t.ok(find(objects, 'StatefulSet', name('redisMaster')));
    });

    t.test('Dify Deployments, their pod labels (app=<release>-<component>) and Services', async (t) => {
      for (const component of difyComponents) {
        const deploy = find(objects, 'Deployment', name('component', component));
        const labels = podLabelsOf(deploy);
        t.equal(labels[LABELS.app], name('appLabel', component), `${component}: app label`);
        t.equal(labels[LABELS.component], component, `${component}: component label`);
        t.equal(labels[LABELS.name], contract.values.difyName);
        t.equal(labels[LABELS.instance], release);
        const selector = ((deploy.spec as Json).selector as Json).matchLabels as Record<string, string>;
        for (const [k, v] of Object.entries(selector))
          t.equal(labels[k], v, `${component}: selector ${k} matches its pods`);
        t.equal(
          containersOf(deploy)[0]?.name,
          component,
          `${component}: the first container (kubectl exec's default) is the component`,
        );
      }
      for (const component of [
        contract.components.api,
        contract.components.web,
        contract.components.sandbox,
        contract.components.ssrfProxy,
      ]) {
        t.ok(find(objects, 'Service', name('component', component)), `${component} Service`);
      }
    });

    t.test('plugin daemon: Deployment and Service on port 5002, probed on its health route', async (t) => {
      const deploy = find(objects, 'Deployment', name('component', contract.components.pluginDaemon));
      const svc = find(objects, 'Service', name('component', contract.components.pluginDaemon));
      const http = ((svc.spec as Json).ports as Json[]).find((p) => p.name === 'http');
      t.equal(http?.port, 5002);
      // The daemon serves GET /health/check only (internal/server/http_server.go); /health is a 404.
      for (const kind of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
        t.equal(((mainContainerOf(deploy)[kind] as Json).httpGet as Json).path, '/health/check', kind);
      }
    });

    t.test('migration Job <release>-db-migration', async (t) => {
      const job = find(objects, 'Job', name('migrationJob'));
      t.equal(podLabelsOf(job)[LABELS.component], contract.components.migration);
      t.equal(podLabelsOf(job)[LABELS.app], name('appLabel', contract.components.migration));
    });

    t.test('Ingress <release>', async (t) => {
      t.ok(find(objects, 'Ingress', name('ingress')));
    });

    t.test('every object carries the standard app.kubernetes.io labels', async (t) => {
      for (const o of objects) {
        const labels = labelsOf(o);
        for (const key of [LABELS.name, LABELS.instance, LABELS.partOf, LABELS.managedBy, LABELS.version]) {
          t.ok(labels[key], `${kindOf(o)} ${nameOf(o)} has ${key}`);
        }
        t.equal(labels[LABELS.instance], release, `${kindOf(o)} ${nameOf(o)} instance`);
      }
      for (const w of workloads(objects)) {
        const labels = podLabelsOf(w);
        for (const key of [
          LABELS.name,
          LABELS.instance,
          LABELS.component,
          LABELS.partOf,
          LABELS.managedBy,
          LABELS.version,
          LABELS.app,
        ]) {
          t.ok(labels[key], `${kindOf(w)} ${nameOf(w)} pods have ${key}`);
        }
      }
    });

    t.test('namespaced objects are in the release namespace', async (t) => {
      const clusterScoped: string[] = ['ClusterRole', 'ClusterRoleBinding', ...WEBHOOK_KINDS];
      for (const o of objects) {
        const ns = (o.metadata as Json).namespace;
        if (clusterScoped.includes(kindOf(o))) t.equal(ns, undefined, `${kindOf(o)} ${nameOf(o)} is cluster-scoped`);
        else t.equal(ns, namespace, `${kindOf(o)} ${nameOf(o)}`);
      }
    });

    t.test('no two objects of a kind share a name', async (t) => {
      const keys = objects.map((o) => `${kindOf(o)}/${nameOf(o)}`);
      t.same(
        keys.filter((k, i) => keys.indexOf(k) !== i),
        [],
      );
      t.ok(ofKind(objects, 'Deployment').length >= difyComponents.length);
    });
  });
}
