// The Pods rules (docs/rules.md#pod-rules): Dify pods never migrate by themselves and never carry
// database or Redis passwords as literals. Only Dify containers are treated; every other container
// is left exactly as sent. Pure: raw pod JSON in, JSON Patch, warnings and the changed names out.
import jsonPatch from 'fast-json-patch';
import { ENV, SECRET_KEYS, contract } from '../contract.js';
import { chartComponentOf, containerRole, envNamesOf, runsDify, type ContainerRole } from './dify-containers.js';
import { podWarnings, type RefFix } from './messages.js';
import { asObject, nonEmptyString, stringMapOf } from './raw-json.js';
import { releaseNames, type GuardSettings } from './settings.js';
import type { JsonObject, MutationResult, PatchOperation, PodChange } from './types.js';

const CREDENTIALS = contract.credentialSettings;
const ANNOTATIONS = contract.annotations;
const [PRIMARY_DB_PASSWORD = ENV.dbPassword] = CREDENTIALS.postgresqlPasswords;
const [PRIMARY_REDIS_PASSWORD = ENV.redisPassword] = CREDENTIALS.redisPasswords;
const REDIS_PASSWORD_SETTINGS: ReadonlySet<string> = new Set(CREDENTIALS.redisPasswords);
const REDIS_URL_SETTINGS: ReadonlySet<string> = new Set(CREDENTIALS.redisUrls);

interface SecretRef {
  name: string;
  key: string;
}

/** What a Dify pod's containers must end up with; a Secret only where the release's Secret is known. */
interface PodPlan {
  forceMigrationDisabled: boolean;
  postgresql?: SecretRef;
  /** Set only when Redis auth is on for this pod and its Secret is known. */
  redis?: SecretRef;
  /** This chart's pods only: the release's Redis endpoint, added when absent. */
  redisEndpoint?: { host: string; port: string };
  warnings: string[];
}

interface Container {
  /** `container api` or `init container wait-for-db`, for warnings. */
  where: string;
  name: string;
  spec: JsonObject;
  /** `app` containers get absent settings added; `declared` ones only corrections. */
  role: Exclude<ContainerRole, 'other'>;
}

/** What treating one container did: the warnings and the env names it changed. */
interface Treated {
  warnings: string[];
  variables: Set<string>;
  /** The env names the container declared before treatment: settings it lacks need no pass over the env. */
  declared: ReadonlySet<string>;
}

/** The `$(REDIS_PASSWORD)` reference that Kubernetes expands from an earlier env entry. */
export const REDIS_PASSWORD_REFERENCE = `$(${ENV.redisPassword})`;

export function mutatePod(pod: JsonObject, settings: GuardSettings): MutationResult {
  const plan = podPlanOf(pod, settings);
  if (!plan) return { patch: [], warnings: [], changes: [] };
  // Copy on write: only the container lists, containers and env arrays that mutation edits are copied;
  // everything else stays shared with `pod` (never modified), so compare() skips it by identity.
  const mutated = withWritableContainers(pod);
  const containers = difyContainersOf(mutated, settings);
  if (containers.length === 0) return { patch: [], warnings: plan.warnings, changes: [] };
  if (plan.redis && !containers.some((c) => redisAuthDeclared(envOf(c.spec) ?? []))) delete plan.redis;
  const warnings = [...plan.warnings];
  const changes: PodChange[] = [];
  for (const container of containers) {
    const treated = treatContainer(container, plan);
    for (const w of treated.warnings) if (!warnings.includes(w)) warnings.push(w);
    if (treated.variables.size > 0) changes.push({ container: container.name, variables: [...treated.variables] });
  }
  // Every change warning comes from an actual edit of `mutated`, so an empty patch has none of those.
  return { patch: jsonPatch.compare(pod, mutated) as PatchOperation[], warnings, changes };
}

/** The plan for a Dify pod; undefined for any other pod (and for this chart's pods the rules leave alone). */
function podPlanOf(pod: JsonObject, settings: GuardSettings): PodPlan | undefined {
  const component = chartComponentOf(pod);
  const annotations = stringMapOf(pod, 'annotations');
  const annotated = {
    postgresql: annotatedRef(
      annotations,
      ANNOTATIONS.postgresqlSecretName,
      ANNOTATIONS.postgresqlSecretKey,
      SECRET_KEYS.postgresPassword,
    ),
    redis: annotatedRef(annotations, ANNOTATIONS.redisSecretName, ANNOTATIONS.redisSecretKey, settings.redisSecretKey),
  };
  if (component === undefined) {
    // A Dify of another chart: held to MIGRATION_ENABLED=false; credentials only where the pod names its Secrets.
    if (!runsDify(pod, settings)) return undefined;
    return { forceMigrationDisabled: true, ...withDefined(annotated), warnings: [] };
  }
  const forceMigrationDisabled = settings.forceMigrationDisabled.includes(component);
  if (!settings.injectCredentials.includes(component))
    return forceMigrationDisabled ? { forceMigrationDisabled, warnings: [] } : undefined;
  const release = stringMapOf(pod, 'labels')[contract.labels.instance];
  if (typeof release !== 'string' || release === '') {
    return { forceMigrationDisabled, ...withDefined(annotated), warnings: [podWarnings.noRelease(component)] };
  }
  const names = releaseNames(settings, release);
  return {
    forceMigrationDisabled,
    postgresql: annotated.postgresql ?? { name: names.postgresqlSecret, key: SECRET_KEYS.postgresPassword },
    redis: annotated.redis ?? { name: names.redisSecret, key: settings.redisSecretKey },
    redisEndpoint: { host: names.redisHost, port: String(settings.redisPort) },
    warnings: [],
  };
}

