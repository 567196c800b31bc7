// The guide's commands, typed as chart/README.md gives them (read from its code blocks, so a changed
// README changes what runs), on the cluster tier after an install by chart/deploy.sh: 確認コマンド,
// トラブルシューティング, deploy.sh again with the same and with another password, and "Job を再実行".
// Each runs in bash with only KUBECONFIG (and PATH for the built kubectl/helm) set, as an operator types it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { contract, expandName } from '../../src/contract.js';
import { binDir } from '../../harness/binaries.js';
import { run, type CommandResult } from '../../harness/commands.js';
import type { Json } from '../../harness/kube-rest.js';
import { startPostgres } from '../../harness/programs/postgres.js';
import { testSecret } from '../../harness/secrets.js';
import { chartDir } from '../../harness/controlplane/chart.js';
import { SIMULATED_CONTAINER_LOG, startCluster } from '../../harness/controlplane/cluster.js';
import {
  MIGRATION_NOT_RUN_LOG,
  PLUGIN_DAEMON_NOT_RUNNING,
  WAIT_FOR_POSTGRESQL,
  difyLocalOptions,
  startMigrationInit,
} from '../../harness/controlplane/dify-local.js';
import { GUARD_POD_LABEL, GuardPods } from '../../harness/controlplane/guard-pods.js';
import { waitForRollouts } from '../../harness/controlplane/release.js';

const namespace = 'dify';
const release = 'dify';
const jobName = expandName(contract.names.migrationJob, release);
const readme = readFileSync(join(chartDir, 'README.md'), 'utf8');

/** The commands of the first ```bash block after `marker` in chart/README.md (comments and blank lines left out). */
export function commandsAfter(marker: string): string[] {
  const at = readme.indexOf(marker);
  if (at < 0) throw new Error(`chart/README.md has no "${marker}" any more`);
  const block = /```bash\n([\s\S]*?)\n\s*```/.exec(readme.slice(at));
  if (!block) throw new Error(`no bash block after "${marker}" in chart/README.md`);
  return (block[1] as string)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}

const password = testSecret();
const secretKey = testSecret();
const pg = await startPostgres({ user: 'dify', database: 'dify', password });
t.teardown(() => pg.stop());
const cluster = await startCluster(t, {
  name: 'guide-commands',
  servedPods: GUARD_POD_LABEL,
  ...difyLocalOptions(pg, { namespace, release }),
});
const guards = new GuardPods(cluster, namespace);
guards.start();
const migrationInit = startMigrationInit(cluster, pg, { namespace, release });
t.teardown(async () => {
  await migrationInit.stop();
  await guards.stop();
  if (!t.passing()) t.comment(cluster.diagnostics());
});
const { cp, rest } = cluster;
const shellEnv = { ...cp.env(), PATH: `${binDir()}:${process.env.PATH ?? ''}` };

/** One line typed into bash, in `cwd` (the guide runs helm and deploy.sh in chart/). */
const typed = (line: string, extra: Record<string, string> = {}, cwd = chartDir): Promise<CommandResult> =>
  run('bash', ['-c', line], { cwd, env: { ...shellEnv, ...extra }, timeoutMs: 300_000, captureStdout: true });
const job = (): Promise<Json> => rest.ok('GET', `/apis/batch/v1/namespaces/${namespace}/jobs/${jobName}`);
const complete = (j: Json): boolean =>
  (((j.status as Json | undefined)?.conditions as Json[] | undefined) ?? []).some(
    (c) => c.type === 'Complete' && c.status === 'True',
  );
const uid = (o: Json): string => String((o.metadata as Json).uid);
/** The Job's pods, created by the Job controller (owner reference to this Job). */
const jobPods = async (j: Json): Promise<Json[]> =>
  (
    (await rest.ok('GET', `/api/v1/namespaces/${namespace}/pods`, { query: { labelSelector: `job-name=${jobName}` } }))
      .items as Json[]
  ).filter((p) =>
    (((p.metadata as Json).ownerReferences as Json[] | undefined) ?? []).some(
      (o) => o.uid === uid(j) && o.controller === true,
    ),
  );

/**
 * The init container's own command (pg_isready, as the pod's user) ran for the Job's pod and no other, and
 * ended with exit 0 (its loop ends once the real PostgreSQL accepts connections); its first line says so.
 */
