// Property tests: for arbitrary pods and env lists, the mutation is idempotent, leaves every env
// var it does not own exactly as it was (same relative order), yields a valid, usable env, and adds
// nothing to init containers beyond the REDIS_PASSWORD a rewritten broker URL needs; and it never
// modifies its input (the pod shares everything it does not edit with the patched copy) nor lets the
// patch share an object with it.
import { isDeepStrictEqual } from 'node:util';
import t from 'tap';
import fc from 'fast-check';
import { ENV, LABELS, SECRET_KEYS, contract } from '../../src/contract.js';
import { mutatePod, REDIS_PASSWORD_REFERENCE } from '../../src/admission/pod-mutation.js';
import { MAX_WARNING_LENGTH } from '../../src/admission/messages.js';
import { defaultGuardSettings, releaseNames } from '../../src/admission/settings.js';
import type { JsonObject } from '../../src/admission/types.js';
import { fixtureNames, loadObject, mutateAndApply, type EnvEntry } from '../../harness/fixtures.js';

const settings = defaultGuardSettings;
const CRED = contract.credentialSettings;
const OWNED = [
  ...new Set<string>([...Object.values(ENV), ...CRED.postgresqlPasswords, ...CRED.redisPasswords, ...CRED.redisUrls]),
];
const REDIS_OWNED = new Set<string>([...CRED.redisPasswords, ...CRED.redisUrls]);
const DIFY_IMAGE = 'langgenius/dify-api:1.11.4';
const SIDECAR_IMAGE = 'fluent/fluent-bit:3.2.4';
const NUM_RUNS = 400;

const secretKeyRef = fc.record(
  {
    name: fc.constantFrom('dify-postgresql', 'dify-redis', 'other', 'rel-postgresql', 'corp-redis'),
    key: fc.constantFrom(SECRET_KEYS.postgresPassword, SECRET_KEYS.password, SECRET_KEYS.redisPassword, 'auth'),
    optional: fc.boolean(),
  },
  { requiredKeys: ['name', 'key'] },
);
const valueFrom: fc.Arbitrary<JsonObject> = fc.oneof(
  secretKeyRef.map((ref) => ({ secretKeyRef: ref })),
  fc.constant({ configMapKeyRef: { name: 'cm', key: 'k' } }),
  fc.constant({ fieldRef: { fieldPath: 'metadata.name' } }),
);
const password = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.constant(REDIS_PASSWORD_REFERENCE),
  fc.constant('p@ss:w/rd'),
);
const redisUrl = fc
  .tuple(
    fc.constantFrom('redis', 'rediss', 'sentinel', 'amqp'),
    fc.constantFrom('', 'default', 'user'),
    fc.option(password),
    fc.constantFrom('h', 'dify-redis-master:6379/1'),
  )
  .map(
    ([scheme, user, pw, host]) =>
      `${scheme}://${user}${pw === null ? '' : `:${pw}`}${user || pw !== null ? '@' : ''}${host}`,
  );
const envValue = fc.oneof(
  fc.string({ maxLength: 16 }),
  fc.constantFrom('true', 'false', '', '6379'),
  redisUrl,
  fc.tuple(redisUrl, redisUrl).map(([a, b]) => `${a};${b}`),
  fc.constant(`prefix-${REDIS_PASSWORD_REFERENCE}-suffix`),
);
const envName = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...OWNED) },
  { weight: 2, arbitrary: fc.constantFrom('DB_DATABASE', 'MODE', 'REDIS_DB', 'REDIS_USERNAME', 'CELERY_BACKEND') },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Z][A-Z0-9_]{0,8}$/) },
);
const envEntry: fc.Arbitrary<EnvEntry> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ name: envName, value: envValue }) },
  { weight: 2, arbitrary: fc.record({ name: envName, valueFrom }) },
  { weight: 1, arbitrary: fc.record({ name: envName, value: fc.constant(''), valueFrom }) },
  { weight: 1, arbitrary: fc.record({ name: envName }) },
);
const container = (prefix: string): fc.Arbitrary<JsonObject> =>
  fc.record(
    {
      name: fc.constantFrom(`${prefix}a`, `${prefix}b`),
      image: fc.constantFrom(DIFY_IMAGE, DIFY_IMAGE, SIDECAR_IMAGE),
      // `env: null` (some clients send it) counts as no env.
      env: fc.oneof(
        { weight: 6, arbitrary: fc.array(envEntry, { maxLength: 10 }) },
        { weight: 1, arbitrary: fc.constant(null) },
      ),
      envFrom: fc.constant([{ configMapRef: { name: 'shared-env' } }]),
    },
    { requiredKeys: ['name', 'image'] },
  );