/** The Secret a pod names through an annotation (the key annotation is optional). */
function annotatedRef(
  annotations: Record<string, unknown>,
  nameKey: string,
  keyKey: string,
  defaultKey: string,
): SecretRef | undefined {
  const name = nonEmptyString(annotations[nameKey]);
  return name ? { name, key: nonEmptyString(annotations[keyKey]) ?? defaultKey } : undefined;
}

function withDefined(refs: { postgresql: SecretRef | undefined; redis: SecretRef | undefined }): Partial<PodPlan> {
  return { ...(refs.postgresql ? { postgresql: refs.postgresql } : {}), ...(refs.redis ? { redis: refs.redis } : {}) };
}

/** Brings one Dify container's env to the plan; returns the warnings and the names it changed. */
function treatContainer(container: Container, plan: PodPlan): Treated {
  const { spec } = container;
  const env = editableEnvOf(spec);
  if (!env) return { warnings: [], variables: new Set(), declared: new Set() };
  const treated: Treated = { warnings: [], variables: new Set(), declared: new Set(envNamesOf(spec)) };
  treatMigration(env, container, plan, treated);
  treatPostgresqlPasswords(env, container, plan, treated);
  treatRedisPasswords(env, container, plan, treated);
  if (plan.redisEndpoint && container.role === 'app') addRedisEndpoint(env, container, plan.redisEndpoint, treated);
  if (env.length > 0 && !Array.isArray(spec.env)) spec.env = env;
  return treated;
}

/**
 * The env list to edit: the container's own, or a new one (kept only if something is added). `env: null` is a
 * container with no env; anything else that is not a list is invalid and left to the API server (undefined).
 */
function editableEnvOf(spec: JsonObject): unknown[] | undefined {
  const existing = spec.env;
  if (existing === undefined || existing === null) return [];
  return Array.isArray(existing) ? existing : undefined;
}

function treatMigration(env: unknown[], container: Container, plan: PodPlan, treated: Treated): void {
  if (!plan.forceMigrationDisabled || !forceMigrationDisabled(env, container.role === 'app')) return;
  treated.warnings.push(podWarnings.migrationForced(container.where));
  treated.variables.add(ENV.migrationEnabled);
}

function treatPostgresqlPasswords(env: unknown[], container: Container, plan: PodPlan, treated: Treated): void {
  const ref = plan.postgresql;
  for (const name of CREDENTIALS.postgresqlPasswords) {
    const addAbsent = container.role === 'app' && name === PRIMARY_DB_PASSWORD;
    if (!treated.declared.has(name) && !(ref && addAbsent)) continue;
    if (!ref) {
      if (hasLiteral(env, name))
        treated.warnings.push(podWarnings.secretUnknown(container.where, name, ANNOTATIONS.postgresqlSecretName));
      continue;
    }
    for (const fix of enforceSecretRef(env, name, ref, addAbsent)) {
      treated.warnings.push(podWarnings.secretRef(container.where, name, fix, ref.name, ref.key));
      treated.variables.add(name);
    }
  }
}

function treatRedisPasswords(env: unknown[], container: Container, plan: PodPlan, treated: Treated): void {
  const ref = plan.redis;
  if (!ref) {
    warnUnknownRedisSecret(env, container, treated);
    return;
  }
  const urlRewritten = rewriteRedisUrls(env, container, treated);
  const fixes = enforceRedisPasswordRefs(env, container, ref, urlRewritten, treated);
  const movedBefore = defineRedisPasswordFirst(env);
  if (movedBefore === undefined) return;
  treated.variables.add(ENV.redisPassword);
  if (!fixes.has('added')) treated.warnings.push(podWarnings.redisPasswordMoved(container.where, movedBefore));
}

/** Points each Redis password setting at the Secret; returns the kinds of fix made to REDIS_PASSWORD itself. */
function enforceRedisPasswordRefs(
  env: unknown[],
  container: Container,
  ref: SecretRef,
  urlRewritten: boolean,
  treated: Treated,
): Set<RefFix> {
  const fixes = new Set<RefFix>();
  for (const name of CREDENTIALS.redisPasswords) {
    // A rewritten URL now needs $(REDIS_PASSWORD): that container uses Redis, even an init container.
    const addAbsent = name === PRIMARY_REDIS_PASSWORD && (container.role === 'app' || urlRewritten);
    if (!addAbsent && !treated.declared.has(name)) continue;
    for (const fix of enforceSecretRef(env, name, ref, addAbsent)) {
      if (name === PRIMARY_REDIS_PASSWORD) fixes.add(fix);
      treated.warnings.push(podWarnings.secretRef(container.where, name, fix, ref.name, ref.key));
      treated.variables.add(name);
    }
  }
  return fixes;
}

