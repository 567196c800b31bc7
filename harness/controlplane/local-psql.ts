// psql on this machine against the real PostgreSQL that stands behind `<release>-postgresql-0` on the
// cluster: the environment `kubectl exec <pod> -- psql` gets there, and a client that logs in over TCP
// as a Dify component does (the password in the environment, never on a command line).
import { dirname } from 'node:path';
import { run, type CommandResult } from '../commands.js';
import type { LocalPostgres } from '../programs/postgres.js';
import { program } from '../programs/programs.js';

/** What the postgresql container's environment gives psql: the local socket (trusted), the port, psql on PATH. */
export function postgresPodEnv(pg: LocalPostgres): Record<string, string> {
  return {
    PGHOST: pg.socketDir,
    PGPORT: String(pg.port),
    PATH: `${dirname(program('psql'))}:${process.env.PATH ?? ''}`,
  };
}

/** `psql -Atc sql` over TCP as `login.user` to `login.database` with `password` (ON_ERROR_STOP, never prompting). */
export function tcpPsql(
  pg: LocalPostgres,
  login: { user: string; database: string },
  password: string,
  sql: string,
): Promise<CommandResult> {
  const connection = ['-h', '127.0.0.1', '-p', String(pg.port), '-U', login.user, '-d', login.database, '-w'];
  return run(program('psql'), [...connection, '-v', 'ON_ERROR_STOP=1', '-Atc', sql], {
    env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '5' },
    timeoutMs: 60_000,
    captureStdout: true,
  });
}
