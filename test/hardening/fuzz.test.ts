// The real dify-guard process fed more than 10,000 hostile bodies over TLS on both webhook paths:
// malformed JSON, wrong content types and headers, wrong shapes, deep nesting, oversized bodies, and valid
// envelopes around arbitrary objects. Every answer is a valid AdmissionReview (200) or a 4xx naming
// the problem; never a 5xx or a dropped connection. The process survives, still judges correctly,
// and its memory stays bounded. Deterministic: DIFY_GUARD_FUZZ_SEED replays a run; failures name
// case ids (category#index), never bodies.
import t from 'tap';
import fc from 'fast-check';
import { Agent } from 'node:https';
import { gzipSync } from 'node:zlib';
import { ENV, LABELS, SECRET_KEYS } from '../../src/contract.js';
import { SETTINGS } from '../../src/config.js';
import { fixtureNames, loadReview, sensitiveStringsOf, type AdmissionReview } from '../../harness/fixtures.js';
import { labelsOf } from '../../harness/manifests.js';
import {
  byProblem,
  MUTATE_PODS,
  problemWithAnswer,
  rssBytes,
  send,
  startGuardedPlane,
  VALIDATE_SECRETS,
} from './load.js';

const SEED = Number(process.env.DIFY_GUARD_FUZZ_SEED ?? 20261124);
const BODY_LIMIT = 256 * 1024;
const CONCURRENCY = 8;
const MiB = 1024 * 1024;
// At rest, before any request, this machine measures about 540 MiB for src/main.ts under the TypeScript
// loader (about 330 MiB for dist/): a fixed ceiling well above that, and a bound on the growth over the run.
const RSS_CEILING = 768 * MiB;
const RSS_GROWTH = 100 * MiB;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonRecord = { [key: string]: Json };

interface FuzzCase {
  path: string;
  body: Buffer;
  /** `null`: no Content-Type header; undefined: application/json. */
  contentType?: string | null;
  chunked?: boolean;
  headers?: Record<string, string>;
  /** The request's uid when it had a string one: a 200 must echo it. */
  uid?: string;
  /** The statuses this case may get (besides the general rule that applies to all). */
  expect: number[];
}

// ---- a seeded PRNG per case, so any case can be rebuilt alone from (seed, category, index) ----------

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

class Dice {
  private readonly next: () => number;
  constructor(readonly seed: number) {
    this.next = mulberry32(seed);
  }
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)] as T;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** One value of a fast-check arbitrary, from a seed derived from this dice. */
  sample<T>(arbitrary: fc.Arbitrary<T>): T {
    return fc.sample(arbitrary, { seed: this.int(0, 0x7fffffff), numRuns: 1 })[0] as T;
  }
}

/** From the category's name (FNV-1a), so adding a category leaves the others' cases as they were. */
function caseSeed(category: string, index: number): number {
  let hash = 0x811c9dc5;
  for (const char of category) hash = Math.imul(hash ^ char.charCodeAt(0), 0x01000193);
  return (Math.imul(SEED ^ 0x9e3779b9, 31) + Math.imul(hash, 0x85ebca6b) + Math.imul(index + 1, 0xc2b2ae35)) >>> 0;
}

// ---- fixtures ------------------------------------------------------------------------------------------

const podFixtures = fixtureNames().filter((n) => n.startsWith('pod-'));
const secretFixtures = fixtureNames().filter((n) => n.startsWith('secret-'));
const allFixtures = [
  ...podFixtures.map((f) => ({ f, path: MUTATE_PODS })),
  ...secretFixtures.map((f) => ({ f, path: VALIDATE_SECRETS })),
];
const bothPaths = [MUTATE_PODS, VALIDATE_SECRETS] as const;

function reviewWithUid(name: string, uid: string): AdmissionReview {
  const review = loadReview(name);
  review.request.uid = uid;
  return review;
}

