// The rules of docs/rules.md#pod-rules: Dify pods never migrate by themselves and never carry database or
// Redis passwords as literals. Pure: raw pod JSON in, JSON Patch and warnings out.
import jsonPatch from 'fast-json-patch';
import { ENV, LABELS, SECRET_KEYS, contract } from '../contract.js';
import { podWarnings, type RefFix } from './messages.js';
import { asObject, nonEmptyString, stringMapOf } from './raw-json.js';
import { releaseNames, type GuardSettings } from './settings.js';
import type { JsonObject, MutationResult, PatchOperation } from './types.js';

interface SecretRef {
  name: string;
  key: string;
}

/** What a matched pod must end up with; credentials only when its release is known. */
interface PodPlan {
  forceMigrationDisabled: boolean;
  credentials?: {
    dbPassword: SecretRef;
    /** Set only when Redis auth is on for this pod. */
    redisPassword?: SecretRef;
    redisHost: string;
    redisPort: string;
  };
}

interface Container {
  /** `container api` or `init container wait-for-db`, for warnings. */
  where: string;
  spec: JsonObject;
  /** True for spec.containers, the only ones that get absent vars added. */
  isApp: boolean;
}

/** The `$(REDIS_PASSWORD)` reference that Kubernetes expands from an earlier env entry. */
export const REDIS_PASSWORD_REFERENCE = `$(${ENV.redisPassword})`;

export function mutatePod(pod: JsonObject, settings: GuardSettings): MutationResult {
  const labels = stringMapOf(pod, 'labels');
  if (labels[LABELS.name] !== contract.values.difyName) return { patch: [], warnings: [] };
  const component = labels[LABELS.component];
  if (typeof component !== 'string') return { patch: [], warnings: [] };
  const forceMigrationDisabled = settings.forceMigrationDisabled.includes(component);
  const injectCredentials = settings.injectCredentials.includes(component);
  if (!forceMigrationDisabled && !injectCredentials) return { patch: [], warnings: [] };

  // Copy on write: only the container lists, containers and env arrays that mutation edits are copied;
  // everything else stays shared with `pod` (never modified), so compare() skips it by identity.
  const mutated = withWritableContainers(pod);
  const containers = containersOf(mutated);
  const warnings: string[] = [];
  const plan: PodPlan = { forceMigrationDisabled };
  const release = labels[LABELS.instance];
  if (injectCredentials) {
    if (typeof release !== 'string' || release === '') {
      warnings.push(podWarnings.noRelease(component));
    } else {
      const names = releaseNames(settings, release);
      const annotations = stringMapOf(pod, 'annotations');
      plan.credentials = {
        dbPassword: { name: names.postgresqlSecret, key: SECRET_KEYS.postgresPassword },
        redisHost: names.redisHost,
        redisPort: String(settings.redisPort),
      };
      if (containers.some((c) => redisAuthDeclared(envOf(c.spec) ?? []))) {
        plan.credentials.redisPassword = {
          name: nonEmptyString(annotations[contract.annotations.redisSecretName]) ?? names.redisSecret,
          key: nonEmptyString(annotations[contract.annotations.redisSecretKey]) ?? settings.redisSecretKey,
        };
      }
    }
  }

  for (const container of containers) {
    for (const w of treatContainer(container, plan)) if (!warnings.includes(w)) warnings.push(w);
  }
  // Every change warning comes from an actual edit of `mutated`, so an empty patch has none.
  return { patch: jsonPatch.compare(pod, mutated) as PatchOperation[], warnings };
}

