// The guide's `kubectl exec dify-postgresql-0 -- psql ...` commands on the cluster, run as written: kwok
// runs them on this machine against a real PostgreSQL 15 initialised with the user, database and
// password of the Secret the chart renders (harness/programs/postgres.ts). A client with the Secret's
// password logs in over TCP; a wrong password is refused with 28P01.
import { dirname } from 'node:path';
import t from 'tap';
import { SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { waitFor } from '../../harness/commands.js';
import type { Json } from '../../harness/kube-rest.js';
import { startPostgres } from '../../harness/programs/postgres.js';
import { privateDir, runProgram } from '../../harness/programs/run.js';
import { program } from '../../harness/programs/programs.js';
import {
  installChartAndWait,
  findObject,
  randomSecret,
  renderChart,
  testValues,
  writeValues,
} from '../../harness/controlplane/chart.js';
import { startCluster } from '../../harness/controlplane/cluster.js';
import { startDifyGuard } from '../../harness/controlplane/dify-guard.js';

const release = 'dify';
const namespace = 'dify';
const pod = expandName(contract.names.postgresql, release) + '-0';
const secretName = expandName(contract.names.postgresqlSecret, release);

// The Secret as the chart renders it: PostgreSQL is initialised from it, as the container does on an empty volume.
const password = randomSecret();
const extra = { postgresql: { auth: { password } } };
const renderHome = privateDir('dify-guard-psql-render');
const renderValues = writeValues(renderHome, 'render', { ...extra, secrets: { difySecretKey: randomSecret() } });
const secret = findObject(
  await renderChart({ release, namespace, valuesFile: renderValues, home: renderHome }),
  'Secret',
  secretName,
);
const field = (key: string): string =>
  secret.stringData
    ? String((secret.stringData as Json)[key] ?? '')
    : Buffer.from(String((secret.data as Json)[key] ?? ''), 'base64').toString('utf8');
const auth = {
  user: field(SECRET_KEYS.postgresUsername),
  database: field(SECRET_KEYS.postgresDatabase),
  password: field(SECRET_KEYS.postgresPassword),
};
const pg = await startPostgres(auth);
t.teardown(() => pg.stop());

const psqlDir = dirname(program('psql'));
const cluster = await startCluster(t, {
  name: 'psql',
  execs: [
    {
      namespace,
      pod,
      env: { PGHOST: pg.socketDir, PGPORT: String(pg.port), PATH: `${psqlDir}:${process.env.PATH ?? ''}` },
    },
  ],
});
const { cp } = cluster;
t.teardown(() => {
  if (!t.passing()) t.comment(cluster.diagnostics());
});

/** psql on this machine over TCP, as a Dify component logs in (the password in the environment, never on a command line). */
const tcpPsql = (pass: string, sql: string): ReturnType<typeof runProgram> =>
  runProgram({
    name: 'psql-tcp',
    command: program('psql'),
    args: [
      '-h',
      '127.0.0.1',
      '-p',
      String(pg.port),
      '-U',
      auth.user,
      '-d',
      auth.database,
      '-v',
      'ON_ERROR_STOP=1',
      '-Atc',
      sql,
    ],
    env: { ...process.env, PGPASSWORD: pass, PGCONNECT_TIMEOUT: '5' },
  });

t.test("the chart is installed; PostgreSQL takes the Secret's password over TCP", async (t) => {
  const guard = await startDifyGuard(t, cp);
  const valuesFile = writeValues(cp.dir, 'psql', testValues({ url: guard.url(''), caBundle: guard.caBundle }, extra));
  const res = await installChartAndWait(cp, { release, namespace, valuesFile });
  t.match(res.stdout, /STATUS: deployed/, 'helm reports the release deployed');
  t.equal(auth.user, 'dify', 'the Secret names the user dify');
  t.equal(auth.database, 'dify', 'and the database dify');
  // What the migration would have left (it is simulated): one table, made by a client that logs in as Dify does.
  const created = await tcpPsql(auth.password, 'CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)');
  t.equal(created.status, 0, `a client with the Secret's password logs in over TCP (scram-sha-256)\n${created.stderr}`);
});

t.test("the guide's table check, as written, lists the tables", async (t) => {
  const res = await cp.kubectl([
    'exec',
    '-n',
    namespace,
    pod,
    '--',
    'psql',
    '-U',
    'dify',
    '-d',
    'dify',
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
  const res = await cp.kubectl([
    'exec',
    '-n',
    namespace,
    pod,
    '--',
    'env',
    'PGPASSWORD=not-the-initial-one',
    'psql',
    '-h',
    '127.0.0.1',
    '-U',
    'dify',
    '-d',
    'dify',
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