const pod: fc.Arbitrary<JsonObject> = fc
  .record({
    name: fc.constantFrom(contract.values.difyName, contract.values.difyName, 'other'),
    component: fc.constantFrom(...Object.values(contract.components)),
    instance: fc.option(fc.constantFrom('dify', 'prod', ''), { nil: undefined }),
    annotations: fc.option(
      fc.constant({
        [contract.annotations.redisSecretName]: 'corp-redis',
        [contract.annotations.redisSecretKey]: 'auth',
      }),
      { nil: undefined },
    ),
    containers: fc.array(container('c'), { minLength: 1, maxLength: 3 }),
    initContainers: fc.option(fc.array(container('i'), { maxLength: 2 }), { nil: undefined }),
  })
  .map(({ name, component, instance, annotations, containers, initContainers }) => {
    const labels: Record<string, string> = { [LABELS.name]: name, [LABELS.component]: component };
    if (instance !== undefined) labels[LABELS.instance] = instance;
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { generateName: 'p-', namespace: 'dify', labels, ...(annotations ? { annotations } : {}) },
      spec: { containers, ...(initContainers ? { initContainers } : {}) },
    };
  });

interface PodFacts {
  forced: boolean;
  injects: boolean;
  /** A Dify pod of another chart (or of no release) that names its Redis Secret: only the Redis settings are its. */
  redisOnly: boolean;
  release?: string;
}
function factsOf(p: JsonObject): PodFacts {
  const metadata = p.metadata as JsonObject;
  const { chart, component, release } = chartLabelsOf(metadata.labels as Record<string, string>);
  // Another chart's pod is a Dify pod when it runs a Dify image (the generator never writes a Dify-only setting).
  const foreignDify = !chart && allContainers(p).some((c) => c.image === DIFY_IMAGE);
  const chartInjects = chart && settings.injectCredentials.includes(component);
  return {
    forced: (chart && settings.forceMigrationDisabled.includes(component)) || foreignDify,
    injects: chartInjects && !!release,
    // Without a release, only the Secrets the pod's annotations name are known.
    redisOnly: (foreignDify || (chartInjects && !release)) && metadata.annotations !== undefined,
    ...(release ? { release } : {}),
  };
}
function chartLabelsOf(labels: Record<string, string>): { chart: boolean; component: string; release?: string } {
  return {
    chart: labels[LABELS.name] === contract.values.difyName,
    component: labels[LABELS.component] ?? '',
    release: labels[LABELS.instance],
  };
}
/** A container the rules may touch: a Dify image, or one that declares a setting they own. */
const isDifyContainer = (c: JsonObject): boolean =>
  c.image === DIFY_IMAGE || envList(c).some((e) => OWNED.includes(e.name));
const initContainers = (p: JsonObject): JsonObject[] =>
  ((p.spec as JsonObject).initContainers as JsonObject[] | undefined) ?? [];
const allContainers = (p: JsonObject): JsonObject[] => [
  ...initContainers(p),
  ...((p.spec as JsonObject).containers as JsonObject[]),
];
/** Whether each of allContainers(p) is an app container (spec.containers), the only kind that gets absent vars added. */
const isAppFlags = (p: JsonObject): boolean[] =>
  allContainers(p).map((c, i) => i >= initContainers(p).length && c.image === DIFY_IMAGE);
const envList = (c: JsonObject): EnvEntry[] => (c.env as EnvEntry[] | undefined) ?? [];

t.test('idempotent: applying the patch then mutating again yields an empty patch', async (t) => {
  fc.assert(
    fc.property(pod, (p) => {
      const { after } = mutateAndApply(p, settings);
      const second = mutatePod(after, settings);
      if (second.patch.length !== 0) throw new Error(`second pass patched: ${JSON.stringify(second.patch)}`);
    }),
    { numRuns: NUM_RUNS },
  );
  t.pass('held for every generated pod');
});