/** Brings one container's env to the plan; returns the warnings for what it changed. */
function treatContainer(container: Container, plan: PodPlan): string[] {
  const { spec, where, isApp } = container;
  const existing = spec.env;
  if (existing !== undefined && !Array.isArray(existing)) return []; // not a valid pod; the API server will say so
  const env: unknown[] = existing ?? [];
  const warnings: string[] = [];
  // Least privilege: init containers (e.g. a pg_isready wait) never asked for credentials, so they only get corrections.
  const addAbsent = isApp;

  if (plan.forceMigrationDisabled && forceMigrationDisabled(env, addAbsent)) warnings.push(podWarnings.migrationForced(where));

  const credentials = plan.credentials;
  if (credentials) {
    const dbFixes = enforceSecretRef(env, ENV.dbPassword, credentials.dbPassword, addAbsent);
    for (const fix of dbFixes) {
      warnings.push(podWarnings.secretRef(where, ENV.dbPassword, fix, credentials.dbPassword.name, credentials.dbPassword.key));
    }
    const redisPassword = credentials.redisPassword;
    if (redisPassword) {
      let brokerRewritten = false;
      for (const [index, entry] of env.entries()) {
        if (!isEntryNamed(entry, ENV.celeryBrokerUrl) || typeof entry.value !== 'string') continue;
        const rewritten = rewriteBrokerUrl(entry.value);
        if (rewritten === entry.value) continue;
        env[index] = { ...entry, value: rewritten };
        brokerRewritten = true;
        warnings.push(podWarnings.brokerPassword(where, ENV.celeryBrokerUrl));
      }
      // A rewritten URL now needs $(REDIS_PASSWORD): that container uses Redis, even an init container.
      const redisFixes = enforceSecretRef(env, ENV.redisPassword, redisPassword, addAbsent || brokerRewritten);
      for (const fix of redisFixes) {
        warnings.push(podWarnings.secretRef(where, ENV.redisPassword, fix, redisPassword.name, redisPassword.key));
      }
      const movedBefore = defineRedisPasswordFirst(env);
      if (movedBefore !== undefined && !redisFixes.includes('added')) {
        warnings.push(podWarnings.redisPasswordMoved(where, movedBefore));
      }
    }
    // A REDIS_HOST/PORT from envFrom would be overridden by an explicit entry, so only a plain env gets them.
    if (addAbsent && (!Array.isArray(spec.envFrom) || spec.envFrom.length === 0)) {
      const added: string[] = [];
      for (const [name, value] of [[ENV.redisHost, credentials.redisHost], [ENV.redisPort, credentials.redisPort]] as const) {
        if (env.some((entry) => isEntryNamed(entry, name))) continue;
        env.push({ name, value });
        added.push(name);
      }
      if (added.length > 0) warnings.push(podWarnings.redisEndpointAdded(where, added));
    }
  }

  if (existing === undefined && env.length > 0) spec.env = env;
  return warnings;
}

/** MIGRATION_ENABLED="false" on every entry, added when absent if `addAbsent` (it beats envFrom); true when changed. */
function forceMigrationDisabled(env: unknown[], addAbsent: boolean): boolean {
  let changed = false;
  let found = false;
  env.forEach((entry, index) => {
    if (!isEntryNamed(entry, ENV.migrationEnabled)) return;
    found = true;
    if (entry.value === 'false' && entry.valueFrom === undefined) return;
    const { valueFrom: _dropped, ...rest } = entry;
    env[index] = { ...rest, value: 'false' };
    changed = true;
  });
  if (found || !addAbsent) return changed;
  env.push({ name: ENV.migrationEnabled, value: 'false' });
  return true;
}

/** Points every entry called `name` at `ref` (adding one when absent and `addAbsent`); returns the kinds of fix made. */
function enforceSecretRef(env: unknown[], name: string, ref: SecretRef, addAbsent: boolean): RefFix[] {
  const fixes = new Set<RefFix>();
  let found = false;
  env.forEach((entry, index) => {
    if (!isEntryNamed(entry, name)) return;
    found = true;
    if (isSecretRefTo(entry, ref)) return;
    fixes.add(entry.valueFrom === undefined ? 'literal' : 'redirected');
    env[index] = secretRefEntry(name, ref);
  });
  if (!found && addAbsent) {
    env.push(secretRefEntry(name, ref));
    fixes.add('added');
  }
  return [...fixes];
}

function secretRefEntry(name: string, ref: SecretRef): JsonObject {
  return { name, valueFrom: { secretKeyRef: { name: ref.name, key: ref.key } } };
}

function isSecretRefTo(entry: JsonObject, ref: SecretRef): boolean {
  if (entry.value !== undefined && entry.value !== '') return false;
  const valueFrom = asObject(entry.valueFrom);
  if (!valueFrom || Object.keys(valueFrom).some((kind) => kind !== 'secretKeyRef')) return false;
  const secretKeyRef = asObject(valueFrom.secretKeyRef);
  return secretKeyRef?.name === ref.name && secretKeyRef.key === ref.key && secretKeyRef.optional !== true;
}

/**
 * Kubernetes expands $(REDIS_PASSWORD) only from entries defined earlier: moves the first
 * REDIS_PASSWORD right before the first entry using it. Returns that entry's name when it moved.
 */
function defineRedisPasswordFirst(env: unknown[]): string | undefined {
  const firstUser = env.findIndex(
    (entry) => isEnvEntry(entry) && entry.name !== ENV.redisPassword &&
      typeof entry.value === 'string' && entry.value.includes(REDIS_PASSWORD_REFERENCE),
  );
  const definition = env.findIndex((entry) => isEntryNamed(entry, ENV.redisPassword));
  if (firstUser < 0 || definition < 0 || definition < firstUser) return undefined;
  const [moved] = env.splice(definition, 1);
  env.splice(firstUser, 0, moved);
  const user = env[firstUser + 1];
  return isEnvEntry(user) ? user.name : undefined;
}

