// Helpers for the pod mutation tests: apply a result the way the API server does and read env back.
import jsonPatch from 'fast-json-patch';
import { LABELS } from '../../src/contract.js';
import { mutatePod } from '../../src/admission/pod-mutation.js';
import type { GuardSettings } from '../../src/admission/settings.js';
import type { JsonObject, MutationResult } from '../../src/admission/types.js';

export type EnvEntry = { name: string; value?: string; valueFrom?: JsonObject };

export interface Mutated {
  result: MutationResult;
  /** The pod after the API server applied the patch. */
  after: JsonObject;
}

/** Mutates, applies the patch to a copy (validating every operation), returns both. */
export function mutateAndApply(pod: JsonObject, settings: GuardSettings): Mutated {
  const result = mutatePod(pod, settings);
  const after = jsonPatch.applyPatch(structuredClone(pod), result.patch as jsonPatch.Operation[], true, false).newDocument;
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

export function setEnv(pod: JsonObject, name: string, env: EnvEntry[] | undefined, field: ContainerField = 'containers'): void {
  const container = containerOf(pod, name, field);
  if (env === undefined) delete container.env;
  else container.env = env;
}

export const entriesNamed = (env: EnvEntry[], name: string): EnvEntry[] => env.filter((e) => e.name === name);
export const indexOfName = (env: EnvEntry[], name: string): number => env.findIndex((e) => e.name === name);

export function labelsOf(pod: JsonObject): Record<string, string> {
  const metadata = pod.metadata as JsonObject;
  metadata.labels ??= {};
  return metadata.labels as Record<string, string>;
}

/** Relabels a pod as another component of the same release. */
export function asComponent(pod: JsonObject, component: string): JsonObject {
  labelsOf(pod)[LABELS.component] = component;
  return pod;
}

export const secretRef = (name: string, key: string, optional?: boolean): JsonObject => ({
  secretKeyRef: optional === undefined ? { name, key } : { name, key, optional },
});
