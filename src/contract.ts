// The names, label keys, Secret keys and env var names shared with the chart. Their one source is
// chart/files/contract.json, which the chart reads too; nothing here or in the tests repeats them.
import contractJson from '../chart/files/contract.json' with { type: 'json' };

export const contract = contractJson;
export type ComponentName = (typeof contract.components)[keyof typeof contract.components];

/** Expands a name template such as `{release}-postgresql` for one release (and component). */
export function expandName(template: string, release: string, component = ''): string {
  return template.replaceAll('{release}', release).replaceAll('{component}', component);
}

export const LABELS = contract.labels;
export const ENV = contract.env;
export const SECRET_KEYS = contract.secretKeys;
