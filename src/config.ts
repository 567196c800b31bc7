// dify-guard's settings: one table (name, env var, default, description, schema) that the loader,
// the README and the chart's tests all read. Values come from DIFY_GUARD_* env vars, optionally
// from a JSON/YAML file (same keys in camelCase); env wins. Checked with ajv at start: every bad
// setting gives one line naming the variable, what it must be, and what it got.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { Ajv, type ErrorObject } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { defaultGuardSettings, type GuardSettings } from './admission/settings.js';
import { contract } from './contract.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The process settings, plus the release name templates and Redis settings of GuardSettings (same keys). */
export interface GuardConfig extends Omit<
  GuardSettings,
  'forceMigrationDisabled' | 'injectCredentials' | 'difyImages'
> {
  difyImages: string[];
  port: number;
  healthPort: number;
  bindAddress: string;
  tlsCertFile: string;
  tlsKeyFile: string;
  bodyLimitBytes: number;
  logLevel: LogLevel;
  eventsEnabled: boolean;
  shutdownTimeoutSeconds: number;
  shutdownDelaySeconds: number;
  pvcResyncSeconds: number;
  postgresqlAddressTemplate: string;
  postgresqlVerifyTimeoutMs: number;
  postgresqlVerifyRateLimit: number;
}

type JsonSchema = Record<string, unknown>;

export interface SettingSpec<T> {
  env: string;
  default: T;
  description: string;
  schema: JsonSchema;
  /** How a problem reads: `<ENV>: <expects>, got <value>`. */
  expects: string;
}

const port = (n: number): JsonSchema => ({ type: 'integer', minimum: n, maximum: 65535 });
// A Kubernetes name with {release} where the Helm release name goes.
const nameTemplate: JsonSchema = {
  type: 'string',
  maxLength: 253,
  pattern: '^(?:[a-z0-9.-]|\\{release\\})*\\{release\\}(?:[a-z0-9.-]|\\{release\\})*$',
};
const filePath: JsonSchema = { type: 'string', pattern: '^\\S(.*\\S)?$' };
// A repository path as image references write it: lowercase components separated by '/'.
const imagePath = '^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$';
// host:port (or [IPv6]:port), where {release} and {namespace} stand for the Secret's release and namespace.
const addressTemplate: JsonSchema = {
  type: 'string',
  maxLength: 300,
  pattern: '^(?:\\[[0-9A-Fa-f:.]+\\]|(?:[A-Za-z0-9.-]|\\{release\\}|\\{namespace\\})+):[0-9]{1,5}$',
};
const templateExpects = 'must be a lowercase Kubernetes name containing {release} (e.g. "{release}-postgresql")';

