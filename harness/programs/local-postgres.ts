// A throwaway PostgreSQL 15 (Debian's, run as user postgres) on a free loopback port, for the tests that
// ask a real database whether it accepts a password. Host logins use md5 in pg_hba, which also runs SCRAM
// for a role stored as SCRAM: both of the client's mechanisms are exercised. SQL goes on stdin, never argv.
import { chownSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { run } from '../commands.js';
import { reservePort } from '../ports.js';
import { program } from './programs.js';
import { PipedServer, privateDir, systemUser, until } from './run-as.js';

export interface LocalPostgres {
  port: number;
  /** Runs SQL as the superuser over the socket (ON_ERROR_STOP); stdout back, throws with stderr on failure. */
  sql(text: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startLocalPostgres(name = 'postgres'): Promise<LocalPostgres> {
  const postgres = systemUser('postgres');
  const work = privateDir(postgres, name);
  const port = await reservePort();
  const socketDir = join(work.dir, 'run');
  mkdirSync(socketDir);
  chownSync(socketDir, postgres.uid, postgres.gid);
  const env = {
    PATH: `${dirname(program('postgres'))}:/usr/bin:/bin`,
    LANG: 'C.UTF-8',
    PGDATA: join(work.dir, 'data'),
    PGPORT: String(port.port),
    PGHOST: socketDir,
    PGUSER: 'postgres',
    PGDATABASE: 'postgres',
  };
  const asPostgres = (command: string, args: string[]): string[] => [
    `--reuid=${postgres.uid}`,
    `--regid=${postgres.gid}`,
    '--init-groups',
    '--',
    command,
    ...args,
  ];
  const initdb = await run(
    'setpriv',
    asPostgres(program('initdb'), ['--auth-local=trust', '--auth-host=md5', '--encoding=UTF8']),
    { env },
  );
  if (initdb.status !== 0) throw new Error(`initdb failed:\n${initdb.stdout}${initdb.stderr}`);
  const server = new PipedServer(
    name,
    postgres,
    program('postgres'),
    ['-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${socketDir}`, '-c', 'log_line_prefix=%e '],
    env,
  );
  const sql = async (text: string): Promise<string> => {
    const r = await run('setpriv', asPostgres(program('psql'), ['-v', 'ON_ERROR_STOP=1', '-Atq']), {
      env,
      input: text,
    });
    if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`);
    return r.stdout;
  };
  await until(server, 'accepting connections', async () => (await sql('SELECT 1').catch(() => '')).trim() === '1');
  return {
    port: port.port,
    sql,
    async stop() {
      await server.stop();
      port.release();
      work.remove();
    },
  };
}

/** A role's password in a SQL string literal (test passwords are alphanumeric; anything else is refused). */
export function sqlPassword(password: string): string {
  if (!/^[A-Za-z0-9]+$/.test(password)) throw new Error('test passwords are alphanumeric (testSecret())');
  return `'${password}'`;
}