const isObjectOrNull = (value: unknown): boolean =>
  value === null || (typeof value === 'object' && !Array.isArray(value));
const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value), 'utf8');
/** A structurally valid review: 200 unless its object/oldObject are not objects (400) or it is too big (413). */
const validEnvelope = (path: string, review: AdmissionReview, uid: string): FuzzCase => {
  const body = json(review);
  const request = review.request as unknown as JsonRecord;
  const shapeOk =
    (!('object' in request) || isObjectOrNull(request.object)) &&
    (!('oldObject' in request) || isObjectOrNull(request.oldObject));
  return { path, body, uid, expect: body.length > BODY_LIMIT ? [413] : shapeOk ? [200] : [400] };
};

const anyJson = fc.jsonValue({ maxDepth: 5 }) as fc.Arbitrary<Json>;
const anyObject = fc.dictionary(fc.string({ maxLength: 12 }), anyJson, { maxKeys: 6 }) as fc.Arbitrary<JsonRecord>;
const weirdString = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    '\ud800',
    '$(REDIS_PASSWORD)',
    '$(',
    'redis://:@h:1/0',
    '=',
    '==',
    '%%',
    'null',
    '__proto__',
  ),
);
// JSON.parse makes these own properties, so JSON.stringify sends them as keys.
const prototypeKeys = (): JsonRecord =>
  JSON.parse(
    '{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}},"prototype":1}',
  ) as JsonRecord;

// ---- categories -----------------------------------------------------------------------------------------

interface Category {
  name: string;
  count: number;
  build(dice: Dice, index: number, id: string): FuzzCase;
}

const truncatable = allFixtures.map(({ f, path }) => ({ path, text: JSON.stringify(loadReview(f)) }));

const malformedBytes: Category = {
  name: 'malformed-bytes',
  count: 600,
  build: (dice, index) => {
    const body = Buffer.alloc(dice.int(0, 2048));
    for (let i = 0; i < body.length; i++) body[i] = dice.int(0, 255);
    // A random body that happens to parse is still no AdmissionReview: 400 either way.
    return { path: bothPaths[index % 2] as string, body, expect: [400] };
  },
};

const malformedText: Category = {
  name: 'malformed-text',
  count: 600,
  build: (dice, index) => {
    const alphabet = '{}[]":,\\ntrufalse0123456789.eE+-  \t\n\'abc';
    const length = dice.int(0, 600);
    let text = '';
    for (let i = 0; i < length; i++) text += alphabet[dice.int(0, alphabet.length - 1)];
    if (dice.chance(0.3)) text = dice.sample(fc.string({ unit: 'grapheme', maxLength: 300 }));
    return { path: bothPaths[index % 2] as string, body: Buffer.from(text, 'utf8'), expect: [400] };
  },
};

const malformedTruncated: Category = {
  name: 'malformed-truncated',
  count: 800,
  build: (dice) => {
    const { path, text } = dice.pick(truncatable);
    // Any strict prefix of a JSON object is invalid JSON.
    const body = Buffer.from(text, 'utf8').subarray(0, dice.int(0, Buffer.byteLength(text) - 1));
    return { path, body, expect: [400] };
  },
};

const notJsonTypes = [
  null,
  '',
  'text/plain',
  'text/json',
  'application/x-www-form-urlencoded',
  'application/jsonx',
  'application/json-patch+json',
  'application/merge-patch+json',
  'multipart/form-data; boundary=x',
  'application/yaml',
  'application/vnd.kubernetes.protobuf',
  'application/cbor',
  'application/*',
  '*/*',
  'application/octet-stream',
  'json',
  'application',
  'application/xml',
];
const jsonTypes = ['application/json', 'application/json; charset=utf-8', 'application/json;charset=UTF-8'];