export const SETTINGS: { [K in keyof GuardConfig]: SettingSpec<GuardConfig[K]> } = {
  port: {
    env: 'DIFY_GUARD_PORT',
    default: contract.webhook.securePort,
    schema: port(1),
    expects: 'must be an integer 1-65535',
    description:
      `HTTPS port of the admission webhooks (POST ${contract.webhook.mutatePodsPath}, ${contract.webhook.validateSecretsPath}, ` +
      `${contract.webhook.validateWorkloadsPath}).`,
  },
  healthPort: {
    env: 'DIFY_GUARD_HEALTH_PORT',
    default: contract.webhook.healthPort,
    schema: port(1),
    expects: 'must be an integer 1-65535, not the webhook port',
    description: 'Plain-HTTP port of GET /healthz, /readyz and /metrics.',
  },
  bindAddress: {
    env: 'DIFY_GUARD_BIND_ADDRESS',
    default: '0.0.0.0',
    schema: { type: 'string', format: 'ip' },
    expects: 'must be an IPv4 or IPv6 address',
    description: 'Address both ports listen on (`::` for IPv6 and IPv4).',
  },
  tlsCertFile: {
    env: 'DIFY_GUARD_TLS_CERT_FILE',
    default: '/etc/dify-guard/tls/tls.crt',
    schema: filePath,
    expects: 'must be a file path',
    description: 'PEM serving certificate (with its chain); reloaded when the file or its folder changes.',
  },
  tlsKeyFile: {
    env: 'DIFY_GUARD_TLS_KEY_FILE',
    default: '/etc/dify-guard/tls/tls.key',
    schema: filePath,
    expects: 'must be a file path',
    description: 'PEM private key of the serving certificate; reloaded with it.',
  },
  bodyLimitBytes: {
    env: 'DIFY_GUARD_BODY_LIMIT_BYTES',
    default: 3_145_728,
    schema: { type: 'integer', minimum: 1024, maximum: 67_108_864 },
    expects: 'must be an integer 1024-67108864',
    description: 'Largest AdmissionReview body accepted; larger ones are answered 413.',
  },
  logLevel: {
    env: 'DIFY_GUARD_LOG_LEVEL',
    default: 'info',
    schema: { enum: [...LOG_LEVELS] },
    expects: `must be one of ${LOG_LEVELS.join(', ')}`,
    description: 'Level of the JSON log on stdout. Audit records are written at warn; request bodies are never logged.',
  },
  postgresqlSecretTemplate: {
    env: 'DIFY_GUARD_POSTGRESQL_SECRET_TEMPLATE',
    default: defaultGuardSettings.postgresqlSecretTemplate,
    schema: nameTemplate,
    expects: templateExpects,
    description: "Name of a release's PostgreSQL Secret, the one whose password is guarded.",
  },
  postgresqlPvcTemplate: {
    env: 'DIFY_GUARD_POSTGRESQL_PVC_TEMPLATE',
    default: defaultGuardSettings.postgresqlPvcTemplate,
    schema: nameTemplate,
    expects: templateExpects,
    description:
      "Name of a release's PostgreSQL data PVC; while it exists the password can change only to one " +
      'the database already accepts.',
  },
  redisHostTemplate: {
    env: 'DIFY_GUARD_REDIS_HOST_TEMPLATE',
    default: defaultGuardSettings.redisHostTemplate,
    schema: nameTemplate,
    expects: templateExpects,
    description: 'REDIS_HOST added to Dify pods that lack it.',
  },
  redisPort: {
    env: 'DIFY_GUARD_REDIS_PORT',
    default: defaultGuardSettings.redisPort,
    schema: port(1),
    expects: 'must be an integer 1-65535',
    description: 'REDIS_PORT added to Dify pods that lack it.',
  },
  redisSecretTemplate: {
    env: 'DIFY_GUARD_REDIS_SECRET_TEMPLATE',
    default: defaultGuardSettings.redisSecretTemplate,
    schema: nameTemplate,
    expects: templateExpects,
    description: 'Secret that REDIS_PASSWORD references (a pod annotation may name another).',
  },
  redisSecretKey: {
    env: 'DIFY_GUARD_REDIS_SECRET_KEY',
    default: defaultGuardSettings.redisSecretKey,
    schema: { type: 'string', maxLength: 253, pattern: '^[-._a-zA-Z0-9]+$' },
    expects: 'must be a Secret key (letters, digits, "-", "_", ".")',
    description: 'Key of the Redis password in that Secret.',
  },
  difyImages: {
    env: 'DIFY_GUARD_DIFY_IMAGES',
    default: [...defaultGuardSettings.difyImages],
    schema: {
      type: 'array',
      minItems: 1,
      uniqueItems: true,
      items: { type: 'string', maxLength: 255, pattern: imagePath },
    },
    expects: 'must be a comma-separated list of image repository paths (e.g. "langgenius/dify-api,mirror/dify-api")',
    description:
      'Repository paths of Dify images, matched whatever the registry, tag or digest; ' +
      "a container running one is a Dify container (add a mirror's renamed path here and in the chart's webhook.difyImages).",
  },
  templatePolicy: {
    env: 'DIFY_GUARD_TEMPLATE_POLICY',
    default: defaultGuardSettings.templatePolicy,
    schema: { enum: [...contract.templatePolicies] },
    expects: 'must be warn or deny',
    description:
      `What POST ${contract.webhook.validateWorkloadsPath} answers for a Dify pod template with a literal password ` +
      'or MIGRATION_ENABLED other than "false": warn (allowed, with warnings) or deny.',
  },
  postgresqlAddressTemplate: {
    env: 'DIFY_GUARD_POSTGRESQL_ADDRESS_TEMPLATE',
    default: contract.postgresqlAddressTemplate,
    schema: addressTemplate,
    expects:
      'must be host:port, where the host may contain {release} and {namespace} (e.g. "{release}-postgresql.{namespace}.svc:5432")',
    description:
      "Where a release's PostgreSQL listens. For a password change under the PVC, dify-guard connects there as the " +
      "Secret's user, to its database, with the new password (authentication only, no query) and allows the change if it is accepted.",
  },
  postgresqlVerifyTimeoutMs: {
    env: 'DIFY_GUARD_POSTGRESQL_VERIFY_TIMEOUT_MS',
    default: 2000,
    schema: { type: 'integer', minimum: 100, maximum: 10_000 },
    expects: 'must be an integer 100-10000',
    description:
      'How long that check may take (connect and authenticate); past it the change is refused as "cannot verify". ' +
      "Keep it well below the webhook's timeoutSeconds.",
  },
  postgresqlVerifyRateLimit: {
    env: 'DIFY_GUARD_POSTGRESQL_VERIFY_RATE_LIMIT',
    default: 3,
    schema: { type: 'integer', minimum: 1, maximum: 60 },
    expects: 'must be an integer 1-60',
    description:
      'Database checks per Secret per minute and per replica (dry runs count); past it the change is refused ' +
      'with when to retry, so that dify-guard cannot serve to guess passwords.',
  },
  eventsEnabled: {
    env: 'DIFY_GUARD_EVENTS_ENABLED',
    default: true,
    schema: { type: 'boolean' },
    expects: 'must be true or false',
    description:
      'Emit a Warning Event on the Secret for every denial and audited decision (never for dry-run requests).',
  },
  shutdownTimeoutSeconds: {
    env: 'DIFY_GUARD_SHUTDOWN_TIMEOUT_SECONDS',
    default: 25,
    schema: { type: 'integer', minimum: 1, maximum: 600 },
    expects: 'must be an integer 1-600',
    description:
      'On SIGTERM, the most the whole shutdown may take (delay below included) before open connections are cut; ' +
      'keep it below terminationGracePeriodSeconds.',
  },
  shutdownDelaySeconds: {
    env: 'DIFY_GUARD_SHUTDOWN_DELAY_SECONDS',
    default: 5,
    schema: { type: 'integer', minimum: 0, maximum: 300 },
    expects: 'must be an integer 0-300',
    description:
      'On SIGTERM, how long to keep serving (unready, closing each connection after its answer) ' +
      'so the Service stops routing here before the port closes.',
  },
  pvcResyncSeconds: {
    env: 'DIFY_GUARD_PVC_RESYNC_SECONDS',
    default: 300,
    schema: { type: 'integer', minimum: 10, maximum: 86_400 },
    expects: 'must be an integer 10-86400',
    description: 'Period of the full PVC relist that backs up the watch (catches a watch that silently stopped).',
  },
};