async function initRan(t: Test, pods: Json[]): Promise<void> {
  const names = pods.map((p) => String((p.metadata as Json).name));
  const printed = await migrationInit.printed(pods);
  t.same(
    printed.map((r) => r.pod),
    names,
    "the init container's command ran for the Job's pod",
  );
  const firstLine = readFileSync(cluster.containerLogFile(namespace, WAIT_FOR_POSTGRESQL), 'utf8').split('\n')[0];
  t.match(firstLine, / stdout F /, 'its output is in the CRI log format kwok reads');
  t.equal(
    firstLine?.replace(/^\S+ stdout F /, ''),
    `127.0.0.1:${pg.port} - accepting connections`,
    'pg_isready, as the pod user, reached the real PostgreSQL at once',
  );
  const ended = await migrationInit.settled(pods, 15_000).catch(() => printed);
  t.same(
    ended.map((r) => r.status),
    names.map(() => 0),
    'and the command ended with exit 0, as the init container must for the migration to start',
  );
  t.same(migrationInit.problems(), [], 'no problem running it');
}

/** The hook Job as it is now: Complete, one pod owned by it (made by the Job controller), its init container run. */
async function hookJobRan(t: Test, says: { complete: string; onePod: string }): Promise<Json> {
  const current = await job();
  t.ok(complete(current), says.complete);
  const pods = await jobPods(current);
  t.equal(pods.length, 1, says.onePod);
  await initRan(t, pods);
  return current;
}

/** deploy.sh as the guide runs it, with this POSTGRES_PASSWORD. */
const deploySh = (postgresPassword: string): Promise<CommandResult> =>
  typed('./deploy.sh --image-tag 1.11.4', { POSTGRES_PASSWORD: postgresPassword, DIFY_SECRET_KEY: secretKey });

let firstJob: Json = {};
t.test('./deploy.sh --image-tag 1.11.4 installs; the real Job controller runs the hook Job', async (t) => {
  const res = await deploySh(password);
  t.equal(res.status, 0, `deploy.sh exits 0\n${res.stderr.slice(-2000)}`);
  t.match(res.stdout, /STATUS: deployed/, 'helm reports the release deployed');
  t.match(res.stderr, 'helm が完了しました', 'deploy.sh says helm finished');
  firstJob = await hookJobRan(t, {
    complete: 'Job dify-db-migration Complete',
    onePod: 'one pod, owned by the Job (the Job controller made it)',
  });
  // helm waits only for the hook Job; the operator's commands come once the rollouts are done (kubectl rollout status).
  await waitForRollouts(rest, namespace);
});

t.test('確認コマンド, as chart/README.md gives them', async (t) => {
  const commands = commandsAfter('## 確認コマンド');
  t.equal(commands.length, 9, 'nine commands in the block (a changed block needs its expectations here)');
  const expected: Array<[RegExp, (r: CommandResult) => void]> = [
    [
      /^kubectl get pods -n dify$/,
      (r) => {
        t.match(r.stdout, /dify-postgresql-0\s+1\/1\s+Running/, 'dify-postgresql-0 Running');
        t.match(r.stdout, /dify-api-\S+\s+1\/1\s+Running/, 'an api pod Running');
        t.match(r.stdout, /dify-db-migration-\S+\s+0\/1\s+Completed/, 'the migration pod Completed');
      },
    ],
    [
      /^kubectl get deploy,po,svc/,
      (r) => {
        t.match(r.stdout, /deployment\.apps\/dify-plugin-daemon\s+1\/1/, 'the plugin daemon Deployment ready');
        t.match(r.stdout, /service\/dify-plugin-daemon\s+ClusterIP/, 'and its Service');
      },
    ],
    [
      /^kubectl get jobs -n dify$/,
      (r) => t.match(r.stdout, /dify-db-migration\s+Complete\s+1\/1/, 'the Job Complete, 1/1'),
    ],
    [
      /^kubectl logs -n dify job\/dify-db-migration$/,
      (r) =>
        t.equal(
          r.stdout.trim(),
          MIGRATION_NOT_RUN_LOG,
          "the migration container's log says plainly that Dify's image did not run and no migration was applied",
        ),
    ],
    [
      /^kubectl exec -n dify dify-postgresql-0 -- psql/,
      (r) =>
        t.equal(
          r.stdout,
          ' tablename \n-----------\n(0 rows)\n\n',
          'psql on the real PostgreSQL: no tables (the migration is simulated)',
        ),
    ],
    [
      /^kubectl logs -n dify -l app=dify-plugin-daemon$/,
      (r) => t.equal(r.stdout.trim(), SIMULATED_CONTAINER_LOG, 'simulated log'),
    ],
    [
      /curl -s http:\/\/localhost:5002\/health\/check$/,
      (r) => {
        t.equal(r.status, 1, 'the health check fails: no daemon runs here to answer it');
        t.equal(r.stdout, '', 'no answer pretends to be the daemon');
        t.match(r.stderr, PLUGIN_DAEMON_NOT_RUNNING, "it says why, from the plugin daemon's container");
      },
    ],
    [
      /^kubectl get pods -n dify -l app.kubernetes.io\/name=dify-guard$/,
      (r) =>
        t.equal(
          [...r.stdout.matchAll(/dify-guard-\S+\s+1\/1\s+Running/g)].length,
          2,
          'two dify-guard pods Ready (real processes)',
        ),
    ],
    [
      /^kubectl get events -n dify --field-selector involvedObject.name=dify-postgresql$/,
      (r) =>
        t.match(
          r.stdout,
          /statefulset\/dify-postgresql\s+Create Claim data-dify-postgresql-0/,
          'the StatefulSet controller made the PVC',
        ),
    ],
  ];
  for (const line of commands) {
    const r = await typed(line);
    const check = expected.find(([re]) => re.test(line));
    if (!check) {
      t.fail(`no expectation for: ${line}`);
      continue;
    }
    if (!/curl -s/.test(line)) t.equal(r.status, 0, `${line}: exit 0\n${r.stderr}`);
    check[1](r);
  }
});

