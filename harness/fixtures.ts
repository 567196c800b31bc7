// AdmissionReview fixtures from test/fixtures/ (each load a fresh deep copy, tests may edit it freely),
// and helpers to edit a fixture pod's env and apply a mutation the way the API server does.
import { Buffer } from 'node:buffer';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import jsonPatch from 'fast-json-patch';
import { LABELS } from '../src/contract.js';
import { labelsOf } from './manifests.js';
import { mutatePod } from '../src/admission/pod-mutation.js';
import type { GuardSettings } from '../src/admission/settings.js';
import type { AdmissionRequest, JsonObject, MutationResult } from '../src/admission/types.js';

export const fixturesDir = fileURLToPath(new URL('../test/fixtures/', import.meta.url));

export interface AdmissionReview {
  apiVersion: string;
  kind: string;
  request: AdmissionRequest;
}

const parsed = new Map<string, AdmissionReview>();

/** The fixture names available, without `.json`. */
export function fixtureNames(): string[] {
  return readdirSync(fixturesDir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -'.json'.length))
    .sort();
}

/** `loadReview('pod-api')` (or `'pod-api.json'`): a deep copy of that AdmissionReview. */
export function loadReview(name: string): AdmissionReview {
  const file = name.endsWith('.json') ? name : `${name}.json`;
  let review = parsed.get(file);
  if (!review) {
    review = JSON.parse(readFileSync(join(fixturesDir, file), 'utf8')) as AdmissionReview;
    parsed.set(file, review);
  }
  return structuredClone(review);
}

/** The object of a fixture's request (the pod of a Pod CREATE, the new Secret of an UPDATE). */
export function loadObject(name: string): JsonObject {
  const object = loadReview(name).request.object;
  if (!object) throw new Error(`fixture ${name} has no request.object`);
  return object;
}

/**
 * Every secret-looking string in a fixture, plain and base64: Secret `data` values, literal
 * *PASSWORD env values and passwords inside URLs. Tests assert none of them leaks into output.
 */
export function sensitiveStringsOf(review: AdmissionReview): string[] {
  const found = new Set<string>();
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (typeof node !== 'object' || node === null) return;
    const object = node as JsonObject;
    for (const plain of [...secretPasswordsOf(object), ...envPasswordsOf(object)]) {
      if (plain.length < 6) continue; // e.g. 'dify' also names the release; only real secrets are long here
      found.add(plain);
      found.add(Buffer.from(plain, 'utf8').toString('base64'));
    }
    Object.values(object).forEach(visit);
  };
  visit(review);
  return [...found];
}

/** A Secret's password-named values, decoded from `data`, as written in `stringData`. */
function secretPasswordsOf(object: JsonObject): string[] {
  if (object.kind !== 'Secret') return [];
  return (['data', 'stringData'] as const).flatMap((field) =>
    Object.entries((object[field] as Record<string, unknown> | undefined) ?? {})
      .filter((entry): entry is [string, string] => typeof entry[1] === 'string' && /password/i.test(entry[0]))
      .map(([, value]) => (field === 'data' ? Buffer.from(value, 'base64').toString('utf8') : value)),
  );
}

/** An env entry's literal *PASSWORD value and the password inside a URL value ($(VAR) references left out). */
function envPasswordsOf(object: JsonObject): string[] {
  if (typeof object.name !== 'string' || typeof object.value !== 'string') return [];
  const literal = /PASSWORD/.test(object.name) && !object.value.includes('$(') ? [object.value] : [];
  const inUrl = /^[a-z]+:\/\/[^:@/]*:([^@]+)@/i.exec(object.value)?.[1];
  return [...literal, ...(inUrl && !inUrl.startsWith('$(') ? [inUrl] : [])];
}

// ---- pod env helpers ------------------------------------------------------------------------------

export type EnvEntry = { name: string; value?: string; valueFrom?: JsonObject };

export interface Mutated {
  result: MutationResult;
  /** The pod after the API server applied the patch. */
  after: JsonObject;
}

/** Mutates, applies the patch to a copy (validating every operation), returns both. */
export function mutateAndApply(pod: JsonObject, settings: GuardSettings): Mutated {
  const result = mutatePod(pod, settings);
  const after = jsonPatch.applyPatch(
    structuredClone(pod),
    result.patch as jsonPatch.Operation[],
    true,
    false,
  ).newDocument;
  return { result, after };
}

type ContainerField = 'containers' | 'initContainers';

export function containerOf(pod: JsonObject, name: string, field: ContainerField = 'containers'): JsonObject {
  const list = (pod.spec as JsonObject)[field] as JsonObject[] | undefined;
  const found = list?.find((c) => c.name === name);
  if (!found) throw new Error(`no ${field} entry ${name}`);
  return found;
}

export function envOf(pod: JsonObject, name: string, field: ContainerField = 'containers'): EnvEntry[] {
  return (containerOf(pod, name, field).env as EnvEntry[] | undefined) ?? [];
}

export function setEnv(
  pod: JsonObject,
  name: string,
  env: EnvEntry[] | undefined,
  field: ContainerField = 'containers',
): void {
  const container = containerOf(pod, name, field);
  if (env === undefined) delete container.env;
  else container.env = env;
}

export const entriesNamed = (env: EnvEntry[], name: string): EnvEntry[] => env.filter((e) => e.name === name);
export const indexOfName = (env: EnvEntry[], name: string): number => env.findIndex((e) => e.name === name);

export { labelsOf };

/** Relabels a pod as another component of the same release. */
export function asComponent(pod: JsonObject, component: string): JsonObject {
  labelsOf(pod)[LABELS.component] = component;
  return pod;
}

export const secretRef = (name: string, key: string, optional?: boolean): JsonObject => ({
  secretKeyRef: optional === undefined ? { name, key } : { name, key, optional },
});