t.test('env vars it does not own stay exactly as they were, in the same relative order', async (t) => {
  fc.assert(
    fc.property(pod, (p) => {
      const before = structuredClone(p);
      const { after } = mutateAndApply(p, settings);
      const facts = factsOf(p);
      const owned = new Set<string>([
        ...(facts.forced ? [ENV.migrationEnabled] : []),
        ...(facts.injects ? OWNED : []),
        ...(facts.redisOnly ? REDIS_OWNED : []),
      ]);
      if (owned.size === 0) {
        if (!isDeepStrictEqual(after, before)) throw new Error('a pod with no rule changed');
        return;
      }
      allContainers(before).forEach((c, i) => {
        // JSON round trip: fast-check may build null-prototype objects; content is what counts.
        if (!isDifyContainer(c) && JSON.stringify(allContainers(after)[i]) !== JSON.stringify(c))
          throw new Error(`sidecar ${i} changed`);
        const kept = (env: EnvEntry[]): EnvEntry[] => env.filter((e) => !owned.has(e.name));
        const afterContainer = allContainers(after)[i] as JsonObject;
        if (!isDeepStrictEqual(kept(envList(afterContainer)), kept(envList(c))))
          throw new Error(`container ${i}: foreign env changed`);
        const { env: _a, ...restAfter } = afterContainer;
        const { env: _b, ...restBefore } = c;
        if (!isDeepStrictEqual(restAfter, restBefore)) throw new Error(`container ${i}: something besides env changed`);
      });
    }),
    { numRuns: NUM_RUNS },
  );
  t.pass('held for every generated pod');
});

t.test('the patched pod is valid: owned vars as required, REDIS_PASSWORD defined before its users', async (t) => {
  fc.assert(
    fc.property(pod, (p) => {
      const { result, after } = mutateAndApply(p, settings); // applyPatch validates each operation
      for (const w of result.warnings) if (w.length > MAX_WARNING_LENGTH) throw new Error(`warning too long: ${w}`);
      for (const op of result.patch) {
        if (!/^\/spec\/(initContainers|containers)\/\d+\/env(\/|$)/.test(op.path))
          throw new Error(`patch outside env: ${op.path}`);
      }
      const facts = factsOf(p);
      const isApp = isAppFlags(after);
      allContainers(after).forEach((c, i) => {
        if (!isDifyContainer(allContainers(p)[i] as JsonObject)) return;
        const env = envList(c);
        if (facts.forced) checkMigrationForced(env, isApp[i] === true);
        if (!facts.injects || !facts.release) return;
        checkDbPasswordRef(env, isApp[i] === true, releaseNames(settings, facts.release).postgresqlSecret);
        checkRedisPassword(env);
      });
    }),
    { numRuns: NUM_RUNS },
  );
  t.pass('held for every generated pod');
});

t.test(
  'init containers never gain a var, except REDIS_PASSWORD before a broker URL whose password it rewrote',
  async (t) => {
    const countNames = (env: EnvEntry[]): Map<string, number> => {
      const counts = new Map<string, number>();
      for (const e of env) counts.set(e.name, (counts.get(e.name) ?? 0) + 1);
      return counts;
    };
    fc.assert(
      fc.property(pod, (p) => {
        const { after } = mutateAndApply(p, settings);
        initContainers(p).forEach((c, i) => {
          const afterContainer = initContainers(after)[i] as JsonObject;
          if (!('env' in c)) {
            if ('env' in afterContainer) throw new Error(`init container ${i}: env field added`);
            return;
          }
          const ownsNothing = envList(c).every((e) => !(OWNED as string[]).includes(e.name));
          // fast-check may build null-prototype objects; the JSON round trip compares content only.
          if (ownsNothing && JSON.stringify(afterContainer) !== JSON.stringify(c))
            throw new Error(`init container ${i} owning nothing changed`);
          const before = countNames(envList(c));
          const gained = [...countNames(envList(afterContainer))]
            .filter(([name, n]) => n > (before.get(name) ?? 0))
            .map(([name]) => name);
          if (gained.length === 0) return;
          const brokers = (env: EnvEntry[]): string =>
            JSON.stringify(env.filter((e) => (CRED.redisUrls as string[]).includes(e.name)));
          const brokerRewritten = brokers(envList(afterContainer)) !== brokers(envList(c));
          if (gained.length > 1 || gained[0] !== ENV.redisPassword || !brokerRewritten) {
            throw new Error(`init container ${i} gained ${gained.join(', ')}`);
          }
        });
      }),
      { numRuns: NUM_RUNS },
    );
    t.pass('held for every generated pod');
  },
);

/** `value` with every object and array in it frozen: a write anywhere throws (ESM code is strict). */
function deepFrozen<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFrozen(child);
    Object.freeze(value);
  }
  return value;
}

/** Throws if any object in `value` is frozen, i.e. shared with a deep-frozen input. */
function assertOwnCopy(value: unknown): void {
  if (typeof value !== 'object' || value === null) return;
  const probe = value as Record<string, unknown>;
  probe.__ownCopy = true; // a write to a frozen object throws
  delete probe.__ownCopy;
  for (const child of Object.values(value)) assertOwnCopy(child);
}