t.test("トラブルシューティング: the init container's log and the PostgreSQL pod", async (t) => {
  const init = await typed('kubectl logs -n dify job/dify-db-migration -c wait-for-postgresql');
  t.equal(init.status, 0, init.stderr);
  t.equal(
    init.stdout,
    `127.0.0.1:${pg.port} - accepting connections\n`,
    "what the init container's own command (pg_isready) printed, run against the real PostgreSQL",
  );
  const pod = await typed('kubectl get pods -n dify dify-postgresql-0');
  t.match(pod.stdout, /dify-postgresql-0\s+1\/1\s+Running/, 'PostgreSQL pod Running');
  const helm = await typed('helm status dify -n dify');
  t.match(helm.stdout, /STATUS: deployed/, 'helm status: deployed');
});

t.test('deploy.sh again with the same password: an upgrade, the hook Job re-run by the Job controller', async (t) => {
  const res = await deploySh(password);
  t.equal(res.status, 0, `deploy.sh exits 0\n${res.stderr.slice(-2000)}`);
  t.match(res.stdout, /REVISION: 2/, 'revision 2');
  const next = await hookJobRan(t, { complete: 'Complete', onePod: 'its pod made by the Job controller' });
  t.not(uid(next), uid(firstJob), 'a new Job (before-hook-creation deleted the old one)');
  firstJob = next;
});

t.test('deploy.sh with another password: refused in Japanese before helm runs', async (t) => {
  const res = await deploySh(testSecret());
  t.not(res.status, 0, 'deploy.sh fails');
  t.match(res.stderr, /^エラー: /m, 'an error in Japanese');
  t.match(res.stderr, 'dify-postgresql', 'naming the Secret');
  t.notMatch(res.stdout, /STATUS: deployed/, 'nothing deployed');
  t.match((await typed('helm status dify -n dify')).stdout, /REVISION: 2/, 'the release is unchanged');
});

t.test('Job を再実行, as chart/README.md gives it', async (t) => {
  const commands = commandsAfter('2. Job を再実行');
  t.same(
    commands,
    ['kubectl delete job -n dify dify-db-migration', 'helm upgrade dify . -n dify --reuse-values'],
    'the two commands',
  );
  const deleted = await typed(commands[0] as string);
  t.equal(deleted.status, 0, deleted.stderr);
  t.match(deleted.stdout, 'job.batch "dify-db-migration" deleted');
  const upgraded = await typed(commands[1] as string);
  t.equal(upgraded.status, 0, upgraded.stderr);
  t.match(upgraded.stdout, /REVISION: 3/, 'revision 3');
  const next = await hookJobRan(t, {
    complete: 'Complete: helm waited for it',
    onePod: 'its pod made by the Job controller',
  });
  t.not(uid(next), uid(firstJob), 'a new Job');
});