const contentTypes: Category = {
  name: 'content-type',
  count: 800,
  build: (dice, index, id) => {
    const { f, path } = dice.pick(allFixtures);
    const body = json(reviewWithUid(f, id));
    if (index % 4 === 0) return { path, body, contentType: dice.pick(jsonTypes), uid: id, expect: [200] };
    return { path, body, contentType: dice.pick(notJsonTypes), expect: [415] };
  },
};

// Headers an API server does not send but a client might: the body is judged or refused, never misread.
const headerCases: Category = {
  name: 'headers',
  count: 200,
  build: (dice, index, id): FuzzCase => {
    const { f, path } = dice.pick(allFixtures);
    const plain = json(reviewWithUid(f, id));
    switch (index % 4) {
      case 0:
        return { path, body: plain, headers: { expect: '100-continue' }, uid: id, expect: [200] };
      // A compressed body is not decoded: refused (it is not JSON), not judged as something else.
      case 1:
        return { path, body: gzipSync(plain), headers: { 'content-encoding': 'gzip' }, expect: [400, 415] };
      case 2:
        return {
          path,
          body: plain,
          headers: { 'content-encoding': dice.pick(['identity', 'br', 'x-unknown']) },
          uid: id,
          expect: [200, 415],
        };
      default:
        return {
          path,
          body: plain,
          headers: {
            accept: dice.pick(['application/yaml', 'application/vnd.kubernetes.protobuf', 'text/html', '*/*']),
          },
          uid: id,
          expect: [200],
        };
    }
  },
};

/** A wrong shape made from a real review of any fixture: `edit` breaks the envelope. */
const reviewEdited =
  (edit: (review: JsonRecord, dice: Dice) => unknown) =>
  (dice: Dice, id: string): JsonRecord => {
    const review = reviewWithUid(dice.pick(allFixtures).f, id) as unknown as JsonRecord;
    edit(review, dice);
    return review;
  };
/** A wrong shape made from a real review of any fixture: `edit` breaks its request. */
const requestEdited = (edit: (request: JsonRecord, dice: Dice) => unknown) =>
  reviewEdited((review, dice) => edit(review.request as JsonRecord, dice));

const wrongShapes: ((dice: Dice, id: string) => unknown)[] = [
  () => [],
  (dice, id) => [reviewWithUid(dice.pick(allFixtures).f, id)],
  (dice) => dice.int(-1e9, 1e9),
  () => null,
  () => true,
  (dice) => dice.sample(fc.string({ maxLength: 30 })),
  () => ({}),
  () => ({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }),
  () => ({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: null }),
  () => ({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: [] }),
  requestEdited((request) => delete request.uid),
  requestEdited((request) => (request.uid = '')),
  requestEdited((request, dice) => (request.uid = dice.int(0, 1e6))),
  reviewEdited(
    (review, dice) => (review.apiVersion = dice.pick(['admission.k8s.io/v1beta1', 'v1', '', 'admission.k8s.io/v2'])),
  ),
  reviewEdited((review, dice) => (review.kind = dice.pick(['AdmissionReviewList', 'Pod', 'admissionreview', '']))),
  reviewEdited((review) => delete review.apiVersion),
  requestEdited((request) => delete request.kind),
  requestEdited((request, dice) => (request.kind = { kind: dice.int(0, 9) })),
  requestEdited((request) => delete request.resource),
  requestEdited((request, dice) => (request.operation = dice.pick(['PATCH', 'create', '', 'GET']))),
  requestEdited((request) => delete request.userInfo),
  requestEdited((request) => (request.userInfo = { groups: 'system:masters' })),
  requestEdited((request, dice) => (request.object = dice.pick<Json>(['pod', [], 5, true]))),
  requestEdited((request, dice) => (request.oldObject = dice.pick<Json>(['secret', [{}], 0]))),
  requestEdited((request) => (request.dryRun = 'yes')),
  reviewEdited((review, dice) => (review.request = dice.sample(anyObject))),
  (dice) => dice.sample(anyJson),
  (dice) => ({ ...dice.sample(anyObject), ...prototypeKeys() }),
];

