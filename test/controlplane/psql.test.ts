// The guide's `kubectl exec dify-postgresql-0 -- psql ...` commands on the cluster, run as written: kwok
// runs them on this machine against a real PostgreSQL 15 initialised with the user, database and
// password of the Secret the chart renders (harness/programs/postgres.ts). A client with the Secret's
// password logs in over TCP; a wrong password is refused with 28P01.
import t from 'tap';
import { SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { waitFor } from '../../harness/commands.js';
import { startPostgres } from '../../harness/programs/postgres.js';
import { privateDir } from '../../harness/programs/run.js';
import { installChartAndWait, randomSecret, writeValues } from '../../harness/controlplane/chart.js';
import { startCluster } from '../../harness/controlplane/cluster.js';
import { startDifyGuard } from '../../harness/controlplane/dify-guard.js';
import { postgresPodEnv, tcpPsql } from '../../harness/controlplane/local-psql.js';
import { Release, guardValues, secretText } from '../../harness/controlplane/release.js';

const dify = new Release('dify', 'dify');
const { release, namespace } = dify;
const pod = expandName(contract.names.postgresql, release) + '-0';

// The Secret as the chart renders it: PostgreSQL is initialised from it, as the container does on an empty volume.
const password = randomSecret();
const extra = { postgresql: { auth: { password } } };
const renderHome = privateDir('dify-guard-psql-render');
const secret = dify.postgresSecret(
  await dify.render(renderHome, 'render', { ...extra, secrets: { difySecretKey: randomSecret() } }),
);
const auth = {
  user: secretText(secret, SECRET_KEYS.postgresUsername),
  database: secretText(secret, SECRET_KEYS.postgresDatabase),
  password: secretText(secret, SECRET_KEYS.postgresPassword),
};
const pg = await startPostgres(auth);
t.teardown(() => pg.stop());

const cluster = await startCluster(t, { name: 'psql', execs: [{ namespace, pod, env: postgresPodEnv(pg) }] });
const { cp } = cluster;
t.teardown(() => {
  if (!t.passing()) t.comment(cluster.diagnostics());
});

/** psql on this machine over TCP, as a Dify component logs in (the password in the environment, never on a command line). */
const tcpLogin = (pass: string, sql: string): ReturnType<typeof tcpPsql> => tcpPsql(pg, auth, pass, sql);

/** `kubectl exec` of a command in the PostgreSQL pod, as the guide types it. */
const execInPod = (command: string[]): ReturnType<typeof cp.kubectl> =>
  cp.kubectl(['exec', '-n', namespace, pod, '--', ...command]);
/** psql as the Secret's user to its database, as the guide's commands give it. */
const psqlAsDify = ['psql', '-U', 'dify', '-d', 'dify'];

t.test("the chart is installed; PostgreSQL takes the Secret's password over TCP", async (t) => {
  const guard = await startDifyGuard(t, cp);
  const valuesFile = writeValues(cp.dir, 'psql', guardValues(guard, extra));
  const res = await installChartAndWait(cp, { release, namespace, valuesFile });
  t.match(res.stdout, /STATUS: deployed/, 'helm reports the release deployed');
  t.equal(auth.user, 'dify', 'the Secret names the user dify');
  t.equal(auth.database, 'dify', 'and the database dify');
  // What the migration would have left (it is simulated): one table, made by a client that logs in as Dify does.
  const created = await tcpLogin(auth.password, 'CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)');
  t.equal(created.status, 0, `a client with the Secret's password logs in over TCP (scram-sha-256)\n${created.stderr}`);
});

t.test("the guide's table check, as written, lists the tables", async (t) => {
  const res = await execInPod([
    ...psqlAsDify,
    '-c',
    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename;",
  ]);
  t.equal(res.status, 0, `kubectl exec ... psql exits 0\n${res.stderr}`);
  t.equal(
    res.stdout,
    '    tablename    \n-----------------\n alembic_version\n(1 row)\n\n',
    "psql's table of the public tables",
  );
});

t.test('a wrong password is refused with 28P01', async (t) => {
  const res = await execInPod([
    'env',
    'PGPASSWORD=not-the-initial-one',
    ...psqlAsDify,
    '-h',
    '127.0.0.1',
    '-c',
    'SELECT 1',
  ]);
  t.not(res.status, 0, 'psql fails');
  t.match(res.stderr, 'password authentication failed for user "dify"', 'psql says why');
  const logged = await waitFor(
    'PostgreSQL to log the refusal',
    () =>
      pg.server.stderr.split('\n').find((l) => l.startsWith('28P01 ') && l.includes('password authentication failed')),
    { timeoutMs: 10_000 },
  );
  t.ok(logged, 'the server records SQLSTATE 28P01');
});
