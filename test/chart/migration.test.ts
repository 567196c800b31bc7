// The migration Job: a post-install/post-upgrade hook that runs `flask db upgrade` once, waits for
// PostgreSQL first, stays visible for `kubectl logs job/<release>-db-migration` (TTL 86400) and can be
// rerun by the guide's "kubectl delete job ... && helm upgrade --reuse-values".
import t from 'tap';
import { ENV, contract } from '../../src/contract.js';
import { annotationsOf, envOf, initContainersOf, podTemplateOf, type Json } from '../../harness/helm.js';
import { componentContainer, mainContainerOf, named, renderChart } from './support.js';

const { objects } = await renderChart();
const job = named(objects, 'Job', 'migrationJob');
const apiContainer = componentContainer(objects, contract.components.api);
const spec = job.spec as Json;

t.test('Helm hook after install and upgrade; deleted only before the next hook', async (t) => {
  const a = annotationsOf(job);
  t.same(a['helm.sh/hook']?.split(',').sort(), ['post-install', 'post-upgrade']);
  t.equal(
    a['helm.sh/hook-delete-policy'],
    'before-hook-creation',
    'a finished Job stays for kubectl logs, and a deleted one is simply recreated by the next upgrade',
  );
  t.equal(spec.ttlSecondsAfterFinished, 86400);
});

t.test('one pod, a few retries, a deadline, never restarted in place', async (t) => {
  t.equal(spec.parallelism, 1);
  t.equal(spec.completions, 1);
  t.ok(Number(spec.backoffLimit) >= 1 && Number(spec.backoffLimit) <= 3, 'small backoffLimit');
  t.ok(Number(spec.activeDeadlineSeconds) > 0);
  t.equal(podTemplateOf(job).spec.restartPolicy, 'Never');
});

t.test('runs `flask db upgrade` directly (not the entrypoint, not flask upgrade-db)', async (t) => {
  const c = mainContainerOf(job);
  t.same(c.command, ['flask', 'db', 'upgrade']);
  t.notOk(c.args);
  t.equal(c.name, contract.components.migration);
  t.equal(c.image, apiContainer.image, 'the api image');
});

t.test('waits for PostgreSQL with pg_isready before migrating', async (t) => {
  const init = initContainersOf(job);
  t.equal(init.length, 1);
  const script = (init[0]!.command as string[]).join(' ');
  t.match(script, /until pg_isready -t 5;/);
  t.same(
    (init[0]!.env ?? []).map((e) => [e.name, e.value]),
    [
      ['PGHOST', 'dify-postgresql'],
      ['PGPORT', '5432'],
      ['PGUSER', 'dify'],
    ],
    "the PostgreSQL Service, port and user, read by pg_isready (libpq; the pod's user has no passwd entry)",
  );
  t.match(script, /exit 1/, 'gives up after its timeout, so the Job fails visibly');
});

t.test('the same DB_* / REDIS_* / app env as api', async (t) => {
  const migration = mainContainerOf(job);
  const apiOnly = new Set(['MODE', 'DIFY_PORT', 'SERVER_WORKER_AMOUNT']);
  t.same(
    migration.env,
    (apiContainer.env ?? []).filter((e) => !apiOnly.has(e.name)),
  );
  t.ok(envOf(migration, ENV.dbPassword)?.valueFrom?.secretKeyRef);
});

t.test('migration.enabled=false renders no Job', async (t) => {
  const r = await renderChart({ migration: { enabled: false } });
  t.notOk(r.objects.find((o) => o.kind === 'Job'));
});
