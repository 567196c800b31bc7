// What the pure decisions need to know about a cluster's Dify releases. Defaults come from the
// contract; config.ts overrides them from DIFY_GUARD_* env vars or a config file (same keys).
import { contract, expandName } from '../contract.js';

export interface GuardSettings {
  /** Name of a release's PostgreSQL Secret, e.g. `{release}-postgresql`. */
  postgresqlSecretTemplate: string;
  /** Name of a release's PostgreSQL data PVC, e.g. `data-{release}-postgresql-0`. */
  postgresqlPvcTemplate: string;
  /** Redis host injected as REDIS_HOST, e.g. `{release}-redis-master`. */
  redisHostTemplate: string;
  /** Redis port injected as REDIS_PORT. */
  redisPort: number;
  /** Secret holding the Redis password, e.g. `{release}-redis` (a pod annotation may override it). */
  redisSecretTemplate: string;
  /** Key of the Redis password in that Secret (a pod annotation may override it). */
  redisSecretKey: string;
  /** Components whose pods get MIGRATION_ENABLED forced to "false". */
  forceMigrationDisabled: readonly string[];
  /** Components whose pods get DB/Redis credentials as Secret references. */
  injectCredentials: readonly string[];
  /** Repository paths of Dify images (`langgenius/dify-api`), matched whatever the registry and tag. */
  difyImages: readonly string[];
  /** What a Dify pod template with a literal password or MIGRATION_ENABLED on gets: warnings, or a refusal. */
  templatePolicy: TemplatePolicy;
}

export type TemplatePolicy = 'warn' | 'deny';

export const defaultGuardSettings: Readonly<GuardSettings> = Object.freeze({
  postgresqlSecretTemplate: contract.names.postgresqlSecret,
  postgresqlPvcTemplate: contract.names.postgresqlPvc,
  redisHostTemplate: contract.names.redisMaster,
  redisPort: contract.redisPort,
  redisSecretTemplate: contract.names.redisSecret,
  redisSecretKey: contract.secretKeys.redisPassword,
  forceMigrationDisabled: Object.freeze([...contract.podRules.forceMigrationDisabled]),
  injectCredentials: Object.freeze([...contract.podRules.injectCredentials]),
  difyImages: Object.freeze([...contract.difyImages]),
  templatePolicy: 'warn',
});

/** The concrete object names of one release. */
export interface ReleaseNames {
  postgresqlSecret: string;
  postgresqlPvc: string;
  redisHost: string;
  redisSecret: string;
}

export function releaseNames(settings: GuardSettings, release: string): ReleaseNames {
  return {
    postgresqlSecret: expandName(settings.postgresqlSecretTemplate, release),
    postgresqlPvc: expandName(settings.postgresqlPvcTemplate, release),
    redisHost: expandName(settings.redisHostTemplate, release),
    redisSecret: expandName(settings.redisSecretTemplate, release),
  };
}

/** The release a name was expanded for (`dify` from `dify-postgresql`), or undefined if it does not fit. */
export function releaseFromName(template: string, name: string): string | undefined {
  const parts = template.split('{release}');
  // Only a template with exactly one {release} can be read back unambiguously.
  if (parts.length !== 2) return undefined;
  const [prefix = '', suffix = ''] = parts;
  if (name.length <= prefix.length + suffix.length) return undefined;
  if (!name.startsWith(prefix) || !name.endsWith(suffix)) return undefined;
  return name.slice(prefix.length, name.length - suffix.length);
}
