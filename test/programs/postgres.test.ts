// The bundled PostgreSQL, run for real (Debian's PostgreSQL 15, as user postgres, output on pipes) with
// what the chart renders: the user, database and password of the rendered Secret (initialised as the
// official image's entrypoint does), the StatefulSet's probe and the migration Job's wait command, the
// Dify settings' credentials (a wrong password gets SQLSTATE 28P01), and the check-data-directory init
// container's script on a volume laid out as Bitnami's, one of another major version, its own and an empty one.
// Not run here: `CREATE EXTENSION vector`. The chart's image (pgvector/pgvector:pg15) carries pgvector, but
// Debian bookworm has no postgresql-15-pgvector package (`apt-get install` finds none), so this server lacks it.
import { chmodSync, chownSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import t from 'tap';
import { ENV, SECRET_KEYS, contract } from '../../src/contract.js';
import { run } from '../../harness/commands.js';
import { reservePort } from '../../harness/ports.js';
import { program } from '../../harness/programs/programs.js';
import { containersOf, initContainersOf, podTemplateOf, type Container } from '../../harness/helm.js';
import { componentContainer, componentWorkload, named, releaseName, renderChart } from '../chart/support.js';
import { resolvedEnv, secretValue, shellScript, type Env } from '../../harness/programs/rendered-env.js';
import { privateDir, runAs, startAs, systemUser, until, type RunningProgram } from '../../harness/programs/run.js';

const postgres = systemUser('postgres');
const binDir = dirname(program('postgres'));
const PATH = `${binDir}:/usr/bin:/bin`;

const { objects } = await renderChart();
const statefulSet = named(objects, 'StatefulSet', 'postgresql');
const server = containersOf(statefulSet).find((c) => c.name === 'postgresql')!;
const check = initContainersOf(statefulSet).find((c) => c.name === 'check-data-directory')!;
const component = (name: string): Container => componentContainer(objects, name);
const migrationJob = componentWorkload(objects, contract.components.migration);
const wait = initContainersOf(migrationJob)[0]!;
const jobPod = podTemplateOf(migrationJob);
const podSecurity = jobPod.spec.securityContext as { runAsUser: number; runAsGroup: number };
const jobPodUser = { name: 'job pod', uid: podSecurity.runAsUser, gid: podSecurity.runAsGroup };
const pgSecret = releaseName('postgresqlSecret');
const secret = (key: string): string => secretValue(objects, pgSecret, key);

const work = privateDir('dify-postgres', postgres);
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const port = await reservePort();
t.teardown(() => port.release());
const socketDir = join(work, 'run');
mkdirSync(socketDir);
chownSync(socketDir, postgres.uid, postgres.gid);

// The container's env, with the volume at a temporary path and the port a free one.
const serverEnv = resolvedEnv(objects, server);
const volume = join(work, 'volume');
const local: Env = {
  PATH,
  LANG: 'C.UTF-8',
  PGDATA: join(volume, 'pgdata'),
  PGPORT: String(port.port),
  PGHOST: socketDir,
};

/** The official image's first start: initdb with POSTGRES_USER and POSTGRES_PASSWORD (scram-sha-256), then POSTGRES_DB. */
async function initialise(): Promise<void> {
  mkdirSync(volume);
  chownSync(volume, postgres.uid, postgres.gid);
  const pwfile = join(work, 'pwfile');
  writeFileSync(pwfile, `${serverEnv.POSTGRES_PASSWORD}\n`, { mode: 0o600 });
  chownSync(pwfile, postgres.uid, postgres.gid);
  const initdb = await runAs(
    postgres,
    program('initdb'),
    [
      '--username',
      serverEnv.POSTGRES_USER!,
      '--pwfile',
      pwfile,
      '--auth-local=trust',
      '--auth-host=scram-sha-256',
      '--encoding=UTF8',
    ],
    { ...local },
  );
  if (initdb.status !== 0) throw new Error(`initdb failed:\n${initdb.stdout}${initdb.stderr}`);
}

let pg: RunningProgram | undefined;
t.teardown(async () => {
  await pg?.stop();
});

t.test('the rendered check-data-directory and migration wait scripts pass shellcheck (POSIX sh)', async (t) => {
  const scripts = [
    ['check-data-directory', shellScript(check.command)],
    ['wait-for-postgresql', shellScript(wait.command)],
  ] as const;
  for (const [what, script] of scripts) {
    const r = await run(program('shellcheck'), ['--shell=sh', '--severity=style', '-'], { input: script });
    t.equal(r.status, 0, `${what}: ${r.stdout}`);
  }
});

t.test('check-data-directory accepts an empty volume (PostgreSQL will initialise it)', async (t) => {
  const mount = { name: 'data', mountPath: resolvedEnv(objects, check).DATA_VOLUME, readOnly: true };
  t.same(check.volumeMounts, [mount], 'the data volume, read-only');
  mkdirSync(join(work, 'empty'));
  const r = await runCheck(join(work, 'empty'));
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /no database on volume .* yet: PostgreSQL 15 initialises/);
});

