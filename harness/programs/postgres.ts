// A real PostgreSQL 15 (Debian's) initialised as the chart's PostgreSQL is on first start: the user,
// database and password of the rendered Secret, scram-sha-256 over TCP, and local (Unix socket)
// connections trusted, as inside the PostgreSQL container. Runs as the `postgres` user in its own
// process group on a free loopback port; its output goes to the suite-wide password scan.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { reservePort, type ReservedPort } from '../ports.js';
import {
  asUser,
  privateDir,
  requireRoot,
  runProgram,
  startProgram,
  waitForPort,
  type RunningProgram,
} from './program-run.js';
import { program } from './programs.js';

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
  stop(): Promise<void>;
}

function postgresIds(): { uid: number; gid: number } {
  const id = (flag: string): number => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

/** initdb with the Secret's user as superuser and its password (from a file removed at once: never on a command line). */
async function initdb(dataDir: string, auth: PostgresAuth, ids: { uid: number; gid: number }): Promise<void> {
  const pwfile = join(dataDir, '..', 'pwfile');
  writeFileSync(pwfile, `${auth.password}\n`, { mode: 0o600 });
  chownSync(pwfile, ids.uid, ids.gid);
  const { command, args } = asUser(ids.uid, ids.gid, program('initdb'), [
    '-D',
    dataDir,
    '-U',
    auth.user,
    `--pwfile=${pwfile}`,
    '--auth-local=trust',
    '--auth-host=scram-sha-256',
    '--encoding=UTF8',
    '--no-sync',
  ]);
  const res = await runProgram({ name: 'initdb', command, args });
  rmSync(pwfile, { force: true });
  if (res.status !== 0) throw new Error(`initdb failed (${res.status}): ${res.stderr.slice(-2000)}`);
}

/** Starts PostgreSQL and creates the Secret's database, as the image's entrypoint does on an empty volume. */
export async function startPostgres(auth: PostgresAuth): Promise<LocalPostgres> {
  requireRoot('Starting PostgreSQL as the postgres user');
  const ids = postgresIds();
  const root = privateDir('dify-guard-postgres');
  chmodSync(root, 0o755);
  const dataDir = join(root, 'data');
  const socketDir = join(root, 'run');
  for (const dir of [dataDir, socketDir]) {
    mkdirSync(dir, { mode: 0o700 });
    chownSync(dir, ids.uid, ids.gid);
  }
  await initdb(dataDir, auth, ids);
  const reserved: ReservedPort = await reservePort();
  const { command, args } = asUser(ids.uid, ids.gid, program('postgres'), [
    '-D',
    dataDir,
    '-c',
    'listen_addresses=127.0.0.1',
    '-c',
    `port=${reserved.port}`,
    '-c',
    `unix_socket_directories=${socketDir}`,
    // The SQLSTATE first on each line: the server's own record of a 28P01.
    '-c',
    'log_line_prefix=%e ',
    '-c',
    'fsync=off',
  ]);
  const server = startProgram({ name: 'postgresql', command, args });
  await waitForPort(server, '127.0.0.1', reserved.port);
  const created = await runProgram({
    name: 'createdb',
    command: program('psql'),
    args: [
      '-h',
      socketDir,
      '-p',
      String(reserved.port),
      '-U',
      auth.user,
      '-d',
      'postgres',
      '-v',
      'ON_ERROR_STOP=1',
      '-c',
      `CREATE DATABASE "${auth.database}" OWNER "${auth.user}"`,
    ],
  });
  if (created.status !== 0) throw new Error(`CREATE DATABASE failed: ${created.stderr}`);
  return {
    port: reserved.port,
    socketDir,
    server,
    stop: async () => {
      await server.stop(10_000);
      reserved.release();
    },
  };
}