const wrongShape: Category = {
  name: 'wrong-shape',
  count: 1500,
  build: (dice, index, id) => ({
    path: bothPaths[index % 2] as string,
    body: json(dice.pick(wrongShapes)(dice, id)),
    expect: [400],
  }),
};

/** `[[[...]]]`, `{"a":{"a":...}}` or unclosed, `depth` levels. */
function nested(dice: Dice, depth: number, closed: boolean): string {
  const open = dice.chance(0.5) ? '[' : '{"a":';
  const close = open === '[' ? ']' : '}';
  const inner = open === '[' ? '' : '1';
  return open.repeat(depth) + inner + (closed ? close.repeat(depth) : '');
}

const DEEP_PLACEHOLDER = '__deep_placeholder__';

/** Puts the placeholder of the deep value in one of four fields of the object (`where`: 0 to 3). */
function placeDeep(target: JsonRecord, where: number): void {
  if (where === 0) target.spec = DEEP_PLACEHOLDER;
  else if (where === 1) ((target.metadata ??= {}) as JsonRecord).labels = DEEP_PLACEHOLDER;
  else if (where === 2) target.data = { [SECRET_KEYS.postgresPassword]: DEEP_PLACEHOLDER };
  else {
    const containers = (target.spec as JsonRecord | undefined)?.containers as JsonRecord[] | undefined;
    if (containers?.[0]) containers[0].env = DEEP_PLACEHOLDER;
    else target.stringData = DEEP_PLACEHOLDER;
  }
}

const deepNesting: Category = {
  name: 'deep-nesting',
  count: 200,
  build: (dice, index, id) => {
    const depth = dice.int(10_000, 100_000);
    const kind = index % 4;
    // Object nesting takes 6 bytes a level: a depth past the limit is an oversized case, still answered.
    // kind 0: closed, kind 1: unclosed.
    if (kind < 2) {
      const body = Buffer.from(nested(dice, depth, kind === 0));
      return { path: bothPaths[index % 2] as string, body, expect: body.length > BODY_LIMIT ? [413] : [400] };
    }
    // Inside a valid envelope: request.object / oldObject fields nest deeply.
    const { f, path } = dice.pick(allFixtures);
    const review = reviewWithUid(f, id);
    const request = review.request as unknown as JsonRecord;
    placeDeep((request.object ?? request.oldObject) as JsonRecord, dice.int(0, 3));
    const text = JSON.stringify(review).replace(`"${DEEP_PLACEHOLDER}"`, nested(dice, depth, true));
    const body = Buffer.from(text);
    return { path, body, uid: id, expect: body.length > BODY_LIMIT ? [413] : [200] };
  },
};

const oversized: Category = {
  name: 'oversized',
  count: 300,
  build: (dice, index, id) => {
    const { f, path } = dice.pick(allFixtures);
    const review = reviewWithUid(f, id);
    const target = (review.request.object ?? review.request.oldObject) as JsonRecord;
    const size = dice.int(BODY_LIMIT + 1, BODY_LIMIT * 3);
    ((target.metadata ??= {}) as JsonRecord).annotations = { filler: 'x'.repeat(size) };
    const body = json(review);
    return { path, body, chunked: index % 2 === 1, expect: [413] };
  },
};

const nearLimit: Category = {
  name: 'near-limit',
  count: 60,
  build: (_dice, index, id) => {
    const { f, path } = allFixtures[index % allFixtures.length] as { f: string; path: string };
    const review = reviewWithUid(f, id);
    const target = (review.request.object ?? review.request.oldObject) as JsonRecord;
    const annotations = (((target.metadata ??= {}) as JsonRecord).annotations ??= {});
    (annotations as JsonRecord).filler = '';
    const base = json(review).length;
    // 30 bodies at the limit or just under (answered), 30 just over it (413); half of each sent chunked.
    const wanted = index < 30 ? BODY_LIMIT - (index % 30) : BODY_LIMIT + 1 + (index % 30);
    (annotations as JsonRecord).filler = 'y'.repeat(wanted - base);
    const body = json(review);
    if (body.length !== wanted)
      throw new Error(`near-limit case ${index}: built ${body.length} bytes, wanted ${wanted}`);
    return { path, body, uid: id, chunked: index % 2 === 1, expect: index < 30 ? [200] : [413] };
  },
};

