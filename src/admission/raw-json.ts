// Reading raw Kubernetes JSON without typed models (which drop unknown fields).
import type { JsonObject } from './types.js';

export function asObject(value: unknown): JsonObject | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : undefined;
}

export function metadataOf(object: JsonObject | null | undefined): JsonObject {
  return asObject(object?.metadata) ?? {};
}

/** A string field of metadata itself (`name`, `uid`, ...), when it is one. */
export function metadataString(object: JsonObject | null | undefined, field: string): string | undefined {
  const value = metadataOf(object)[field];
  return typeof value === 'string' ? value : undefined;
}

/** The object's name, else its generateName (an object created with generateName has no name yet), else ''. */
export function nameOrGenerateName(object: JsonObject | null | undefined): string {
  const metadata = metadataOf(object);
  const name = metadata.name ?? metadata.generateName;
  return typeof name === 'string' ? name : '';
}

/** A string-valued field of metadata (labels and annotations are maps of strings). */
export function stringMapOf(
  object: JsonObject | null | undefined,
  field: 'labels' | 'annotations',
): Record<string, unknown> {
  return asObject(metadataOf(object)[field]) ?? {};
}

export function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