export const CONFIG_FILE_ENV = 'DIFY_GUARD_CONFIG_FILE';

/** Variables read besides the settings, for the README. */
export const OTHER_ENV = [
  {
    env: CONFIG_FILE_ENV,
    default: '(none)',
    description:
      'Optional JSON or YAML file with any of the settings above under their camelCase keys (e.g. `logLevel`); env vars override it.',
  },
  {
    env: 'KUBECONFIG',
    default: '(in-cluster)',
    description: 'Kubeconfig for out-of-cluster runs; inside a pod the service account is used.',
  },
] as const;

export const SETTING_KEYS = Object.keys(SETTINGS) as (keyof GuardConfig)[];

export type ConfigResult =
  { ok: true; config: GuardConfig; settings: GuardSettings } | { ok: false; problems: string[] };

const ajv = new Ajv({ allErrors: true, strict: true });
ajv.addFormat('ip', (value: string) => isIP(value) !== 0);
const validateConfig = ajv.compile<GuardConfig>({
  type: 'object',
  additionalProperties: false,
  required: SETTING_KEYS,
  properties: Object.fromEntries(SETTING_KEYS.map((key) => [key, SETTINGS[key].schema])),
});

/** The settings as they are gathered: each value with where it came from, and the problems met on the way. */
interface Gathered {
  values: Record<string, unknown>;
  origin: Record<string, string>;
  problems: string[];
}

/** Reads the settings from env (and the optional file). Never throws for bad input: it lists the problems. */
export function loadConfig(
  env: NodeJS.ProcessEnv,
  readText: (path: string) => string = (path) => readFileSync(path, 'utf8'),
): ConfigResult {
  // Defaults, then the file, then env vars: each layer overrides the one before.
  const gathered: Gathered = {
    values: Object.fromEntries(SETTING_KEYS.map((key) => [key, SETTINGS[key].default])),
    origin: Object.fromEntries(SETTING_KEYS.map((key) => [key, `default of ${SETTINGS[key].env}`])),
    problems: [],
  };
  const file = env[CONFIG_FILE_ENV];
  if (file) applyConfigFile(gathered, file, readText);
  applyEnv(gathered, env);
  const problems = [...gathered.problems, ...invalidSettings(gathered)];
  if (problems.length > 0) return { ok: false, problems };
  const config = gathered.values as unknown as GuardConfig;
  return { ok: true, config, settings: guardSettingsOf(config) };
}