// Mutations of a fixture's object/oldObject: wrong types where the decisions look, and noise elsewhere.
type Mutation = (dice: Dice, object: JsonRecord) => void;
/** object.metadata, made an object first if a previous mutation made it something else. */
const metadataMadeObject = (object: JsonRecord): JsonRecord => {
  const metadata = object.metadata;
  if (typeof metadata === 'object' && metadata !== null && !Array.isArray(metadata)) return metadata;
  return (object.metadata = {});
};
const dataOf = (object: JsonRecord): JsonRecord => {
  const data = object.data;
  return typeof data === 'object' && data !== null && !Array.isArray(data) ? data : {};
};
const containersOf = (object: JsonRecord): JsonRecord[] => {
  const spec = object.spec;
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) return [];
  const list = [
    ...(Array.isArray(spec.containers) ? spec.containers : []),
    ...(Array.isArray(spec.initContainers) ? spec.initContainers : []),
  ];
  return list.filter((c): c is JsonRecord => typeof c === 'object' && c !== null && !Array.isArray(c));
};
const envOfSome = (dice: Dice, object: JsonRecord): Json[] | undefined => {
  const containers = containersOf(object);
  if (containers.length === 0) return undefined;
  const container = dice.pick(containers);
  if (!Array.isArray(container.env)) container.env = [];
  return container.env as Json[];
};
const envNames = Object.values(ENV);
const podMutations: Mutation[] = [
  (dice, o) => {
    const env = envOfSome(dice, o);
    if (env) env[dice.int(0, env.length)] = dice.sample(anyJson);
  },
  (dice, o) => {
    const env = envOfSome(dice, o);
    if (env) env.push({ name: dice.pick(envNames), value: dice.sample(anyJson) });
  },
  (dice, o) => {
    const env = envOfSome(dice, o);
    if (env) env.push({ name: dice.pick(envNames), valueFrom: dice.sample(anyJson) });
  },
  (dice, o) => {
    const env = envOfSome(dice, o);
    if (env) env.push({ name: dice.pick(envNames), valueFrom: { secretKeyRef: dice.sample(anyJson) } });
  },
  (dice, o) => {
    const env = envOfSome(dice, o);
    if (env) env.push({ name: dice.sample(anyJson), value: dice.sample(weirdString) });
  },
  (dice, o) => {
    const env = envOfSome(dice, o);
    if (env) env.push({ name: ENV.celeryBrokerUrl, value: `redis://:${dice.sample(weirdString)}@host:6379/1` });
  },
  (dice, o) => {
    const env = envOfSome(dice, o);
    if (env) env.push({ name: dice.pick(envNames), value: 'z'.repeat(dice.int(1_000, 100_000)) });
  },
  (dice, o) => {
    const env = envOfSome(dice, o);
    if (env) env.push({ ...prototypeKeys(), name: dice.pick(envNames), value: 'v' });
  },
  (dice, o) => {
    const c = containersOf(o);
    if (c.length > 0) dice.pick(c).env = dice.sample(anyJson);
  },
  (dice, o) => {
    if (typeof o.spec === 'object' && o.spec !== null && !Array.isArray(o.spec))
      o.spec.containers = dice.sample(anyJson);
  },
  (dice, o) => {
    if (typeof o.spec === 'object' && o.spec !== null && !Array.isArray(o.spec))
      o.spec.initContainers = dice.sample(anyJson);
  },
  (dice, o) => {
    o.spec = dice.sample(anyJson);
  },
  (dice, o) => {
    metadataMadeObject(o).labels = dice.sample(anyJson);
  },
  (dice, o) => {
    metadataMadeObject(o).labels = { ...labelsOf(o), [dice.pick(Object.values(LABELS))]: dice.sample(anyJson) };
  },
  (dice, o) => {
    metadataMadeObject(o).labels = { ...labelsOf(o), [LABELS.instance]: dice.sample(weirdString) };
  },
  (dice, o) => {
    metadataMadeObject(o).annotations = { ...dice.sample(anyObject), ...prototypeKeys() };
  },
  (_dice, o) => {
    Object.assign(o, prototypeKeys());
  },
  (dice, o) => {
    o.metadata = dice.sample(anyJson);
  },
];
const secretKeys = Object.values(SECRET_KEYS);
const secretMutations: Mutation[] = [
  (dice, o) => {
    o.data = { ...dataOf(o), [dice.pick(secretKeys)]: dice.sample(weirdString) };
  },
  (dice, o) => {
    o.data = { ...dataOf(o), [dice.pick(secretKeys)]: dice.sample(anyJson) };
  },
  (dice, o) => {
    o.data = dice.sample(anyJson);
  },
  (dice, o) => {
    o.stringData = { ...dice.sample(anyObject), [dice.pick(secretKeys)]: dice.sample(anyJson) };
  },
  (dice, o) => {
    o.stringData = dice.sample(anyJson);
  },
  (dice, o) => {
    o.data = {
      ...dataOf(o),
      [dice.pick(secretKeys)]: Buffer.from('w'.repeat(dice.int(1_000, 60_000))).toString('base64'),
    };
  },
  (dice, o) => {
    o.data = { ...dataOf(o), ...prototypeKeys() };
  },
  (dice, o) => {
    metadataMadeObject(o).labels = dice.sample(anyJson);
  },
  (dice, o) => {
    metadataMadeObject(o).labels = { ...labelsOf(o), [dice.pick(Object.values(LABELS))]: dice.sample(anyJson) };
  },
  (dice, o) => {
    metadataMadeObject(o).name = dice.sample(fc.oneof(weirdString, anyJson));
  },
  (_dice, o) => {
    Object.assign(o, prototypeKeys());
  },
  (dice, o) => {
    o.metadata = dice.sample(anyJson);
  },
  (dice, o) => {
    o.type = dice.sample(anyJson);
  },
];