/** Rewrites every literal password in a Redis URL setting to $(REDIS_PASSWORD); true when one was. */
function rewriteRedisUrls(env: unknown[], container: Container, treated: Treated): boolean {
  if (!CREDENTIALS.redisUrls.some((name) => treated.declared.has(name))) return false;
  let rewrittenAny = false;
  env.forEach((entry, index) => {
    if (!isEnvEntry(entry) || !REDIS_URL_SETTINGS.has(entry.name) || typeof entry.value !== 'string') return;
    const rewritten = rewriteBrokerUrl(entry.value);
    if (rewritten === entry.value) return;
    env[index] = { ...entry, value: rewritten };
    rewrittenAny = true;
    treated.warnings.push(podWarnings.brokerPassword(container.where, entry.name));
    treated.variables.add(entry.name);
  });
  return rewrittenAny;
}

/** The Redis Secret is unknown: each literal Redis password is left, with a warning naming the annotation. */
function warnUnknownRedisSecret(env: unknown[], container: Container, treated: Treated): void {
  const literal = new Set<string>();
  for (const entry of env) {
    if (!isEnvEntry(entry) || typeof entry.value !== 'string' || entry.value === '') continue;
    if (REDIS_PASSWORD_SETTINGS.has(entry.name)) literal.add(entry.name);
    else if (REDIS_URL_SETTINGS.has(entry.name) && brokerUrlHasLiteralPassword(entry.value)) literal.add(entry.name);
  }
  for (const name of literal)
    treated.warnings.push(podWarnings.secretUnknown(container.where, name, ANNOTATIONS.redisSecretName));
}

/** REDIS_HOST/PORT from envFrom would be overridden by an explicit entry, so only a plain env gets them. */
function addRedisEndpoint(
  env: unknown[],
  container: Container,
  endpoint: { host: string; port: string },
  treated: Treated,
): void {
  const envFrom = container.spec.envFrom;
  if (Array.isArray(envFrom) && envFrom.length > 0) return;
  const added: string[] = [];
  for (const [name, value] of [
    [ENV.redisHost, endpoint.host],
    [ENV.redisPort, endpoint.port],
  ] as const) {
    if (env.some((entry) => isEntryNamed(entry, name))) continue;
    env.push({ name, value });
    added.push(name);
    treated.variables.add(name);
  }
  if (added.length > 0) treated.warnings.push(podWarnings.redisEndpointAdded(container.where, added));
}

/** An entry `name` holding a non-empty literal value. */
function hasLiteral(env: unknown[], name: string): boolean {
  return env.some((entry) => isEntryNamed(entry, name) && typeof entry.value === 'string' && entry.value !== '');
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
    (entry) =>
      isEnvEntry(entry) &&
      entry.name !== ENV.redisPassword &&
      typeof entry.value === 'string' &&
      entry.value.includes(REDIS_PASSWORD_REFERENCE),
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

/** True when a Redis URL (or sentinel list) embeds a literal password (not $(REDIS_PASSWORD)). */
export function brokerUrlHasLiteralPassword(url: string): boolean {
  return rewriteBrokerUrl(url) !== url;
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

/** Redis auth is on for a container that declares a Redis password or puts one in a Redis URL. */
function redisAuthDeclared(env: unknown[]): boolean {
  return env.some((entry) => {
    if (!isEnvEntry(entry)) return false;
    // An empty literal is how manifests say "no password"; a reference to a missing Secret would stall the pod.
    if (REDIS_PASSWORD_SETTINGS.has(entry.name)) {
      return entry.valueFrom !== undefined || (typeof entry.value === 'string' && entry.value !== '');
    }
    return REDIS_URL_SETTINGS.has(entry.name) && typeof entry.value === 'string' && brokerUrlHasPassword(entry.value);
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

/** The Dify containers of a pod (init containers first, as they run), each with its role. */
function difyContainersOf(pod: JsonObject, settings: GuardSettings): Container[] {
  const spec = asObject(pod.spec);
  if (!spec) return [];
  const list = (field: string, kind: string, isInit: boolean): Container[] => {
    const items = spec[field];
    if (!Array.isArray(items)) return [];
    return items.flatMap((item: unknown) => {
      const container = asObject(item);
      if (!container) return [];
      const role = containerRole(container, isInit, settings);
      if (role === 'other') return [];
      const name = typeof container.name === 'string' ? container.name : '?';
      return [{ where: `${kind} ${name}`, name, spec: container, role }];
    });
  };
  return [...list('initContainers', 'init container', true), ...list('containers', 'container', false)];
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
