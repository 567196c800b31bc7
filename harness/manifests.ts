// Kubernetes objects as plain JSON, shared by the chart tests (harness/helm.ts) and the
// control-plane tier (harness/controlplane/chart.ts): parsing helm's output, merging values, finding objects.
import { parseAllDocuments } from 'yaml';

export type Json = { [key: string]: unknown };

export const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

export function deepMerge(base: Json, extra: Json): Json {
  const out: Json = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const prior = out[key];
    out[key] = isObject(prior) && isObject(value) ? deepMerge(prior, value) : value;
  }
  return out;
}

/** Every object of a multi-document YAML text (empty documents dropped). */
export function parseObjects(yamlText: string): Json[] {
  return parseAllDocuments(yamlText)
    .map((d) => d.toJS() as unknown)
    .filter(isObject);
}

export const kindOf = (o: Json): string => String(o.kind ?? '');

/** An object's labels: its own map when it has one (so a test can edit it in place), else an empty one. */
export function labelsOf(object: Json | null | undefined): Record<string, string> {
  const labels = isObject(object?.metadata) ? object.metadata.labels : undefined;
  return (isObject(labels) ? labels : {}) as Record<string, string>;
}
export const nameOf = (o: Json): string => String((o.metadata as Json | undefined)?.name ?? '');

/** A PersistentVolumeClaim as a StatefulSet's volumeClaimTemplate would make it (ReadWriteOnce, 1Gi). */
export function pvcManifest(name: string, options: { namespace?: string; labels?: Record<string, string> } = {}): Json {
  const { namespace, labels } = options;
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name, ...(namespace === undefined ? {} : { namespace }), ...(labels === undefined ? {} : { labels }) },
    spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
  };
}

export function find(objects: Json[], kind: string, name: string): Json {
  const found = objects.find((o) => kindOf(o) === kind && nameOf(o) === name);
  if (!found)
    throw new Error(
      `no ${kind} ${name} rendered (have: ${objects.map((o) => `${kindOf(o)}/${nameOf(o)}`).join(', ')})`,
    );
  return found;
}