/** Up to four mutations of request.object (at least one) and of request.oldObject, where they are objects. */
function mutateObjects(dice: Dice, request: JsonRecord, mutations: Mutation[]): void {
  for (const field of ['object', 'oldObject'] as const) {
    const object = request[field];
    if (typeof object !== 'object' || object === null || Array.isArray(object)) continue;
    const times = dice.int(field === 'object' ? 1 : 0, 4);
    for (let i = 0; i < times; i++) dice.pick(mutations)(dice, object as JsonRecord);
  }
}

/** Now and then another operation, dryRun, or a subresource. */
function twistRequest(dice: Dice, request: JsonRecord): void {
  if (dice.chance(0.15)) request.operation = dice.pick(['CREATE', 'UPDATE', 'DELETE', 'CONNECT']);
  if (dice.chance(0.05)) request.dryRun = true;
  if (dice.chance(0.05)) request.subResource = dice.pick(['status', 'ephemeralcontainers', '']);
}

function arbitraryCategory(name: string, fixtures: string[], path: string, mutations: Mutation[]): Category {
  return {
    name,
    count: 3000,
    build: (dice, _index, id) => {
      const review = reviewWithUid(dice.pick(fixtures), id);
      const request = review.request as unknown as JsonRecord;
      const roll = dice.int(0, 9);
      if (roll === 0) {
        // The object replaced outright by arbitrary JSON (a non-object is a 400).
        request[dice.pick(['object', 'oldObject'])] = dice.chance(0.7) ? dice.sample(anyObject) : dice.sample(anyJson);
      } else {
        mutateObjects(dice, request, mutations);
      }
      twistRequest(dice, request);
      // The other endpoint now and then: a Pod sent to the Secret guard and the reverse.
      const target = dice.chance(0.1) ? (path === MUTATE_PODS ? VALIDATE_SECRETS : MUTATE_PODS) : path;
      return validEnvelope(target, review, id);
    },
  };
}