function applyConfigFile(gathered: Gathered, file: string, readText: (path: string) => string): void {
  const fromFile = readConfigFile(file, readText, gathered.problems);
  for (const [key, value] of Object.entries(fromFile ?? {})) {
    if (key in SETTINGS) {
      gathered.values[key] = value;
      gathered.origin[key] = `${CONFIG_FILE_ENV} ${file}: ${key}`;
    } else {
      gathered.problems.push(
        `${CONFIG_FILE_ENV} ${file}: unknown setting ${JSON.stringify(key)} (known: ${SETTING_KEYS.join(', ')})`,
      );
    }
  }
}

function applyEnv(gathered: Gathered, env: NodeJS.ProcessEnv): void {
  for (const key of SETTING_KEYS) {
    const raw = env[SETTINGS[key].env];
    // An empty variable counts as unset (a chart may render `value: ""`).
    if (raw === undefined || raw === '') continue;
    gathered.values[key] = fromEnvString(raw, SETTINGS[key].schema);
    gathered.origin[key] = SETTINGS[key].env;
  }
}

/** One problem per invalid setting, naming where its value came from; the two ports must differ. */
function invalidSettings({ values, origin }: Gathered): string[] {
  if (validateConfig(values)) {
    return values.port === values.healthPort
      ? [`${origin.healthPort}: ${SETTINGS.healthPort.expects}, got ${shown(values.healthPort)}`]
      : [];
  }
  const reported = new Set<keyof GuardConfig>();
  for (const error of validateConfig.errors ?? []) {
    const key = settingKeyOf(error);
    if (key) reported.add(key);
  }
  return [...reported].map((key) => `${origin[key]}: ${SETTINGS[key].expects}, got ${shown(values[key])}`);
}

/** The decisions' settings: templates and Redis details from the config, component lists from the contract. */
export function guardSettingsOf(config: GuardConfig): GuardSettings {
  return {
    ...defaultGuardSettings,
    postgresqlSecretTemplate: config.postgresqlSecretTemplate,
    postgresqlPvcTemplate: config.postgresqlPvcTemplate,
    redisHostTemplate: config.redisHostTemplate,
    redisPort: config.redisPort,
    redisSecretTemplate: config.redisSecretTemplate,
    redisSecretKey: config.redisSecretKey,
    difyImages: Object.freeze([...config.difyImages]),
    templatePolicy: config.templatePolicy,
  };
}

function readConfigFile(
  path: string,
  readText: (path: string) => string,
  problems: string[],
): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = readText(path);
  } catch (error) {
    problems.push(`${CONFIG_FILE_ENV}: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    return undefined;
  }
  let parsed: unknown;
  try {
    // YAML 1.2 reads JSON as well.
    parsed = parseYaml(text);
  } catch (error) {
    problems.push(
      `${CONFIG_FILE_ENV} ${path}: not valid JSON or YAML (${String((error as Error).message).split('\n')[0]})`,
    );
    return undefined;
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    problems.push(
      `${CONFIG_FILE_ENV} ${path}: must hold an object of settings, got ${Array.isArray(parsed) ? 'a list' : typeof parsed}`,
    );
    return undefined;
  }
  return parsed as Record<string, unknown>;
}

/** Env vars are strings: numbers and booleans are read only when they are written exactly so. */
function fromEnvString(raw: string, schema: JsonSchema): unknown {
  const text = raw.trim();
  if (schema.type === 'integer' && /^[+-]?\d+$/.test(text)) return Number(text);
  if (schema.type === 'boolean' && /^(true|false)$/i.test(text)) return text.toLowerCase() === 'true';
  if (schema.type === 'array')
    return text
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== '');
  return raw;
}

function settingKeyOf(error: ErrorObject): keyof GuardConfig | undefined {
  const key = error.instancePath.split('/')[1];
  return key && key in SETTINGS ? (key as keyof GuardConfig) : undefined;
}

function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}
