// Which pods and containers are Dify's (docs/rules.md#pod-rules): a container is a Dify container
// when it runs a Dify image (matched on the repository path, whatever the registry, tag or digest)
// or declares a setting that only Dify reads; a pod is a Dify pod when one of its containers is,
// or when it carries this chart's labels. The webhook configurations' CEL (matchConditions) says
// the same with the same regular expression, so the API server sends only such pods.
import { LABELS, contract } from '../contract.js';
import { asObject, stringMapOf } from './raw-json.js';
import type { GuardSettings } from './settings.js';
import type { JsonObject } from './types.js';

const CREDENTIALS = contract.credentialSettings;

/** Every env var name the pod rules own: a container declaring one is treated (corrected, never given more). */
export const OWNED_SETTINGS: ReadonlySet<string> = new Set([
  contract.env.migrationEnabled,
  ...CREDENTIALS.postgresqlPasswords,
  ...CREDENTIALS.redisPasswords,
  ...CREDENTIALS.redisUrls,
]);

const DIFY_ONLY_SETTINGS: ReadonlySet<string> = new Set(contract.difyOnlySettings);

/**
 * The regular expression (RE2 and ECMAScript alike) that an image reference of one of `paths` matches:
 * any registry or proxy prefix, then the path, then an optional tag and digest. The chart renders the same.
 */
export function difyImagePatternSource(paths: readonly string[]): string {
  const quoted = paths.map((path) => path.replace(/[\\.+*?()|[\]{}^$]/g, '\\$&'));
  return `^(.*/)?(${quoted.join('|')})(:[^/@]*)?(@.+)?$`;
}

const patterns = new WeakMap<readonly string[], RegExp>();

export function isDifyImage(image: unknown, settings: GuardSettings): boolean {
  if (typeof image !== 'string' || settings.difyImages.length === 0) return false;
  let pattern = patterns.get(settings.difyImages);
  if (!pattern) {
    pattern = new RegExp(difyImagePatternSource(settings.difyImages));
    patterns.set(settings.difyImages, pattern);
  }
  return pattern.test(image);
}

/** How the pod rules treat one container: `app` gets absent settings added, `declared` only corrections. */
export type ContainerRole = 'app' | 'declared' | 'other';

export function containerRole(container: JsonObject, isInit: boolean, settings: GuardSettings): ContainerRole {
  const difyApp = isDifyImage(container.image, settings) || declaresAny(container, DIFY_ONLY_SETTINGS);
  // Least privilege: init containers (a pg_isready wait) never asked for credentials, so they only get corrections.
  if (difyApp) return isInit ? 'declared' : 'app';
  return declaresAny(container, OWNED_SETTINGS) ? 'declared' : 'other';
}

/** True for a container that runs a Dify image or declares a Dify-only setting (what the CEL selects on). */
export function isDifyContainer(container: unknown, settings: GuardSettings): boolean {
  const spec = asObject(container);
  if (!spec) return false;
  return isDifyImage(spec.image, settings) || declaresAny(spec, DIFY_ONLY_SETTINGS);
}

/** This chart's pod: labelled name=dify with a component; its component, else undefined. */
export function chartComponentOf(podOrTemplate: JsonObject): string | undefined {
  const labels = stringMapOf(podOrTemplate, 'labels');
  if (labels[LABELS.name] !== contract.values.difyName) return undefined;
  const component = labels[LABELS.component];
  return typeof component === 'string' ? component : undefined;
}

/** A pod (or pod template) is Dify's when one of its containers or init containers is a Dify container. */
export function runsDify(podOrTemplate: JsonObject, settings: GuardSettings): boolean {
  const spec = asObject(podOrTemplate.spec);
  if (!spec) return false;
  return ['containers', 'initContainers'].some((field) => {
    const items = spec[field];
    return Array.isArray(items) && items.some((item: unknown) => isDifyContainer(item, settings));
  });
}

/** The env names a container declares; `env: null` or absent counts as none. Plain loops: this runs for every pod. */
export function envNamesOf(container: JsonObject): string[] {
  const env = container.env;
  const names: string[] = [];
  if (!Array.isArray(env)) return names;
  for (const entry of env as unknown[]) {
    const name = asObject(entry)?.name;
    if (typeof name === 'string') names.push(name);
  }
  return names;
}

/** True when the container declares one of `names`. */
function declaresAny(container: JsonObject, names: ReadonlySet<string>): boolean {
  const env = container.env;
  if (!Array.isArray(env)) return false;
  for (const entry of env as unknown[]) {
    const name = asObject(entry)?.name;
    if (typeof name === 'string' && names.has(name)) return true;
  }
  return false;
}