const categories: Category[] = [
  malformedBytes,
  malformedText,
  malformedTruncated,
  contentTypes,
  headerCases,
  wrongShape,
  deepNesting,
  oversized,
  nearLimit,
  arbitraryCategory('arbitrary-pod', podFixtures, MUTATE_PODS, podMutations),
  arbitraryCategory('arbitrary-secret', secretFixtures, VALIDATE_SECRETS, secretMutations),
];

/** What of a case goes into send(): its path, body and, when set, content type, chunking and headers. */
function sendOptionsOf(fuzzCase: FuzzCase) {
  return {
    path: fuzzCase.path,
    body: fuzzCase.body,
    ...(fuzzCase.contentType !== undefined ? { contentType: fuzzCase.contentType } : {}),
    ...(fuzzCase.chunked ? { chunked: true } : {}),
    ...(fuzzCase.headers ? { headers: fuzzCase.headers } : {}),
  };
}

/** Counts one more `key` under `name`. */
function countIn<K>(counts: Map<string, Map<K, number>>, name: string, key: K): void {
  const inner = counts.get(name) ?? new Map<K, number>();
  inner.set(key, (inner.get(key) ?? 0) + 1);
  counts.set(name, inner);
}

/** A 200's verdict: denied, patched or allowed. */
function verdictOf(json: unknown): string {
  const response = (json as { response?: { allowed?: unknown; patch?: unknown } } | undefined)?.response;
  return response?.allowed === false ? 'denied' : response?.patch !== undefined ? 'patched' : 'allowed';
}

const unexpectedStatus = (status: number, expect: number[]): string | undefined =>
  expect.includes(status) ? undefined : `status ${status}, expected ${expect.join(' or ')}`;

// ---- the run -----------------------------------------------------------------------------------------------

