// The shared upload storage of api and worker: on a volume that attaches to one node (ReadWriteOnce) a
// rollout must not wait forever for the volume (Multi-Attach), and uploads must be writable by Dify's user
// where fsGroup is not applied (the storage-permissions init container; test/programs/storage-permissions
// runs its command for real).
import t from 'tap';
import { LABELS, contract } from '../../src/contract.js';
import {
  containersOf,
  initContainersOf,
  podTemplateOf,
  selects,
  type Json,
  type LabelSelector,
} from '../../harness/helm.js';
import { named, renderChart } from './support.js';

const api = (objects: Json[]): Json => named(objects, 'Deployment', 'component', contract.components.api);
const worker = (objects: Json[]): Json => named(objects, 'Deployment', 'component', contract.components.worker);
const strategyOf = (d: Json): Json | undefined => (d.spec as Json).strategy as Json | undefined;
interface Term {
  topologyKey: string;
  labelSelector: LabelSelector;
}
const affinityTerms = (d: Json): Term[] => {
  const podAffinity = (podTemplateOf(d).spec.affinity as Json | undefined)?.podAffinity as Json | undefined;
  return (podAffinity?.requiredDuringSchedulingIgnoredDuringExecution as Term[]) ?? [];
};

t.test(
  'ReadWriteOnce storage: api is replaced, not surged, and every pod that mounts the volume shares its node',
  async (t) => {
    const { objects } = await renderChart();
    t.same(
      strategyOf(api(objects)),
      { type: 'Recreate' },
      'api: Recreate (a surge pod on another node would wait for the volume)',
    );
    const apiLabels = podTemplateOf(api(objects)).metadata.labels!;
    const workerLabels = podTemplateOf(worker(objects)).metadata.labels!;
    for (const [who, d] of [
      ['api', api(objects)],
      ['worker', worker(objects)],
    ] as const) {
      const terms = affinityTerms(d);
      t.equal(terms.length, 1, `${who}: one required pod affinity term`);
      t.equal(terms[0]?.topologyKey, 'kubernetes.io/hostname', `${who}: same node`);
      t.ok(selects(terms[0]?.labelSelector, apiLabels), `${who}: follows api pods`);
      t.ok(
        selects(terms[0]?.labelSelector, workerLabels),
        `${who}: follows worker pods (one may hold the volume while api is replaced)`,
      );
      const other = { ...apiLabels, [LABELS.instance]: 'another-release' };
      t.notOk(selects(terms[0]?.labelSelector, other), `${who}: not another release's pods`);
    }
  },
);

t.test('ReadWriteMany or no PVC: rolling updates and free scheduling', async (t) => {
  for (const persistence of [{ accessModes: ['ReadWriteMany'] }, { enabled: false }]) {
    const { objects } = await renderChart({ storage: { persistence } });
    t.notOk(strategyOf(api(objects)), `${JSON.stringify(persistence)}: Kubernetes' default RollingUpdate`);
    t.same(affinityTerms(api(objects)), [], `${JSON.stringify(persistence)}: api unconstrained`);
    t.same(affinityTerms(worker(objects)), [], `${JSON.stringify(persistence)}: worker unconstrained`);
  }
});

t.test(
  "storage-permissions: chowns the storage folder to Dify's user, as root with CHOWN and DAC_OVERRIDE only",
  async (t) => {
    const { objects } = await renderChart();
    const init = initContainersOf(api(objects));
    t.same(
      init.map((c) => c.name),
      ['storage-permissions'],
    );
    const c = init[0]!;
    const postgresql = named(objects, 'StatefulSet', 'postgresql');
    const postgresImage = containersOf(postgresql)[0]?.image;
    t.equal(c.image, postgresImage, 'the PostgreSQL image the chart already uses: no other image to mirror');
    t.same(c.securityContext, {
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'], add: ['CHOWN', 'DAC_OVERRIDE'] },
    });
    t.same(c.volumeMounts, [{ name: 'storage', mountPath: '/app/api/storage' }], "the api container's storage volume");
    t.match((c.command as string[]).join(' '), /chown -h 1001:1001/, 'to api.podSecurityContext.runAsUser/runAsGroup');
    t.notOk(c.env, 'no env: dify-guard leaves a non-Dify container alone, and it needs no secret');

    const uid = await renderChart({ api: { podSecurityContext: { runAsUser: 2000, runAsGroup: 3000 } } });
    t.match((initContainersOf(api(uid.objects))[0]!.command as string[]).join(' '), /chown -h 2000:3000/);
    for (const persistence of [{ initPermissions: false }, { enabled: false }]) {
      const off = await renderChart({ storage: { persistence } });
      t.same(initContainersOf(api(off.objects)), [], `${JSON.stringify(persistence)}: no init container`);
    }
  },
);
