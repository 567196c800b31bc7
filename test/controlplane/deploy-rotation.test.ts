// `deploy.sh --rotate-postgres-password` end to end on the local cluster: the chart installed by deploy.sh, then the
// password rotated by deploy.sh with everything real but the pods: `kubectl exec dify-postgresql-0 -- psql` runs on
// this machine against a real PostgreSQL 15 (initialised with deploy.sh's POSTGRES_PASSWORD), helm is the real binary,
// and dify-guard (a local process reached by webhook.url) asks that PostgreSQL before letting the Secret change through.
// Then a helm that fails once after ALTER ROLE: the database is put back, and the re-run finishes the job.
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { binary } from '../../harness/binaries.js';
import { run, type CommandResult } from '../../harness/commands.js';
import { startPostgres } from '../../harness/programs/postgres.js';
import { captureOutput, testSecret } from '../../harness/secrets.js';
import { chartDir, writeValues } from '../../harness/controlplane/chart.js';
import { startCluster } from '../../harness/controlplane/cluster.js';
import { startDifyGuard } from '../../harness/controlplane/dify-guard.js';
import { postgresPodEnv, tcpPsql } from '../../harness/controlplane/local-psql.js';

const release = 'dify';
const namespace = 'dify';
const pod = `${expandName(contract.names.postgresql, release)}-0`;
const secretName = expandName(contract.names.postgresqlSecret, release);
const auth = { user: 'dify', database: 'dify', password: testSecret() };

const pg = await startPostgres(auth);
t.teardown(() => pg.stop());
const cluster = await startCluster(t, {
  name: 'deploy-rotation',
  execs: [{ namespace, pod, env: postgresPodEnv(pg) }],
});
const { cp } = cluster;
t.teardown(() => {
  if (!t.passing()) t.comment(cluster.diagnostics());
});
const guard = await startDifyGuard(t, cp, { env: { DIFY_GUARD_POSTGRESQL_ADDRESS_TEMPLATE: `127.0.0.1:${pg.port}` } });
const valuesFile = writeValues(cp.dir, 'deploy-rotation', {
  webhook: { url: guard.url(''), caBundle: guard.caBundle },
});

// A helm that fails once (exit 1, before touching the cluster) when its marker file exists, then runs the real helm.
const helmOnce = join(cp.dir, 'helm-fails-once');
const failMarker = join(cp.dir, 'helm-fail-marker');
writeFileSync(
  helmOnce,
  `#!/usr/bin/env bash
if [ -e "${failMarker}" ]; then rm -f "${failMarker}"; echo 'Error: injected failure' >&2; exit 1; fi
exec "${binary('helm')}" "$@"
`,
);
chmodSync(helmOnce, 0o755);

async function deploy(args: string[], env: NodeJS.ProcessEnv): Promise<CommandResult> {
  const res = await run('bash', [join(chartDir, 'deploy.sh'), ...args], {
    env: cp.env({ HELM: binary('helm'), KUBECTL: binary('kubectl'), DEPLOY_PROGRESS_INTERVAL: '30', ...env }),
    timeoutMs: 600_000,
    captureStdout: true,
  });
  captureOutput('deploy-rotation.deploy.sh.stderr', res.stderr);
  return res;
}

/** psql over TCP as Dify's components log in (password in the environment): its output, or psql's error. */
async function query(password: string, sql: string): Promise<{ ok: boolean; out: string }> {
  const res = await tcpPsql(pg, auth, password, sql);
  captureOutput('deploy-rotation.psql.stderr', res.stderr);
  return { ok: res.status === 0, out: res.status === 0 ? res.stdout : res.stderr };
}
/** '' when the database accepts the password, else psql's error. */
const login = async (password: string): Promise<string> => {
  const r = await query(password, 'SELECT 1');
  return r.ok ? '' : r.out;
};
const verifiedRotations = (): number =>
  guard.logLines().filter((l) => l.audit === true && l.reason === 'PasswordRotationVerified').length;

async function storedPassword(): Promise<string> {
  const res = await cp.kubectl([
    'get',
    'secret',
    '-n',
    namespace,
    secretName,
    '-o',
    `jsonpath={.data.${SECRET_KEYS.postgresPassword}}`,
  ]);
  return Buffer.from(res.stdout, 'base64').toString('utf8');
}

t.test('deploy.sh installs the release with the password PostgreSQL was initialised with', async (t) => {
  const res = await deploy(['-f', valuesFile, '--timeout', '5m'], {
    POSTGRES_PASSWORD: auth.password,
    DIFY_SECRET_KEY: testSecret(),
  });
  t.equal(res.status, 0, 'deploy.sh exits 0', { stderr: res.stderr.slice(-3000) });
  t.equal(await storedPassword(), auth.password, 'the Secret holds it');
  const ready = await cp.kubectl(['wait', '--for=condition=Ready', `pod/${pod}`, '-n', namespace, '--timeout=120s']);
  t.equal(ready.status, 0, `${pod} is Ready\n${ready.stderr}`);
  // Data the rotations must keep (what the migration would have left).
  const created = await query(auth.password, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('app')");
  t.ok(created.ok, `a table is created with the installed password\n${created.out}`);
});

t.test("deploy.sh --rotate-postgres-password: the database, the Secret and dify-guard's audit agree", async (t) => {
  const next = testSecret();
  const res = await deploy(['--rotate-postgres-password', '--timeout', '5m'], { POSTGRES_PASSWORD: next });
  t.equal(res.status, 0, 'deploy.sh exits 0', { stderr: res.stderr.slice(-3000) });
  t.match(res.stderr, '完了: PostgreSQL のパスワードを変更しました');
  t.match(res.stderr, '古いパスワード: 拒否されます (28P01)');
  t.equal(await storedPassword(), next, 'the Secret holds the new password');
  t.equal(await login(next), '', 'the database accepts the new password');
  t.match(await login(auth.password), 'password authentication failed', 'and refuses the old one (28P01)');
  const line = await guard.waitForLog(
    'the verified rotation',
    (l) => l.audit === true && l.reason === 'PasswordRotationVerified',
  );
  t.match(line, { decision: 'allowed', verification: 'accepted' });
  auth.password = next;
});

t.test('helm fails once after ALTER ROLE: the old password works again; the re-run finishes the job', async (t) => {
  const next = testSecret();
  writeFileSync(failMarker, '');
  const failed = await deploy(['--rotate-postgres-password', '--timeout', '5m'], {
    POSTGRES_PASSWORD: next,
    HELM: helmOnce,
  });
  t.equal(failed.status, 1, 'deploy.sh fails');
  t.match(failed.stderr, 'データベースのパスワードを元に戻しました: 古いパスワードのまま使えます');
  t.equal(await storedPassword(), auth.password, 'the Secret is unchanged');
  t.equal(await login(auth.password), '', 'the database accepts the old password again');
  const rerun = await deploy(['--rotate-postgres-password', '--timeout', '5m'], {
    POSTGRES_PASSWORD: next,
    HELM: helmOnce,
  });
  t.equal(rerun.status, 0, 'the re-run exits 0', { stderr: rerun.stderr.slice(-3000) });
  t.equal(await storedPassword(), next);
  t.equal(await login(next), '');
  t.match(await login(auth.password), 'password authentication failed');
  t.equal(verifiedRotations(), 2, "dify-guard audited two verified rotations (the failed run's helm never reached it)");
  t.same(await query(next, 'SELECT v FROM kept'), { ok: true, out: 'app\n' }, 'the data is still there');
});
