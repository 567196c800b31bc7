// What the cluster (cluster.ts) maps to this machine for a Dify release, so that the commands of
// chart/README.md can be typed as written (`npm run demo`, guide-commands.test.ts). Dify's own images
// cannot run here (kwok pulls no image): where a command would reach one, the answer says so.
// - `kubectl exec <release>-postgresql-0 -- psql ...` runs psql here against the real PostgreSQL;
// - the migration Job's init container `wait-for-postgresql` runs its own command (pg_isready) against
//   that same server, and `kubectl logs ... -c wait-for-postgresql` prints what it printed;
// - the migration container (Dify's image, `flask db upgrade`) never runs: its log says so;
// - the plugin daemon never runs: `kubectl exec <its pod> -- curl .../health/check` says so, and fails.
import { dirname } from 'node:path';
import { contract, expandName } from '../../src/contract.js';
import type { LocalPostgres } from '../programs/postgres.js';
import { program } from '../programs/programs.js';
import type { Cluster, ClusterOptions } from './cluster.js';
import { InitContainers } from './init-containers.js';

export interface DifyRelease {
  namespace: string;
  release: string;
}

/** The migration Job's init container (chart/templates/migration-job.yaml). */
export const WAIT_FOR_POSTGRESQL = 'wait-for-postgresql';

/** What `kubectl logs job/<release>-db-migration` prints: the migration container's log. */
export const MIGRATION_NOT_RUN_LOG =
  "[local cluster] Dify's image cannot run here (kwok's nodes pull no image): `flask db upgrade` did not run and " +
  "no migration was applied; this pod's Completed status comes from kwok's stages";

/** What `kubectl exec <plugin daemon pod> -- curl ...` prints on stderr, before it exits 1. */
export const PLUGIN_DAEMON_NOT_RUNNING =
  "[local cluster] dify-plugin-daemon cannot run here (kwok's nodes pull no image): nothing listens on port 5002, " +
  "so there is no health to check. This answer is the local cluster's, not the daemon's; on a real cluster the " +
  'daemon answers GET /health/check with HTTP 200 and JSON whose "status" is "ok"';

/** PostgreSQL 15's client programs, then the system's (sh, date, sleep for the init container's loop). */
const postgresPath = (): string => `${dirname(program('psql'))}:/usr/bin:/bin`;

/** The cluster options that map the release's commands to this machine, `pg` standing behind `<release>-postgresql-0`. */
export function difyLocalOptions(pg: LocalPostgres, { namespace, release }: DifyRelease): ClusterOptions {
  return {
    execs: [
      {
        namespace,
        pod: `${expandName(contract.names.postgresql, release)}-0`,
        env: { PGHOST: pg.socketDir, PGPORT: String(pg.port), PATH: postgresPath() },
      },
    ],
    logs: [
      { namespace, containers: [WAIT_FOR_POSTGRESQL] },
      { namespace, containers: [contract.components.migration], text: MIGRATION_NOT_RUN_LOG },
    ],
    notRunning: [{ namespace, containers: [contract.components.pluginDaemon], message: PLUGIN_DAEMON_NOT_RUNNING }],
  };
}

/**
 * Runs the init container of each migration Job pod against `pg` (PGHOST/PGPORT of the real server: there is
 * no cluster DNS here for the pod's `<release>-postgresql`), started; stop it before the cluster.
 */
export function startMigrationInit(cluster: Cluster, pg: LocalPostgres, { namespace, release }: DifyRelease) {
  const init = new InitContainers(cluster, {
    namespace,
    labelSelector: `job-name=${expandName(contract.names.migrationJob, release)}`,
    container: WAIT_FOR_POSTGRESQL,
    env: { PGHOST: '127.0.0.1', PGPORT: String(pg.port), PATH: postgresPath() },
  });
  init.start();
  return init;
}