t.test('10,000+ hostile bodies on both webhook paths of the real process', async (t) => {
  // No tap instrumentation in dify-guard (NODE_OPTIONS): its coverage recorder would be the memory measured.
  const { guard, ca } = await startGuardedPlane(t, 'fuzz', {
    env: { [SETTINGS.bodyLimitBytes.env]: String(BODY_LIMIT), NODE_OPTIONS: '' },
  });
  const pid = guard.process.pid as number;
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY, ca });
  t.teardown(() => agent.destroy());

  // Warm up (JIT, lazily loaded modules) so the starting memory is the process at work, not at rest.
  for (let i = 0; i < 200; i++) {
    const { f, path } = allFixtures[i % allFixtures.length] as { f: string; path: string };
    await send({ port: guard.port, ca, path, body: json(reviewWithUid(f, `warm-up-${i}`)), agent });
  }
  const rssBefore = rssBytes(pid);
  t.comment(
    `seed ${SEED} (DIFY_GUARD_FUZZ_SEED replays it); body limit ${BODY_LIMIT} bytes; concurrency ${CONCURRENCY}`,
  );

  const secrets = [...new Set(fixtureNames().flatMap((name) => sensitiveStringsOf(loadReview(name))))];
  interface Outcome {
    id: string;
    problem?: string;
  }
  const outcomes = new Map<string, Outcome[]>();
  const statusCounts = new Map<string, Map<number, number>>();
  const verdictCounts = new Map<string, Map<string, number>>();
  const queue = categories.flatMap((category) =>
    Array.from({ length: category.count }, (_, index) => ({ category, index })),
  );
  let cursor = 0;

  async function runCase(category: Category, index: number): Promise<Outcome> {
    const id = `${category.name}#${index}`;
    let fuzzCase: FuzzCase;
    try {
      fuzzCase = category.build(new Dice(caseSeed(category.name, index)), index, id);
    } catch (error) {
      // The error's message may quote generated content: its type names the generator bug well enough.
      return { id, problem: `case could not be built: ${(error as Error).name}` };
    }
    try {
      const answer = await send({ port: guard.port, ca, agent, ...sendOptionsOf(fuzzCase) });
      // A message may quote an identifier, never a fixture's password (plain or base64), cut or whole.
      if (answer.status !== 200 && secrets.some((secret) => answer.text.includes(secret)))
        return { id, problem: 'a fixture password in the answer' };
      countIn(statusCounts, category.name, answer.status);
      if (answer.status === 200) countIn(verdictCounts, category.name, verdictOf(answer.json));
      const problem = problemWithAnswer(answer, fuzzCase.uid) ?? unexpectedStatus(answer.status, fuzzCase.expect);
      return problem ? { id, problem } : { id };
    } catch (error) {
      return { id, problem: `transport: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}` };
    }
  }

  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (cursor < queue.length) {
        const { category, index } = queue[cursor++] as (typeof queue)[number];
        const outcome = await runCase(category, index);
        const list = outcomes.get(category.name) ?? [];
        list.push(outcome);
        outcomes.set(category.name, list);
      }
    }),
  );

  let total = 0;
  for (const category of categories) {
    const list = outcomes.get(category.name) ?? [];
    total += list.length;
    const statuses = [...(statusCounts.get(category.name) ?? new Map<number, number>()).entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([status, n]) => `${status}:${n}`)
      .join(' ');
    const verdicts = [...(verdictCounts.get(category.name) ?? new Map<string, number>()).entries()]
      .sort()
      .map(([verdict, n]) => `${verdict}:${n}`)
      .join(' ');
    t.comment(`${category.name}: ${list.length} bodies (status ${statuses}${verdicts ? `; 200s ${verdicts}` : ''})`);
    t.equal(list.length, category.count, `${category.name}: every case was sent`);
    t.same(
      byProblem(list, (o) => o.id),
      {},
      `${category.name}: every answer is a valid review or a 4xx naming the problem (failing case ids by problem)`,
    );
  }
  t.comment(`total: ${total} bodies`);
  t.ok(total >= 10_000, 'at least 10,000 bodies');

  t.ok(guard.process.running, 'the process is still running');
  const log = guard.process.log();
  t.ok(log.length > 0 && secrets.length > 0, 'there is a log and there are fixture passwords to look for');
  t.equal(
    secrets.filter((secret) => log.includes(secret)).length,
    0,
    'no fixture password (plain or base64) in the log of the whole run',
  );
  const after = reviewWithUid('pod-api-literal', 'after-the-fuzz');
  const normal = await send({ port: guard.port, ca, path: MUTATE_PODS, body: json(after) });
  t.equal(normal.status, 200, 'a normal review afterwards is answered');
  t.equal(problemWithAnswer(normal, 'after-the-fuzz'), undefined, 'with a valid review');
  const response = (normal.json as { response: { patchType?: string; allowed?: boolean } }).response;
  t.equal(response.allowed, true, 'and allowed');
  t.equal(response.patchType, 'JSONPatch', 'and the literal-password pod is still patched');

  const rssAfter = rssBytes(pid);
  t.comment(`RSS: ${(rssBefore / MiB).toFixed(1)} MiB after warm-up, ${(rssAfter / MiB).toFixed(1)} MiB after the run`);
  t.ok(rssAfter < RSS_CEILING, `RSS after the run stays under ${RSS_CEILING / MiB} MiB`);
  t.ok(rssAfter - rssBefore < RSS_GROWTH, `RSS grows by less than ${RSS_GROWTH / MiB} MiB over the run`);
});
