// Where the real programs the chart configures are (Debian's squid, nginx, redis-server, PostgreSQL 15)
// and shellcheck. `npm test` provides them with scripts/dev/prerequisites.sh; a test file run on its own
// provides them the same way (never a skip: a program that cannot be provided fails the test loudly).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../binaries.js';

const POSTGRES_BIN = '/usr/lib/postgresql/15/bin';

const paths = {
  squid: '/usr/sbin/squid',
  nginx: '/usr/sbin/nginx',
  'redis-server': '/usr/bin/redis-server',
  'redis-cli': '/usr/bin/redis-cli',
  postgres: join(POSTGRES_BIN, 'postgres'),
  initdb: join(POSTGRES_BIN, 'initdb'),
  pg_ctl: join(POSTGRES_BIN, 'pg_ctl'),
  pg_isready: join(POSTGRES_BIN, 'pg_isready'),
  psql: join(POSTGRES_BIN, 'psql'),
} as const;

export type ProgramName = keyof typeof paths | 'shellcheck';

let toolsDir: string | undefined;

/** Runs the prerequisites script once per process and returns the folder holding shellcheck. */
function provided(): string {
  if (toolsDir) return toolsDir;
  const out = execFileSync('bash', [join(repoRoot, 'scripts/dev/prerequisites.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  toolsDir = out.trim().split('\n').pop() ?? '';
  return toolsDir;
}

/** The absolute path of a real program; throws with the command that fixes it when it is missing. */
export function program(name: ProgramName): string {
  const path = name === 'shellcheck' ? join(process.env.DIFY_GUARD_TOOLS_BIN ?? provided(), 'shellcheck') : paths[name];
  if (!existsSync(path) && name !== 'shellcheck') provided();
  if (!existsSync(path)) throw new Error(`${name} is missing (${path}): run scripts/dev/prerequisites.sh`);
  return path;
}