t.test('never modifies its input: a deep-frozen pod gets the same result as an unfrozen copy', async (t) => {
  const podFixtures = fixtureNames().filter((n) => n.startsWith('pod-'));
  t.ok(podFixtures.includes('pod-api-literal'), 'the fixture that needs the most edits is among them');
  for (const name of podFixtures) {
    const expected = mutatePod(loadObject(name), settings);
    const frozen = deepFrozen(loadObject(name));
    const result = mutatePod(frozen, settings);
    t.strictSame(result, expected, name);
    t.doesNotThrow(
      () => result.patch.forEach((op) => assertOwnCopy(op.value)),
      `${name}: patch values share no object with the pod`,
    );
    t.strictSame(frozen, loadObject(name), `${name}: input as loaded`);
  }
  fc.assert(
    fc.property(pod, (p) => {
      // structuredClone gives plain prototypes (fast-check may build null-prototype objects).
      const before = structuredClone(p);
      const expected = mutatePod(structuredClone(p), settings);
      const frozen = deepFrozen(structuredClone(p));
      const result = mutatePod(frozen, settings); // throws on any write to the input
      if (!isDeepStrictEqual(result, expected)) throw new Error('a frozen input changed the result');
      for (const op of result.patch) assertOwnCopy(op.value);
      if (!isDeepStrictEqual(frozen, before)) throw new Error('the input changed');
    }),
    { numRuns: NUM_RUNS },
  );
});

const named = (env: EnvEntry[], name: string): EnvEntry[] => env.filter((e) => e.name === name);

/** MIGRATION_ENABLED is "false" on every entry, and present in an app container. */
function checkMigrationForced(env: EnvEntry[], isApp: boolean): void {
  const migration = named(env, ENV.migrationEnabled);
  if ((isApp && migration.length === 0) || migration.some((e) => e.value !== 'false' || e.valueFrom !== undefined)) {
    throw new Error('MIGRATION_ENABLED not forced');
  }
}

/** Every DB_PASSWORD refers to the release's Secret (one is present in an app container). */
function checkDbPasswordRef(env: EnvEntry[], isApp: boolean, secret: string): void {
  const db = named(env, ENV.dbPassword);
  if ((isApp && db.length === 0) || !db.every((e) => isDbPasswordRef(e, secret)))
    throw new Error('DB_PASSWORD not a reference to the release Secret');
}

function isDbPasswordRef(e: EnvEntry, secret: string): boolean {
  if (isDeepStrictEqual(e.valueFrom, { secretKeyRef: { name: secret, key: SECRET_KEYS.postgresPassword } }))
    return true;
  // an entry already correct is kept as it was (e.g. with optional: false or an empty value)
  const valueFrom = e.valueFrom as JsonObject | undefined;
  const ref = valueFrom?.secretKeyRef as JsonObject | undefined;
  return (
    (e.value === undefined || e.value === '') &&
    ref !== undefined &&
    Object.keys(valueFrom as JsonObject).length === 1 &&
    ref.name === secret &&
    ref.key === SECRET_KEYS.postgresPassword &&
    ref.optional !== true
  );
}

/** REDIS_PASSWORD is defined before its first user, and then no broker URL keeps a literal password. */
function checkRedisPassword(env: EnvEntry[]): void {
  const definedAt = env.findIndex((e) => e.name === ENV.redisPassword && e.valueFrom !== undefined);
  const firstUser = env.findIndex(
    (e) => e.name !== ENV.redisPassword && typeof e.value === 'string' && e.value.includes(REDIS_PASSWORD_REFERENCE),
  );
  if (definedAt >= 0 && firstUser >= 0 && definedAt > firstUser)
    throw new Error('REDIS_PASSWORD defined after a user of $(REDIS_PASSWORD)');
  if (definedAt >= 0) checkBrokerUrls(env);
}

function checkBrokerUrls(env: EnvEntry[]): void {
  for (const broker of named(env, ENV.celeryBrokerUrl)) {
    if (typeof broker.value !== 'string') continue;
    for (const part of broker.value.split(';')) {
      const literal = /^(redis|rediss|sentinel):\/\/[^:@/]*:([^@]+)@[^@]*$/.exec(part)?.[2];
      if (literal !== undefined && literal !== REDIS_PASSWORD_REFERENCE)
        throw new Error(`literal password left in ${broker.value}`);
    }
  }
}