// ---- Redis URLs ----------------------------------------------------------------------------------

const REDIS_SCHEMES = new Set(['redis', 'rediss', 'sentinel', 'sentinels']);
const URL_START = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([\s\S]*)$/;
// Sentinel broker URLs list several URLs joined by ';' (a ';' inside a password is left in place).
const URL_SEPARATOR = /;(?=[A-Za-z][A-Za-z0-9+.-]*:\/\/)/;

interface RedisUrlParts {
  scheme: string;
  user: string;
  password: string;
  hostAndRest: string;
}

/** The parts of one Redis URL (not sentinel lists); undefined when it is not a Redis URL. */
function parseRedisUrl(url: string): RedisUrlParts | undefined {
  const match = URL_START.exec(url);
  if (!match) return undefined;
  const [, scheme = '', rest = ''] = match;
  if (!REDIS_SCHEMES.has(scheme.toLowerCase())) return undefined;
  // Host, port and path never hold '@'; a password may, so the last '@' ends the user info.
  const at = rest.lastIndexOf('@');
  const userInfo = at < 0 ? '' : rest.slice(0, at);
  const colon = userInfo.indexOf(':');
  return {
    scheme,
    user: colon < 0 ? userInfo : userInfo.slice(0, colon),
    password: colon < 0 ? '' : userInfo.slice(colon + 1),
    hostAndRest: at < 0 ? rest : rest.slice(at + 1),
  };
}

/** True when a Redis broker URL (or sentinel list) carries a password, literal or $(REDIS_PASSWORD). */
export function brokerUrlHasPassword(url: string): boolean {
  return url.split(URL_SEPARATOR).some((part) => (parseRedisUrl(part)?.password ?? '') !== '');
}

/** The URL with every literal password replaced by $(REDIS_PASSWORD); the same string when none. */
export function rewriteBrokerUrl(url: string): string {
  return url
    .split(URL_SEPARATOR)
    .map((part) => {
      const parts = parseRedisUrl(part);
      if (!parts || parts.password === '' || parts.password === REDIS_PASSWORD_REFERENCE) return part;
      return `${parts.scheme}://${parts.user}:${REDIS_PASSWORD_REFERENCE}@${parts.hostAndRest}`;
    })
    .join(';');
}

/** Redis auth is on for a pod that declares a REDIS_PASSWORD or puts a password in its broker URL. */
function redisAuthDeclared(env: unknown[]): boolean {
  return env.some((entry) => {
    if (isEntryNamed(entry, ENV.redisPassword)) {
      // An empty literal is how manifests say "no password"; a reference to a missing Secret would stall the pod.
      return entry.valueFrom !== undefined || (typeof entry.value === 'string' && entry.value !== '');
    }
    return isEntryNamed(entry, ENV.celeryBrokerUrl) && typeof entry.value === 'string' && brokerUrlHasPassword(entry.value);
  });
}

// ---- raw JSON access -----------------------------------------------------------------------------

/** A shallow copy of `pod` down to each container's env array: the only parts mutation writes. */
function withWritableContainers(pod: JsonObject): JsonObject {
  const spec = asObject(pod.spec);
  if (!spec) return pod;
  const specCopy: JsonObject = { ...spec };
  for (const field of ['initContainers', 'containers']) {
    const items = spec[field];
    if (!Array.isArray(items)) continue;
    specCopy[field] = items.map((item: unknown) => {
      const container = asObject(item);
      if (!container) return item;
      return Array.isArray(container.env) ? { ...container, env: [...(container.env as unknown[])] } : { ...container };
    });
  }
  return { ...pod, spec: specCopy };
}

function containersOf(pod: JsonObject): Container[] {
  const spec = asObject(pod.spec);
  if (!spec) return [];
  const list = (field: string, kind: string, isApp: boolean): Container[] => {
    const items = spec[field];
    if (!Array.isArray(items)) return [];
    return items.flatMap((item: unknown) => {
      const container = asObject(item);
      if (!container) return [];
      const name = typeof container.name === 'string' ? container.name : '?';
      return [{ where: `${kind} ${name}`, spec: container, isApp }];
    });
  };
  return [...list('initContainers', 'init container', false), ...list('containers', 'container', true)];
}

function envOf(container: JsonObject): unknown[] | undefined {
  return Array.isArray(container.env) ? (container.env as unknown[]) : undefined;
}

function isEnvEntry(entry: unknown): entry is JsonObject & { name: string } {
  return asObject(entry) !== undefined && typeof (entry as JsonObject).name === 'string';
}

function isEntryNamed(entry: unknown, name: string): entry is JsonObject & { name: string } {
  return isEnvEntry(entry) && entry.name === name;
}
