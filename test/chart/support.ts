// The set-up the chart tests (and test/programs, which run what the chart renders) share: the chart rendered by
// the real helm with the two values it requires plus a test's own, for release `dify` in namespace `dify`
// (harness/helm.ts's defaults), and the lookups they all make in what it renders: an object by the name the
// contract gives it, a component's workload, its first container, its pods' labels; and, for the two deploy.sh
// tests, the read-back command its refusals print.
import { LABELS, contract, expandName } from '../../src/contract.js';
import {
  containersOf,
  deepMerge,
  find,
  podTemplateOf,
  render,
  requiredValues,
  workloadOf,
  type Container,
  type HelmOptions,
  type Json,
} from '../../harness/helm.js';

export const release = 'dify';
export const namespace = 'dify';

/** The chart's required values (fresh random secrets) with `values` merged over them. */
export const withRequired = (values: Json = {}): Json => deepMerge(requiredValues(), values);

/** `helm template` of the chart with its required values and `values` over them; it must succeed. */
export const renderChart = (values: Json = {}, options: HelmOptions = {}): Promise<{ objects: Json[]; text: string }> =>
  render(withRequired(values), options);

/** The name contract.json's template `key` gives an object of the release (of `component`, where it names one). */
export const releaseName = (key: keyof typeof contract.names, component?: string): string =>
  expandName(contract.names[key], release, component);

/** The rendered object of `kind` named by contract.json's template `key` (see releaseName); throws when missing. */
export const named = (objects: Json[], kind: string, key: keyof typeof contract.names, component?: string): Json =>
  find(objects, kind, releaseName(key, component));

/** The one workload whose pods carry this component label. */
export const componentWorkload = (objects: Json[], component: string): Json =>
  workloadOf(objects, LABELS.component, component);

/** The first (main) container of a workload's pods. */
export const mainContainerOf = (workload: Json): Container => containersOf(workload)[0]!;

/** The main container of the one workload whose pods carry this component label. */
export const componentContainer = (objects: Json[], component: string): Container =>
  mainContainerOf(componentWorkload(objects, component));

/** The labels of a workload's pods. */
export const podLabelsOf = (workload: Json): Record<string, string> => podTemplateOf(workload).metadata.labels ?? {};

/**
 * The bash script that runs the `export <variable>="$(kubectl ...)"` line deploy.sh printed in `stderr` and exits 0
 * only when it reads back $EXPECTED; undefined when deploy.sh printed no such line.
 */
export function readBackScript(stderr: string, variable: string): string | undefined {
  const line = stderr
    .split('\n')
    .find((l) => l.includes(`export ${variable}="$(`))
    ?.trim();
  return line && `${line}; [ "$${variable}" = "$EXPECTED" ]`;
}