t.test(
  "initialised with the rendered Secret's user, database and password; the probe and the migration wait pass",
  async (t) => {
    t.equal(serverEnv.POSTGRES_USER, secret(SECRET_KEYS.postgresUsername));
    t.equal(serverEnv.POSTGRES_DB, 'dify');
    t.equal(serverEnv.PGDATA, '/var/lib/postgresql/data/pgdata', 'a subfolder of the volume');
    await initialise();
    // Listen on loopback only; the port comes from PGPORT, as in the container.
    pg = startAs(
      'postgres',
      postgres,
      program('postgres'),
      ['-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${socketDir}`, '-c', 'log_line_prefix=%e '],
      { env: { ...local } },
    );
    const probe = shellScript((server.readinessProbe as { exec: { command: string[] } }).exec.command);
    t.equal(
      probe,
      shellScript((server.livenessProbe as { exec: { command: string[] } }).exec.command),
      'one check for both probes',
    );
    const probeEnv = { ...local, POSTGRES_USER: serverEnv.POSTGRES_USER, POSTGRES_DB: serverEnv.POSTGRES_DB };
    await until(
      pg,
      'ready probe',
      async () => (await runAs(postgres, '/bin/sh', ['-c', probe], probeEnv)).status === 0,
    );
    const createDb = `CREATE DATABASE "${serverEnv.POSTGRES_DB}"`;
    const created = await runAs(
      postgres,
      program('psql'),
      ['-v', 'ON_ERROR_STOP=1', '-d', 'postgres', '-c', createDb],
      { ...local, PGUSER: serverEnv.POSTGRES_USER },
    );
    t.equal(created.status, 0, created.stderr);

    const waitEnv = { ...resolvedEnv(objects, wait), PATH, PGHOST: '127.0.0.1', PGPORT: String(port.port) };
    t.equal(resolvedEnv(objects, wait).PGHOST, releaseName('postgresql'), 'the Job waits for the PostgreSQL Service');
    // As the Job pod's own user (1001, no /etc/passwd entry here as in the image): libpq names no default
    // user then, so pg_isready says 'no attempt' forever unless the container's env gives PGUSER.
    t.equal(resolvedEnv(objects, wait).PGUSER, serverEnv.POSTGRES_USER, 'the wait names the database user');
    const waited = await runAs(jobPodUser, '/bin/sh', ['-c', shellScript(wait.command)], waitEnv, 30_000);
    t.equal(waited.status, 0, waited.stderr);
    t.match(waited.stdout, /accepting connections/);
  },
);

/** psql over TCP (scram-sha-256) with a Dify component's DB_* settings, the password in PGPASSWORD. */
function connectAs(env: Env, password: string, database = env.DB_DATABASE!): ReturnType<typeof runAs> {
  return runAs(
    postgres,
    program('psql'),
    ['-v', 'ON_ERROR_STOP=1', '-Atc', 'SELECT current_user, current_database()'],
    {
      PATH,
      PGHOST: '127.0.0.1',
      PGPORT: String(port.port),
      PGUSER: env.DB_USERNAME,
      PGDATABASE: database,
      PGPASSWORD: password,
    },
  );
}

t.test("every component's DB_* settings authenticate; a different password gets SQLSTATE 28P01", async (t) => {
  for (const name of contract.podRules.injectCredentials.filter((c) => c !== contract.components.pluginDaemon)) {
    const env = resolvedEnv(objects, component(name));
    const r = await connectAs(env, env[ENV.dbPassword]!);
    t.equal(r.status, 0, `${name}: ${r.stderr}`);
    t.equal(
      r.stdout.trim(),
      `${secret(SECRET_KEYS.postgresUsername)}|dify`,
      `${name}: as the Secret's user, in Dify's database`,
    );
  }
  // The plugin daemon connects to DB_DEFAULT_DATABASE first and creates its own database (it needs CREATEDB).
  const daemon = resolvedEnv(objects, component(contract.components.pluginDaemon));
  const created = await runAs(
    postgres,
    program('psql'),
    ['-v', 'ON_ERROR_STOP=1', '-c', `CREATE DATABASE ${daemon.DB_DATABASE}`],
    {
      PATH,
      PGHOST: '127.0.0.1',
      PGPORT: String(port.port),
      PGUSER: daemon.DB_USERNAME,
      PGDATABASE: daemon.DB_DEFAULT_DATABASE,
      PGPASSWORD: daemon[ENV.dbPassword],
    },
  );
  t.equal(created.status, 0, created.stderr);
  const inOwn = await connectAs(daemon, daemon[ENV.dbPassword]!);
  t.equal(inOwn.stdout.trim(), `${daemon.DB_USERNAME}|dify_plugin`, 'the plugin daemon in its own database');

  const api = resolvedEnv(objects, component(contract.components.api));
  t.equal(api.PGVECTOR_PASSWORD, api[ENV.dbPassword], 'PGVECTOR_PASSWORD is the same secret');
  const before = pg!.log.length;
  const wrong = await connectAs(api, `${api[ENV.dbPassword]}x`);
  t.not(wrong.status, 0);
  t.match(wrong.stderr, /password authentication failed/);
  await until(pg!, 'the server logs the refusal', async () => pg!.log.slice(before).includes('FATAL'));
  t.match(pg!.log.slice(before), /^28P01 FATAL: {2}password authentication failed for user "dify"/m, 'SQLSTATE 28P01');
});

/** The rendered check-data-directory script on a volume, as the init container runs it (read-only mount, user postgres). */
function runCheck(dir: string): ReturnType<typeof runAs> {
  const env = resolvedEnv(objects, check);
  return runAs(postgres, '/bin/sh', ['-c', shellScript(check.command)], {
    ...env,
    PATH,
    DATA_VOLUME: dir,
    PGDATA: join(dir, 'pgdata'),
  });
}

/** A volume holding PG_VERSION (and a stand-in for the rest) at `sub`. */
function fakeVolume(name: string, sub: string, version: string, owner = postgres): string {
  const dir = join(work, name);
  mkdirSync(join(dir, sub), { recursive: true });
  writeFileSync(join(dir, sub, 'PG_VERSION'), `${version}\n`);
  mkdirSync(join(dir, sub, 'base'));
  chownSync(join(dir, sub), owner.uid, owner.gid);
  chmodSync(join(dir, sub), 0o700);
  return dir;
}

t.test(
  'check-data-directory: its own PostgreSQL 15 volume starts; others stop with what was found and what to do',
  async (t) => {
    await pg?.stop();
    const own = await runCheck(volume);
    t.equal(own.status, 0, own.stderr);
    t.match(own.stdout, /PostgreSQL 15 data directory .*pgdata: starting it/);

    const pvc = `dify/${releaseName('postgresqlPvc')}`;
    const cases = [
      [
        "Bitnami's layout (data/ under the volume)",
        fakeVolume('bitnami', 'data', '15'),
        /holds data\/ \(PostgreSQL 15\), the layout of Bitnami's PostgreSQL image/,
      ],
      [
        "Bitnami's layout, unreadable (uid 1001, 0700)",
        fakeVolume('bitnami-1001', 'data', '15', { name: 'x', uid: 1001, gid: 1001 }),
        /holds data\/ \(PostgreSQL unknown\), the layout of Bitnami's/,
      ],
      [
        'another major version',
        fakeVolume('pg14', 'pgdata', '14'),
        /holds a PostgreSQL 14 data directory and this image runs PostgreSQL 15, which cannot open it/,
      ],
      [
        'a data directory at the volume root',
        fakeVolume('root', '.', '15'),
        /holds a PostgreSQL 15 data directory at its root/,
      ],
    ] as const;
    for (const [what, dir, found] of cases) {
      const r = await runCheck(dir);
      t.equal(r.status, 1, `${what}: refused`);
      t.match(r.stderr, found, `${what}: says what it found`);
      t.match(r.stderr, `PostgreSQL NOT started. Volume ${dir} (PVC ${pvc})`, `${what}: names the PVC`);
      t.match(r.stderr, /What to do: /, `${what}: says what to do`);
      const discard = `kubectl delete pvc -n dify ${releaseName('postgresqlPvc')}`;
      t.match(r.stderr, discard, `${what}: and the way to discard it`);
    }
  },
);

t.test(
  'the migration wait gives up with a clear message when PostgreSQL does not come (the Job then fails visibly)',
  async (t) => {
    await pg?.stop();
    const short = await renderChart({ migration: { waitForPostgresql: { timeoutSeconds: 10 } } });
    const shortWait = initContainersOf(componentWorkload(short.objects, contract.components.migration))[0]!;
    const r = await runAs(postgres, '/bin/sh', ['-c', shellScript(shortWait.command)], {
      ...resolvedEnv(short.objects, shortWait),
      PATH,
      PGHOST: '127.0.0.1',
      PGPORT: String(port.port),
    });
    t.equal(r.status, 1);
    t.match(r.stderr, `PostgreSQL 127.0.0.1:${port.port} did not become ready in 10s`);
  },
);
