// A real PostgreSQL 15 (Debian's), run as the `postgres` user in its own process group on a free loopback
// port, local (Unix socket) connections trusted as inside the PostgreSQL container; its output goes to the
// suite-wide password scan. Two ways to start it, one server:
// - startPostgres(auth): initialised as the chart's PostgreSQL is on first start: the user, database and
//   password of the rendered Secret, scram-sha-256 over TCP.
// - startLocalPostgres(name): a throwaway server for the tests that ask a real database whether it accepts a
//   password; host logins use md5 in pg_hba, which also runs SCRAM for a role stored as SCRAM, so both of
//   the client's mechanisms are exercised. SQL goes on stdin, never argv.
import { chmodSync, chownSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { run } from '../commands.js';
import { reservePort } from '../ports.js';
import { program } from './programs.js';
import { privateDir, requireRoot, runAs, startAs, systemUser, until, type RunningProgram } from './run.js';

export interface PostgresAuth {
  user: string;
  database: string;
  password: string;
}

export interface LocalPostgres {
  port: number;
  /** The folder of its Unix socket (PGHOST for a local, password-less connection). */
  socketDir: string;
  server: RunningProgram;
  /** Runs SQL as the superuser over the socket (ON_ERROR_STOP); stdout back, throws with stderr on failure. */
  sql(text: string): Promise<string>;
  stop(): Promise<void>;
}

interface ServerOptions {
  name: string;
  /** The superuser initdb makes, with its password; without one, `postgres` with none. */
  owner?: { user: string; password: string };
  hostAuth: 'scram-sha-256' | 'md5';
}

const postgresUser = () => systemUser('postgres');

/** The folders of one server: the data directory and the socket's, owned by postgres. */
function folders(name: string): { root: string; dataDir: string; socketDir: string } {
  const user = postgresUser();
  const root = privateDir(`dify-guard-${name}`);
  chmodSync(root, 0o755);
  const dataDir = join(root, 'data');
  const socketDir = join(root, 'run');
  for (const dir of [dataDir, socketDir]) {
    mkdirSync(dir, { mode: 0o700 });
    chownSync(dir, user.uid, user.gid);
  }
  return { root, dataDir, socketDir };
}

/** initdb, the superuser's password from a file removed at once (never on a command line). */
async function initdb(root: string, env: NodeJS.ProcessEnv, options: ServerOptions): Promise<void> {
  const user = postgresUser();
  const args = [`--auth-local=trust`, `--auth-host=${options.hostAuth}`, '--encoding=UTF8', '--no-sync'];
  const pwfile = join(root, 'pwfile');
  if (options.owner) {
    writeFileSync(pwfile, `${options.owner.password}\n`, { mode: 0o600 });
    chownSync(pwfile, user.uid, user.gid);
    args.push('-U', options.owner.user, `--pwfile=${pwfile}`);
  }
  const res = await runAs(user, program('initdb'), args, env);
  rmSync(pwfile, { force: true });
  if (res.status !== 0) throw new Error(`initdb failed (${res.status}): ${res.stderr.slice(-2000)}`);
}

async function startServer(options: ServerOptions): Promise<LocalPostgres> {
  requireRoot('Starting PostgreSQL as the postgres user');
  const { root, dataDir, socketDir } = folders(options.name);
  const reserved = await reservePort();
  const env = {
    PATH: `${dirname(program('postgres'))}:/usr/bin:/bin`,
    LANG: 'C.UTF-8',
    PGDATA: dataDir,
    PGPORT: String(reserved.port),
    PGHOST: socketDir,
    PGUSER: options.owner?.user ?? 'postgres',
    PGDATABASE: 'postgres',
  };
  await initdb(root, env, options);
  const server = startAs(options.name, postgresUser(), program('postgres'), serverArgs(socketDir), { env });
  const sql = async (text: string): Promise<string> => {
    const r = await run(program('psql'), ['-v', 'ON_ERROR_STOP=1', '-Atq'], { env, input: text });
    if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`);
    return r.stdout;
  };
  await until(server, 'accepting connections', async () => (await sql('SELECT 1').catch(() => '')).trim() === '1');
  const stop = async (): Promise<void> => {
    await server.stop(10_000);
    reserved.release();
    rmSync(root, { recursive: true, force: true });
  };
  return { port: reserved.port, socketDir, server, sql, stop };
}

const serverArgs = (socketDir: string): string[] => [
  '-c',
  'listen_addresses=127.0.0.1',
  '-c',
  `unix_socket_directories=${socketDir}`,
  // The SQLSTATE first on each line: the server's own record of a 28P01.
  '-c',
  'log_line_prefix=%e ',
  '-c',
  'fsync=off',
];

/** Starts PostgreSQL and creates the Secret's database, as the image's entrypoint does on an empty volume. */
export async function startPostgres(auth: PostgresAuth): Promise<LocalPostgres> {
  const pg = await startServer({ name: 'postgresql', owner: auth, hostAuth: 'scram-sha-256' });
  await pg.sql(`CREATE DATABASE "${auth.database}" OWNER "${auth.user}"`).catch(async (err: Error) => {
    await pg.stop();
    throw new Error(`CREATE DATABASE failed: ${err.message}`, { cause: err });
  });
  return pg;
}

/** A throwaway PostgreSQL with the superuser `postgres`, md5 for host logins. */
export function startLocalPostgres(name = 'postgres'): Promise<LocalPostgres> {
  return startServer({ name, hostAuth: 'md5' });
}

/** A role's password in a SQL string literal (test passwords are alphanumeric; anything else is refused). */
export function sqlPassword(password: string): string {
  if (!/^[A-Za-z0-9]+$/.test(password)) throw new Error('test passwords are alphanumeric (testSecret())');
  return `'${password}'`;
}
